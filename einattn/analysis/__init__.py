"""FuseMax-style analysis of a cascade: passes per rank, barriers, fusion groups, live footprint, op counts.

The pipeline (``einattn.analysis.pipeline.run``), one pure function of the IR and graph per stage:

1. ``symbols.SizeModel``: rank sizes as sympy symbols (``M``, ``M0``, ``M1 = ceiling(M/M0)``), known values;
2. ``passes.count``: the counting rule of FuseMax section 2 per rank, a fixed-point dataflow over the graph;
3. ``pipeline.streamed_rank``: the rank the summary is about (``m`` for attention), unless one is asked for;
4. ``footprint.footprint``: live elements per point of the parallel ranks, and the traffic of spilling them;
5. ``ops.einsum_ops``: operation counts per Einsum by class;
6. ``report.Report``: the result, ``to_json()`` (schema in ``einattn.analysis.report``) and ``to_text()``.

sympy is imported on the first call of :func:`analyze`, not by ``import einattn``.
"""

from __future__ import annotations

import os

from .report import Report, read_expr

__all__ = ["Report", "analyze", "read_expr"]


def analyze(
    spec,
    sizes: dict[str, int] | None = None,
    params: dict[str, int | float] | None = None,
    buffer: int | str | None = None,
    rank: str | None = None,
    elem_bytes: int = 2,
    strict: bool = False,
) -> Report:
    """Analyse a cascade: a :class:`~einattn.Program`, a path to a ``.ein`` file, or ``.ein`` text.

    ``sizes`` gives rank sizes by upper-case name (``{"M": 4096, "F": 64}``) so that quantities also get
    numbers; ``params`` overrides the spec's params; ``buffer`` (bytes, or ``"16MiB"``) asks whether the
    footprint fits and what spilling it costs; ``rank`` picks the streamed rank of the summary (default:
    the reduced rank with the most passes); ``elem_bytes`` is the element size for bytes and intensity.
    Sizes are forgiving so that one dict serves many specs: a name the spec lacks is ignored (and noted in
    ``Report.notes``), a rank variable stands for its size and a size that is a param overrides it;
    ``strict=True`` makes each of these an error instead.

    >>> import einattn
    >>> r = einattn.analyze("examples/attention_1pass.ein")
    >>> r.passes["m"], r.passes["m1"], r.passes["m0"], str(r.footprint)
    (1, 1, 2, 'F + M0 + 2')
    """
    from .. import api
    from ..ir import Program
    from .pipeline import run

    if isinstance(spec, Program):
        prog = spec
    elif isinstance(spec, os.PathLike) or (isinstance(spec, str) and "\n" not in spec):
        prog = api.load(spec)
    else:
        prog = api.parse(spec)
    return run(prog, sizes, params, buffer, rank, elem_bytes, strict)
