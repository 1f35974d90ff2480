"""Triton (under the interpreter) equals the NumPy reference on random programs: attention variants composed
by einattn.testing and general cascades, at tiny sizes, through passes="auto" (the rewrite) and as written."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch
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
    takes, and only inputs where float32 arithmetic itself (the torch backend's) meets the tolerance against
    the float64 reference: linear attention over 48 positions with ALiBi is float32's own cancellation
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
        # (the torch backend computes in float32 for float32 inputs, the NumPy reference in float64)
        wide = einattn.compile(spec.program, backend="numpy")(**x)
        x32 = {
            n: torch.as_tensor(a, dtype=torch.float32 if a.dtype.kind == "f" else None) for n, a in x.items()
        }
        narrow = einattn.compile(spec.program, backend="torch", library=False)(**x32)
        assume(_close(narrow, wide))
        assert_equivalent(spec, backends=("triton",), inputs=x, passes="auto", tile=16)


def _close(narrow, wide, tol: float = 1e-4) -> bool:
    """Whether float32 arithmetic itself (``narrow``, the torch backend's) is within the tolerance of the
    float64 reference (``wide``) on every output, relative to max(1, |reference|), NaN where it is NaN."""
    pairs = zip(*(o if isinstance(o, tuple) else (o,) for o in (narrow, wide)))
    for a, b in pairs:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return False
        ok = np.isnan(b) | (a == b) | (np.abs(a - b) <= tol * np.maximum(1.0, np.abs(b)))
        if not ok.all():
            return False
    return True
