"""Properties of the NumPy reference itself, on generated programs (einattn.testing).

Backends are compared with this reference elsewhere; here the reference is checked against itself in ways
that cannot agree by accident: the 1-pass streaming form of a softmax variant equals its natural 3-pass form
for any tile size, and every generated program runs without error.
"""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import einattn
from einattn.testing import (
    attention_specs,
    cascades,
    compare,
    inputs_for,
    sizes_for,
    streaming_pairs,
)


@given(st.data())
def test_streaming_form_equals_natural_form(data):
    natural, streaming = data.draw(streaming_pairs())
    sizes = data.draw(sizes_for(natural.program, 1, 7))
    x = data.draw(inputs_for(natural.program, sizes, kinds=("normal", "large", "ties")))
    want = einattn.compile(natural.program)(**x)
    got = einattn.compile(streaming.program)(**x)
    assert compare(got, want, 1e-12) <= 1e-12, (natural.text, streaming.text)


@given(st.data())
def test_generated_attention_programs_run(data):
    spec = data.draw(attention_specs())
    sizes = data.draw(sizes_for(spec.program, 1, 6))
    x = data.draw(inputs_for(spec.program, sizes))
    outs = einattn.compile(spec.program)(**x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    assert len(outs) == len(spec.program.outputs)
    assert outs[0].shape == tuple(sizes[k] for k in ("B", "H", "P", "F"))


@given(st.data())
def test_generated_cascades_run(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = data.draw(cascades())
    sizes = data.draw(sizes_for(spec.program, 1, 5))
    x = data.draw(inputs_for(spec.program, sizes))
    outs = einattn.compile(spec.program)(**x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    assert all(isinstance(o, np.ndarray) for o in outs)


def test_float32_reference_tracks_float64():
    spec = (
        "input Q[p, e], K[m, e]\noutput A\nS[m, p] = Q[p, e] * K[m, e]\nG[p] = S[m, p] :: max(m)\n"
        "N[m, p] = exp(S[m, p] - G[p])\nD[p] = N[m, p]\nA[m, p] = N[m, p] / D[p]\n"
    )
    rng = np.random.default_rng(3)
    q, k = rng.standard_normal((4, 8)), rng.standard_normal((6, 8))
    a64 = einattn.compile(spec)(Q=q, K=k)
    a32 = einattn.compile(spec, dtype="float32")(Q=q, K=k)
    assert a32.dtype == np.float32 and compare(a32, a64, 1e-5) <= 1e-5
