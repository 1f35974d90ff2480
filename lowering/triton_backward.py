"""The triton backend's backward pass: generated kernels for the backward cascade that einattn derives.

For a kernel whose forward pass is one fused kernel, :func:`derive` builds the backward pass from the spec:

1. ``einattn.grad`` derives the backward cascade of the spec as written (reverse mode; docs/rewrite.md,
   "Gradients");
2. ``einattn.staging`` cuts it into 1-pass programs over the forward kernel's two sequence ranks (the
   streamed one and the rows): softmax attention gives four, FlashAttention-2's structure found by the
   compiler -- the row statistics (max and denominator, one online pass over the keys), ``sum_m dA * A``
   per row (a pass over the keys), ``dK`` and ``dV`` (a pass over the queries for each block of keys),
   ``dQ`` (a pass over the keys for each block of queries);
3. each stage is compiled by this backend: a stage that holds a key-by-query value must be one fused kernel
   (its scores and their cotangents live in registers, one tile at a time), the others (per-row values, the
   sum of a bias's gradient over its rows) are small and may take the general path.

Where any step does not apply (a spec written in its 1-pass form, a key-by-query gradient, a stage that does
not fuse: a head-to-group map read through a gather, whose gates span three tile axes) the backward recomputes
through the torch backend, as before; ``kernel.backward_plan`` says which and why. The row statistics pass
between the stages in float32 (``float32=`` of the stage kernels) whatever the inputs' dtype, as
FlashAttention keeps its log-sum-exp. ``backward="auto"`` (the default) uses the derived kernels wherever
they exist, ``backward="derived"`` is an error where they do not, ``backward="torch"`` never uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from einattn.errors import EinError

CHOICES = ("auto", "derived", "torch")


@dataclass(frozen=True)
class BackwardPlan:
    """How the backward pass runs: ``kind`` is ``derived`` (generated kernels) or ``torch`` (recomputed
    through the torch backend); ``detail`` lists the stages, ``reason`` why not derived."""

    kind: str
    detail: str = ""
    reason: str | None = None

    def __str__(self) -> str:
        if self.kind == "derived":
            return f"derived: {self.detail}"
        return f"torch (recomputed through the torch backend): {self.reason}"


class DerivedBackward:
    """The stages of the derived backward and their kernels; called with the forward inputs and the
    outputs' cotangents, it returns one gradient per forward input (zeros where the input has none)."""

    def __init__(self, gradient, staged, kernels):
        self.gradient, self.stages, self.kernels = gradient, staged, kernels

    def describe(self) -> str:
        parts = []
        for s, k in zip(self.stages, self.kernels):
            how = f"fused over {s.rank}" if k.plan.path == "fused" else "general"
            parts.append(f"{', '.join(s.outputs)} ({how})")
        return f"{len(self.stages)} stages: " + "; ".join(parts)

    def __call__(self, xs: list, outs: list, grads: list) -> list:
        import numpy as np
        import torch

        from einattn.staging import as_int

        fwd = self.gradient.forward
        values = dict(zip(fwd.inputs, xs))
        kept = dict(zip(fwd.outputs, outs))
        values.update((a, kept[n]) for a, n in self.gradient.saved_inputs.items())
        for o, g in zip(fwd.outputs, grads):
            if o in self.gradient.cotangents:
                values[self.gradient.cotangents[o]] = g
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for stage, kernel in zip(self.stages, self.kernels):
                args = [values[stage.inputs[n]] for n in stage.program.inputs]
                got = kernel.launcher(*args)
                got = got if isinstance(got, tuple) else (got,)
                values.update(zip(stage.program.outputs, got))
                for name in stage.indicators:  # (integer inputs of later stages' filters)
                    values[name] = as_int(values[name])
        result = []
        for name, x in zip(fwd.inputs, xs):
            g = self.gradient.gradients.get(name)
            result.append(
                torch.zeros_like(x) if g is None else values[g].to(x.dtype).reshape(x.shape).contiguous()
            )
        return result


def derive(kernel, wrt: tuple[str, ...] | None = None) -> tuple[DerivedBackward | None, BackwardPlan]:
    """The derived backward of a :class:`~lowering.triton_backend.TritonKernel` with respect to the float
    inputs ``wrt`` (default: every one an output depends on), or None and the reason. A call's backward
    differentiates only the inputs that require a gradient: a fixed bias ``B[h, p, m]`` (a mask) needs no
    key-by-query gradient, which no fused kernel writes."""
    from einattn.staging import StagingError, backward

    from .triton_backend import compile_program
    from .triton_fused import match

    def no(reason: str):
        return None, BackwardPlan("torch", reason=reason)

    if kernel.options.get("backward", "auto") == "torch":
        return no("backward='torch'")
    if kernel.plan.path != "fused":
        return no("the forward pass is not one fused kernel")
    written = kernel.original
    plan = match(kernel.program)
    sequence = (plan.parent, plan.row)
    try:
        staged = backward(written, sequence, wrt, tile=kernel.options.get("tile", 64))
    except StagingError as e:
        return no(f"the backward cascade does not stage into 1-pass programs: {e.message}")
    except EinError as e:
        return no(f"the backward cascade: {e.message}")
    gradient, staged = staged.gradient, staged.stages
    kernels = []
    given = {*written.inputs, *gradient.cotangents.values(), *gradient.saved_inputs}
    rows = {*sequence, *plan.par}
    for s in staged:
        # the row statistics between stages (a max, a denominator, sum dA * A, a bias gradient's part per
        # row) stay float32 with 16-bit inputs, as FlashAttention keeps its log-sum-exp: a max rounded to 16
        # bits would scale its row's probabilities by up to 0.5% (float16), 4% (bfloat16)
        stats = tuple(
            n
            for n in (*s.program.inputs, *s.program.outputs)
            if s.inputs.get(n, n) not in given
            and s.program.tensor(n).dtype == "float"
            and set(s.program.tensor(n).ranks) <= rows
        )
        k = compile_program(
            s.program,
            passes="as-written",
            skip_tiles=kernel.options.get("skip_tiles", True),
            float32=stats,
        )
        if s.dense and k.plan.path != "fused":
            why = (k.plan.reason or "").split(" (passes=")[0]  # (the forward compile's hint does not apply)
            return no(f"the stage computing {', '.join(s.outputs)} is not one fused kernel: {why}")
        kernels.append(k)
    derived = DerivedBackward(gradient, staged, kernels)
    return derived, BackwardPlan("derived", derived.describe())


__all__ = ["CHOICES", "BackwardPlan", "DerivedBackward", "derive"]
