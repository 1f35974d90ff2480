"""Compile a triton kernel's generated module for a GPU that is not there: Triton's real compiler (the one
a GPU run uses, down to ``ptxas``), targeting e.g. sm_90, on any machine.

The interpreter (``TRITON_INTERPRET=1``) checks what a kernel computes but not whether Triton's compiler
accepts it (loop-carried types, ``tl.dot`` shapes) nor what it costs (registers, spills, shared memory,
software pipelining). This module launches the generated launcher with Triton's driver replaced by one that
only names the target, and with every launch turned into a compile; the binaries are then read with the
``cuobjdump`` that ships with Triton::

    python -m einattn.lowering.triton_aot examples/causal.ein --arch 90 --dtype float16 --dim 64

prints one JSON line per compiled kernel and launch configuration: name, config, registers, spilled
bytes (stack), shared memory, the number of asynchronous copies (0: the loads are not pipelined), and the
loops of the machine code (instructions, and spill loads and stores among them).

It patches Triton process-wide, so it runs in a process of its own (the command above, or
:func:`compile_reports` in a subprocess), never next to kernels that are meant to run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass


@dataclass
class Report:
    kernel: str
    config: dict
    registers: int | None
    stack: int | None  # bytes per thread spilled to local memory
    shared: int  # bytes of shared memory
    async_copies: int  # cp.async copies in the final IR: the loads the compiler pipelines
    # the machine code's loops in address order: (instructions, of which local-memory spill loads and
    # stores); the mask-free loop over whole tiles is the one that runs the most, and the shortest
    loops: list[tuple[int, int]] | None = None


def _cuobjdump(cubin: bytes, flag: str) -> str | None:
    """``cuobjdump <flag>`` of a binary, with the cuobjdump that ships with Triton; None without one."""
    import tempfile

    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, flag, f.name], capture_output=True, text=True).stdout


def _usage(cubin: bytes) -> tuple[int | None, int | None]:
    out = _cuobjdump(cubin, "-res-usage")
    if out is None:
        return None, None
    reg = re.search(r"REG:(\d+)", out)
    stack = re.search(r"STACK:(\d+)", out)
    return (int(reg.group(1)) if reg else None, int(stack.group(1)) if stack else None)


_INSTRUCTION = re.compile(r"\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)([^;]*);")


def loops(sass: str) -> list[tuple[int, int]]:
    """(instructions, spill loads and stores) of each loop of a SASS listing: the code between a backward
    branch's target and the branch."""
    code = [(int(a, 16), op, rest) for a, op, rest in _INSTRUCTION.findall(sass)]
    found = []
    for addr, op, rest in code:
        target = re.search(r"0x([0-9a-f]+)", rest) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) < addr:
            body = [o for a, o, _ in code if int(target.group(1), 16) <= a <= addr]
            found.append((len(body), sum(o.startswith(("LDL", "STL")) for o in body)))
    return found


def compile_reports(
    spec: str, arch: int, dtype: str, dim: int, seq: int = 300, options=None, every: bool = True, config=None
) -> list[Report]:
    """Compile ``spec``'s triton kernels for ``sm_<arch>`` at head dim ``dim``: every launch configuration
    of the fused path (or the first, ``every=False``, or the one at index ``config``), the fixed one of the
    general path. The inputs are random tensors on the CPU (never read): ranks named ``p`` and ``m`` (query
    and key rows, by the examples' convention) get ``seq`` points, ``e`` and ``f`` (head dims) get ``dim``,
    every other rank 4; sizes are runtime arguments, so they change the binaries only through Triton's
    divisibility-by-16 specialisation of strides. Patches Triton: call it in a process of its own."""
    os.environ.pop("TRITON_INTERPRET", None)
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    import einattn

    class TargetOnly:
        """A driver that names the target and launches nothing."""

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", arch, 32)

        def get_active_torch_device(self):
            return torch.device("cpu")

    previous = vars(driver).get("_active")
    driver.set_active(TargetOnly())
    reports: list[Report] = []
    current: dict = {}
    run = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        k = run(self, *args, grid=grid, warmup=True, **kwargs)
        if current.get("done"):  # the launcher's own launch of a configuration already reported
            return k
        regs, stack = _usage(k.asm["cubin"])
        sass = _cuobjdump(k.asm["cubin"], "-sass")
        config = {x: kwargs[x] for x in ("num_warps", "num_stages") if x in kwargs} | current
        reports.append(
            Report(
                self.__name__,
                config,
                regs,
                stack,
                int(k.metadata.shared),
                k.asm["ttgir"].count("async_copy_global_to_local"),
                None if sass is None else loops(sass),
            )
        )
        return k

    JITFunction.run = compile_only
    try:
        kernel = einattn.compile(spec, backend="triton", **(options or {}))
        module = kernel.module
        if hasattr(module, "_config"):

            def every_config(launch, sizes, shape, dt, device):
                chosen = module.CONFIGS if every else module.CONFIGS[:1]
                if config is not None:
                    chosen = [module.CONFIGS[config]]
                for cfg in chosen:
                    current.clear()
                    current.update({k: v for k, v in cfg.items() if k.startswith("BLOCK")})
                    launch(cfg)
                current.clear()
                current["done"] = True
                return module.CONFIGS[0]

            module._config = every_config
        prog = kernel.program
        sizes = {"p": seq, "m": seq, "e": dim, "f": dim}
        xs = []
        for name in prog.inputs:
            t = prog.tensor(name)
            shape = tuple(sizes.get(r, 4) for r in t.ranks)
            if t.dtype == "int":
                xs.append(torch.zeros(shape, dtype=torch.int64))
            else:
                xs.append(torch.randn(shape).to(getattr(torch, dtype)))
        kernel.launcher(*xs)
    finally:
        JITFunction.run = run
        driver._active = previous  # reset_active() would look for a GPU
    return reports


class _Parser(argparse.ArgumentParser):
    """argparse, with einattn's exit codes: a bad argument is a user error (1), not 2 (an internal bug)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def main(argv=None) -> int:
    ap = _Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="+")
    ap.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80 or 90")
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    ap.add_argument("--dim", type=int, default=64, help="the feature ranks' size (head dim)")
    ap.add_argument("--option", action="append", default=[], help="NAME=VALUE compile option or param")
    ap.add_argument("--first", action="store_true", help="only the first launch configuration")
    ap.add_argument("--config", type=int, default=None, help="only the launch configuration at this index")
    args = ap.parse_args(argv)
    options: dict = {}
    params: dict = {}
    for o in args.option:
        k, _, v = o.partition("=")
        value = int(v) if v.lstrip("-").isdigit() else v
        (params if k.isupper() else options)[k] = value
    if params:
        options["params"] = params
    from einattn.errors import EinError

    for spec in args.spec:
        try:
            every = not args.first
            got = compile_reports(
                spec, args.arch, args.dtype, args.dim, options=options, every=every, config=args.config
            )
        except EinError as e:
            print(e, file=sys.stderr)
            return 1
        for r in got:
            print(json.dumps({"spec": spec} | asdict(r)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
