"""Tile skipping from runtime values: a filter on a `: int` input read at the program's parallel coordinates
(per-sequence lengths `m < klen[b]`, starts `m >= start[b]`) narrows the fused kernel's loop per program.

Varlen batches and KV caches of decoding pad each sequence to the longest one; the kernel visits only the
tiles below each sequence's own length. Checked under the interpreter against an independent reference
(SDPA on each sequence's own keys) with NaN written past every sequence's end: a tile visited there without
its mask, or a whole tile taken for one with masked keys, would show.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from triton_cases import DEVICE

import einattn

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

PADDED = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], klen[b] : int
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < klen[b]
MX[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])
SD[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / SD[b, h, p]
"""

# keys start[b] .. stop[b, h] - 1 of each sequence and head: both ends of the loop move
SPAN = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], start[b] : int, stop[b, h] : int
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e]  where m >= start[b] and m < stop[b, h]
MX[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])
SD[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / SD[b, h, p]
"""

# causal attention over a left-padded batch: the query at p sees keys pad[b] .. p
CAUSAL_LEFT_PAD = """
input  Q[b, p, e], K[b, m, e], V[b, m, f], pad[b] : int
output O
S[b, p, m]  = Q[b, p, e] * K[b, m, e]  where m <= p and m >= pad[b]
MX[b, p]    = S[b, p, m] :: max(m)
EX[b, p, m] = exp(S[b, p, m] - MX[b, p])
SD[b, p]    = EX[b, p, m]
O[b, p, f]  = EX[b, p, m] * V[b, m, f] / SD[b, p]
"""


def _attend(q, k, v, keep, scale):
    """SDPA of each query row over the keys that ``keep`` (rows x keys) leaves; rows without a key give 0."""
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for i in range(q.shape[-2]):
        idx = torch.nonzero(keep[i]).flatten()
        if len(idx):
            out[..., i, :] = F.scaled_dot_product_attention(
                q[..., i : i + 1, :], k[..., idx, :], v[..., idx, :], scale=scale
            )[..., 0, :]
    return out


def _poison(x, keep_keys):
    """``x`` with NaN at the keys (dim -2) that ``keep_keys`` leaves out: they must never be read."""
    x = x.clone()
    x[..., ~keep_keys, :] = float("nan")
    return x


def _padded_case(klen, H=2, P=5, M=37, E=6, Fd=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(klen)
    q, k, v = (torch.randn(B, H, n, d, generator=g) for n, d in ((P, E), (M, E), (M, Fd)))
    kl = torch.tensor(klen)
    keep = torch.arange(M)[None, :] < kl[:, None]  # (B, M)
    want = torch.stack([_attend(q[b], k[b], v[b], keep[b].expand(P, M), E**-0.5) for b in range(B)])
    k = torch.stack([_poison(k[b], keep[b]) for b in range(B)])
    v = torch.stack([_poison(v[b], keep[b]) for b in range(B)])
    return (q, k, v, kl), want


@pytest.mark.parametrize("tile", [4, 16])
def test_padding_mask_skips_the_tiles_past_each_length(tile):
    """Lengths of 0, negative, one tile, a tile and one, the whole and past it: NaN keys past them unread."""
    klen = [0, -3, tile, tile + 1, 37, 50, 9]
    args, want = _padded_case(klen)
    kern = einattn.compile(PADDED, backend="triton", tile=tile)
    assert kern.plan.path == "fused" and "tiles after the filter's range skipped" in kern.plan.detail
    assert "t_klen" in kern.source.split("# ---- the tiles")[1].split("for m1 in")[0]
    got = kern(*(a.to(DEVICE) for a in args)).cpu()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_padding_mask_whole_tiles_run_without_masks():
    """The tiles wholly below a length run unmasked (the three loops), and NaN just past it stays unread."""
    kern = einattn.compile(PADDED, backend="triton", tile=4)
    assert "whole tiles: no masks" in kern.source
    bounds = kern.source.split("whole_hi = ")[1].split("\n")[0]
    assert "t_klen" in bounds  # the whole tiles end where the length does
    args, want = _padded_case([13, 8, 3], M=16)
    torch.testing.assert_close(kern(*(a.to(DEVICE) for a in args)).cpu(), want, rtol=1e-4, atol=1e-5)


def test_both_ends_from_runtime_values_per_sequence_and_head():
    """`m >= start[b] and m < stop[b, h]`: lo and hi both come from the inputs (hi per head)."""
    B, H, P, M, E = 3, 2, 4, 29, 5
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, H, n, E, generator=g) for n in (P, M, M))
    start = torch.tensor([0, 7, 20])
    stop = torch.tensor([[29, 12], [9, 7], [40, 21]])  # an empty range (7..6) for (b=1, h=1)
    kern = einattn.compile(SPAN, backend="triton", tile=4)
    assert "tiles before and after the filter's range skipped" in kern.plan.detail
    want = torch.zeros(B, H, P, E)
    for b in range(B):
        for h in range(H):
            keys = (torch.arange(M) >= start[b]) & (torch.arange(M) < stop[b, h])
            want[b, h] = _attend(q[b, h], k[b, h], v[b, h], keys.expand(P, M), 1.0)
            k[b, h, ~keys] = float("nan")
            v[b, h, ~keys] = float("nan")
    got = kern(*(a.to(DEVICE) for a in (q, k, v, start, stop))).cpu()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_causal_with_left_padding():
    """A runtime lower end with the causal upper end: the tiles before pad[b] and after the rows skipped."""
    B, P, E = 3, 23, 4
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(B, P, E, generator=g) for _ in range(3))
    pad = torch.tensor([0, 5, 17])
    kern = einattn.compile(CAUSAL_LEFT_PAD, backend="triton", tile=4)
    assert "tiles before and after the filter's range skipped" in kern.plan.detail
    want = torch.zeros(B, P, E)
    for b in range(B):
        keep = (torch.arange(P)[None, :] <= torch.arange(P)[:, None]) & (torch.arange(P)[None, :] >= pad[b])
        want[b] = _attend(q[b], k[b], v[b], keep, 1.0)
        k[b, : int(pad[b])] = float("nan")
        v[b, : int(pad[b])] = float("nan")
    got = kern(*(a.to(DEVICE) for a in (q, k, v, pad))).cpu()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "spec",
    [
        # a floor division of the coordinate: not linear in the tile number
        PADDED.replace("m < klen[b]", "m // 2 < klen[b]"),
        # read at the row rank: one value per query row, not per program
        PADDED.replace("klen[b] : int", "klen[p] : int").replace("klen[b]  where", "klen[p]  where"),
        # read past its end for the last sequence: absent there
        PADDED.replace("m < klen[b]", "m < klen[b + 1]"),
    ],
    ids=["floordiv", "per-row", "maybe-absent"],
)
def test_values_that_cannot_bound_the_loop_keep_every_tile(spec):
    """Where the value is not one present integer per program, no tile is skipped, and the result holds."""
    kern = einattn.compile(spec, backend="triton", tile=4)
    assert "skipped" not in kern.plan.detail, kern.plan.detail
    prog = einattn.parse(spec)
    sizes = dict(b=2, h=1, p=5, m=11, e=3, f=2)
    rng = np.random.default_rng(3)
    x = {}
    for t in prog.inputs:
        shape = [sizes[r] for r in prog.tensor(t).ranks]
        x[t] = rng.integers(-2, 4, shape) if t == "klen" else rng.standard_normal(shape)
    want = einattn.compile(spec, backend="numpy")(**x)
    args = {t: torch.as_tensor(v, dtype=torch.float32 if v.dtype.kind == "f" else None) for t, v in x.items()}
    got = kern(**{t: a.to(DEVICE) for t, a in args.items()}).cpu().double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@settings(deadline=None, max_examples=12)
@given(
    lens=st.lists(st.integers(-2, 30), min_size=1, max_size=3),
    m=st.integers(1, 26),
    p=st.integers(1, 6),
    tile=st.sampled_from([2, 3, 4, 16]),
)
def test_padding_mask_property(lens, m, p, tile):
    """Random lengths (some past the end, some empty), key counts and tiles: the kernel is the reference."""
    args, want = _padded_case(lens, H=1, P=p, M=m, E=3, Fd=2)
    kern = einattn.compile(PADDED, backend="triton", tile=tile)
    torch.testing.assert_close(kern(*(a.to(DEVICE) for a in args)).cpu(), want, rtol=1e-4, atol=1e-5)


QUERY_LENGTHS = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], qlen[b] : int, klen[b] : int
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < klen[b] and p < qlen[b]
MX[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])
SD[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / SD[b, h, p]
"""


@pytest.mark.parametrize("static", [False, True])
def test_a_filter_on_the_rows_alone_skips_every_tile_of_rows_past_it(static):
    """`p < qlen[b]` (or `p < 20`): a program whose rows all fail it visits no tile; rows past it give 0
    (NaN queries there are never read), rows before it are the reference's."""
    spec = QUERY_LENGTHS
    if static:
        spec = spec.replace("p < qlen[b]", "p < 20").replace(", qlen[b] : int", "")
    kern = einattn.compile(spec, backend="triton", tile=4)
    bounds = kern.source.split("# ---- the tiles")[1].split("# ---- the streamed")[0]
    assert "tl.where(" in bounds and ("row_lo" in bounds), bounds
    B, H, P, M, E = 3, 2, 37, 29, 5
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(B, H, n, E, generator=g) for n in (P, M, M))
    qlen = torch.tensor([20, 20, 20]) if static else torch.tensor([0, 17, 40])
    klen = torch.tensor([5, 29, 0])
    want = torch.zeros(B, H, P, E)
    for b in range(B):
        rows = min(int(qlen[b]), P)
        keep = torch.arange(M)[None, :] < klen[b]
        want[b, :, :rows] = _attend(q[b, :, :rows], k[b], v[b], keep.expand(rows, M), E**-0.5)
        q[b, :, rows:] = float("nan")
    args = (q, k, v, klen) if static else (q, k, v, qlen, klen)
    got = kern(*(a.to(DEVICE) for a in args)).cpu()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
