"""einattn.stabilizers: which maxes no output depends on, so that a backend may record no gradient through
them; and that doing so changes no gradient (float64, against the gradients with the max differentiated)."""

from __future__ import annotations

import doctest
import warnings

import pytest
import torch
from conftest import EXAMPLES
from hypothesis import given
from hypothesis import strategies as st
from torch_helpers import inputs, sizes, to_torch

import einattn
from einattn import stabilizers as stab_module
from einattn.rewrite.exact import exact_copies
from einattn.stabilizers import stabilizers
from einattn.testing import attention_specs, cascades, inputs_for, sizes_for

HEAD = "input Q[p, e], K[m, e], V[m, f]\n"
SOFTMAX = (
    "S[m, p]  = Q[p, e] * K[m, e]\n"
    "G[p]     = S[m, p] :: max(m)\n"
    "N[m, p]  = exp(S[m, p] - G[p])\n"
    "D[p]     = N[m, p]\n"
    "O[p, f]  = N[m, p] * V[m, f] / D[p]\n"
)


def parse(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return einattn.parse(text)


def test_the_module_doc():
    assert doctest.testmod(stab_module, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


@pytest.mark.parametrize(
    "name, stable",
    [
        ("attention_3pass", {"GM"}),
        ("causal_1pass", {"RM"}),  # a running max: the states rescale with it (induction)
        ("lse", {"GM"}),  # L = GM + log(SD): the shift cancels in the log too
        ("variants/05_softmax_sink", {"GM"}),  # max(MK, sink): a max that is not a reduction
        ("linear", set()),
        ("sigmoid", set()),
    ],
)
def test_examples(name, stable):
    prog = parse((EXAMPLES / f"{name}.ein").read_text())
    assert stabilizers(prog) == stable


def test_rewritten_cascades_keep_their_running_max_a_stabilizer():
    for name in ("causal", "sliding_window", "alibi", "softcap", "gqa"):
        prog = einattn.compile(EXAMPLES / f"{name}.ein", backend="torch").program
        assert stabilizers(prog) == {"RM"}, name


@pytest.mark.parametrize(
    "tail, why",
    [
        ("output O, G\n", "an output is the max itself"),
        ("output X\nX[p, f] = O[p, f] + G[p]\n", "an output adds the max"),
        ("output X\nX[p] = D[p]\n", "the denominator alone scales with exp(-G)"),
        ("output X\nX[p, f] = O[p, f] * exp(G[p])\n", "a factor exp(G) is left"),
        ("output X\nT = G[p]\nX[p, f] = O[p, f] + T\n", "a sum over the ranks the max varies along"),
        ("output X\nX[p, f] = O[p, f] * sigmoid(G[p])\n", "another function of the max"),
        ("output X\nX[p, f] = O[p, f] * exp(2 * G[p] - G[p])\n", "a scaled max: a factor exp(G) is left"),
    ],
)
def test_what_depends_on_the_max_is_refused(tail, why):
    prog = parse(HEAD + tail + SOFTMAX + ("output O\n" if "output" not in tail else ""))
    assert stabilizers(prog) == frozenset(), why
    kern = einattn.compile(prog, backend="torch")
    # its gradient is computed: nothing is detached but the max's exact copy that only marks the rows
    # whose max is not finite (`XRG - XRG`, einattn.rewrite.exact), whose gradient is 0 anyway
    # (the generated code assigns a state's next value to `n_<tensor>`)
    detached = {line.split("=")[0].strip()[2:] for line in kern.source.splitlines() if "= _stable(" in line}
    assert detached <= set(exact_copies(kern.program)), (why, detached)


def test_what_does_not_depend_on_the_max_is_accepted():
    prog = parse(HEAD + "output O, L\n" + SOFTMAX + "L[p] = G[p] + log(D[p])\n")
    assert stabilizers(prog) == {"G"}
    prog = parse(HEAD + "output O\n" + SOFTMAX.replace("exp(S[m, p] - G[p])", "exp(-(G[p] - S[m, p]))"))
    assert stabilizers(prog) == {"G"}


SPECS = [
    ("attention_3pass", {}),
    ("causal", {}),
    ("lse", {}),
    ("attention_1pass", {"M0": 2}),
    ("causal_1pass", {"M0": 2}),
    ("variants/05_softmax_sink", {}),
    ("variants/08_agent", {}),
    ("variants/09_flowformer", {}),
    ("variants/13_aaren", {}),
    ("variants/20_softcap_alibi_lse", {}),
]


def assert_same_gradients(kern, prog, x):
    """The gradients of every float input with the kernel's stabilizers detached (as generated) equal those
    with them differentiated (`_stable` made the identity), in float64."""
    glob = kern.function.__globals__
    saved = glob["_stable"]
    grads = []
    for keep in (False, True):
        if keep:
            glob["_stable"] = lambda v, floor=False: v
        try:
            xt = to_torch(prog, x, requires_grad=True)
            outs = kern(**xt)
            outs = outs if isinstance(outs, tuple) else (outs,)
            weights = torch.Generator().manual_seed(2)
            total = sum((o * torch.randn(o.shape, generator=weights, dtype=o.dtype)).sum() for o in outs)
            floats = [v for v in xt.values() if v.is_floating_point()]
            if not (isinstance(total, torch.Tensor) and total.requires_grad):
                return  # no output depends on an input
            grads.append(torch.autograd.grad(total, floats, allow_unused=True))
        finally:
            glob["_stable"] = saved
    for a, b in zip(*grads):
        if a is None or b is None:  # an input that reaches the outputs only through stabilizers: its
            other = b if a is None else a  # gradient is zero, and detached it is None
            assert other is None or not other.any()
            continue
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name, params", SPECS, ids=[s[0] for s in SPECS])
def test_no_gradient_through_a_stabilizer_changes_no_gradient(name, params):
    """The torch backend computes stabilizers with `_stable` (detach): the gradients of every input equal
    those with the max differentiated (autograd's cancelling terms), in float64."""
    prog = parse((EXAMPLES / f"{name}.ein").read_text()).with_params(params)
    kern = einattn.compile(prog, backend="torch", tile=2)
    assert "_stable(" in kern.source
    assert_same_gradients(kern, prog, inputs(prog, sizes(prog, {"p": 5, "m": 6}), seed=1))


@given(st.data())
def test_random_attention_variants_keep_their_gradients(data):
    spec = data.draw(st.one_of(attention_specs(), attention_specs(streaming=True)))
    prog = spec.program
    kern = einattn.compile(prog, backend="torch", tile=data.draw(st.integers(1, 4)))
    x = data.draw(inputs_for(prog, data.draw(sizes_for(prog, 1, 6)), kinds=("normal",)))
    assert_same_gradients(kern, prog, x)


@given(st.data())
def test_random_cascades_keep_their_gradients(data):
    spec = data.draw(cascades())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = spec.program
        kern = einattn.compile(prog, backend="torch")
        x = data.draw(inputs_for(prog, data.draw(sizes_for(prog, 1, 6)), kinds=("normal",)))
        assert_same_gradients(kern, prog, x)


def test_the_reference_floors_the_rewrite_s_running_max_as_the_backends_do():
    """A -inf bias over a whole first tile: the spec is finite; the rewritten 1-pass form, as its IR says,
    computes exp(-inf - -inf). With passes="auto" the NumPy reference stores the running max at least -1e30,
    as torch and triton do, and equals the spec; as written it stays IEEE (NaN)."""
    import numpy as np

    from einattn.rewrite import rewrite

    spec = """input  Q[p, e], K[m, e], V[m, f], B[m, p]
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E) + B[m, p]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((9, 4)), rng.standard_normal((9, 2))
    b = np.zeros((9, 3))
    b[:5] = -np.inf  # keys 0-4: the first tile of 4 and one more
    s = q @ k.T / 2.0 + b.T
    w = np.exp(s - s.max(1, keepdims=True))
    want = (w / w.sum(1, keepdims=True)) @ v
    got = einattn.compile(spec, backend="numpy", passes="auto", tile=4)(Q=q, K=k, V=v, B=b)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rewritten, _ = rewrite(einattn.parse(spec), passes=1, rank="m", tile=4)
    as_written = einattn.compile(rewritten, backend="numpy")(Q=q, K=k, V=v, B=b)
    assert np.isnan(as_written).all()
