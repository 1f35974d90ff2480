"""einattn: a compiler for attention written as extended Einsum cascades.

Write a variant as a small ``.ein`` file in the extended-Einsum notation of the FuseMax paper, then parse,
analyse and compile it::

    import einattn
    prog = einattn.load("examples/attention_3pass.ein")
    kernel = einattn.compile(prog, backend="numpy")
    out = kernel(Q=q, K=k, V=v)

``import einattn`` imports neither torch nor triton; backends import them on first use.
"""

from .analysis import Report, analyze
from .api import compile, load, parse
from .autodiff import Gradient, grad
from .errors import EinError, EinWarning, InternalError
from .format import format_program as format
from .ir import Program

__version__ = "0.1.0"

__all__ = [
    "EinError",
    "EinWarning",
    "Gradient",
    "InternalError",
    "Program",
    "Report",
    "__version__",
    "analyze",
    "compile",
    "format",
    "grad",
    "load",
    "parse",
]


def __getattr__(name: str):
    """``einattn.nn`` (the PyTorch module wrapper) loads on first use: ``import einattn`` stays torch-free."""
    if name == "nn":
        import importlib

        return importlib.import_module(".nn", __name__)
    raise AttributeError(f"module 'einattn' has no attribute {name!r}")
