"""Two-rank and three-factor sums split into one ``tl.dot`` per statement (``lowering/triton_split.py``), so
that causal linear attention and Lightning attention, streamed over their keys by the rewrite's rule 3, run
as one fused kernel; values against the NumPy reference under the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from einattn.lowering.triton_split import split_contractions
from triton_cases import DEVICE, EXAMPLES, check

import einattn
from einattn.rewrite import auto_rewrite

LIGHTNING = EXAMPLES / "variants" / "07_lightning.ein"


def test_causal_linear_attention_splits_into_shared_scores():
    prog, _ = auto_rewrite(einattn.parse((EXAMPLES / "linear_causal.ein").read_text()))
    split = split_contractions(prog)
    defs = {e.tensor: e for e in split.einsums if e.kind == "plain"}
    s = defs["LNUM_S"]  # the tile's scores, summed over the features, filtered as the sums were
    assert [r for r, _ in s.reduce] == ["e"] and s.filter is not None
    for name in ("LNUM", "LDEN"):  # both sums read the one score tile, over the tile's keys only
        e = defs[name]
        assert [r for r, _ in e.reduce] == ["m0"] and e.filter is None
        assert any(rd.tensor == "LNUM_S" for rd in e.reads())
    assert "LDEN_S" not in defs
    assert split_contractions(split) is split  # nothing left to split


@pytest.mark.parametrize("spec", [EXAMPLES / "linear_causal.ein", LIGHTNING])
@pytest.mark.parametrize("tile", [4, 5, 16])
def test_fused_and_equal_to_numpy(spec, tile):
    sizes = dict(b=2, h=2, p=13, m=13, e=5, f=3)
    kern = check(spec, sizes=sizes, tile=tile)
    assert kern.plan.path == "fused", kern.plan.reason
    assert "tl.dot(" in kern.source


def test_lightning_decay_and_cross_lengths():
    """More queries than keys and the other way round, decays near 0 and 1 (lam in [0.05, 0.99])."""
    kern = einattn.compile(LIGHTNING, backend="triton", tile=4)
    assert kern.plan.path == "fused"
    rng = np.random.default_rng(1)
    for p, m in ((9, 5), (5, 11)):
        q, k = rng.standard_normal((1, 3, p, 4)), rng.standard_normal((1, 3, m, 4))
        v, lam = rng.standard_normal((1, 3, m, 2)), np.array([0.05, 0.5, 0.99])
        pp, mm = np.arange(p)[:, None], np.arange(m)[None, :]
        w = np.where(mm <= pp, lam[:, None, None] ** np.maximum(pp - mm, 0), 0.0)  # [h, p, m]
        want = np.einsum("bhpm,bhmf->bhpf", np.einsum("bhpe,bhme->bhpm", q, k) * w[None], v)
        got = kern(*(torch.tensor(x, dtype=torch.float64, device=DEVICE) for x in (q, k, v, lam)))
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-10, atol=1e-12)


def test_a_filter_along_the_features_stays_on_the_outer_sum():
    """A filter that reads a rank the inner sum does not keep (`f`) stays on the outer statement."""
    src = """
input  Q[p, e], K[m, e], V[m, f]
output O
O[p, f] = Q[p, e] * K[m, e] * V[m, f]  where m <= p and f != 1
"""
    check(src, sizes=dict(p=7, m=9, e=3, f=3), tile=4)


def test_a_negated_product_splits_through_the_negation():
    """The denominator's cotangent of an output written in one statement, ``dO[p, f] * (-(N[m, p] * V[m, f]
    / D[p]) / D[p])`` summed over ``m`` and ``f``: the negation is a factor ``-1``, so the sum over the
    features comes first (``tl.dot(dO, V)`` per tile), where the negated product was one operand over ``p``,
    ``m`` and ``f``; the values equal the NumPy reference's."""
    src = """
input  dO[p, f], N[m, p], V[m, f], D[p]
output G
G[p] = dO[p, f] * (-(N[m, p] * V[m, f] / D[p]) / D[p])
"""
    split = split_contractions(einattn.parse(src))
    inner = [e for e in split.einsums if e.tensor != "G"]
    assert len(inner) == 1 and [r for r, _ in inner[0].reduce] == ["f"]
    assert [r for r, _ in split.einsums[-1].reduce] == ["m"]
    rng = np.random.default_rng(3)
    x = dict(
        dO=rng.standard_normal((6, 3)),
        N=rng.random((5, 6)),
        V=rng.standard_normal((5, 3)),
        D=rng.random(6) + 0.5,
    )
    want = -np.einsum("pf,mp,mf->p", x["dO"], x["N"], x["V"]) / x["D"] ** 2
    kern = einattn.compile(src, backend="triton")
    got = kern(**{n: torch.tensor(v, dtype=torch.float64, device=DEVICE) for n, v in x.items()})
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-10, atol=1e-12)
