"""Generated source never contains text from a spec other than validated identifiers and numbers.

A spec's comments, and a file name crafted to break out of a header comment, must not reach the Python that
the torch and triton backends generate and load; the only imports are the backend's own.
"""

from __future__ import annotations

import ast
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from einattn.lowering import torch_backend, triton_backend

import einattn

SPEC = """\
# SECRET_HEADER_TEXT: import os; os.system("echo pwned")
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]   # SECRET_TRAILING_TEXT
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
N[b, h, m, p]  = exp(S[b, h, m, p] - GM[b, h, p])
D[b, h, p]     = N[b, h, m, p]
O[b, h, p, f]  = N[b, h, m, p] * V[b, h, m, f] / D[b, h, p]
"""

ALLOWED_IMPORTS = {
    "math",
    "numbers",  # the torch runtime: a NumPy scalar for a scalar input is the number it holds
    "os",  # the triton module reads TRITON_INTERPRET
    "torch",
    "torch.utils.checkpoint",  # the torch runtime: blocks of rows under autograd
    "threading",  # the torch runtime: scratch buffers kept per thread
    "contextlib",  # the torch runtime: autocast off around a call
    "triton",
    "triton.language",
    "__future__",
    "functools",
    "itertools",
    "einattn.lowering.torch_runtime",  # the torch kernel's runtime helpers (standalone modules inline them)
}


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    folder = tmp_path_factory.mktemp("specs")
    name = 'evil\nimport os\nos.system("echo pwned") #\'".ein'
    path = folder / name
    path.write_text(SPEC)
    return einattn.load(path)


def sources(program):
    yield "torch kernel", einattn.compile(program, backend="torch").source
    yield "torch standalone", torch_backend.standalone_source(program)
    for passes in ("auto", "as-written"):
        yield f"triton kernel {passes}", einattn.compile(program, backend="triton", passes=passes).source
        yield f"triton standalone {passes}", triton_backend.standalone_source(program, passes=passes)


def test_no_spec_text_reaches_generated_source(program):
    for what, src in sources(program):
        assert "SECRET" not in src, what  # no comment of the spec is copied
        assert "\nos.system(" not in src and '"""' not in src.split("\n", 1)[1].split('"""', 1)[0], what
        tree = ast.parse(src)  # the file name could not break out of a comment or docstring into code
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
        assert imported <= ALLOWED_IMPORTS, (what, imported - ALLOWED_IMPORTS)
        calls = {
            n.func.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        }
        assert "system" not in calls, what


def test_tensor_names_appear_only_as_prefixed_identifiers(program):
    src = einattn.compile(program, backend="torch").source
    tree = ast.parse(src)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for tensor in ("S", "GM", "N", "D", "O", "Q", "K", "V"):
        assert tensor not in names  # spec names are prefixed (t_S, ...): they cannot shadow builtins
