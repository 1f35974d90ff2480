"""Every launch configuration of einattn's fused kernel, timed one by one on a GPU: which rows-per-program,
warps and pipeline stages win, with the registers and spills the compiler gave each.

    python benchmarks/gpu_configs.py --variants softmax,causal --dims 64,128 --tiles 64,128
    python benchmarks/gpu_configs.py --dry-run           # CPU, TRITON_INTERPRET=1, tiny sizes: checks only
    python benchmarks/gpu_configs.py --compile-only ...  # compile only: run several at once to fill the cache

The autotuner of the generated module (``_config``) picks among the same configurations by timing them; this
script shows the whole spread, so that the list and its order (``CONFIGS`` in
``lowering/triton_fused_module.py``) follow measurements. Variants, inputs and FLOPs are those of
``gpu_attention.py``; one sequence length (``--seq``), batch x heads filling the GPU as there.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import gpu_attention as ga  # the variants, inputs and FLOP counts
import torch

import einattn

ORIGINAL: dict[int, list[dict]] = {}  # a module's own CONFIGS, by id
EXTRA = [  # configurations outside the module's list, worth a measurement
    dict(ROWS=128, num_warps=4, num_stages=2),
]


def compiled_resources(module) -> tuple[int, int] | None:
    """(registers, spills) of the kernel compiled last, if Triton exposes them."""
    import triton

    best = None
    for fn in vars(module).values():
        if not isinstance(fn, triton.runtime.jit.JITFunction) or fn.fn.__name__.startswith("_"):
            continue
        for caches in getattr(fn, "device_caches", {}).values():
            for k in list(caches[0].values())[-1:]:
                try:
                    k._init_handles()
                    best = (k.n_regs, k.n_spills)
                except Exception:  # only informative
                    pass
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="softmax,causal")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--tiles", default="64", help="the rewrite's key tiles M0 to try")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--budget", type=float, default=120.0, help="seconds; later kernels are skipped")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument(
        "--compile-only", action="store_true", help="launch each configuration once (fills Triton's cache)"
    )
    args = ap.parse_args(argv)
    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    dtype = getattr(torch, args.dtype)
    seq = 64 if dry else args.seq
    start = time.time()
    lines = [
        "| variant | D | key tile | config | TFLOP/s | registers | spills |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.variants.split(","):
        v = next(x for x in ga.VARIANTS if x.name == name)
        for dim in (16,) if dry else tuple(int(d) for d in args.dims.split(",")):
            for tile in (16,) if dry else tuple(int(t) for t in args.tiles.split(",")):
                if time.time() - start > args.budget:
                    lines.append(f"| {name} | {dim} | {tile} | not measured (time budget) | | | |")
                    continue
                batch, heads = ga.shapes(seq, dim, dry)
                x = ga.make_inputs(v, batch, heads, seq, dim, dtype, device)
                params = dict(v.params)
                if v.sigmoid:
                    params["M0"] = tile
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", einattn.EinWarning)
                    k = einattn.compile(v.spec, backend="triton", params=params, tile=tile)
                mod = k.module
                if not hasattr(mod, "CONFIGS"):
                    lines.append(f"| {name} | {dim} | {tile} | not fused | | | |")
                    continue
                # (compile returns the same module for the same spec at another head dim: its list is
                # kept aside once and restored after each sweep)
                listed = ORIGINAL.setdefault(id(mod), [dict(c) for c in mod.CONFIGS])
                row = next(key for key in listed[0] if key.startswith("BLOCK_"))
                every = [dict(c) for c in listed]
                every += [{row if key == "ROWS" else key: val for key, val in c.items()} for c in EXTRA]
                work = ga.flops(v, batch, heads, seq, dim)
                names = k.program.inputs
                for cfg in every[:1] if dry else every:
                    label = f"{cfg[row]}/{cfg['num_warps']}w/{cfg['num_stages']}s"
                    mod.CONFIGS[:] = [cfg]
                    mod._TUNED.clear()
                    print(f"{name} D={dim} tile={tile} {label}", file=sys.stderr)
                    try:
                        if args.compile_only:
                            k(*(x[n] for n in names))
                            continue
                        ms = ga.bench(lambda x, k=k, names=names: k(*(x[n] for n in names)), x, dry)
                    except Exception as e:  # a configuration that does not compile is a row, not the end
                        ms = None
                        print(f"  {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
                    res = compiled_resources(mod) if not dry else None
                    tf = "failed" if ms is None else f"{work / (ms * 1e-3) / 1e12:.1f}"
                    regs, spills = res if res else ("", "")
                    lines.append(f"| {name} | {dim} | {tile} | {label} | {tf} | {regs} | {spills} |")
                mod.CONFIGS[:] = listed
                mod._TUNED.clear()
    device_name = "CPU (interpreter, dry run)" if dry else torch.cuda.get_device_name()
    print(f"\nLaunch configurations, {device_name}, {args.dtype}, S={seq}; {time.time() - start:.0f} s\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
