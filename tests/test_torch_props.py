"""Property tests: random programs, random shapes (each size 1..9, tiles that do not divide), random data;
the torch backend equals the NumPy reference in float64."""

from __future__ import annotations

import warnings

import torch
from conftest import EXAMPLES
from hypothesis import given
from hypothesis import strategies as st
from torch_helpers import check_against_numpy, to_torch

import einattn
from einattn.testing import DATA_KINDS, attention_specs, cascades, inputs_for, sizes_for


@given(st.data())
def test_attention_variants(data):
    spec = data.draw(attention_specs())
    prog = spec.program
    # logits near +-1e3 make linear attention's denominator elu(s) + 1 cancel to ~1e-16, where a 1-ulp
    # difference of expm1 between libms decides between 0 (NaN output) and a tiny value: not a semantics test
    kinds = ("normal", "ties", "equal_rows") if "linear" in spec.parts else DATA_KINDS
    x = data.draw(inputs_for(prog, data.draw(sizes_for(prog, 1, 9)), kinds=kinds))
    # a tile below a streamed rank's size runs the rewrite's loop; at or above it, the spec as written
    check_against_numpy(prog, x, tile=data.draw(st.integers(1, 9)))


@given(st.data())
def test_streaming_attention_with_random_tiles(data):
    spec = data.draw(attention_specs(streaming=True, normalisers=("softmax", "deferred")))
    prog = spec.program
    x = data.draw(inputs_for(prog, data.draw(sizes_for(prog, 1, 9)), kinds=("normal", "large", "ties")))
    check_against_numpy(prog, x)


@given(st.data())
def test_general_cascades(data):
    spec = data.draw(cascades())
    prog = spec.program
    x = data.draw(inputs_for(prog, data.draw(sizes_for(prog, 1, 9)), kinds=("normal", "ties")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_against_numpy(prog, x, tile=data.draw(st.integers(1, 9)))


@given(
    st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.integers(1, 5), st.integers(1, 9), st.data()
)
def test_causal_1pass_random_shapes(p, m, e, f, m0, data):
    prog = einattn.load(EXAMPLES / "causal_1pass.ein").with_params({"M0": m0})
    b, h = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    shapes = {"b": b, "h": h, "p": p, "m": m, "e": e, "f": f}
    x = data.draw(inputs_for(prog, {r.upper(): n for r, n in shapes.items()}))
    check_against_numpy(prog, x, row_block=data.draw(st.sampled_from([0, 1, 2, 4, 512])))


# Terms of `(X + (Y ?? 0)) ?? Y`, the sum of the present terms that the generator computes as one sum where X
# holds 0 at its absent points (torch_codegen.sum_of_present): X and Y built every way a value can be absent
# (a filter, a masked sum or max, an exponential of a masked value, a read past the end, a gather through an
# int tensor, `??`), present everywhere, or nowhere.
_TERMS = {
    "filtered_product": "A[p, m] * B[m, f]  where m <= p - 1",
    "masked_sum": "C[p, m] * B[m, f]",
    "masked_max": "C[p, m] + B[m, f] :: max(m)",
    "exp_of_masked": "exp(C[p, m] - 1) * B[m, f]",
    "shifted_read": "D[p + 2, f]",
    "gather": "D[I[p], f] * 2",
    "default": "(D[p + 1, f] ?? 1) * A[p, 0]",
    "filtered_elementwise": "D[p, f] + 1  where p % 3 != 1",
    "everywhere": "D[p, f] * D[p, f]",
    "nowhere": "D[p, f]  where p < 0",
}
_PRELUDE = """input A[p, m], B[m, f], D[p, f], I[p] : int
output O, Q
C[p, m] = A[p, m]  where m < p
"""


@given(
    st.sampled_from(sorted(_TERMS)),
    st.sampled_from(sorted(_TERMS)),
    st.booleans(),
    st.integers(1, 6),
    st.data(),
)
def test_sums_of_present_terms_equal_numpy(x, y, swap, n, data):
    """Forward and backward, with and without blocks of rows: torch equals NumPy on every combination."""
    sum_ = "Y[p, f] + (X[p, f] ?? 0)" if swap else "X[p, f] + (Y[p, f] ?? 0)"
    text = (
        _PRELUDE
        + f"X[p, f] = {_TERMS[x]}\nY[p, f] = {_TERMS[y]}\n"
        + f"O[p, f] = {sum_} ?? {'X' if swap else 'Y'}[p, f]\n"
        + "Q[p, f] = O[p, f] * 3\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = einattn.parse(text, "psum.ein")
    shapes = {"P": n, "M": data.draw(st.integers(1, 5)), "F": data.draw(st.integers(1, 3))}
    kind = data.draw(st.sampled_from(["normal", "ties"]))
    xs = data.draw(inputs_for(prog, shapes, kinds=(kind,)))
    xs["I"] = (abs(xs["I"]) % (shapes["P"] + 2)).astype(xs["I"].dtype)  # some out of range: absent
    check_against_numpy(prog, xs, row_block=data.draw(st.sampled_from([0, 1, 512])))
    if kind == "ties":
        return  # (a max over ties has no derivative for gradcheck to compare with)
    xt = to_torch(prog, xs, torch.float64, requires_grad=True)
    floats = [xt[k] for k in ("A", "B", "D")]
    torch.autograd.gradcheck(
        lambda a, b, d: einattn.compile(prog, backend="torch")(A=a, B=b, D=d, I=xt["I"])[1], floats
    )
