"""Session 14 review: gradients from the outside.

`torch.autograd.gradcheck` in float64 on small sizes, on the torch backend and on the triton backend (whose
backward recomputes the spec through the torch backend), for specs that tests/test_torch_autograd.py does not
check: params overridden at compile time, `: int` inputs in filters and gathers, GQA's `h // R` with a window
and a second output, iterative ranks that keep their history, `??` guarding a running max, shifted and
clamped reads, every function of the registry. Then layouts (non-contiguous, expanded, mixed dtypes) through
the triton backward, and `torch.compile(fullgraph=True)` around the triton custom op's backward and around
`einattn.nn.EinAttention`'s learned weight.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

if not torch.cuda.is_available():  # the triton backend runs its kernels in the interpreter on the CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path

import einattn
from einattn.nn import EinAttention

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

pytestmark = [
    pytest.mark.filterwarnings("ignore::einattn.EinWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

GQA_WINDOW = """\
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
param  W = 2
output O, L
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where p - W < m and m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h // R, m, f] / DEN[b, h, p]
L[b, h, p]     = log(DEN[b, h, p]) + GM[b, h, p]
"""

PREFIX_SCAN = """\
input  q[e], K[t, e], V[t, f]
output O
S[t]         = q[e] * K[t, e]
RM[0]        = -inf
RD[0]        = 0
RN[0, f]     = 0
RM[t + 1]    = max(RM[t], S[t])
RD[t + 1]    = RD[t] * exp(RM[t] - RM[t + 1]) + exp(S[t] - RM[t + 1])
RN[t + 1, f] = RN[t, f] * exp(RM[t] - RM[t + 1]) + exp(S[t] - RM[t + 1]) * V[t, f]
O[t, f]      = RN[t + 1, f] / RD[t + 1]
"""

GUARDED = """\
input  X[t, p]
output C, R
LX[t, p]     = X[t, p]  where t >= p
RM[0, p]     = -inf
RM[t + 1, p] = max(RM[t, p], LX[t, p]) ?? RM[t, p]
C[t, p]      = exp(RM[t, p] - max(RM[t, p], LX[t, p])) ?? 1
R[0, p]      = 0
R[t + 1, p]  = R[t, p] * tanh(LX[t, p] ?? 0) + (LX[t, p] ?? X[t, p])
"""

SHIFTS = """\
input  X[i], w[k]
output Y
Y[i] = w[k] * (X[i + k - 1] ?? X[i]) + square(X[clamp(i - k, 0, I - 1)])
"""

FUNCTIONS = """\
input  X[i, j], Y[j]
output Z
Z[i] = (clamp(X[i, j], -0.5, 0.5) * relu(Y[j]) + elu(X[i, j]) * softplus(Y[j]) + abs(X[i, j]) * sigmoid(Y[j])
        + tanh(X[i, j]) * exp2(Y[j]) + log(1 + square(X[i, j])) * sqrt(1 + abs(Y[j]))
        + log2(2 + X[i, j] * X[i, j]) * rsqrt(2 + Y[j] * Y[j]) + max(X[i, j], Y[j]) - min(X[i, j], -Y[j]))
"""

SIZES = dict(b=1, h=2, g=1, p=3, m=4, e=2, f=2, t=3, i=3, j=4, k=3)


def _spec(name):
    texts = {
        "gqa_window": GQA_WINDOW,
        "prefix_scan": PREFIX_SCAN,
        "guarded": GUARDED,
        "shifts": SHIFTS,
        "functions": FUNCTIONS,
    }
    return texts[name] if name in texts else EXAMPLES / f"{name}.ein"


def _inputs(prog, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    floats, ints = {}, {}
    for n in prog.inputs:
        t = prog.tensor(n)
        shape = tuple(sizes[r] for r in t.ranks)
        if t.dtype == "int":
            ints[n] = (torch.arange(shape[-1]) // 2).expand(shape).contiguous().to(DEVICE)
        else:
            floats[n] = torch.randn(shape, generator=g, dtype=torch.float64).to(DEVICE)
    return floats, ints


def _gradcheck(backend, name, params, sizes=None, fast=False, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        prog = einattn.compile(_spec(name), params=params).program
        kern = einattn.compile(prog, backend=backend, **options)
    floats, ints = _inputs(prog, dict(SIZES, **(sizes or {})))
    names = list(floats)
    leaves = tuple(floats[n].clone().requires_grad_(True) for n in names)

    def fn(*values):
        return kern(**ints, **dict(zip(names, values)))

    assert torch.autograd.gradcheck(fn, leaves, atol=1e-6, rtol=1e-5, fast_mode=fast)
    return kern


TORCH_CASES = [
    ("softcap", {"C": 2.0}, {}),  # a float param overridden at compile time, tanh
    ("attention_2pass", {"M0": 3}, {}),  # a 2-pass cascade over tiles, a ragged last tile
    ("attention_deferred", {}, {}),
    ("variants/18_document_mask", {}, {"p": 4, "m": 4}),  # an `: int` tensor compared in a filter
    ("variants/02_gqa_groupmap", {}, {"h": 4, "g": 2}),  # a gather through an `: int` tensor
    ("variants/20_softcap_alibi_lse", {"C": 3.0}, {}),  # filter, slope, two outputs
    ("variants/10_natten_1d", {"W": 3}, {"p": 5, "m": 5}),  # clamped, floor-divided index expressions
    ("gqa_window", {"W": 3}, {"h": 4, "g": 2}),  # h // R, a window, log-sum-exp as a second output
    ("prefix_scan", {}, {}),  # an iterative rank read at every step (the history is an output)
    ("guarded", {}, {}),  # `??` guarding a running max that starts at -inf
    ("shifts", {}, {}),  # shifted reads off the ends, `??`, clamp in an index
    ("functions", {}, {}),  # every function of the registry
]


@pytest.mark.parametrize(("name", "params", "sizes"), TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_torch_gradcheck(name, params, sizes):
    _gradcheck("torch", name, params, sizes)


@pytest.mark.parametrize("name", ["prefix_scan", "guarded"])
def test_torch_gradcheck_as_written_without_recompute(name):
    _gradcheck("torch", name, {}, passes="as-written", recompute=False)


TRITON_CASES = [
    ("causal_1pass", {"M0": 2}, {"p": 3, "m": 5}, "fused"),  # the fused path: iterative rank, `??`, skips
    ("gqa_window", {"W": 3}, {"h": 4, "g": 2}, "fused"),  # h // R, a window, two outputs
    ("guarded", {}, {}, "general"),  # `??` over a running max, a history output
    ("shifts", {}, {}, "fused"),  # (its sums streamed by passes="auto", rule 3 of docs/rewrite.md)
]


@pytest.mark.parametrize(("name", "params", "sizes", "path"), TRITON_CASES, ids=[c[0] for c in TRITON_CASES])
def test_triton_gradcheck(name, params, sizes, path):
    """The triton kernel's backward (recomputed through the torch backend) against finite differences of
    the triton forward; fast mode (random directions) to keep the interpreter's forward passes few."""
    kern = _gradcheck("triton", name, params, sizes, fast=True, tile=2)
    assert kern.plan.path == path


def test_triton_gradients_with_strided_expanded_and_mixed_dtype_inputs():
    """Gradients reach each input in its own shape and dtype, through views the kernel reads in place: a
    transposed Q, an expanded K (stride 0 over heads: its gradient sums over them), a sliced V, float32 Q
    beside float64 K and V. They equal the torch backend's."""
    spec = EXAMPLES / "causal.ein"
    kt, kr = (einattn.compile(spec, backend=b) for b in ("torch", "triton"))
    g = torch.Generator().manual_seed(0)
    base = dict(
        Q=torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64).transpose(1, 2),
        K=torch.randn(1, 1, 5, 2, generator=g, dtype=torch.float64).expand(1, 2, 5, 2),
        V=torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64)[..., ::2],
    )
    for cast in (lambda n, x: x, lambda n, x: x.float() if n == "Q" else x):
        grads = []
        for kern in (kt, kr):
            leaves = {n: cast(n, x).detach().to(DEVICE).requires_grad_(True) for n, x in base.items()}
            out = kern(**leaves)
            w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=DEVICE).reshape(out.shape)
            (out * w).sum().backward()
            for n, x in leaves.items():
                assert x.grad is not None and x.grad.shape == x.shape and x.grad.dtype == x.dtype, n
                assert torch.isfinite(x.grad).all(), n
            grads.append({n: x.grad.double().cpu() for n, x in leaves.items()})
        for n in base:
            torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6)


def test_triton_backward_under_torch_compile_fullgraph():
    """Beyond test_torch_autograd.py (torch backend) and test_triton_module.py (the custom op's forward under
    torch.compile): the triton kernel's custom op traced with `fullgraph=True` *with* its backward, GQA's
    `h // R` on the fused path, gradients equal to the eager ones."""
    torch._dynamo.reset()
    kern = einattn.compile(EXAMPLES / "gqa.ein", backend="triton", tile=4)
    g = torch.Generator().manual_seed(1)
    x = [
        torch.randn(1, 4, 5, 4, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_(),
        torch.randn(1, 2, 6, 4, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_(),
        torch.randn(1, 2, 6, 3, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_(),
    ]
    compiled = torch.compile(lambda q, k, v: kern(q, k, v) * 2.0, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*x).square().sum(), x)
    want = torch.autograd.grad((kern(*x) * 2.0).square().sum(), x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert all(torch.count_nonzero(a) > 0 for a in got)


def test_ein_attention_learned_slope_under_torch_compile_fullgraph():
    """`einattn.nn.EinAttention` with a learned ALiBi slope, compiled as a module with `fullgraph=True`: the
    parameter's gradient equals eager mode's and a hand-written reference's."""
    torch._dynamo.reset()
    slope = torch.tensor([0.5, 0.25], dtype=torch.float64)
    attn = EinAttention(EXAMPLES / "alibi.ein", weights={"slope": slope})
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 6, 3, generator=g, dtype=torch.float64) for _ in range(3))
    compiled = torch.compile(attn, fullgraph=True, backend="aot_eager")
    compiled(q, k, v).square().sum().backward()
    got = attn.weights["slope"].grad.clone()
    attn.zero_grad()
    attn(q, k, v).square().sum().backward()
    torch.testing.assert_close(got, attn.weights["slope"].grad, rtol=1e-12, atol=1e-12)
    s = slope.clone().requires_grad_(True)
    pos = torch.arange(6.0, dtype=torch.float64)
    scores = q @ k.transpose(-1, -2) / 3**0.5 + s[:, None, None] * (pos[None, :] - pos[:, None])
    scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), -torch.inf)
    (torch.softmax(scores, -1) @ v).square().sum().backward()
    torch.testing.assert_close(got, s.grad, rtol=1e-10, atol=1e-12)
