"""einattn's torch backend against SDPA and FlexAttention on CPU, side by side in one run.

Variants (B = 1, H = 8, E = F = 64, float32, P = M = N):

* plain: ``examples/attention_3pass.ein`` vs ``scaled_dot_product_attention`` vs FlexAttention (no mods);
* causal: ``examples/causal.ein`` vs SDPA ``is_causal=True`` vs FlexAttention with a causal mask_mod;
* window: ``examples/sliding_window.ein`` (W = 256) vs SDPA with a dense boolean mask vs FlexAttention with
  a window mask_mod (it skips empty blocks);
* alibi (only with ``--variants``): ``examples/alibi.ein`` (causal, slopes 2^(-8h/H)) vs SDPA with the
  dense float bias vs FlexAttention with the bias as score_mod and a causal block mask. Its "generated" is
  the natural spec with ``library=False`` (no hand-written 1-pass form).

einattn runs twice. "einattn" is what a user gets from the natural spec with the default options: the torch
backend's library kernels (``lowering/torch_library.py``) run these specs as SDPA calls (the window as
blocks of 128 query rows against the keys of their window). "generated" is einattn's own generated code:
the hand-written 1-pass specs (``examples/attention_1pass.ein``, ``examples/causal_1pass.ein``,
``benchmarks/sliding_window_1pass.ein``), to which no library kernel applies.

FlexAttention is ``torch.compile(flex_attention)`` with a ``create_block_mask`` block mask; its first call
(compilation) is timed apart. Every implementation is timed ``--repeat`` times, interleaved, after a warm-up,
each call after 50 ms of idle (``SETTLE``: the OpenMP threads of the call before stop spinning);
the table gives medians and ratios, and each output's largest difference from SDPA's.

``--backward`` times training steps instead: forward and backward (the gradients of Q, K and V) of einattn
(recomputing each block of rows, the default) and SDPA; FlexAttention has no backward on CPU.

``--natural`` runs "generated" on the natural specs with ``library=False``, which ``passes="auto"`` rewrites
to 1 pass.

``--decode`` times decoding instead: one query row against N keys, B = 4, plain softmax only (the causal and
window specs' filters are written for P = M).

``--memory`` runs causal attention at B = H = 1, P = M = 32768, E = F = 64 in a fresh process (the 1-pass
spec; the natural spec rewritten by passes="auto"; and the natural spec by the library) and reports each
one's peak resident memory above its inputs (on Linux the high-water mark ``VmHWM``, reset just before
the call; elsewhere ``resource.getrusage``'s max RSS), which the issue bounds by 512 MB; the 3-pass form
would need 4 GB for QK alone.

    python benchmarks/cpu_attention.py --sizes 1024 2048 --repeat 5
    python benchmarks/cpu_attention.py --memory --sizes
    python benchmarks/cpu_attention.py --backward --sizes 1024 2048
    python benchmarks/cpu_attention.py --decode --sizes 1024 4096 16384
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import einattn

ROOT = Path(__file__).resolve().parent.parent
SPECS = {
    "plain": ROOT / "examples" / "attention_1pass.ein",
    "causal": ROOT / "examples" / "causal_1pass.ein",
    "window": ROOT / "benchmarks" / "sliding_window_1pass.ein",
    "alibi": ROOT / "examples" / "alibi.ein",  # (rewritten by passes="auto": see einattn_impl)
}
WINDOW = 256
# einattn's key tile M0 per variant (``--tile`` sets one for all). The sliding window computes, per key tile,
# the rows that see one of its keys: W + M0 - 1 of them, so a smaller tile wastes less (2x the window's
# work at M0 = 256, 1.5x at 128, as FlexAttention's 128-blocks); plain and causal prefer fewer, larger tiles.
TILES = {"plain": 256, "causal": 256, "window": 128, "alibi": 256}
# Seconds of idle before each timed call. FlexAttention's kernel is C++ that Inductor compiles against the
# system's OpenMP runtime, while PyTorch's own operators use the libgomp it ships: two thread pools in one
# process. After a call, a pool's threads spin for a while waiting for more work; on a 2-core machine the
# spinning threads of the implementation timed just before steal cores from the next one (einattn's causal
# kernel measured 21 ms right after FlexAttention, 17 ms alone, at N = 1024). Each call starts on a quiet
# machine instead.
SETTLE = 0.05


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{model}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load:.1f} at start"
    )


def slopes(heads: int = 8) -> torch.Tensor:
    """ALiBi's slopes (Press et al.): 2^(-8 h / H) for heads h = 1..H."""
    return 2.0 ** (-8.0 * torch.arange(1, heads + 1) / heads)


def sdpa_impl(variant: str, n: int):
    if variant == "plain":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v)
    if variant == "causal":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    i = torch.arange(n)
    if variant == "alibi":
        bias = slopes()[:, None, None] * (i[None, :] - i[:, None]).float()
        bias = bias.masked_fill(i[None, :] > i[:, None], float("-inf"))
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, -q.shape[2] :])
    mask = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - WINDOW)
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def flex_impl(variant: str, n: int):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    if variant == "plain":
        return lambda q, k, v: compiled(q, k, v)

    def causal(b, h, qi, ki):
        return ki <= qi

    def window(b, h, qi, ki):
        return (ki <= qi) & (ki > qi - WINDOW)

    block = create_block_mask(causal if variant != "window" else window, None, None, n, n, device="cpu")
    if variant == "alibi":
        slope = slopes()

        def alibi(score, b, h, qi, ki):
            return score + slope[h] * (ki - qi)

        return lambda q, k, v: compiled(q, k, v, score_mod=alibi, block_mask=block)
    return lambda q, k, v: compiled(q, k, v, block_mask=block)


# the same variants written the natural way (3-pass), which passes="auto" (the default) rewrites to 1 pass
NATURAL = {
    "plain": ROOT / "examples" / "attention_3pass.ein",
    "causal": ROOT / "examples" / "causal.ein",
    "window": ROOT / "examples" / "sliding_window.ein",
    "alibi": ROOT / "examples" / "alibi.ein",
}


def einattn_impl(
    variant: str, tile: int | None, rows: int | str, natural: bool = False, library: bool = False
):
    """einattn as a user runs it (``library``: the natural spec, default options, so SDPA where the
    library matches it), or its generated code (the 1-pass spec, or with ``natural`` the natural spec with
    ``library=False``, which passes="auto" rewrites to 1 pass)."""
    tile = tile or TILES[variant]
    natural = natural or variant == "alibi"  # (no hand-written 1-pass form)
    if library:
        params = {"W": WINDOW} if variant == "window" else {}
        kern = einattn.compile(NATURAL[variant], backend="torch", params=params)
    elif natural:
        params = {"W": WINDOW} if variant == "window" else {}
        kern = einattn.compile(
            NATURAL[variant], backend="torch", params=params, tile=tile, row_block=rows, library=False
        )
    else:
        params = {"M0": tile} | ({"W": WINDOW} if variant == "window" else {})
        kern = einattn.compile(SPECS[variant], backend="torch", params=params, row_block=rows)
    if variant == "alibi":
        slope = slopes()
        return lambda q, k, v: kern(Q=q, K=k, V=v, slope=slope)
    return lambda q, k, v: kern(Q=q, K=k, V=v)


def run_size(
    n: int,
    variants,
    repeat: int,
    tile: int | None,
    rows: int | str,
    flex: bool,
    backward: bool = False,
    natural: bool = False,
    decode: bool = False,
) -> list[dict]:
    torch._dynamo.reset()  # FlexAttention recompiles per size and mask: never fall back to its unfused path
    torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)
    torch.manual_seed(0)
    batch, queries = (4, 1) if decode else (1, n)  # decoding: one query row of each of 4 sequences
    q = torch.randn(batch, 8, queries, 64, requires_grad=backward)
    k, v = (torch.randn(batch, 8, n, 64, requires_grad=backward) for _ in range(2))
    grad_out = torch.randn(batch, 8, queries, 64)
    impls = {}
    for variant in variants:
        impls[(variant, "einattn")] = einattn_impl(variant, tile, rows, library=True)
        impls[(variant, "generated")] = einattn_impl(variant, tile, rows, natural)
        impls[(variant, "sdpa")] = sdpa_impl(variant, n)
        if flex:
            impls[(variant, "flex")] = flex_impl(variant, n)

    def call(fn):
        if not backward:
            with torch.no_grad():
                return fn(q, k, v), None
        for t in (q, k, v):
            t.grad = None
        out = fn(q, k, v)
        out.backward(grad_out)  # training: forward and backward
        return out.detach(), torch.cat([t.grad for t in (q, k, v)], -1)

    times: dict = {key: [] for key in impls}
    first: dict = {}
    outputs: dict = {}
    grads: dict = {}
    for key, fn in impls.items():  # warm-up; FlexAttention compiles here
        t = time.perf_counter()
        outputs[key], grads[key] = call(fn)
        first[key] = time.perf_counter() - t
    for _ in range(repeat):
        for key, fn in impls.items():
            time.sleep(SETTLE)  # (the previous implementation's OpenMP threads stop spinning: see SETTLE)
            t = time.perf_counter()
            call(fn)
            times[key].append(time.perf_counter() - t)
    rows = []
    for variant in variants:
        med = {impl: statistics.median(times[(variant, impl)]) for (var, impl) in impls if var == variant}
        ref = outputs[(variant, "sdpa")]
        diff = {impl: float((outputs[(variant, impl)] - ref).abs().max()) for impl in med}
        if backward:  # and the largest difference of the inputs' gradients
            gref = grads[(variant, "sdpa")]
            diff = {i: max(d, float((grads[(variant, i)] - gref).abs().max())) for i, d in diff.items()}
        rows.append(
            dict(
                n=n,
                variant=variant,
                ms={i: 1000 * t for i, t in med.items()},
                first_ms={i: 1000 * first[(variant, i)] for i in med},
                max_diff=diff,
            )
        )
    return rows


def table(rows: list[dict], flex: bool) -> str:
    """Medians and ratios: einattn as a user runs it (library kernels where they apply) and its generated
    code, against SDPA and FlexAttention, and each against its own plain softmax."""
    head = "| N | variant | einattn ms | generated ms | SDPA ms | einattn / SDPA | generated / SDPA |"
    sep = "|---|---|---|---|---|---|---|"
    if flex:
        head += " Flex ms | einattn / Flex | generated / Flex | Flex compile s |"
        sep += "---|---|---|---|"
    head += " einattn / own plain | generated / own plain | max abs diff vs SDPA |"
    sep += "---|---|---|"
    lines = [head, sep]
    plain = {r["n"]: r["ms"] for r in rows if r["variant"] == "plain"}
    for r in rows:
        ms = r["ms"]
        line = (
            f"| {r['n']} | {r['variant']} | {ms['einattn']:.1f} | {ms['generated']:.1f} | {ms['sdpa']:.1f} |"
        )
        line += f" {ms['einattn'] / ms['sdpa']:.2f} | {ms['generated'] / ms['sdpa']:.2f} |"
        if flex:
            line += (
                f" {ms['flex']:.1f} | {ms['einattn'] / ms['flex']:.2f} | {ms['generated'] / ms['flex']:.2f} |"
            )
            line += f" {r['first_ms']['flex'] / 1000:.1f} |"
        own = {
            i: ms[i] / plain[r["n"]][i] if r["n"] in plain else float("nan") for i in ("einattn", "generated")
        }
        diff = max(r["max_diff"]["einattn"], r["max_diff"]["generated"])
        line += f" {own['einattn']:.2f} | {own['generated']:.2f} | {diff:.1e} |"
        lines.append(line)
    return "\n".join(lines)


MEMORY_CHILD = """
import json, os, re, resource, time, torch, einattn
torch.manual_seed(0)
kern = einattn.compile({spec!r}, backend="torch", row_block={rows!r}, **{options})
q, k, v = (torch.randn(1, 1, {n}, 64) for _ in range(3))
kern(Q=q[:, :, :512], K=k[:, :, :512], V=v[:, :, :512])  # libraries and allocator warm


def status(key):  # MB
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024


linux = os.path.exists("/proc/self/clear_refs")
if linux:  # the high-water mark reset just before the call: its own peak, not an earlier one
    open("/proc/self/clear_refs", "w").write("5")
    before = status("VmRSS")
else:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
with torch.no_grad():
    out = kern(Q=q, K=k, V=v)
seconds = time.perf_counter() - t
after = status("VmHWM") if linux else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(peak_mb=after - before, inputs_mb=3 * q.numel() * 4 / 2**20, seconds=seconds,
                      finite=bool(torch.isfinite(out).all()))))
"""


NATURAL_CAUSAL = ROOT / "examples" / "causal.ein"  # the 3-pass spec: streamed only by passes="auto"


def memory(n: int, tile: int, rows: int | str, spec: Path | None = None, library: bool = False) -> dict:
    """Peak memory in a fresh process: the 1-pass causal spec, or ``spec`` rewritten with passes="auto"
    (``library``: with the library kernels, else without)."""
    options = (
        {"params": {"M0": tile}} if spec is None else {"passes": "auto", "tile": tile, "library": library}
    )
    code = MEMORY_CHILD.format(spec=str(spec or SPECS["causal"]), tile=tile, n=n, rows=rows, options=options)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096], help="P = M values")
    ap.add_argument("--variants", nargs="+", default=["plain", "causal", "window"], choices=list(SPECS))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--tile", type=int, default=None, help=f"einattn's key tile M0 for every variant (default: {TILES})"
    )
    ap.add_argument(
        "--rows",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="einattn's row_block: rows, or 'auto' (the default: lowering.torch_codegen.auto_row_block)",
    )
    ap.add_argument(
        "--no-flex", action="store_true", help="leave FlexAttention out (it compiles for minutes)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument(
        "--backward",
        action="store_true",
        help="time training steps: forward and backward (gradients of Q, K and V) of every implementation",
    )
    ap.add_argument(
        "--natural",
        action="store_true",
        help="einattn runs the variants as written the natural way (3-pass; rewritten by passes='auto')",
    )
    ap.add_argument(
        "--decode", action="store_true", help="one query row against N keys, B = 4 (plain softmax only)"
    )
    ap.add_argument("--memory", action="store_true", help="peak memory of the 32768 causal streaming case")
    ap.add_argument("--memory-size", type=int, default=32768)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.decode:
        args.variants = ["plain"]
    print(f"machine: {machine()}")
    print(
        f"einattn {einattn.__version__}, tile M0 = {args.tile or TILES}, row_block = {args.rows}, "
        f"repeat {args.repeat}, window W = {WINDOW}"
        + (", forward and backward (max abs diff: outputs and gradients)" if args.backward else "")
        + (", the natural (3-pass) specs rewritten by passes='auto'" if args.natural else "")
        + (", decoding: B = 4, one query row, N keys" if args.decode else "")
        + "\n"
    )
    rows = []
    if args.backward and not args.no_flex:
        print("FlexAttention has no backward on CPU (torch raises NotImplementedError): left out\n")
        args.no_flex = True
    for n in args.sizes:
        rows += run_size(
            n,
            args.variants,
            args.repeat,
            args.tile,
            args.rows,
            not args.no_flex,
            args.backward,
            args.natural,
            args.decode,
        )
        print(table([r for r in rows if r["n"] == n], not args.no_flex), flush=True)
        print()
    tiles = {v: args.tile or TILES[v] for v in args.variants}
    result = {"machine": machine(), "tile": tiles, "row_block": args.rows, "backward": args.backward}
    result["natural"] = args.natural
    result["decode"] = args.decode
    result["rows"] = rows
    if args.memory:
        tile = args.tile or TILES["causal"]
        m = memory(args.memory_size, tile, args.rows)
        result["memory"] = m
        m3 = memory(args.memory_size, tile, args.rows, NATURAL_CAUSAL)
        result["memory_3pass_auto"] = m3
        ml = memory(args.memory_size, tile, args.rows, NATURAL_CAUSAL, library=True)
        result["memory_3pass_library"] = ml
        for what, r in (
            ("1-pass causal spec", m),
            ('3-pass causal spec, passes="auto", library=False', m3),
            ("3-pass causal spec, library kernel (SDPA)", ml),
        ):
            print(
                f"memory: {what}, B = H = 1, P = M = {args.memory_size}, E = F = 64, float32: peak "
                f"{r['peak_mb']:.0f} MB above the inputs ({r['inputs_mb']:.0f} MB), {r['seconds']:.1f} s, "
                f"finite output: {r['finite']}"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
