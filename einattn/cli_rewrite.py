"""``einattn fmt``, ``einattn rewrite`` and ``einattn grad``: print a spec canonically, its derived streaming
form, or its backward cascade."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_core import MAX_SIZE
from .errors import EinError


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--check", is_flag=True, help="Print only the files that would change (on stderr); exit 1 if any."
)
@click.option("--in-place", "-i", "in_place", is_flag=True, help="Rewrite the files instead of printing.")
def fmt(files, check, in_place):
    """Print FILE in canonical .ein layout (comments kept); parsing the result gives the same program.

    \b
    einattn fmt examples/causal.ein
    einattn fmt --check examples/*.ein
    einattn fmt --in-place my_variant.ein
    """
    from .api import parse, read_spec
    from .format import format_program

    if check and in_place:
        raise click.UsageError("--check and --in-place exclude each other")
    if len(files) > 1 and not (check or in_place):
        raise click.UsageError("give one FILE to print, or use --check or --in-place")
    unformatted = 0
    for path in files:
        text = read_spec(path)
        new = format_program(parse(text, path))
        if check:
            if new != text:
                click.echo(f"{path}: would reformat", err=True)
                unformatted += 1
        elif in_place:
            if new != text:
                Path(path).write_text(new, encoding="utf-8")
                click.echo(f"{path}: reformatted", err=True)
        else:
            click.echo(new, nl=False)
    if unformatted:
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--passes", type=click.Choice(["1", "2"]), default="1", show_default=True, help="Passes of the result."
)
@click.option(
    "--rank", default="m", show_default=True, help="The rank to stream over (the key/value sequence)."
)
@click.option(
    "--tile",
    default=64,
    show_default=True,
    type=click.IntRange(1, MAX_SIZE),
    help="Tile size along the rank.",
)
@click.option(
    "--split-k",
    "split",
    is_flag=True,
    help="Print the split-K form instead: the partial, merge and finish cascades.",
)
def rewrite(file, passes, rank, tile, split):
    """Print the 1-pass (or 2-pass) cascade derived from FILE, as .ein, with the derivation as comments.

    Every rule's side condition is checked; a cascade that cannot be streamed is an error that names the
    Einsum and the condition.

    \b
    einattn rewrite examples/attention_3pass.ein
    einattn rewrite examples/causal.ein --passes 2 --tile 128
    einattn rewrite examples/attention_3pass.ein --split-k
    """
    from .api import parse, read_spec
    from .format import format_program
    from .rewrite import rewrite as derive
    from .rewrite import split_k, stream

    prog = parse(read_spec(file), file)
    if split:
        sk = split_k(prog, rank, tile)
        for title, p in (("partial", sk.partial), ("merge", sk.merge), ("finish", sk.finish)):
            click.echo(f"# ==== {title} " + "=" * (100 - len(title)))
            click.echo(format_program(p))
        return
    new, derivation = derive(prog, int(passes), rank, tile)
    streamed = stream(prog, rank, tile) if new is prog and int(passes) == 1 else None
    if streamed is not None:  # already 1-pass, with sums that pair keys with queries: rule 3
        new = streamed
    elif new is prog:  # nothing to rewrite: say so, then print the spec as it is
        for line in derivation.lines():
            click.echo(f"# {line}")
    click.echo(format_program(new), nl=False)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--wrt",
    default=None,
    metavar="X,Y",
    help="The float inputs to differentiate with respect to, comma-separated (default: every one).",
)
@click.option(
    "--saved",
    default=None,
    metavar="O,T",
    help="Computed tensors whose forward values the backward takes as inputs (the outputs, say), "
    "comma-separated: `sum_m dA * A` becomes `sum_f dO * O` where that is exact.",
)
@click.option(
    "--stages",
    is_flag=True,
    help="Print the backward pass as the triton backend runs it: the outputs saved, cut into 1-pass "
    "programs over the forward's streamed rank and its rows (one fused kernel each where they hold "
    "key-by-query values).",
)
@click.option("--tile", default=64, show_default=True, help="With --stages: the tile of the 1-pass forms.")
@click.option("--param", "params", multiple=True, metavar="X=V", help="Override a param (repeat).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write the .ein here instead of printing."
)
def grad(file, wrt, saved, stages, tile, params, output):
    """Print the backward cascade of FILE: its gradients, derived in reverse mode as extended Einsums.

    The result is a spec: its inputs are FILE's inputs and one cotangent per output (dAV: the gradient of the
    loss with respect to AV), its outputs the gradients (dQ, dK, dV). Every backend runs it, and `einattn
    analyze` reads it.

    \b
    einattn grad examples/attention_3pass.ein
    einattn grad examples/alibi.ein --wrt Q,slope -o alibi_grad.ein
    einattn grad examples/causal.ein --saved AV
    einattn grad examples/causal.ein --stages
    """
    from .api import load
    from .autodiff import grad as derive
    from .cli_core import parse_assignments

    names = None if wrt is None else tuple(n.strip() for n in wrt.split(",") if n.strip())
    kept = () if saved is None else tuple(n.strip() for n in saved.split(",") if n.strip())
    prog = load(file).with_params(parse_assignments(params, "param"))
    if stages:
        if kept:
            raise EinError(
                "--saved has no effect with --stages: the stages save the outputs (as the triton backend)",
                hint="drop --saved, or drop --stages to choose the saved tensors",
            )
        text = _staged_text(prog, names, tile)
    else:
        g = derive(prog, names, saved=kept)
        text = g.text
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as e:
            raise EinError(
                f"cannot write {output}: {e.strerror or e}", hint="-o takes a file in a folder that exists"
            ) from None
        what = "the stages" if stages else ", ".join(g.gradients.values())
        click.echo(f"wrote {output}: {what}", err=True)
    else:
        click.echo(text, nl=False)


def _staged_text(prog, wrt, tile: int) -> str:
    """The stages of ``prog``'s backward pass, each a spec under a header saying what it computes."""
    from .format import format_program
    from .staging import backward

    sb = backward(prog, wrt=wrt, tile=tile)
    m, p = sb.sequence
    g = sb.gradient
    saved = ", ".join(f"{a} (the forward's {n})" if a != n else a for a, n in g.saved_inputs.items())
    out = [
        f"# backward of {prog.name} in {len(sb.stages)} stages over the keys `{m}` and the rows `{p}`",
        f"# inputs: the forward's inputs, the cotangents {', '.join(g.cotangents.values())}"
        + (f", the saved {saved}" if saved else ""),
        f"# gradients: {', '.join(f'{v} (of {k})' for k, v in g.gradients.items())}",
    ]
    for k, s in enumerate(sb.stages, 1):
        how = (
            f"a loop over tiles of `{s.rank}`: one fused kernel"
            if s.dense
            else (f"streams `{s.rank}`" if s.rank else "per row: small")
        )
        out += [
            "",
            f"# ---- stage {k}: {', '.join(s.outputs)} ({how})",
            format_program(s.program, comments=False).rstrip(),
        ]
    return "\n".join(out) + "\n"
