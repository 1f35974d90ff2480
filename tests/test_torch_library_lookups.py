"""Library kernels with filters that read `: int` inputs: padding lengths (`m < klen[b]`), spans per head,
document ids (`doc[b, p] == doc[b, m]`), alone or with causal and window filters. The torch backend runs them
as SDPA calls with a boolean mask built from the lookups (``lowering/torch_library.py``, ``_sdpa_index``).

References share nothing with it: each query row's softmax over exactly the keys it may see, by SDPA on
those keys alone (rows with none give 0); and the generated cascade (``library=False``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import einattn

ROOT = Path(__file__).resolve().parent.parent
BODY = """
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where {where}
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
"""


def spec(where: str, ints: str, grouped: bool = False) -> str:
    kv = "g" if grouped else "h"
    head = f"input  Q[b, h, p, e], K[b, {kv}, m, e], V[b, {kv}, m, f], {ints}\noutput O\n"
    params = "param W = 4\nparam R = 2\n"
    body = BODY.format(where=where)
    if grouped:
        body = body.replace("K[b, h, m, e]", "K[b, h // R, m, e]").replace(
            "V[b, h, m, f]", "V[b, h // R, m, f]"
        )
    return head + params + body


def attend(q, k, v, keep):
    """Per (b, h) and query row, SDPA over the keys ``keep[b, h, p, m]`` leaves; 0 for a row with none."""
    B, H, P, E = q.shape
    out = torch.zeros(B, H, P, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(P):
                idx = torch.nonzero(keep[b, h, i]).flatten()
                if len(idx):
                    out[b, h, i] = F.scaled_dot_product_attention(
                        q[b, h, i : i + 1][None], k[b, h, idx][None], v[b, h, idx][None], scale=E**-0.5
                    )[0, 0]
    return out


def data(B=3, H=2, P=9, M=11, E=4, Fd=3, seed=0, kv_heads=None):
    g = torch.Generator().manual_seed(seed)
    kvh = kv_heads or H
    return (
        torch.randn(B, H, P, E, generator=g, dtype=torch.float64),
        torch.randn(B, kvh, M, E, generator=g, dtype=torch.float64),
        torch.randn(B, kvh, M, Fd, generator=g, dtype=torch.float64),
    )


def grid(B, H, P, M):
    p = torch.arange(P)[None, None, :, None]
    m = torch.arange(M)[None, None, None, :]
    return p.expand(B, H, P, M), m.expand(B, H, P, M)


def run(text, *args, **options):
    lib = einattn.compile(einattn.parse(text), backend="torch", **options)
    assert "def program_library(" in lib.source and "_sdpa_index(" in lib.source
    gen = einattn.compile(einattn.parse(text), backend="torch", library=False)
    got, want = lib(*args), gen(*args)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    return got


def test_padding_lengths_per_sequence():
    """Lengths 0 (rows give 0), inside, and past the end."""
    q, k, v = data()
    klen = torch.tensor([0, 5, 40])
    got = run(spec("m < klen[b]", "klen[b] : int"), q, k, v, klen)
    _, m = grid(3, 2, 9, 11)
    torch.testing.assert_close(got, attend(q, k, v, m < klen[:, None, None, None]))


def test_padding_with_causal_and_a_window_in_row_blocks():
    """Static bounds (causal, window: the keys a block may see) and a lookup (the mask) together."""
    q, k, v = data(P=11, M=11, seed=1)
    klen = torch.tensor([3, 11, 7])
    where = "m <= p and p - W < m and m < klen[b]"
    for row_block in (2, 4, "auto"):
        got = run(spec(where, "klen[b] : int"), q, k, v, klen, row_block=row_block)
        p, m = grid(3, 2, 11, 11)
        keep = (m <= p) & (p - 4 < m) & (m < klen[:, None, None, None])
        torch.testing.assert_close(got, attend(q, k, v, keep))


def test_spans_per_head_and_left_padding():
    """`m >= start[b] and m < stop[b, h]`: lookups over one and two batch ranks."""
    q, k, v = data(seed=2)
    start = torch.tensor([0, 3, 6])
    stop = torch.tensor([[11, 4], [2, 9], [20, 8]])  # (b=1, h=0) keeps no key
    got = run(
        spec("m >= start[b] and m < stop[b, h]", "start[b] : int, stop[b, h] : int"), q, k, v, start, stop
    )
    _, m = grid(3, 2, 9, 11)
    keep = (m >= start[:, None, None, None]) & (m < stop[:, :, None, None])
    torch.testing.assert_close(got, attend(q, k, v, keep))


def test_document_mask_causal():
    """`doc[b, p] == doc[b, m] and m <= p`: lookups at the query and at the key coordinate."""
    q, k, v = data(P=10, M=10, seed=3)
    doc = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 3], [0] * 10, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    text = spec("doc[b, p] == doc[b, m] and m <= p", "doc[b, m] : int")  # (P = M, as examples/variants/18)
    for row_block in (3, "auto"):
        got = run(text, q, k, v, doc, row_block=row_block)
        p, m = grid(3, 2, 10, 10)
        keep = (doc[:, None, :, None] == doc[:, None, None, :]) & (m <= p)
        torch.testing.assert_close(got, attend(q, k, v, keep))


def test_grouped_heads_with_padding():
    """GQA (`K[b, h // R, ...]`) and a padding lookup: the mask broadcasts over the query heads."""
    q, k, v = data(H=4, seed=4, kv_heads=2)
    klen = torch.tensor([2, 9, 6])
    got = run(spec("m < klen[b]", "klen[b] : int", grouped=True), q, k, v, klen)
    keep = grid(3, 4, 9, 11)[1] < klen[:, None, None, None]
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    torch.testing.assert_close(got, attend(q, kk, vv, keep))


def test_gradients_through_the_masked_library_call():
    """gradcheck in float64, rows without a key included; equal to the generated cascade's gradients."""
    q, k, v = (x.requires_grad_() for x in data(B=2, H=1, P=5, M=6, E=3, Fd=2, seed=5))
    klen = torch.tensor([0, 4])
    text = spec("m < klen[b] and m <= p + 1", "klen[b] : int")
    lib = einattn.compile(text, backend="torch")
    gen = einattn.compile(text, backend="torch", library=False)
    assert "_sdpa_index(" in lib.source
    torch.autograd.gradcheck(lambda a, b, c: lib(a, b, c, klen), (q, k, v))
    w = torch.randn(2, 1, 5, 2, dtype=torch.float64)
    g1 = torch.autograd.grad((lib(q, k, v, klen) * w).sum(), (q, k, v))
    g2 = torch.autograd.grad((gen(q, k, v, klen) * w).sum(), (q, k, v))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_non_finite_inputs_and_int32_lengths_fall_back_or_match():
    """int32 lengths; a NaN in a padded key is the spec's (NaN rows where the key is kept, else not)."""
    q, k, v = data(seed=6)
    klen = torch.tensor([4, 11, 1], dtype=torch.int32)
    text = spec("m < klen[b]", "klen[b] : int")
    run(text, q, k, v, klen)
    k = k.clone()
    k[0, :, 8] = float("nan")  # past klen[0]: never read by the spec
    k[1, :, 2] = float("nan")  # kept by klen[1]: NaN scores, NaN rows
    lib = einattn.compile(text, backend="torch")
    want = einattn.compile(text, backend="numpy")(q.numpy(), k.numpy(), v.numpy(), klen.numpy())
    got = lib(q, k, v, klen).numpy()
    assert torch.isnan(torch.as_tensor(got[1])).all() and not torch.isnan(torch.as_tensor(got[[0, 2]])).any()
    torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(want), equal_nan=True)


def test_lookups_that_are_not_matched():
    """A lookup at a summed rank, or at a shifted index, runs as generated code (and is right)."""
    q, k, v = data(seed=10)
    for where, ints, table in (
        ("D[e] < 1", "D[e] : int", torch.tensor([0, 1, 0, 2])),
        ("m < klen[b + 1]", "klen[b] : int", torch.tensor([3, 7, 2])),
    ):
        text = spec(where, ints)
        kern = einattn.compile(text, backend="torch")
        assert "def program_library(" not in kern.source
        want = einattn.compile(text, backend="numpy")(q.numpy(), k.numpy(), v.numpy(), table.numpy())
        torch.testing.assert_close(kern(q, k, v, table), torch.as_tensor(want))


@settings(deadline=None, max_examples=15)
@given(
    lens=st.lists(st.integers(-2, 14), min_size=1, max_size=3),
    P=st.integers(1, 9),
    M=st.integers(1, 12),
    causal=st.booleans(),
    row_block=st.sampled_from([1, 3, "auto"]),
)
def test_property_padding(lens, P, M, causal, row_block):
    """Random lengths, sizes, row blocks, with and without a causal filter: SDPA on the kept keys."""
    q, k, v = data(B=len(lens), H=1, P=P, M=M, E=3, Fd=2, seed=7)
    klen = torch.tensor(lens)
    where = "m < klen[b]" + (" and m <= p" if causal else "")
    got = run(spec(where, "klen[b] : int"), q, k, v, klen, row_block=row_block)
    p, m = grid(len(lens), 1, P, M)
    keep = (m < klen[:, None, None, None]) & ((m <= p) if causal else True)
    torch.testing.assert_close(got, attend(q, k, v, keep))


def test_a_lookup_read_past_its_end_runs_the_cascade():
    """`doc[b, p]` of `doc[b, m]` with P > M: the rows past M read nothing (absent), as the spec says; the
    library's guard hands such a call to the generated cascade."""
    q, k, v = data(P=12, M=10, seed=8)
    doc = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 3], [0] * 10, list(range(10))])
    text = spec("doc[b, p] == doc[b, m] and m <= p", "doc[b, m] : int")
    got = run(text, q, k, v, doc)
    want = einattn.compile(text, backend="numpy")(q.numpy(), k.numpy(), v.numpy(), doc.numpy())
    torch.testing.assert_close(got, torch.as_tensor(want))
    assert not got[:, :, 10:].any()  # (absent rows are stored as 0)


def test_the_document_mask_example_runs_the_library():
    """examples/variants/18: the packed-sequence document mask runs as masked SDPA calls, and is right."""
    kern = einattn.compile(ROOT / "examples/variants/18_document_mask.ein", backend="torch")
    assert "_sdpa_index(" in kern.source
    q, k, v = data(P=10, M=10, seed=9)
    doc = torch.tensor([[0, 0, 1, 1, 1, 1, 2, 2, 3, 3]] * 3)
    p, m = grid(3, 2, 10, 10)
    keep = (doc[:, None, :, None] == doc[:, None, None, :]) & (m <= p)
    torch.testing.assert_close(kern(q, k, v, doc), attend(q, k, v, keep))
