"""``einattn analyze``: passes, barriers, fusion groups, live footprint and op counts of .ein files."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import click

from .cli_core import MAX_SIZE, parse_assignments
from .errors import EinError, EinWarning

RENDERED = {".svg": "svg", ".png": "png", ".pdf": "pdf"}


def _known_names(prog) -> tuple[set[str], set[str]]:
    from .ir import size_name

    return {size_name(r) for r in prog.ranks} - set(prog.param_values), set(prog.param_values)


def _restrict(given: dict, known: set[str], several: bool) -> dict:
    """With several files, each takes only the sizes and params it has; a single file takes them all."""
    return {k: v for k, v in given.items() if k in known} if several else dict(given)


def _load(path: str):
    from .api import load

    with warnings.catch_warnings():  # an unused input does not matter to the analysis
        warnings.simplefilter("ignore", EinWarning)
        return load(path)


def _write_text(path: Path, text: str) -> None:
    """Write a file; a missing folder or a denied write is a user error, not a traceback."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise EinError(
            f"cannot write {path}: {e.strerror or e}",
            hint="--dot takes a file in a folder that exists" if isinstance(e, FileNotFoundError) else None,
        ) from None


def _check_dot_target(out: Path, several: bool) -> None:
    """``--dot OUT``: a file in a folder that exists, or with several specs a folder (made here)."""
    if not several:
        if not out.parent.is_dir():
            raise EinError(
                f"cannot write {out}: there is no folder {out.parent}",
                hint="--dot takes a file in a folder that exists",
            )
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EinError(
            f"cannot create the folder {out}: {e.strerror or e}",
            hint="with several files, --dot names a folder that gets one NAME.dot per spec",
        ) from None


def _write_dot(report, out: Path) -> str:
    """Write DOT (and render it when ``out`` asks for an image and Graphviz is installed); returns a note."""
    from .analysis.dot import to_dot

    text = to_dot(report)
    fmt = RENDERED.get(out.suffix.lower())
    if fmt is None:
        _write_text(out, text)
        return f"wrote {out}"
    dot_path = out.with_suffix(".dot")
    _write_text(dot_path, text)
    exe = shutil.which("dot")
    if exe is None:
        return (
            f"wrote {dot_path}; note: Graphviz `dot` is not installed, so {out} was not rendered "
            f"(install graphviz, then: dot -T{fmt} {dot_path} -o {out})"
        )
    done = subprocess.run([exe, f"-T{fmt}", str(dot_path), "-o", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise EinError(f"Graphviz failed to render {out}: {done.stderr.strip()[:300]}")
    return f"wrote {dot_path} and {out}"


def _after_rewrite(report, tile: int, buffer, elem_bytes: int) -> dict | None:
    """The analysis of what ``compile(passes="auto")`` compiles, or None when the rewrite changes nothing."""
    from .analysis import analyze as run_analysis
    from .rewrite import for_backend

    prog = report.program
    new, found = for_backend(prog, "auto", tile)
    refusal = str(found[0].message).splitlines()[0] if found else None
    if new is prog:
        return (
            None
            if refusal is None
            else {
                "classification": report.classification,
                "passes": report.passes,
                "footprint": str(report.footprint),
                "refusal": refusal,
            }
        )
    after = run_analysis(
        new, sizes=report.sizes or None, buffer=buffer, rank=report.rank, elem_bytes=elem_bytes
    )
    return {
        "classification": after.classification,
        "passes": after.passes,
        "footprint": str(after.footprint),
        "refusal": refusal,
    }


@click.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--size", "sizes", multiple=True, metavar="X=N", help="A rank size by upper-case name (repeat)."
)
@click.option("--param", "params", multiple=True, metavar="X=V", help="Override a param (repeat).")
@click.option("--rank", default=None, metavar="R", help="The streamed rank to summarise (default: chosen).")
@click.option("--buffer", default=None, metavar="BYTES", help="On-chip buffer: 16MiB, 512KiB, 1GB or bytes.")
@click.option("--elem-bytes", default=2, show_default=True, metavar="N", help="Bytes per element.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema einattn.analysis/1).")
@click.option(
    "--dot",
    "dot",
    default=None,
    metavar="OUT",
    type=click.Path(),
    help="Write the dataflow graph as DOT (OUT.svg/.png: also render it if Graphviz is installed).",
)
@click.option(
    "--rewrite/--no-rewrite",
    default=True,
    show_default=True,
    help='Also show the class after the rewrite that compile(passes="auto") applies.',
)
@click.option(
    "--tile",
    default=64,
    show_default=True,
    metavar="N",
    type=click.IntRange(1, MAX_SIZE),
    help="Tile size of that rewrite.",
)
@click.option(
    "--compare",
    nargs=2,
    default=None,
    metavar="A B",
    type=click.Path(dir_okay=False),
    help="Two cascades side by side (footprint at M = 1K .. 1M unless --size gives it).",
)
def analyze(files, sizes, params, rank, buffer, elem_bytes, as_json, dot, rewrite, tile, compare):
    """Analyse .ein FILES: passes per rank and their barriers, fusion groups, minimum live footprint,
    operation counts and arithmetic intensity (FuseMax's analysis, symbolic in the sizes).

    \b
    einattn analyze examples/attention_3pass.ein --size M=4096 --size F=64 --buffer 16MiB
    einattn analyze examples/*.ein --json
    einattn analyze --compare examples/attention_3pass.ein examples/attention_1pass.ein
    """
    from .analysis import analyze as run_analysis
    from .analysis.report import parse_bytes

    given_sizes = parse_assignments(sizes, "size", int)
    given_params = parse_assignments(params, "param")
    if buffer is not None:
        buffer = parse_bytes(buffer)
    if compare:
        if files:
            raise EinError("give either FILES or --compare A B, not both")
        paths = list(compare)
    elif not files:
        raise EinError("no file to analyse", hint="einattn analyze FILE.ein [FILE.ein ...]")
    else:
        paths = list(files)

    several = len(paths) > 1
    if dot is not None:  # a bad --dot target fails before any output
        _check_dot_target(Path(dot), several)
    seen_sizes: set[str] = set()
    seen_params: set[str] = set()
    reports = []
    failed = 0
    for path in paths:
        try:
            prog = _load(path)
            size_names, param_names = _known_names(prog)
            seen_sizes |= size_names & set(given_sizes)
            seen_params |= param_names & set(given_params)
            reports.append(
                (
                    path,
                    run_analysis(
                        prog,
                        sizes=_restrict(given_sizes, size_names, several),
                        params=_restrict(given_params, param_names, several),
                        buffer=buffer,
                        rank=rank,
                        elem_bytes=elem_bytes,
                        strict=True,
                    ),
                )
            )
        except EinError as e:
            if compare or not several:
                raise
            click.echo(str(e), err=True)
            failed += 1
    if several:
        for what, given, seen in (("size", given_sizes, seen_sizes), ("param", given_params, seen_params)):
            unknown = [k for k in given if k not in seen]
            if unknown and reports:
                raise EinError(f"{what} `{unknown[0]}` belongs to none of the files")

    if compare:
        (_, a), (_, b) = reports
        if as_json:
            click.echo(json.dumps({"a": a.to_json(), "b": b.to_json()}, indent=2))
        else:
            from .analysis.render import render_compare

            click.echo(render_compare(a, b), nl=False)
    elif as_json:
        data = []
        for _, r in reports:
            d = r.to_json()
            if rewrite:
                d["after_rewrite"] = _after_rewrite(r, tile, buffer, elem_bytes)
            data.append(d)
        click.echo(json.dumps(data if several else data[0], indent=2))
    else:
        texts = []
        for _, r in reports:
            lines = r.to_text().split("\n")
            if rewrite:
                after = _after_rewrite(r, tile, buffer, elem_bytes)
                if after is None:
                    line = (
                        '  after the rewrite (passes="auto"): unchanged, already the fewest passes it proves'
                    )
                else:
                    line = f'  after the rewrite (passes="auto", tile {tile}): {after["classification"]}'
                    line += f"; footprint {after['footprint']}"
                    if after["refusal"]:
                        line += f"\n    ({after['refusal']})"
                lines.insert(2, line)
            texts.append("\n".join(lines))
        click.echo("\n".join(texts), nl=False)

    if dot is not None:
        out = Path(dot)
        if several:
            targets = [(r, out / (Path(p).stem + ".dot")) for p, r in reports]
        else:
            targets = [(reports[0][1], out)]
        for r, target in targets:
            click.echo(_write_dot(r, target), err=True)
    if failed:
        raise click.exceptions.Exit(1)
