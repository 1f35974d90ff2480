"""``einattn test``: property-test a spec across backends from the command line.

Each example draws rank sizes (1 included, sizes that tiles do not divide) and a data seed; the inputs are the
ones ``einattn run --seed`` makes, so a failure prints an ``einattn run`` command that reproduces it exactly.
Hypothesis shrinks a failure to a minimal example (smallest sizes, then seed) before it is reported.
"""

from __future__ import annotations

import click

from .cli_core import MAX_SIZE
from .errors import EinError
from .ir import size_name


@click.command("test")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--backends",
    default="torch",
    show_default=True,
    help="Comma-separated backends to compare with the NumPy reference (numpy, torch, triton).",
)
@click.option(
    "--examples",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many random examples to try.",
)
@click.option(
    "--seed", default=0, show_default=True, help="Seed of the example generator (reproducible runs)."
)
@click.option(
    "--max-size",
    default=9,
    show_default=True,
    type=click.IntRange(1, MAX_SIZE),
    help="Largest size drawn for any rank (at least 1).",
)
@click.option("--param", "params", multiple=True, metavar="X=V", help="Override a param (repeat).")
@click.option("--dtype", default=None, help="Input dtype for the backends under test (default: per backend).")
def test_command(file, backends, examples, seed, max_size, params, dtype):
    """Property-test FILE: every backend in --backends must equal the NumPy reference.

    \b
    einattn test examples/causal.ein --backends torch --examples 100
    """
    import hypothesis
    import numpy as np
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from . import api
    from .cli_core import _convert, check_input_bytes, parse_assignments, random_inputs
    from .testing import TOLERANCES, NotEquivalent, compare

    names = list(dict.fromkeys(b.strip() for b in backends.split(",") if b.strip()))
    if not names:
        raise EinError(
            f"no backend to test in --backends {backends!r}",
            hint="name the backends to compare with the NumPy reference, e.g. --backends torch,triton",
        )
    prog = api.load(file).with_params(parse_assignments(params, "param"))
    kernels = {
        b: api.compile(prog, backend=b, **({"dtype": dtype} if dtype and b == "numpy" else {})) for b in names
    }
    reference = api.compile(prog, backend="numpy")
    ranks = list(dict.fromkeys(r for n in prog.inputs for r in prog.tensor(n).ranks))
    fixed = {r: prog.param_values[size_name(r)] for r in ranks if size_name(r) in prog.param_values}
    largest = {r: fixed.get(r, max_size) for r in ranks}  # (the examples may draw these)
    check_input_bytes(prog, largest, file, "give a smaller --max-size")

    failure: dict = {}

    from rich.console import Console

    console = Console(stderr=True)  # (a progress bar on a terminal only: nothing in a pipe or a log)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=True,
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(f"testing {file}", total=examples)

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=False,
        )
        @given(
            st.fixed_dictionaries(
                {
                    r: st.just(v) if r in fixed else st.integers(1, max_size)
                    for r, v in ((r, fixed.get(r)) for r in ranks)
                }
            ),
            st.integers(0, 2**31 - 1),
        )
        @hypothesis.seed(seed)
        def prop(sizes, data_seed):
            progress.advance(task)
            inputs = random_inputs(prog, sizes, data_seed)
            want = reference(**inputs)
            want = want if isinstance(want, tuple) else (want,)
            for b, kernel in kernels.items():
                d = dtype or ("float32" if b == "triton" else "float64")
                got = kernel(**_convert(inputs, prog, b, dtype))
                got = got if isinstance(got, tuple) else (got,)
                tol = TOLERANCES.get((b, d), 1e-4)
                for name, g, w in zip(prog.outputs, got, want):
                    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where both are inf
                        err = compare(g, w, tol)
                    if not err <= tol:
                        failure.update(
                            backend=b, output=name, error=err, tol=tol, sizes=sizes, seed=data_seed
                        )
                        raise NotEquivalent(f"{b} differs on {name}")

        try:
            prop()
        except NotEquivalent:
            f = failure
            size_args = " ".join(
                f"--size {size_name(r)}={n}" for r, n in f["sizes"].items() if r not in fixed
            )
            param_args = " ".join(f"--param {p}" for p in params)
            cmd = f"einattn run {file} --backend {f['backend']} {size_args} {param_args}"
            cmd += f" --dtype {dtype}" if dtype else ""
            cmd += f" --seed {f['seed']} --check"
            raise EinError(
                f"{f['backend']} differs from the NumPy reference on output `{f['output']}`: "
                f"error {f['error']:.3g} > tolerance {f['tol']:.1g}\n"
                f"minimal failing example: sizes "
                + ", ".join(f"{size_name(r)}={n}" for r, n in f["sizes"].items())
                + f"; data seed {f['seed']}",
                hint=f"reproduce with: {' '.join(cmd.split())}",
            ) from None
    click.echo(f"{file}: ok: {', '.join(names)} == numpy on {examples} random examples (seed {seed})")
