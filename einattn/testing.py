"""Property-based testing of .ein programs: hypothesis strategies and cross-backend equivalence.

Users property-test their own variants the same way einattn tests itself::

    from hypothesis import given
    from einattn.testing import assert_equivalent, attention_specs

    @given(attention_specs())
    def test_my_backends_agree(spec):
        assert_equivalent(spec.text, backends=("numpy", "torch"))

Strategies:

* :func:`attention_specs` -- attention-shaped programs composed from score transforms (scale, bias
  tensors, ALiBi, softcap, clamped relative bias), filters (causal, windows, document ids, random affine
  predicates, causal with a term on the row alone), normalisers (3-pass softmax, deferred division,
  sigmoid, linear, attention sinks) and head structures (MHA, GQA, MQA), optionally in the 1-pass
  streaming form with a random tile;
  :func:`streaming_pairs` gives one softmax variant in both forms;
* :func:`cascades` -- general cascades that are not attention-shaped: random ranks, contractions,
  ``max``/``min``/``+`` reductions, functions, filters and iterative ranks;
* :func:`sizes_for` and :func:`inputs_for` -- sizes (1 included, tiles that do not divide) and data (normal,
  large magnitude, ties, all-equal rows).

:func:`assert_equivalent` compiles a spec for several backends and compares each with the NumPy reference in
float64, with per-backend, per-dtype tolerances (:data:`TOLERANCES`).

This module needs ``hypothesis`` (``pip install einattn[test]``); ``import einattn`` does not import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - exercised only without the test extra
    raise ImportError("einattn.testing needs hypothesis: pip install 'einattn[test]'") from e

import einattn
from einattn.ir import Program, size_name

# (backend, dtype) -> relative tolerance against the float64 NumPy reference, on |got - want| / (1 + |want|).
TOLERANCES: dict[tuple[str, str], float] = {
    ("numpy", "float64"): 1e-12,
    ("numpy", "float32"): 1e-4,
    ("torch", "float64"): 1e-10,
    ("torch", "float32"): 2e-5,
    ("torch", "float16"): 2e-2,
    ("torch", "bfloat16"): 6e-2,
    ("triton", "float32"): 1e-4,
    ("triton", "float16"): 2e-2,
    ("triton", "bfloat16"): 6e-2,
}


@dataclass(frozen=True)
class Spec:
    """A generated program: its text, the checked IR, and notes on how it was composed."""

    text: str
    program: Program = field(repr=False)
    parts: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.text

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints the spec text, not the IR
        printer.text(f"Spec({self.text!r})")


def _spec(text: str, parts: tuple[str, ...]) -> Spec:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return Spec(text, einattn.parse(text, "<generated>"), parts)


# ---- attention-shaped programs ----------------------------------------------------------------------

SCORE_TRANSFORMS = ("scale", "bias", "alibi", "softcap", "relative")
FILTERS = ("none", "causal", "window", "document", "affine", "rows")
NORMALISERS = ("softmax", "deferred", "sigmoid", "linear", "sink", "lse")
HEADS = ("mha", "gqa", "mqa")


@st.composite
def attention_choices(
    draw, transforms=SCORE_TRANSFORMS, filters=FILTERS, normalisers=NORMALISERS, heads=HEADS
) -> dict:
    """The random choices that make an attention variant (render them with :func:`attention_text`)."""
    c = {
        "head": draw(st.sampled_from(heads)),
        "transforms": tuple(draw(st.lists(st.sampled_from(transforms), unique=True, max_size=3))),
        "filter": draw(st.sampled_from(filters)),
        "norm": draw(st.sampled_from(normalisers)),
        "R": draw(st.integers(1, 3)),
        "W": draw(st.integers(1, 4)),
        "affine": (
            draw(st.integers(1, 2)),
            draw(st.sampled_from(["<=", "<", ">=", "!="])),
            draw(st.integers(-2, 2)),
        ),
        "C": draw(st.sampled_from(["2.0", "5.0", "30.0"])),
        "DMAX": draw(st.integers(1, 3)),
        "M0": draw(st.integers(1, 5)),
        "rows": (draw(st.sampled_from([">=", "<", "!="])), draw(st.integers(0, 4))),
    }
    return c


def attention_text(c: dict, streaming: bool = False) -> str:
    """The .ein text of the variant ``c`` in natural form, or in the 1-pass streaming form (softmax only)."""
    head, norm, filt = c["head"], c["norm"], c["filter"]
    inputs = ["Q[b, h, p, e]"]
    params: list[str] = []
    kv = {"mha": "b, h, m", "gqa": "b, g, m", "mqa": "b, m"}[head]
    kv_read = {"mha": "b, h, m", "gqa": "b, h // R, m", "mqa": "b, m"}[head]
    if head == "gqa":
        params.append(f"param R = {c['R']}")
    inputs += [f"K[{kv}, e]", f"V[{kv}, f]"]
    score = f"Q[b, h, p, e] * K[{kv_read}, e]"
    if "scale" in c["transforms"]:
        score += " * rsqrt(E)"
    a, op, off = c["affine"]
    where = {
        "none": "",
        "causal": " where m <= p",
        "window": " where p - W < m and m <= p",
        "document": " where dq[p] == dk[m]",
        "affine": f" where {a} * m {op} p + {off}" if a != 1 else f" where m {op} p + {off}",
        "rows": " where m <= p and p {} {}".format(*c.get("rows", (">=", 1))),  # a term on the row alone
    }[filt]
    if filt == "window":
        params.append(f"param W = {c['W']}")
    if filt == "document":
        inputs += ["dq[p] : int", "dk[m] : int"]
    lines = [f"S0[b, h, m, p] = {score}{where}"]
    cur = "S0"
    for k, t in enumerate(x for x in c["transforms"] if x != "scale"):
        nxt, src = f"S{k + 1}", f"{cur}[b, h, m, p]"
        if t == "bias":
            inputs.append("bias[h, p, m]")
            lines.append(f"{nxt}[b, h, m, p] = {src} + bias[h, p, m]")
        elif t == "alibi":
            inputs.append("slope[h]")
            lines.append(f"{nxt}[b, h, m, p] = {src} + slope[h] * (m - p)")
        elif t == "softcap":
            params.append(f"param C = {c['C']}")
            lines.append(f"{nxt}[b, h, m, p] = C * tanh({src} / C)")
        elif t == "relative":
            params.append(f"param DMAX = {c['DMAX']}")
            inputs.append("rel[h, d]")
            lines.append(f"{nxt}[b, h, m, p] = {src} + rel[h, clamp(p - m, -DMAX, DMAX) + DMAX]")
        cur = nxt
    s = f"{cur}[b, h, m, p]"
    outputs = ["O"]
    streaming = streaming and norm in ("softmax", "deferred")
    if norm == "sigmoid":
        lines.append(f"O[b, h, p, f] = sigmoid({s}) * V[{kv_read}, f]")
    elif norm == "linear":
        lines.append(f"FS[b, h, m, p] = elu({s}) + 1")
        lines.append(f"NUM[b, h, p, f] = FS[b, h, m, p] * V[{kv_read}, f]")
        lines.append("DEN[b, h, p] = FS[b, h, m, p]")
        lines.append("O[b, h, p, f] = NUM[b, h, p, f] / DEN[b, h, p]")
    elif streaming:
        params += [f"param M0 = {c['M0']}", "rank M = M1 * M0"]
        lines += _streaming_softmax(s, kv_read)
    else:
        lines.append(f"GM[b, h, p] = {s} :: max(m)")
        lines.append(f"N[b, h, m, p] = exp({s} - GM[b, h, p])")
        if norm == "sink":
            inputs.append("sink[h]")
            lines.append("D[b, h, p] = N[b, h, m, p] + exp(sink[h] - GM[b, h, p]) / M")
        else:
            lines.append("D[b, h, p] = N[b, h, m, p]")
        if norm == "deferred":
            lines.append(f"NV[b, h, p, f] = N[b, h, m, p] * V[{kv_read}, f]")
            lines.append("O[b, h, p, f] = NV[b, h, p, f] / D[b, h, p]")
        else:
            lines.append("A[b, h, m, p] = N[b, h, m, p] / D[b, h, p]")
            lines.append(f"O[b, h, p, f] = A[b, h, m, p] * V[{kv_read}, f]")
        if norm == "lse":
            lines.append("L[b, h, p] = GM[b, h, p] + log(D[b, h, p])")
            outputs.append("L")
    title = f"{head}, {'+'.join(c['transforms']) or 'plain'}, filter {filt}, {norm}{', 1-pass' * streaming}"
    header = [f"# generated: {title}", f"input {', '.join(inputs)}", *params, f"output {', '.join(outputs)}"]
    return "\n".join(header + lines) + "\n"


@st.composite
def attention_specs(
    draw, transforms=SCORE_TRANSFORMS, filters=FILTERS, normalisers=NORMALISERS, heads=HEADS, streaming=None
) -> Spec:
    """A random attention variant in natural form (or the 1-pass streaming form when ``streaming``)."""
    c = draw(attention_choices(transforms, filters, normalisers, heads))
    if streaming is None:
        streaming = draw(st.booleans())
    streaming = streaming and c["norm"] in ("softmax", "deferred")
    parts = (c["head"], *c["transforms"], c["filter"], c["norm"]) + (("1-pass",) if streaming else ())
    return _spec(attention_text(c, streaming), parts)


@st.composite
def streaming_pairs(draw, transforms=SCORE_TRANSFORMS, filters=FILTERS, heads=HEADS) -> tuple[Spec, Spec]:
    """The same softmax variant twice: natural (3-pass) form and hand-written 1-pass streaming form."""
    c = draw(attention_choices(transforms, filters, ("softmax",), heads))
    parts = (c["head"], *c["transforms"], c["filter"], "softmax")
    return _spec(attention_text(c, False), parts), _spec(attention_text(c, True), (*parts, "1-pass"))


def _streaming_softmax(score: str, kv_read: str) -> list[str]:
    """Cascade 5 over tiles of m, guarded so that absent (masked or ragged) tiles leave the state as it is.

    The softmax streams; the score transforms before it stay dense (``S0``, ``S1``, ... over all of m and p)
    and are read tile by tile, so this form tests the semantics of streaming, not its memory bound."""
    s = score.replace("m, p]", "m1 * M0 + m0, p]")
    v = kv_read.replace("m", "m1 * M0 + m0")
    return [
        f"BS[b, h, m1, m0, p] = {s}",
        "LM[b, h, m1, p] = BS[b, h, m1, m0, p] :: max(m0)",
        "RM[b, h, 0, p] = -inf",
        "RD[b, h, 0, p] = 0",
        "RNV[b, h, f, 0, p] = 0",
        "RM[b, h, m1 + 1, p] = max(RM[b, h, m1, p], LM[b, h, m1, p] ?? -inf)",
        "MS[b, h, m1, p] = max(RM[b, h, m1 + 1, p], -1e30)",  # finite: never exp(-inf - -inf)
        "SLN[b, h, m1, m0, p] = exp(BS[b, h, m1, m0, p] - MS[b, h, m1, p])",
        "SLD[b, h, m1, p] = SLN[b, h, m1, m0, p]",
        f"SLNV[b, h, f, m1, p] = SLN[b, h, m1, m0, p] * V[{v}, f]",
        "PRM[b, h, m1, p] = exp(RM[b, h, m1, p] - MS[b, h, m1, p])",
        "RD[b, h, m1 + 1, p] = (SLD[b, h, m1, p] ?? 0) + RD[b, h, m1, p] * PRM[b, h, m1, p]",
        "RNV[b, h, f, m1 + 1, p] = (SLNV[b, h, f, m1, p] ?? 0) + RNV[b, h, f, m1, p] * PRM[b, h, m1, p]",
        "O[b, h, p, f] = RNV[b, h, f, M1, p] / max(RD[b, h, M1, p], 1e-30)",
    ]


# ---- general cascades ----------------------------------------------------------------------------

_UNARY = ("exp", "tanh", "sigmoid", "relu", "abs", "softplus", "elu", "square")
_RANKS = ("i", "j", "k", "l")


@st.composite
def cascades(draw, max_statements: int = 4, iterative: bool | None = None) -> Spec:
    """A random valid cascade: contractions, reductions, functions, filters, optionally a recurrence."""
    ranks = list(_RANKS[: draw(st.integers(1, 4))])
    n_inputs = draw(st.integers(1, 3))
    tensors: dict[str, tuple[str, ...]] = {}
    inputs = []
    for n in range(n_inputs):
        rs = tuple(draw(st.lists(st.sampled_from(ranks), unique=True, min_size=0, max_size=len(ranks))))
        tensors[f"X{n}"] = rs
        inputs.append(f"X{n}[{', '.join(rs)}]" if rs else f"X{n}")
    covered = {r for rs in tensors.values() for r in rs}
    if covered != set(ranks):  # every rank gets a size from some input
        rs = tuple(r for r in ranks if r not in covered)
        tensors["Z"] = rs
        inputs.append(f"Z[{', '.join(rs)}]")
    lines = []
    n_stmts = draw(st.integers(1, max_statements))
    for n in range(n_stmts):
        name = f"T{n}"
        lhs = tuple(draw(st.lists(st.sampled_from(ranks), unique=True, max_size=len(ranks))))
        expr, used = draw(_expr(tensors, 2))
        red = [r for r in used if r not in lhs]
        op = ""
        if red and draw(st.booleans()):
            chosen = draw(st.lists(st.sampled_from(red), unique=True, min_size=1))
            op = f" :: {draw(st.sampled_from(['max', 'min', '+']))}({', '.join(chosen)})"
        where = ""
        space = list(dict.fromkeys(lhs + tuple(used)))
        if len(space) >= 2 and draw(st.booleans()):
            a, b = draw(st.permutations(space))[:2]
            where = f" where {a} {draw(st.sampled_from(['<=', '<', '!=', '>=']))} {b}"
        lines.append(
            f"{name}[{', '.join(lhs)}] = {expr}{op}{where}" if lhs else f"{name} = {expr}{op}{where}"
        )
        tensors[name] = lhs
    outputs = [f"T{n_stmts - 1}"]
    if iterative is None:
        iterative = draw(st.booleans())
    if iterative:
        r = draw(st.sampled_from(ranks))
        others = [x for x in ranks if x != r][: draw(st.integers(0, 1))]
        src = draw(st.sampled_from([t for t, rs in tensors.items() if r in rs] or [None]))
        if src is not None:
            rest = ", ".join(others)
            lhs0 = f"S[0{', ' if rest else ''}{rest}]"
            lhs1 = f"S[{r} + 1{', ' if rest else ''}{rest}]"
            prev = f"S[{r}{', ' if rest else ''}{rest}]"
            read = f"{src}[{', '.join(tensors[src])}]"
            decay = draw(st.sampled_from(["0.5", "0.9", "1"]))
            op = draw(st.sampled_from(["+", "max"]))
            upd = f"{prev} * {decay} + {read}" if op == "+" else f"max({prev}, {read})"
            lines += [f"{lhs0} = {'0' if op == '+' else '-inf'}", f"{lhs1} = {upd}"]
            out_rest = f", {rest}" if rest else ""
            lines.append(f"Y[{r}{out_rest}] = S[{r} + 1{out_rest}]")
            outputs.append("Y")
    text = "\n".join(
        ["# generated cascade", f"input {', '.join(inputs)}", f"output {', '.join(outputs)}", *lines]
    )
    return _spec(text + "\n", ("cascade",))


@st.composite
def _expr(draw, tensors: dict[str, tuple[str, ...]], depth: int):
    """(text, ranks used) of a random float expression over ``tensors``."""
    kind = draw(
        st.sampled_from(["read", "read", "const", "unary", "binary", "binary"] if depth else ["read"])
    )
    if kind == "read":
        name = draw(st.sampled_from(sorted(tensors)))
        rs = tensors[name]
        if not rs:
            return name, ()
        idx = list(rs)
        if draw(st.integers(0, 4)) == 0:  # an occasional shifted read: out-of-range points are absent
            k = draw(st.integers(0, len(idx) - 1))
            idx[k] = f"{idx[k]} + {draw(st.integers(1, 2))}"
        return f"{name}[{', '.join(idx)}]", rs
    if kind == "const":
        return draw(st.sampled_from(["0.5", "2", "1.5", "3"])), ()
    if kind == "unary":
        a, ra = draw(_expr(tensors, depth - 1))
        return f"{draw(st.sampled_from(_UNARY))}({a})", ra
    a, ra = draw(_expr(tensors, depth - 1))
    b, rb = draw(_expr(tensors, depth - 1))
    op = draw(st.sampled_from(["+", "-", "*", "max", "??"]))
    text = f"max({a}, {b})" if op == "max" else f"({a} {op} {b})"
    return text, tuple(dict.fromkeys(ra + rb))


# ---- sizes and data ------------------------------------------------------------------------------


@st.composite
def sizes_for(draw, program: Program, low: int = 1, high: int = 9) -> dict[str, int]:
    """Sizes of every rank that indexes an input (by upper-case name), consistent with the program.

    GQA-style group ranks are sized so that ``h // R`` stays in range; the rest are drawn in [low, high].
    """
    ranks = list(dict.fromkeys(r for n in program.inputs for r in program.tensor(n).ranks))
    out = {size_name(r): draw(st.integers(low, high)) for r in ranks}
    params = program.param_values
    if "R" in params and "H" in out and "G" in out:
        out["G"] = max(1, -(-out["H"] // params["R"]))
    if "DMAX" in params and "D" in out:  # a relative-bias table covers distances -DMAX .. DMAX
        out["D"] = 2 * params["DMAX"] + 1
    return out


DATA_KINDS = ("normal", "large", "ties", "equal_rows")


@st.composite
def inputs_for(draw, program: Program, sizes: dict[str, int], kinds=DATA_KINDS) -> dict[str, np.ndarray]:
    """Random float64 inputs for ``program`` at ``sizes``: normal, large magnitude (logits near 1e3), ties, or
    constant rows; ``: int`` inputs are small non-negative integers (document ids and the like)."""
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    out = {}
    for name in program.inputs:
        t = program.tensor(name)
        shape = tuple(sizes[size_name(r)] for r in t.ranks)
        if t.dtype == "int":
            out[name] = np.sort(rng.integers(0, 3, size=shape), axis=-1) if shape else rng.integers(0, 3)
            continue
        if kind == "normal":
            x = rng.standard_normal(shape)
        elif kind == "large":
            x = rng.standard_normal(shape) * 30
        elif kind == "ties":
            x = rng.integers(-2, 3, size=shape).astype(float)
        else:
            x = np.broadcast_to(rng.standard_normal(shape[:1] + (1,) * (len(shape) - 1)), shape).copy()
        out[name] = np.asarray(x, dtype=np.float64)
    return out


# ---- equivalence ---------------------------------------------------------------------------------


class NotEquivalent(AssertionError):
    """A backend disagrees with the NumPy reference; the message says where and by how much."""


def _to_backend(x: np.ndarray, backend: str, dtype: str, is_int: bool):
    if backend == "numpy":
        return x
    import torch

    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    if is_int:
        return torch.as_tensor(np.asarray(x), dtype=torch.int64, device=device)
    return torch.as_tensor(np.asarray(x), device=device).to(getattr(torch, dtype))


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def compare(got, want, tol: float) -> float:
    """Max of |got - want| / (1 + |want|); inf where finiteness differs (NaN == NaN counts as equal)."""
    got, want = _to_numpy(got), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise NotEquivalent(f"shape {got.shape}, expected {want.shape}")
    if got.size == 0:
        return 0.0
    same_nan = np.isnan(got) & np.isnan(want)
    same_inf = np.isinf(got) & np.isinf(want) & (np.sign(got) == np.sign(want))
    ok = same_nan | same_inf
    finite = np.isfinite(got) & np.isfinite(want)
    if not np.all(ok | finite):
        return float("inf")
    with np.errstate(invalid="ignore", over="ignore"):  # (inf - inf at the infinities compared above)
        err = np.abs(got - want) / (1 + np.abs(want))
    return float(np.max(np.where(finite, err, 0.0)))


def _default_inputs(prog: Program, sizes: dict[str, int] | None, seed: int) -> dict[str, np.ndarray]:
    """Standard-normal floats and integers in [0, 3) at ``sizes`` (by upper-case name; params, else 5)."""
    ranks = dict.fromkeys(r for n in prog.inputs for r in prog.tensor(n).ranks)
    given = sizes or {}
    shape_of = {r: given.get(size_name(r), prog.param_values.get(size_name(r), 5)) for r in ranks}
    rng = np.random.default_rng(seed)
    inputs = {}
    for n in prog.inputs:
        t = prog.tensor(n)
        shape = tuple(shape_of[r] for r in t.ranks)
        inputs[n] = rng.integers(0, 3, size=shape) if t.dtype == "int" else rng.standard_normal(shape)
    return inputs


def assert_equivalent(
    spec,
    backends=("numpy", "torch", "triton"),
    inputs: dict[str, np.ndarray] | None = None,
    sizes: dict[str, int] | None = None,
    params: dict | None = None,
    dtypes: dict[str, str] | None = None,
    tolerances: dict[tuple[str, str], float] | None = None,
    seed: int = 0,
    **compile_options,
) -> dict[str, float]:
    """Compile ``spec`` for each backend and compare with the float64 NumPy reference.

    ``inputs`` default to standard-normal data at ``sizes`` (default 5 for every rank). ``dtypes`` maps a
    backend to its input dtype (default: float64 for numpy and torch, float32 for triton). Returns the error
    of each backend; raises :class:`NotEquivalent` naming the backend, output, error and tolerance. Other
    keyword arguments are compile options for every backend under test (``passes="as-written"``, ``tile=4``).
    """
    prog = spec.program if isinstance(spec, Spec) else einattn.api._program(spec)
    prog = prog.with_params(params)
    if inputs is None:
        inputs = _default_inputs(prog, sizes, seed)
    want = einattn.compile(prog, backend="numpy")(**inputs)
    want = want if isinstance(want, tuple) else (want,)
    table = dict(TOLERANCES, **(tolerances or {}))
    errors = {}
    for backend in backends:
        dtype = (dtypes or {}).get(backend) or ("float32" if backend == "triton" else "float64")
        options = dict(compile_options)  # e.g. passes="as-written" or tile=4, for every backend under test
        if backend == "numpy" and dtype != "float64":
            options["dtype"] = dtype
        kernel = einattn.compile(prog, backend=backend, **options)
        args = {n: _to_backend(x, backend, dtype, prog.tensor(n).dtype == "int") for n, x in inputs.items()}
        got = kernel(**args)
        got = got if isinstance(got, tuple) else (got,)
        if len(got) != len(want):
            raise NotEquivalent(f"{backend}: {len(got)} outputs, expected {len(want)}")
        tol = table.get((backend, dtype), 1e-4)
        worst = 0.0
        for name, g, w in zip(prog.outputs, got, want):
            err = compare(g, w, tol)
            if not err <= tol:
                shapes = {n: np.shape(x) for n, x in inputs.items()}
                raise NotEquivalent(
                    f"{backend} ({dtype}) differs from numpy on `{name}`: error {err:.3g} > {tol:.1g}\n"
                    f"input shapes: {shapes}\nspec:\n{prog.source.text if prog.source else ''}"
                )
            worst = max(worst, err)
        errors[backend] = worst
    return errors


def assert_gradients(
    spec,
    inputs: dict[str, np.ndarray] | None = None,
    sizes: dict[str, int] | None = None,
    params: dict | None = None,
    wrt=None,
    seed: int = 0,
    tol: float = 1e-7,
) -> float:
    """Check a spec's gradients two independent ways, in float64: PyTorch's autograd through the torch
    backend's generated code, and the backward cascade that :func:`einattn.grad` derives, run by the NumPy
    reference, with the same random cotangents. Returns the largest difference (relative to 1 + |value|,
    a NaN or an infinity must be matched at the same position); raises :class:`NotEquivalent`
    naming the input. ``inputs``, ``sizes``, ``params`` and ``seed`` as for :func:`assert_equivalent`."""
    import torch

    prog = (spec.program if isinstance(spec, Spec) else einattn.api._program(spec)).with_params(params)
    if inputs is None:
        inputs = _default_inputs(prog, sizes, seed)
    g = einattn.grad(prog, wrt)
    args = {
        n: torch.tensor(np.asarray(x), requires_grad=n in g.gradients)
        if prog.tensor(n).dtype == "float"
        else torch.as_tensor(np.asarray(x), dtype=torch.int64)
        for n, x in inputs.items()
    }
    outs = einattn.compile(prog, backend="torch")(**args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    rng = np.random.default_rng(seed + 1)
    cots = {
        g.cotangents[o]: rng.standard_normal(tuple(y.shape))
        for o, y in zip(prog.outputs, outs)
        if o in g.cotangents
    }
    loss = sum(
        (y * torch.from_numpy(cots[g.cotangents[o]])).sum()
        for o, y in zip(prog.outputs, outs)
        if o in g.cotangents
    )
    want = torch.autograd.grad(loss, [args[n] for n in g.gradients], allow_unused=True)
    got = einattn.compile(g.program, backend="numpy")(**inputs, **cots)
    got = got if isinstance(got, tuple) else (got,)
    worst = 0.0
    for n, a, w in zip(g.gradients, got, want):
        err = compare(a, np.zeros(np.shape(a)) if w is None else w.numpy(), tol)
        if not err <= tol:
            raise NotEquivalent(
                f"the gradient of `{n}`: the derived backward cascade differs from torch autograd by "
                f"{err:.3g} (tolerance {tol:.1g})\nspec:\n{prog.source.text if prog.source else ''}"
            )
        worst = max(worst, err)
    return worst
