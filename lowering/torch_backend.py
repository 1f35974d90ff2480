"""The PyTorch backend: readable generated source, autograd, streaming loops, bounded memory.

``compile_program(program, **options)`` generates PyTorch source from the program
(:mod:`einattn.lowering.torch_codegen`), loads it with ``compile``/``exec`` and returns a :class:`TorchKernel`
whose ``source`` is that text. :func:`standalone_source` gives the same program as a module that needs only
torch (``einattn compile FILE --backend torch -o out.py``).

The contract, in short (``docs/backends.md`` has it in full):

* inputs are torch tensors on one device (a Python number is accepted for a scalar input); float inputs in
  float64 compute in float64, float32/float16/bfloat16 in float32; outputs come back in the inputs' dtype;
* gradients flow to every float input, with no NaN from masked positions;
* recurrences run as a Python loop over the iterative rank with the statements of each step fused into it
  (:func:`einattn.fusion.fused_schedule`), so a 1-pass cascade holds one tile at a time; dead tiles are
  skipped where :mod:`einattn.skip` proves it changes nothing;
* a rank of size 0 compiles a variant of the program in which every reduction may be empty.

Options: ``dtype`` (the compute dtype: ``float32`` or ``float64``; ``float16``/``bfloat16`` mean float32
accumulation), ``skip_tiles`` (default True), ``row_block`` (rows of a loop computed together; the default
``"auto"`` takes 256 for a sliding window's loop, whose tiles are alive for a band of rows, and 512
otherwise (dense and causal loops), where larger blocks pay the per-step dispatch fewer times; 0: all rows
at once, and no tile skipping), ``recompute`` (default True: under autograd, the backward pass
recomputes each block of rows instead of keeping its tiles), and ``passes``/``tile``: ``passes="auto"``
compiles the fewest-pass form that :mod:`einattn.rewrite` proves (with that ``tile``; the default),
``"as-written"`` the spec's own cascade.

>>> import torch, einattn
>>> k = einattn.compile("examples/attention_3pass.ein", backend="torch")
>>> q = torch.randn(1, 2, 5, 8, dtype=torch.float64)
>>> k(Q=q, K=q, V=q).shape
torch.Size([1, 2, 5, 8])
"""

from __future__ import annotations

import hashlib
import numbers
import re
import sys
import types
import warnings
from pathlib import Path

import torch

import einattn
from einattn.errors import EinError
from einattn.ir import Program
from einattn.kernel import Kernel
from einattn.sizes import bind_sizes

from . import torch_runtime as R
from .torch_codegen import Generator
from .torch_library import library_source, match
from .triton_module import io_doc, spec_name  # (text only: no triton import)

OPTIONS = ("dtype", "skip_tiles", "row_block", "recompute", "passes", "tile", "library")
_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_RUNTIME_IMPORT = "from einattn.lowering.torch_runtime import *  # noqa: F403 (the helpers of generated code)"


def _options(options: dict) -> dict:
    unknown = [k for k in options if k not in OPTIONS]
    if unknown:
        raise EinError(f"unknown torch backend option `{unknown[0]}`", hint=f"options: {', '.join(OPTIONS)}")
    dtype = options.get("dtype")
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise EinError(f"unknown dtype `{dtype}`", hint=f"one of {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype]
    if dtype is not None and dtype not in _DTYPES.values():
        raise EinError(f"the torch backend computes in float32 or float64, not {dtype}")
    row_block = options.get("row_block", "auto")
    fixed = isinstance(row_block, numbers.Integral) and not isinstance(row_block, bool) and row_block >= 0
    if row_block != "auto" and not fixed:
        raise EinError(f"option row_block must be a non-negative integer or 'auto', got {row_block!r}")
    row_block = row_block if row_block == "auto" else int(row_block)
    passes = options.get("passes", "auto")
    if passes not in ("as-written", "auto"):
        raise EinError(f"passes must be 'auto' or 'as-written', got {passes!r}")
    for flag in ("skip_tiles", "recompute", "library"):
        if not isinstance(options.get(flag, True), bool):
            raise EinError(f"option {flag} must be True or False, got {options[flag]!r}")
    tile = options.get("tile", 256)  # on CPU, larger tiles pay: fewer, larger matmuls and torch calls
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 1:
        raise EinError(f"option tile must be a positive integer, got {tile!r}")
    tile = int(tile)
    return {
        "dtype": dtype,
        "skip_tiles": bool(options.get("skip_tiles", True)),
        "row_block": row_block,
        "recompute": bool(options.get("recompute", True)),
        "passes": passes,
        "tile": tile,
        "library": bool(options.get("library", True)),
    }


def _header(program: Program, options: dict, empty: bool) -> str:
    params = ", ".join(f"{k}={v!r}" for k, v in program.params) or "none"
    shown = {"dtype": str(options["dtype"]).replace("torch.", "") if options["dtype"] else None}
    shown |= {k: options[k] for k in ("skip_tiles", "row_block", "recompute", "passes", "tile", "library")}
    lines = [
        f"# Generated by einattn {einattn.__version__}, torch backend{' (variant for empty ranks)' * empty}.",
        f"# spec: {program.name!a}",
        f"# params: {params!a}",
        f"# options: {shown!a}",
        "# Each Einsum of the spec is a comment (re-printed from the IR) followed by the code computing it:",
        "# t_X holds the values of tensor X, m_X where X is present (None: everywhere).",
    ]
    return "\n".join(lines)


def generate(
    program: Program,
    options: dict | None = None,
    empty: bool = False,
    written: Program | None = None,
    prefix: str = "",
) -> str:
    """The PyTorch source of ``program``: a header, imports, the function table, ``program(...)`` (for
    inputs that hold no infinity or NaN) and, where that assumption changes the code, ``program_any(...)``
    (for any inputs); ``PROGRAMS`` names both (None for the second where there is none).
    ``written``: the spec as written, where ``program`` is einattn.rewrite's form of it (its running maxes
    are floored). ``prefix``: the functions named ``<prefix>program``... and the table
    ``<PREFIX>PROGRAMS``, without the header and the imports (a second cascade in one module).

    With option ``library`` (the default), where the spec as written (``written``, else ``program``) is
    softmax attention (:func:`einattn.lowering.torch_library.match`), ``program_library(...)`` computes it by
    torch's ``scaled_dot_product_attention`` and runs first for finite inputs; ``program`` (or
    ``program_any``) is its fallback."""
    options = _options(options or {})
    rewritten = written is not None and written is not program
    gens = [
        Generator(
            program,
            empty=empty,
            skipping=options["skip_tiles"],
            row_block=options["row_block"],
            recompute=options["recompute"],
            floor_stabilizers=rewritten,
            finite_inputs=finite,
        )
        for finite in (True, False)
    ]
    body, other = (gen.program() for gen in gens)
    rows: dict[str, int] = {}  # (the fewer rows where the two programs' blocks differ)
    for gen in gens:
        for r, n in gen.row_blocks.items():
            rows[r] = min(n, rows.get(r, n))
    table = [f'fn_{name} = FUNCTIONS["{name}"]' for name in sorted(gens[0].functions | gens[1].functions)]
    parts = [
        _header(program, options, empty),
        "import math\n\nimport torch\n\n" + _RUNTIME_IMPORT,
        "\n".join(table) if table else "",
        body,
    ]
    if other != body:
        parts.append(_ANY_NOTE + other.replace("def program(", "def program_any(", 1))
    att = match(written if written is not None else program) if options["library"] and not empty else None
    if att is not None:
        slow = "program_any" if other != body else "program"
        parts.append(library_source(att, program.ranks, program.inputs, options["row_block"], slow))
        parts.append(f"PROGRAMS = (program_library, {slow})  # (inputs with an infinity or NaN: the cascade)")
    elif other != body:
        parts.append("PROGRAMS = (program, program_any)")
    else:
        parts.append("PROGRAMS = (program, None)  # (no absent point holds an input's value as it is)")
    if prefix:
        parts = parts[2:]  # (the module has the header and the imports; the function table may repeat)
        parts = [_renamed(p, prefix) for p in parts]
    else:  # (the rank each loop blocks, and the fewest rows of its blocks: TorchKernel.run's one-tile check)
        parts.append(f"ROW_BLOCKS = {rows!r}")
    return "\n\n".join(p for p in parts if p) + "\n"


def _renamed(code: str, prefix: str) -> str:
    """``code`` with the functions ``program``, ``program_any``, ``program_library`` and the table
    ``PROGRAMS`` named with ``prefix``; comments (the reprinted Einsums, in the spec's names) are kept."""
    out = []
    for line in code.split("\n"):
        text, sep, note = line.partition("  # ") if not line.lstrip().startswith("#") else ("", "", line)
        text = re.sub(r"\bprogram(_any|_library)?\b", prefix + r"program\1", text)
        text = re.sub(r"^PROGRAMS = ", f"{prefix.upper()}PROGRAMS = ", text)
        out.append(text + sep + note)
    return "\n".join(out)


_ANY_NOTE = """\
# The same cascade for inputs that may hold an infinity or NaN (run when one does: torch_runtime._all_finite).
# `program` above fills the absent points that hold input values by arithmetic (x * 0, x + -inf: several
# times faster than torch.where on CPU), which would turn such a value into NaN where a filter dropped it.
"""


def _signature(program: Program) -> tuple:
    """(declarations, ranks, param-sized ranks, partitions) as plain data for torch_runtime.call."""
    decls = tuple((n, program.tensor(n).ranks, program.tensor(n).dtype) for n in program.inputs)
    params = program.param_values
    fixed = {r: params[r.upper()] for r in program.ranks if isinstance(params.get(r.upper()), int)}
    parts = tuple((p.parent, p.outer, p.inner, p.tile) for p in program.partitions)
    return decls, program.ranks, fixed, parts


def _compiled_form(program: Program, opts: dict) -> Program:
    """The program this backend compiles: rewritten to the fewest passes unless ``passes="as-written"``."""
    if opts["passes"] != "auto":
        return program
    from einattn.rewrite import for_backend

    program, found = for_backend(program, "auto", opts["tile"])
    for w in found:
        warnings.warn(w, stacklevel=6)
    return program


def standalone_source(program: Program, **options) -> str:
    """A module that needs only torch: the runtime helpers, the program, and ``forward(*inputs)``."""
    opts = _options(options)
    compiled = _compiled_form(program, opts)
    source = generate(compiled, opts, written=program)
    short = _streamed(program if program != compiled else None, compiled)
    if short:  # the cascade as written too, for calls whose streamed ranks fit in one tile (TorchKernel.run)
        source += "\n\n" + generate(program, {**opts, "passes": "as-written"}, prefix="written_")
    written, program = program, compiled
    runtime = Path(R.__file__).read_text(encoding="utf-8")
    runtime = runtime.split('"""', 2)[2].lstrip("\n")  # without its docstring: the header says what this is
    source = source.replace(
        _RUNTIME_IMPORT, "# ---- runtime helpers (einattn/lowering/torch_runtime.py) ----\n" + runtime
    )
    source = source.replace("import math\n\nimport torch\n\n# ----", "# ----", 1)
    dtype = f"torch.{str(opts['dtype']).split('.')[-1]}" if opts["dtype"] else "None"
    names = ", ".join(ascii(n) for n in program.inputs)
    outputs = ", ".join(ascii(n) for n in program.outputs)
    names_plain, outputs_eq = ", ".join(program.inputs), ", ".join(program.outputs)  # (validated names)
    io = "\n".join("    " + ln for ln in io_doc(program))
    one_tile, written_arg = "", ""
    if short:
        one_tile = (
            "# a call whose streamed ranks (rank, tile) all fit in one tile, with no more rows than a block\n"
            "# of the loop (ROW_BLOCKS), runs the cascade as written\n"
            f"ONE_TILE = ({_signature(written)!r}, WRITTEN_PROGRAMS, {short!r}, ROW_BLOCKS)\n"
        )
        written_arg = ", one_tile=ONE_TILE"
    tail = f'''
SIGNATURE = {_signature(program)!r}
INPUTS = ({names},)
OUTPUTS = ({outputs},)
{one_tile}

def forward(*args, **kwargs):
    """{outputs_eq} = forward({names_plain}): inputs by position (declaration order) or by name.

{io}
    """
    return call(SIGNATURE, PROGRAMS, args, kwargs, dtype={dtype}{written_arg})
'''
    doc = f'"""Standalone PyTorch module generated by einattn {einattn.__version__}; needs only torch.\n\n'
    inputs = ", ".join(program.inputs)
    doc += f'Spec {spec_name(written)}; call ``forward(...)`` with inputs {inputs}.\n"""\n\n'
    return doc + source + tail


class TorchKernel(Kernel):
    """A program compiled to PyTorch: ``source`` is the generated code, ``function`` what it defines."""

    backend = "torch"

    def __init__(self, program: Program, options: dict):
        opts = _options(options)
        written = program
        program = _compiled_form(program, opts)  # the fewest-pass form that einattn.rewrite proves (issue 5)
        super().__init__(program, options, written)
        self.opts = opts
        self._signature = _signature(program)
        self._programs: dict[bool, tuple] = {}  # (for finite inputs, for any inputs or None), per `empty`
        self.source = self._load(empty=False)
        self._short = _streamed(self.written, program)  # (ranks the rewrite streams, and their tiles)
        if self._short:
            self.as_written()  # (built now: torch.compile traces run(), where building it cannot be traced)

    def _load(self, empty: bool) -> str:
        gen_source = generate(self.program, self.opts, empty=empty, written=self.written)
        digest = hashlib.sha1(gen_source.encode()).hexdigest()[:16]
        name = f"einattn.lowering.generated_{digest}"
        module = sys.modules.get(name)
        if module is None:  # a real module: torch.compile looks functions' globals up by module name
            module = types.ModuleType(name)
            module.__file__ = f"<einattn torch: {self.program.name!a}>"
            code = compile(gen_source, module.__file__, "exec")
            exec(code, module.__dict__)  # our own source: validated names and numbers only
            sys.modules[name] = module
        self._programs[empty] = module.PROGRAMS
        if not empty:
            self._rows: dict[str, int] = module.ROW_BLOCKS  # (the loop's row blocks: see run)
        return gen_source

    def __reduce__(self):
        """Pickled as its spec and options: the generated code lives in a module of this process only
        (``einattn.lowering.generated_<digest>``), so a kernel loaded in another process compiles again."""
        return (TorchKernel, (self.written if self.written is not None else self.program, self.options))

    @property
    def function(self):
        """The generated ``program`` function: converted inputs, then sizes as ints (see the source)."""
        return self._programs[False][0]

    def run(self, inputs: dict[str, object]) -> tuple:
        decls = self._signature[0]
        try:
            tensors, o = R.prepare(decls, inputs, self.opts["dtype"])
        except R.InputError as e:
            raise EinError(str(e), hint=e.hint) from None
        shapes = {n: tuple(t.shape) for n, t in tensors.items()}
        sizes = bind_sizes(self.program, shapes)
        if R.fits_one_tile(self._short, self._rows, sizes):
            # one tile holds the whole streamed rank: nothing to stream, and the loop's bookkeeping (running
            # state, tile masks, row blocks) costs 5-10x the cascade as written at 8-128 keys; with no more
            # rows than a block of the loop, the written form's memory is one tile's, as the loop's (its
            # inputs are the same: prepared once)
            return self.as_written()._execute(tensors, o, bind_sizes(self.written, shapes), inputs)
        return self._execute(tensors, o, sizes, inputs)

    def _execute(self, tensors: dict, o: tuple, sizes: dict, inputs: dict) -> tuple:
        values = tuple(sizes[r] for r in self.program.ranks)
        empty = any(n == 0 for n in values)
        if empty not in self._programs:
            self._load(empty=True)
        return R.execute(self._programs[empty], tensors, self.program.inputs, values, o, inputs.values())


def _streamed(written: Program | None, compiled: Program) -> tuple[tuple[str, int], ...]:
    """(rank, tile) of each rank the rewrite streams in ``compiled`` (a ``rank M = M1 * M0`` that the
    rewrite made, not the spec), with the tile's size; empty where the compiled form is the spec itself."""
    if written is None or written is compiled:
        return ()
    mine = {p.parent for p in written.partitions}
    params = compiled.param_values
    out = []
    for part in compiled.partitions:
        if part.parent in mine or part.tile != "inner":
            continue
        tile = params.get(part.inner.upper())
        if not isinstance(tile, int):
            return ()
        out.append((part.parent, tile))
    return tuple(out)


def compile_program(program: Program, **options) -> TorchKernel:
    return TorchKernel(program, options)


__all__ = ["OPTIONS", "TorchKernel", "compile_program", "generate", "standalone_source"]
