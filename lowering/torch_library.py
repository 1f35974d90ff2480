"""Library kernels for the torch backend: a cascade that computes softmax attention exactly becomes one call
of ``torch.nn.functional.scaled_dot_product_attention`` (SDPA).

Compilers of tensor programs hand the patterns a vendor library does best to that library (XLA to cuDNN,
TorchInductor to SDPA). On the CPU, PyTorch's SDPA is a FlashAttention kernel in C++: one pass over the keys
in tiles that stay in cache, O(tile) memory, and a causal mask that skips the tiles after the diagonal. The
torch backend's own generated code runs each statement of a step as a torch call of its own, which costs
1.5-2x SDPA's time on plain softmax attention (``docs/benchmarks.md``). So where :func:`match` proves that
the spec *as written* computes

    O[batch.., p, f] = sum over m of softmax over m (c * sum over e of Q[.., p, e] K[.., m, e]) * V[.., m, f]

with the keys restricted by a filter on the coordinates ``p`` and ``m`` (causal, sliding window, prefix,
any predicate the language writes), the generated source gets a second function, ``program_library``, that
calls SDPA, and falls back to the generated ``program`` where its preconditions fail at run time.

**What is matched.** The statements of the spec, after FuseMax's division deferral
(:func:`einattn.rewrite.deferral.defer`, which turns ``A = SN / SD; O = A * V`` into ``SNV = SN * V;
O = SNV / SD``), must be exactly these, in any order and with any names:

* the scores: a contraction over one rank ``e`` of two inputs, ``Q`` (without the keys ``m``) and ``K``
  (with them), times scalar factors (constants, params, sizes and functions of them: ``rsqrt(E)``, ``/ T``),
  under a filter on ``p`` and ``m`` (and lookups: ``: int`` inputs read at the batch ranks, ``p`` and
  ``m``, ``m < klen[b]``); optionally followed by elementwise statements that scale them by more scalar
  factors or add terms that read no intermediate (biases: ALiBi's ``slope[h] * (m - p)``, a table
  ``T[h, p, m]``), each of which may add a filter;
* the max over ``m`` of the scores; the shift ``exp(S - GM)`` (or ``exp2``: the scale times ln 2);
* the denominator (the sum over ``m`` of the shift), the numerator (the sum over ``m`` of the shift times an
  input ``V`` with the keys and a rank ``f``), and the output, numerator / denominator.

Every read of an intermediate tensor is plain (each index a rank variable), and the roles of the ranks
(batch, query ``p``, key ``m``, feature ``e``, value ``f``) agree across every read; the inputs may omit
batch ranks (shared across heads: broadcast) and ``K`` and ``V`` may read a batch rank ``h`` as ``h // R``
(grouped-query attention). The filter uses ``+ - * // %`` by constants, comparisons, ``and``/``or``/``not``
and ``abs``. Anything else is not matched, and the spec runs as generated code.

**Semantics kept.** A query with no key left by the filter gives 0, as the spec does; the scale is applied
to ``Q`` first where it is not positive (SDPA's causal kernel on the CPU returns NaN for a scale <= 0).
Inputs holding an infinity or NaN run the generated program (the torch backend's ``program_any``), since
SDPA treats a row of ``-inf`` scores as masked where the spec gives NaN; so does an output that is not
finite, a scale that is not finite (or that Python cannot compute: ``/ T`` at T = 0), and a grouped read
``h // R`` that would go past the end of ``K``.

**How.** ``m <= p`` is SDPA's ``is_causal`` (its top-left alignment, for any P and M); no filter is plain
SDPA; any other filter runs blocks of ``row_block`` query rows (128 by default), each against the keys that
the filter's affine bounds leave it (interval arithmetic on the constraints of :mod:`einattn.absence`: a
sliding window's block reads ``W + 127`` keys, not ``M``), with the filter as a boolean mask built from
``arange`` comparisons, dropped for blocks where the constraints hold at every corner. Option
``library=False`` turns all of this off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from einattn import syntax as S
from einattn.absence import Affine, analyse, num
from einattn.errors import EinError, InternalError
from einattn.ir import Einsum, Program
from einattn.rewrite.deferral import defer
from einattn.rewrite.derivation import Derivation
from einattn.rewrite.draft import Draft
from einattn.rewrite.rules import factors

from .torch_codegen import lin_code, number_code

KEY, FEATURE = "#m", "#e"  # the roles of the reduced ranks; the others are the output's rank names

# functions a term added to the scores may call (torch functions of the same name)
_BIAS_FUNCTIONS = ("abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid")

# scalar functions of a scale, in Python (the scale is a float argument of SDPA)
_SCALAR_FUNCTIONS = {
    "sqrt": "math.sqrt({})",
    "rsqrt": "(1.0 / math.sqrt({}))",
    "exp": "math.exp({})",
    "exp2": "(2.0 ** ({}))",
    "log": "math.log({})",
    "log2": "math.log2({})",
    "abs": "abs({})",
    "tanh": "math.tanh({})",
}


class _NoMatch(Exception):
    """The program is not softmax attention in the matched form (an internal signal, never shown)."""


@dataclass(frozen=True)
class Operand:
    """How one input of SDPA is read: per batch rank of the output, the input's axis (``("axis", i)``),
    a grouped read ``h // R`` of it (``("group", i, R)``, ``R`` a positive int), or None (broadcast); then
    the axes of the sequence and the feature rank."""

    name: str
    batch: tuple
    seq: int
    feat: int


@dataclass(frozen=True)
class Lookup:
    """An input that a filter or a bias reads at plain coordinates (``klen[b]``, ``doc[b, m]``,
    ``slope[h]``): per batch rank of the output, the input's axis (``("axis", i)``) or None (broadcast);
    the axes read at the query and at the key coordinate, or None. ``read`` is the read as the filter or
    the bias writes it (roles)."""

    name: str
    read: S.Read
    batch: tuple
    rows: int | None
    keys: int | None
    floating: bool = False  # a float input (a bias's), not a `: int` one


@dataclass(frozen=True)
class Attention:
    """Softmax attention found in a program: ``output[dims] = softmax(scale * Q K) V`` (see the module)."""

    output: str
    dims: tuple[str, ...]  # the output's ranks, in order
    batch: tuple[str, ...]  # the output's ranks other than p and f, in order
    p: str
    m: str  # the key rank's name (its size is the keys' count)
    f: str
    q: Operand
    k: Operand
    v: Operand
    scale: str  # Python code of the scale (sizes as s_<rank>)
    filters: tuple[S.Expr, ...]  # over the coordinates p and m (renamed so), params, sizes and int reads
    bounds: tuple[Affine, ...] | None  # the affine constraints over p and m of the filters' conjuncts that
    # read no tensor (the keys a block of rows may see), or None (unknown)
    reads: tuple[Lookup, ...]  # the inputs the filters and biases read (padding lengths, slopes)
    biases: tuple[tuple[str, S.Expr], ...]  # terms added to the scores: (Python code of the factor that
    # multiplies the term after it is added, the term over the roles), as ALiBi's slope[h] * (m - p)
    params: tuple[tuple[str, int | float], ...]
    statements: tuple[Einsum, ...]  # the statements of the spec it replaces (for the source's comments)


def match(prog: Program) -> Attention | None:
    """The softmax attention ``prog`` computes, or None where it is not exactly that (see the module)."""
    try:
        return _Matcher(prog).attention()
    except (_NoMatch, EinError):
        return None


def _require(ok: bool) -> None:
    if not ok:
        raise _NoMatch


class _Matcher:
    def __init__(self, prog: Program):
        _require(not prog.partitions and len(prog.outputs) == 1)
        _require(all(t.iterative is None for t in prog.tensors))
        self.written = prog
        self.params = prog.param_values
        self.key: str | None = None  # the key rank's name: the first sum's (the numerator's) reduced rank
        self.root = {r: r for r in prog.ranks}  # ranks of one size (`rank S = T`) share a root
        for a, b in prog.aliases:
            self.root[self._find(a)] = self._find(b)

    def _find(self, r: str) -> str:
        while self.root.get(r, r) != r:
            r = self.root[r]
        return r

    def same(self, a: str, b: str) -> bool:
        return self._find(a) == self._find(b)

    def attention(self) -> Attention:
        prog = self.written
        maxes = [e for e in prog.einsums if any(op == "max" for _, op in e.reduce)]
        _require(len(maxes) == 1 and len(maxes[0].reduce) == 1)
        prog = self.prog = _deferred(prog, maxes[0].reduce[0][0])
        defs = self.defs = {e.tensor: e for e in prog.einsums}
        _require(len(defs) == len(prog.einsums))
        self.inputs = set(prog.inputs)
        inputs = self.floats = {n for n in prog.inputs if prog.tensor(n).dtype == "float"}

        out = defs[prog.outputs[0]]
        _require(not out.reduce and out.filter is None and _plain_lhs(out))
        _require(isinstance(out.expr, S.Binary) and out.expr.op == "/")
        num, den = out.expr.a, out.expr.b
        _require(isinstance(num, S.Read) and isinstance(den, S.Read))
        env_o = {r: r for r in out.lhs_ranks}

        nv, env_nv = self.bind_sum(num, env_o, "+")
        _require({env_nv[r] for r in nv.lhs_ranks} == set(out.lhs_ranks))
        reads_nv = _reads(nv.expr)
        _require(len(reads_nv) == 2)
        sn_read = next((r for r in reads_nv if r.tensor in defs), None)
        v_read = next((r for r in reads_nv if r.tensor in inputs), None)
        _require(sn_read is not None and v_read is not None)

        sd, env_sd = self.bind_sum(den, env_o, "+")
        _require(isinstance(sd.expr, S.Read) and sd.expr.tensor == sn_read.tensor)
        rows = [env_sd[r] for r in sd.lhs_ranks]
        f_roles = set(out.lhs_ranks) - set(rows)
        _require(len(f_roles) == 1)
        f = f_roles.pop()

        sn = defs[sn_read.tensor]
        env_sn = self.bind(sn, sn_read, env_nv, {})
        _require(env_sn == self.bind(sn, sd.expr, env_sd, {}))
        _require(not sn.reduce and sn.filter is None and set(env_sn.values()) == set(rows) | {KEY})
        _require(isinstance(sn.expr, S.Call) and sn.expr.fn in ("exp", "exp2") and len(sn.expr.args) == 1)
        diff = sn.expr.args[0]
        _require(isinstance(diff, S.Binary) and diff.op == "-")
        x, g = diff.a, diff.b
        _require(isinstance(x, S.Read) and isinstance(g, S.Read) and x.tensor in defs)

        gm, env_gm = self.bind_sum(g, env_sn, "max")
        _require(isinstance(gm.expr, S.Read) and gm.expr.tensor == x.tensor)
        s = defs[x.tensor]
        env_s = self.bind(s, x, env_sn, _features(s))
        _require(env_s == self.bind(s, gm.expr, env_gm, _features(s)))

        scale, filters, (r1, r2), env_qk, chain, biases = self.scores(x.tensor, env_s)
        if sn.expr.fn == "exp2":  # (2^x = e^(x ln 2): the biases too)
            scale = f"({scale}) * math.log(2.0)"
            biases = [(f"({c}) * math.log(2.0)", b) for c, b in biases]
        _require({out.tensor, nv.tensor, sd.tensor, sn.tensor, gm.tensor, *chain} == set(defs))

        (q_read, q_roles), (k_read, k_roles) = sorted(  # the input with the keys is K
            ((r, self.roles(r, env_qk)) for r in (r1, r2)), key=lambda rr: KEY in _plain(rr[1])
        )
        v_roles = self.roles(v_read, env_nv)
        _require(FEATURE in _plain(q_roles) and FEATURE in _plain(k_roles) and KEY in _plain(k_roles))
        _require(KEY not in _all(q_roles) and KEY in _plain(v_roles) and f in _plain(v_roles))
        _require(not any(isinstance(r, tuple) for r in q_roles))
        # the query rank: in Q, not in K or V; of several such (K shared across heads), the filter's
        terms = [*filters, *(b for _, b in biases)]
        in_filters = {c for fl in terms for c in _coords_outside_reads(fl)} - {KEY}
        kv = _all(k_roles) | _all(v_roles)
        candidates = [r for r in out.lhs_ranks if r in rows and r in q_roles and r not in kv]
        _require(bool(candidates) and in_filters <= set(candidates) and len(in_filters) <= 1)
        # (else one a lookup or a bias reads: `doc[b, p]` with K and V shared by the heads h)
        in_reads = [r for r in candidates if any(r in _ranks(fl) for fl in terms)]
        p = in_filters.pop() if in_filters else (in_reads or candidates)[-1]
        _require(p != self.key)
        batch = tuple(r for r in out.lhs_ranks if r not in (p, f))
        _require(_all(q_roles) <= set(batch) | {p, FEATURE})
        _require(_all(k_roles) <= set(batch) | {KEY, FEATURE} and _all(v_roles) <= set(batch) | {KEY, f})

        names = {**{b: b for b in batch}, p: p, KEY: self.key}
        _require(all(r in names for fl in terms for r in _ranks(fl)))
        filters = tuple(_rename(fl, names) for fl in filters)
        biases = tuple((c, _rename(b, names)) for c, b in biases)
        reads = _lookups([*filters, *(b for _, b in biases)], self.prog, batch, p, self.key)
        static = [c for fl in filters for c in _conjuncts(fl) if not _reads_in(c)]
        return Attention(
            output=out.tensor,
            dims=out.lhs_ranks,
            batch=batch,
            p=p,
            m=self.key,
            f=f,
            q=_operand(q_read, q_roles, batch, p, FEATURE),
            k=_operand(k_read, k_roles, batch, KEY, FEATURE),
            v=_operand(v_read, v_roles, batch, KEY, f),
            scale=scale,
            filters=filters,
            bounds=_bounds(prog, static),
            reads=reads,
            biases=biases,
            params=tuple(sorted(self.params.items())),
            statements=tuple(self.written.einsums),
        )

    def bind(self, e: Einsum, rd: S.Read, outer: dict[str, str], reduced: dict[str, str]) -> dict[str, str]:
        """The roles of ``e``'s ranks, given a plain read ``rd`` of its tensor in a frame whose ranks have
        roles ``outer``, and the roles of its reduced ranks. Each index must be a rank of the size of the
        rank it reads (else the read could leave the tensor: absent points)."""
        _require(e.kind == "plain" and _plain_lhs(e) and rd.tensor == e.tensor)
        _require(len(rd.indices) == len(e.index) and set(e.reduced) == set(reduced))
        env = {}
        for r, ix in zip(e.lhs_ranks, rd.indices):
            _require(isinstance(ix, S.Coord) and ix.rank in outer and self.same(r, ix.rank))
            env[r] = outer[ix.rank]
        _require(len(set(env.values())) == len(env))
        for r, role in reduced.items():
            _require(role != KEY or self.same(r, self.key))
        env.update(reduced)
        return env

    def bind_sum(self, rd: S.Read, outer: dict[str, str], op: str) -> tuple[Einsum, dict[str, str]]:
        """The statement ``rd`` reads, a reduction ``op`` over one rank (the keys), and its ranks' roles."""
        _require(rd.tensor in self.defs)
        e = self.defs[rd.tensor]
        _require(len(e.reduce) == 1 and e.reduce[0][1] == op and e.filter is None)
        if self.key is None:
            self.key = e.reduce[0][0]
        return e, self.bind(e, rd, outer, {e.reduce[0][0]: KEY})

    def scores(self, name: str, env: dict[str, str]):
        """The score statements from ``name`` back to the contraction: (scale code, filters over the roles,
        the two input reads, the roles of the contraction's ranks, the statements' tensors)."""
        scale, filters, chain, biases = "1.0", [], [], []
        while True:
            e = self.defs[name]
            chain.append(name)
            if e.filter is not None:
                filters.append(self.in_roles(e.filter, env))
            expr = e.expr
            while not e.reduce:
                # `c * (X + B)`, `X - B`, `B - X`...: B reads no intermediate, and is added to the scores,
                # times the factors after it (`scale` so far, and the statement's own outside the sum)
                fs = factors(expr)
                sums = [(x, inv) for x, inv in fs if _additive(x) and self.reads_scores(x)]
                if not sums:
                    break
                _require(len(sums) == 1 and not sums[0][1])
                for x, inv in fs:
                    if x is not sums[0][0]:
                        scale = f"{scale} {'/' if inv else '*'} {self.scalar(x)}"
                add = sums[0][0]
                sides = [self.reads_scores(add.a), self.reads_scores(add.b)]
                _require(sides.count(True) == 1)
                main, term = (add.a, add.b) if sides[0] else (add.b, add.a)
                sign = "-" if add.op == "-" and sides[0] else ""
                biases.append((f"{sign}({scale})", self.in_roles(term, env, bias=True)))
                negated = add.op == "-" and not sides[0]  # `B - X`: the scores are negated
                expr = S.Binary("*", S.Const(-1.0), main) if negated else main
            reads = []
            for x, inv in factors(expr):
                if _has_read(x):
                    _require(isinstance(x, S.Read) and not inv)
                    reads.append(x)
                else:
                    scale = f"{scale} {'/' if inv else '*'} {self.scalar(x)}"
            if e.reduce:
                _require(len(e.reduce) == 1 and e.reduce[0][1] == "+" and env[e.reduce[0][0]] == FEATURE)
                _require(len(reads) == 2 and all(x.tensor in self.floats for x in reads))
                return scale, filters, reads, env, chain, biases
            _require(len(reads) == 1 and reads[0].tensor in self.defs)
            nxt = self.defs[reads[0].tensor]
            env = self.bind(nxt, reads[0], env, _features(nxt))
            name = nxt.tensor

    def scalar(self, e: S.Expr) -> str:
        """Python code (floats, sizes as ``s_<rank>``) of a scalar factor of the scores."""
        if isinstance(e, S.Const):
            return number_code(float(e.value))
        if isinstance(e, S.Param):
            return number_code(float(self.params[e.name]))
        if isinstance(e, S.Size):
            return f"float(s_{e.rank})"
        if isinstance(e, S.Unary) and e.op == "-":
            return f"(-{self.scalar(e.x)})"
        if isinstance(e, S.Binary) and e.op in ("+", "-", "*", "/"):
            return f"({self.scalar(e.a)} {e.op} {self.scalar(e.b)})"
        if isinstance(e, S.Call) and e.fn in _SCALAR_FUNCTIONS and len(e.args) == 1:
            return _SCALAR_FUNCTIONS[e.fn].format(self.scalar(e.args[0]))
        raise _NoMatch

    def reads_scores(self, e: S.Expr) -> bool:
        """Whether ``e`` reads an intermediate tensor (the scores, in a chain statement)."""
        return any(isinstance(n, S.Read) and n.tensor in self.defs for n in e.walk())

    def in_roles(self, f: S.Expr, env: dict[str, str], bias: bool = False) -> S.Expr:
        """A filter (or, ``bias``, a term added to the scores) with its coordinates renamed to their roles;
        only the supported operations. A bias may read float inputs too, divide, and call the functions
        of :data:`_BIAS_FUNCTIONS`."""
        for n in f.walk():
            if isinstance(n, S.Coord):
                _require(n.rank in env)
            elif isinstance(n, S.Binary):
                _require(
                    n.op in ("+", "-", "*")
                    or (n.op in ("//", "%") and self.nonzero(n.b))
                    or (bias and n.op == "/")
                )
            elif isinstance(n, S.Call):
                _require((n.fn == "abs" or (bias and n.fn in _BIAS_FUNCTIONS)) and len(n.args) == 1)
            elif isinstance(n, S.Const):
                _require(isinstance(n.value, int) or math.isfinite(n.value))
            elif isinstance(n, S.Param):
                v = self.params.get(n.name)
                _require(isinstance(v, int) or (bias and isinstance(v, float) and math.isfinite(v)))
            elif isinstance(n, S.Read):  # an input at plain coordinates (checked in bounds at run time)
                t = self.prog.tensor(n.tensor)
                _require(n.tensor in self.inputs and (t.dtype == "int" or bias))
                _require(all(isinstance(ix, S.Coord) for ix in n.indices))
                _require(len({ix.rank for ix in n.indices}) == len(n.indices))
            else:
                _require(isinstance(n, (S.Compare, S.Logic, S.Not, S.Unary, S.Size)))
        return _rename(f, env)

    def nonzero(self, e: S.Expr) -> bool:
        v = e.value if isinstance(e, S.Const) else self.params.get(e.name) if isinstance(e, S.Param) else None
        return isinstance(v, int) and v != 0

    def roles(self, rd: S.Read, env: dict[str, str]) -> list:
        """Per index of an input read: the role of a plain rank (of the size of the axis it reads), or
        ``(role, R)`` for ``h // R`` (R a positive whole number); anything else is no match."""
        out = []
        for ix, declared in zip(rd.indices, self.prog.tensor(rd.tensor).ranks):
            if isinstance(ix, S.Coord) and ix.rank in env and self.same(ix.rank, declared):
                out.append(env[ix.rank])
            elif (
                isinstance(ix, S.Binary) and ix.op == "//" and isinstance(ix.a, S.Coord) and ix.a.rank in env
            ):
                r = ix.b.value if isinstance(ix.b, S.Const) else self.params.get(getattr(ix.b, "name", ""))
                _require(isinstance(r, int) and not isinstance(r, bool) and r >= 1)
                out.append((env[ix.a.rank], r))
            else:
                raise _NoMatch
        _require(len(_all(out)) == len(out))
        return out


def _deferred(prog: Program, rank: str) -> Program:
    """``prog`` with its divisions by the softmax denominator moved past the sums over ``rank``."""
    draft = Draft.of(prog)
    if not defer(draft, rank, Derivation(prog.name, "--rank (library match)")):
        return prog
    return draft.finish(filename=f"<library match of {prog.name}>")


def _additive(e: S.Expr) -> bool:
    return isinstance(e, S.Binary) and e.op in ("+", "-")


def _plain_lhs(e: Einsum) -> bool:
    return all(ix.kind == "rank" for ix in e.index) and len(set(e.lhs_ranks)) == len(e.lhs_ranks)


def _features(e: Einsum) -> dict[str, str]:
    """The roles of ``e``'s reduced ranks where ``e`` is the score contraction: its one rank is the
    feature (a chain statement reduces none)."""
    return {r: FEATURE for r in e.reduced}


def _reads(e: S.Expr) -> list[S.Read]:
    """The reads of a product of reads (``SN * V``), or no match."""
    fs = factors(e)
    _require(all(isinstance(x, S.Read) and not inv for x, inv in fs))
    return [x for x, _ in fs]


def _has_read(e: S.Expr) -> bool:
    return any(isinstance(n, (S.Read, S.Coord, S.Default)) for n in e.walk())


def _rename(e: S.Expr, names: dict[str, str]) -> S.Expr:
    return S.rewrite_expr(e, lambda n: S.Coord(names[n.rank]) if isinstance(n, S.Coord) else None)


def _ranks(e: S.Expr) -> set[str]:
    return {n.rank for n in e.walk() if isinstance(n, S.Coord)}


def _coords_outside_reads(e: S.Expr):
    """The ranks of the coordinates of ``e`` that are not an index of a read."""
    if isinstance(e, S.Coord):
        yield e.rank
    elif not isinstance(e, S.Read):
        for c in e.children():
            yield from _coords_outside_reads(c)


def _reads_in(e: S.Expr) -> list[S.Read]:
    return [n for n in e.walk() if isinstance(n, S.Read)]


def _conjuncts(e: S.Expr) -> list[S.Expr]:
    if isinstance(e, S.Logic) and e.op == "and":
        return _conjuncts(e.a) + _conjuncts(e.b)
    return [e]


def _lookups(filters, prog: Program, batch, p: str, m: str) -> tuple[Lookup, ...]:
    """The reads of the filters and biases (each read once), indexed by batch ranks, ``p`` and ``m`` only."""
    out: dict[S.Read, Lookup] = {}
    for fl in filters:
        for rd in _reads_in(fl):
            if rd in out:
                continue
            axis = {ix.rank: i for i, ix in enumerate(rd.indices)}
            _require(set(axis) <= {*batch, p, m})
            out[rd] = Lookup(
                rd.tensor,
                rd,
                tuple(("axis", axis[b]) if b in axis else None for b in batch),
                axis.get(p),
                axis.get(m),
                prog.tensor(rd.tensor).dtype == "float",
            )
    return tuple(out.values())


def _plain(roles) -> set:
    return {r for r in roles if not isinstance(r, tuple)}


def _all(roles) -> set:
    return {r[0] if isinstance(r, tuple) else r for r in roles}


def _operand(rd: S.Read, roles, batch, seq: str, feat: str) -> Operand:
    axes = {}
    for i, role in enumerate(roles):
        axes[role[0] if isinstance(role, tuple) else role] = (
            ("group", i, role[1]) if isinstance(role, tuple) else ("axis", i)
        )
    return Operand(rd.tensor, tuple(axes.get(b) for b in batch), axes[seq][1], axes[feat][1])


def _bounds(prog: Program, filters) -> tuple[Affine, ...] | None:
    """The filters as affine constraints over the query and key ranks (constants in sizes), or None where
    they are not exactly a conjunction of such."""
    a = analyse(prog)
    out: list[Affine] = []
    for fl in filters:
        got = a.filter(fl)
        if got is None:
            return None
        out.extend(got)
    return tuple(sorted(out))


# ---- the generated source ----------------------------------------------------------------------------------


def _filter_code(e: S.Expr, att: Attention) -> str:
    """Torch code of a filter over the aranges ``_p`` (a column) and ``_m`` (a row)."""
    if isinstance(e, S.Coord):
        return {att.p: "_p", att.m: "_m"}[e.rank]
    if isinstance(e, S.Read):  # [B, H, rows, keys], an axis of 1 where it does not vary (_sdpa_index)
        k = next(i for i, lk in enumerate(att.reads) if lk.read == e)
        rows = "_c : _c + _w" if att.reads[k].rows is not None else ":"
        keys = "_lo : _hi" if att.reads[k].keys is not None else ":"
        return f"_r{k}" if rows == keys == ":" else f"_r{k}[:, :, {rows}, {keys}]"
    if isinstance(e, S.Const):
        return number_code(e.value)
    if isinstance(e, S.Param):
        return number_code(dict(att.params)[e.name])
    if isinstance(e, S.Size):
        return f"s_{e.rank}"
    if isinstance(e, S.Unary):
        return f"(-{_filter_code(e.x, att)})"
    if isinstance(e, (S.Binary, S.Compare)):
        return f"({_filter_code(e.a, att)} {e.op} {_filter_code(e.b, att)})"
    if isinstance(e, S.Call):  # (Python's abs: its argument may be a plain int, `abs(W - 10)`)
        return f"abs({_filter_code(e.args[0], att)})"
    if isinstance(e, S.Logic):
        return f"({_filter_code(e.a, att)} {'&' if e.op == 'and' else '|'} {_filter_code(e.b, att)})"
    if isinstance(e, S.Not):  # (`~` of a Python bool, `not (W > 5)`, is an int: -1 or -2)
        coords = any(isinstance(n, (S.Coord, S.Read)) for n in e.x.walk())  # (a lookup is a tensor)
        return f"(~{_filter_code(e.x, att)})" if coords else f"(not {_filter_code(e.x, att)})"
    raise InternalError(f"no library code for a filter's {type(e).__name__}")


def _bias_code(e: S.Expr, att: Attention) -> str:
    """Torch code of a term added to the scores, over the aranges ``_p``, ``_m`` and the lookups."""
    if isinstance(e, S.Call):  # (of a tensor, or of a plain number: `exp(2.0)`)
        fn = "abs" if e.fn == "abs" else f"torch.{e.fn}"
        arg = _bias_code(e.args[0], att)
        return f"{fn}(torch.as_tensor({arg}, dtype=_q.dtype, device=_dev))"
    if isinstance(e, S.Unary):
        return f"(-{_bias_code(e.x, att)})"
    if isinstance(e, S.Binary):
        return f"({_bias_code(e.a, att)} {e.op} {_bias_code(e.b, att)})"
    if isinstance(e, S.Coord):  # (in the compute dtype: int64 aranges times a float would be float32)
        return {att.p: "_pf", att.m: "_mf"}[e.rank]
    if isinstance(e, S.Read):
        return f"{_filter_code(e, att)}.to(_q.dtype)"
    return _filter_code(e, att)


def _bound_code(e: S.Expr, att: Attention) -> str:
    """Python code of an interval holding the values of a bias term over a block (``_iv``): coordinates
    over the block's rows and keys, lookups over their extremes (``_v<k>``), numbers as themselves; then
    ``[1]`` of :func:`_iv` ``("abs", ...)`` of it bounds the term's magnitude."""

    def iv(x: S.Expr) -> str:  # (each node's interval held within the dtype: else NaN, no bound)
        return f"_ivc({node(x)}, _lim)"

    def node(x: S.Expr) -> str:
        if isinstance(x, S.Coord):
            return "(_c, _c + _w - 1)" if x.rank == att.p else "(_lo, _hi - 1)"
        if isinstance(x, S.Read):
            return f"_v{next(i for i, lk in enumerate(att.reads) if lk.read == x)}"
        if isinstance(x, S.Call):
            return f'_iv("{x.fn}", {iv(x.args[0])})'
        if isinstance(x, S.Unary):
            return f'_iv("neg", {iv(x.x)})'
        if isinstance(x, S.Binary) and x.op in ("+", "-", "*", "/"):
            return f'_iv("{x.op}", {iv(x.a)}, {iv(x.b)})'
        if isinstance(x, S.Binary):  # (`//` and `%` by a constant: no bound kept)
            return "(-math.inf, math.inf)"
        code = _filter_code(x, att)  # a number, a param, a size
        return f"(float({code}), float({code}))"

    return f'_iv("abs", {iv(e)})'


def _causal(att: Attention) -> bool:
    """The filter is ``m <= p`` exactly: SDPA's ``is_causal`` (top-left aligned: query i sees keys j <= i,
    for any P and M)."""
    if att.bounds is None or len(att.bounds) != 1 or att.reads or att.biases:
        return False
    c = att.bounds[0]
    return dict(c.coefs) == {att.p: 1, att.m: -1} and c.const == num(0)


def _items(xs) -> str:
    return f"({xs[0]},)" if len(xs) == 1 else f"({', '.join(xs)})"


def _batch_code(batch, att: Attention) -> tuple[str, str]:
    """Code of a batch layout (per batch rank: None, ``(axis,)`` or ``(axis, R)``) and of the sizes."""
    layout = _items(["None" if b is None else _items([str(x) for x in b[1:]]) for b in batch])
    return layout, _items([f"s_{b}" for b in att.batch])


def _operand_code(op: Operand, att: Attention) -> str:
    batch, sizes = _batch_code(op.batch, att)
    keys = ", keys=True" if op is not att.q else ""
    return f"_sdpa_operand(t_{op.name}, {batch}, {sizes}, {op.seq}, {op.feat}{keys})"


def _varies_by_row(att: Attention) -> bool:
    """Whether the filters or the biases depend on the query row (else one block holds every row: a mask
    of ``[B, H, 1, keys]``; where they do, blocks of rows keep the mask's memory to a block's)."""
    return any(att.p in _ranks(e) for e in (*att.filters, *(b for _, b in att.biases)))


def _affine_code(a: int, x: str, k: str) -> str:
    """``a * x + k``, readably."""
    ax = {0: "", 1: x, -1: f"-{x}"}.get(a, f"{a} * {x}")
    if k == "0":
        return ax or "0"
    if not ax:
        return k
    return f"{ax} - {k[1:]}" if k.startswith("-") and k[1:].isdigit() else f"{ax} + {k}"


def _bounds_code(att: Attention) -> tuple[str, str, str]:
    """Code of (the first key, the key after the last) that rows ``_c .. _c + _w - 1`` may see, and of
    whether every point of the block ``_c .. _c + _w - 1`` x ``_lo .. _hi - 1`` passes the filter."""
    if att.bounds is None:
        return "0", f"s_{att.m}", "False"
    lows, highs, whole = ["0"], [f"s_{att.m}"], []
    for c in att.bounds:
        a, b = c.coef(att.p), c.coef(att.m)
        k = lin_code(c.const)
        k = k if k.lstrip("-").isdigit() else f"({k})"
        # a p + k at the block's first and last rows (one value where it does not depend on the row)
        ends = (_affine_code(a, "_c", k), _affine_code(a, "(_c + _w - 1)", k)) if a else (k,)
        if b > 0:  # b m + (a p + k) >= 0: m >= ceil(-(a p + k) / b), the smaller of the block's two ends
            parts = [f"-({e})" if b == 1 else f"-(({e}) // {b})" for e in ends]
            lows.append(parts[0] if len(parts) == 1 else f"min({', '.join(parts)})")
        elif b < 0:  # m <= floor((a p + k) / -b), the larger of the two ends
            parts = [e if b == -1 else f"({e}) // {-b}" for e in ends]
            highs.append(f"{parts[0]} + 1" if len(parts) == 1 else f"max({', '.join(parts)}) + 1")
        # the smallest value of a p + b m + k on the block: at a corner
        pa = f"min({_affine_code(a, '_c', '0')}, {_affine_code(a, '(_c + _w - 1)', '0')})" if a else "0"
        pb = f"min({_affine_code(b, '_lo', '0')}, {_affine_code(b, '(_hi - 1)', '0')})" if b else "0"
        whole.append(f"{pa} + {pb} + {k} >= 0")
    if att.reads:  # (where a lookup passes is known only from its values: the mask is always built)
        whole = ["False"]
    lo = lows[0] if len(lows) == 1 else f"max({', '.join(lows)})"
    hi = highs[0] if len(highs) == 1 else f"min({', '.join(highs)})"
    return lo, hi, " and ".join(whole) or "True"


def _shifts(att: Attention) -> bool:
    """Whether the filter depends on ``p - m`` alone (each constraint's coefficients opposite)."""
    if att.reads or att.biases:  # (a padding length or a document id is not a function of p - m)
        return False
    return att.bounds is not None and all(c.coef(att.p) == -c.coef(att.m) for c in att.bounds)


def library_source(
    att: Attention, ranks: tuple[str, ...], inputs: tuple[str, ...], row_block, slow: str = "program"
) -> str:
    """``program_library(...)``: the same signature as the generated ``program``, which it calls where the
    library's preconditions fail (``slow``, the program for inputs with an infinity or NaN, where those
    hold one). It checks its inputs itself (``checks_inputs``): the range check of Q and K fails on an
    infinity or NaN, and one in V makes the output not finite, which the runtime computes again with
    ``slow`` (torch_runtime.execute)."""
    from einattn.format import format_einsum

    args = ", ".join([*(f"t_{n}" for n in inputs), *(f"s_{r}" for r in ranks), "_o", "_inplace"])
    lines = [
        f"def program_library({args}):",
        f'    """`{att.output}` by torch\'s scaled_dot_product_attention (einattn.lowering.torch_library),',
        '    or by `program` where its preconditions fail."""',
        "    # Softmax attention, matched in these statements of the spec:",
    ]
    lines += [f"    # {format_einsum(e)}" for e in att.statements]
    # (a scale Python cannot compute, `/ T` at T = 0 or `exp(1000)`, is NaN: the guard runs `program`)
    lines.append(f"    _s = _sdpa_scale(lambda: {att.scale})  # the scores' scale")
    guards = [
        "(torch.compiler.is_compiling() or math.isfinite(_s))",  # (a SymFloat under dynamic shapes)
        f"_sdpa_bounded(t_{att.q.name}, t_{att.k.name}, _s, t_{att.q.name}.shape[{att.q.feat}])",
    ]
    for op in (att.q, att.k, att.v):
        for b, size in zip(op.batch, att.batch):
            if b is not None and b[0] == "group":  # `h // R` must stay within K's axis
                guards.append(f"(s_{size} - 1) // {b[2]} < t_{op.name}.shape[{b[1]}]")
    for lk in att.reads:  # a lookup read past its end is absent there (`doc[b, p]` of `doc[b, m]`, P > M)
        for k, ix in enumerate(lk.read.indices):
            guards.append(f"s_{ix.rank} <= t_{lk.name}.shape[{k}]")
        if lk.floating:  # (SDPA's gradient reaches q, k and v only: a bias input to train runs the cascade)
            guards.append(f"not (torch.is_grad_enabled() and t_{lk.name}.requires_grad)")
    for k, (factor, _) in enumerate(att.biases):
        lines.append(f"    _b{k} = _sdpa_scale(lambda: {factor})  # the factor of added term {k}")
        guards.append(f"(torch.compiler.is_compiling() or math.isfinite(_b{k}))")
    if slow == "program":
        fallback = [f"return program({args})"]
    else:  # (the guards fail on an input holding an infinity or NaN, too)
        names = ", ".join(f"t_{n}" for n in inputs) + ("," if len(inputs) == 1 else "")
        fallback = [f"_p = program if _all_finite(({names})) else {slow}", f"return _p({args})"]
    lines.append(f"    if not ({' and '.join(guards)}):")
    lines += [f"        {ln}" for ln in fallback]
    lines.append(f"    _q = {_operand_code(att.q, att)}")
    lines.append(f"    _k = {_operand_code(att.k, att)}")
    lines.append(f"    _v = {_operand_code(att.v, att)}")
    if not att.filters and not att.biases:
        call = "_sdpa_graded(lambda q, k, v: _sdpa(q, k, v, _s, False), _q, _k, _v)"
    elif _causal(att):
        call = "_sdpa_graded(lambda q, k, v: _sdpa(q, k, v, _s, True), _q, _k, _v)"
    else:
        lo, hi, whole = _bounds_code(att)
        mask = " & ".join(_filter_code(fl, att) for fl in att.filters) or "True"
        if row_block == "auto" and not _varies_by_row(att):
            row_block = 0  # (a filter on the keys alone, `m < klen[b]`: one mask of [B, H, 1, keys])
        rb = {"auto": "128", 0: f"max(s_{att.p}, 1)"}.get(row_block, str(row_block))
        for k, lk in enumerate(att.reads):
            batch, sizes = _batch_code(lk.batch, att)
            lines.append(f"    _r{k} = _sdpa_index(t_{lk.name}, {batch}, {sizes}, {lk.rows}, {lk.keys})")
            if any(lk.read in b.walk() for _, b in att.biases):  # (its extremes: the biases' bound)
                lines.append(f"    _v{k} = _iv_of(t_{lk.name})")
        lines.append("    def _keys(_c, _w):  # the keys that rows _c .. _c + _w - 1 may see")
        lines.append(f"        return {lo}, {hi}")
        lines.append("    def _mask(_c, _w, _lo, _hi, _dev):  # the filter on that block, or None: all true")
        if not att.biases:
            lines.append(f"        if {whole}:")
            lines.append("            return None")
        lines.append("        _p = torch.arange(_c, _c + _w, device=_dev)[:, None]")
        lines.append("        _m = torch.arange(_lo, _hi, device=_dev)[None, :]")
        if not att.biases:
            lines.append(f"        return _sdpa_mask({mask}, _w, _hi - _lo, _dev)")
        else:  # the terms added to the scores, as a float mask (-inf where the filter fails)
            lines.append(
                "        _pf, _mf, _lim = _p.to(_q.dtype), _m.to(_q.dtype), torch.finfo(_q.dtype).max"
            )
            keep = (
                "None" if not att.filters else f"None if {whole} else _sdpa_mask({mask}, _w, _hi - _lo, _dev)"
            )
            lines.append(f"        _keep = {keep}")
            terms = " + ".join(
                _bias_code(b, att) if factor == "(1.0)" else f"_b{k} * {_bias_code(b, att)}"
                for k, (factor, b) in enumerate(att.biases)
            )
            bound = " + ".join(
                f"abs(_b{k}) * {_bound_code(b, att)}[1]" for k, (_, b) in enumerate(att.biases)
            )
            lines.append(f"        _top = {bound}  # no term's magnitude is larger")
            lines.append(
                f"        return _sdpa_bias({terms}, _keep, _w, _hi - _lo, _q.dtype, _dev, (-_top, _top))"
            )
        blocks = f"_sdpa_blocks(q, k, v, _s, {rb}, _keys, _mask, shifts={_shifts(att)})"
        call = f"_sdpa_graded(lambda q, k, v: {blocks}, _q, _k, _v)"
    shape = ", ".join(f"s_{r}" for r in (*att.batch, att.p, att.f))
    order = (*att.batch, att.p, att.f)
    perm = tuple(order.index(r) for r in att.dims)
    reshape = f"{call}.reshape(({shape}{',' if len(order) == 1 else ''}))"
    if att.biases:  # a term that is not finite, or could overflow the scores: the cascade says what it gives
        lines += ["    try:", f"        _y = {reshape}", "    except _SDPAFallback:"]
        lines += [f"        {ln}" for ln in fallback]
    else:
        lines.append(f"    _y = {reshape}")
    lines.append(f"    return (_out(_y.permute{perm}, None, _o[2]),)")
    lines.append("")
    lines.append("")
    lines.append("program_library.checks_inputs = True  # (the runtime does not scan the inputs first)")
    return "\n".join(lines) + "\n"


__all__ = ["Attention", "Operand", "library_source", "match"]
