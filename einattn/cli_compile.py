"""``einattn compile``: write a spec as a standalone module for a backend.

A backend that can do this provides ``standalone_source(program, **options) -> str`` in the module named by
its entry in :data:`einattn.kernel.BACKENDS`; the command needs nothing else from it, so the triton backend
plugs in the same way.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from .cli_core import parse_assignments
from .errors import EinError
from .kernel import BACKENDS


def standalone_writer(backend: str):
    """The backend's ``standalone_source`` function; a user error when it has none."""
    if backend not in BACKENDS:
        raise EinError(f"unknown backend `{backend}`", hint=f"available backends: {', '.join(BACKENDS)}")
    module = importlib.import_module(BACKENDS[backend].split(":")[0])
    writer = getattr(module, "standalone_source", None)
    if writer is None:
        capable = [
            b
            for b, ref in BACKENDS.items()
            if hasattr(importlib.import_module(ref.split(":")[0]), "standalone_source")
        ]
        raise EinError(
            f"the {backend} backend cannot write a standalone module",
            hint=f"backends that can: {', '.join(capable) or 'none'}",
        )
    return writer


@click.command("compile")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--backend", default="torch", show_default=True, help="The backend that generates the module.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write here (default: stdout)."
)
@click.option("--param", "params", multiple=True, metavar="X=V", help="Override a param (repeat).")
@click.option("--dtype", default=None, help="Compute dtype, for backends that take one (float32, float64).")
@click.option("--no-skip-tiles", is_flag=True, help="Compute dead tiles instead of skipping them.")
@click.option(
    "--passes",
    type=click.Choice(["auto", "as-written"]),
    default=None,
    help="`auto`: the fewest-pass form einattn.rewrite proves; `as-written`: the spec's own cascade "
    "[default: the backend's, auto for torch and triton].",
)
@click.option(
    "--tile",
    type=click.IntRange(1, 1 << 20),
    default=None,
    metavar="N",
    help="Tile size of the rewrite's streamed rank [default: the backend's, 256 torch, 64 triton].",
)
def compile_command(file, backend, output, params, dtype, no_skip_tiles, passes, tile):
    """Compile FILE for a backend and write a standalone module that needs only that backend's runtime.

    \b
    einattn compile examples/causal_1pass.ein --backend torch -o causal.py
    python -c "import torch, causal; print(causal.forward(*[torch.randn(1, 2, 64, 16)] * 3).shape)"
    """
    from .api import load

    prog = load(file).with_params(parse_assignments(params, "param"))
    options = {}
    if dtype:
        options["dtype"] = dtype
    if no_skip_tiles:
        options["skip_tiles"] = False
    if passes:
        options["passes"] = passes
    if tile is not None:
        options["tile"] = tile
    source = standalone_writer(backend)(prog, **options)
    if output is None:
        click.echo(source, nl=False)
        return
    try:
        Path(output).write_text(source, encoding="utf-8")
    except OSError as e:
        raise EinError(f"cannot write {output}: {e.strerror}") from None
    click.echo(f"{file}: wrote {output} ({backend} backend, {len(source.splitlines())} lines)")
