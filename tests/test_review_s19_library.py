"""Review of session 18's library kernels (softmax attention by SDPA) with lookups in filters and terms
added to the scores (biases). Every result is compared with the NumPy backend (the oracle) and/or the
generated cascade (``library=False``), in float64 with tight tolerances, NaN where the reference is NaN.

The first tests are the bugs the review found (bias terms computed in float32 or int64; an interval bound
that float32 intermediates could overflow; a shared-K/V document mask taking the heads as the query rank;
tables longer than their batch rank; `not` of a scalar lookup under torch.compile), fixed in session 18;
the others cover layouts, GQA, shared K/V, tables declared over other ranks, gradients and random specs.
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch

import einattn

BIASED = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]{inputs}
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


def biased(scores, inputs="", where="", params=""):
    return BIASED.format(
        scores=scores,
        inputs=f", {inputs}" if inputs else "",
        where=f"  where {where}" if where else "",
        params=params,
    )


def rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def data(B=2, H=2, P=5, M=6, E=3, Fd=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return rand(g, B, H, P, E), rand(g, B, H, M, E), rand(g, B, H, M, Fd)


def _np(x):
    if isinstance(x, torch.Tensor):
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    return x


def compare(text, *args, oracle=True, gen=True, rtol=1e-9, atol=1e-11, **options):
    """The library's result (asserted to be the library path) against the NumPy oracle and the cascade."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = einattn.compile(text, backend="torch", **options)
        assert "def program_library(" in lib.source
        got = lib(*args)
        if oracle:
            want = torch.as_tensor(einattn.compile(text, backend="numpy")(*map(_np, args)))
            torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, equal_nan=True)
        if gen:
            cascade = einattn.compile(text, backend="torch", library=False, **options)(*args)
            torch.testing.assert_close(got, cascade, rtol=rtol, atol=atol, equal_nan=True)
    return got


# ---- bugs found (fixed) ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores, inputs, extra",
    [
        ("QK[b, h, m, p] + 0.1 * (m - p)", "", ()),
        ("QK[b, h, m, p] + m / 3", "", ()),
        ("QK[b, h, m, p] + W * m", "", ()),  # a float param
        ("(QK[b, h, m, p] + klen[b] * m) * 0.9", "klen[b] : int", (torch.tensor([3, 1]),)),
    ],
)
def test_bias_of_integer_coordinates_keeps_float64(scores, inputs, extra):
    q, k, v = data(seed=1)
    compare(biased(scores, inputs, params="param W = 0.1"), q, k, v, *extra)


def test_bias_of_a_large_coordinate_product_does_not_wrap():
    g = torch.Generator().manual_seed(2)
    q, k, v = rand(g, 1, 1, 3, 2), rand(g, 1, 1, 100, 2), rand(g, 1, 1, 100, 2)
    compare(biased("QK[b, h, m, p] + m * m * m * m * m * m * m * m * m * m * 1e-20"), q, k, v)


def test_bias_overflowing_only_in_float32_is_not_dropped():
    q, k, v = data(seed=3)
    compare(biased("QK[b, h, m, p] - m * 1e38 * 1e-38"), q, k, v)


def test_float32_bias_that_overflows_in_float32_is_checked():
    q, k, v = (x.float() for x in data(seed=4))
    t = torch.zeros(2, 5, 6)
    t[1, 2, :] = 1e20
    text = biased("QK[b, h, m, p] - T[h, p, m] * T[h, p, m] * 1e-30", "T[h, p, m]")
    got = compare(text, q, k, v, t, oracle=False, rtol=1e-5, atol=1e-6)
    assert torch.isnan(got[:, 1, 2]).all()


MQA_DOC = """
input Q[b, p, h, e], K[b, m, e], V[b, m, f], doc[b, m] : int
output O
S[b, h, m, p]  = Q[b, p, h, e] * K[b, m, e] where doc[b, p] == doc[b, m]
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
O[b, p, h, f]  = SN[b, h, m, p] * V[b, m, f] / SD[b, h, p]
"""


def test_mqa_document_mask_bshd_with_p_equal_m():
    g = torch.Generator().manual_seed(5)
    doc = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 1]])
    compare(MQA_DOC, rand(g, 2, 6, 3, 3), rand(g, 2, 6, 3), rand(g, 2, 6, 2), doc)


def test_mqa_document_mask_bshd_with_fewer_queries_than_keys():
    g = torch.Generator().manual_seed(5)
    doc = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 1]])
    compare(MQA_DOC, rand(g, 2, 4, 3, 3), rand(g, 2, 6, 3), rand(g, 2, 6, 2), doc)


@pytest.mark.parametrize("which", ["klen", "table"])
def test_lookup_longer_than_its_batch_rank(which):
    q, k, v = data(seed=6)
    g = torch.Generator().manual_seed(6)
    if which == "klen":
        text = biased("QK[b, h, m, p]", "klen[n] : int", "m < klen[b]")
        compare(text, q, k, v, torch.tensor([2, 4, 1]))
    else:
        text = biased("QK[b, h, m, p] + T[h, p, m]", "T[x, i, j]")
        compare(text, q, k, v, rand(g, 3, 5, 6))


def test_not_of_a_scalar_lookup_under_torch_compile():
    q, k, v = data(seed=7)
    text = biased("QK[b, h, m, p]", "n : int", "m < n or not (n > 3)")
    kern = einattn.compile(text, backend="torch")
    gen = einattn.compile(text, backend="torch", library=False)
    assert "def program_library(" in kern.source
    n = torch.tensor(2)
    got = torch.compile(kern, fullgraph=True, backend="aot_eager")(q, k, v, n)
    torch.testing.assert_close(got, gen(q, k, v, n), rtol=1e-9, atol=1e-11)


# ---- what the library gets right ----------------------------------------------------------------------


def test_permuted_layouts_with_bias_lookup_and_scale_after():
    """Q, K, V and the table in permuted layouts, the output permuted; c * (X - T) + ALiBi; padding."""
    g = torch.Generator().manual_seed(8)
    B, H, P, M, E, F = 2, 4, 5, 7, 3, 2
    text = """
input Q[p, b, h, e], K[m, e, b, h], V[h, f, m, b], T[p, h, m], klen[b] : int, slope[h]
output O
QK[b, h, m, p] = Q[p, b, h, e] * K[m, e, b, h] * 0.5 where m < klen[b]
S[b, h, m, p] = -0.75 * (QK[b, h, m, p] - T[p, h, m]) + slope[h] * (m - p)
GM[b, h, p] = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p] = SN[b, h, m, p]
O[p, f, h, b] = SN[b, h, m, p] * V[h, f, m, b] / SD[b, h, p]
"""
    args = rand(g, P, B, H, E), rand(g, M, E, B, H), rand(g, H, F, M, B), rand(g, P, H, M)
    for rb in (2, "auto"):
        compare(text, *args, torch.tensor([3, 0]), rand(g, H), row_block=rb)


GQA = """
input Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], T[h, p, m], doc[b, m] : int
param R = 2
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h // R, m, e] where doc[b, p] == doc[b, m] or m == 0
S[b, h, m, p] = T[h, p, m] - QK[b, h, m, p]
GM[b, h, p] = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p] = SN[b, h, m, p]
O[b, h, p, f] = SN[b, h, m, p] * V[b, h // R, m, f] / SD[b, h, p]
"""


@pytest.mark.parametrize("P, G", [(5, 2), (7, 2), (5, 3)])  # G = 3: more K/V heads than H / R read
def test_gqa_with_a_negated_table_and_a_document_or_filter(P, G):
    g = torch.Generator().manual_seed(9)
    doc = torch.tensor([[0, 0, 1, 1, 1, 2, 2], [0, 1, 1, 1, 1, 1, 1]])
    compare(GQA, rand(g, 2, 4, P, 3), rand(g, 2, G, 7, 3), rand(g, 2, G, 7, 2), rand(g, 4, P, 7), doc)


def test_shared_kv_exp2_log_weights_and_not_filter():
    g = torch.Generator().manual_seed(10)
    B, H, P, M = 2, 3, 5, 7
    text = """
input Q[b, p, h, e], K[b, m, e], V[m, b, f], W[b, m]
output O
QK[b, h, m, p] = Q[b, p, h, e] * K[b, m, e] where not (m > p + 1)
S[b, h, m, p] = QK[b, h, m, p] + log(W[b, m])
GM[b, h, p] = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp2(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p] = SN[b, h, m, p]
O[b, p, h, f] = SN[b, h, m, p] * V[m, b, f] / SD[b, h, p]
"""
    w = torch.rand(B, M, generator=g, dtype=torch.float64) + 0.1
    compare(text, rand(g, B, P, H, 3), rand(g, B, M, 3), rand(g, M, B, 2), w)


@pytest.mark.parametrize("shape", [(2, 5, 6), (2, 4, 6), (2, 5, 4), (2, 7, 9), (1, 5, 6)])
def test_table_declared_over_other_ranks(shape):
    """`T[h, p, m]` of a table declared `T[x, i, j]`: smaller than H, P or M is absent there (the
    cascade runs), larger along p and m is cut to the block."""
    q, k, v = data(seed=11)
    g = torch.Generator().manual_seed(11)
    compare(biased("QK[b, h, m, p] + T[h, p, m]", "T[x, i, j]"), q, k, v, rand(g, *shape))


def test_integer_lookup_dtypes():
    """uint8/int8/int16/int32/bool document ids: differences that would wrap in uint8 do not."""
    q, k, v = data(P=5, M=5, seed=12)
    doc = torch.tensor([[0, 0, 1, 2, 2], [0, 1, 1, 1, 3]])
    text = biased("QK[b, h, m, p]", "doc[b, m] : int", "0 <= doc[b, p] - doc[b, m] <= 1")
    for dt in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.bool):
        compare(text, q, k, v, doc.to(dt))


def test_zero_and_negative_scales_with_a_causal_table():
    q, k, v = data(P=5, M=5, seed=13)
    t = rand(torch.Generator().manual_seed(13), 2, 5, 5)
    for scores in ("QK[b, h, m, p] * 0 + T[h, p, m]", "QK[b, h, m, p] * -3 + T[h, p, m]"):
        compare(biased(scores, "T[h, p, m]", "m <= p"), q, k, v, t)


def test_empty_ranks_with_bias_and_lookup():
    g = torch.Generator().manual_seed(14)
    text = biased("QK[b, h, m, p] + T[h, p, m]", "T[h, p, m], klen[b] : int", "m < klen[b]")
    for P, M in ((0, 3), (3, 0), (0, 0)):
        args = rand(g, 2, 2, P, 3), rand(g, 2, 2, M, 3), rand(g, 2, 2, M, 2), rand(g, 2, P, M)
        compare(text, *args, torch.tensor([1, 2]))


def test_gradients_with_bias_document_mask_and_empty_rows():
    """gradcheck and gradgradcheck of Q, K, V (row 0 sees no key); the table and slope requiring grad
    (the cascade runs) get the cascade's gradients; double backward equals the cascade's."""
    q, k, v = data(seed=15)
    g = torch.Generator().manual_seed(15)
    t, slope = rand(g, 2, 5, 6), rand(g, 2)
    doc = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 1]])
    text = biased(
        "0.5 * (QK[b, h, m, p] - T[h, p, m]) + slope[h] * (m - p)",
        "T[h, p, m], slope[h], doc[b, m] : int",
        "doc[b, p] == doc[b, m] and m < p",
    )
    lib = einattn.compile(text, backend="torch", row_block=2)
    gen = einattn.compile(text, backend="torch", library=False)
    assert "_sdpa_bias(" in lib.source
    qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: lib(a, b, c, t, slope, doc), (qq, kk, vv))
    small = [x[:1, :1, :4, :2].detach().clone().requires_grad_() for x in (q, k, v)]
    assert torch.autograd.gradgradcheck(
        lambda a, b, c: lib(a, b, c, t[:1, :4, :4], slope[:1], doc[:1, :4]), small
    )
    tt, ss = t.clone().requires_grad_(), slope.clone().requires_grad_()
    w = rand(g, 2, 2, 5, 2)
    g1 = torch.autograd.grad((lib(qq, kk, vv, tt, ss, doc) * w).sum(), (qq, kk, vv, tt, ss))
    g2 = torch.autograd.grad((gen(qq, kk, vv, tt, ss, doc) * w).sum(), (qq, kk, vv, tt, ss))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    d1 = torch.autograd.grad((lib(qq, kk, vv, t, slope, doc) * w).sum(), (qq, kk, vv), create_graph=True)
    d2 = torch.autograd.grad((gen(qq, kk, vv, t, slope, doc) * w).sum(), (qq, kk, vv), create_graph=True)
    e1 = torch.autograd.grad(sum((x * x).sum() for x in d1), (qq, kk, vv))
    e2 = torch.autograd.grad(sum((x * x).sum() for x in d2), (qq, kk, vv))
    for a, b in zip(e1, e2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_gradients_when_a_bias_makes_the_cascade_run():
    """log(0) in a kept key: _SDPAFallback inside the graded call; the cascade's values and gradients."""
    q, k, v = data(seed=16)
    text = biased("QK[b, h, m, p] + log(w[b, m])", "w[b, m]", "m <= p + 1")
    w = torch.rand(2, 6, generator=torch.Generator().manual_seed(16), dtype=torch.float64) + 0.1
    w[0, 1] = 0.0
    lib = einattn.compile(text, backend="torch")
    gen = einattn.compile(text, backend="torch", library=False)
    qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
    g1 = torch.autograd.grad(lib(qq, kk, vv, w).sum(), (qq, kk, vv))
    g2 = torch.autograd.grad(gen(qq, kk, vv, w).sum(), (qq, kk, vv))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_low_precision_inputs_with_bias_and_lookup():
    q, k, v = data(seed=17)
    g = torch.Generator().manual_seed(17)
    t, slope = rand(g, 2, 5, 6) * 3, rand(g, 2)
    text = biased(
        "QK[b, h, m, p] + T[h, p, m] - slope[h] * abs(m - p)",
        "T[h, p, m], slope[h], klen[b] : int",
        "m < klen[b] and m <= p + 1",
    )
    for dt in (torch.float16, torch.bfloat16, torch.float32):
        args = [x.to(dt) for x in (q, k, v, t, slope)] + [torch.tensor([4, 2])]
        got = compare(text, *args, oracle=False, rtol=2e-6, atol=2e-6)
        assert got.dtype == dt


def test_torch_compile_alibi_with_padding():
    q, k, v = data(seed=18)
    text = biased("QK[b, h, m, p] + slope[h] * (m - p)", "slope[h], klen[b] : int", "m < klen[b]")
    kern = einattn.compile(text, backend="torch")
    gen = einattn.compile(text, backend="torch", library=False)
    slope, klen = rand(torch.Generator().manual_seed(18), 2), torch.tensor([3, 6])
    got = torch.compile(kern, fullgraph=True, backend="aot_eager")(q, k, v, slope, klen)
    torch.testing.assert_close(got, gen(q, k, v, slope, klen), rtol=1e-9, atol=1e-11)


# ---- random specs: filters (lookups, or/not, // and %) on either statement, biases in a chain --------

FILTERS = [
    "m <= p",
    "p - 2 <= m",
    "m < klen[b]",
    "m >= start[b] and m < stop[b, h]",
    "doc[b, p] == doc[b, m]",
    "(p - m) // 2 != 1",
    "(m - p) % 3 == 0 or m == 0",
    "abs(p - m) <= 1 or m < klen[b]",
    "not (doc[b, m] == 1) or m <= p",
    "m < n",
    "p - m < 2.5",
    "(m + 1) // -2 >= -2",
]
TERMS = [
    "slope[h] * (m - p)",
    "T[h, p, m]",
    "log(w[b, m])",
    "slope[h] * abs(p - m)",
    "tanh(T[h, p, m]) / 3",
    "klen[b] * slope[h]",
    "sigmoid(c[b]) * T[h, p, m]",
    "exp(-m) - p",
    "T[h, p, m] / (m - p)",
    "w[b, m] * (p + 1)",
]
DECLS = {
    "klen": "klen[b] : int",
    "start": "start[b] : int",
    "stop": "stop[b, h] : int",
    "doc": "doc[b, m] : int",
    "slope": "slope[h]",
    "T": "T[h, p, m]",
    "w": "w[b, m]",
    "c": "c[b]",
}


def random_case(rnd):
    B, H, P, M = rnd.randint(1, 2), rnd.choice([2, 4]), rnd.randint(1, 6), rnd.randint(1, 7)
    f1, f2 = rnd.choice([*FILTERS, ""]), rnd.choice([*FILTERS, "", ""])
    if "doc[b, p]" in f1 + f2:
        M = max(M, P)
    t1, t2 = rnd.choice(TERMS), rnd.choice([*TERMS, ""])
    x = "QK[b, h, m, p]"
    s1 = rnd.choice([f"{x} + {t1}", f"{t1} - {x}", f"-0.75 * ({x} - {t1})", f"({x} + {t1}) / 2"])
    s2 = f"S1[b, h, m, p] + {t2}" if t2 else "S1[b, h, m, p] * 0.75"
    gqa = rnd.random() < 0.4
    kv, g = ("h // R", "g") if gqa else ("h", "h")
    body = " ".join([f1, f2, t1, t2])
    decls = [d for name, d in DECLS.items() if f"{name}[" in body] + (["n : int"] if "< n" in body else [])
    where = lambda f: f"  where {f}" if f else ""  # noqa: E731
    text = f"""
input Q[b, h, p, e], K[b, {g}, m, e], V[b, {g}, m, f]{"".join(", " + d for d in decls)}
param R = 2
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, {kv}, m, e] * rsqrt(E){where(f1)}
S1[b, h, m, p] = {s1}
S[b, h, m, p] = {s2}{where(f2)}
GM[b, h, p] = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = {rnd.choice(["exp", "exp2"])}(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p] = SN[b, h, m, p]
O[b, h, p, f] = SN[b, h, m, p] * V[b, {kv}, m, f] / SD[b, h, p]
"""
    gen = torch.Generator().manual_seed(rnd.randint(0, 10**6))
    G = H // 2 if gqa else H
    pool = {
        "Q": rand(gen, B, H, P, 2),
        "K": rand(gen, B, G, M, 2),
        "V": rand(gen, B, G, M, 2),
        "klen": torch.randint(-1, M + 2, (B,), generator=gen),
        "start": torch.randint(0, M, (B,), generator=gen),
        "stop": torch.randint(0, M + 2, (B, H), generator=gen),
        "doc": torch.randint(0, 3, (B, M), generator=gen).sort(-1).values,
        "n": torch.tensor(rnd.randint(0, M)),
        "slope": rand(gen, H),
        "T": rand(gen, H, P, M),
        "w": torch.rand(B, M, generator=gen, dtype=torch.float64) + 0.05,
        "c": rand(gen, B),
    }
    return text, pool, rnd.choice([1, 3, "auto", 0])


@pytest.mark.parametrize("seed", range(3))
def test_random_specs_equal_the_oracle(seed):
    rnd = random.Random(seed)
    for _ in range(8):
        text, pool, rb = random_case(rnd)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = einattn.parse(text)
        args = [pool[n] for n in prog.inputs]
        compare(prog, *args, gen=False, row_block=rb)
