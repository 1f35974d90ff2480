"""Training step (forward + backward) on one GPU: einattn's generated backward kernels against SDPA (flash),
FlexAttention and einattn's own fallback (the backward recomputed through the torch backend).

    python benchmarks/gpu_backward.py                   # the table, a few minutes on one H100/H200
    python benchmarks/gpu_backward.py --out results.md
    python benchmarks/gpu_backward.py --dry-run         # CPU, TRITON_INTERPRET=1, tiny sizes: checks only

Variants (specs of ``examples/``, as in ``gpu_attention.py``): softmax, causal, sliding window (W = 1024),
ALiBi (causal, learnable slopes), softcap (C = 30), GQA (8 query heads per K/V head), a padded batch
(``klen[b]`` from S/2 to S, ``benchmarks/gpu_specs/padded.ein``); float16, bfloat16
and float32; head dim 64 and 128; sequence length 1k and 4k, batch x heads as in ``gpu_attention.py``.
``einattn`` is compiled with ``backward="derived"`` (the generated kernels, what ``"auto"`` takes wherever
they exist),
``fallback`` with ``backward="torch"``. Columns: milliseconds of ``out.backward(dO)`` after a forward pass
(forward included), the ratios to SDPA-flash (softmax, causal) and to FlexAttention (``torch.compile``d, the
same variant), and ``err``: the largest difference of einattn's dQ from the float32 PyTorch reference's at
the first size, relative to its largest value.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings

import gpu_attention as G  # (benchmarks/ is the script's directory: the forward benchmark's helpers)
import torch

import einattn

VARIANTS = [
    v
    for v in G.VARIANTS
    if v.name in ("softmax", "causal", "sliding window", "alibi", "softcap", "gqa", "padded")
]
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SEQS = (1024, 4096)


def step(fn, x: dict, dout: torch.Tensor, wrt: tuple[str, ...]):
    """One training step's attention: forward, then the gradients of ``wrt``."""
    leaves = {n: (t.detach().requires_grad_() if n in wrt else t) for n, t in x.items()}
    out = fn(leaves)
    return torch.autograd.grad(out, [leaves[n] for n in wrt], dout)


def kernel(v, backward: str, dry: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        k = einattn.compile(
            v.spec, backend="triton", params=dict(v.params), tile=16 if dry else G.TILE[0], backward=backward
        )
    names = k.program.inputs
    return (lambda x: k(*(x[n] for n in names))), k


def timed(fn, dry: bool) -> float | None:
    try:
        if dry:
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
        import triton.testing

        return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")
    except Exception as e:  # a competitor that does not run is reported, not fatal
        print(f"  failed: {type(e).__name__}: {str(e).splitlines()[0][:150]}", file=sys.stderr)
        return None


HEADER = (
    "| variant | dtype | D | S | einattn ms | fallback ms | SDPA ms | Flex ms | / SDPA | / Flex | / fallback "
    "| err | backward plan |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _ms(t) -> str:
    return f"{t:.3f}" if t else "-"


def _ratio(ours, other) -> str:
    return f"{other / ours:.2f}" if ours and other else "-"


def measure(v, dtype, dim: int, seq: int, first: bool, kernels: dict, dry: bool, device: str) -> str:
    """One row of the table."""
    wrt = ("Q", "K", "V", "slope") if v.alibi else ("Q", "K", "V")
    batch, heads = G.shapes(seq, dim, dry)
    x = G.make_inputs(v, batch, heads, seq, dim, dtype, device)
    dout = torch.randn_like(x["Q"])
    for which in ("derived", "torch"):
        if (v.name, which) not in kernels:
            kernels[v.name, which] = kernel(v, which, dry)
    ours, k = kernels[v.name, "derived"]
    fallback, _ = kernels[v.name, "torch"]
    t_ours = timed(lambda: step(ours, x, dout, wrt), dry)
    t_fb = timed(lambda: step(fallback, x, dout, wrt), dry)
    sd = G.sdpa_fn(v) if dtype != torch.float32 and not dry else None  # (flash: 16-bit only)
    t_sdpa = timed(lambda: step(sd, x, dout, ("Q", "K", "V")), dry) if sd else None
    fx = None if dry else G.flex_fn(v, seq, device, x)
    t_flex = timed(lambda: step(fx, x, dout, ("Q", "K", "V")), dry) if fx else None
    err = ""
    if first:
        got = step(ours, x, dout, wrt)[0].float()
        xf = {n: (t.float() if t.is_floating_point() else t) for n, t in x.items()}
        want = step(lambda y: G.reference(v, y), xf, dout.float(), wrt)[0]
        err = f"{((got - want).abs().max() / want.abs().max()).item():.1e}"
    return (
        f"| {v.name} | {str(dtype)[6:]} | {dim} | {seq} | {_ms(t_ours)} | {_ms(t_fb)} | {_ms(t_sdpa)} | "
        f"{_ms(t_flex)} | {_ratio(t_ours, t_sdpa)} | {_ratio(t_ours, t_flex)} | {_ratio(t_ours, t_fb)} | "
        f"{err} | {k.backward_plan.kind} |"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--budget", type=float, default=240.0, help="seconds; later rows are listed as not run")
    args = ap.parse_args(argv)
    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    seqs, dims, dtypes = ((32,), (16,), (torch.float32,)) if dry else (SEQS, G.DIMS, DTYPES)
    rows = [HEADER]
    start = time.time()
    kernels: dict = {}
    for v in VARIANTS:
        for dtype in dtypes:
            for dim in dims:
                for i, seq in enumerate(seqs):
                    where = f"| {v.name} | {str(dtype)[6:]} | {dim} | {seq} |"
                    if time.time() - start > args.budget:
                        rows.append(f"{where} not run (budget) |")
                        continue
                    try:
                        rows.append(measure(v, dtype, dim, seq, i == 0, kernels, dry, device))
                    except Exception as e:  # one failing row is reported, the table goes on
                        traceback.print_exc()
                        rows.append(f"{where} failed: {type(e).__name__} |")
                    print(rows[-1], flush=True)
    text = (
        "\n".join(rows)
        + "\n\nRatios are speed-ups: the other's time / einattn's (above 1: einattn faster).\n"
    )
    if torch.cuda.is_available():
        text += f"\nDevice: {torch.cuda.get_device_name()}, torch {torch.__version__}\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
