"""A PyTorch module around a compiled spec.

>>> import torch
>>> from einattn.nn import EinAttention
>>> attn = EinAttention("examples/causal_1pass.ein", params={"M0": 16})
>>> q = torch.randn(1, 2, 40, 8)
>>> attn(q, q, q).shape
torch.Size([1, 2, 40, 8])

Inputs that should be learned (an ALiBi slope, a sink logit, a bias) can be held by the module as
parameters: ``EinAttention("examples/alibi.ein", weights={"slope": torch.ones(8)})``; ``forward`` then takes
the other inputs, in declaration order or by name.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from .api import _program
from .api import compile as compile_spec
from .errors import EinError, EinWarning
from .ir import Program

_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)  # (the torch backend's float inputs)


class _Weights(nn.ParameterDict):
    """The module's weights by input name: an ``nn.ParameterDict`` whose entries live in ``_parameters``
    only, never as attributes. ``nn.ParameterDict`` stores an entry with ``setattr``, so an input named
    after one of its attributes (``values``, ``keys``, ``type``, ``to``, ``train``...) raised a raw
    ``KeyError`` ("attribute 'values' already exists"), one named ``training`` replaced the module's
    training flag (``module.eval()`` then failed), and ``_keys`` broke the dictionary itself. State-dict
    keys are unchanged (``weights.<name>``)."""

    def __getitem__(self, key: str):
        self._key_to_attr(key)  # (a string)
        return self._parameters[key]

    def __setitem__(self, key: str, value) -> None:
        self._key_to_attr(key)
        if not isinstance(value, nn.Parameter):
            value = nn.Parameter(value)
        self._keys[key] = None
        self._parameters[key] = value

    def __delitem__(self, key: str) -> None:
        del self._keys[key]
        del self._parameters[key]

    def __setattr__(self, name: str, value) -> None:
        params = self.__dict__.get("_parameters")
        if params is None or name not in params:
            super().__setattr__(name, value)
        elif isinstance(value, nn.Parameter):  # the weight itself (``load_state_dict(..., assign=True)``)
            params[name] = value  # (``nn.Module`` would also drop an attribute of that name: ``_modules``)
        elif value is None or isinstance(value, torch.Tensor):  # (nn.Module's own rules, and its errors)
            super().__setattr__(name, value)
        else:  # an attribute of the container (``training``, which ``module.eval()`` sets), not the weight
            object.__setattr__(self, name, value)


class EinAttention(nn.Module):
    """An ``nn.Module`` computing a ``.ein`` spec with the torch backend.

    ``spec``: a :class:`~einattn.Program`, a path to a ``.ein`` file or ``.ein`` text. ``params`` override the
    spec's ``param`` values (tile sizes, window widths). ``weights`` maps input names to initial tensors that
    become ``nn.Parameter`` s of the module (an ``nn.Parameter`` given is registered as it is: shared with
    its owner, and frozen if ``requires_grad`` is False). Backend ``options`` (``dtype``, ``skip_tiles``)
    pass through.
    """

    def __init__(
        self,
        spec: Program | str | os.PathLike,
        params: dict[str, int | float] | None = None,
        weights: dict[str, torch.Tensor] | None = None,
        **options,
    ):
        super().__init__()
        if "backend" in options:
            raise EinError(
                f"EinAttention runs the torch backend, not backend={options['backend']!r}",
                hint='einattn.compile(spec, backend="triton") gives a function a module can call',
            )
        prog = _program(spec).with_params(params)
        self.kernel = compile_spec(prog, backend="torch", **options)
        self.program = prog
        self.options = dict(options)
        self.weights = _Weights()
        if weights is not None and not isinstance(weights, (Mapping, nn.ParameterDict)):
            raise EinError(
                f"weights must map input names to tensors (a dict), got {type(weights).__name__}",
                hint="EinAttention(spec, weights={'slope': torch.ones(8)})",
            )
        for name, value in (weights or {}).items():
            if name not in prog.inputs:
                raise EinError(
                    f"`{name}` is not an input of the spec", hint=f"inputs: {', '.join(prog.inputs)}"
                )
            if prog.tensor(name).dtype == "int":  # an index (a group map): it takes no gradient
                raise EinError(
                    f"input `{name}` is declared `: int`: it cannot be a weight (a trainable parameter)",
                    hint="pass it to forward, or keep it as a buffer of your own module",
                )
            if isinstance(value, nn.Parameter) and value.dtype in _FLOATS:
                # the caller's own parameter, registered as it is: tied to the module it comes from, and
                # frozen (requires_grad=False) if it is (a new Parameter around it took neither)
                self.weights[name] = value
                continue
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError) as e:
                raise EinError(
                    f"weight `{name}` must be a tensor or numbers, got {type(value).__name__} {value!r:.40}",
                    hint=f"torch.as_tensor refused it: {e}",
                ) from None
            if value.is_complex() or (value.is_floating_point() and value.dtype not in _FLOATS):
                raise EinError(
                    f"weight `{name}` must hold real numbers (float64, float32, float16 or bfloat16), "
                    f"got {value.dtype}"
                )
            if not value.is_floating_point():
                value = value.to(torch.get_default_dtype())
            self.weights[name] = nn.Parameter(value)
        self.inputs = tuple(n for n in prog.inputs if n not in self.weights)

    def forward(self, *args, **kwargs):
        """The inputs not held as weights, by position (declaration order) or by name."""
        if len(args) > len(self.inputs):
            raise EinError(f"{len(args)} positional inputs given; this module takes {', '.join(self.inputs)}")
        bound = dict(zip(self.inputs, args))
        for name, value in kwargs.items():
            if name in self.weights:
                raise EinError(f"input `{name}` is a weight of this module; it is not passed to forward")
            if name in bound:
                raise EinError(f"input `{name}` given both by position and by name")
            bound[name] = value
        missing = [n for n in self.inputs if n not in bound]
        if missing:  # (named here: the kernel's own hint would list the weights too)
            raise EinError(
                f"missing input{'s' * (len(missing) > 1)} {', '.join(f'`{m}`' for m in missing)}",
                hint=f"call with {', '.join(f'{n}=...' for n in self.inputs)}; the weights are the module's",
            )
        bound.update(self.weights.items())
        return self.kernel(**bound)

    def __getstate__(self):
        """The module without its kernel, whose generated code lives in a module of this process only
        (``einattn.lowering.generated_<digest>``): ``torch.save(module)`` loaded in another process failed
        with ModuleNotFoundError. :meth:`__setstate__` compiles the program again."""
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        state.pop("kernel", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        with warnings.catch_warnings():  # (shown when the module was built)
            warnings.simplefilter("ignore", EinWarning)
            self.kernel = compile_spec(self.program, backend="torch", **self.options)

    def extra_repr(self) -> str:
        return f"spec={self.program.name!r}, inputs={self.inputs}, weights={tuple(self.weights)}"
