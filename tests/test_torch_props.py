"""Property tests: random programs, random shapes (each size 1..9, tiles that do not divide), random data;
the torch backend equals the NumPy reference in float64."""

from __future__ import annotations

import warnings

from conftest import EXAMPLES
from hypothesis import given
from hypothesis import strategies as st
from torch_helpers import check_against_numpy

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
    check_against_numpy(prog, x)


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
        check_against_numpy(prog, x)


@given(
    st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.integers(1, 5), st.integers(1, 9), st.data()
)
def test_causal_1pass_random_shapes(p, m, e, f, m0, data):
    prog = einattn.load(EXAMPLES / "causal_1pass.ein").with_params({"M0": m0})
    b, h = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    shapes = {"b": b, "h": h, "p": p, "m": m, "e": e, "f": f}
    x = data.draw(inputs_for(prog, {r.upper(): n for r, n in shapes.items()}))
    check_against_numpy(prog, x, row_block=data.draw(st.sampled_from([0, 1, 2, 4, 512])))
