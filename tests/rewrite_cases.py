"""Shared by the rewrite tests: the variant table, random inputs, comparison, and the structural graph.

Every variant is written the natural way (the max, then the normalised sums); sizes make the last tile ragged
(M = 11 with tiles of 4) and the filters leave whole tiles, and whole rows, without a present point.
"""

from __future__ import annotations

import itertools
import warnings

import networkx as nx
import numpy as np

import einattn
from einattn import syntax as S
from einattn.format import format_number

HEAD = "input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]"

SOFTMAX = """
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
AV[b, h, p, f] = A[b, h, m, p] * V[b, h, m, f]
"""


def _scored(extra_inputs: str, score: str, params: str = "", tail: str = SOFTMAX, outputs: str = "AV") -> str:
    return f"{HEAD}{extra_inputs}\n{params}output {outputs}\n{score.strip()}\n{tail.strip()}\n"


QK = "QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)"

VARIANTS: dict[str, str] = {
    "plain": _scored("", "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)"),
    "deferred": _scored(
        "",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)",
        tail="""
GM[b, h, p]     = S[b, h, m, p] :: max(m)
SN[b, h, m, p]  = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]     = SN[b, h, m, p]
SNV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f]
AV[b, h, p, f]  = SNV[b, h, p, f] / SD[b, h, p]
""",
    ),
    "causal": _scored("", "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p"),
    "sliding_window": _scored(
        "",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where p - W < m and m <= p",
        "param  W = 3\n",
    ),
    "masked_rows": _scored("", "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]  where m + 3 <= p"),
    "scale": _scored("", f"{QK}\nS[b, h, m, p] = QK[b, h, m, p] * 0.125", ""),
    "alibi": _scored(
        ", slope[h]", f"{QK}  where m <= p\nS[b, h, m, p] = QK[b, h, m, p] + slope[h] * (m - p)", ""
    ),
    "softcap": _scored("", f"{QK}\nS[b, h, m, p] = C * tanh(QK[b, h, m, p] / C)", "param  C = 5.0\n"),
    "relative_bias": _scored(", RB[h, r]", f"{QK}\nS[b, h, m, p] = QK[b, h, m, p] + RB[h, p - m + 4]", ""),
    "gqa": (
        "input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]\nparam  R = 2\noutput AV\n"
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)\n"
        + SOFTMAX.strip().replace("V[b, h, m, f]", "V[b, h // R, m, f]")
        + "\n"
    ),
    "sinks": _scored(
        ", SK[h]",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p",
        tail="""
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD0[b, h, p]   = SN[b, h, m, p]
SD[b, h, p]    = SD0[b, h, p] + exp(SK[h] - GM[b, h, p])
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
AV[b, h, p, f] = A[b, h, m, p] * V[b, h, m, f]
""",
    ),
    "sinks_in_max": _scored(
        ", SK[h]",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + 1",
        outputs="AV, LSE",
        tail="""
MX[b, h, p]    = S[b, h, m, p] :: max(m)
GM[b, h, p]    = max(MX[b, h, p], SK[h])
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
DEN[b, h, p]   = SD[b, h, p] + exp(SK[h] - GM[b, h, p])
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
LSE[b, h, p]   = GM[b, h, p] + log(DEN[b, h, p])
""",
    ),
    "lse": _scored(
        "",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p",
        outputs="AV, L",
        tail=SOFTMAX + "L[b, h, p] = GM[b, h, p] + log(SD[b, h, p])\n",
    ),
    "second_output": _scored(
        ", W[b, h, m, g]",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)",
        outputs="AV, AW, GM",
        tail=SOFTMAX + "AW[b, h, p, g] = SN[b, h, m, p] * W[b, h, m, g] / SD[b, h, p]\n",
    ),
    "exp2": _scored(
        "",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]  where m <= p",
        outputs="AV, L",
        tail=SOFTMAX.replace("exp(", "exp2(") + "L[b, h, p] = GM[b, h, p] + log2(SD[b, h, p])\n",
    ),
    "differential": (  # two softmaxes over the same keys, combined after their sums (Ye et al. 2024)
        "input  Q1[p, e], K1[m, e], Q2[p, e], K2[m, e], V[m, f]\nparam  LAMBDA = 0.3\noutput O\n"
        "S1[m, p] = Q1[p, e] * K1[m, e]  where m <= p\nG1[p] = S1[m, p] :: max(m)\n"
        "N1[m, p] = exp(S1[m, p] - G1[p])\nD1[p] = N1[m, p]\nO1[p, f] = N1[m, p] * V[m, f] / D1[p]\n"
        "S2[m, p] = Q2[p, e] * K2[m, e]\nG2[p] = S2[m, p] :: max(m)\n"
        "N2[m, p] = exp(S2[m, p] - G2[p])\nD2[p] = N2[m, p]\nA2[m, p] = N2[m, p] / D2[p]\n"
        "O2[p, f] = A2[m, p] * V[m, f]\nO[p, f] = O1[p, f] - LAMBDA * O2[p, f]\n"
    ),
    "shared_scores": (  # two softmaxes of the same scores (two temperatures): tiled once, two running maxes
        "input  Q[p, e], K[m, e], V[m, f]\noutput O\nS[m, p] = Q[p, e] * K[m, e]\nT2[m, p] = S[m, p] * 0.5\n"
        "G1[p] = S[m, p] :: max(m)\nN1[m, p] = exp(S[m, p] - G1[p])\nD1[p] = N1[m, p]\n"
        "O1[p, f] = N1[m, p] * V[m, f] / D1[p]\nG2[p] = T2[m, p] :: max(m)\n"
        "N2[m, p] = exp(T2[m, p] - G2[p])\nD2[p] = N2[m, p]\nO2[p, f] = N2[m, p] * V[m, f] / D2[p]\n"
        "O[p, f] = O1[p, f] + O2[p, f]\n"
    ),
    # the shift's function scales the difference: f(d) = exp(d / T) rescales as exp does (sympy proves it)
    "temperature": _scored(
        ", TAU[h]",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]  where m <= p",
        tail=SOFTMAX.replace(
            "exp(S[b, h, m, p] - GM[b, h, p])", "exp((S[b, h, m, p] - GM[b, h, p]) / (1 + TAU[h] * TAU[h]))"
        ),
    ),
    "temperature_param": _scored(
        "",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]",
        "param  T = 0.7\n",
        tail=SOFTMAX.replace("exp(S[b, h, m, p] - GM[b, h, p])", "exp((S[b, h, m, p] - GM[b, h, p]) / T)"),
    ),
    "exp2_log2e": _scored(
        "",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where p - 4 < m",
        tail=SOFTMAX.replace(
            "exp(S[b, h, m, p] - GM[b, h, p])", "exp2((S[b, h, m, p] - GM[b, h, p]) * 1.4426950408889634)"
        ),
    ),
    # exp(x - max - k): k, constant along m, comes apart as a weight (exp of a sum is the product of the
    # exps). (k <= 0 here: where exp(k) overflows, the spec's own value at the max is infinite, and a sum of
    # it may come out NaN rather than inf; docs/rewrite.md.)
    "exponent_offset": _scored(
        ", OFFSET[b, p]",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]  where m <= p",
        outputs="AV, L",
        tail=SOFTMAX.replace(
            "exp(S[b, h, m, p] - GM[b, h, p])",
            "exp(S[b, h, m, p] - GM[b, h, p] - 0.5 - OFFSET[b, p] * OFFSET[b, p])",
        )
        + "L[b, h, p] = GM[b, h, p] + log(SD[b, h, p])\n",
    ),
    # the max in a frame of its own ranks (r): a factor read at p in the shift is read at r in the rescaling
    "renamed_max_frame": (
        "input  X[p, e], Y[m, e], V[m, f], BETA[p]\nrank   R = P\noutput O\n"
        "S[m, p] = X[p, e] * Y[m, e]\nGM[r] = S[m, r] :: max(m)\n"
        "N[m, p] = exp((1 + BETA[p] * BETA[p]) * (S[m, p] - GM[p]))\nD[p] = N[m, p]\n"
        "O[p, f] = N[m, p] * V[m, f] / D[p]\n"
    ),
    # the shift written inline in each sum, not as a statement of its own: the rewrite names it
    "inline_shift": _scored(
        "",
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p",
        outputs="AV, L",
        tail="""
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SD[b, h, p]    = exp(S[b, h, m, p] - GM[b, h, p])
AV[b, h, p, f] = exp(S[b, h, m, p] - GM[b, h, p]) * V[b, h, m, f] / SD[b, h, p]
L[b, h, p]     = GM[b, h, p] + log(SD[b, h, p])
""",
    ),
    # a weight that needs every key (a sum over m): the deferral moves it past the sums, out of the loop
    "weight_over_every_key": (
        "input  Q[p, e], K[m, e], V[m, f]\noutput O\nKN = K[m, e] * K[m, e] * 0.01\n"
        "S[m, p] = Q[p, e] * K[m, e]\nGM[p] = S[m, p] :: max(m)\nN[m, p] = exp(S[m, p] - GM[p]) / KN\n"
        "D[p] = N[m, p]\nO[p, f] = N[m, p] * V[m, f] / D[p]\n"
    ),
    "documents": (
        "input  Q[p, e], K[m, e], V[m, f], dq[p] : int, dk[m] : int\noutput O\n"
        "S[m, p]  = Q[p, e] * K[m, e]  where dq[p] == dk[m] and m <= p\n"
        "GM[p]    = S[m, p] :: max(m)\n"
        "EX[m, p] = exp(S[m, p] - GM[p])\n"
        "DEN[p]   = EX[m, p]\n"
        "O[p, f]  = EX[m, p] * V[m, f] / DEN[p]\n"
    ),
}
"""Natural-form softmax variants, each streamable to 1 pass."""

ALREADY_ONE_PASS = (
    "attention_1pass.ein",
    "causal_1pass.ein",
    "sigmoid.ein",
    "linear.ein",
    "linear_causal.ein",
)

SIZES = dict(b=1, h=2, g=1, p=7, m=11, e=3, f=2, r=18)


def parse(text: str, name: str = "<variant>") -> einattn.Program:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return einattn.parse(text, name)


def random_inputs(prog: einattn.Program, sizes: dict[str, int], seed: int = 0, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name in prog.inputs:
        t = prog.tensor(name)
        shape = [sizes.get(r, 3) for r in t.ranks]
        if t.dtype == "int":
            out[name] = rng.integers(0, 3, size=shape)
        else:
            out[name] = rng.standard_normal(shape) * scale
    return out


def run(prog: einattn.Program, inputs: dict, **params) -> tuple:
    out = einattn.compile(prog, backend="numpy", params=params or None)(**inputs)
    return out if isinstance(out, tuple) else (out,)


def assert_same(want: tuple, got: tuple, tol: float = 1e-12) -> None:
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert w.shape == g.shape
        assert not np.isnan(g).any() or np.isnan(w).any(), "the rewrite introduced NaN"
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


# ---- structure ---------------------------------------------------------------------------------------------


def shape(e: S.Expr | None) -> str:
    """An expression's skeleton: tensors, ranks and sizes anonymous; commutative operands sorted."""
    if e is None:
        return "-"
    if isinstance(e, S.Const):
        return format_number(e.value)
    if isinstance(e, S.Read):
        return "T"
    if isinstance(e, (S.Coord, S.Size, S.Param)):
        return type(e).__name__[0]
    if isinstance(e, S.Binary) and e.op in "+*":
        terms = []

        def flat(x):
            if isinstance(x, S.Binary) and x.op == e.op:
                flat(x.a)
                flat(x.b)
            else:
                terms.append(shape(x))

        flat(e)
        return f"{e.op}({','.join(sorted(terms))})"
    name = getattr(e, "op", None) or getattr(e, "fn", None) or type(e).__name__
    return f"{name}({','.join(shape(c) for c in e.children())})"


def dataflow(prog: einattn.Program) -> nx.DiGraph:
    """Inputs and Einsums as nodes labelled by the shape of their operation; reads as edges labelled by how
    an iterative tensor is read (state, next state, final state)."""
    g = nx.DiGraph()
    for name in prog.inputs:
        g.add_node(("in", name), label=("input", len(prog.tensor(name).ranks)))
    writers: dict[str, list] = {}
    for e in prog.einsums:
        label = (
            e.kind,
            len(e.lhs_ranks),
            tuple(sorted(op for _, op in e.reduce)),
            shape(e.expr),
            shape(e.filter),
        )
        g.add_node(e.label, label=label)
        writers.setdefault(e.tensor, []).append(e.label)
    for e in prog.einsums:
        for rd in e.reads():
            t = prog.tensor(rd.tensor)
            kind = "plain"
            if t.iterative is not None:
                ix = rd.indices[t.iterative]
                kind = {S.Coord: "state", S.Binary: "next", S.Size: "final"}.get(type(ix), "other")
            srcs = [("in", rd.tensor)] if t.is_input else writers[rd.tensor]
            for src in srcs:
                if src == e.label:
                    kind = "self-" + kind
                old = g.edges[src, e.label]["reads"] if g.has_edge(src, e.label) else ()
                g.add_edge(src, e.label, reads=tuple(sorted((*old, kind))))
    return g


def same_structure(a: einattn.Program, b: einattn.Program) -> bool:
    """Equal up to renaming (tensors, ranks), rank order and the order of independent Einsums."""
    return nx.is_isomorphic(
        dataflow(a),
        dataflow(b),
        node_match=lambda x, y: x["label"] == y["label"],
        edge_match=lambda x, y: x["reads"] == y["reads"],
    )


def one_pass(prog: einattn.Program, rank: str = "m") -> None:
    """A Loop over the tile rank in the schedule, and no re-read of the rank or its tiles after a full
    reduction; with einattn.analyze (when it exists), the analysis must agree."""
    from einattn.graph import Loop, schedule
    from einattn.rewrite.draft import first_multipass

    p = prog.partition_of(rank)
    assert p is not None and p.outer in prog.iterative_ranks
    assert any(isinstance(s, Loop) and s.rank == p.outer for s in schedule(prog))
    for r in (rank, p.outer):
        assert first_multipass(prog.einsums, r) is None, f"re-reads {r} after a full reduction"
    analyze = getattr(einattn, "analyze", None)
    if analyze is not None:
        passes = analyze(prog).passes
        for r in (rank, p.outer):
            assert passes.get(r, 1) == 1, f"einattn.analyze says {passes.get(r)} passes over {r}"


def run_split(prog: einattn.Program, inputs: dict, cuts: list[int], m: int, tile: int = 3) -> tuple:
    """Evaluate ``prog`` split along m at ``cuts``: each part's partial state, one merge, then finish."""
    from einattn.rewrite import split_k

    sk = split_k(prog, "m", tile)
    bounds = [0, *sorted(cuts), m]
    parts = []
    for a, b in itertools.pairwise(bounds):
        sliced = {}
        for name, v in inputs.items():
            ranks = prog.tensor(name).ranks
            sliced[name] = np.take(v, range(a, b), axis=ranks.index("m")) if "m" in ranks else v
        params = ({sk.offset: a} if sk.offset else {}) | ({sk.total: m} if sk.total else {})
        parts.append(run(sk.partial, sliced, **params))
    stacked = {}
    for k, name in enumerate(sk.states):
        arr = np.stack([part[k] for part in parts])
        stacked[f"{name}_s"] = arr.astype(np.int64) if sk.merge.tensor(f"{name}_s").dtype == "int" else arr
    stacked.update({n: inputs[n] for n in sk.merge.inputs if n in inputs})  # what a rescaling reads (T)
    merged = run(sk.merge, stacked)
    state = {
        n: (v.astype(np.int64) if sk.finish.tensor(n).dtype == "int" else v)
        for n, v in zip(sk.states, merged)
    }
    state.update({n: inputs[n] for n in sk.finish.inputs if n in inputs})
    whole = {sk.total: m} if sk.total and sk.total in dict(sk.finish.params) else {}
    return run(sk.finish, state, **whole)
