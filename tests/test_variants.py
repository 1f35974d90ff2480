"""The variants library (examples/variants/): every spec against an independent reference from its paper.

CASES maps each spec file to its reference (tests/references/variants.py), an input maker, the params the
spec declares and extra (sizes, params) runs. The float64 NumPy backend must equal the reference within 1e-12
of the output's largest magnitude (or a case's own ``tol``); the torch backend (float64) within 1e-10, with
``torch.autograd.gradcheck`` through it for the variants named in GRADCHECK; the Triton backend (float32,
under TRITON_INTERPRET=1, tiny sizes) within 1e-4. A spec file without a CASES entry fails
``test_every_spec_has_a_case``. NOT_EXPRESSIBLE lists the variants of the issue that have no spec, with the
reason; docs/variants.md is generated from both tables by benchmarks/variants_table.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import triton_cases  # noqa: F401 (sets TRITON_INTERPRET=1 without a GPU, before anything imports triton)
from references import variants as R

import einattn

VARIANTS = Path(__file__).resolve().parent.parent / "examples" / "variants"

SELF = dict(B=2, H=2, P=9, M=9, E=4, F=3)  # self-attention: P = M
CROSS = dict(SELF, P=7, M=11)
SEQ = dict(B=2, H=2, T=9, E=4, F=3)  # recurrences over a time rank t


def normal(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


# ---- input makers: (rng, sizes, params) -> inputs ----------------------------------------------------------
def make_qkv(rng, s, pr):
    return dict(
        Q=normal(rng, s["B"], s["H"], s["P"], s["E"]),
        K=normal(rng, s["B"], s["H"], s["M"], s["E"]),
        V=normal(rng, s["B"], s["H"], s["M"], s["F"]),
    )


def make_gqa(rng, s, pr):
    x = make_qkv(rng, s, pr)
    g = s["H"] // pr["R"]
    return x | dict(K=x["K"][:, :g], V=x["V"][:, :g])


def make_groupmap(rng, s, pr):
    x = make_qkv(rng, s, pr)
    g = max(s["H"] // 2, 1)
    grp = np.array([(3 * h + 1) % g for h in range(s["H"])], dtype=np.int64)  # uneven, not h // R
    return x | dict(K=x["K"][:, :g], V=x["V"][:, :g], grp=grp)


def make_mqa(rng, s, pr):
    x = make_qkv(rng, s, pr)
    return x | dict(K=x["K"][:, 0], V=x["V"][:, 0])


def make_moh(rng, s, pr):
    g = rng.random((s["B"], s["P"], s["H"]))
    g[..., 0] = 0.0  # a head the router did not select for these tokens
    return make_qkv(rng, s, pr) | dict(g=g, Wo=normal(rng, s["H"], s["F"], 6))


def make_sigmoid(rng, s, pr):
    return make_qkv(rng, s, pr) | dict(bias=np.float64(-math.log(s["M"])))  # b = -log n


def make_sink(rng, s, pr):
    return make_qkv(rng, s, pr) | dict(sink=normal(rng, s["H"]))


def make_decay(rng, s, pr):
    return make_qkv(rng, s, pr) | dict(lam=rng.uniform(0.6, 0.99, s["H"]))


def make_grid(rng, s, pr):
    return dict(
        Q=normal(rng, s["B"], s["H"], s["X"], s["Y"], s["E"]),
        K=normal(rng, s["B"], s["H"], s["X"], s["Y"], s["E"]),
        V=normal(rng, s["B"], s["H"], s["X"], s["Y"], s["F"]),
    )


def make_landmark(rng, s, pr):
    return make_qkv(rng, s, pr) | dict(L=normal(rng, s["B"], s["H"], -(-s["M"] // pr["M0"]), s["E"]))


def make_aaren(rng, s, pr):
    return dict(
        q=normal(rng, s["H"], s["E"]),
        K=normal(rng, s["B"], s["H"], s["T"], s["E"]),
        V=normal(rng, s["B"], s["H"], s["T"], s["F"]),
    )


def make_decode(rng, s, pr):
    x = make_qkv(rng, s, pr)
    return x | dict(q=x.pop("Q")[:, :, 0])


def make_tensor(rng, s, pr):
    return dict(
        Q=normal(rng, s["B"], s["H"], s["P"], s["E"]),
        K1=normal(rng, s["B"], s["H"], s["M"], s["E"]),
        K2=normal(rng, s["B"], s["H"], s["N"], s["E"]),
        V1=normal(rng, s["B"], s["H"], s["M"], s["F"]),
        V2=normal(rng, s["B"], s["H"], s["N"], s["F"]),
    )


def make_relpos(rng, s, pr):
    J = 3  # convolution kernel size
    return make_qkv(rng, s, pr) | dict(
        wq=normal(rng, s["H"], J, s["E"], scale=0.7),
        wk=normal(rng, s["H"], J, s["E"], scale=0.7),
        wv=normal(rng, s["H"], J, s["F"], scale=0.7),
        bias=normal(rng, s["H"], 2 * pr["R"] + 1),
    )


def make_gaam(rng, s, pr):
    return dict(
        X=normal(rng, s["B"], s["H"], s["T"], s["E"]) + 0.3,
        delta=normal(rng, s["H"], scale=0.3),
        xi=rng.uniform(0.5, 2.0, s["H"]),
    )


def make_tree(rng, s, pr):
    """A shared prefix of M - P keys, then a random token tree of P nodes (parent[i] < i), in order."""
    B, P, M = s["B"], s["P"], s["M"]
    prefix = M - P
    anc = np.zeros((B, P, M), dtype=np.int64)
    for b in range(B):
        parent = [-1] + [int(rng.integers(0, i)) for i in range(1, P)]
        for p in range(P):
            anc[b, p, :prefix] = 1
            node = p
            while node >= 0:  # p itself and each of its ancestors
                anc[b, p, prefix + node] = 1
                node = parent[node]
    return make_qkv(rng, s, pr) | dict(anc=anc)


def make_doc(rng, s, pr):
    doc = np.sort(rng.integers(0, 3, (s["B"], s["M"])), axis=1).astype(np.int64)
    return make_qkv(rng, s, pr) | dict(doc=doc)


def make_ssm(rng, s, pr):
    B, H, T = s["B"], s["H"], s["T"]
    return dict(
        X=normal(rng, B, H, T, s["F"]),
        A=rng.uniform(0.5, 1.0, (B, H, T)),  # a = exp(dt * A) in (0, 1)
        Bm=normal(rng, B, H, T, s["E"]),
        C=normal(rng, B, H, T, s["E"]),
    )


def make_alibi(rng, s, pr):
    h = np.arange(1, s["H"] + 1)
    return make_qkv(rng, s, pr) | dict(slope=2.0 ** (-8.0 * h / s["H"]))  # Press et al.'s slopes


def make_titans(rng, s, pr):
    B, H, T = s["B"], s["H"], s["T"]
    return dict(
        Q=normal(rng, B, H, T, s["E"], scale=0.5),
        K=normal(rng, B, H, T, s["E"], scale=0.5),
        V=normal(rng, B, H, T, s["F"]),
        eta=rng.uniform(0.5, 0.9, (B, H, T)),
        theta=rng.uniform(0.05, 0.2, (B, H, T)),
        alpha=rng.uniform(0.0, 0.1, (B, H, T)),
    )


@dataclass(frozen=True)
class Case:
    ref: Callable  # (inputs, params) -> output or tuple of outputs
    make: Callable = make_qkv  # (rng, sizes, params) -> inputs
    sizes: dict = field(default_factory=lambda: dict(SELF))
    params: dict = field(default_factory=dict)  # the spec's defaults, as the reference must see them
    runs: tuple = ()  # further (sizes, params) overrides checked on NumPy
    tol: float = 1e-12
    seq: tuple = ("m",)  # the sequence ranks whose pass counts the table reports
    tiny: dict = field(default_factory=dict)  # overrides of TINY for gradcheck and Triton


def qkv(f, **kw):
    return lambda x, pr: f(x["Q"], x["K"], x["V"], **kw)


CASES: dict[str, Case] = {
    "01_mha_self.ein": Case(qkv(R.mha)),
    "01_mha_causal_self.ein": Case(qkv(R.mha, causal=True)),
    "01_mha_cross.ein": Case(qkv(R.mha), sizes=CROSS, runs=((dict(P=13, M=6), {}),)),
    "01_mha_causal_cross.ein": Case(
        qkv(R.mha, causal=True), sizes=CROSS, runs=((dict(P=13, M=6), {}), (dict(P=9, M=9), {}))
    ),
    "02_gqa.ein": Case(
        lambda x, pr: R.gqa(x["Q"], x["K"], x["V"], lambda h: h // pr["R"]),
        make_gqa,
        dict(SELF, H=4),
        {"R": 2},
        runs=((dict(H=4), {"R": 4}), (dict(H=6), {"R": 3})),
    ),
    "02_mqa.ein": Case(lambda x, pr: R.mqa(x["Q"], x["K"], x["V"]), make_mqa, dict(SELF, H=3)),
    "02_gqa_groupmap.ein": Case(
        lambda x, pr: R.gqa(x["Q"], x["K"], x["V"], lambda h: x["grp"][h]), make_groupmap, dict(SELF, H=4)
    ),
    "03_moh.ein": Case(
        lambda x, pr: R.moh(x["Q"], x["K"], x["V"], x["g"], x["Wo"]), make_moh, dict(SELF, H=3)
    ),
    "04_sigmoid_nonorm.ein": Case(
        lambda x, pr: R.sigmoid_causal(x["Q"], x["K"], x["V"], x["bias"]), make_sigmoid
    ),
    "05_softmax_sink.ein": Case(lambda x, pr: R.softmax_sink(x["Q"], x["K"], x["V"], x["sink"]), make_sink),
    "06_linear.ein": Case(qkv(R.linear), sizes=CROSS),
    "06_linear_causal.ein": Case(qkv(R.linear, causal=True)),
    "07_lightning.ein": Case(lambda x, pr: R.lightning(x["Q"], x["K"], x["V"], x["lam"]), make_decay),
    "07_lightning_block.ein": Case(
        lambda x, pr: R.lightning(x["Q"], x["K"], x["V"], x["lam"]),
        make_decay,
        params={"M0": 4},  # M = 9: a ragged last tile
        runs=(({}, {"M0": 3}), ({}, {"M0": 1}), ({}, {"M0": 9}), ({}, {"M0": 16})),
        seq=("m", "m1", "m0"),
    ),
    "08_agent.ein": Case(
        lambda x, pr: R.agent(x["Q"], x["K"], x["V"], pr["N"]),
        sizes=CROSS,
        params={"N": 4},  # P = 7 agents windows overlap (adaptive pooling)
        runs=(({}, {"N": 7}), (dict(P=8), {"N": 2})),
        seq=("m", "n", "p"),
    ),
    "09_flowformer.ein": Case(
        lambda x, pr: R.flowformer(x["Q"], x["K"], x["V"], pr["EPS"]),
        sizes=CROSS,
        params={"EPS": 1e-6},
        seq=("m", "p"),
    ),
    "10_natten_1d.ein": Case(
        lambda x, pr: R.natten_1d(x["Q"], x["K"], x["V"], pr["W"], pr["D"], pr["S"]),
        sizes=dict(SELF, P=13, M=13),
        params={"W": 5, "D": 1, "S": 1},
        runs=(
            ({}, {"W": 3, "D": 2}),
            ({}, {"W": 4, "S": 2}),  # an even window, stride 2
            ({}, {"W": 3, "D": 3, "S": 2}),
            ({}, {"W": 4, "S": 4}),  # stride = window: blocked attention
            ({}, {"W": 13}),  # the window is the whole sequence
        ),
        seq=("w",),
    ),
    "10_natten_2d.ein": Case(
        lambda x, pr: R.natten_2d(x["Q"], x["K"], x["V"], pr["WX"], pr["WY"], pr["DX"], pr["DY"]),
        make_grid,
        dict(B=1, H=2, X=6, Y=5, E=4, F=3),
        {"WX": 3, "WY": 3, "DX": 1, "DY": 1},
        runs=((dict(X=8), {"DX": 2, "WY": 2}), ({}, {"WX": 5, "WY": 4})),
        seq=("wx", "wy"),
    ),
    "10_halo_1d.ein": Case(
        lambda x, pr: R.halo_1d(x["Q"], x["K"], x["V"], pr["W"], pr["HALO"]),
        params={"W": 6, "HALO": 1},  # blocks of 4, M = 9: a ragged last block
        runs=(({}, {"W": 5, "HALO": 1}), ({}, {"W": 3, "HALO": 0}), (dict(P=12, M=12), {"W": 8, "HALO": 2})),
        seq=("w",),
    ),
    "11_cca.ein": Case(
        lambda x, pr: R.cca(x["Q"], x["K"], x["V"], pr["M0"], pr["W"]),
        sizes=dict(SELF, P=14, M=14),
        params={"M0": 4, "W": 3},
        runs=(({}, {"M0": 2, "W": 1}), ({}, {"M0": 3, "W": 5}), ({}, {"M0": 4, "W": 20})),
        seq=("m", "m1"),
        tiny=dict(P=9, M=9),  # row 9 sees one core token
    ),
    "12_landmark.ein": Case(
        lambda x, pr: R.landmark(x["Q"], x["K"], x["V"], x["L"], pr["M0"]),
        make_landmark,
        params={"M0": 4},  # M = 9: a ragged last block
        runs=(({}, {"M0": 3}), (dict(P=12, M=12), {"M0": 2})),
        seq=("m", "m1"),
    ),
    "13_aaren.ein": Case(lambda x, pr: R.aaren(x["q"], x["K"], x["V"]), make_aaren, dict(SEQ), seq=("t",)),
    "14_splitk_decode.ein": Case(
        lambda x, pr: R.decode(x["q"], x["K"], x["V"]),
        make_decode,
        dict(SELF, M=10),
        {"M1": 4},
        runs=((dict(M=9), {}), ({}, {"M1": 1}), ({}, {"M1": 10}), (dict(M=3), {"M1": 4})),
        seq=("m", "m1", "m0"),
    ),
    "15_tensor_attention.ein": Case(
        lambda x, pr: R.tensor_attention(x["Q"], x["K1"], x["K2"], x["V1"], x["V2"]),
        make_tensor,
        dict(B=1, H=2, P=5, M=6, N=4, E=4, F=3),
        seq=("m", "n"),
    ),
    "16_relpos_conv.ein": Case(
        lambda x, pr: R.relpos_conv(x["Q"], x["K"], x["V"], x["wq"], x["wk"], x["wv"], x["bias"], pr["R"]),
        make_relpos,
        params={"R": 3},
        runs=(({}, {"R": 1}),),
    ),
    "17_gaam.ein": Case(
        lambda x, pr: R.gaam(x["X"], x["delta"], x["xi"], pr["EPS"]),
        make_gaam,
        dict(SEQ),
        {"EPS": 1e-8},
        seq=("t",),
    ),
    "18_tree_mask.ein": Case(
        lambda x, pr: R.tree_mask(x["Q"], x["K"], x["V"], x["anc"]), make_tree, dict(SELF, P=6, M=10)
    ),
    "18_document_mask.ein": Case(lambda x, pr: R.document_mask(x["Q"], x["K"], x["V"], x["doc"]), make_doc),
    "19_ssm_scan.ein": Case(
        lambda x, pr: R.ssm(x["X"], x["A"], x["Bm"], x["C"]), make_ssm, dict(SEQ), seq=("t",)
    ),
    "19_ssm_dual.ein": Case(
        lambda x, pr: R.ssm(x["X"], x["A"], x["Bm"], x["C"]), make_ssm, dict(SEQ), seq=("s",)
    ),
    "20_softcap_alibi_lse.ein": Case(
        lambda x, pr: R.softcap_alibi_lse(x["Q"], x["K"], x["V"], x["slope"], pr["C"]),
        make_alibi,
        params={"C": 30.0},
        runs=(({}, {"C": 2.0}),),
    ),
    "22_titans_linear_memory.ein": Case(
        lambda x, pr: R.titans_linear(x["Q"], x["K"], x["V"], x["eta"], x["theta"], x["alpha"]),
        make_titans,
        dict(SEQ),
        seq=("t",),
    ),
}

# The variants that have no spec, and why (the table shows them).
NOT_EXPRESSIBLE: dict[str, tuple[str, str]] = {
    "21. Top-m attention (TANGNN)": (
        'E, Zhang, Xia, Xu, "TANGNN: a Concise, Scalable and Effective Graph Neural Networks with Top-m '
        'Attention Mechanism for Graph Representation Learning", 2024, arXiv 2411.15458',
        "needs the m largest scores of each row: a selection by value. Filters compare only coordinates and "
        "integer tensors, no float value can become an index or a filter, and max/min reductions give one "
        "value, not a set: no Einsum cascade selects the top m. Expressible once the selection is given (an "
        "integer tensor idx[p, j] and a gather K[idx[p, j], e]), or with a filter that compares float values "
        "(a language extension).",
    ),
    "22. Titans neural memory (deep memory)": (
        'Behrouz, Zhong, Mirrokni, "Titans: Learning to Memorize at Test Time", 2024, arXiv 2501.00663',
        "the memory is trained at test time by the gradient of a loss through any memory network; the "
        "language has no autodiff. The linear memory, with its gradient 2 (M k - v) k^T written out, is "
        "22_titans_linear_memory.ein; a deep memory needs its backward pass derived by hand.",
    ),
}

GRADCHECK = [
    "02_gqa.ein",
    "04_sigmoid_nonorm.ein",
    "05_softmax_sink.ein",
    "07_lightning.ein",
    "07_lightning_block.ein",
    "16_relpos_conv.ein",
    "20_softcap_alibi_lse.ein",
]
TINY = dict(B=1, H=2, P=6, M=6, T=6, E=3, F=2, N=3, X=4, Y=4)  # gradcheck and Triton sizes


# ---- the spec header ---------------------------------------------------------------------------------------
HEADER = re.compile(r"# (variant|paper|formula|notes):\s*(.*)")


def header(path) -> dict[str, str]:
    """The leading comment fields of a spec: ``# key: text`` lines, continued by lines ``#  `` + more text."""
    fields: dict[str, str] = {}
    key = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = HEADER.fullmatch(line.rstrip())
        if m:
            key = m.group(1)
            fields[key] = m.group(2)
        elif key and line.startswith("#  "):
            fields[key] += " " + line[1:].strip()
        else:
            break
    return fields


# ---- running a case ----------------------------------------------------------------------------------------
def inputs_for(name: str, sizes: dict | None = None, params: dict | None = None, seed: int = 0, tiny=False):
    """(inputs, params) for a case: the case's sizes, then ``sizes``; the case's params, then ``params``."""
    case = CASES[name]
    sz = dict(case.sizes)
    if tiny:
        sz.update({k: v for k, v in TINY.items() if k in sz} | case.tiny)
    sz.update(sizes or {})
    pr = case.params | (params or {})
    return case.make(np.random.default_rng(seed), sz, pr), pr


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def rel_err(out, ref) -> float:
    """Largest absolute error relative to the reference's largest magnitude."""
    out, ref = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"shape {out.shape}, expected {ref.shape}"
    assert np.isfinite(out).all(), "non-finite values"
    scale = float(np.max(np.abs(ref), initial=0.0))
    return float(np.max(np.abs(out - ref), initial=0.0)) / (scale or 1.0)


def check(name: str, backend: str = "numpy", sizes=None, params=None, seed=0, tiny=False, tol=None) -> float:
    """Run spec ``name`` on ``backend`` and its reference on the same inputs; return the worst error."""
    case = CASES[name]
    x, pr = inputs_for(name, sizes, params, seed, tiny)
    if backend == "triton":  # float32: the reference sees exactly the rounded inputs
        x = {
            k: (v if np.asarray(v).dtype.kind in "iu" else np.asarray(v, np.float32).astype(np.float64))
            for k, v in x.items()
        }
    refs = as_tuple(case.ref(x, pr))
    kernel = einattn.compile(VARIANTS / name, backend=backend, params=params or None)
    outs = as_tuple(kernel(**to_backend(x, backend)))
    assert len(outs) == len(refs), f"{len(outs)} outputs, expected {len(refs)}"
    tol = tol if tol is not None else {"numpy": case.tol, "torch": 1e-10, "triton": 1e-4}[backend]
    worst = 0.0
    for k, (out, ref) in enumerate(zip(outs, refs)):
        err = rel_err(to_numpy(out), ref)
        assert err <= tol, f"{name} on {backend}, output {k}: relative error {err:.3g} > {tol:g}"
        worst = max(worst, err)
    return worst


def to_backend(x: dict, backend: str) -> dict:
    if backend == "numpy":
        return x
    import torch

    out = {}
    for k, v in x.items():
        a = np.asarray(v)
        if a.dtype.kind in "iu":
            out[k] = torch.tensor(a, dtype=torch.int64)
        else:
            out[k] = torch.tensor(a, dtype=torch.float64 if backend == "torch" else torch.float32)
    return out


def to_numpy(x):
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x)


# ---- the tests ---------------------------------------------------------------------------------------------
def test_every_spec_has_a_case():
    files = {p.name for p in VARIANTS.glob("*.ein")}
    assert files - set(CASES) == set(), "specs without a test: add them to CASES"
    assert set(CASES) - files == set(), "CASES names specs that do not exist"


@pytest.mark.parametrize("name", sorted(p.name for p in VARIANTS.glob("*.ein")))
def test_spec_header(name):
    """Each spec cites its paper and states its formula (the table reads these fields)."""
    head = header(VARIANTS / name)
    assert list(head)[:3] == ["variant", "paper", "formula"], (
        f"{name}: header must start variant, paper, formula"
    )
    assert set(head) <= {"variant", "paper", "formula", "notes"}
    assert int(name[:2]) == int(head["variant"].split(".")[0]), "file number != variant number"


@pytest.mark.parametrize("name", sorted(p.name for p in VARIANTS.glob("*.ein")))
def test_numpy(name):
    check(name)
    for k, (sizes, params) in enumerate(CASES[name].runs if name in CASES else ()):
        check(name, sizes=sizes, params=params, seed=k + 1)


@pytest.mark.filterwarnings("ignore::einattn.EinWarning")
@pytest.mark.parametrize("name", sorted(CASES))
def test_torch(name):
    check(name, "torch")
    for k, (sizes, params) in enumerate(CASES[name].runs):
        check(name, "torch", sizes=sizes, params=params, seed=k + 1)


@pytest.mark.parametrize("name", GRADCHECK)
def test_torch_gradcheck(name):
    import torch

    x, _ = inputs_for(name, tiny=True)
    kernel = einattn.compile(VARIANTS / name, backend="torch")
    t = to_backend(x, "torch")
    names = [k for k, v in t.items() if v.is_floating_point()]
    fixed = {k: v for k, v in t.items() if k not in names}
    args = tuple(t[k].clone().requires_grad_(True) for k in names)

    def fn(*xs):
        return kernel(**dict(zip(names, xs)), **fixed)

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::einattn.EinWarning")  # rewrite refusals: the table lists them
@pytest.mark.parametrize("name", sorted(CASES))
def test_triton_interpreter(name, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    check(name, "triton", tiny=True)
