"""Reviewer regressions (session 13b): inline shifts that the rewrite names (a temperature, an offset, the
difference spelled -GM + S), split-K finishes that compute what is free of the split rank (values used both in
the loop and after it, int inputs, ranks sized only by a sharded input, the whole size), split-K's refusals of
values along the rank, split-K's torch gradients with empty parts, and context parallelism with doc ids, an
output free of m, positional arguments and a param override (2 gloo processes).

Every number is compared with the spec as written on the NumPy backend, in float64.
"""

from __future__ import annotations

import itertools
import os
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed
from rewrite_cases import run, run_split

import einattn
from einattn.rewrite import rewrite, split_k

# an empty part's SEEN is NaN, cast to int by the harness (see the report)
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")

M = 8
HEAD = "input  Q[p, e], K[m, e], V[m, f]"
SOFTMAX = """S[m, p]   = Q[p, e] * K[m, e]
GM[p]     = S[m, p] :: max(m)
SN[m, p]  = exp(S[m, p] - GM[p])
SD[p]     = SN[m, p]
"""


def _parse(text: str) -> einattn.Program:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return einattn.parse(text, "review.ein")


def _inputs(prog: einattn.Program, seed: int = 0, m: int = M) -> dict:
    rng = np.random.default_rng(seed)
    sizes = dict(p=4, m=m, e=3, f=2, g=3)
    out = {}
    for n in prog.inputs:
        t = prog.tensor(n)
        shape = [sizes[r] for r in t.ranks]
        out[n] = rng.integers(0, 2, size=shape) if t.dtype == "int" else rng.standard_normal(shape)
    return out


def _same(want, got):
    assert len(want) == len(got)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


# ---- inline shifts ----

INLINE = {
    "temperature": "exp((S[m, p] - GM[p]) / T)",
    "offset": "exp(S[m, p] - GM[p] - 1.5)",
    "reordered_difference": "exp(-GM[p] + S[m, p])",
}


@pytest.mark.parametrize("name", sorted(INLINE))
def test_an_inline_shift_in_both_sums_streams_and_splits(name):
    shift = INLINE[name]
    prog = _parse(
        f"{HEAD}\nparam  T = 0.5\noutput O, L\nS[m, p] = Q[p, e] * K[m, e]\nGM[p] = S[m, p] :: max(m)\n"
        f"SD[p] = {shift}\nO[p, f] = {shift} * V[m, f] / SD[p]\nL[p] = GM[p] + log(SD[p])\n"
    )
    x = _inputs(prog)
    want = run(prog, x)
    _same(want, run(rewrite(prog, passes=1, tile=3)[0], x))
    for cuts in ([3], [0, 5], [2, 2, 7]):
        _same(want, run_split(prog, x, cuts, M, 3))


# ---- split-K finishes ----

FINISHES = {
    # a value free of m that the loop and the finals both read (computed in the partial and in the finish)
    "used_in_loop_and_after": (
        f"{HEAD}, X[p]\noutput O\nXB[p] = X[p] / M\nS[m, p] = Q[p, e] * K[m, e] * XB[p]\n"
        "GM[p] = S[m, p] :: max(m)\nSN[m, p] = exp(S[m, p] - GM[p])\nSD[p] = SN[m, p]\n"
        "O1[p, f] = SN[m, p] * V[m, f] / SD[p]\nO[p, f] = O1[p, f] + XB[p]\n"
    ),
    "int_input_in_the_finish": (
        f"{HEAD}, dq[p] : int\noutput O\n{SOFTMAX}O1[p, f] = SN[m, p] * V[m, f] / SD[p]\n"
        "O[p, f] = O1[p, f] * dq[p]\n"
    ),
    "an_output_along_a_rank_of_its_own": (
        f"{HEAD}, X[g]\noutput O, T\n{SOFTMAX}O[p, f] = SN[m, p] * V[m, f] / SD[p]\nT[g] = X[g] * 2\n"
    ),
    # f is sized only by V (along m) and no state: the finish takes V for its size
    "a_rank_sized_only_by_a_sharded_input": (
        f"{HEAD}\noutput L, T\n{SOFTMAX}L[p] = GM[p] + log(SD[p])\nT[p, f] = L[p] * f\n"
    ),
    "a_scalar_input_added_after_the_sums": (
        f"{HEAD}, T0\noutput O\nS[m, p] = Q[p, e] * K[m, e] * T0\nGM[p] = S[m, p] :: max(m)\n"
        "SN[m, p] = exp(S[m, p] - GM[p])\nSD[p] = SN[m, p]\nO1[p, f] = SN[m, p] * V[m, f] / SD[p]\n"
        "O[p, f] = O1[p, f] + T0\n"
    ),
}


@pytest.mark.parametrize("name", sorted(FINISHES))
def test_split_k_finish_computes_what_is_free_of_the_rank(name):
    prog = _parse(FINISHES[name])
    x = _inputs(prog, seed=1)
    want = run(prog, x)
    for cuts in ([3], [0, 0, 8, 8], [2, 2, 7]):
        _same(want, run_split(prog, x, cuts, M, 3))


@pytest.mark.parametrize(
    "tail, line",
    [
        ("O[p, f] = SN[m, p] * V[m, f] / SD[p]\nT[f] = V[m, f]\n", 8),
        ("O[p, f] = SN[m, p] * V[m, f] / SD[p]\nT[p] = S[m, p]\n", 8),
    ],
)
def test_split_k_refuses_a_sum_along_the_rank_outside_the_softmax_located(tail, line):
    prog = _parse(f"{HEAD}\noutput O, T\n{SOFTMAX}{tail}")
    with pytest.raises(einattn.EinError, match=r"`T` is computed along m outside the normalised sums") as e:
        split_k(prog, "m", 3)
    assert f"review.ein:{line}:" in str(e.value)


def test_split_k_refuses_a_weight_that_needs_every_key_at_its_statement():
    """The deferral moves `KN` (a sum over m) past the sums: 1 pass streams; split-K cannot merge KN."""
    prog = _parse(
        f"{HEAD}\noutput O\nKN = K[m, e] * K[m, e] * 0.01\nS[m, p] = Q[p, e] * K[m, e]\n"
        "GM[p] = S[m, p] :: max(m)\nSD[p] = exp(S[m, p] - GM[p]) * KN\n"
        "O[p, f] = exp(S[m, p] - GM[p]) * V[m, f] / SD[p]\n"
    )
    x = _inputs(prog)
    _same(run(prog, x), run(rewrite(prog, passes=1, tile=3)[0], x))
    with pytest.raises(einattn.EinError, match=r"review.ein:3:.*`KN` is computed along m"):
        split_k(prog, "m", 3)


# ---- split-K on torch: gradients through parts, empty ones included ----


def test_split_k_torch_gradients_of_a_per_row_temperature_with_empty_parts():
    prog = _parse(
        f"{HEAD}, T[p]\noutput O\nS[m, p] = Q[p, e] * K[m, e]\nGM[p] = S[m, p] :: max(m)\n"
        "SN[m, p] = exp((S[m, p] - GM[p]) / T[p])\nSD[p] = SN[m, p]\nO[p, f] = SN[m, p] * V[m, f] / SD[p]\n"
    )
    x = _inputs(prog, seed=2, m=7)
    x["T"] = np.array([0.5, 1.0, 2.0, -0.7])

    def leaves():
        return {n: torch.tensor(v, requires_grad=True) for n, v in x.items()}

    t = leaves()
    einattn.compile(prog, backend="torch", passes="as-written")(**t).sum().backward()
    want = {n: v.grad for n, v in t.items()}
    sk = split_k(prog, "m", 3)
    merge = einattn.compile(sk.merge, backend="torch")
    finish = einattn.compile(sk.finish, backend="torch")
    for cuts in ([0, 3, 7], [0, 0, 7, 7]):
        t = leaves()
        parts = []
        for a, b in itertools.pairwise(cuts):
            part = {n: (t[n][a:b] if n in ("K", "V") else t[n]) for n in sk.partial.inputs}
            parts.append(einattn.compile(sk.partial, backend="torch")(**part))
        stacked = {}
        for k, n in enumerate(sk.states):
            s = torch.stack([p[k] for p in parts])
            stacked[f"{n}_s"] = s.to(torch.int64) if sk.merge.tensor(f"{n}_s").dtype == "int" else s
        merged = merge(**stacked, **{n: t[n] for n in sk.merge.inputs if n in t})
        state = {
            n: (v.to(torch.int64) if sk.finish.tensor(n).dtype == "int" else v)
            for n, v in zip(sk.states, merged)
        }
        finish(**state, **{n: t[n] for n in sk.finish.inputs if n in t}).sum().backward()
        for n in t:
            np.testing.assert_allclose(t[n].grad.numpy(), want[n].numpy(), rtol=1e-10, atol=1e-12)


# ---- context parallelism ----

DOCS = """input  Q[p, e], K[m, e], V[m, f], dq[p] : int, dk[m] : int, X[p]
param  C = 1.0
output O, T
S[m, p]   = Q[p, e] * K[m, e] * C  where dq[p] == dk[m]
GM[p]     = S[m, p] :: max(m)
SN[m, p]  = exp(S[m, p] - GM[p])
SD[p]     = SN[m, p]
O[p, f]   = SN[m, p] * V[m, f] / SD[p]
T[p]      = X[p] * 2
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, x: dict, cuts: list, out_dir: str) -> None:
    import torch.distributed as dist

    from einattn.distributed import ContextParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        prog = einattn.parse(DOCS, "docs.ein")
        cp = ContextParallel(prog, rank="m", backend="torch", tile=2, params={"C": 0.5})
        a, b = cuts[rank], cuts[rank + 1]
        args = []
        for n in prog.inputs:  # positional, in declaration order; dk (int) sharded along m
            t = torch.tensor(x[n])
            args.append(t[a:b] if "m" in prog.tensor(n).ranks else t)
        o, t = cp(*args)
        np.savez(Path(out_dir) / f"rank{rank}.npz", o=o.numpy(), t=t.numpy())
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch.distributed without gloo")
def test_context_parallel_doc_ids_an_output_free_of_m_positional_and_a_param(tmp_path):
    import torch.multiprocessing as mp

    prog = _parse(DOCS)
    x = _inputs(prog, seed=3, m=7)
    x["dq"] = np.array([0, 1, 1, 2])  # doc 2 has no key: its row is absent (0)
    want = einattn.compile(prog, backend="numpy", params={"C": 0.5})(**x)
    cuts = [0, 5, 7]
    mp.spawn(_worker, args=(2, _free_port(), x, cuts, str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        got = np.load(tmp_path / f"rank{r}.npz")
        np.testing.assert_allclose(got["o"], want[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got["t"], want[1], rtol=0, atol=0)
