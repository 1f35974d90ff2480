"""The public entry points: parse, load, compile.

>>> import einattn, numpy as np
>>> prog = einattn.parse('''
... input X[i, j]
... output S
... S[i] = X[i, j] :: max(j)
... ''')
>>> einattn.compile(prog)(X=np.array([[1.0, 3.0], [2.0, -1.0]]))
array([3., 2.])
"""

from __future__ import annotations

import os
from pathlib import Path

from . import check as _check
from . import parser as _parser
from .errors import EinError
from .ir import Program, program_cache
from .kernel import Kernel, backend_builder


def parse(text: str, filename: str = "<string>") -> Program:
    """Parse and check .ein source text; return the immutable IR. Raises :class:`EinError` when invalid."""
    if not isinstance(text, str):
        raise EinError(
            f"a spec is .ein text (a str), got {type(text).__name__}",
            hint="einattn.load(path) reads a .ein file" if isinstance(text, os.PathLike) else None,
        )
    return _check.check(_parser.parse(text, filename))


def read_spec(path: str | os.PathLike) -> str:
    """The text of a .ein file; a missing or unreadable file is a user error, not a traceback."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the spec
    except FileNotFoundError:
        raise EinError(f"no such file: {p}") from None
    except UnicodeDecodeError as e:
        raise EinError(f"{p} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise EinError(f"cannot read {p}: {e.strerror}") from None


def load(path: str | os.PathLike) -> Program:
    """Read, parse and check a .ein file."""
    return parse(read_spec(path), str(path))


def _program(spec: Program | str | os.PathLike) -> Program:
    if isinstance(spec, Program):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise EinError(
            f"a spec is a Program, a path to a .ein file or .ein text, got {type(spec).__name__}",
            hint="einattn.load(path) and einattn.parse(text) make a Program",
        )
    if isinstance(spec, str) and not spec.strip():
        raise EinError("the spec is empty", hint="give .ein text, a path to a .ein file or a Program")
    if isinstance(spec, os.PathLike) or "\n" not in spec:
        return load(spec)
    return parse(spec)


def compile(
    spec: Program | str | os.PathLike,
    backend: str = "numpy",
    params: dict[str, int | float] | None = None,
    **options,
) -> Kernel:
    """Compile a program (or a path to a .ein file, or .ein text) for a backend.

    ``params`` override the spec's ``param`` values. Options every backend takes:

    * ``passes``: ``"auto"`` compiles the fewest-pass form that ``einattn.rewrite`` can prove (the default for
      ``torch`` and ``triton``), ``"as-written"`` the spec's own cascade (the default for ``numpy``, the
      oracle); ``tile``: the tile size the rewrite introduces (64; 256 for torch, whose CPU steps pay per
      call).
    * ``dtype``: numpy computes in float64 (default) or float32; torch and triton follow the inputs.

    A backend rejects options it does not know; see docs/backends.md for the rest.
    """
    prog = _program(spec).with_params(_check.normalize_params(params))
    options_key = tuple(sorted(((k, _frozen(v)) for k, v in options.items()), key=lambda kv: kv[0]))
    try:
        hash(options_key)
    except TypeError:  # (a value the cache cannot key: compiled each time, its validation as usual)
        return backend_builder(backend)(prog, **options)
    return _compile_cached(prog, backend, options_key, _exact_key(prog.params, options_key))


def _frozen(value):
    """An option's value as a cache key: a list as a tuple (``float32=["GM", "SD"]``)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _exact_key(params, options) -> tuple:
    """What equality of programs and options leaves out: the type and sign of each value (``-0.0 == 0.0``,
    ``4.0 == 4`` and ``1 == True`` would share a compiled kernel, or an option's validation)."""
    return tuple((k, type(v).__name__, repr(v)) for k, v in (*params, *options))


@program_cache(maxsize=128)
def _compile_cached(prog: Program, backend: str, options: tuple, _exact: tuple) -> Kernel:
    return backend_builder(backend)(prog, **dict(options))
