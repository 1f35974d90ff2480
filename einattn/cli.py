"""The ``einattn`` command line.

Exit codes: 0 success, 1 a user error (a bad spec, bad options: a located message, never a traceback),
2 an internal error (a bug in einattn: the traceback is printed, please report it).

Commands are loaded lazily from the ``COMMANDS`` table, so ``einattn check`` never imports torch or triton.
Adding a command is one entry there: ``"name": "module:attribute"`` naming a ``click.Command``.
"""

from __future__ import annotations

import importlib
import sys
import traceback
import warnings

import click

from .errors import EinError, EinWarning

COMMANDS: dict[str, str] = {
    "analyze": "einattn.cli_analyze:analyze",
    "check": "einattn.cli_core:check",
    "run": "einattn.cli_core:run",
    "compile": "einattn.cli_compile:compile_command",
    "fmt": "einattn.cli_rewrite:fmt",
    "grad": "einattn.cli_rewrite:grad",
    "rewrite": "einattn.cli_rewrite:rewrite",
    "test": "einattn.cli_proptest:test_command",
}

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(package_name="einattn", prog_name="einattn")
def cli():
    """einattn: compile attention variants written as extended Einsum cascades (.ein files).

    \b
    einattn check examples/attention_3pass.ein
    einattn run examples/attention_1pass.ein --size M=128 --size P=64 --check
    """


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, EinWarning):
        click.echo(str(message), err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line), err=True, nl=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``einattn`` console script; returns the exit code."""
    warnings.showwarning = _show_warning
    try:
        rc = cli.main(args=argv, prog_name="einattn", standalone_mode=False)
    except EinError as e:
        click.echo(str(e), err=True)
        return 1
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as e:  # bad options and arguments are user errors: exit 1, not click's 2
        e.show()
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception:  # anything else is a bug in einattn
        click.echo(traceback.format_exc(), err=True)
        click.echo(
            "internal error: this is a bug in einattn, not in your spec; please report it with the spec",
            err=True,
        )
        return 2
    return rc if isinstance(rc, int) else 0


def run() -> None:
    sys.exit(main())
