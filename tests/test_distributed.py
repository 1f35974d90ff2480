"""Context parallelism (einattn.distributed): two processes over gloo on CPU, each with its own part of the
keys and values, against the whole computation in one process and hand-written NumPy formulas.

The workers run in fresh processes (``torch.multiprocessing.spawn``); each writes its outputs and gradients
to a file that the test reads back.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import einattn
from einattn.distributed import ContextParallel

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="torch.distributed without gloo")

DECODE = """input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O, L
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + M - P
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp((S[b, h, m, p] - GM[b, h, p]) / T)
SD[b, h, p]    = SN[b, h, m, p]
O[b, h, p, f]  = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
L[b, h, p]     = GM[b, h, p] / T + log(SD[b, h, p])
param  T = 0.8
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, job: dict, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cuts = job["cuts"]
        a, b = cuts[rank], cuts[rank + 1]
        prog = einattn.parse(job["spec"], "cp.ein") if "spec" in job else einattn.load(job["path"])
        cp = ContextParallel(prog, rank="m", backend="torch", tile=job["tile"])
        x = {}
        for name, v in job["inputs"].items():
            t = torch.tensor(v, dtype=torch.float64)
            ranks = prog.tensor(name).ranks
            if "m" in ranks:
                t = t.narrow(ranks.index("m"), a, b - a).contiguous()
            x[name] = t.requires_grad_(job["grad"])
        out = cp(**x)
        out = out if isinstance(out, tuple) else (out,)
        result = {f"out{k}": o.detach().numpy() for k, o in enumerate(out)}
        if job["grad"]:
            sum(o.sum() * (k + 1) for k, o in enumerate(out)).backward()
            result.update({f"grad_{n}": t.grad.numpy() for n, t in x.items()})
        np.savez(Path(out_dir) / f"rank{rank}.npz", **result)
    finally:
        dist.destroy_process_group()


def run(job: dict, tmp_path: Path, world: int = 2) -> list[dict]:
    mp.spawn(_worker, args=(world, _free_port(), job, str(tmp_path)), nprocs=world, join=True)
    return [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(world)]


def attention(q, k, v, mask, temp=1.0):
    s = np.einsum("bhpe,bhme->bhpm", q, k) / np.sqrt(q.shape[-1]) / temp
    s = np.where(mask, s, -np.inf)
    mx = s.max(-1, keepdims=True)
    w = np.exp(s - mx)
    den = w.sum(-1, keepdims=True)
    return np.einsum("bhpm,bhmf->bhpf", w / den, v), (mx + np.log(den))[..., 0]


def inputs(p: int, m: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return dict(
        Q=rng.standard_normal((1, 2, p, 4)) * 2,
        K=rng.standard_normal((1, 2, m, 4)),
        V=rng.standard_normal((1, 2, m, 3)),
    )


def test_causal_self_attention_split_unevenly_over_two_processes(tmp_path):
    """The causal filter reads global key positions: the second part starts at OFF = 5."""
    x = inputs(13, 13)
    outs = run(
        dict(path=str(EXAMPLES / "causal.ein"), inputs=x, cuts=[0, 5, 13], tile=3, grad=False), tmp_path
    )
    mask = np.arange(13)[None, :] <= np.arange(13)[:, None]
    want, _ = attention(x["Q"], x["K"], x["V"], mask)
    for o in outs:
        np.testing.assert_allclose(o["out0"], want, rtol=0, atol=1e-12)


def test_decoding_with_the_whole_size_a_temperature_and_gradients(tmp_path):
    """`m <= p + M - P` needs the whole key count M (not a part's), the temperature is in the rescaling
    (`exp(d / T)`), and L is a second output. Gradients of both outputs: each process's own inputs' gradients
    equal the single-process ones restricted to its part (the keys and values), or summed over the group
    (the queries, which every process holds)."""
    x = inputs(3, 11, seed=1)
    job = dict(spec=DECODE, inputs=x, cuts=[0, 4, 11], tile=2, grad=True)
    outs = run(job, tmp_path)
    mask = np.arange(11)[None, :] <= np.arange(3)[:, None] + 11 - 3
    want_o, want_l = attention(x["Q"], x["K"], x["V"], mask, temp=0.8)
    for o in outs:
        np.testing.assert_allclose(o["out0"], want_o, rtol=0, atol=1e-12)
        np.testing.assert_allclose(o["out1"], want_l, rtol=0, atol=1e-12)
    # the single-process gradients of the same loss (every process's loss counted: world x one output)
    k = einattn.compile(DECODE, backend="torch")
    t = {n: torch.tensor(v, dtype=torch.float64, requires_grad=True) for n, v in x.items()}
    o, lse = k(**t)
    (2 * (o.sum() + 2 * lse.sum())).backward()
    np.testing.assert_allclose(outs[0]["grad_Q"] + outs[1]["grad_Q"], t["Q"].grad.numpy(), atol=1e-10)
    for n in ("K", "V"):
        whole = np.concatenate([outs[0][f"grad_{n}"], outs[1][f"grad_{n}"]], axis=2)
        np.testing.assert_allclose(whole, t[n].grad.numpy(), atol=1e-10)


def test_three_processes_a_part_smaller_than_a_tile_and_an_empty_part(tmp_path):
    """A process with no key contributes an absent state (SEEN = 0), which the merge skips."""
    x = inputs(5, 9, seed=2)
    outs = run(
        dict(path=str(EXAMPLES / "attention_3pass.ein"), inputs=x, cuts=[0, 1, 1, 9], tile=4, grad=False),
        tmp_path,
        world=3,
    )
    want, _ = attention(x["Q"], x["K"], x["V"], np.ones((5, 9), bool))
    for o in outs:
        np.testing.assert_allclose(o["out0"], want, rtol=0, atol=1e-12)


def test_errors_are_clear():
    with pytest.raises(einattn.EinError, match="not initialised"):
        ContextParallel(EXAMPLES / "causal.ein")(**{n: torch.zeros(1, 1, 2, 2) for n in ("Q", "K", "V")})
    with pytest.raises(einattn.EinError, match="torch or triton backend"):
        ContextParallel(EXAMPLES / "causal.ein", backend="numpy")
    with pytest.raises(einattn.EinError, match="cannot stream over e: there is no max over it"):
        ContextParallel(EXAMPLES / "causal.ein", rank="e")  # (split-K's own refusal)


def _mismatch_worker(rank: int, world: int, port: int, which: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cp = ContextParallel(EXAMPLES / "causal.ein", rank="m", tile=2)
        q = torch.zeros(1, 1, 3 if (which == "queries" and rank == 1) else 4, 2)
        k = torch.zeros(1, 1, 3, 2)
        v = torch.zeros(1, 1, 2 if (which == "parts" and rank == 1) else 3, 2)
        try:
            cp(q, k, v)
            message = "no error"
        except einattn.EinError as e:
            message = str(e)
        (Path(out_dir) / f"rank{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("which", "expected"),
    [("parts", "process 1's parts along `m` disagree"), ("queries", "every process must hold all of it")],
)
def test_a_mistake_on_one_process_is_the_same_error_on_every_process(which, expected, tmp_path):
    """Checked after one all-gather of what each process holds: the others do not die inside a later
    collective (gloo aborted the process on a size mismatch, or dropped the connection)."""
    mp.spawn(_mismatch_worker, args=(2, _free_port(), which, str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        assert expected in (tmp_path / f"rank{r}.txt").read_text()
