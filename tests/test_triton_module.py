"""The triton backend as a PyTorch citizen: generated source, standalone modules, sizes at runtime, custom op,
torch.compile, autograd, resource limits and call-time errors. Interpreter on CPU, small grids."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from einattn.lowering import triton_backend
from einattn.lowering.triton_backend import standalone_source
from triton_cases import DEVICE, EXAMPLES, INTERPRET, ROOT, make_inputs, to_torch

import einattn

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def compile_quietly(spec, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return einattn.compile(spec, backend="triton", **options)


# ---- generated source -------------------------------------------------------------------------------------


def test_golden_fused_source(golden):
    """The fused kernel of the 1-pass causal example (FuseMax Cascade 5 with a filter)."""
    prog = einattn.load(EXAMPLES / "causal_1pass.ein")
    golden.check("triton/causal_1pass.py", standalone_source(prog))


def test_golden_general_source(golden):
    """The general path of the 3-pass example: one kernel per Einsum."""
    prog = einattn.load(EXAMPLES / "attention_3pass.ein")
    golden.check("triton/attention_3pass.py", standalone_source(prog, passes="as-written"))


def test_source_is_readable():
    """A header naming every symbol, and each Einsum as a comment above its code."""
    src = compile_quietly(EXAMPLES / "causal_1pass.ein").source
    head = src.split('"""')[1]
    for sym in (
        "t_Q[b, h, p, e]",
        "t_AV[b, h, p, f]",
        "t_RM, t_RM_next",
        "t_X",
        "size_x",
        "BLOCK_P",
        "offs_p, lane_p",
    ):
        assert sym in head, sym
    from einattn.lowering.triton_expr import fmt_einsum

    from einattn.ir import renamed

    def safe(prog):  # generated code names tensor X t_X
        return renamed(prog, {t.name: "t_" + t.name for t in prog.tensors})

    prog = safe(einattn.load(EXAMPLES / "causal_1pass.ein"))
    body = src.split("# ---- the streamed loop")[1]
    for e in prog.einsums:
        if e.kind == "step" or e.tensor[2:] in ("BQK", "LM", "SLN", "SLD", "SLNV", "PRM", "SPD", "SPNV"):
            assert f"# {fmt_einsum(e)}" in body, fmt_einsum(e)
    general = compile_quietly(EXAMPLES / "attention_3pass.ein", path="general", passes="as-written").source
    for e in safe(einattn.load(EXAMPLES / "attention_3pass.ein")).einsums:
        assert f"    # {fmt_einsum(e)}\n    _launch({e.tensor}_kernel" in general


# ---- sizes are runtime arguments --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["fused", "general"])
def test_new_sizes_never_regenerate(path):
    """Calling with other sequence lengths reuses the source, the module and the compiled kernels."""
    k = compile_quietly(EXAMPLES / "causal.ein", tile=4, path=path)
    source, module, launcher = k.source, k.module, k.launcher
    loaded = dict(triton_backend._MODULES)
    variants = []
    prog = k.program
    for p in (5, 13, 7):
        x = make_inputs(prog, dict(b=1, h=1, p=p, m=p, e=4, f=3))
        out = k(**to_torch(prog, x))
        assert out.shape == (1, 1, p, 3)
        variants.append(k.compiled_variants())
    assert k.source == source and k.module is module and k.launcher is launcher
    assert k.generations == 1 and loaded == triton_backend._MODULES
    assert len(set(variants)) == 1, f"recompiled for new sizes: {variants}"  # 0 each under the interpreter
    again = compile_quietly(EXAMPLES / "causal.ein", tile=4, path=path)
    assert again is k  # the compile cache: same program and options, same kernel


# ---- the standalone module --------------------------------------------------------------------------------


def test_standalone_module_in_a_fresh_process(tmp_path):
    """`einattn compile --backend triton -o kernel.py`; a model file imports it and gets the same result."""
    out = tmp_path / "kernel.py"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "einattn",
            "compile",
            str(EXAMPLES / "gqa.ein"),
            "--backend",
            "triton",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    src = out.read_text()
    assert "import einattn" not in src and "from einattn" not in src
    prog = einattn.load(EXAMPLES / "gqa.ein")
    x = make_inputs(prog, dict(b=1, h=4, g=2, p=9, m=11, e=5, f=3))
    torch.save(to_torch(prog, x), tmp_path / "inputs.pt")
    script = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import kernel\n"
        f"x = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
        "torch.save(kernel.gqa(x['Q'], x['K'], x['V']), sys.argv[1])\n"
    )
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    got = torch.load(tmp_path / "out.pt")
    want = compile_quietly(EXAMPLES / "gqa.ein")(**to_torch(prog, x))
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_standalone_docstring():
    src = standalone_source(einattn.load(EXAMPLES / "alibi.ein"))
    doc = src.split("def alibi(Q, K, V, slope):")[1].split('"""')[1]
    assert "AV = alibi(Q, K, V, slope)" in doc
    assert "slope: [H]" in doc and "Q: [B, H, P, E]" in doc and "AV: [B, H, P, F]" in doc


def test_standalone_module_outputs_refuse_a_backward_instead_of_dropping_the_gradient():
    """The standalone module has forward kernels only (a reviewer's finding, session 11: its outputs had no
    `grad_fn`, so a model trained through it left Q, K and V without a gradient, silently). Where a gradient
    is recorded the outputs are tied to the inputs and their backward raises; without one nothing changes;
    the kernel of einattn.compile still has its gradient (the custom op's backward recomputes)."""
    src = standalone_source(einattn.load(EXAMPLES / "alibi.ein"))
    assert "Forward only: where a gradient is recorded" in src.split("def alibi(Q, K, V, slope):")[1]
    module = triton_backend.load_module(src, "alibi_forward_only")
    prog, x = _inputs(EXAMPLES / "alibi.ein")
    q = x["Q"].clone().requires_grad_(True)
    out = module.alibi(q, x["K"], x["V"], x["slope"])
    assert out.requires_grad and out.grad_fn is not None
    with pytest.raises(RuntimeError, match="forward kernels only, no backward"):
        out.sum().backward()
    with torch.no_grad():
        plain = module.alibi(q, x["K"], x["V"], x["slope"])
    assert plain.grad_fn is None and torch.equal(plain, out.detach())
    alone = module.alibi(*(x[n] for n in prog.inputs))  # no input takes a gradient
    assert alone.grad_fn is None and torch.equal(alone, plain)
    kern = compile_quietly(EXAMPLES / "alibi.ein")
    (g,) = torch.autograd.grad(kern(q, x["K"], x["V"], x["slope"]).sum(), (q,))
    (w,) = torch.autograd.grad(
        einattn.compile(EXAMPLES / "alibi.ein", backend="torch")(q, x["K"], x["V"], x["slope"]).sum(), (q,)
    )
    torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


# ---- PyTorch integration ----------------------------------------------------------------------------------


def _inputs(spec, **sizes):
    prog = einattn.load(spec)
    return prog, to_torch(prog, make_inputs(prog, dict(b=1, h=2, p=7, m=7, e=5, f=3) | sizes))


def test_custom_op_in_torch_compile():
    """The custom op is registered when the kernel is compiled: a kernel's first call may be inside a
    compiled graph (Dynamo cannot trace torch.library's registration; a reviewer's case, session 9)."""
    k = compile_quietly(EXAMPLES / "causal.ein", tile=4)
    assert any(name.startswith(k.key) for name in dir(torch.ops.einattn))
    _, x = _inputs(EXAMPLES / "causal.ein")
    fn = torch.compile(lambda q, kk, v: k(q, kk, v) * 2.0, backend="aot_eager", fullgraph=True)
    got = fn(x["Q"], x["K"], x["V"])  # (the first call of the kernel)
    torch.testing.assert_close(got, 2.0 * k(**x))


def test_torch_compile_does_not_trace_the_device_query(monkeypatch):
    """On a GPU the resource check asks the driver for the device's limits, which Dynamo cannot trace (an
    H200 run: `fullgraph=True` failed on `get_device_properties`). Inside a compiled graph the check is
    left to the launch, which runs untraced; a device query that Dynamo refuses stands in for the driver."""
    k = compile_quietly(EXAMPLES / "causal.ein", tile=4)
    asked = []

    @torch.compiler.disable
    def query(device):  # fullgraph=True refuses to trace a call of a disabled function
        asked.append(device)

    monkeypatch.setattr(k.module, "_limits", query)
    _, x = _inputs(EXAMPLES / "causal.ein", p=9)
    fn = torch.compile(lambda q, kk, v: k(q, kk, v) + 1.0, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(x["Q"], x["K"], x["V"]), k(**x) + 1.0)
    assert asked  # the launch still checked the configurations, outside the graph


@pytest.mark.parametrize(
    "dtypes",
    [
        ("bfloat16", "float16", "float32"),
        ("float32", "bfloat16", "bfloat16"),
        ("float16", "float32", "float32"),
        ("float32", "float64", "float64"),
    ],
)
def test_inputs_of_mixed_float_dtypes(dtypes):
    """Q, K, V in different float dtypes: the output takes their promoted dtype, and so does every input
    before the fused kernel's tl.dot (it rounded one operand to the other's dtype: a float64 output with
    float32 accuracy, and bfloat16 next to float32 under the interpreter gave garbage; a reviewer's case)."""
    k = compile_quietly(EXAMPLES / "attention_3pass.ein", tile=16)
    assert k.plan.path == "fused"
    gen = torch.Generator().manual_seed(0)
    q, kk, v = (torch.randn(1, 2, 9, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    x = [t.to(getattr(torch, d)).to(DEVICE) for t, d in zip((q, kk, v), dtypes)]
    want = torch.softmax(x[0].double() @ x[1].double().transpose(-1, -2) / 4, -1) @ x[2].double()
    got = k(*x)
    assert got.dtype == torch.promote_types(torch.promote_types(x[0].dtype, x[1].dtype), x[2].dtype)
    tol = 1e-12 if got.dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double().cpu(), want.cpu(), rtol=tol, atol=tol)


def test_a_python_number_takes_the_tensors_dtype():
    """`kernel(q, k, v, 0.25)` with 16-bit tensors: the number is a scalar of their dtype (as torch promotes
    Python scalars, and as the torch backend does), not float32: the output keeps the inputs' dtype."""
    spec = (
        "input Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], scale\noutput O\n"
        "S[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * scale\nMX[b, h, p] = S[b, h, p, m] :: max(m)\n"
        "X[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])\nD[b, h, p] = X[b, h, p, m]\n"
        "O[b, h, p, f] = X[b, h, p, m] * V[b, h, m, f] / D[b, h, p]\n"
    )
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16):
        q, kk, v = (torch.randn(1, 2, 9, 16, generator=gen).to(dtype).to(DEVICE) for _ in range(3))
        got = einattn.compile(spec, backend="triton", tile=16)(q, kk, v, 0.25)
        want = einattn.compile(spec, backend="torch")(q, kk, v, 0.25)
        assert got.dtype == want.dtype == dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
    # the standalone module's launcher (what `einattn compile` writes) takes the number too
    kern = einattn.compile(spec, backend="triton", tile=16)
    q, kk, v = (torch.randn(1, 2, 9, 16, generator=gen).to(DEVICE) for _ in range(3))
    alone = kern.launcher(q, kk, v, 0.25)
    assert "_numbers(Q, K, V, scale)" in kern.source
    torch.testing.assert_close(alone, kern(q, kk, v, torch.tensor(0.25, device=DEVICE)))


def test_backward_recomputes_through_the_torch_backend():
    """Gradients to every float input (including ALiBi slopes) equal the torch backend's own."""
    spec = EXAMPLES / "alibi.ein"
    k = compile_quietly(spec, tile=4)
    t = einattn.compile(spec, backend="torch")
    _, x = _inputs(spec)
    grads = []
    for kernel in (k, t):
        leaves = {n: v.detach().clone().requires_grad_(True) for n, v in x.items()}
        kernel(**leaves).square().sum().backward()
        grads.append({n: v.grad for n, v in leaves.items()})
    for n in x:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-5)


# ---- resources and errors ---------------------------------------------------------------------------------


def test_resource_estimate_refuses_before_compiling():
    k = compile_quietly(EXAMPLES / "causal.ein", tile=4, smem_limit=1024)
    _, x = _inputs(EXAMPLES / "causal.ein")
    with pytest.raises(einattn.EinError, match="shared memory"):
        k(**x)
    fits = compile_quietly(EXAMPLES / "causal.ein", tile=4, smem_limit=1 << 20)
    fits(**x)  # enough room: runs


def test_footprint_grows_with_tiles():
    k = compile_quietly(EXAMPLES / "causal.ein", tile=64)
    m = k.module
    cfg = dict(BLOCK_P=64, num_warps=4, num_stages=2)
    small = m._footprint(cfg, dict(BLOCK_M0=64, PAD_E=64, PAD_F=64), 2)
    big = m._footprint(cfg, dict(BLOCK_M0=64, PAD_E=128, PAD_F=128), 2)
    assert big[0] > small[0] > 0 and big[1] > small[1] > 0
    # a 64-row tile of 64-wide K and V in fp16, two stages: 2 * 2 * 64 * 64 * 2 bytes, plus Q, plus the
    # compiler's scratch
    assert small[0] == 2 * (64 * 64 + 64 * 64) * 2 + 64 * 64 * 2 + 2048


def test_call_errors():
    k = compile_quietly(EXAMPLES / "causal.ein")
    _, x = _inputs(EXAMPLES / "causal.ein")
    with pytest.raises(einattn.EinError, match="rank `e` has size"):
        k(x["Q"], x["K"][..., :3], x["V"])
    with pytest.raises(einattn.EinError, match="missing input"):
        k(Q=x["Q"], K=x["K"])
    with pytest.raises(einattn.EinError, match="unknown option"):
        einattn.compile(EXAMPLES / "causal.ein", backend="triton", blocks=3)
    with pytest.raises(einattn.EinError, match=r"must be a floating-point tensor \(.*\), got torch\.complex"):
        k(x["Q"], x["K"], x["V"].to(torch.complex64))


@pytest.mark.skipif(DEVICE == "cuda", reason="on a GPU, CPU tensors are an error whatever the interpreter")
def test_cpu_tensors_need_the_interpreter(monkeypatch):
    assert INTERPRET
    k = compile_quietly(EXAMPLES / "causal.ein")
    _, x = _inputs(EXAMPLES / "causal.ein")
    monkeypatch.setattr(k.module, "INTERPRET", False)
    with pytest.raises(einattn.EinError, match="CUDA tensors"):
        k(**x)


def test_module_globals_lists_every_top_level_name_a_launcher_could_replace():
    """`triton_module.MODULE_GLOBALS` holds the generated modules' top-level names (besides `_` names and the
    kernels' and launchers'): a spec file stem among them gets the `ein_` prefix (`torch.ein`)."""
    import ast

    from lowering import triton_module

    names = set()
    for spec in ("causal", "gqa", "attention_1pass", "sigmoid", "linear_causal", "lse"):
        source = einattn.compile(EXAMPLES / f"{spec}.ein", backend="triton").source
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    launchers = {"causal", "gqa", "attention_1pass", "sigmoid", "linear_causal", "lse"}
    own = {n for n in names if n.startswith("_") or n.endswith(("_kernel", "_launch")) or n in launchers}
    assert names - own <= triton_module.MODULE_GLOBALS, names - own - triton_module.MODULE_GLOBALS
    for stem in [*sorted(triton_module.MODULE_GLOBALS), "x_kernel", "x_launch", "_x", "1x", "class"]:
        prog = einattn.parse("input X[i]\noutput Y\nY[i] = X[i]\n", f"{stem}.ein")
        assert triton_module.module_name(prog).startswith("ein_"), stem
