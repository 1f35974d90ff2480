"""The torch backend from the outside: standalone modules (`einattn compile`), torch.compile, the nn.Module
wrapper, and the memory bound of a streaming cascade."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import EXAMPLES
from einattn.lowering.torch_backend import standalone_source
from torch_helpers import as_tuple, inputs, sizes, to_torch

import einattn
from einattn.cli import main as cli
from einattn.nn import EinAttention


def run_python(code: str, cwd=None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


STANDALONE = [("causal_1pass", {"M0": 3}), ("gqa", {}), ("lse", {}), ("variants/07_lightning_block", {})]


def test_standalone_modules_need_only_torch(tmp_path):
    for k, (name, params) in enumerate(STANDALONE):
        prog = einattn.load(EXAMPLES / f"{name}.ein").with_params(params)
        (tmp_path / f"generated{k}.py").write_text(standalone_source(prog))
        x = to_torch(prog, inputs(prog, sizes(prog)))
        torch.save(x, tmp_path / f"inputs{k}.pt")
        torch.save(as_tuple(einattn.compile(prog, backend="torch")(**x)), tmp_path / f"want{k}.pt")
    out = run_python(
        f"""
        import importlib, sys
        sys.modules["einattn"] = None  # importing einattn now fails: the modules must not need it
        import torch
        for k in range({len(STANDALONE)}):
            generated = importlib.import_module(f"generated{{k}}")
            x = torch.load(f"inputs{{k}}.pt")
            got = generated.forward(**x)
            got = got if isinstance(got, tuple) else (got,)
            want = torch.load(f"want{{k}}.pt")
            same = len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want))
            positional = generated.forward(*[x[n] for n in generated.INPUTS])
            positional = positional if isinstance(positional, tuple) else (positional,)
            print(same and torch.equal(positional[0], want[0]))
        """,
        cwd=tmp_path,
    )
    assert out.split() == ["True"] * len(STANDALONE)


def test_compile_command(tmp_path, capsys):
    target = tmp_path / "causal.py"
    assert cli(["compile", str(EXAMPLES / "causal_1pass.ein"), "-o", str(target), "--param", "M0=8"]) == 0
    assert "wrote" in capsys.readouterr().out
    text = target.read_text()
    assert "M0=8" in text and "def forward(" in text
    assert "import einattn" not in text and "from einattn" not in text
    assert cli(["compile", str(EXAMPLES / "causal.ein")]) == 0  # to stdout
    assert "def program(" in capsys.readouterr().out
    assert cli(["compile", str(EXAMPLES / "causal.ein"), "--backend", "numpy"]) == 1
    assert "cannot write a standalone module" in capsys.readouterr().err
    assert cli(["compile", str(tmp_path / "missing.ein")]) == 1


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    kern = einattn.compile(EXAMPLES / "causal_1pass.ein", backend="torch", params={"M0": 6})
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    compiled = torch.compile(kern, fullgraph=True, backend="aot_eager")
    assert torch.allclose(compiled(Q=q, K=k, V=v), kern(Q=q, K=k, V=v), atol=1e-6)


def test_nn_module():
    slope = torch.tensor([0.5, 0.25])
    attn = EinAttention(EXAMPLES / "alibi.ein", weights={"slope": slope})
    q, k, v = (torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(3))
    out = attn(q, k, V=v)
    assert out.shape == (1, 2, 5, 4)
    out.sum().backward()
    assert attn.weights["slope"].grad is not None and q.grad is not None
    assert [n for n, _ in attn.named_parameters()] == ["weights.slope"]
    with pytest.raises(einattn.EinError, match="weight of this module"):
        attn(q, k, v, slope=slope)
    with pytest.raises(einattn.EinError, match="not an input"):
        EinAttention(EXAMPLES / "alibi.ein", weights={"bias": slope})
    plain = EinAttention(EXAMPLES / "causal_1pass.ein", params={"M0": 2})
    assert plain(q, k, v).shape == (1, 2, 5, 4)
    assert isinstance(plain, torch.nn.Module) and "causal_1pass" in repr(plain)


def test_import_einattn_does_not_import_torch():
    out = run_python(
        """
        import sys, einattn
        print("torch" in sys.modules)
        einattn.nn
        print("torch" in sys.modules)
        """
    )
    assert out.split() == ["False", "True"]


def test_streaming_memory_is_a_tile_not_the_score_matrix():
    """The 1-pass causal cascade at P = M = 4096, E = F = 64 holds O(tile), far below the 64 MB of QK.

    (benchmarks/cpu_attention.py --memory checks the issue's figure: P = M = 32768 under 512 MB.)"""
    out = run_python(
        f"""
        import json, resource, torch, einattn
        torch.set_num_threads(1)
        kern = einattn.compile({str(EXAMPLES / "causal_1pass.ein")!r}, backend="torch")
        q, k, v = (torch.randn(1, 1, 4096, 64) for _ in range(3))
        kern(Q=q[:, :, :256], K=k[:, :, :256], V=v[:, :, :256])  # libraries and allocator warm
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with torch.no_grad():
            kern(Q=q, K=k, V=v)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"peak_mb": (after - before) / 1024}}))
        """
    )
    peak = json.loads(out)["peak_mb"]
    assert peak < 24, f"peak memory {peak:.0f} MB above the inputs"
