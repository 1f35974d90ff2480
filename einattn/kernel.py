"""What every compiled kernel shares: argument binding, the call contract, and the backend registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .errors import EinError
from .ir import Program

# Backend name -> "module:function" building a kernel from (program, **options). Imported on first use, so
# `import einattn` never imports torch or triton.
BACKENDS: dict[str, str] = {
    "numpy": "einattn.lowering.numpy_backend:compile_program",
    "torch": "einattn.lowering.torch_backend:compile_program",
    "triton": "einattn.lowering.triton_backend:compile_program",
}


def backend_builder(name: str) -> Callable:
    if name not in BACKENDS:
        raise EinError(f"unknown backend `{name}`", hint=f"available backends: {', '.join(BACKENDS)}")
    module, func = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), func)


def bind_arguments(prog: Program, args: tuple, kwargs: dict) -> dict[str, object]:
    """Positional arguments in declaration order, then keywords by declared name."""
    if len(args) > len(prog.inputs):
        raise EinError(
            f"{len(args)} positional inputs given but the spec declares {len(prog.inputs)}: "
            f"{', '.join(prog.inputs)}"
        )
    bound = dict(zip(prog.inputs, args))
    for name, value in kwargs.items():
        if name not in prog.inputs:
            raise EinError(
                f"unexpected input `{name}`", hint=f"the spec's inputs are: {', '.join(prog.inputs)}"
            )
        if name in bound:
            raise EinError(f"input `{name}` given both by position and by name")
        bound[name] = value
    missing = [n for n in prog.inputs if n not in bound]
    if missing:
        raise EinError(
            f"missing input{'s' * (len(missing) > 1)} {', '.join(f'`{m}`' for m in missing)}",
            hint=f"call with {', '.join(f'{n}=...' for n in prog.inputs)}",
        )
    return bound


class Kernel:
    """A compiled program: call it with the inputs (keyword by declared name, or positional).

    One output gives the array; several give a tuple in ``output`` order. ``program`` is the IR that was
    compiled (after param overrides and rewrites), ``backend`` the backend's name, ``source`` the generated
    source where the backend generates any.
    """

    backend = "?"
    source: str | None = None

    def __init__(self, program: Program, options: dict, written: Program | None = None):
        self.program = program
        self.options = dict(options)
        # The spec as written, when the backend compiled a rewritten (streamed) form of it: an input with an
        # empty rank runs the written form, since the streamed form over zero tiles may divide 0 by 0 where
        # the spec's reductions are absent (delivered as 0), and with nothing to stream memory is no issue.
        self.written = written if written is not None and written != program else None
        self._written_kernel: Kernel | None = None

    def run(self, inputs: dict[str, object]) -> tuple:
        raise NotImplementedError

    def as_written(self) -> Kernel:
        """The same backend compiling the spec as written (``passes="as-written"``)."""
        if self.written is None:
            return self
        if self._written_kernel is None:
            self._written_kernel = type(self)(self.written, {**self.options, "passes": "as-written"})
        return self._written_kernel

    def for_empty(self) -> Kernel:
        """The kernel that runs a call with an empty rank: the spec as written (see ``__init__``)."""
        return self.as_written()

    def __call__(self, /, *args, **kwargs):  # (`self` positional-only: a spec may name an input `self`)
        inputs = bind_arguments(self.program, args, kwargs)
        # (a nested tensor has no shape to test: the backend refuses it by name)
        empty = any(
            0 in getattr(x, "shape", ()) for x in inputs.values() if not getattr(x, "is_nested", False)
        )
        outs = (self.for_empty() if empty else self).run(inputs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __repr__(self) -> str:
        sig = ", ".join(self.program.inputs)
        return (
            f"<einattn {self.backend} kernel {self.program.name}({sig}) -> {', '.join(self.program.outputs)}>"
        )
