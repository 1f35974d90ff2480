"""The torch backend from the outside: standalone modules (`einattn compile`), torch.compile, the nn.Module
wrapper, and the memory bound of a streaming cascade."""

from __future__ import annotations

import json
import os
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


def run_python(code: str, cwd=None, env=None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env=None if env is None else {**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


PEAK = """
import re


def _status(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024


def peak_above(run):
    # MB of resident memory that run() adds at its peak: VmHWM, reset just before (clear_refs 5)
    open("/proc/self/clear_refs", "w").write("5")
    before = _status("VmRSS")
    run()
    return _status("VmHWM") - before
"""


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
    # the rewrite's tile and passes, as einattn.compile takes them
    assert cli(["compile", str(EXAMPLES / "causal.ein"), "--tile", "16", "-o", str(target)]) == 0
    assert "'tile': 16" in target.read_text() and "M0=16" in target.read_text()
    assert cli(["compile", str(EXAMPLES / "causal.ein"), "--passes", "as-written", "-o", str(target)]) == 0
    assert "'passes': 'as-written'" in target.read_text() and "for i_m1" not in target.read_text()
    assert cli(["compile", str(EXAMPLES / "causal.ein"), "--tile", "0"]) == 1  # a user error


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    kern = einattn.compile(EXAMPLES / "causal_1pass.ein", backend="torch", params={"M0": 6})
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    compiled = torch.compile(kern, fullgraph=True, backend="aot_eager")
    assert torch.allclose(compiled(Q=q, K=k, V=v), kern(Q=q, K=k, V=v), atol=1e-6)


def test_torch_compile_fullgraph_across_sequence_lengths():
    """A second length makes Dynamo trace the sizes symbolically; the layout helpers sorted strides
    (`_memory_order`), which it cannot do with symbols (`Unsupported: sort with non-constant keys`). Under
    compile they take the logical order."""
    torch._dynamo.reset()
    kern = einattn.compile(EXAMPLES / "causal.ein", backend="torch", tile=8, row_block=16)
    compiled = torch.compile(kern, fullgraph=True, backend="aot_eager")
    for n in (5, 40):
        q, k, v = (torch.randn(1, 2, n, 4) for _ in range(3))
        torch.testing.assert_close(compiled(q, k, v), kern(q, k, v), rtol=1e-5, atol=1e-6)


def test_torch_compile_fullgraph_with_gradients():
    """Under autograd each block of rows runs through a checkpoint, which Dynamo traces as a higher-order op:
    nothing in the block may mutate state from outside it."""
    torch._dynamo.reset()
    kern = einattn.compile(EXAMPLES / "causal_1pass.ein", backend="torch", params={"M0": 4}, row_block=8)
    assert "_rows_block(" in kern.source
    x = [torch.randn(1, 2, 16, 8, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    compiled = torch.compile(kern, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*x).square().sum(), x)
    want = torch.autograd.grad(kern(*x).square().sum(), x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


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
    with pytest.raises(einattn.EinError, match=r"`grp` is declared `: int`: it cannot be a weight"):
        EinAttention(EXAMPLES / "variants" / "02_gqa_groupmap.ein", weights={"grp": torch.tensor([0, 0])})
    plain = EinAttention(EXAMPLES / "causal_1pass.ein", params={"M0": 2})
    assert plain(q, k, v).shape == (1, 2, 5, 4)
    assert isinstance(plain, torch.nn.Module) and "causal_1pass" in repr(plain)


@pytest.mark.parametrize("name", ["causal", "attention_1pass", "sliding_window", "lse", "attention_3pass"])
def test_a_call_after_inference_mode_works(name):
    """Evaluation under `torch.inference_mode`, then training or `no_grad` again (a reviewer's finding,
    session 11): the scratch buffers a call keeps for the next one were inference tensors, and the next call
    outside the mode wrote into them (a raw RuntimeError). A call keeps its buffers apart by its mode."""
    kern = einattn.compile(EXAMPLES / f"{name}.ein", backend="torch")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn((1, 2, 64, 16), generator=g) for _ in range(3))
    with torch.inference_mode():
        first = as_tuple(kern(q, k, v))
    for mode in (torch.no_grad, torch.enable_grad, torch.inference_mode, torch.no_grad):
        with mode():
            again = as_tuple(kern(q, k, v))
        for a, b in zip(again, first):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    attn = EinAttention(EXAMPLES / f"{name}.ein")  # eval under inference_mode, then back to training
    with torch.inference_mode():
        attn.eval()(q, k, v)
    qq = q.clone().requires_grad_(True)
    out = as_tuple(attn.train()(qq, k, v))[0]
    out.sum().backward()
    assert qq.grad is not None and torch.isfinite(qq.grad).all()


def test_a_python_number_for_a_tensor_input_says_which_inputs_take_one():
    kern = einattn.compile(EXAMPLES / "alibi.ein", backend="torch")
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(
        einattn.EinError, match=r"input `slope` must be a torch tensor, got float \(declared \[h\]"
    ):
        kern(q, q, q, 0.5)


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
        PEAK
        + f"""
import json, torch, einattn
torch.set_num_threads(1)
kern = einattn.compile({str(EXAMPLES / "causal_1pass.ein")!r}, backend="torch")
q, k, v = (torch.randn(1, 1, 4096, 64) for _ in range(3))
kern(Q=q[:, :, :256], K=k[:, :, :256], V=v[:, :, :256])  # libraries and allocator warm
with torch.no_grad():
    peak = peak_above(lambda: kern(Q=q, K=k, V=v))
print(json.dumps({{"peak_mb": peak}}))
"""
    )
    peak = json.loads(out)["peak_mb"]
    assert peak < 24, f"peak memory {peak:.0f} MB above the inputs"


TRAINING_MEMORY = """
import json, torch, einattn
torch.set_num_threads(1)
kern = einattn.compile({spec!r}, backend="torch", params={{"M0": 256}}, row_block=256, recompute={recompute})
q, k, v = (torch.randn(1, 1, 4096, 64, requires_grad=True) for _ in range(3))
warm = [t[:, :, :512].detach().requires_grad_() for t in (q, k, v)]
kern(*warm).sum().backward()  # libraries and allocator warm
print(json.dumps({{"peak_mb": peak_above(lambda: kern(q, k, v).sum().backward())}}))
"""


def test_training_memory_is_a_block_of_rows_not_the_score_matrix():
    """Forward and backward of the 1-pass causal cascade at P = M = 4096: with ``recompute`` (the default)
    the backward pass recomputes each block of 256 rows, so the live memory is a block's tiles (4 MB a
    tensor), not the half score matrix that autograd keeps per saved tensor otherwise (32 MB each, about
    100 MB in all).

    glibc's malloc keeps freed tiles resident when small allocations sit between them, which hides what is
    live; MALLOC_MMAP_THRESHOLD_ gives every allocation of 64 kB or more its own pages, returned when
    freed."""
    env = {"MALLOC_MMAP_THRESHOLD_": "65536"}
    peaks = {}
    for recompute in (True, False):
        code = PEAK + TRAINING_MEMORY.format(spec=str(EXAMPLES / "causal_1pass.ein"), recompute=recompute)
        peaks[recompute] = json.loads(run_python(code, env=env))["peak_mb"]
    assert peaks[True] < 45, peaks
    assert peaks[False] > 2 * peaks[True], peaks  # the bound comes from the recomputation


def test_recompute_gives_the_same_gradients():
    prog = einattn.load(EXAMPLES / "causal_1pass.ein").with_params({"M0": 3})
    x = to_torch(prog, inputs(prog, sizes(prog)), torch.float64)
    grads = []
    for recompute in (True, False):
        xs = {n: t.clone().requires_grad_() for n, t in x.items()}
        kern = einattn.compile(prog, backend="torch", row_block=4, recompute=recompute)
        assert ("_rows_block(" in kern.source) == recompute
        (kern(**xs) ** 2).sum().backward()
        grads.append([xs[n].grad for n in ("Q", "K", "V")])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("natural", [False, True])
def test_the_cpu_benchmark_runs_every_variant_against_sdpa(natural, monkeypatch):
    """benchmarks/cpu_attention.py at a small size, without FlexAttention (its compilation takes minutes):
    every variant runs, the hand-written 1-pass specs and the natural ones rewritten by passes="auto", and
    agrees with SDPA (the same masks)."""
    import importlib.util

    path = EXAMPLES.parent / "benchmarks" / "cpu_attention.py"
    spec = importlib.util.spec_from_file_location("cpu_attention", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "WINDOW", 24)  # a window shorter than the sequence: tiles before it skipped
    rows = bench.run_size(96, ["plain", "causal", "window"], 1, 32, 32, flex=False, natural=natural)
    assert [r["variant"] for r in rows] == ["plain", "causal", "window"]
    for r in rows:
        assert r["max_diff"]["einattn"] < 1e-5, r
        assert r["ms"]["einattn"] > 0 and r["ms"]["sdpa"] > 0
    assert "| 96 | window |" in bench.table(rows, flex=False)


def test_outputs_are_the_caller_s_own_under_torch_compile():
    """`O[i] = X[i]` is a copy: under torch.compile, where `_unaliased` cannot compare memory, an output that
    may be a view of an input or of another output is copied (`_out(..., view=True)`)."""
    kern = einattn.compile("input X[i]\noutput O, P\nO[i] = X[i]\nP[i] = O[i]\n", backend="torch")
    assert "view=True" in kern.source
    x = torch.randn(4)
    before = x.clone()
    o, p = torch.compile(lambda x: kern(X=x), fullgraph=True, backend="aot_eager")(x)
    ptr = lambda t: t.untyped_storage().data_ptr()  # noqa: E731
    assert len({ptr(o), ptr(p), ptr(x)}) == 3
    o.add_(100.0)
    assert torch.equal(x, before) and torch.equal(p, before)
