"""Library kernels with filters that read `: int` inputs: padding lengths (`m < klen[b]`), spans per head,
document ids (`doc[b, p] == doc[b, m]`), alone or with causal and window filters. The torch backend runs them
as SDPA calls with a boolean mask built from the lookups (``lowering/torch_library.py``, ``_sdpa_index``).

References share nothing with it: each query row's softmax over exactly the keys it may see, by SDPA on
those keys alone (rows with none give 0); and the generated cascade (``library=False``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import einattn
from lowering import torch_library

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


# ---- terms added to the scores (biases): ALiBi, relative-position tables, key weights -------------------

BIASED = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], {inputs}
output O
{params}
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E){where}
S[b, h, m, p]  = {scores}
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
"""


def biased(scores, inputs, where="", params=""):
    return BIASED.format(
        scores=scores, inputs=inputs, where=f"  where {where}" if where else "", params=params
    )


def softmax_ref(q, k, v, bias, keep, scale=None):
    """softmax(scale q k^T + bias over the kept keys) v, written out; rows with no key give 0."""
    s = (q @ k.transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5) + bias
    s = s.masked_fill(~keep, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return w @ v


def test_alibi_example_runs_the_library_with_a_float_mask():
    """examples/alibi.ein: causal with slope[h] * (m - p), in blocks of rows, float64 and float32."""
    kern = einattn.compile(ROOT / "examples/alibi.ein", backend="torch", row_block=4)
    assert "_sdpa_bias(" in kern.source
    q, k, v = data(P=11, M=11, seed=11)
    slope = torch.tensor([0.5, 0.125], dtype=torch.float64)
    p, m = grid(3, 2, 11, 11)
    want = softmax_ref(q, k, v, slope[None, :, None, None] * (m - p), m <= p)
    torch.testing.assert_close(kern(q, k, v, slope), want, rtol=1e-10, atol=1e-12)
    got32 = kern(q.float(), k.float(), v.float(), slope.float())
    torch.testing.assert_close(got32, want.float(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(
    "scores, scale_after",
    [
        ("QK[b, h, m, p] + T[h, p, m]", 1.0),
        ("T[h, p, m] + QK[b, h, m, p]", 1.0),
        ("(QK[b, h, m, p] - T[h, p, m]) * 0.5", 0.5),  # the factor after the term multiplies both
        ("T[h, p, m] - 2 * QK[b, h, m, p]", -2.0),  # the scores negated
    ],
)
def test_a_bias_table_in_any_form(scores, scale_after):
    """A precomputed bias table T[h, p, m] (T5-style), added, subtracted, scaled after."""
    text = biased(scores, "T[h, p, m]")
    q, k, v = data(P=7, M=9, seed=12)
    t = torch.randn(2, 7, 9, dtype=torch.float64)
    sign = -1.0 if "- T" in scores else 1.0
    kern = einattn.compile(text, backend="torch", row_block=3)
    assert "_sdpa_bias(" in kern.source
    want = softmax_ref(
        q,
        k,
        v,
        scale_after * sign * t if scale_after > 0 else t,
        torch.ones(7, 9, dtype=torch.bool),
        scale=scale_after * 4**-0.5,
    )
    torch.testing.assert_close(kern(q, k, v, t), want, rtol=1e-10, atol=1e-12)
    gen = einattn.compile(text, backend="torch", library=False)
    torch.testing.assert_close(kern(q, k, v, t), gen(q, k, v, t), rtol=1e-10, atol=1e-12)


def test_key_weights_by_log_with_zeros_and_exp2():
    """`+ log(w[b, m])`: a weight of 0 is a score of -inf (the cascade runs: the spec's NaN where a row has
    only such keys); exp2 scales the term by ln 2 too."""
    text = biased("QK[b, h, m, p] + log(w[b, m])", "w[b, m]")
    q, k, v = data(seed=13)
    w = torch.rand(3, 11, dtype=torch.float64) + 0.1
    kern = einattn.compile(text, backend="torch")
    assert "_sdpa_bias(" in kern.source
    keep = torch.ones(9, 11, dtype=torch.bool)
    torch.testing.assert_close(kern(q, k, v, w), softmax_ref(q, k, v, w.log()[:, None, None, :], keep))
    w0 = w.clone()
    w0[1] = 0.0  # every key of sequence 1 weighs 0: NaN rows, as the spec says
    w0[2, 3] = 0.0
    want = einattn.compile(text, backend="numpy")(q.numpy(), k.numpy(), v.numpy(), w0.numpy())
    torch.testing.assert_close(kern(q, k, v, w0), torch.as_tensor(want), equal_nan=True)
    two = einattn.compile(text.replace("exp(S", "exp2(S"), backend="torch")
    gen = einattn.compile(text.replace("exp(S", "exp2(S"), backend="torch", library=False)
    assert "_sdpa_bias(" in two.source
    torch.testing.assert_close(two(q, k, v, w), gen(q, k, v, w), rtol=1e-10, atol=1e-12)


def test_a_bias_that_could_overflow_runs_the_cascade():
    text = biased("QK[b, h, m, p] + T[h, p, m]", "T[h, p, m]")
    q, k, v = (x.float() for x in data(P=4, M=5, seed=14))
    t = torch.zeros(2, 4, 5)
    t[1, 2, 3] = 3e38
    kern = einattn.compile(text, backend="torch")
    want = einattn.compile(text, backend="numpy")(q.numpy(), k.numpy(), v.numpy(), t.numpy())
    got = kern(q, k, v, t)
    torch.testing.assert_close(got, torch.as_tensor(want, dtype=torch.float32), equal_nan=True)
    torch.testing.assert_close(got[0, 1, 2], v[0, 1, 3])  # (all the weight on the key biased by 3e38)


def test_gradients_with_a_bias():
    """gradcheck of Q, K, V through the masked library call; a slope that requires grad runs the cascade
    (SDPA's gradient reaches q, k and v only) and gets its gradient."""
    kern = einattn.compile(ROOT / "examples/alibi.ein", backend="torch", row_block=2)
    q, k, v = (x.requires_grad_() for x in data(B=1, H=2, P=5, M=5, E=3, Fd=2, seed=15))
    slope = torch.tensor([0.3, 0.7], dtype=torch.float64)
    torch.autograd.gradcheck(lambda a, b, c: kern(a, b, c, slope), (q, k, v))
    slope.requires_grad_()
    torch.autograd.gradcheck(lambda a, b, c, s: kern(a, b, c, s), (q, k, v, slope))
    gen = einattn.compile(ROOT / "examples/alibi.ein", backend="torch", library=False)
    g1 = torch.autograd.grad(kern(q, k, v, slope).sum(), (q, k, v, slope))
    g2 = torch.autograd.grad(gen(q, k, v, slope).sum(), (q, k, v, slope))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_what_a_bias_cannot_be():
    """Softcapping (a function of the scores), a term that reads the scores, a shifted table: not matched."""
    for scores in (
        "30.0 * tanh(QK[b, h, m, p] / 30.0)",
        "QK[b, h, m, p] + QK[b, h, m, p]",
        "QK[b, h, m, p] + T[h, p, m + 1]",
    ):
        prog = einattn.parse(biased(scores, "T[h, p, m]"))
        assert torch_library.match(prog) is None, scores


@settings(deadline=None, max_examples=15)
@given(
    P=st.integers(1, 9),
    M=st.integers(1, 12),
    causal=st.booleans(),
    row_block=st.sampled_from([1, 3, "auto"]),
    slopes=st.lists(st.floats(-2, 2), min_size=2, max_size=2),
)
def test_property_alibi(P, M, causal, row_block, slopes):
    """Random sizes, slopes of either sign, row blocks, with and without the causal filter."""
    text = biased("QK[b, h, m, p] + slope[h] * (m - p)", "slope[h]", "m <= p" if causal else "")
    q, k, v = data(B=2, H=2, P=P, M=M, E=3, Fd=2, seed=16)
    slope = torch.tensor(slopes, dtype=torch.float64)
    kern = einattn.compile(text, backend="torch", row_block=row_block)
    assert "_sdpa_bias(" in kern.source
    p, m = grid(2, 2, P, M)
    keep = (m <= p) if causal else torch.ones_like(m, dtype=torch.bool)
    want = softmax_ref(q, k, v, slope[None, :, None, None] * (m - p), keep)
    torch.testing.assert_close(kern(q, k, v, slope), want, rtol=1e-10, atol=1e-12)


def test_scalar_lookup_and_scalar_bias():
    """`m < n` with a scalar `n : int`, and a scalar float bias `+ c` (0-d inputs; Python numbers too)."""
    q, k, v = data(seed=17)
    text = spec("m < n", "n : int")
    for n in (3, torch.tensor(7), torch.tensor(0)):
        got = run(text, q, k, v, n)
        keep = grid(3, 2, 9, 11)[1] < int(n)
        torch.testing.assert_close(got, attend(q, k, v, keep))
    text = biased("QK[b, h, m, p] + c * m", "c")
    kern = einattn.compile(text, backend="torch")
    assert "_sdpa_bias(" in kern.source
    m = grid(3, 2, 9, 11)[1].double()
    want = softmax_ref(q, k, v, 0.25 * m, torch.ones_like(m, dtype=torch.bool))
    torch.testing.assert_close(kern(q, k, v, torch.tensor(0.25, dtype=torch.float64)), want)
    torch.testing.assert_close(kern(q, k, v, 0.25), want)


SCORE_FORMS = {  # the scores statement: (expression, inputs it reads beyond Q, K, V)
    "alibi": ("QK[b, h, m, p] + slope[h] * (m - p)", "slope[h]"),
    "alibi, scaled after": ("(QK[b, h, m, p] + slope[h] * (p - m)) * 0.7", "slope[h]"),
    "table minus scores": ("T[h, p, m] - QK[b, h, m, p]", "T[h, p, m]"),
    "two terms": ("QK[b, h, m, p] / 2 + T[h, p, m] - abs(p - m) * slope[h]", "slope[h], T[h, p, m]"),
    "key weights": ("log(wk[b, m] + 1.5) + QK[b, h, m, p]", "wk[b, m]"),
    "functions": ("QK[b, h, m, p] + tanh(T[h, p, m]) * sqrt(2.0) - exp(-m) / 3", "T[h, p, m]"),
    "per-batch offset": ("QK[b, h, m, p] + sigmoid(c[b]) * (m + 1)", "c[b]"),
}
FILTERS = ["", "m <= p", "m < klen[b]", "m <= p and p - 3 < m", "doc[b, p] == doc[b, m] or m == 0"]


@settings(deadline=None, max_examples=25)
@given(
    form=st.sampled_from(sorted(SCORE_FORMS)),
    where=st.sampled_from(FILTERS),
    P=st.integers(1, 8),
    row_block=st.sampled_from([1, 3, "auto"]),
    exp2=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_biases_and_filters_equal_the_cascade(form, where, P, row_block, exp2, seed):
    """Random biases, filters (lookups among them), sizes and row blocks: the library's masked SDPA calls
    equal the generated cascade (``library=False``) in float64."""
    scores, extra = SCORE_FORMS[form]
    ints = [d for d in ("klen[b] : int", "doc[b, m] : int") if d.split("[")[0] in where]
    text = biased(scores, ", ".join([extra, *ints]), where)
    if exp2:
        text = text.replace("exp(S", "exp2(S")
    M = P if "doc" in where else P + 2
    g = torch.Generator().manual_seed(seed)
    q, k, v = data(B=2, H=2, P=P, M=M, E=3, Fd=2, seed=seed)
    pool = {
        "slope": torch.rand(2, generator=g, dtype=torch.float64) * 2 - 1,
        "T": torch.randn(2, P, M, generator=g, dtype=torch.float64),
        "wk": torch.rand(2, M, generator=g, dtype=torch.float64),
        "c": torch.randn(2, generator=g, dtype=torch.float64),
        "klen": torch.randint(-1, M + 2, (2,), generator=g),
        "doc": torch.randint(0, 3, (2, M), generator=g).sort(-1).values,
    }
    prog = einattn.parse(text)
    args = [q, k, v, *(pool[n] for n in prog.inputs[3:])]
    lib = einattn.compile(prog, backend="torch", row_block=row_block)
    assert "def program_library(" in lib.source, text
    gen = einattn.compile(prog, backend="torch", library=False)
    torch.testing.assert_close(lib(*args), gen(*args), rtol=1e-9, atol=1e-11, equal_nan=True)


def test_terms_constant_along_the_keys():
    """`+ log(wq[b, p])` is constant along the keys: the softmax does not see it (the output is plain
    attention), but where it is -inf the spec's row is NaN, and so is einattn's (the cascade runs)."""
    text = biased("QK[b, h, m, p] + log(wq[b, p]) - slope[h] * p", "wq[b, p], slope[h]")
    kern = einattn.compile(text, backend="torch")
    assert "_sdpa_bias(" in kern.source
    q, k, v = data(seed=18)
    wq = torch.rand(3, 9, dtype=torch.float64) + 0.5
    slope = torch.tensor([3.0, -2.0], dtype=torch.float64)
    keep = torch.ones(9, 11, dtype=torch.bool)
    torch.testing.assert_close(kern(q, k, v, wq, slope), softmax_ref(q, k, v, 0.0, keep))
    wq[1, 4] = 0.0  # log(0) = -inf: every score of row 4 of sequence 1 is -inf
    got = kern(q, k, v, wq, slope)
    assert torch.isnan(got[1, :, 4]).all() and not torch.isnan(got[[0, 2]]).any()
    assert not torch.isnan(got[1, :, :4]).any()


def test_a_bias_on_the_rows_runs_in_blocks_of_rows():
    """Non-causal ALiBi has no filter, but its bias varies with the row: blocks of 128 rows (a mask of
    [H, 128, keys] at a time, not [H, P, M]); a padding length alone needs no blocks."""
    alibi = einattn.compile(biased("QK[b, h, m, p] + slope[h] * (m - p)", "slope[h]"), backend="torch")
    assert "_sdpa_blocks(q, k, v, _s, 128," in alibi.source
    padded = einattn.compile(spec("m < klen[b]", "klen[b] : int"), backend="torch")
    assert "_sdpa_blocks(q, k, v, _s, max(s_p, 1)," in padded.source


def test_an_interval_bound_spares_the_check_of_each_block(monkeypatch):
    """The bias's magnitude is bounded from the lookups' extremes and the block's coordinates (interval
    arithmetic, ``_iv``): where that proves it small, no pass over the block checks it; where the bound is
    too loose (a huge value the filter leaves out), the block is checked, and the call stays SDPA's."""
    calls = []
    aminmax = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda x, *a, **k: calls.append(x.shape) or aminmax(x, *a, **k))
    q, k, v = data(B=1, H=2, P=300, M=300, E=4, Fd=2, seed=19)
    kern = einattn.compile(ROOT / "examples/alibi.ein", backend="torch", row_block=128)
    slope = torch.tensor([0.5, 0.25], dtype=torch.float64)
    kern(q, k, v, slope)
    assert len(calls) == 3, calls  # Q and K (the scores' range), the slopes' extremes; no block
    table = biased("QK[b, h, m, p] + T[h, p, m]", "T[h, p, m]", "m <= p")
    t = torch.randn(2, 300, 300, dtype=torch.float64).tril()
    t[:, 0, 299] = 1e308  # above the diagonal: filtered out
    lib = einattn.compile(table, backend="torch", row_block=128)
    calls.clear()
    got = lib(q, k, v, t)
    assert len(calls) == 3 + 3, calls  # ... and each of the 3 blocks checked: the bound says 1e308
    gen = einattn.compile(table, backend="torch", library=False)
    torch.testing.assert_close(got, gen(q, k, v, t), rtol=1e-9, atol=1e-12)
