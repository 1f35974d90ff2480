"""Context parallelism over ``torch.distributed``: the key/value rank of a spec split across processes.

Each process of a group holds one contiguous part of the split rank (``m``: its shard of K and V, the parts in
the order of the processes' ranks, of any sizes) and every other input whole (the queries, biases, slopes). A
call runs the three programs of split-K (:func:`einattn.rewrite.split_k`, docs/rewrite.md "Split-K and context
parallelism"):

1. the *partial* program on the local shard: the 1-pass cascade over its keys, with ``param OFF`` its first
   index along the rank (a causal or decoding filter reads global positions) and the whole size as a param
   where the spec writes it; its outputs are the running states (a max, the sums, a presence flag), a few
   values per query row, independent of the number of keys;
2. an all-gather of those states, the only communication: ``O(rows)`` per process, not the keys;
3. the *merge* of the states stacked along a new rank, then the *finish*: the spec's outputs, the same on
   every process.

Queries are replicated: this is split-K across devices (long-context decoding, cross-attention to a long
context, prefill with the queries on every process); ring attention, which shards the queries too, is not
done. Gradients flow to every input of every process when a gradient is recorded
(``torch.distributed.nn.functional.all_gather``): each process gets the gradient of the loss on its own
output with respect to its own inputs; sum the replicated inputs' gradients over the group (as data-parallel
training does) to get the total.

::

    import torch.distributed as dist
    from einattn.distributed import ContextParallel

    dist.init_process_group("gloo")  # or "nccl"
    attn = ContextParallel("examples/causal.ein", rank="m", backend="torch")
    out = attn(Q=q, K=k_local, V=v_local)  # a collective: every process calls it, with its own shard

``torch`` and ``torch.distributed`` are imported on first use.
"""

from __future__ import annotations

from typing import Any

from .errors import EinError

__all__ = ["ContextParallel"]


class ContextParallel:
    """A spec evaluated with its rank ``rank`` split across the processes of ``group`` (the default group).

    ``spec``, ``params`` and ``backend`` (``"torch"`` or ``"triton"``) are as for :func:`einattn.compile`;
    ``tile`` is the tile size of the partial program's loop over its shard; other options go to each
    compile. Calling it is a collective: every process of the group calls it with its own part of every input
    along ``rank`` and the same value of every other input, and gets the whole outputs.
    """

    def __init__(
        self,
        spec: Any,
        rank: str = "m",
        *,
        group: Any = None,
        backend: str = "torch",
        tile: int = 64,
        params: dict[str, int | float] | None = None,
        **options: Any,
    ) -> None:
        from . import check as _check
        from .api import _program
        from .rewrite import split_k

        if backend not in ("torch", "triton"):
            raise EinError(
                f"context parallelism runs the torch or triton backend, not {backend!r}",
                hint='backend="torch" (any device) or backend="triton" (CUDA)',
            )
        self.program = _program(spec).with_params(_check.normalize_params(params))
        self.rank = rank
        self.group = group
        self.backend = backend
        self.options = dict(options)
        self.split = split_k(self.program, rank, tile)
        self.sharded = tuple(n for n in self.program.inputs if rank in self.program.tensor(n).ranks)
        if not self.sharded:
            raise EinError(
                f"no input of {self.program.name} is indexed by `{rank}`: there is nothing to split",
                hint="name the rank of the keys and values, e.g. rank='m'",
            )
        self._partials: dict[tuple[int, int], Any] = {}
        sk = self.split
        self._merge = self._compile(sk.merge)
        whole = {sk.total: 0} if sk.total and sk.total in dict(sk.finish.params) else {}
        self._finish_needs_total = bool(whole)
        self._finishes: dict[int, Any] = {}

    # ---- compiling -----------------------------------------------------------------------------------------
    def _compile(self, prog, params: dict[str, int] | None = None):
        from .api import compile as _compile

        return _compile(prog, backend=self.backend, params=params or None, **self.options)

    def _partial(self, offset: int, total: int):
        """The partial program for the part starting at ``offset`` of a rank of ``total`` points (params are
        compile-time constants: one kernel per part, cached)."""
        key = (offset, total)
        if key not in self._partials:
            sk = self.split
            params = {}
            if sk.offset:
                params[sk.offset] = offset
            if sk.total:
                params[sk.total] = total
            self._partials[key] = self._compile(sk.partial, params)
        return self._partials[key]

    def _finish(self, total: int):
        if total not in self._finishes:
            sk = self.split
            self._finishes[total] = self._compile(
                sk.finish, {sk.total: total} if self._finish_needs_total else None
            )
        return self._finishes[total]

    # ---- calling -------------------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any):
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise EinError(
                "torch.distributed is not initialised: context parallelism is a collective over a process "
                "group",
                hint='call torch.distributed.init_process_group("gloo" or "nccl") in every process first',
            )
        inputs = _bind(self.program, args, kwargs)
        sizes = self._part_sizes(inputs)
        me = dist.get_rank(self.group)
        offset, total = sum(sizes[:me]), sum(sizes)
        sk = self.split
        states = self._partial(offset, total)(**{n: inputs[n] for n in sk.partial.inputs})
        states = states if isinstance(states, tuple) else (states,)
        grad = torch.is_grad_enabled() and any(
            isinstance(v, torch.Tensor) and v.requires_grad for v in inputs.values()
        )
        stacked = {
            f"{name}_s": _as_declared(sk.merge, f"{name}_s", torch.stack(_all_gather(s, self.group, grad)))
            for name, s in zip(sk.states, states)
        }
        extra = {n: inputs[n] for n in sk.merge.inputs if n in inputs}  # what a rescaling reads (T)
        merged = self._merge(**stacked, **extra)
        merged = merged if isinstance(merged, tuple) else (merged,)
        state = {n: _as_declared(sk.finish, n, v) for n, v in zip(sk.states, merged)}
        state.update({n: inputs[n] for n in sk.finish.inputs if n in inputs and n not in state})
        return self._finish(total)(**{n: state[n] for n in sk.finish.inputs})

    def _part_sizes(self, inputs: dict) -> list[int]:
        """Every process's number of points of the split rank, from one all-gather of what each holds (its
        parts' sizes, the other inputs' shapes), checked the same way on every process: a mistake on one
        raises the same error on all, rather than failing inside a later collective on the others."""
        import torch.distributed as dist

        mine = {"part": {}, "whole": {}}
        for n in self.program.inputs:
            shape = tuple(int(d) for d in getattr(inputs[n], "shape", ()))
            if n in self.sharded:
                k = self.program.tensor(n).ranks.index(self.rank)
                mine["part"][n] = shape[k] if len(shape) > k else None
            else:
                mine["whole"][n] = shape
        every: list = [None] * dist.get_world_size(self.group)
        dist.all_gather_object(every, mine, group=self.group)
        sizes = []
        for r, held in enumerate(every):
            known = set(held["part"].values())
            if len(known) != 1 or None in known:
                shown = ", ".join(f"{n}: {s}" for n, s in held["part"].items())
                raise EinError(
                    f"process {r}'s parts along `{self.rank}` disagree ({shown})",
                    hint=f"give every input indexed by `{self.rank}` the same part of it on each process",
                )
            sizes.append(known.pop())
            for n, shape in held["whole"].items():
                if shape != every[0]["whole"][n]:
                    raise EinError(
                        f"input `{n}` is not indexed by `{self.rank}`, so every process must hold all of it: "
                        f"shape {every[0]['whole'][n]} on process 0, {shape} on process {r}",
                        hint=f"pass the same `{n}` on every process",
                    )
        return sizes

    def __repr__(self) -> str:
        return (
            f"ContextParallel({self.program.name!r}, rank={self.rank!r}, backend={self.backend!r}, "
            f"states={list(self.split.states)})"
        )


def _bind(prog, args: tuple, kwargs: dict) -> dict:
    """The inputs by name, from positional arguments in declaration order and keywords."""
    names = list(prog.inputs)
    if len(args) > len(names):
        raise EinError(f"{prog.name} takes {len(names)} inputs ({', '.join(names)}), got {len(args)}")
    bound = dict(zip(names, args))
    for k, v in kwargs.items():
        if k in bound:
            raise EinError(f"input `{k}` is given twice (by position and by name)")
        bound[k] = v
    missing = [n for n in names if n not in bound]
    extra = sorted(set(bound) - set(names))
    if missing or extra:
        raise EinError(
            ("missing inputs: " + ", ".join(missing) if missing else "")
            + ("; " if missing and extra else "")
            + ("unexpected inputs: " + ", ".join(extra) if extra else ""),
            hint=f"{prog.name} takes {', '.join(names)}",
        )
    return bound


def _as_declared(prog, name: str, value):
    """A state as the next program declares it: the presence flag ``SEEN`` is an output of the torch backend
    in the inputs' float dtype, and an ``: int`` input of the merge and the finish (0 or 1, exact)."""
    import torch

    return value.to(torch.int64) if prog.tensor(name).dtype == "int" else value


def _all_gather(t, group, grad: bool) -> list:
    """Every process's tensor ``t`` (same shape everywhere: a state has no extent along the split rank), in
    rank order; differentiable where a gradient is recorded."""
    import torch
    import torch.distributed as dist

    t = t.contiguous()
    if grad and t.is_floating_point():
        from torch.distributed.nn.functional import all_gather

        return list(all_gather(t, group=group or dist.group.WORLD))
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t, group=group)
    return out
