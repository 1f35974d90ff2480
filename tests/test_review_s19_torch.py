"""Session 19 review of the torch backend and ``einattn.nn.EinAttention``, from the outside, as a user would
call them.

Compared with the NumPy reference, SDPA and hand-written formulas (no difference found): padding masks
``m < klen[b]`` (with fully masked batches), left padding, bottom-right causal cross attention, document
masks through ``: int`` inputs, ALiBi, softcap, sigmoid, sinks, GQA (with too few K/V heads), shared K/V,
decoding (P = 1), P != M, sliding windows with empty rows, linear attention, paged KV caches through
gathers (repeated and out-of-range pages, int16/int32/uint8 tables), runtime ``: int`` windows and shifts,
in float64/float32/float16/bfloat16, at logits of 1e4, strided/expanded/transposed/aliased inputs, size-1
ranks, over ``tile``/``row_block``/``skip_tiles``/``recompute``/``passes``/``library``, across calls of one
kernel with changing sizes, dtypes, grad modes and threads (outputs never clobbered, inputs never written);
``gradcheck`` and ``gradgradcheck`` in float64 on every spec of the docs and examples, on stabilizers that
do not cancel (``SD + 1``, unnormalised sums, ``exp(-GM)`` terms) and on hand-written 1-pass cascades with
non-standard initial states; the meta device; ``torch.compile(fullgraph=True)``; standalone modules; the
call-time errors. The tests below are the bugs found (each marked ``# BUG:``, failing on the code as
reviewed) and the checks around them.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import einattn
from einattn.nn import EinAttention

EX = Path(__file__).resolve().parent.parent / "examples"
EX_ALIBI = EX / "alibi.ein"

pytestmark = [
    pytest.mark.filterwarnings("ignore::einattn.EinWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def compile_torch(spec, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(spec, backend="torch", **kw)


def scaled(name: str) -> str:
    """``Y[i] = X[i, j] * <name>[j]``: a spec whose weight input is called ``name``."""
    return f"input X[i, j], {name}[j]\noutput Y\nY[i] = X[i, j] * {name}[j]\n"


# ---- einattn.nn.EinAttention's weights -----------------------------------------------------------------

# Input names that are attributes of nn.ParameterDict / nn.Module (methods, the `training` flag, the
# containers' own dictionaries).
CLASHING = [
    "values",
    "keys",
    "items",
    "type",
    "to",
    "half",
    "train",
    "forward",
    "training",
    "_keys",
    "_modules",
]


# BUG: the weights were an `nn.ParameterDict`, which stores each entry with `setattr`: a weight whose input
# is named after one of its attributes (`values`, `keys`, `type`, `to`, `train`...) raised a raw KeyError
# ("attribute 'values' already exists") at construction; one named `training` replaced the container's
# training flag, so `module.eval()` failed with a TypeError; `_keys` broke the dictionary. The weights now
# live in `_parameters` only (`einattn.nn._Weights`); state-dict keys are unchanged.
@pytest.mark.parametrize("name", CLASHING)
def test_a_weight_may_be_named_after_an_attribute_of_the_container(name):
    torch.manual_seed(0)
    w = torch.randn(4)
    x = torch.randn(3, 4)
    module = EinAttention(scaled(name), weights={name: w.clone()})
    y = module(x)
    torch.testing.assert_close(y, x @ w)
    y.sum().backward()
    torch.testing.assert_close(module.weights[name].grad, x.sum(0))
    module.eval()
    assert module.training is False and module.weights.training is False
    module.train()
    assert module.weights.training is True
    assert [n for n, _ in module.named_parameters()] == [f"weights.{name}"]
    state = module.state_dict()
    assert list(state) == [f"weights.{name}"]
    for assign in (False, True):
        other = EinAttention(scaled(name), weights={name: torch.zeros(4)})
        other.load_state_dict(state, assign=assign)
        torch.testing.assert_close(other(x), x @ w)
        other.eval()  # (assign=True sets the parameter by setattr: the container's attributes stay)
    module.double()
    assert module.weights[name].dtype == torch.float64
    torch.testing.assert_close(module(x.double()), x.double() @ w.double())
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    torch.testing.assert_close(copy.deepcopy(loaded)(x.double()), x.double() @ w.double())
    swapped = torch.func.functional_call(
        module, {f"weights.{name}": torch.ones(4, dtype=torch.float64)}, (x.double(),)
    )
    torch.testing.assert_close(swapped, x.double().sum(1))


def test_weights_keep_the_parameter_dict_interface():
    torch.manual_seed(0)
    slope = nn.Parameter(torch.rand(2), requires_grad=False)
    module = EinAttention(str(EX_ALIBI), weights={"slope": slope})
    assert module.weights["slope"] is slope and "slope" in module.weights and len(module.weights) == 1
    assert list(module.weights.keys()) == ["slope"] and module.weights.slope is slope
    assert dict(module.weights.items()) == {"slope": slope}
    # a ParameterDict is accepted as the weights too
    again = EinAttention(str(EX_ALIBI), weights=nn.ParameterDict({"slope": torch.ones(2)}))
    torch.testing.assert_close(again.weights["slope"].detach(), torch.ones(2))


# BUG: `weights` given as something other than a mapping (a list of pairs) raised a raw AttributeError
# ("'list' object has no attribute 'items'"); it is an EinError now.
def test_weights_that_are_not_a_mapping_are_an_ein_error():
    with pytest.raises(einattn.EinError, match="weights must map input names"):
        EinAttention(str(EX_ALIBI), weights=[("slope", torch.ones(2))])


# ---- call-time inputs ------------------------------------------------------------------------------------


# BUG: a NumPy scalar was accepted for a scalar input only as `np.float64` (a subclass of Python's float):
# `np.float32(0.5)`, what float32 NumPy arithmetic returns, was refused with "input `bias` must be a torch
# tensor, got float32", and `np.int64(3)` for an `: int` scalar with "... got int64". A NumPy real scalar is
# now the Python number it holds (torch_runtime._plain_number), in kernels and standalone modules.
@pytest.mark.parametrize("number", [np.float32(0.5), np.float16(0.5), np.int64(1), np.float64(0.5)])
def test_a_numpy_scalar_is_a_number_for_a_scalar_input(number):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 4, dtype=torch.float64) for _ in range(3))
    kernel = compile_torch(EX / "sigmoid.ein")
    want = torch.sigmoid(q @ k.transpose(-1, -2) / 2 + float(number)) @ v
    got = kernel(q, k, v, number)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("n", [np.int64(2), np.uint8(2), np.int32(2)])
def test_a_numpy_integer_is_a_number_for_an_int_scalar(n):
    kernel = compile_torch("input X[i], n : int\noutput Y\nY[i] = X[i] where i < n\n")
    torch.testing.assert_close(kernel(torch.arange(1.0, 5.0), n), torch.tensor([1.0, 2.0, 0.0, 0.0]))
    with pytest.raises(einattn.EinError, match=r"declared `: int` but was given 2\.0"):
        kernel(torch.arange(1.0, 5.0), np.float32(2.0))
    with pytest.raises(einattn.EinError, match="must be a torch tensor, got ndarray"):
        kernel(np.arange(1.0, 5.0), n)  # (a NumPy array is still not a tensor)
