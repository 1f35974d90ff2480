"""The generated kernels go through Triton's real compiler for an H100 (sm_90), on this CPU-only machine.

The interpreter tests check what the kernels compute; these check that Triton's compiler accepts them (it
rejects things the interpreter runs, such as a loop-carried variable changing type) and what they cost: the
fused attention kernels' loads are software-pipelined (asynchronous copies) and their first launch
configuration spills no registers in its loops (and few around them). Each check runs ``python -m
einattn.lowering.triton_aot`` in a process of its own (it replaces Triton's driver with one that only names
the target).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# located, not imported: importing triton here, before the interpreter tests set TRITON_INTERPRET=1 in this
# process, would make their kernels compiled ones
_TRITON = importlib.util.find_spec("triton")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PTXAS = Path(_TRITON.origin).parent / "backends" / "nvidia" / "bin" / "ptxas" if _TRITON else None

pytestmark = pytest.mark.skipif(
    PTXAS is None or not PTXAS.exists(),
    reason="no Triton with a bundled ptxas (x86-64 Linux wheels have one)",
)

# the fused kernels (every other example takes the general path: one kernel per Einsum)
FUSED = {
    "alibi",
    "attention_1pass",
    "attention_3pass",
    "attention_deferred",
    "causal",
    "causal_1pass",
    "gqa",
    "linear_causal",
    "lse",
    "sigmoid",
    "sliding_window",
    "softcap",
}


def reports(*args: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "einattn.lowering.triton_aot", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_every_example_compiles_for_sm90():
    specs = sorted(EXAMPLES.glob("*.ein"))
    got = reports(*map(str, specs), "--first")
    by_spec: dict[str, list[dict]] = {}
    for r in got:
        by_spec.setdefault(Path(r["spec"]).stem, []).append(r)
    assert set(by_spec) == {s.stem for s in specs}, "some example compiled no kernel"
    for name, rs in by_spec.items():
        if name in FUSED:
            (r,) = rs
            assert r["kernel"] == f"{name}_kernel"
            assert r["async_copies"] > 0, f"{name}: the K/V loads are not pipelined"
            # the loop over whole tiles (the shortest: no masks) runs the most; it must not spill, and the
            # kernel spills at most a few registers around the loops (a 128-key tile spilled 300-700 bytes)
            assert r["loops"], f"{name}: no loop in the machine code"
            assert min(r["loops"])[1] == 0, f"{name}: the mask-free loop spills registers: {r['loops']}"
            assert r["stack"] <= 64, f"{name}: the first launch configuration spills {r['stack']} bytes"
        else:
            assert all(not r["kernel"].startswith(name) for r in rs), (
                f"{name} was expected on the general path"
            )
        assert all(r["registers"] is None or r["registers"] <= 255 for r in rs)


# variants whose kernels use what the examples do not: a group map and integer gathers, a sink, a 2-D
# neighbourhood, split-K partial results, a chunked scan (about 20 s cold; all 32 take minutes)
VARIANTS = (
    "02_gqa_groupmap",
    "05_softmax_sink",
    "10_natten_2d",
    "14_splitk_decode",
    "18_document_mask",
    "19_ssm_scan",
)


@pytest.mark.slow
def test_variants_compile_for_sm90():
    specs = [EXAMPLES / "variants" / f"{v}.ein" for v in VARIANTS]
    got = reports(*map(str, specs), "--first", "--dtype", "bfloat16", "--dim", "128")
    assert {Path(r["spec"]).stem for r in got} == set(VARIANTS)


def test_every_launch_configuration_compiles_and_the_first_does_not_spill():
    for spec, dim in (("attention_3pass", 128), ("causal", 64)):
        got = reports(str(EXAMPLES / f"{spec}.ein"), "--dim", str(dim))
        assert len(got) >= 6, "every configuration of the fused launcher is compiled"
        first = got[0]
        assert first["config"]["BLOCK_P"] == 64 and first["config"]["num_warps"] == 4
        assert all(spills == 0 for _, spills in first["loops"]), f"{spec}: a loop spills: {first['loops']}"
        assert first["stack"] <= 64, f"{spec}: the first launch configuration spills {first['stack']} bytes"
        # what the resource check estimates (3 stages of 64-row K and V tiles, Q, scratch) is an upper bound
        assert first["shared"] <= 3 * (2 * 64 * dim) * 2 + 128 * dim * 2 + 2048


def test_the_float32_fallback_configuration_fits_an_h100():
    """At head dim 128 in float32 only the last configuration (one stage, 64 rows) fits an H100's 227 KiB of
    shared memory by the resource estimate; compiled, it does fit (it spills registers: float32 products are
    exact, "ieee", so there are no tensor-core tiles; a known cost, docs/backends.md)."""
    got = reports(str(EXAMPLES / "causal.ein"), "--dtype", "float32", "--dim", "128", "--config", "-1")
    (r,) = got
    assert r["config"] == {"num_warps": 4, "num_stages": 1, "BLOCK_P": 64}
    assert r["shared"] <= 232448
