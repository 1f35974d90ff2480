"""Binding rank sizes at call time, from the inputs' shapes, the params and the partitions."""

from __future__ import annotations

import math

from .errors import EinError
from .ir import Program, size_name


def bind_sizes(prog: Program, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Rank variable -> size. Two inputs that disagree on a size are an error naming both."""
    sizes: dict[str, int] = {}
    origin: dict[str, str] = {}
    for name in prog.inputs:
        t = prog.tensor(name)
        shape = tuple(shapes[name])
        if len(shape) != len(t.ranks):
            want = f"[{', '.join(t.ranks)}]" if t.ranks else "a scalar"
            raise EinError(
                f"input `{name}` is declared {want} ({len(t.ranks)} dimension{'s' * (len(t.ranks) != 1)}) "
                f"but was given {len(shape)} dimension{'s' * (len(shape) != 1)}, shape {shape}"
            )
        for k, (r, n) in enumerate(zip(t.ranks, shape)):
            where = f"`{name}` (dimension {k})"
            if r in sizes and sizes[r] != n:
                raise EinError(
                    f"rank `{r}` has size {sizes[r]} in {origin[r]} but {n} in {where}",
                    hint=f"every tensor indexed by `{r}` must agree on {size_name(r)}",
                )
            sizes[r], origin[r] = int(n), where
    params = prog.param_values
    for r in prog.ranks:
        name = size_name(r)
        if name in params:
            v = params[name]
            if r in sizes and sizes[r] != v:
                raise EinError(f"rank `{r}` has size {sizes[r]} in {origin[r]} but param {name} = {v}")
            sizes[r], origin[r] = int(v), f"param {name}"
    for p in prog.partitions:
        if p.parent not in sizes:
            raise EinError(f"the size of partitioned rank `{p.parent}` is unknown: index an input by it")
        total = sizes[p.parent]
        if p.tile == "inner":
            derived, n = p.outer, math.ceil(total / sizes[p.inner])
        else:
            derived, n = p.inner, math.ceil(total / sizes[p.outer])
        if derived in sizes and sizes[derived] != n:
            raise EinError(
                f"rank `{derived}` has size {sizes[derived]} in {origin[derived]} but the partition "
                f"{size_name(p.parent)} = {size_name(p.outer)} * {size_name(p.inner)} makes it {n}"
            )
        sizes[derived], origin[derived] = n, "the partition"
    pending = dict(prog.aliases)
    while pending:  # `rank S = T`: s takes t's size (chains resolve over a few rounds)
        ready = {s: t for s, t in pending.items() if t in sizes}
        if not ready:
            break
        for s, t in ready.items():
            if s in sizes and sizes[s] != sizes[t]:
                decl = f"`rank {size_name(s)} = {size_name(t)}`"
                raise EinError(
                    f"rank `{s}` has size {sizes[s]} in {origin[s]} "
                    f"but {decl} makes it {sizes[t]} (from {origin[t]})"
                )
            sizes[s], origin[s] = sizes[t], f"`rank {size_name(s)} = {size_name(t)}`"
            del pending[s]
    missing = [r for r in prog.ranks if r not in sizes]
    if missing:
        raise EinError(f"the size of rank `{missing[0]}` is unknown")
    return sizes


def extents(prog: Program, tensor: str, sizes: dict[str, int]) -> tuple[int, ...]:
    """The storage shape of a tensor: an iterative dimension holds states 0 .. R (R + 1 of them)."""
    t = prog.tensor(tensor)
    return tuple(sizes[r] + (k == t.iterative) for k, r in enumerate(t.ranks))
