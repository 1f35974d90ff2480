"""Session 19 review of the triton backend: tile bounds from runtime values, and specs a researcher writes.

Runtime bounds (`m < klen[b]`, `m >= start[b]`, `klen[b] - m > 0`, ...) are checked against references that
do not go through einattn (the keep mask evaluated in NumPy's int64 arithmetic, softmax over the kept keys
per row), with NaN written into the keys that a key-only term removes: a tile visited without its mask, or a
whole tile taken for one with masked keys, shows. Found here and fixed:

* the tile bounds computed from an int32 length in int32: `-start` of `m >= start[b]` wrapped at
  start = -2**31 and skipped every tile (triton_fused: runtime values are int64, the bounds narrowed back);
* the loop variable became int64 with an int64 length tensor (torch's default), which made every tile's
  offsets int64 (sm_90: 236 -> 158 registers for a kernel with a runtime start, a length and causal);
* a sum or difference of an int32 read in a filter wrapped on both triton paths (`doc[m] - doc[p] <= 0`,
  `klen[b] - m > 0` at the int32 ends), where NumPy and torch compute in int64 (triton_expr._binary).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from triton_cases import DEVICE, ROOT

import einattn

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")

I32MIN, I32MAX = -(2**31), 2**31 - 1

SOFTMAX = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], {decls}
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e]  where {filt}
MX[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])
SD[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / SD[b, h, p]
"""


def _softmax_rows(q, k, v, keep):
    """Softmax attention of each row over the keys ``keep`` (..., P, M) leaves, float64; rows with none: 0."""
    s = (q.double() @ k.double().transpose(-1, -2)).masked_fill(~keep, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)  # a row of -inf only: NaN -> 0
    return torch.where(keep, w, 0.0) @ torch.where(keep.any(-2)[..., None], v.double(), 0.0)


def _poisoned(x, dead):
    """``x`` (B, H, M, D) with NaN at the keys ``dead`` (B, M): the kernel must never use them."""
    x = x.clone()
    x[dead[:, None, :, None].expand_as(x)] = float("nan")
    return x


def _qkv(B, H, P, M, E=3, Fd=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, n, d, generator=g) for n, d in ((P, E), (M, E), (M, Fd)))


def _call(kern, *args):
    return kern(*(a.to(DEVICE) for a in args)).cpu()


# ---- runtime bounds at the ends of the length's dtype -------------------------------------------------


@pytest.mark.parametrize(
    "filt, ints, keep",
    [
        # `-start` in the lower bound wrapped at -2**31: every tile was skipped
        ("m >= start[b]", [I32MIN, 0, 3, I32MAX], lambda m, v: m >= v),
        ("m > start[b]", [I32MIN, I32MAX, 3, -1], lambda m, v: m > v),
        # wrapped in the body's filter too (int32 `start[b] - m`)
        ("start[b] - m > 0", [I32MAX, I32MIN, 3, 0], lambda m, v: v - m > 0),
        ("m < start[b]", [I32MAX, I32MIN, 5, 0], lambda m, v: m < v),
    ],
)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_runtime_bounds_at_the_ends_of_int32(filt, ints, keep, dtype):
    B, H, P, M = len(ints), 1, 3, 11
    q, k, v = _qkv(B, H, P, M)
    vals = torch.tensor(ints, dtype=torch.int64)
    alive = keep(torch.arange(M)[None, :], vals[:, None])  # (B, M), NumPy-style int64 arithmetic
    want = _softmax_rows(q, k, v, alive[:, None, None, :].expand(B, H, P, M))
    kern = einattn.compile(SOFTMAX.format(decls="start[b] : int", filt=filt), backend="triton", tile=4)
    assert "skipped" in kern.plan.detail
    got = _call(kern, q, _poisoned(k, ~alive), _poisoned(v, ~alive), vals.to(dtype))
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_scalar_length_at_int32_min():
    """`m > n - 1` with an `n : int` of -2**31 (a 0-d int32 tensor, and a Python int): every key passes."""
    kern = einattn.compile(SOFTMAX.format(decls="n : int", filt="m > n - 1"), backend="triton", tile=4)
    assert "skipped" in kern.plan.detail
    q, k, v = _qkv(2, 1, 3, 9)
    want = _softmax_rows(q, k, v, torch.ones(2, 1, 3, 9, dtype=torch.bool))
    for n in (torch.tensor(I32MIN, dtype=torch.int32, device=DEVICE), I32MIN):
        got = kern(*(t.to(DEVICE) for t in (q, k, v)), n).cpu()
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_int32_difference_of_reads_in_a_filter():
    """`doc[m] - doc[p] <= 0` with int32 ids at -2**31: int64 arithmetic on both paths, as NumPy's."""
    spec = """
    input  Q[p, e], K[m, e], V[m, f], doc[n] : int
    output O
    S[p, m]  = Q[p, e] * K[m, e]  where doc[m] - doc[p] <= 0
    MX[p]    = S[p, m] :: max(m)
    EX[p, m] = exp(S[p, m] - MX[p])
    SD[p]    = EX[p, m]
    O[p, f]  = EX[p, m] * V[m, f] / SD[p]
    """
    doc = torch.tensor([I32MIN, 1, 0, 5, I32MIN, I32MAX, -3])
    q, k, v = (t[0, 0] for t in _qkv(1, 1, 7, 7))
    keep = (doc[None, :] - doc[:, None]) <= 0  # int64: never wraps here
    want = _softmax_rows(q, k, v, keep)
    for path in ("fused", "general"):
        kern = einattn.compile(spec, backend="triton", path=path, tile=4)
        got = _call(kern, q, k, v, doc.to(torch.int32))
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_int64_lengths_keep_the_loop_int32_and_are_exact_beyond_it():
    """An int64 length (torch's default) bounds the loop narrowed back to the tile number's type; lengths
    past int32 (2**40, -2**40) still bound it exactly."""
    spec = SOFTMAX.format(
        decls="start[b] : int, klen[b] : int", filt="m >= start[b] and m < klen[b] and m <= p"
    )
    kern = einattn.compile(spec, backend="triton", tile=4)
    bounds = kern.source.split("# ---- the tiles of m1 to visit")[1].split("for m1 in")[0]
    for name in ("lo", "hi", "whole_lo", "whole_hi"):
        line = next(ln for ln in bounds.splitlines() if ln.strip().startswith(f"{name} = "))
        assert line.rstrip().endswith(".to(size_m1.dtype)"), line
    B, H, P, M = 4, 1, 9, 14
    q, k, v = _qkv(B, H, P, M, seed=3)
    start = torch.tensor([-(2**40), 5, 2**40, 0])
    klen = torch.tensor([2**40, 12, 3, -(2**40)])
    m = torch.arange(M)
    key_ok = (m[None, :] >= start[:, None]) & (m[None, :] < klen[:, None])  # (B, M)
    keep = key_ok[:, None, None, :] & (m[None, :] <= torch.arange(P)[:, None])[None, None]
    want = _softmax_rows(q, k, v, keep)
    got = _call(kern, q, _poisoned(k, ~key_ok), _poisoned(v, ~key_ok), start, klen)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


# ---- runtime bounds with causal / window filters, and/or/not, every integer dtype -----------------------

KEY_TERMS = [  # key-only terms: what they remove from every row may hold NaN
    ("m < klen[b]", lambda m, kl, p: m < kl),
    ("klen[b] - m > 0", lambda m, kl, p: kl - m > 0),
    ("2 * m < klen[b]", lambda m, kl, p: 2 * m < kl),
    ("m >= klen[b] - 6", lambda m, kl, p: m >= kl - 6),
    ("not m >= klen[b]", lambda m, kl, p: ~(m >= kl)),
    ("abs(m - klen[b]) < 3", lambda m, kl, p: abs(m - kl) < 3),
    ("m == klen[b] - 1", lambda m, kl, p: m == kl - 1),
]
ROW_TERMS = [  # terms with the rows: they may only narrow per row
    ("m <= p", lambda m, kl, p: m <= p),
    ("p - m < 3", lambda m, kl, p: p - m < 3),
    ("m <= p + klen[b] - P", None),  # bottom-right aligned causal (decoding), P filled in below
    ("m < klen[b] or m <= p", lambda m, kl, p: (m < kl) | (m <= p)),
    ("not m > p or m == 0", lambda m, kl, p: ~(m > p) | (m == 0)),
    ("m + p < klen[b]", lambda m, kl, p: m + p < kl),
]


@settings(deadline=None, max_examples=10)
@given(
    key=st.sampled_from(range(len(KEY_TERMS))),
    row=st.sampled_from(range(len(ROW_TERMS))),
    lens=st.lists(st.integers(-3, 25), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.int32, torch.int64, torch.int16]),
    P=st.integers(1, 7),
    M=st.integers(1, 21),
    tile=st.sampled_from([3, 4, 16]),
)
def test_runtime_bounds_property(key, row, lens, dtype, P, M, tile):
    (kt, kf), (rt, rf) = KEY_TERMS[key], ROW_TERMS[row]
    if rf is None:
        rf = lambda m, kl, p: m <= p + kl - P  # noqa: E731
    spec = SOFTMAX.format(decls="klen[b] : int", filt=f"{kt} and ({rt})")
    B = len(lens)
    q, k, v = _qkv(B, 2, P, M, seed=key * 7 + row)
    kl = torch.tensor(lens)[:, None, None]
    m, p = torch.arange(M)[None, None, :], torch.arange(P)[None, :, None]
    key_ok = kf(m, kl, p)[:, 0, :]  # (B, M)
    keep = (kf(m, kl, p) & rf(m, kl, p))[:, None]  # (B, 1, P, M)
    want = _softmax_rows(q, k, v, keep.expand(B, 2, P, M))
    kern = einattn.compile(spec, backend="triton", tile=tile)
    got = _call(kern, q, _poisoned(k, ~key_ok), _poisoned(v, ~key_ok), torch.tensor(lens, dtype=dtype))
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_runtime_bounds_on_an_unguarded_hand_written_cascade():
    """FuseMax's 1-pass cascade as written (RM = -inf, no guard) with a length: an empty first tile makes a
    row NaN in the reference (exp(-inf - -inf)); the kernel must agree, NaN for NaN, and skip nothing that
    changes it."""
    text = (ROOT / "examples" / "causal_1pass.ein").read_text()
    text = text.replace("V[b, h, m, f]", "V[b, h, m, f], klen[b] : int")
    rng = np.random.default_rng(4)
    x = {
        "Q": rng.standard_normal((3, 1, 6, 3)),
        "K": rng.standard_normal((3, 1, 13, 3)),
        "V": rng.standard_normal((3, 1, 13, 2)),
        "klen": np.array([0, 5, 12]),
    }
    for filt in ("m1 * M0 + m0 < klen[b] and m1 * M0 + m0 <= p", "m1 * M0 + m0 >= klen[b]"):
        spec = text.replace("m1 * M0 + m0 <= p", filt)
        want = einattn.compile(spec, backend="numpy", params={"M0": 4})(**x)
        kern = einattn.compile(spec, backend="triton", params={"M0": 4}, passes="as-written")
        args = [torch.as_tensor(x[n], dtype=torch.float32 if n != "klen" else torch.int32) for n in x]
        got = _call(kern, *args).double().numpy()
        assert np.isnan(want).any() or filt.startswith("m1 * M0 + m0 <")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)  # (NaN where NaN)


def test_gqa_length_per_kv_head_and_decode():
    """A length read through `h // R` (no tile bound from it, but exact), and decoding (P = 1) with
    lengths of 0, one tile, past M."""
    spec = """
    input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], kl[b, g] : int
    param  R = 2
    output O
    S[b, h, p, m]  = Q[b, h, p, e] * K[b, h // R, m, e]  where m < kl[b, h // R] and m <= p + 9
    MX[b, h, p]    = S[b, h, p, m] :: max(m)
    EX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])
    SD[b, h, p]    = EX[b, h, p, m]
    O[b, h, p, f]  = EX[b, h, p, m] * V[b, h // R, m, f] / SD[b, h, p]
    """
    kern = einattn.compile(spec, backend="triton", tile=4)
    assert kern.plan.path == "fused"
    for P in (1, 5):
        q, _, _ = _qkv(2, 4, P, 1)
        _, k, v = _qkv(2, 2, 1, 15, seed=1)
        kl = torch.tensor([[0, 4], [15, 40]])
        m = torch.arange(15)
        key_ok = m[None, None, :] < kl[..., None]  # (B, G, M)
        keep = key_ok.repeat_interleave(2, 1)[:, :, None, :] & (m[None, :] <= torch.arange(P)[:, None] + 9)
        want = _softmax_rows(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), keep)
        kp, vp = k.clone(), v.clone()
        kp[~key_ok] = float("nan")
        vp[~key_ok] = float("nan")
        torch.testing.assert_close(
            _call(kern, q, kp, vp, kl.to(torch.int32)).double(), want, rtol=1e-4, atol=1e-5
        )


def test_standalone_module_with_runtime_bounds_in_a_fresh_process(tmp_path):
    """`einattn compile --backend triton -o` of a span `start[b] <= m < stop[b]` imported in a new process,
    with int32, int64 and uint8 lengths, against SDPA on each sequence's own keys."""
    spec = tmp_path / "span.ein"
    spec.write_text(
        SOFTMAX.format(decls="start[b] : int, stop[b] : int", filt="m >= start[b] and m < stop[b]")
    )
    out = tmp_path / "span_kernel.py"
    cli = [sys.executable, "-m", "einattn", "compile", str(spec), "--backend", "triton", "--tile", "4", "-o"]
    subprocess.run([*cli, str(out)], check=True, capture_output=True, cwd=ROOT)
    script = textwrap.dedent(
        f"""
        import os, sys
        if not __import__("torch").cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
        sys.path.insert(0, {str(tmp_path)!r})
        import torch, torch.nn.functional as F
        import span_kernel
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(3, 2, n, 4, generator=g) for n in (5, 13, 13))
        start, stop = [0, 6, 2], [0, 13, 9]
        want = torch.zeros(3, 2, 5, 4)
        kp, vp = k.clone(), v.clone()
        for b in range(3):
            keep = (torch.arange(13) >= start[b]) & (torch.arange(13) < stop[b])
            if keep.any():
                want[b] = F.scaled_dot_product_attention(q[b], k[b][:, keep], v[b][:, keep], scale=1.0)
            kp[b][:, ~keep] = float("nan")
            vp[b][:, ~keep] = float("nan")
        for dt in (torch.int32, torch.int64, torch.uint8):
            lens = (torch.tensor(x, dtype=dt, device=dev) for x in (start, stop))
            got = span_kernel.span(*(t.to(dev) for t in (q, kp, vp)), *lens).cpu()
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_length_inputs_of_the_wrong_kind_are_ein_errors():
    kern = einattn.compile(
        SOFTMAX.format(decls="klen[b] : int", filt="m < klen[b]"), backend="triton", tile=4
    )
    q, k, v = (t.to(DEVICE) for t in _qkv(3, 1, 2, 5))
    for bad, words in (
        (torch.tensor([1.0, 2.0, 3.0]), "declared `: int`"),
        ([1, 2, 3], "must be a torch tensor"),
        (np.array([1, 2, 3]), "must be a torch tensor"),
        (torch.tensor([1, 2]), "rank `b` has size 3"),
        (torch.tensor([[1], [2], [3]]), "declared [b]"),
    ):
        with pytest.raises(einattn.EinError, match=None) as err:
            kern(q, k, v, bad.to(DEVICE) if isinstance(bad, torch.Tensor) else bad)
        assert words in str(err.value)


# ---- specs a researcher writes ------------------------------------------------------------------------


def _both(spec, args, want, tol=2e-4, dtype=torch.float32, **options):
    """The triton kernel against a hand-written reference ``want`` and against the NumPy oracle."""
    prog = einattn.parse(spec)
    kern = einattn.compile(prog, backend="triton", tile=4, **options)
    got = kern(**{n: (a.to(dtype) if a.is_floating_point() else a).to(DEVICE) for n, a in args.items()})
    got = got[0] if isinstance(got, tuple) else got
    assert got.dtype == dtype
    rounded = {n: (a.to(dtype).double() if a.is_floating_point() else a).numpy() for n, a in args.items()}
    oracle = einattn.compile(prog, backend="numpy")(**rounded)  # (on the inputs as the kernel got them)
    oracle = torch.as_tensor(oracle[0] if isinstance(oracle, tuple) else oracle)
    torch.testing.assert_close(got.cpu().double(), want.double(), rtol=tol, atol=tol)
    torch.testing.assert_close(oracle, want.double(), rtol=tol, atol=tol)
    return kern


def _t(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def test_paged_kv_cache_through_a_block_table():
    """Decoding against a paged cache: key m of batch b is slot m % S of page table[b, m // S], bottom-right
    causal with each sequence's length; pages past a length hold garbage ids (absent reads)."""
    spec = """
    input  Q[b, h, p, e], KC[n, s, h, e], VC[n, s, h, f], table[b, j] : int, klen[b] : int
    param  M = 23
    output O
    SC[b, h, p, m] = Q[b, h, p, e] * KC[table[b, m // S], m % S, h, e] * rsqrt(E) \\
                     where m < klen[b] and m <= p + klen[b] - P
    MX[b, h, p]    = SC[b, h, p, m] :: max(m)
    EX[b, h, p, m] = exp(SC[b, h, p, m] - MX[b, h, p])
    SD[b, h, p]    = EX[b, h, p, m]
    O[b, h, p, f]  = EX[b, h, p, m] * VC[table[b, m // S], m % S, h, f] / SD[b, h, p]
    """
    B, H, P, E, Fd, S, N = 3, 2, 2, 5, 3, 4, 9
    q, kc, vc = _t(B, H, P, E), _t(N, S, H, E, seed=1), _t(N, S, H, Fd, seed=2)
    table = torch.tensor([[3, 2, 4, 1, 3, 8], [0, 6, 2, 99, -5, 99], [7, 7, 7, 7, 7, 7]])
    klen = torch.tensor([23, 10, 0])
    want = torch.zeros(B, H, P, Fd, dtype=torch.float64)
    for b in range(B):
        n = int(klen[b])
        if n == 0:
            continue
        idx = torch.arange(n)
        kk, vv = (c[table[b][idx // S], idx % S].transpose(0, 1) for c in (kc, vc))  # (H, n, D)
        keep = idx[None, :] <= torch.arange(P)[:, None] + n - P
        want[b] = _softmax_rows(q[b] / E**0.5, kk, vv, keep)
    _both(spec, dict(Q=q, KC=kc, VC=vc, table=table.to(torch.int32), klen=klen.to(torch.int32)), want)


def test_document_mask_with_padding_rows_and_the_log_sum_exp():
    """Packed documents, causal, a padding document (-1) whose rows see nothing: O and LSE are 0 there;
    logits up to 1e4 (the running max in the raw scores' units must not overflow)."""
    spec = """
    input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], doc[b, m] : int
    rank   P = M
    output O, LSE
    S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) \\
                     where doc[b, m] == doc[b, p] and doc[b, p] >= 0 and m <= p
    MX[b, h, p]    = S[b, h, p, m] :: max(m)
    EX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])
    SD[b, h, p]    = EX[b, h, p, m]
    O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / SD[b, h, p]
    LSE[b, h, p]   = MX[b, h, p] + log(SD[b, h, p])
    """
    B, H, N, E, Fd = 2, 2, 13, 6, 5
    doc = torch.tensor([[0] * 5 + [1] * 3 + [-1] * 5, [-1] * 13])
    m = torch.arange(N)
    keep = (doc[:, None, :] == doc[:, :, None]) & (doc[:, :, None] >= 0) & (m[None, :] <= m[:, None])
    keep = keep[:, None].expand(B, H, N, N)
    kern = einattn.compile(spec, backend="triton", tile=4)
    assert kern.plan.path == "fused"
    for scale in (1.0, 1e3):
        q, k, v = _t(B, H, N, E, scale=scale), _t(B, H, N, E, seed=1, scale=10.0), _t(B, H, N, Fd, seed=2)
        s = (q @ k.transpose(-1, -2) / E**0.5).masked_fill(~keep, float("-inf"))
        rows = keep.any(-1)
        lse = torch.where(rows, torch.logsumexp(s, -1), 0.0)
        o, got_lse = kern(*(t.float().to(DEVICE) for t in (q, k, v)), doc.to(DEVICE))
        torch.testing.assert_close(
            o.cpu().double(), _softmax_rows(q / E**0.5, k, v, keep), rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(got_lse.cpu().double(), lse, rtol=2e-6, atol=1e-5)


ALIBI = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], slope[h]
output O
QK[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
S[b, h, p, m]  = QK[b, h, p, m] + slope[h] * (m - p)  where m <= p
MX[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])
SD[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / SD[b, h, p]
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_alibi_per_head_slopes_against_sdpa(dtype):
    B, H, N, E, Fd = 2, 3, 11, 7, 5  # head dims that are not powers of two
    q, k, v = _t(B, H, N, E), _t(B, H, N, E, seed=1), _t(B, H, N, Fd, seed=2)
    slope = torch.tensor([0.5, 0.125, 2.0], dtype=torch.float64)
    causal = torch.arange(N)[None, :] <= torch.arange(N)[:, None]
    rounded = [t.to(dtype).double() for t in (q, k, v, slope)]
    bias = rounded[3][:, None, None] * (torch.arange(N)[None, :] - torch.arange(N)[:, None]).double()
    want = F.scaled_dot_product_attention(*rounded[:3], attn_mask=bias.masked_fill(~causal, float("-inf")))
    kern = _both(
        ALIBI,
        dict(Q=q, K=k, V=v, slope=slope),
        want,
        tol=2e-4 if dtype == torch.float32 else 1e-2,
        dtype=dtype,
    )
    assert kern.plan.path == "fused"


def test_softcap_sigmoid_and_cross_attention_against_formulas():
    B, H, P, M, E, Fd = 1, 2, 5, 17, 5, 3
    q, k, v = _t(B, H, P, E, scale=4.0), _t(B, H, M, E, seed=1), _t(B, H, M, Fd, seed=2)
    softcap = """
    input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
    param  C = 5.0
    output O
    QK[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
    S[b, h, p, m]  = C * tanh(QK[b, h, p, m] / C)
    MX[b, h, p]    = S[b, h, p, m] :: max(m)
    EX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])
    SD[b, h, p]    = EX[b, h, p, m]
    O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / SD[b, h, p]
    """
    s = 5.0 * torch.tanh(q @ k.transpose(-1, -2) / E**0.5 / 5.0)
    assert _both(softcap, dict(Q=q, K=k, V=v), torch.softmax(s, -1) @ v).plan.path == "fused"
    sigmoid = """
    input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
    output O
    QK[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
    O[b, h, p, f]  = sigmoid(QK[b, h, p, m] - log(M)) * V[b, h, m, f]  where m <= p + 7
    """
    keep = torch.arange(M)[None, :] <= torch.arange(P)[:, None] + 7
    w = torch.sigmoid(q @ k.transpose(-1, -2) / E**0.5 - np.log(M)) * keep
    assert _both(sigmoid, dict(Q=q, K=k, V=v), w @ v).plan.path == "fused"


GQA = """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 3
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)
MX[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])
SD[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, h // R, m, f] / SD[b, h, p]
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_gqa_cross_attention_on_transposed_and_strided_inputs(dtype):
    q = _t(2, 3, 6, 7).transpose(1, 2)  # [b, h, p, e] seen through a transpose
    k = _t(2, 7, 19, 2, seed=1).permute(0, 3, 2, 1)  # [b, g, m, e], e outermost in memory
    v = _t(2, 2, 38, 9, seed=2)[:, :, ::2]  # every other key
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    rounded = [t.to(dtype).double() for t in (q, k, v)]
    want = F.scaled_dot_product_attention(rounded[0], *(t.repeat_interleave(3, 1) for t in rounded[1:]))
    tol = {torch.float32: 2e-4, torch.float16: 1e-2, torch.float64: 1e-10}[dtype]
    assert _both(GQA, dict(Q=q, K=k, V=v), want, tol=tol, dtype=dtype).plan.path == "fused"


def test_gqa_heads_past_the_kv_heads_are_zero():
    """G * R < H: the heads whose `h // R` reads past K are absent, delivered as 0."""
    q, k, v = _t(1, 6, 3, 4), _t(1, 1, 9, 4, seed=1), _t(1, 1, 9, 3, seed=2)
    want = torch.zeros(1, 6, 3, 3, dtype=torch.float64)
    want[:, :3] = F.scaled_dot_product_attention(q[:, :3], k.expand(1, 3, 9, 4), v.expand(1, 3, 9, 3))
    _both(GQA, dict(Q=q, K=k, V=v), want)


def test_additive_padding_bias_of_float32_min_and_fully_masked_rows():
    """A padding bias of finfo(float32).min added to the scores (a whole batch padded: uniform weights, as
    softmax says), with logits of 1e3."""
    spec = """
    input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], bias[b, m]
    output O
    QK[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
    S[b, h, p, m]  = QK[b, h, p, m] + bias[b, m]
    MX[b, h, p]    = S[b, h, p, m] :: max(m)
    EX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])
    SD[b, h, p]    = EX[b, h, p, m]
    O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / SD[b, h, p]
    """
    q, k, v = _t(2, 2, 5, 6, scale=30.0), _t(2, 2, 9, 6, seed=1, scale=30.0), _t(2, 2, 9, 3, seed=2)
    bias = torch.zeros(2, 9, dtype=torch.float64)
    bias[0, 4:] = float(torch.finfo(torch.float32).min)
    bias[1, :] = float(torch.finfo(torch.float32).min)
    s = q @ k.transpose(-1, -2) / 6**0.5 + bias[:, None, None, :]
    _both(spec, dict(Q=q, K=k, V=v, bias=bias), torch.softmax(s, -1) @ v)


def test_causal_linear_attention_with_lengths_on_the_split_path():
    """A three-factor sum split into one `tl.dot` per statement (triton_split), with a length: NaN keys past
    it never reach a dot."""
    spec = """
    input  Q[b, p, e], K[b, m, e], V[b, m, f], klen[b] : int
    output O
    FQ[b, p, e]  = elu(Q[b, p, e]) + 1
    FK[b, m, e]  = elu(K[b, m, e]) + 1
    NUM[b, p, f] = FQ[b, p, e] * FK[b, m, e] * V[b, m, f]  where m <= p and m < klen[b]
    DEN[b, p]    = FQ[b, p, e] * FK[b, m, e]            where m <= p and m < klen[b]
    O[b, p, f]   = NUM[b, p, f] / DEN[b, p]
    """
    q, k, v = _t(3, 9, 3), _t(3, 13, 3, seed=1), _t(3, 13, 2, seed=2)
    klen = torch.tensor([0, 4, 30])
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    m = torch.arange(13)
    keep = (m[None, None, :] <= torch.arange(9)[None, :, None]) & (m[None, None, :] < klen[:, None, None])
    w = (fq @ fk.transpose(-1, -2)) * keep
    want = torch.where(keep.any(-1)[..., None], (w @ v) / w.sum(-1, keepdim=True), 0.0)
    dead = m[None, :] >= klen[:, None]
    kp, vp = k.clone(), v.clone()
    kp[dead], vp[dead] = float("nan"), float("nan")
    kern = einattn.compile(spec, backend="triton", tile=4)
    assert kern.plan.path == "fused" and "skipped" in kern.plan.detail
    got = kern(*(t.float().to(DEVICE) for t in (q, kp, vp)), klen.to(torch.int32).to(DEVICE))
    torch.testing.assert_close(got.cpu().double(), want, rtol=1e-4, atol=1e-5)


def _grads(decl, filt, length):
    """Gradients of the triton kernel (its backward recomputes through the torch backend) against autograd
    of softmax written out, for keys `m < length` per batch."""
    kern = einattn.compile(SOFTMAX.format(decls=decl, filt=filt), backend="triton", tile=4)
    q, k, v = (t.double().requires_grad_() for t in _qkv(3, 2, 5, 13))
    on = [t.detach().to(DEVICE).requires_grad_() for t in (q, k, v)]  # (CUDA where present)
    n = length.to(DEVICE) if isinstance(length, torch.Tensor) else length
    got = torch.autograd.grad(kern(*on, n).sum(), on)
    lens = length if isinstance(length, torch.Tensor) and length.dim() else torch.full((3,), int(length))
    keep = (torch.arange(13)[None, :] < lens[:, None])[:, None, None, :].expand(3, 2, 5, 13)
    want = torch.autograd.grad(_softmax_rows(q, k, v, keep).sum(), (q, k, v))
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-9, atol=1e-9)


def test_gradients_with_per_sequence_lengths():
    _grads("klen[b] : int", "m < klen[b]", torch.tensor([0, 6, 13]))


def test_gradients_with_a_scalar_length():
    _grads("n : int", "m < n", 6)
