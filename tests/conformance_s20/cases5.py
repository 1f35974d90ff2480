"""Integer tensors as values and keys from two sources: ALiBi over packed sequences with the distances taken
from an int position-id table, a KV cache quantised to int8 codes (an `: int` input read as a value) with a
float scale per key, and prefix tuning (learned prefix keys and values that share the softmax with causal
self-attention: one normaliser over two key ranks)."""

import numpy as np

from .common import make_rn, pm, registry, softmax

rn, rng = make_rn(2005)
CASES, case = registry()


def scores(Q, K):
    return np.einsum("...pe,...me->...pm", Q, K) / np.sqrt(Q.shape[-1])


# --- ALiBi over packed sequences: the distance is pos[m] - pos[p] from HF-style position ids (int values),
# causal within each document (doc ids)
def alibi_pos_ref(Q, K, V, slope, pos, doc):
    P = Q.shape[1]
    p, m = pm(P, P)
    s = scores(Q, K) + slope[:, None, None] * (pos[m] - pos[p])
    return softmax(s, (m <= p) & (doc[m] == doc[p])) @ V


case(
    "s20_int_alibi_position_ids_as_values_packed",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], slope[h], pos[t] : int, doc[t] : int
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p and doc[m] == doc[p]
S[h, m, p]  = QK[h, m, p] + slope[h] * (pos[m] - pos[p])
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
""",
    dict(
        Q=rn(2, 7, 4),
        K=rn(2, 7, 4),
        V=rn(2, 7, 3),
        slope=np.array([0.5, 0.125]),
        pos=np.array([0, 1, 2, 0, 1, 2, 3]),
        doc=np.array([0, 0, 0, 1, 1, 1, 1]),
    ),
    alibi_pos_ref,
)


# --- an int8-quantised KV cache: codes (int values) times a float scale per key and head
def quant_ref(Q, KQ, VQ, ks, vs):
    K = KQ * ks[..., None]
    V = VQ * vs[..., None]
    return softmax(scores(Q, K)) @ V


case(
    "s20_int_quantised_kv_codes_as_values",
    """
input  Q[b, h, p, e], KQ[b, h, m, e] : int, VQ[b, h, m, f] : int, ks[b, h, m], vs[b, h, m]
output O
S[b, h, m, p]  = Q[b, h, p, e] * KQ[b, h, m, e] * ks[b, h, m] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * VQ[b, h, m, f] * vs[b, h, m] / DEN[b, h, p]
""",
    dict(
        Q=rn(1, 2, 3, 4),
        KQ=rng.integers(-127, 128, (1, 2, 6, 4)).astype(np.int8),
        VQ=rng.integers(-127, 128, (1, 2, 6, 3)).astype(np.int8),
        ks=np.abs(rn(1, 2, 6)) * 0.01,
        vs=np.abs(rn(1, 2, 6)) * 0.01,
    ),
    quant_ref,
)


# --- prefix tuning: N learned prefix keys/values per head join the causal keys in one softmax
def prefix_tuning_ref(Q, K, V, PK, PV):
    _H, P, _E = Q.shape
    N = PK.shape[1]
    p, m = pm(P, K.shape[1])
    s = np.concatenate([scores(Q, PK), scores(Q, K)], axis=-1)
    mask = np.concatenate([np.ones((P, N), bool), m <= p], axis=-1)
    return softmax(s, mask) @ np.concatenate([PV, V], axis=1)


case(
    "s20_int_prefix_tuning_two_key_sources_one_softmax",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], PK[h, n, e], PV[h, n, f]
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
T[h, n, p]  = Q[h, p, e] * PK[h, n, e] * rsqrt(E)
GS[h, p]    = S[h, m, p] :: max(m)
GT[h, p]    = T[h, n, p] :: max(n)
GM[h, p]    = max(GS[h, p], GT[h, p])
XS[h, m, p] = exp(S[h, m, p] - GM[h, p])
XT[h, n, p] = exp(T[h, n, p] - GM[h, p])
DS[h, p]    = XS[h, m, p]
DT[h, p]    = XT[h, n, p]
NS[h, p, f] = XS[h, m, p] * V[h, m, f]
NT[h, p, f] = XT[h, n, p] * PV[h, n, f]
O[h, p, f]  = (NS[h, p, f] + NT[h, p, f]) / (DS[h, p] + DT[h, p])
""",
    dict(Q=rn(2, 5, 4), K=rn(2, 5, 4), V=rn(2, 5, 3), PK=rn(2, 2, 4), PV=rn(2, 2, 3)),
    prefix_tuning_ref,
)
