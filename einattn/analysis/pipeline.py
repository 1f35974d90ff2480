"""The analysis pipeline: one named stage per line, each a pure function of the IR and the graph."""

from __future__ import annotations

import sympy as sp

from ..check import normalize_params
from ..errors import EinError
from ..ir import Program, size_name
from . import footprint as fp
from . import ops as op
from . import passes as ps
from .report import Report, parse_bytes
from .symbols import SizeModel

TABLE_I = {
    3: "PyTorch, TensorFlow, FLAT, E.T.",
    2: "TileFlow, Choi et al.",
    1: "FlashAttention, FlashAttention-2, Rabe and Staats",
}
"""FuseMax's Table I: the attention implementations of each pass class."""

SEQUENCE_NAMES = ("m", "k", "t", "n", "s", "j", "i")
"""Names that usually denote the streamed rank; only used to break ties."""


def streamed_rank(prog: Program, counts: dict[str, ps.RankPasses]) -> str | None:
    """The rank the summary is about when none is asked for: a partitioned or iterative rank (the author
    streams it by design), else the reduced rank with the most passes; ties go to the rank with the most
    reductions, then to the conventional sequence names (``m`` for keys/values), then to the first."""
    parts = {r for p in prog.partitions for r in (p.outer, p.inner)}
    parents = {p.parent for p in prog.partitions}
    iterative = set(prog.iterative_ranks)

    def reducers(r: str) -> int:
        fam = ps.family(prog, r)
        return sum(fp._is_reducer(fam, e, prog) for e in prog.einsums)

    cands = [r for r, c in counts.items() if c.analysed and r not in parts and reducers(r)]
    if not cands:
        cands = [r for r, c in counts.items() if c.analysed] or list(counts)
    if not cands:
        return None
    pos = {r: i for i, r in enumerate(prog.ranks)}

    def key(r: str):
        seq = SEQUENCE_NAMES.index(r) if r in SEQUENCE_NAMES else len(SEQUENCE_NAMES)
        return (-(r in parents or r in iterative), -counts[r].passes, -reducers(r), seq, pos[r])

    return min(cands, key=key)


def classify(n: int, rank: str | None, grows: bool) -> str:
    if rank is None:
        return "no rank to traverse: a cascade of scalars"
    size = size_name(rank)
    if n == 0:
        return f"0 passes over {rank}: no Einsum traverses it, so nothing is read or held along {size}"
    cls = f"the class of {TABLE_I[n]}" if n in TABLE_I else "more passes than any class of FuseMax's Table I"
    buffer = f"live buffer grows with {size}" if grows else f"live buffer is free of {size}"
    return f"{n}-pass over {rank} ({cls}): {buffer}"


def compulsory(prog: Program, model: SizeModel) -> sp.Expr:
    """Elements every implementation must move: each input read once, each output written once (an
    iterative output is returned with all its states: R + 1 along its iterative rank)."""
    out = sp.Integer(0)
    for name in (*prog.inputs, *prog.outputs):
        t = prog.tensor(name)
        points = model.points(r for k, r in enumerate(t.ranks) if k != t.iterative)
        if t.iterative is not None and name in prog.outputs:
            points *= model.points([t.ranks[t.iterative]]) + 1
        out += points
    return out


def sort_sizes(prog: Program, sizes: dict | None, params: dict | None, strict: bool):
    """Sizes as the size model takes them: a rank variable (``m``) stands for its size (``M``); a size that
    is a param (``M0``) overrides the param; a name this spec does not have is an error when ``strict``,
    else ignored (and noted), so one dict of sizes serves many specs."""
    sizes, params = dict(sizes or {}), dict(normalize_params(params) or {})
    if strict:
        return sizes, params, ()
    names = {size_name(r) for r in prog.ranks}
    out, ignored = {}, []
    for name, value in sizes.items():
        key = size_name(name) if name in prog.ranks else name
        if key in prog.param_values:
            params.setdefault(key, value)
        elif key in names:
            out[key] = value
        else:
            ignored.append(name)
    return out, params, tuple(ignored)


def run(
    prog: Program,
    sizes: dict | None = None,
    params: dict | None = None,
    buffer: int | str | None = None,
    rank: str | None = None,
    elem_bytes: int = 2,
    strict: bool = False,
) -> Report:
    sizes, params, ignored = sort_sizes(prog, sizes, params, strict)  # sizes that name params are params
    prog = prog.with_params(params)  # compile-time overrides
    model = SizeModel(prog, sizes)  # size symbols and the known values
    flows = ps.Flows(prog)  # the pass dataflow, run per rank on demand
    counts = ps.count(prog, flows)  # passes, barriers and fusion groups of every rank
    if rank is None:
        rank = streamed_rank(prog, counts)  # the rank the summary is about (None: no rank at all)
    elif rank not in counts or not counts[rank].analysed:
        known = ", ".join(r for r, c in counts.items() if c.analysed)
        raise EinError(f"`{rank}` is not a rank this spec iterates over", hint=f"choose one of: {known}")
    if isinstance(elem_bytes, bool) or not isinstance(elem_bytes, int) or elem_bytes <= 0:
        raise EinError(f"the element size must be a positive number of bytes, got {elem_bytes!r}")
    foot = fp.footprint(flows, rank, model)  # live elements per point of the parallel ranks
    notes = tuple(f"size `{name}` is not a size of this spec: ignored" for name in ignored) + tuple(
        f"the {r} fiber of {root} is re-read at every step of {it} (passes over {r} are counted per step)"
        for r, c in counts.items()
        for root, it in c.repeats
    )
    per_einsum = {e.label: op.einsum_ops(e, model) for e in prog.einsums}  # op counts by class
    ops = op.total(per_einsum)
    flops = op.flops(ops)
    moved = compulsory(prog, model) * elem_bytes
    return Report(
        name=prog.name,
        rank=rank,
        passes={r: c.passes for r, c in counts.items()},
        barriers=tuple(b for c in counts.values() for b in c.barriers),
        groups={r: c.groups for r, c in counts.items() if c.analysed},
        footprint=foot.expr,
        footprint_per=foot.per,
        footprint_terms=foot.terms,
        ops=ops,
        einsum_ops=per_einsum,
        flops=flops,
        compulsory_bytes=moved,
        intensity=flops / moved,
        elem_bytes=elem_bytes,
        classification=classify(
            counts[rank].passes if rank else 0, rank, bool(rank) and model.depends_on(foot.expr, rank)
        ),
        sizes=model.known(),
        relations=model.relations(),
        buffer=None if buffer is None else parse_bytes(buffer),
        footprint_points=foot.points,
        spill=foot.spill,
        notes=notes,
        model=model,
    )
