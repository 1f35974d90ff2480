"""How long ``einattn analyze`` takes on every example (target: under 2 seconds for all of them together).

usage: python benchmarks/analyze_speed.py [--repeat N]

Times the real command line (``python -m einattn analyze examples/*.ein``: interpreter start, imports,
parsing, analysis and the rich text report) N times and reports the best and the median, then the in-process
time per example (analysis, and analysis plus the text report). Prints the machine first: timings are only
comparable on the same one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 2.0


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs, load {load:.2f}, "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    examples = sorted((ROOT / "examples").glob("*.ein"))
    print(f"machine: {machine()}")
    print(f"examples: {len(examples)} in {ROOT / 'examples'}")

    cmd = [sys.executable, "-m", "einattn", "analyze", *map(str, examples)]
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t)
        if done.returncode != 0:
            sys.exit(f"einattn analyze failed ({done.returncode}):\n{done.stderr}")
    best, median = min(times), statistics.median(times)
    verdict = "ok" if best < TARGET_S else "SLOWER THAN TARGET"
    print(f"einattn analyze examples/*.ein: best {best:.3f} s, median {median:.3f} s over {args.repeat} runs")
    print(f"target < {TARGET_S:.1f} s: {verdict}")

    import einattn

    einattn.analyze(examples[0])  # the first call imports sympy: leave it out of the per-example times
    print("\nin process (after imports), per example:")
    print(f"  {'example':<28} {'analyze':>9} {'+ text':>9}")
    total_a = total_t = 0.0
    for path in examples:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", einattn.EinWarning)
            prog = einattn.load(path)
        t0 = time.perf_counter()
        report = einattn.analyze(prog)
        t1 = time.perf_counter()
        report.to_text()
        t2 = time.perf_counter()
        total_a, total_t = total_a + t1 - t0, total_t + t2 - t0
        print(f"  {path.name:<28} {1e3 * (t1 - t0):>7.1f} ms {1e3 * (t2 - t0):>7.1f} ms")
    print(f"  {'total':<28} {1e3 * total_a:>7.1f} ms {1e3 * total_t:>7.1f} ms")


if __name__ == "__main__":
    main()
