"""Session 21 review: `einattn.grad` / `einattn grad` from the outside.

Each test writes a small spec a researcher would plausibly write, runs the derived backward program on the
NumPy backend in float64 with random cotangents, and compares the gradients with an independent reference:
the same formula written by hand in PyTorch (float64) and differentiated by `torch.autograd.grad` (einattn's
torch backend is not used for the reference). The forward outputs are compared too, which checks that the
reference is the spec's function. At kinks the reference follows PyTorch's conventions, as docs/rewrite.md
says einattn does: `torch.amax`/`amin` split ties evenly, `torch.maximum`/`minimum` split a tie 0.5/0.5,
`relu`/`abs` take 0 at 0, and `clamp(x, lo, hi)` is `min(max(x, lo), hi)`.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import einattn

F64 = torch.float64
TOL = 1e-9
NEG_INF = float("-inf")

pytestmark = [
    pytest.mark.filterwarnings("ignore::einattn.EinWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]


# ----------------------------------------------------------------------------------------------------
# helpers


def _tensor(v):
    a = np.asarray(v)
    if a.dtype.kind in "iu":
        return torch.from_numpy(a.astype(np.int64))
    return torch.from_numpy(a.astype(np.float64)).requires_grad_(True)


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


def check(spec, inputs, ref, *, wrt=None, params=None, seed=1, expect=None, tol=TOL):
    """Gradients of `spec` (NumPy backend) against torch autograd through `ref`; returns (grad, got)."""
    prog = einattn.parse(spec)
    fwd = _tuple(einattn.compile(prog, backend="numpy", params=params)(**inputs))
    tin = {k: _tensor(v) for k, v in inputs.items()}
    touts = _tuple(ref(**tin))
    assert len(touts) == len(prog.outputs)
    for name, a, t in zip(prog.outputs, fwd, touts):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=tol, atol=tol, err_msg=f"forward {name}")

    g = einattn.grad(spec, wrt=wrt, params=params)
    assert set(g.cotangents) == set(prog.outputs)
    if expect is not None:
        assert set(g.gradients) == set(expect)
    rng = np.random.default_rng(seed)
    cots = {
        g.cotangents[o]: np.asarray(rng.standard_normal(np.shape(a)), dtype=np.float64)
        for o, a in zip(prog.outputs, fwd)
    }
    got = _tuple(einattn.compile(g.program, backend="numpy")(**inputs, **cots))
    names = list(g.gradients)
    assert len(got) == len(names)
    want = torch.autograd.grad(
        touts,
        [tin[n] for n in names],
        grad_outputs=[torch.from_numpy(cots[g.cotangents[o]]) for o in prog.outputs],
        allow_unused=True,
    )
    for n, a, w in zip(names, got, want):
        w = torch.zeros_like(tin[n]) if w is None else w
        assert np.shape(a) == tuple(w.shape), n
        np.testing.assert_allclose(a, w.numpy(), rtol=tol, atol=tol, err_msg=f"gradient d{n}")
    return g, dict(zip(names, got)), cots


def rnd(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


def grid(P, M):
    p = torch.arange(P)[:, None]
    m = torch.arange(M)[None, :]
    return p, m


def masked_softmax(s, mask):
    """Softmax over the last dimension restricted to `mask`; a row with no key gives 0 (and no gradient)."""
    neg = torch.where(mask, s, torch.full_like(s, NEG_INF))
    gm = neg.amax(-1, keepdim=True).detach()
    gm = torch.where(torch.isfinite(gm), gm, torch.zeros_like(gm))
    ex = torch.where(mask, torch.exp(torch.where(mask, s, torch.zeros_like(s)) - gm), torch.zeros_like(s))
    den = ex.sum(-1, keepdim=True)
    return ex / torch.where(den > 0, den, torch.ones_like(den))


SOFTMAX_TAIL = """\
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
"""


# ----------------------------------------------------------------------------------------------------
# softmax attention variants


TEMP = (
    """\
# softmax attention with a temperature given at call time
input  Q[h, p, e], K[h, m, e], V[h, m, f], tau
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] / tau
"""
    + SOFTMAX_TAIL
)


def test_temperature_scalar_input():
    q, k, v = rnd(0, (2, 3, 4), (2, 5, 4), (2, 5, 3))

    def ref(Q, K, V, tau):
        return torch.softmax(torch.einsum("hpe,hme->hpm", Q, K) / tau, -1) @ V

    g, got, _ = check(TEMP, dict(Q=q, K=k, V=v, tau=np.array(0.7)), ref, expect=["Q", "K", "V", "tau"])
    assert np.shape(got["tau"]) == ()
    assert g.cotangents == {"O": "dO"}


CAUSAL = """\
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
"""


def causal_ref(Q, K, V):
    s = torch.einsum("bhpe,bhme->bhpm", Q, K) / np.sqrt(Q.shape[-1])
    p, m = grid(Q.shape[2], K.shape[2])
    return torch.softmax(s.masked_fill(~(m <= p), NEG_INF), -1) @ V


CAUSAL_INPUTS = dict(zip("QKV", rnd(1, (2, 2, 5, 3), (2, 2, 5, 3), (2, 2, 5, 4))))


def test_causal():
    g, _, _ = check(CAUSAL, CAUSAL_INPUTS, causal_ref, expect=["Q", "K", "V"])
    assert list(g.gradients.values()) == ["dQ", "dK", "dV"]


def test_causal_wrt_subset_order():
    g, _, _ = check(CAUSAL, CAUSAL_INPUTS, causal_ref, wrt=["V", "Q"], expect=["V", "Q"])
    assert g.program.outputs == tuple(g.gradients.values())


SLIDING = """\
input  Q[p, e], K[m, e], V[m, f]
param  W = 2
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)  where p - W < m and m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""


@pytest.mark.parametrize("W", [None, 3])
def test_sliding_window_param_override(W):
    q, k, v = rnd(2, (6, 3), (6, 3), (6, 2))
    w = 2 if W is None else W

    def ref(Q, K, V):
        p, m = grid(6, 6)
        s = (Q @ K.T) / np.sqrt(3)
        return torch.softmax(s.masked_fill(~((p - w < m) & (m <= p)), NEG_INF), -1) @ V

    check(SLIDING, dict(Q=q, K=k, V=v), ref, params=None if W is None else {"W": W})


def test_bidirectional_window_with_abs():
    spec = SLIDING.replace("where p - W < m and m <= p", "where abs(p - m) < W")
    q, k, v = rnd(3, (5, 3), (6, 3), (6, 2))

    def ref(Q, K, V):
        p, m = grid(5, 6)
        s = (Q @ K.T) / np.sqrt(3)
        return torch.softmax(s.masked_fill(~((p - m).abs() < 2), NEG_INF), -1) @ V

    check(spec, dict(Q=q, K=k, V=v), ref)


ALIBI = (
    """\
# ALiBi with learned slopes, causal
input  Q[h, p, e], K[h, m, e], V[h, m, f], slope[h]
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, m, p]  = QK[h, m, p] + slope[h] * (m - p)  where m <= p
"""
    + SOFTMAX_TAIL
)


def test_alibi_slopes_input():
    q, k, v = rnd(4, (3, 5, 4), (3, 5, 4), (3, 5, 2))
    slope = np.array([0.5, 0.25, -0.3])

    def ref(Q, K, V, slope):
        p, m = grid(5, 5)
        s = torch.einsum("hpe,hme->hpm", Q, K) / 2.0 + slope[:, None, None] * (m - p)
        return torch.softmax(s.masked_fill(~(m <= p), NEG_INF), -1) @ V

    check(ALIBI, dict(Q=q, K=k, V=v, slope=slope), ref, expect=["Q", "K", "V", "slope"])


SOFTCAP = """\
input  Q[p, e], K[m, e], V[m, f]
param  C = 5.0
output O
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = C * tanh(QK[m, p] / C)
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""


@pytest.mark.parametrize("C", [None, 2.0])
def test_softcap_float_param(C):
    q, k, v = rnd(5, (4, 3), (6, 3), (6, 2))
    q = 3 * q
    c = 5.0 if C is None else C

    def ref(Q, K, V):
        return torch.softmax(c * torch.tanh((Q @ K.T) / c), -1) @ V

    check(SOFTCAP, dict(Q=q, K=k, V=v), ref, params=None if C is None else {"C": C})


GQA = """\
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h // R, m, f] / DEN[b, h, p]
"""


def gqa_ref(Q, K, V):
    r = Q.shape[1] // K.shape[1]
    k = K.repeat_interleave(r, dim=1)
    v = V.repeat_interleave(r, dim=1)
    return torch.softmax(torch.einsum("bhpe,bhme->bhpm", Q, k) / np.sqrt(Q.shape[-1]), -1) @ v


GQA_INPUTS = dict(zip("QKV", rnd(6, (1, 4, 3, 4), (1, 2, 5, 4), (1, 2, 5, 3))))


def test_gqa():
    check(GQA, GQA_INPUTS, gqa_ref)


def test_multi_query_broadcast_key():
    spec = """\
input  Q[h, p, e], K[m, e], V[m, f]
output O
S[h, m, p]  = Q[h, p, e] * K[m, e] * rsqrt(E)
""" + SOFTMAX_TAIL.replace("V[h, m, f]", "V[m, f]")
    q, k, v = rnd(7, (3, 4, 2), (5, 2), (5, 3))

    def ref(Q, K, V):
        return torch.softmax(torch.einsum("hpe,me->hpm", Q, K) / np.sqrt(2), -1) @ V

    check(spec, dict(Q=q, K=k, V=v), ref)


RELBIAS = (
    """\
# a learned relative-position bias table, T5 style, indexed by p - m + D
input  Q[h, p, e], K[h, m, e], V[h, m, f], REL[h, r]
param  D = 3
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, m, p]  = QK[h, m, p] + REL[h, p - m + D]
"""
    + SOFTMAX_TAIL
)


@pytest.mark.parametrize("D,size", [(3, 7), (2, 5), (1, 3)])
def test_relative_position_bias_table(D, size):
    """Size 2D + 1; where |p - m| > D the table read is outside T: absent, the key is masked."""
    q, k, v, t = rnd(8, (2, 4, 3), (2, 4, 3), (2, 4, 2), (2, size))

    def ref(Q, K, V, REL):
        p, m = grid(4, 4)
        idx = p - m + D
        ok = (idx >= 0) & (idx < size)
        s = torch.einsum("hpe,hme->hpm", Q, K) / np.sqrt(3) + REL[:, idx.clamp(0, size - 1)]
        return masked_softmax(s, ok.expand(2, 4, 4)) @ V

    check(RELBIAS, dict(Q=q, K=k, V=v, REL=t), ref, params={"D": D})


SINK = """\
# an attention sink per head: one extra logit in the denominator, no value
input  Q[h, p, e], K[h, m, e], V[h, m, f], sink[h]
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
DS[h, p]    = DEN[h, p] + exp(sink[h] - GM[h, p])
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DS[h, p]
"""

SINK_IN_MAX = """\
# the sink inside the max too
input  Q[h, p, e], K[h, m, e], V[h, m, f], sink[h]
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
LM[h, p]    = S[h, m, p] :: max(m)
GM[h, p]    = max(LM[h, p], sink[h])
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
DS[h, p]    = DEN[h, p] + exp(sink[h] - GM[h, p])
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DS[h, p]
"""


def sink_ref(Q, K, V, sink):
    s = torch.einsum("hpe,hme->hpm", Q, K) / np.sqrt(Q.shape[-1])
    logits = torch.cat([s, sink[:, None, None].expand(s.shape[0], s.shape[1], 1)], -1)
    return torch.softmax(logits, -1)[..., :-1] @ V


@pytest.mark.parametrize("spec", [SINK, SINK_IN_MAX], ids=["denominator", "in_max"])
def test_attention_sink(spec):
    q, k, v = rnd(9, (2, 3, 4), (2, 5, 4), (2, 5, 2))
    sink = np.array([4.0, -1.5])  # head 0's sink above every score
    check(spec, dict(Q=q, K=k, V=v, sink=sink), sink_ref, expect=["Q", "K", "V", "sink"])


def test_sigmoid_attention_with_bias_scalar():
    spec = """\
input  Q[p, e], K[m, e], V[m, f], bias
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)
O[p, f] = sigmoid(S[m, p] + bias) * V[m, f]
"""
    q, k, v = rnd(10, (4, 3), (5, 3), (5, 2))

    def ref(Q, K, V, bias):
        return torch.sigmoid((Q @ K.T) / np.sqrt(3) + bias) @ V

    check(spec, dict(Q=q, K=k, V=v, bias=np.array(-0.4)), ref)


def test_linear_attention_elu_feature_map_causal():
    spec = """\
input  Q[p, e], K[m, e], V[m, f]
output O
FQ[p, e]  = elu(Q[p, e]) + 1
FK[m, e]  = elu(K[m, e]) + 1
NUM[p, f] = FQ[p, e] * FK[m, e] * V[m, f]  where m <= p
DEN[p]    = FQ[p, e] * FK[m, e]            where m <= p
O[p, f]   = NUM[p, f] / DEN[p]
"""
    q, k, v = rnd(11, (5, 3), (5, 3), (5, 2))

    def ref(Q, K, V):
        fq, fk = F.elu(Q) + 1, F.elu(K) + 1
        p, m = grid(5, 5)
        a = (fq @ fk.T) * (m <= p)
        return (a @ V) / a.sum(-1, keepdim=True)

    check(spec, dict(Q=q, K=k, V=v), ref)


DOCMASK = """\
input  Q[p, e], K[m, e], V[m, f], doc[m] : int
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)  where doc[m] == doc[p] and m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""


def test_document_mask_int_input():
    q, k, v = rnd(12, (6, 3), (6, 3), (6, 2))
    doc = np.array([0, 0, 1, 1, 1, 2])

    def ref(Q, K, V, doc):
        p, m = grid(6, 6)
        ok = (doc[m] == doc[p]) & (m <= p)
        return torch.softmax(((Q @ K.T) / np.sqrt(3)).masked_fill(~ok, NEG_INF), -1) @ V

    check(DOCMASK, dict(Q=q, K=k, V=v, doc=doc), ref, expect=["Q", "K", "V"])


PADDING = """\
# key padding: batch b has klen[b] keys; klen = 0 masks every row of the batch
input  Q[b, p, e], K[b, m, e], V[b, m, f], klen[b] : int
output O
S[b, m, p]  = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where m < klen[b]
GM[b, p]    = S[b, m, p] :: max(m)
EX[b, m, p] = exp(S[b, m, p] - GM[b, p])
DEN[b, p]   = EX[b, m, p]
O[b, p, f]  = EX[b, m, p] * V[b, m, f] / DEN[b, p]
"""


def padding_ref(Q, K, V, klen):
    s = torch.einsum("bpe,bme->bpm", Q, K) / np.sqrt(Q.shape[-1])
    ok = (torch.arange(K.shape[1])[None, None, :] < klen[:, None, None]).expand_as(s)
    return masked_softmax(s, ok) @ V


PADDING_INPUTS = dict(zip("QKV", rnd(13, (3, 3, 2), (3, 5, 2), (3, 5, 3))), klen=np.array([3, 0, 5]))


def test_padding_lengths_with_an_empty_batch():
    _, got, _ = check(PADDING, PADDING_INPUTS, padding_ref)
    assert np.all(got["Q"][1] == 0) and np.all(got["K"][1] == 0) and np.all(got["V"][1] == 0)
    assert np.all(got["K"][0, 3:] == 0) and np.all(got["V"][0, 3:] == 0)


def test_fully_masked_first_row():
    spec = CAUSAL.replace("where m <= p", "where m < p")
    q, k, v = rnd(14, (1, 2, 4, 3), (1, 2, 4, 3), (1, 2, 4, 2))

    def ref(Q, K, V):
        s = torch.einsum("bhpe,bhme->bhpm", Q, K) / np.sqrt(3)
        p, m = grid(4, 4)
        return masked_softmax(s, (m < p).expand_as(s)) @ V

    _, got, _ = check(spec, dict(Q=q, K=k, V=v), ref)
    assert np.all(got["Q"][:, :, 0] == 0)  # row 0 sees no key
    assert np.all(got["K"][:, :, 3] == 0) and np.all(got["V"][:, :, 3] == 0)  # the last key is seen by nobody


LSE_AND_O = (
    """\
# two outputs sharing the max and the denominator: the output and its log-sum-exp
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O, L
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p + 1
L[h, p]     = GM[h, p] + log(DEN[h, p])
"""
    + SOFTMAX_TAIL
)


def test_log_sum_exp_and_output_sharing_intermediates():
    q, k, v = rnd(15, (2, 4, 3), (2, 5, 3), (2, 5, 2))

    def ref(Q, K, V):
        p, m = grid(4, 5)
        s = (torch.einsum("hpe,hme->hpm", Q, K) / np.sqrt(3)).masked_fill(~(m <= p + 1), NEG_INF)
        return torch.softmax(s, -1) @ V, torch.logsumexp(s, -1)

    g, _, _ = check(LSE_AND_O, dict(Q=q, K=k, V=v), ref)
    assert g.cotangents == {"O": "dO", "L": "dL"}


def test_log_sum_exp_only():
    spec = LSE_AND_O.replace("output O, L", "output L")
    q, k, v = rnd(16, (2, 4, 3), (2, 5, 3), (2, 5, 2))

    def ref(Q, K, V):
        p, m = grid(4, 5)
        s = (torch.einsum("hpe,hme->hpm", Q, K) / np.sqrt(3)).masked_fill(~(m <= p + 1), NEG_INF)
        return torch.logsumexp(s, -1)

    # V feeds only O, which is not an output: only Q and K have gradients
    check(spec, dict(Q=q, K=k, V=v), ref, expect=["Q", "K"])


def test_exp2_with_log2e():
    spec = """\
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E) * 1.4426950408889634
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp2(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""
    q, k, v = rnd(17, (3, 4), (5, 4), (5, 2))

    def ref(Q, K, V):
        return torch.softmax((Q @ K.T) / 2.0, -1) @ V

    check(spec, dict(Q=q, K=k, V=v), ref)


def test_temperature_param_on_the_shift():
    spec = """\
input  Q[p, e], K[m, e], V[m, f]
param  TEMP = 0.5
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp((S[m, p] - GM[p]) / TEMP)
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""
    q, k, v = rnd(18, (3, 2), (5, 2), (5, 2))

    def ref(Q, K, V):
        return torch.softmax((Q @ K.T) / 0.3, -1) @ V

    check(spec, dict(Q=q, K=k, V=v), ref, params={"TEMP": 0.3})


def test_per_row_inverse_temperature_on_the_shift():
    spec = """\
input  Q[p, e], K[m, e], V[m, f], BETA[p]
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(BETA[p] * (S[m, p] - GM[p]))
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""
    q, k, v = rnd(19, (3, 2), (5, 2), (5, 2))
    beta = np.array([0.5, 1.5, 2.0])

    def ref(Q, K, V, BETA):
        return torch.softmax((Q @ K.T) * BETA[:, None], -1) @ V

    check(spec, dict(Q=q, K=k, V=v, BETA=beta), ref)


def test_differential_attention_with_scalar_lambda():
    spec = """\
input  Q1[p, e], K1[m, e], Q2[p, e], K2[m, e], V[m, f], lam
output O
S1[m, p]  = Q1[p, e] * K1[m, e] * rsqrt(E)
S2[m, p]  = Q2[p, e] * K2[m, e] * rsqrt(E)
G1[p]     = S1[m, p] :: max(m)
G2[p]     = S2[m, p] :: max(m)
X1[m, p]  = exp(S1[m, p] - G1[p])
X2[m, p]  = exp(S2[m, p] - G2[p])
D1[p]     = X1[m, p]
D2[p]     = X2[m, p]
O1[p, f]  = X1[m, p] * V[m, f] / D1[p]
O2[p, f]  = X2[m, p] * V[m, f] / D2[p]
O[p, f]   = O1[p, f] - lam * O2[p, f]
"""
    q1, k1, q2, k2, v = rnd(20, (3, 2), (4, 2), (3, 2), (4, 2), (4, 3))

    def ref(Q1, K1, Q2, K2, V, lam):
        s = 1 / np.sqrt(2)
        return torch.softmax(Q1 @ K1.T * s, -1) @ V - lam * (torch.softmax(Q2 @ K2.T * s, -1) @ V)

    check(spec, dict(Q1=q1, K1=k1, Q2=q2, K2=k2, V=v, lam=np.array(0.8)), ref)


def test_permutation_gather_with_out_of_range_key():
    spec = """\
input  Q[p, e], K[n, e], V[n, f], perm[m] : int
output O
S[m, p]  = Q[p, e] * K[perm[m], e] * rsqrt(E)
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[perm[m], f] / DEN[p]
"""
    q, k, v = rnd(21, (3, 2), (5, 2), (5, 3))
    perm = np.array([2, 0, 2, -1, 4, 7])  # a duplicate, -1 and 7 outside K: those keys are absent

    def ref(Q, K, V, perm):
        ok = (perm >= 0) & (perm < 5)
        idx = perm.clamp(0, 4)
        s = (Q @ K[idx].T) / np.sqrt(2)
        return masked_softmax(s, ok[None, :].expand_as(s)) @ V[idx]

    _, got, _ = check(spec, dict(Q=q, K=k, V=v, perm=perm), ref)
    assert np.all(got["K"][[1, 3]] == 0) and np.all(got["V"][[1, 3]] == 0)  # rows nobody gathers


def test_paged_kv_cache_gather():
    spec = """\
input  q[b, e], KC[n, s, e], VC[n, s, f], table[b, j] : int
param  M = 4
output O
SC[b, m] = q[b, e] * KC[table[b, m // S], m % S, e]
GM[b]    = SC[b, m] :: max(m)
EX[b, m] = exp(SC[b, m] - GM[b])
DEN[b]   = EX[b, m]
O[b, f]  = EX[b, m] * VC[table[b, m // S], m % S, f] / DEN[b]
"""
    q, kc, vc = rnd(22, (2, 3), (3, 2, 3), (3, 2, 2))
    table = np.array([[2, 0], [0, 1]])  # page 0 shared by both sequences

    def ref(q, KC, VC, table):
        outs = []
        for b in range(2):
            kb = KC[table[b]].reshape(4, 3)
            vb = VC[table[b]].reshape(4, 2)
            outs.append(torch.softmax(kb @ q[b], -1) @ vb)
        return torch.stack(outs)

    check(spec, dict(q=q, KC=kc, VC=vc, table=table), ref, expect=["q", "KC", "VC"])


def test_additive_float_mask_input_gets_a_gradient():
    spec = """\
input  Q[p, e], K[m, e], V[m, f], B[p, m]
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)
T[m, p]  = S[m, p] + B[p, m]
GM[p]    = T[m, p] :: max(m)
EX[m, p] = exp(T[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""
    q, k, v, bias = rnd(23, (3, 2), (4, 2), (4, 2), (3, 4))

    def ref(Q, K, V, B):
        return torch.softmax((Q @ K.T) / np.sqrt(2) + B, -1) @ V

    check(spec, dict(Q=q, K=k, V=v, B=bias), ref, expect=["Q", "K", "V", "B"])


def test_decoding_causal_offset():
    spec = """\
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p + M - P
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""
    q, k, v = rnd(24, (2, 3), (6, 3), (6, 2))

    def ref(Q, K, V):
        p, m = grid(2, 6)
        return torch.softmax(((Q @ K.T) / np.sqrt(3)).masked_fill(~(m <= p + 4), NEG_INF), -1) @ V

    check(spec, dict(Q=q, K=k, V=v), ref)


def test_cross_entropy_wrt_logits_only():
    spec = """\
input  Z[i, c], T[i, c]
output LOSS
ZM[i]  = Z[i, c] :: max(c)
SE[i]  = exp(Z[i, c] - ZM[i])
LSE[i] = ZM[i] + log(SE[i])
LOSS   = -T[i, c] * (Z[i, c] - LSE[i]) / I
"""
    z, t = rnd(25, (4, 5), (4, 5))
    t = np.abs(t) / np.abs(t).sum(1, keepdims=True)

    def ref(Z, T):
        return -(T * torch.log_softmax(Z, -1)).sum() / 4

    g, _, _ = check(spec, dict(Z=z, T=t), ref, wrt=["Z"], expect=["Z"])
    assert g.gradients == {"Z": "dZ"}


# ----------------------------------------------------------------------------------------------------
# reductions, kinks and elementwise rules


def test_max_and_min_reductions_with_ties():
    spec = """\
input  X[i, j]
output HI, LO
HI[i] = X[i, j] :: max(j)
LO[i] = X[i, j] :: min(j)
"""
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, 5.0, -1.0, 4.0]])

    def ref(X):
        return X.amax(1), X.amin(1)

    check(spec, dict(X=x), ref)


def test_sliding_max_pool_with_ties_and_partial_windows():
    spec = """\
input  X[p]
param  W = 3
output Y
Y[p] = X[p + w] :: max(w)
"""
    x = np.array([1.0, 4.0, 4.0, 2.0, 0.0, 3.0, 3.0])

    def ref(X):
        return torch.stack([X[i : i + 3].amax() for i in range(7)])

    check(spec, dict(X=x), ref)


def test_sum_then_max_statement():
    spec = """\
input  X[i, j, k]
output Y
Y[i] = X[i, j, k] :: max(k)
"""
    x = np.array([[[1.0, 0.0, 2.0], [1.0, 2.0, 0.0]], [[0.5, -1.0, 3.0], [0.0, 1.0, -2.0]]])

    def ref(X):
        return X.sum(1).amax(-1)  # row 0 ties three ways (2, 2, 2)

    check(spec, dict(X=x), ref)


def test_max_over_two_ranks_with_ties():
    spec = """\
input  X[i, j, k]
output Y
Y[i] = X[i, j, k] :: max(j, k)
"""
    x = np.array([[[1.0, 5.0], [5.0, 2.0]], [[0.0, -1.0], [3.0, 3.0]]])

    def ref(X):
        return X.amax((1, 2))

    check(spec, dict(X=x), ref)


def test_relu_abs_step_at_zero():
    spec = """\
input  X[i, j], W[j]
output Y
Y[i, j] = relu(X[i, j]) * W[j] + abs(X[i, j]) + step(X[i, j]) * W[j]
"""
    x = np.array([[0.0, 1.5, -2.0], [-0.5, 0.0, 0.0]])
    w = np.array([0.3, -1.2, 2.0])

    def ref(X, W):
        return torch.relu(X) * W + X.abs() + (X > 0).to(F64) * W

    check(spec, dict(X=x, W=w), ref)


def test_elementwise_max_min_clamp_ties():
    spec = """\
input  X[i], Z[i]
output A, B, C
A[i] = max(X[i], Z[i])
B[i] = min(X[i], Z[i])
C[i] = clamp(X[i], -1, 2)
"""
    x = np.array([1.0, -1.0, 2.0, 3.0, 0.5])
    z = np.array([1.0, 0.0, 2.0, -3.0, 0.5])

    def ref(X, Z):
        lo, hi = torch.tensor(-1.0, dtype=F64), torch.tensor(2.0, dtype=F64)
        return torch.maximum(X, Z), torch.minimum(X, Z), torch.minimum(torch.maximum(X, lo), hi)

    check(spec, dict(X=x, Z=z), ref)


def test_function_chain():
    spec = """\
input  X[i], Y[i]
output U
U[i] = exp(X[i]) * log(1 + square(Y[i])) + sqrt(1 + abs(X[i])) * rsqrt(2 + Y[i] * Y[i]) \
       + tanh(X[i]) * sigmoid(Y[i]) + elu(X[i]) + softplus(Y[i]) + exp2(X[i]) - log2(3 + X[i])
"""
    x, y = rnd(26, (6,), (6,))

    def ref(X, Y):
        return (
            torch.exp(X) * torch.log(1 + Y**2)
            + torch.sqrt(1 + X.abs()) / torch.sqrt(2 + Y * Y)
            + torch.tanh(X) * torch.sigmoid(Y)
            + F.elu(X)
            + F.softplus(Y)
            + torch.exp2(X)
            - torch.log2(3 + X)
        )

    check(spec, dict(X=x, Y=y), ref)


def test_layer_norm_with_size_as_value():
    spec = """\
input  X[i, j], gamma[j], beta[j]
param  EPS = 1e-5
output Y
MEAN[i] = X[i, j] / J
C[i, j] = X[i, j] - MEAN[i]
VAR[i]  = square(C[i, j]) / J
Y[i, j] = C[i, j] * rsqrt(VAR[i] + EPS) * gamma[j] + beta[j]
"""
    x, gm, bt = rnd(27, (3, 5), (5,), (5,))

    def ref(X, gamma, beta):
        return F.layer_norm(X, (5,), gamma, beta, eps=1e-5)

    check(spec, dict(X=x, gamma=gm, beta=bt), ref)


def test_scalar_input_and_scalar_output():
    spec = """\
input  X[i, j], s
output TOTAL, Y
XS[i]  = X[i, j]
Y[i]   = s * XS[i] + square(s)
TOTAL  = Y[i] * Y[i]
"""
    (x,) = rnd(28, (3, 4))

    def ref(X, s):
        y = s * X.sum(1) + s * s
        return (y * y).sum(), y

    _, got, _ = check(spec, dict(X=x, s=np.array(1.3)), ref)
    assert np.shape(got["s"]) == ()


def test_term_added_once_per_point_of_the_summed_rank():
    spec = """\
input  A[i], X[i, j]
output S
S[i] = A[i] * A[i] + X[i, j]
"""
    a, x = rnd(29, (3,), (3, 4))

    def ref(A, X):
        return (A[:, None] * A[:, None] + X).sum(1)  # A[i]^2 added J = 4 times

    check(spec, dict(A=a, X=x), ref)


# ----------------------------------------------------------------------------------------------------
# absent points, ??, shifts, partitions


def test_default_operator_and_shifted_reads():
    spec = """\
input  X[i], Z[i]
output Y, U
Y[i] = X[i + 1] ?? Z[i] * 2
U[i] = (X[i - 1] - X[i]) ?? 0
"""
    x, z = rnd(30, (5,), (5,))

    def ref(X, Z):
        y = torch.cat([X[1:], 2 * Z[-1:]])
        u = torch.cat([torch.zeros(1, dtype=F64), X[:-1] - X[1:]])
        return y, u

    _, got, _ = check(spec, dict(X=x, Z=z), ref)
    assert np.all(got["Z"][:-1] == 0)


def test_dead_default_branch_gets_zero_gradient():
    spec = """\
input  X[i], Z[i]
output Y
Y[i] = square(X[i]) ?? Z[i]
"""
    x, z = rnd(31, (4,), (4,))

    def ref(X, Z):
        return X * X

    _, got, _ = check(spec, dict(X=x, Z=z), ref, expect=["X", "Z"])
    assert np.all(got["Z"] == 0)


def test_absent_term_gates_the_present_operand():
    spec = """\
input  X[i], Y[i]
output S, D
S[i] = X[i + 1] + Y[i]
D[i] = square(X[i + 1] - X[i])
"""
    x, y = rnd(32, (5,), (5,))

    def ref(X, Y):
        zero = torch.zeros(1, dtype=F64)
        return torch.cat([X[1:] + Y[:-1], zero]), torch.cat([(X[1:] - X[:-1]) ** 2, zero])

    _, got, _ = check(spec, dict(X=x, Y=y), ref)
    assert got["Y"][-1] == 0  # S[4] is absent: its cotangent reaches nothing


def test_reversed_read():
    spec = """\
input  X[i]
output Y
Y[i] = X[i] * X[I - 1 - i]
"""
    (x,) = rnd(33, (5,))

    def ref(X):
        return X * X.flip(0)

    check(spec, dict(X=x), ref)


def test_prefix_sums_over_two_ranks_of_one_size():
    spec = """\
input  X[t]
rank   S = T
output Y
Y[t] = square(X[s]) where s <= t
"""
    (x,) = rnd(34, (6,))

    def ref(X):
        return torch.cumsum(X * X, 0)

    check(spec, dict(X=x), ref)


def test_convolution_zero_padding():
    spec = """\
input  X[p], w[k]
output Y
Y[p] = w[k] * X[p + k - 1]
"""
    x, w = rnd(35, (6,), (3,))

    def ref(X, w):
        return F.conv1d(X[None, None], w[None, None], padding=1)[0, 0]

    check(spec, dict(X=x, w=w), ref)


def test_partition_ragged_tiles_sum_and_max():
    spec = """\
input  X[m]
param  M0 = 3
rank   M = M1 * M0
output TS, TMAX
TSUM[m1] = X[m1 * M0 + m0]
TS[m1]   = square(TSUM[m1])
TMAX[m1] = X[m1 * M0 + m0] :: max(m0)
"""
    x = np.array([1.0, 2.0, 2.0, -1.0, 0.5, -3.0, 7.0])  # tiles [1 2 2] [-1 .5 -3] [7 . .]

    def ref(X):
        tiles = [X[0:3], X[3:6], X[6:7]]
        return torch.stack([t.sum() ** 2 for t in tiles]), torch.stack([t.amax() for t in tiles])

    check(spec, dict(X=x), ref)


# ----------------------------------------------------------------------------------------------------
# the torch backend runs the derived program


@pytest.mark.parametrize(
    "spec,inputs",
    [(CAUSAL, CAUSAL_INPUTS), (GQA, GQA_INPUTS), (PADDING, PADDING_INPUTS), (ALIBI, None)],
    ids=["causal", "gqa", "padding", "alibi"],
)
def test_torch_backend_runs_the_backward_program(spec, inputs):
    if inputs is None:
        q, k, v = rnd(4, (3, 5, 4), (3, 5, 4), (3, 5, 2))
        inputs = dict(Q=q, K=k, V=v, slope=np.array([0.5, 0.25, -0.3]))
    g = einattn.grad(spec)
    fwd = _tuple(einattn.compile(spec, backend="numpy")(**inputs))
    rng = np.random.default_rng(5)
    cots = {g.cotangents[o]: rng.standard_normal(np.shape(a)) for o, a in zip(g.cotangents, fwd)}
    want = _tuple(einattn.compile(g.program, backend="numpy")(**inputs, **cots))
    targs = {k: torch.from_numpy(np.asarray(v)) for k, v in {**inputs, **cots}.items()}
    got = _tuple(einattn.compile(g.program, backend="torch")(**targs))
    assert len(got) == len(want)
    for a, w in zip(got, want):
        assert isinstance(a, torch.Tensor) and a.dtype == F64
        np.testing.assert_allclose(a.detach().numpy(), w, rtol=TOL, atol=TOL)


# ----------------------------------------------------------------------------------------------------
# errors and the command line

ONE_PASS = """\
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


def test_iterative_rank_is_refused():
    with pytest.raises(einattn.EinError, match=r"(?i)iterative"):
        einattn.grad(ONE_PASS)


@pytest.mark.parametrize("wrt", [["NOPE"], ["S"], ["doc"]], ids=["unknown", "intermediate", "int_input"])
def test_wrt_must_name_a_float_input(wrt):
    with pytest.raises(einattn.EinError):
        einattn.grad(DOCMASK, wrt=wrt)


def test_wrt_an_unused_input_is_refused():
    spec = "input  X[i], U[i]\noutput Y\nY[i] = square(X[i])\n"
    with pytest.raises(einattn.EinError):
        einattn.grad(spec, wrt=["U"])


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "einattn", "grad", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_cli_prints_a_parseable_spec(tmp_path):
    f = tmp_path / "causal.ein"
    f.write_text(CAUSAL)
    r = _cli(str(f))
    assert r.returncode == 0, r.stderr
    prog = einattn.parse(r.stdout)
    assert prog.outputs == ("dQ", "dK", "dV")
    assert set(prog.inputs) == {"Q", "K", "V", "dO"}


def test_cli_wrt_param_and_output_file(tmp_path):
    f = tmp_path / "sliding.ein"
    f.write_text(SLIDING)
    out = tmp_path / "g.ein"
    r = _cli(str(f), "--wrt", "Q,K", "--param", "W=3", "-o", str(out))
    assert r.returncode == 0, r.stderr
    prog = einattn.load(str(out))
    assert prog.outputs == ("dQ", "dK")
    q, k, v = rnd(2, (6, 3), (6, 3), (6, 2))
    do = np.random.default_rng(0).standard_normal((6, 2))
    got = einattn.compile(prog)(Q=q, K=k, V=v, dO=do)
    g = einattn.grad(SLIDING, wrt=["Q", "K"], params={"W": 3})
    want = einattn.compile(g.program)(Q=q, K=k, V=v, dO=do)
    for a, w in zip(got, want):
        np.testing.assert_allclose(a, w, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("case", ["iterative", "int_wrt"])
def test_cli_error_exits_1_without_traceback(tmp_path, case):
    f = tmp_path / "spec.ein"
    f.write_text(ONE_PASS if case == "iterative" else DOCMASK)
    r = _cli(str(f)) if case == "iterative" else _cli(str(f), "--wrt", "doc")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr + r.stdout
    assert "error" in r.stderr.lower()


# ----------------------------------------------------------------------------------------------------
# further edge cases


@pytest.mark.parametrize("ties", [False, True])
def test_row_max_as_an_output_is_not_a_stabilizer(ties):
    spec = """\
input  Q[p, e], K[m, e], V[m, f]
output O, GM
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""
    q, k, v = rnd(40, (3, 2), (4, 2), (4, 2))
    if ties:
        k[2] = k[0]  # keys 0 and 2 give equal scores in every row

    def ref(Q, K, V):
        s = Q @ K.T
        return torch.softmax(s, -1) @ V, s.amax(-1)

    check(spec, dict(Q=q, K=k, V=v), ref)


def test_denominator_as_an_output():
    spec = """\
input  Q[p, e], K[m, e], V[m, f]
output O, DEN
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""
    q, k, v = rnd(41, (3, 2), (4, 2), (4, 2))

    def ref(Q, K, V):
        s = Q @ K.T
        gm = s.amax(-1, keepdim=True)  # not detached: DEN depends on it
        return torch.softmax(s, -1) @ V, torch.exp(s - gm).sum(-1)

    check(spec, dict(Q=q, K=k, V=v), ref)


def test_additive_minus_inf_mask_input():
    spec = """\
input  S[p, m], B[p, m], V[m, f]
output O
T[m, p]  = S[p, m] + B[p, m]
GM[p]    = T[m, p] :: max(m)
EX[m, p] = exp(T[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""
    sc, v = rnd(42, (3, 4), (4, 2))
    b = np.zeros((3, 4))
    b[0, 1:] = -np.inf
    b[2, 0] = -np.inf

    def ref(S, B, V):
        return torch.softmax(S + B, -1) @ V

    check(spec, dict(S=sc, B=b, V=v), ref, wrt=["S", "V"])


def test_max_reduction_with_infinite_ties():
    spec = """\
input  X[i, j]
output HI
HI[i] = X[i, j] :: max(j)
"""
    x = np.array([[-np.inf, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.inf, 2.0, np.inf]])

    def ref(X):
        return X.amax(1)

    check(spec, dict(X=x), ref)


def test_elementwise_max_with_nan_sends_the_cotangent_both_ways():
    spec = """\
input  X[i], Z[i]
output A
A[i] = max(X[i], Z[i]) * 3
"""
    x = np.array([np.nan, 1.0, 2.0])
    z = np.array([0.5, np.nan, 2.0])

    def ref(X, Z):
        return torch.maximum(X, Z) * 3

    check(spec, dict(X=x, Z=z), ref)


def test_clipped_relative_position_buckets():
    spec = (
        """\
# T5-style clipping: every distance beyond D shares the last bucket (a non-affine index)
input  Q[h, p, e], K[h, m, e], V[h, m, f], REL[h, r]
param  D = 2
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, m, p]  = QK[h, m, p] + REL[h, clamp(p - m, 0 - D, D) + D]
"""
        + SOFTMAX_TAIL
    )
    q, k, v, t = rnd(43, (2, 5, 3), (2, 5, 3), (2, 5, 2), (2, 5))

    def ref(Q, K, V, REL):
        p, m = grid(5, 5)
        idx = (p - m).clamp(-2, 2) + 2
        return torch.softmax(torch.einsum("hpe,hme->hpm", Q, K) / np.sqrt(3) + REL[:, idx], -1) @ V

    check(spec, dict(Q=q, K=k, V=v, REL=t), ref)


def test_strided_2d_max_pool_with_ties():
    spec = """\
input  X[y, x]
param  I = 2
param  J = 2
param  A = 2
param  B = 2
output P
P[i, j] = X[2 * i + a, 2 * j + b] :: max(a, b)
"""
    x = np.array([[1.0, 1.0, 0.0, 2.0], [0.0, -1.0, 2.0, 2.0], [3.0, 0.0, 5.0, 5.0], [3.0, 3.0, 5.0, 5.0]])

    def ref(X):
        return X.reshape(2, 2, 2, 2).amax((1, 3))

    check(spec, dict(X=x), ref)


def test_downsample_and_upsample_reads():
    spec = """\
input  X[i]
param  J = 3
param  K = 6
output DOWN, UP
DOWN[j] = X[2 * j] * X[2 * j + 1]
UP[k]   = square(X[k // 2])
"""
    (x,) = rnd(44, (6,))

    def ref(X):
        return X[0::2] * X[1::2], (X**2).repeat_interleave(2)[:6]

    check(spec, dict(X=x), ref)


def test_periodic_decay_table_indexed_by_modulo():
    spec = """\
input  S[h, p, m], DECAY[h, c]
param  C = 3
output Y
Y[h, p] = exp(S[h, p, m]) * DECAY[h, p % C]  where m <= p
"""
    sc, dec = rnd(45, (2, 5, 5), (2, 3))

    def ref(S, DECAY):
        p, m = grid(5, 5)
        ex = torch.where(m <= p, torch.exp(S), torch.zeros_like(S))
        return ex.sum(-1) * DECAY[:, torch.arange(5) % 3]

    check(spec, dict(S=sc, DECAY=dec), ref)


def test_nested_defaults_with_both_sides_absent():
    spec = """\
input  X[i], W[i]
output Y
Y[i] = (X[i + 2] * W[i]) ?? X[i + 1]
"""
    x, w = rnd(46, (5,), (5,))

    def ref(X, W):
        zero = torch.zeros(1, dtype=F64)
        return torch.cat([X[2:] * W[:3], X[4:5], zero])

    _, got, _ = check(spec, dict(X=x, W=w), ref)
    assert np.all(got["W"][3:] == 0)


def test_filter_reading_an_int_tensor_out_of_range_is_absent():
    spec = """\
input  X[i], d[i] : int
output SAME
SAME[i] = square(X[i]) where d[i + 1] == d[i] or i == I - 1
"""
    x = np.array([1.0, -2.0, 3.0, 0.5])
    d = np.array([0, 0, 1, 1])

    def ref(X, d):
        keep = torch.tensor([True, False, True, False])  # i = 3 reads d[4]: absent, `or` does not rescue it
        return torch.where(keep, X * X, torch.zeros_like(X))

    _, got, _ = check(spec, dict(X=x, d=d), ref)
    assert got["X"][3] == 0


def test_param_override_when_compiling_the_backward_program():
    q, k, v = rnd(47, (4, 3), (6, 3), (6, 2))
    q = 3 * q
    g = einattn.grad(SOFTCAP)
    g2 = einattn.grad(SOFTCAP, params={"C": 2.0})
    do = np.random.default_rng(3).standard_normal((4, 2))
    a = einattn.compile(g.program, params={"C": 2.0})(Q=q, K=k, V=v, dO=do)
    b = einattn.compile(g2.program)(Q=q, K=k, V=v, dO=do)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=TOL, atol=TOL)


def test_masked_max_pool_with_an_empty_row_and_a_default():
    spec = """\
input  X[i, j], n[i] : int
output SAFE
RM[i]   = X[i, j] :: max(j)  where j < n[i]
SAFE[i] = RM[i] ?? -1
"""
    x = np.array([[2.0, 2.0, 9.0], [1.0, 0.0, 3.0], [4.0, 5.0, 6.0]])
    n = np.array([2, 0, 3])

    def ref(X, n):
        return torch.stack([X[0, :2].amax(), torch.tensor(-1.0, dtype=F64), X[2].amax()])

    _, got, _ = check(spec, dict(X=x, n=n), ref)
    assert np.all(got["X"][1] == 0)


def test_term_counted_under_a_filter_on_the_summed_rank():
    spec = """\
input  A[i], X[i, j], n[i] : int
output S
S[i] = square(A[i]) + X[i, j]  where j < n[i]
"""
    a, x = rnd(48, (3,), (3, 4))
    n = np.array([2, 0, 9])

    def ref(A, X, n):
        keep = torch.arange(4)[None, :] < n[:, None]  # A[i]^2 is added min(n[i], J) times
        return torch.where(keep, (A * A)[:, None] + X, torch.zeros_like(X)).sum(1)

    _, got, _ = check(spec, dict(A=a, X=x, n=n), ref)
    assert got["A"][1] == 0


def test_valid_convolution_bounds_the_solved_rank():
    spec = """\
input  X[n], w[k]
param  I = 4
output Y
Y[i] = X[i + k] * w[k]
"""
    x, w = rnd(49, (6,), (3,))

    def ref(X, w):
        return F.conv1d(X[None, None], w[None, None])[0, 0]

    check(spec, dict(X=x, w=w), ref)


def test_diagonal_reads():
    spec = """\
input  X[i, j]
output D, TR, SUP
D[i]   = X[i, i] * X[i, j]
TR     = X[i, i]
SUP[i] = square(X[i, i + 1])
"""
    (x,) = rnd(50, (4, 4))

    def ref(X):
        sup = torch.cat([torch.diagonal(X, 1) ** 2, torch.zeros(1, dtype=F64)])
        return torch.diagonal(X) * X.sum(1), torch.trace(X), sup

    check(spec, dict(X=x), ref)


def test_two_pass_tiles_with_the_global_max_as_an_output():
    spec = """\
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 2
rank   M = M1 * M0
output AV, GM
BK[m1, m0, e]  = K[m1 * M0 + m0, e]
BV[m1, m0, f]  = V[m1 * M0 + m0, f]
BQK[m1, m0, p] = Q[p, e] * BK[m1, m0, e]  where m1 * M0 + m0 <= p
LM[m1, p]      = BQK[m1, m0, p] :: max(m0)
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - LM[m1, p])
SLD[m1, p]     = SLN[m1, m0, p]
GM[p]          = LM[m1, p] :: max(m1)
CF[m1, p]      = exp(LM[m1, p] - GM[p])
SD[p]          = SLD[m1, p] * CF[m1, p]
SN[m1, m0, p]  = SLN[m1, m0, p] * CF[m1, p]
A[m1, m0, p]   = SN[m1, m0, p] / SD[p]
AV[p, f]       = A[m1, m0, p] * BV[m1, m0, f]
"""
    q, k, v = rnd(51, (5, 2), (5, 2), (5, 3))
    k[2] = k[0]
    k[3] = k[0]  # equal scores within and across tiles: the nested maxima split ties level by level

    def ref(Q, K, V):
        s = Q @ K.T
        p, m = grid(5, 5)
        out = torch.softmax(s.masked_fill(~(m <= p), NEG_INF), -1) @ V
        gm = [
            torch.stack([s[r, a : min(a + 2, r + 1)].amax() for a in range(0, r + 1, 2)]).amax()
            for r in range(5)
        ]
        return out, torch.stack(gm)

    check(spec, dict(Q=q, K=k, V=v), ref)


@pytest.mark.parametrize("ties", [False, True])
def test_deeply_nested_maxima_of_shifted_reads(ties):
    depth, n = 12, 20
    expr = "X[i]"
    for d in range(1, depth):
        expr = f"max(X[i + {d}] ?? X[i], {expr})"
    spec = f"input X[i]\noutput Y\nY[i] = {expr}\n"
    (x,) = rnd(52, (n,))
    if ties:
        x = np.round(x)

    def ref(X):
        outs = []
        for i in range(n):
            cur = X[i]
            for d in range(1, depth):
                cur = torch.maximum(X[i + d] if i + d < n else X[i], cur)
            outs.append(cur)
        return torch.stack(outs)

    check(spec, dict(X=x), ref)


def test_large_statement_mixing_max_min_clamp_and_defaults():
    spec = """\
input  X[i], W[i]
output Y
Y[i] = max(tanh(X[i] * W[i]) + sigmoid(X[i + 1] ?? W[i]), min(square(X[i]) - W[i], \
           clamp(X[i] + W[i] * 2, -0.5, 0.5))) \
     + clamp(exp(X[i]) * W[i] - 1, X[i] - 1, X[i] + 1) \
     + ((X[i + 2] * W[i]) ?? (X[i] * W[i])) * softplus(W[i]) \
     + max(X[i], W[i]) * min(X[i] * 2, W[i] + 1)
"""
    x, w = rnd(53, (6,), (6,))
    x[1] = w[1]  # a tie in max(X, W)

    def ref(X, W):
        def clamp(a, lo, hi):
            return torch.minimum(torch.maximum(a, lo), hi)

        half = torch.full((6,), 0.5, dtype=F64)
        nxt1 = torch.cat([X[1:], W[-1:]])
        nxt2 = torch.cat([X[2:] * W[:-2], X[-2:] * W[-2:]])
        return (
            torch.maximum(
                torch.tanh(X * W) + torch.sigmoid(nxt1),
                torch.minimum(X * X - W, clamp(X + W * 2, -half, half)),
            )
            + clamp(torch.exp(X) * W - 1, X - 1, X + 1)
            + nxt2 * F.softplus(W)
            + torch.maximum(X, W) * torch.minimum(X * 2, W + 1)
        )

    check(spec, dict(X=x, W=w), ref)


def test_names_that_look_like_gradients():
    spec = """\
input  X[i], dX[i], dO[i]
output O
dS[i] = X[i] * dX[i]
O[i]  = exp(dS[i]) + square(dX[i]) * dO[i]
"""
    x, dx, do = rnd(54, (4,), (4,), (4,))

    def ref(X, dX, dO):
        return torch.exp(X * dX) + dX * dX * dO

    g, _, _ = check(spec, dict(X=x, dX=dx, dO=do), ref, expect=["X", "dX", "dO"])
    names = list(g.program.inputs) + list(g.program.outputs)
    assert len(names) == len(set(names))


def test_window_width_as_an_int_scalar_input():
    spec = """\
input  Q[p, e], K[m, e], V[m, f], n : int
output O
S[m, p]  = Q[p, e] * K[m, e]  where m <= p and p - m < n
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""
    q, k, v = rnd(55, (5, 2), (5, 2), (5, 2))

    def ref(Q, K, V, n):
        p, m = grid(5, 5)
        return torch.softmax((Q @ K.T).masked_fill(~((m <= p) & (p - m < n)), NEG_INF), -1) @ V

    check(spec, dict(Q=q, K=k, V=v, n=np.array(2)), ref)
