"""Review (session 17): the triton backend under the interpreter, against hand-written references.

Probed (all matched, not repeated here): the examples and the 32 variants on both paths, float32 and float16;
bottom-right causal, offset and ``abs`` windows, affine filters with coefficients other than 1, over parallel
ranks and with ``or``/``not``; softcap, ALiBi, relative-position gathers, padding biases of -inf, scale
params and tensors of every sign; GQA, MQA, the grouped 5-D layout whose row is the head of a group;
BSHD inputs and outputs in any rank order; paged KV caches through ``: int`` tables; KV lengths of 0;
document masks; attention sinks; two outputs; log-sum-exp and max outputs with fully masked rows and -inf
first tiles; hand-written 1-pass cascades (other inits, steps without ``??``, LSE from the final state,
``exp(T * (S - RM))``) on both paths and both ``passes``; tiles 1, 2, 3, 5, 24, 48, 128 with several row
blocks (the whole-tile, steady and tail bodies); NaN and infinities in Q, K, V; logits of 1e4; stride-0,
offset and non-contiguous views; size-0 and size-1 ranks, decode (P = 1); coordinates as values past int32;
the standalone module in a fresh process; ``torch.compile`` (dynamic shapes, backward); gradients of a GQA
+ window + softcap + ALiBi + LSE spec; ``triton_aot`` for sm_90 on the probe specs.

Bugs found (the tests marked ``# Fixed:`` failed before the fix):

* the fused kernel computed its memory offsets in int32: a tile coordinate (``offs_p``, a key ``m1 * M0 +
  m0``, a feature lane, a gathered page number) times a stride of less than 2**31 wrapped once the product
  passed 2**31 elements, so a tensor spanning 2**31 elements or more (a seq-first ``[m, b, h, d]`` KV cache
  at 64k tokens, a paged KV pool of 4 GiB) read the wrong memory (segfaults under the interpreter, garbage
  or an illegal address on a GPU), where docs/backends.md says offsets are int64 (the general path's are).
* float64 on the fused path: a number the kernel assigns to a variable is a float32 constant to Triton (the
  real compiler and the interpreter alike): the raw-max factor ``<tile>_log2 = (C) * log2 e`` of a param or
  literal scale (softcapping, ``/ T``, ``* 0.3``) and a scalar statement of params (``SC = T * 3.0``) cost
  float64 results 1e-9..3e-8 (documented: float64 throughout, "functions of constants too"; 1e-10).
* ``: int`` inputs of int8, uint8, int16 (documented: any integer dtype): both paths computed gathers and
  filters in the loaded dtype, so ``idx[m] + 100`` of an int8 table wrapped (wrong keys), ``+ 150`` was an
  error, a uint8 or int16 sum past its range wrapped; the launcher now widens them to int64.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from triton_cases import DEVICE

import einattn

pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::einattn.EinWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


# ---- helpers and references -------------------------------------------------------------------------------


def tri(src, params=None, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(src, backend="triton", params=params, **options)


def softmax_attention(S, mask, V):
    """Softmax over the keys (last axis of S) where ``mask``, float64; a row without a key gives 0."""
    S = np.where(mask, S, -np.inf)
    row = mask.any(-1)
    with np.errstate(all="ignore"):
        gm = np.where(row, S.max(-1), 0.0)
        w = np.where(mask, np.exp(S - gm[..., None]), 0.0)
        sd = np.where(row, w.sum(-1), 1.0)
        return np.where(row[..., None], (w @ V) / sd[..., None], 0.0)


def close(got, want, tol):
    got = got.detach().double().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, float)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.isfinite(got).all(), f"non-finite values: {got}"
    err = float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))
    assert err <= tol, f"relative error {err:.3g} > {tol:g}\ngot {got}\nwant {want}"


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


# ---- 1. offsets past int32 ------------------------------------------------------------------------------

"""A view whose one dimension's index times its stride passes 2**31 elements. The storage is one lazily
allocated float16 buffer of 2**32 elements (8 GiB of address space, a few pages touched); the view starts at
element 2**31, so an offset wrapped to int32 (2**31 -> -2**31) lands inside the buffer, on zeros, and the
test sees wrong values instead of a crash."""

BASE = 2**31
HUGE = 2**28  # the stride of the huge dimension: index 8 of it is 2**31 elements away


@pytest.fixture(scope="module")
def storage():
    if DEVICE != "cpu":
        pytest.skip("an 8 GiB buffer: CPU (interpreter) only")
    try:
        return torch.empty(2**32 + 2**16, dtype=torch.float16)
    except RuntimeError:  # (an address-space limit)
        pytest.skip("cannot reserve 8 GiB of address space")


def huge_view(storage, values: torch.Tensor, dim: int) -> torch.Tensor:
    """``values`` (float16) as a view of ``storage`` whose dimension ``dim`` has stride :data:`HUGE` (its size
    at most 9: offsets up to 2**31); the other dimensions are contiguous within one such step."""
    shape = values.shape
    rest = [s for k, s in enumerate(shape) if k != dim]
    strides, acc = [0] * len(shape), 1
    for k in reversed(range(len(shape))):
        if k != dim:
            strides[k], acc = acc, acc * shape[k]
    assert acc <= HUGE and shape[dim] <= 9 and math.prod(rest) == acc
    strides[dim] = HUGE
    v = storage.as_strided(shape, strides, BASE)
    v.copy_(values)
    return v


@pytest.mark.parametrize("path", ["auto", "general"])
@pytest.mark.parametrize("which", ["K", "Q", "V"])
def test_offsets_past_int32(storage, which, path):
    """Causal attention (float16) with one input spanning 2**31 elements: K in a seq-first layout (key m at
    m * 2**28), Q likewise along its rows, V along its feature lanes. # Fixed: the fused path read the
    key/row/feature 8 (2**31 elements away) at -2**31, from the zeros before the view."""
    rng = np.random.default_rng(0)
    P, M, E, F = 9, 9, 4, 9
    q, k, v = rng.standard_normal((P, E)), rng.standard_normal((M, E)), rng.standard_normal((M, F))
    t = {n: torch.as_tensor(a, dtype=torch.float16) for n, a in dict(Q=q, K=k, V=v).items()}
    want = softmax_attention(f64(t["Q"]) @ f64(t["K"]).T / 2, np.tril(np.ones((P, M), bool)), f64(t["V"]))
    dim = {"K": 0, "Q": 0, "V": 1}[which]
    t[which] = huge_view(storage, t[which], dim)
    assert t[which].stride(dim) * 8 == 2**31
    src = """
    input  Q[p, e], K[m, e], V[m, f]
    output AV
    QK[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
    GM[p]    = QK[m, p] :: max(m)
    SN[m, p] = exp(QK[m, p] - GM[p])
    SD[p]    = SN[m, p]
    AV[p, f] = SN[m, p] * V[m, f] / SD[p]
    """
    kern = tri(src, tile=4, path=path)
    assert kern.plan.path == ("fused" if path == "auto" else "general")
    close(kern(t["Q"], t["K"], t["V"]), want, 1e-2)


@pytest.mark.parametrize("path", ["auto", "general"])
def test_paged_cache_with_an_int32_table_past_int32(storage, path):
    """A paged KV cache ``KC[n, s, e]`` whose page stride is 2**28 elements, read through an int32 table of
    each key's page (``KC[page[m], m % S, e]``): page 8 is 2**31 elements in. # Fixed: the fused path
    multiplied the int32 page number by the int32 stride and read page 8 at -2**31."""
    rng = np.random.default_rng(1)
    P, E, F, S, N = 3, 4, 3, 2, 9
    q = rng.standard_normal((P, E))
    kc, vc = rng.standard_normal((N, S, E)), rng.standard_normal((N, S, F))
    page = np.array([8, 8, 2, 2, 5, 5, 8, 8, 0, 0])  # keys 0-1 on page 8, 2-3 on page 2, ...
    t = {n: torch.as_tensor(a, dtype=torch.float16) for n, a in dict(Q=q, KC=kc, VC=vc).items()}
    keys = np.stack([f64(t["KC"])[pg, m % S] for m, pg in enumerate(page)])
    values = np.stack([f64(t["VC"])[pg, m % S] for m, pg in enumerate(page)])
    want = softmax_attention(f64(t["Q"]) @ keys.T / 2, np.ones((P, len(keys)), bool), values)
    t["KC"] = huge_view(storage, t["KC"], 0)
    src = """
    input  Q[p, e], KC[n, s, e], VC[n, s, f], page[m] : int
    output AV
    QK[m, p] = Q[p, e] * KC[page[m], m % S, e] * rsqrt(E)
    GM[p]    = QK[m, p] :: max(m)
    SN[m, p] = exp(QK[m, p] - GM[p])
    SD[p]    = SN[m, p]
    AV[p, f] = SN[m, p] * VC[page[m], m % S, f] / SD[p]
    """
    kern = tri(src, tile=4, path=path)
    assert kern.plan.path == ("fused" if path == "auto" else "general")
    got = kern(t["Q"], t["KC"], t["VC"], torch.as_tensor(page, dtype=torch.int32))
    close(got, want, 1e-2)


# ---- 2. float64: constants of the fused kernel in the compute dtype ---------------------------------------

"""docs/backends.md: float64 inputs compute in float64, "functions of constants too". A Python float that
the kernel assigns to a variable is a float32 constant to Triton (its code generator and its interpreter
alike make the assigned number a float32 tensor), where the same number written inline takes the other
operand's dtype. The fused kernel assigned two such numbers: the raw-max factor ``<tile>_log2 = (C) *
log2 e`` where the folded scale is a param or literal (softcapping's ``C``, ``/ T``, ``* 0.3``), and a
scalar statement of params (``SC = T * 3.0``); float64 results were off by 1e-9..3e-8 (the general path and
the torch backend: 2e-16)."""

FLOAT64_SPECS = {
    "softcap C = 0.7": (
        """
        input  Q[p, e], K[m, e], V[m, f]
        param  C = 0.7
        output AV
        QK[m, p] = Q[p, e] * K[m, e] * rsqrt(E)
        S[m, p]  = C * tanh(QK[m, p] / C)
        GM[p]    = S[m, p] :: max(m)
        SN[m, p] = exp(S[m, p] - GM[p])
        SD[p]    = SN[m, p]
        AV[p, f] = SN[m, p] * V[m, f] / SD[p]
        """,
        lambda S, p, m: 0.7 * np.tanh(S / 0.7),
    ),
    "temperature / T": (
        """
        input  Q[p, e], K[m, e], V[m, f]
        param  T = 0.3
        output AV
        QK[m, p] = Q[p, e] * K[m, e] / T
        GM[p]    = QK[m, p] :: max(m)
        SN[m, p] = exp(QK[m, p] - GM[p])
        SD[p]    = SN[m, p]
        AV[p, f] = SN[m, p] * V[m, f] / SD[p]
        """,
        lambda S, p, m: S * 2 / 0.3,  # (S is Q K^T / 2: rsqrt(E), E = 4)
    ),
    "literal scale * 0.3": (
        """
        input  Q[p, e], K[m, e], V[m, f]
        output AV
        QK[m, p] = Q[p, e] * K[m, e] * 0.3
        GM[p]    = QK[m, p] :: max(m)
        SN[m, p] = exp(QK[m, p] - GM[p])
        SD[p]    = SN[m, p]
        AV[p, f] = SN[m, p] * V[m, f] / SD[p]
        """,
        lambda S, p, m: S * 2 * 0.3,
    ),
    "scalar statement SC = T * 3.0": (
        """
        input  Q[p, e], K[m, e], V[m, f]
        param  T = 0.1
        output AV
        SC        = T * 3.0
        QK0[m, p] = Q[p, e] * K[m, e] * rsqrt(E)
        QK[m, p]  = QK0[m, p] + SC * (m - p)
        GM[p]     = QK[m, p] :: max(m)
        SN[m, p]  = exp(QK[m, p] - GM[p])
        SD[p]     = SN[m, p]
        AV[p, f]  = SN[m, p] * V[m, f] / SD[p]
        """,
        lambda S, p, m: S + 0.1 * 3.0 * (m - p),
    ),
}


@pytest.mark.parametrize("name", list(FLOAT64_SPECS))
def test_float64_constants_of_the_fused_kernel(name):
    """float64 within 1e-10 of the formula (docs/backends.md's float64 tolerance), the fused path taken.
    # Fixed: 2e-9..3e-8."""
    src, scores = FLOAT64_SPECS[name]
    rng = np.random.default_rng(2)
    P, M, E, F = 5, 7, 4, 3
    q, k, v = rng.standard_normal((P, E)) * 3, rng.standard_normal((M, E)), rng.standard_normal((M, F))
    p, m = np.arange(P)[:, None], np.arange(M)[None, :]
    want = softmax_attention(scores(q @ k.T / 2, p, m), np.ones((P, M), bool), v)
    kern = tri(src, tile=4)
    assert kern.plan.path == "fused"
    got = kern(*(torch.as_tensor(a, dtype=torch.float64) for a in (q, k, v)))
    assert got.dtype == torch.float64
    close(got, want, 1e-10)


# ---- 3. `: int` inputs of narrow integer dtypes ---------------------------------------------------------

"""docs/backends.md: "`: int` inputs any integer dtype". The kernels loaded an int8, uint8 or int16 table and
did the index and filter arithmetic in that dtype: ``idx[m] + 100`` of an int8 table wrapped to negative
(absent keys), ``+ 150`` was an interpreter error (out of range for int8), and a uint8 ``pos[m] - 200``
wrapped to large positive values, on both paths; NumPy and the torch backend compute in int64."""

# (a dtype, the offset that takes its largest index past the dtype's range)
NARROW = [(torch.int8, 100), (torch.uint8, 200), (torch.int16, 32700), (torch.bool, 100)]


@pytest.mark.parametrize("path", ["auto", "general"])
@pytest.mark.parametrize("dtype, off", NARROW, ids=lambda x: str(x))
def test_narrow_integer_tables_in_gathers_and_filters(dtype, off, path):
    """Keys gathered at ``idx[m] + off`` (a pool of ``off + 121`` keys) and kept where ``pos[m] + off <= p +
    off``; # Fixed: the sums passed the dtype's range (wrong keys, a filter wrapped, or an error)."""
    rng = np.random.default_rng(3)
    P, E, F, N = 6, 4, 3, off + 121
    q, kc, vc = rng.standard_normal((P, E)), rng.standard_normal((N, E)), rng.standard_normal((N, F))
    idx = np.array([0, 1, 0, 1, 1]) if dtype == torch.bool else np.array([0, 100, 120, 27, 99])
    pos = np.array([0, 1, 1, 0, 1]) if dtype == torch.bool else np.array([0, 3, 1, 5, 2])
    src = f"""
    input  Q[p, e], KC[n, e], VC[n, f], idx[m] : int, pos[m] : int
    output AV
    QK[m, p] = Q[p, e] * KC[idx[m] + {off}, e] * rsqrt(E)  where pos[m] + {off} <= p + {off}
    GM[p]    = QK[m, p] :: max(m)
    SN[m, p] = exp(QK[m, p] - GM[p])
    SD[p]    = SN[m, p]
    AV[p, f] = SN[m, p] * VC[idx[m] + {off}, f] / SD[p]
    """
    want = softmax_attention(q @ kc[idx + off].T / 2, pos[None, :] <= np.arange(P)[:, None], vc[idx + off])
    kern = tri(src, tile=4, path=path)
    assert kern.plan.path == ("fused" if path == "auto" else "general")
    ints = (torch.as_tensor(a).to(dtype) for a in (idx, pos))
    close(kern(*(torch.as_tensor(a, dtype=torch.float32) for a in (q, kc, vc)), *ints), want, 1e-4)
