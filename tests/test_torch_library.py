"""The torch backend's library kernels (``lowering/torch_library.py``): a spec that is softmax attention runs
as torch's ``scaled_dot_product_attention``. Checked against references that share nothing with it
(softmax written out in NumPy, with the filter as a boolean matrix) and against the generated cascade
(``library=False``); which specs match and which must not; gradients; fallbacks; torch.compile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import einattn
from lowering import torch_library

HEAD = "input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]\noutput O\n"
NATURAL = """
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E){where}
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
"""


def spec(where: str = "", params: str = "", head: str = HEAD, body: str = NATURAL) -> str:
    return head + params + body.format(where=f"  where {where}" if where else "")


def reference(q, k, v, scale, allowed):
    """softmax(scale * q k^T restricted to ``allowed[p, m]``) v in float64 NumPy; rows with no key: 0."""
    s = np.einsum("...pe,...me->...pm", q, k) * scale
    s = np.where(allowed, s, -np.inf)
    top = s.max(-1, keepdims=True)
    w = np.exp(s - np.where(np.isfinite(top), top, 0.0))
    den = w.sum(-1, keepdims=True)
    return np.einsum("...pm,...mf->...pf", w, v) / np.where(den > 0, den, 1.0)


def qkv(b=2, h=3, p=11, m=13, e=5, f=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(*s, generator=g, dtype=dtype) for s in ((b, h, p, e), (b, h, m, e), (b, h, m, f))
    )


def compiled(text, **options):
    return einattn.compile(einattn.parse(text), backend="torch", **options)


def uses_library(kern) -> bool:
    return "def program_library(" in kern.source


FILTERS = {  # filter text -> allowed(p, m) on index grids (P, M, W)
    "": lambda p, m, W: np.ones_like(p + m, dtype=bool),
    "m <= p": lambda p, m, W: m <= p,
    "p - W < m and m <= p": lambda p, m, W: (p - W < m) & (m <= p),
    "m < p": lambda p, m, W: m < p,  # row 0 sees no key: 0
    "m <= p or m < W": lambda p, m, W: (m <= p) | (m < W),  # prefix LM (not a conjunction: no bounds)
    "abs(p - m) < W": lambda p, m, W: np.abs(p - m) < W,
    "m % 2 == 0 and m <= p + 1": lambda p, m, W: (m % 2 == 0) & (m <= p + 1),
    "2 * m <= p": lambda p, m, W: 2 * m <= p,
    "p <= 3 * m - 2": lambda p, m, W: p <= 3 * m - 2,
    "m >= W": lambda p, m, W: m >= W,  # the first keys only; rows all alike
    "1 < 0": lambda p, m, W: np.zeros_like(p + m, dtype=bool),  # no key at all: 0 everywhere
    "W > 2 and m == p": lambda p, m, W: (W > 2) & (m == p),  # a condition on a param
    "not (m > p) and p != 3": lambda p, m, W: (m <= p) & (p != 3),  # a row with no key
    "m != p": lambda p, m, W: m != p,
}


def allowed(filter_text, P, M, W):
    p, m = np.meshgrid(np.arange(P), np.arange(M), indexing="ij")
    return FILTERS[filter_text](p, m, W)


@pytest.mark.parametrize("where", list(FILTERS))
@pytest.mark.parametrize("P,M", [(11, 13), (13, 5), (1, 9), (40, 40)])
def test_filters_equal_numpy_softmax(where, P, M):
    W = 4
    kern = compiled(spec(where, "param W = 4\n"), row_block=5)
    assert uses_library(kern)
    q, k, v = qkv(p=P, m=M, seed=P * M)
    got = kern(Q=q, K=k, V=v)
    want = reference(q.numpy(), k.numpy(), v.numpy(), 1 / math.sqrt(5), allowed(where, P, M, W))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    plain = compiled(spec(where, "param W = 4\n"), library=False)(Q=q, K=k, V=v)
    np.testing.assert_allclose(got.numpy(), plain.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("row_block", ["auto", 0, 1, 3, 7])
def test_row_blocks_do_not_change_the_window(row_block):
    kern = compiled(spec("p - W < m and m <= p", "param W = 5\n"), row_block=row_block)
    q, k, v = qkv(p=23, m=23, seed=1)
    want = reference(
        q.numpy(), k.numpy(), v.numpy(), 1 / math.sqrt(5), allowed("p - W < m and m <= p", 23, 23, 5)
    )
    np.testing.assert_allclose(kern(Q=q, K=k, V=v).numpy(), want, rtol=1e-10, atol=1e-12)


def test_window_reads_only_the_keys_its_rows_see(monkeypatch):
    """A block of rows is given the keys of its window, not all M of them (SDPA's key count per call)."""
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.shape[2], k.shape[2], kw.get("attn_mask") is None))
        return real(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    kern = compiled(spec("p - W < m and m <= p", "param W = 8\n"), row_block=16)
    q, k, v = qkv(b=1, h=1, p=64, m=64)
    kern(Q=q, K=k, V=v)
    assert [s[:2] for s in seen] == [(16, 16), (16, 23), (16, 23), (16, 23)]
    seen.clear()
    compiled(spec("m <= p"))(Q=q, K=k, V=v)
    assert seen == [(64, 64, True)]  # causal: one call, SDPA's is_causal (no mask)


def test_scales_of_any_sign_and_exp2():
    q, k, v = qkv(p=9, m=9)
    for factor, value in (("* T", -0.7), ("* T", 0.0), ("/ T", 2.5), ("/ T", -0.5), ("* T * T", -1.5)):
        body = NATURAL.replace("* rsqrt(E)", factor)
        for where in ("", "m <= p", "p - 3 < m and m <= p"):
            kern = compiled(spec(where, f"param T = {value}\n", body=body))
            assert uses_library(kern), (factor, where)
            scale = value if factor == "* T" else value * value if factor == "* T * T" else 1 / value
            rule = "p - W < m and m <= p" if where.startswith("p - 3") else where
            want = reference(q.numpy(), k.numpy(), v.numpy(), scale, allowed(rule, 9, 9, 3))
            np.testing.assert_allclose(kern(Q=q, K=k, V=v).numpy(), want, rtol=1e-10, atol=1e-12)
    body = NATURAL.replace("exp(", "exp2(")
    kern = compiled(spec("m <= p", body=body))
    assert uses_library(kern)
    want = reference(q.numpy(), k.numpy(), v.numpy(), math.log(2) / math.sqrt(5), allowed("m <= p", 9, 9, 0))
    np.testing.assert_allclose(kern(Q=q, K=k, V=v).numpy(), want, rtol=1e-10, atol=1e-12)


def test_layouts_heads_shared_and_grouped():
    """Any rank order in inputs and output; K and V shared across heads (MQA); grouped heads (GQA)."""
    text = """input Q[p, h, e, b], K[m, e, b], V[b, f, m]
output O
S[h, p, b, m] = Q[p, h, e, b] * K[m, e, b] / sqrt(E)  where m <= p
GM[b, p, h] = S[h, p, b, m] :: max(m)
SN[m, b, p, h] = exp(S[h, p, b, m] - GM[b, p, h])
SD[p, b, h] = SN[m, b, p, h]
N[h, f, p, b] = SN[m, b, p, h] * V[b, f, m]
O[f, b, p, h] = N[h, f, p, b] / SD[p, b, h]
"""
    kern = compiled(text)
    assert uses_library(kern)
    g = torch.Generator().manual_seed(5)
    Q, K, V = (
        torch.randn(*s, generator=g, dtype=torch.float64) for s in ((7, 3, 4, 2), (6, 4, 2), (2, 5, 6))
    )
    q = Q.permute(3, 1, 0, 2).numpy()  # [b, h, p, e]
    k = K.permute(2, 0, 1).numpy()[:, None]  # [b, 1, m, e]
    v = V.permute(0, 2, 1).numpy()[:, None]  # [b, 1, m, f]
    want = reference(q, k, v, 0.5, allowed("m <= p", 7, 6, 0))  # [b, h, p, f]
    np.testing.assert_allclose(kern(Q=Q, K=K, V=V).numpy(), want.transpose(3, 0, 2, 1), rtol=1e-10)

    gqa = "input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]\noutput O\n" + NATURAL.format(where="").replace(
        "K[b, h, m, e]", "K[b, h // 2, m, e]"
    ).replace("V[b, h, m, f]", "V[b, h // 2, m, f]")
    kern = compiled(gqa)
    assert uses_library(kern)
    q, _, _ = qkv(h=4, p=6, m=6)
    _, k, v = qkv(h=2, p=6, m=6, seed=9)
    want = reference(
        q.numpy(),
        np.repeat(k.numpy(), 2, 1),
        np.repeat(v.numpy(), 2, 1),
        1 / math.sqrt(5),
        allowed("", 6, 6, 0),
    )
    np.testing.assert_allclose(kern(Q=q, K=k, V=v).numpy(), want, rtol=1e-10)
    # H = 5 query heads on G = 2 groups: head 4 reads group 2, past the end: absent, its rows 0 (the
    # generated cascade runs: the library's guard)
    q5, _, _ = qkv(h=5, p=6, m=6)
    got = kern(Q=q5, K=k, V=v).numpy()
    np.testing.assert_allclose(
        got[:, :4],
        reference(
            q5.numpy()[:, :4],
            np.repeat(k.numpy(), 2, 1),
            np.repeat(v.numpy(), 2, 1),
            1 / math.sqrt(5),
            allowed("", 6, 6, 0),
        ),
        rtol=1e-10,
    )
    assert not got[:, 4].any()


def test_gradients_against_the_generated_cascade_and_gradcheck():
    for where in ("", "m <= p", "p - W < m and m <= p", "m < p"):
        text = spec(where, "param W = 3\n")
        q, k, v = (x.requires_grad_() for x in qkv(b=1, h=2, p=7, m=8, e=3, f=2, seed=2))
        lib, gen = compiled(text, row_block=3), compiled(text, library=False)
        assert uses_library(lib)
        torch.autograd.gradcheck(lambda a, b, c, kern=lib: kern(Q=a, K=b, V=c), (q, k, v))
        w = torch.randn(1, 2, 7, 2, dtype=torch.float64)
        g1 = torch.autograd.grad((lib(Q=q, K=k, V=v) * w).sum(), (q, k, v))
        g2 = torch.autograd.grad((gen(Q=q, K=k, V=v) * w).sum(), (q, k, v))
        for a, b in zip(g1, g2):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)


def test_half_precision_inputs_give_outputs_in_their_dtype():
    q, k, v = qkv(p=33, m=33, seed=4)
    want = reference(q.numpy(), k.numpy(), v.numpy(), 1 / math.sqrt(5), allowed("m <= p", 33, 33, 0))
    kern = compiled(spec("m <= p"))
    for dtype, tol in ((torch.float32, 2e-6), (torch.float16, 3e-3), (torch.bfloat16, 2e-2)):
        got = kern(Q=q.to(dtype), K=k.to(dtype), V=v.to(dtype))
        assert got.dtype == dtype
        np.testing.assert_allclose(got.double().numpy(), want, atol=tol * 4, rtol=tol * 4)


def test_non_finite_inputs_run_the_cascade():
    """An infinity in K: SDPA would treat a row of -inf scores as masked; the spec gives NaN there. The
    cascade (program_any) runs instead, and the library changes nothing."""
    q, k, v = qkv(p=5, m=6)
    k[0, 0, :, 0] = -math.inf
    k2 = k.clone()
    text = spec("m <= p")
    a = compiled(text)(Q=q, K=k, V=v)
    b = compiled(text, library=False)(Q=q, K=k2, V=v)
    np.testing.assert_array_equal(a.isnan().numpy(), b.isnan().numpy())
    np.testing.assert_allclose(a.nan_to_num().numpy(), b.nan_to_num().numpy(), rtol=1e-12)


NO_MATCH = {
    "a bias read at a fixed index": NATURAL.replace(
        "* rsqrt(E){where}", "* rsqrt(E){where}\nS2[b, h, m, p] = S[b, h, m, p] + V[b, h, m, 0]"
    )
    .replace("S[b, h, m, p] :: max(m)", "S2[b, h, m, p] :: max(m)")
    .replace("exp(S[b, h, m, p]", "exp(S2[b, h, m, p]"),
    "softcapping": NATURAL.replace(
        "* rsqrt(E){where}", "* rsqrt(E){where}\nS2[b, h, m, p] = 5 * tanh(S[b, h, m, p] / 5)"
    )
    .replace("S[b, h, m, p] :: max(m)", "S2[b, h, m, p] :: max(m)")
    .replace("exp(S[b, h, m, p]", "exp(S2[b, h, m, p]"),
    "a scale per key": NATURAL.replace("rsqrt(E)", "rsqrt(E) * V[b, h, m, 0]"),
    "a shift of other values": NATURAL.replace("exp(S[b, h, m, p] - GM", "exp(2 * S[b, h, m, p] - GM"),
    "a denominator over other keys": NATURAL.replace(
        "SD[b, h, p]    = SN[b, h, m, p]", "SD[b, h, p]    = SN[b, h, m, p]  where m < 3"
    ),
    "a numerator times a function": NATURAL.replace(
        "A[b, h, m, p] * V[b, h, m, f]", "A[b, h, m, p] * exp(V[b, h, m, f])"
    ),
    "the max of other values": NATURAL.replace(
        "S[b, h, m, p] :: max(m)", "Q[b, h, p, 0] * K[b, h, m, 0] :: max(m)"
    ),
    "a filter on a batch rank": NATURAL.replace("{where}", "  where h < 2"),
    "a filter reading a tensor at the summed rank": NATURAL.replace("{where}", "  where D[e] < 1"),
    "a shifted read of the keys": NATURAL.replace("K[b, h, m, e]", "K[b, h, m + 1, e]"),
    "a softmax over the queries": NATURAL.replace(":: max(m)", ":: max(p)"),
}


@pytest.mark.parametrize("why", list(NO_MATCH))
def test_what_is_not_softmax_attention_is_not_matched(why):
    body = NO_MATCH[why]
    if why == "a softmax over the queries":  # the max over p, the sums over m: not a softmax at all
        body = body.replace("GM[b, h, p]    = S", "GM[b, h, m]    = S").replace(
            "GM[b, h, p])", "GM[b, h, m])"
        )
    head = HEAD.replace("V[b, h, m, f]", "V[b, h, m, f], D[e] : int") if "D[e]" in body else HEAD
    prog = einattn.parse(head + body.format(where=""))
    assert torch_library.match(prog) is None, why


def test_two_outputs_or_a_returned_denominator_are_not_matched():
    prog = einattn.parse(HEAD.replace("output O", "output O, SD") + NATURAL.format(where=""))
    assert torch_library.match(prog) is None


def test_library_false_and_the_source():
    text = spec("p - W < m and m <= p", "param W = 4\n")
    kern = compiled(text)
    src = kern.source
    assert "'library': True" in src and "PROGRAMS = (program_library, " in src
    assert "scaled_dot_product_attention" in src and "# GM[b, h, p] = S[b, h, m, p] :: max(m)" in src
    assert not uses_library(compiled(text, library=False))
    with pytest.raises(einattn.EinError, match="library"):
        compiled(text, library="yes")


def test_standalone_module_runs_the_library(tmp_path):
    import importlib.util

    text = spec("p - W < m and m <= p", "param W = 4\n")
    src = einattn.lowering.torch_backend.standalone_source(einattn.parse(text))
    path = tmp_path / "attn.py"
    path.write_text(src)
    module_spec = importlib.util.spec_from_file_location("attn_standalone", path)
    mod = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(mod)
    assert mod.PROGRAMS[0].__name__ == "program_library"
    q, k, v = qkv(p=10, m=10)
    want = reference(
        q.numpy(), k.numpy(), v.numpy(), 1 / math.sqrt(5), allowed("p - W < m and m <= p", 10, 10, 4)
    )
    np.testing.assert_allclose(mod.forward(q, k, v).numpy(), want, rtol=1e-10)


def test_torch_compile_fullgraph():
    kern = compiled(spec("p - W < m and m <= p", "param W = 4\n"), row_block=4)
    q, k, v = qkv(p=12, m=12, dtype=torch.float32)
    fn = torch.compile(lambda a, b, c: kern(Q=a, K=b, V=c), fullgraph=True, backend="aot_eager")
    want = reference(
        q.double().numpy(),
        k.double().numpy(),
        v.double().numpy(),
        1 / math.sqrt(5),
        allowed("p - W < m and m <= p", 12, 12, 4),
    )
    np.testing.assert_allclose(fn(q, k, v).double().numpy(), want, rtol=1e-5, atol=1e-6)


@given(
    where=st.sampled_from(list(FILTERS)),
    P=st.integers(1, 19),
    M=st.integers(1, 19),
    W=st.integers(0, 6),
    row_block=st.sampled_from(["auto", 1, 2, 5, 8]),
    seed=st.integers(0, 2**16),
)
def test_property_library_equals_numpy(where, P, M, W, row_block, seed):
    kern = _cached(where, W, row_block)
    q, k, v = qkv(b=1, h=2, p=P, m=M, e=3, f=2, seed=seed)
    want = reference(q.numpy(), k.numpy(), v.numpy(), 1 / math.sqrt(3), allowed(where, P, M, W))
    np.testing.assert_allclose(kern(Q=q, K=k, V=v).numpy(), want, rtol=1e-9, atol=1e-12)


_KERNELS: dict = {}


def _cached(where, W, row_block):
    key = (where, W, row_block)
    if key not in _KERNELS:
        _KERNELS[key] = compiled(spec(where, f"param W = {W}\n"), row_block=row_block)
    return _KERNELS[key]


@pytest.mark.parametrize(
    "k_head,v_head", [("h // 2", "h"), ("", "h // 2"), ("h // 2", "h // 2"), ("", ""), ("h // 3", "h // 3")]
)
def test_keys_and_values_grouped_differently(k_head, v_head):
    """K and V each read per head, per group of heads (``h // R``), or once for every head."""
    H, R = 6, int((k_head or v_head or "h // 2")[-1])

    def decl(name, head, last):
        return f"{name}[b, {'g, ' if '//' in head else 'h, ' if head else ''}m, {last}]"

    def read(name, head, last):
        return f"{name}[b, {head + ', ' if head else ''}m, {last}]"

    text = (
        f"input Q[b, h, p, e], {decl('K', k_head, 'e')}, {decl('V', v_head, 'f')}\noutput O\n"
        + NATURAL.format(where="")
        .replace("K[b, h, m, e]", read("K", k_head, "e"))
        .replace("V[b, h, m, f]", read("V", v_head, "f"))
    )
    kern = compiled(text)
    assert uses_library(kern)
    g = torch.Generator().manual_seed(3)

    def make(head, last):
        heads = H // R if "//" in head else H if head else None
        shape = (2, heads, 7, last) if heads else (2, 7, last)
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q = torch.randn(2, H, 5, 4, generator=g, dtype=torch.float64)
    k, v = make(k_head, 4), make(v_head, 3)

    def per_head(x, head):
        x = x.numpy()
        return np.repeat(x, R, 1) if "//" in head else x if head else np.repeat(x[:, None], H, 1)

    want = reference(q.numpy(), per_head(k, k_head), per_head(v, v_head), 0.5, allowed("", 5, 7, 0))
    np.testing.assert_allclose(kern(Q=q, K=k, V=v).numpy(), want, rtol=1e-10)


def test_scores_that_could_overflow_run_the_cascade():
    """Finite inputs whose scores overflow to -inf on a whole row: the spec gives NaN there (exp(-inf -
    -inf)), SDPA would give 0 (a masked row). The library checks the bound |scale| E max|Q| max|K| first."""
    q, k, v = qkv(b=1, h=1, p=3, m=4, e=2, f=2)
    q[0, 0, 1] = 1e200
    k[:] = -1e200
    text = spec("m <= p")
    a = compiled(text)(Q=q, K=k, V=v)
    b = einattn.compile(einattn.parse(text), backend="numpy")(Q=q.numpy(), K=k.numpy(), V=v.numpy())
    np.testing.assert_array_equal(np.isnan(a.numpy()), np.isnan(b))
    assert np.isnan(b).any()
    np.testing.assert_allclose(np.nan_to_num(a.numpy()), np.nan_to_num(b), rtol=1e-12)


@pytest.mark.parametrize("k_head", ["h", "h // 2", ""])
def test_a_query_shared_by_every_head(k_head):
    """Q without the head rank: every head's output uses the same queries against its own keys."""
    k_decl = {"h": "K[b, h, m, e]", "h // 2": "K[b, g, m, e]", "": "K[b, m, e]"}[k_head]
    k_read = f"K[b, {k_head + ', ' if k_head else ''}m, e]"
    text = f"input Q[b, p, e], {k_decl}, V[b, h, m, f]\noutput O\n" + NATURAL.format(where="").replace(
        "Q[b, h, p, e]", "Q[b, p, e]"
    ).replace("K[b, h, m, e]", k_read)
    kern = compiled(text)
    assert uses_library(kern)
    g = torch.Generator().manual_seed(11)
    q = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    k = torch.randn(
        *{"h": (2, 4, 6, 4), "h // 2": (2, 2, 6, 4), "": (2, 6, 4)}[k_head], generator=g, dtype=torch.float64
    )
    v = torch.randn(2, 4, 6, 3, generator=g, dtype=torch.float64)
    kk = {"h": k.numpy(), "h // 2": np.repeat(k.numpy(), 2, 1), "": np.repeat(k.numpy()[:, None], 4, 1)}[
        k_head
    ]
    want = reference(np.repeat(q.numpy()[:, None], 4, 1), kk, v.numpy(), 0.5, allowed("", 5, 6, 0))
    np.testing.assert_allclose(kern(Q=q, K=k, V=v).numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("where", ["", "m <= p", "p - W < m and m <= p"])
def test_double_backward_and_retained_graphs(where):
    """The CPU FlashAttention kernel's backward has no derivative: a graph of the gradient recomputes with
    the math kernel (gradgradcheck); a retained graph can be differentiated twice, giving the same."""
    kern = compiled(spec(where, "param W = 3\n"), row_block=3)
    leaves = tuple(x.requires_grad_() for x in qkv(b=1, h=1, p=5, m=5, e=3, f=2, seed=7))
    assert torch.autograd.gradgradcheck(lambda *a: kern(*a), leaves, atol=1e-6)
    out = kern(*leaves)
    w = torch.randn_like(out)
    first = torch.autograd.grad((out * w).sum(), leaves, retain_graph=True)
    second = torch.autograd.grad((out * w).sum(), leaves)
    gen = compiled(spec(where, "param W = 3\n"), library=False)
    want = torch.autograd.grad((gen(*leaves) * w).sum(), leaves)
    for a, b, c in zip(first, second, want):
        assert torch.equal(a, b)
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-9, atol=1e-12)


def test_a_kernel_pickles_and_loads_in_another_process():
    """The generated code lives in a module of this process only: a pickled kernel compiles again when
    loaded (numpy integers are accepted as option values)."""
    import pickle
    import subprocess
    import sys

    kern = compiled(spec("p - W < m and m <= p", "param W = 3\n"), row_block=np.int64(4), tile=np.int64(8))
    code = (
        "import pickle, sys, torch\n"
        "k = pickle.loads(sys.stdin.buffer.read())\n"
        "g = torch.Generator().manual_seed(0)\n"
        "q, kk, v = (torch.randn(1, 2, 9, 3, generator=g, dtype=torch.float64) for _ in range(3))\n"
        "print(repr(float(k(q, kk, v).sum())))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(kern), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9, 3, generator=g, dtype=torch.float64) for _ in range(3))
    assert float(done.stdout) == float(kern(q, k, v).sum())


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_value_past_the_filter_or_in_the_queries_is_the_specs(value):
    """The library program scans Q and K itself (their range), not V: an infinity or NaN in V at a key the
    filter removes makes SDPA's output NaN (0 * inf), and the runtime computes the call again with the
    cascade for any inputs, which skips the key as the spec does. One in Q runs the cascade at once."""
    text = spec("m <= p")
    q, k, v = qkv(p=5, m=5)
    v[0, 0, 4, 1] = value  # key 4: seen by query 4 only
    got = compiled(text)(Q=q, K=k, V=v)
    want = einattn.compile(einattn.parse(text), backend="numpy")(Q=q.numpy(), K=k.numpy(), V=v.numpy())
    np.testing.assert_array_equal(np.isfinite(got.numpy()), np.isfinite(want))
    assert np.isfinite(want[0, 0, :4]).all()
    ok = np.isfinite(want)
    np.testing.assert_allclose(got.numpy()[ok], want[ok], rtol=1e-12)
    q[0, 1, 2, 0] = value
    got = compiled(text)(Q=q, K=k, V=v)
    want = einattn.compile(einattn.parse(text), backend="numpy")(Q=q.numpy(), K=k.numpy(), V=v.numpy())
    np.testing.assert_array_equal(np.isnan(got.numpy()), np.isnan(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got.numpy()[ok], want[ok], rtol=1e-12)


@pytest.mark.parametrize("value", [-1.0, 0.0])  # log(-1) = NaN; 1 / log(1 + 0) = inf
@pytest.mark.parametrize("library", [True, False])
def test_a_scale_that_is_not_finite_is_the_specs(value, library):
    """A scale of NaN or inf: the spec's scores are NaN or +-inf, and so is its output. The generated
    cascade's score matmul took the scale as the CPU matmul's alpha, and baddbmm with a transposed operand
    and alpha = NaN returns finite values; such a scale now scales an operand (torch_runtime._gemm_alpha)."""
    factor = "* log(T)" if value < 0 else "/ log(1 + T)"
    text = spec(params=f"param T = {value}\n", body=NATURAL.replace("* rsqrt(E)", factor))
    q, k, v = qkv(b=1, h=1, p=7, m=9, e=3, f=2)
    got = compiled(text, library=library)(Q=q, K=k, V=v).numpy()
    want = einattn.compile(einattn.parse(text), backend="numpy")(Q=q.numpy(), K=k.numpy(), V=v.numpy())
    assert not np.isfinite(want).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-12)
