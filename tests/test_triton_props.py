"""Triton (under the interpreter) equals the NumPy reference on random programs: attention variants composed
by einattn.testing and general cascades, at tiny sizes, through passes="auto" (the rewrite) and as written."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import einattn
from einattn.testing import assert_equivalent, attention_specs, cascades, inputs_for, sizes_for

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy: exp(-inf) etc.


@settings(max_examples=15)
@given(st.data(), st.sampled_from(["auto", "as-written"]))
def test_random_attention_variants(data, passes):
    spec = data.draw(attention_specs())
    sizes = data.draw(sizes_for(spec.program, 1, 4))
    x = data.draw(inputs_for(spec.program, sizes, kinds=("normal", "ties")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_equivalent(spec, backends=("triton",), inputs=x, passes=passes, tile=2)


@settings(max_examples=15)
@given(st.data())
def test_random_cascades(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = data.draw(cascades())
        sizes = data.draw(sizes_for(spec.program, 1, 4))
        x = data.draw(inputs_for(spec.program, sizes, kinds=("normal", "ties")))
        assert_equivalent(spec, backends=("triton",), inputs=x)


@settings(max_examples=12)
@given(st.data())
def test_random_attention_variants_with_whole_and_masked_tiles(data):
    """Tiles of 16 keys (no padding lanes) over 17-48 queries and keys: programs meet whole tiles, then
    masked ones knowing every state present, where the filtered scores hold -inf and fill values replace
    the selects (lowering/triton_fused.py, body_steady and body_tail). Only the variants the fused kernel
    takes: the general path's linear attention over 48 positions with ALiBi is float32's own underflow
    (`elu(x) + 1` is 0 for x below -17, where float64 keeps exp(x); 0 / 0), not the kernel's."""
    spec = data.draw(attention_specs())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assume(einattn.compile(spec.program, backend="triton", passes="auto", tile=16).plan.path == "fused")
    sizes = data.draw(sizes_for(spec.program, 1, 3))
    for r in ("P", "M"):
        if r in sizes:
            sizes[r] = data.draw(st.integers(17, 48), label=r)
    x = data.draw(inputs_for(spec.program, sizes, kinds=("normal", "ties")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_equivalent(spec, backends=("triton",), inputs=x, passes="auto", tile=16)
