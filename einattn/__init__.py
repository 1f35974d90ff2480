"""einattn: a compiler for attention written as extended Einsum cascades.

Write a variant as a small ``.ein`` file in the extended-Einsum notation of the FuseMax paper, then parse,
analyse and compile it::

    import einattn
    prog = einattn.load("examples/attention_3pass.ein")
    kernel = einattn.compile(prog, backend="numpy")
    out = kernel(Q=q, K=k, V=v)

``import einattn`` imports neither torch nor triton; backends import them on first use.
"""

from .api import compile, load, parse
from .errors import EinError, EinWarning, InternalError
from .ir import Program

__version__ = "0.1.0"

__all__ = ["EinError", "EinWarning", "InternalError", "Program", "__version__", "compile", "load", "parse"]
