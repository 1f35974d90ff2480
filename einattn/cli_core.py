"""``einattn check`` and ``einattn run``."""

from __future__ import annotations

import math
from pathlib import Path

import click

from .errors import EinError
from .ir import Program, size_name

MAX_SIZE = 2**31 - 1
"""The largest rank size the command line takes (the largest index constant too)."""


def check_input_bytes(prog: Program, rank_sizes: dict, file, hint: str) -> None:
    """A user error where the inputs at ``rank_sizes`` would take more than 256 TiB of float64: no machine
    holds them (allocating would only fail after a long wait)."""
    elements = sum(math.prod(rank_sizes[r] for r in prog.tensor(n).ranks) for n in prog.inputs)
    if elements * 8 > 2**48:
        shown = ", ".join(f"{size_name(r)}={n}" for r, n in rank_sizes.items())
        raise EinError(
            f"the inputs of {file} at sizes {shown} would take {elements * 8:.3g} bytes", hint=hint
        )


def parse_assignments(items: tuple[str, ...], what: str, numeric=float) -> dict[str, int | float]:
    """``("M=128", "P=64")`` -> ``{"M": 128, "P": 64}``; a malformed or repeated item is a user error."""
    out: dict[str, int | float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise EinError(
                f"bad {what} `{item}`", hint=f"write NAME=VALUE, e.g. {'M=128' if what == 'size' else 'W=4'}"
            )
        if name in out:
            raise EinError(
                f"{what} `{name}` is given twice (`--{what} {name}=...`)",
                hint=f"give each {what} once; the values differ or one of them is redundant",
            )
        try:
            out[name] = int(value)
        except ValueError:
            if numeric is int:
                raise EinError(f"{what} `{name}` must be an integer, got `{value}`") from None
            try:
                out[name] = float(value)
            except ValueError:
                raise EinError(f"{what} `{name}` must be a number, got `{value}`") from None
            written_inf = value.lstrip("+-").lower() in ("inf", "infinity")  # (infinity, written so)
            if math.isinf(out[name]) and not written_inf:  # 1e999: an error, as a spec's literal is
                raise EinError(
                    f"{what} `{name}` is too large: `{value}` is beyond float64's range (about 1.8e308)",
                    hint="a number beyond float64 is an error, never read as infinity",
                ) from None
    return out


def summary(prog: Program) -> str:
    def decl(name: str) -> str:
        t = prog.tensor(name)
        shape = f"[{', '.join(t.ranks)}]" if t.ranks else ""
        return f"{name}{shape}{' : int' if t.dtype == 'int' else ''}"

    parts = [
        "inputs " + ", ".join(decl(n) for n in prog.inputs),
        "outputs " + ", ".join(decl(n) for n in prog.outputs),
        "ranks " + ", ".join(prog.ranks),
        f"{len(prog.einsums)} Einsum{'s' * (len(prog.einsums) != 1)}",
    ]
    if prog.params:
        parts.append("params " + ", ".join(f"{k}={v}" for k, v in prog.params))
    if prog.iterative_ranks:
        parts.append("iterative " + ", ".join(prog.iterative_ranks))
    return "; ".join(parts)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
def check(files):
    """Validate .ein FILES; print a one-line summary of each (inputs, outputs, ranks, Einsums).

    Exit code 1 if any file has an error; every file is checked either way.
    """
    from .api import load

    failed = 0
    for path in files:
        try:
            if Path(path).is_dir():  # (`einattn check examples/*` names folders too: the others are checked)
                raise EinError(f"{path} is a directory, not a .ein file", hint=f"einattn check {path}/*.ein")
            prog = load(path)
        except EinError as e:
            click.echo(str(e), err=True)
            failed += 1
            continue
        click.echo(f"{path}: ok: {summary(prog)}")
    if failed:
        raise click.exceptions.Exit(1)


def random_inputs(prog: Program, sizes: dict[str, int], seed: int, dtype="float64") -> dict:
    """Standard-normal float inputs and integers in [0, 4) for `: int` inputs, reproducible from ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for name in prog.inputs:
        t = prog.tensor(name)
        shape = tuple(sizes[r] for r in t.ranks)
        if t.dtype == "int":
            out[name] = rng.integers(0, 4, size=shape)
        else:
            out[name] = rng.standard_normal(shape).astype(dtype)
    return out


def input_sizes(prog: Program, given: dict[str, int], default: int) -> dict[str, int]:
    """Sizes of the ranks that index inputs: given by upper-case name, else params, else ``default``."""
    input_ranks = list(dict.fromkeys(r for n in prog.inputs for r in prog.tensor(n).ranks))
    names = {size_name(r): r for r in input_ranks}
    for k, v in given.items():
        if k not in names:
            known = ", ".join(names) or "none"
            if k in prog.param_values:
                raise EinError(
                    f"`{k}` is a param, not a size", hint=f"override it as a param: --param {k}={v}"
                )
            raise EinError(f"unknown size `{k}`", hint=f"the sizes of this spec's inputs are: {known}")
        if v < 0:
            raise EinError(f"size `{k}` must not be negative, got {v}")
        if v > MAX_SIZE:
            raise EinError(
                f"size `{k}` is too large: {v}", hint=f"a rank size is at most {MAX_SIZE} (2^31 - 1)"
            )
    params = prog.param_values
    out = {r: int(given.get(size_name(r), params.get(size_name(r), default))) for r in input_ranks}
    for part in prog.partitions:  # a part of a partition that an input reads (landmarks per block): derived
        derived, fixed = (part.outer, part.inner) if part.tile == "inner" else (part.inner, part.outer)
        tile = params.get(size_name(fixed))
        known = part.parent in out and isinstance(tile, int) and tile > 0
        if known and derived in out and size_name(derived) not in given:
            out[derived] = -(-out[part.parent] // tile)
    return out


def compare_outputs(got, want) -> float:
    """The error of ``got`` against the reference ``want``, measured as ``einattn.testing.compare`` does:
    the largest ``|got - want| / (1 + |want|)`` over the points where both are finite, and ``inf`` when the
    NaNs, the ``+inf`` or the ``-inf`` are not at the same places in both (NaN matches NaN, an infinity
    matches the same infinity)."""
    import numpy as np

    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(got) & np.isfinite(want)
        same = (np.isnan(got) & np.isnan(want)) | (np.isinf(want) & (got == want))
        if not np.all(finite | same):
            return float("inf")
        if not finite.any():
            return 0.0
        err = np.abs(got[finite] - want[finite]) / (1 + np.abs(want[finite]))
    return float(err.max())


def _tolerance(ctx, param, value):
    """``--tol``: a finite number >= 0 (NaN would make every comparison pass or fail)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(f"a tolerance is a finite number >= 0, got {value}")
    return value


def _stats(x) -> str:
    import numpy as np

    finite = np.isfinite(x)
    if x.size == 0:
        return "empty"
    f = x[finite]
    text = (
        f"min {f.min():.4g}  max {f.max():.4g}  mean {f.mean():.4g}  std {f.std():.4g}"
        if f.size
        else "no finite"
    )
    bad = x.size - int(finite.sum())
    return text + (f"  non-finite {bad}" if bad else "")


def _as_numpy(x):
    import numpy as np

    if hasattr(x, "detach"):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--size", "sizes", multiple=True, metavar="X=N", help="A rank size, by its upper-case name (repeat)."
)
@click.option("--param", "params", multiple=True, metavar="X=V", help="Override a param (repeat).")
@click.option("--backend", default="numpy", show_default=True, help="numpy, torch or triton.")
@click.option(
    "--dtype", default=None, help="Element type of the inputs (float64, float32, float16, bfloat16)."
)
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the random inputs."
)
@click.option(
    "--default-size",
    default=8,
    show_default=True,
    type=click.IntRange(0, MAX_SIZE),
    help="Size of ranks not given with --size.",
)
@click.option(
    "--check", "compare", is_flag=True, help="Compare the result with the NumPy reference (float64)."
)
@click.option(
    "--tol",
    default=None,
    type=float,
    callback=_tolerance,
    help="Relative tolerance of --check, a number >= 0 (default: einattn test's, by backend and dtype).",
)
def run(file, sizes, params, backend, dtype, seed, default_size, compare, tol):
    """Run FILE on random inputs; print each output's shape and statistics.

    \b
    einattn run examples/attention_1pass.ein --size M=128 --size P=64 --param M0=32 --check
    """
    from .api import compile as compile_spec
    from .api import load

    prog = load(file).with_params(parse_assignments(params, "param"))
    rank_sizes = input_sizes(prog, parse_assignments(sizes, "size", int), default_size)
    shown = ", ".join(f"{size_name(r)}={n}" for r, n in rank_sizes.items())
    check_input_bytes(prog, rank_sizes, file, "give smaller sizes with --size or --default-size")
    try:
        inputs = random_inputs(prog, rank_sizes, seed)
        click.echo(f"{file}: backend {backend}, sizes {shown}, seed {seed}")
        options = {"dtype": dtype} if dtype else {}
        kernel = compile_spec(prog, backend=backend, **options)
        args = _convert(inputs, prog, backend, dtype)
        outs = kernel(**args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        refs = None
        if compare:
            ref = compile_spec(prog, backend="numpy")(**inputs)
            refs = ref if isinstance(ref, tuple) else (ref,)
    except MemoryError:
        raise EinError(
            f"not enough memory to run {file} at sizes {shown}",
            hint="give smaller sizes with --size or --default-size",
        ) from None
    worst = 0.0
    for k, (name, out) in enumerate(zip(prog.outputs, outs)):
        x = _as_numpy(out)
        line = f"  {name}{list(x.shape)} {getattr(out, 'dtype', x.dtype)}: {_stats(x)}"
        if refs is not None:
            err = compare_outputs(x, refs[k])
            worst = max(worst, err)
            line += f"  | vs numpy: max rel err {err:.2e}"
            if err == float("inf"):
                line += " (NaN or infinite values at different places)"
        click.echo(line)
    if refs is not None:
        limit = tol if tol is not None else _default_tol(backend, dtype)
        if not worst <= limit:
            raise EinError(f"{backend} differs from the NumPy reference: {worst:.2e} > tolerance {limit:.1e}")
        click.echo(f"check: ok ({backend} == numpy within {limit:.1e})")


def _default_tol(backend: str, dtype: str | None) -> float:
    """The tolerance of ``einattn test`` (``einattn.testing.TOLERANCES``) for the backend and the dtype the
    run computes in, so that the command a failing ``einattn test`` prints reproduces its verdict."""
    from .testing import TOLERANCES

    d = dtype or ("float32" if backend == "triton" else "float64")
    return TOLERANCES.get((backend, d), 2e-2 if d in ("float16", "bfloat16") else 1e-4)


def _convert(inputs: dict, prog: Program, backend: str, dtype: str | None) -> dict:
    if backend == "numpy":
        return inputs
    import torch

    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    floats = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16}
    floats["bfloat16"] = torch.bfloat16
    if dtype and dtype not in floats:
        raise EinError(f"unknown dtype `{dtype}`", hint=f"use {', '.join(floats)}")
    tdtype = floats[dtype] if dtype else (torch.float32 if backend == "triton" else torch.float64)
    out = {}
    for name, a in inputs.items():
        if prog.tensor(name).dtype == "int":
            out[name] = torch.as_tensor(a, dtype=torch.int64, device=device)
        else:
            out[name] = torch.as_tensor(a, device=device).to(tdtype)
    return out
