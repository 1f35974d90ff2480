"""Short sequences on CPU: einattn's torch backend against the same variant in eager PyTorch, side by side.

    python benchmarks/cpu_short.py                          # N = 8 .. 512, softcap, ALiBi, causal
    python benchmarks/cpu_short.py --sizes 16 64 --repeat 9

At a few keys a call costs its fixed overheads more than its arithmetic: what matters is the time of one call
made back to back, as a decoder or a short-prompt server makes them. Each implementation is called ``--calls``
times in a row per measurement, ``--repeat`` measurements interleaved, after a warm-up; the table gives the
median time of one call in microseconds and the ratio to eager PyTorch (the score matrix materialised: at
these sizes that is the fast way). B = 1, H = 8, E = F = 64, P = M = N, float32.

"einattn" is the natural spec with the default options; "generated" the same with ``library=False`` (the
generated cascade, never SDPA). Softcap has no library kernel, so both are the generated code there.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import einattn

ROOT = Path(__file__).resolve().parent.parent
CAP = 30.0


def eager(variant: str, slope: torch.Tensor):
    def run(q, k, v):
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        n = s.shape[-1]
        if variant == "softcap":
            s = CAP * torch.tanh(s / CAP)
        if variant == "alibi":
            pos = torch.arange(n)
            s = s + slope[:, None, None] * (pos[None, :] - pos[:, None])
        if variant in ("causal", "alibi"):
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        return torch.softmax(s, -1) @ v

    return run


SPECS = {"softcap": ("softcap.ein", {"C": CAP}), "alibi": ("alibi.ein", {}), "causal": ("causal.ein", {})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128, 256, 512])
    ap.add_argument("--variants", nargs="+", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    H = 8
    slope = 2.0 ** (-8.0 * torch.arange(1, H + 1) / H)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; einattn {einattn.__version__}; {args.calls} calls per "
        f"measurement, median of {args.repeat}\n"
    )
    print("| variant | N | eager us | einattn us | generated us | einattn / eager | generated / eager |")
    print("|---|---|---|---|---|---|---|")
    for variant in args.variants:
        name, params = SPECS[variant]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kern = einattn.compile(ROOT / "examples" / name, backend="torch", params=params)
            gen = einattn.compile(ROOT / "examples" / name, backend="torch", params=params, library=False)
        ref = eager(variant, slope)
        for n in args.sizes:
            g = torch.Generator().manual_seed(n)
            q, k, v = (torch.randn(1, H, n, 64, generator=g) for _ in range(3))
            extra = (slope,) if variant == "alibi" else ()
            fns = {
                "eager": (ref, (q, k, v)),
                "einattn": (kern, (q, k, v, *extra)),
                "generated": (gen, (q, k, v, *extra)),
            }
            want = ref(q, k, v)
            for f, xs in fns.values():  # warm-up, and each output checked against eager
                err = float((f(*xs) - want).abs().max())
                assert err < 1e-4, (variant, n, err)
            times = {c: [] for c in fns}
            for _ in range(args.repeat):
                for c, (f, xs) in fns.items():
                    t = time.perf_counter()
                    for _ in range(args.calls):
                        f(*xs)
                    times[c].append((time.perf_counter() - t) / args.calls * 1e6)
            med = {c: statistics.median(ts) for c, ts in times.items()}
            print(
                f"| {variant} | {n} | {med['eager']:.0f} | {med['einattn']:.0f} | {med['generated']:.0f} | "
                f"{med['einattn'] / med['eager']:.2f} | {med['generated'] / med['eager']:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
