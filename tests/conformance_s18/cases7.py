"""Cases that exposed bugs in session 18, and their neighbours: softmax attention whose query is shared by
every head (the torch backend's SDPA library path kept one query head against several key heads: a shape
error, or 0 heads), causal and in a window; a value shared by the heads beside per-head keys; keys centred
by their mean before the softmax (``passes="auto"`` fell back to deferral alone, 3 passes where the online
softmax in the second pass gives 2)."""

import numpy as np

from .common import make_rn, pm, registry, softmax

rn, rng = make_rn(1807)
CASES, case = registry()

_SM = """
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""


def shared_q_ref(Q, K, V, W=None):
    B, H, M, E = K.shape
    P = Q.shape[1]
    p, m = pm(P, M)
    mask = m <= p if W is None else (p - m >= 0) & (p - m < W)
    O = np.zeros((B, H, P, V.shape[3]))
    for b in range(B):
        for h in range(H):
            O[b, h] = softmax(Q[b] @ K[b, h].T / np.sqrt(E), mask) @ V[b, h]
    return O


case(
    "s18_bug_torch_library_query_shared_by_heads_causal",
    """
# one query per batch, read by every head (multi-key attention), causal
input  Q[b, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, m, p]  = Q[b, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
"""
    + _SM,
    dict(Q=rn(2, 4, 3), K=rn(2, 3, 5, 3), V=rn(2, 3, 5, 2)),
    shared_q_ref,
    passes={"m": 3},
)


case(
    "s18_bug_torch_library_query_shared_by_heads_window",
    """
# the same in a window of 2 keys (SDPA over blocks of rows)
input  Q[b, p, e], K[b, h, m, e], V[b, h, m, f]
param  W = 2
output O
S[b, h, m, p]  = Q[b, p, e] * K[b, h, m, e] * rsqrt(E)  where 0 <= p - m < W
"""
    + _SM,
    dict(Q=rn(2, 4, 3), K=rn(2, 3, 5, 3), V=rn(2, 3, 5, 2)),
    lambda Q, K, V: shared_q_ref(Q, K, V, W=2),
    passes={"m": 3},
)


def shared_v_ref(Q, K, V):
    B, H, P, E = Q.shape
    O = np.zeros((B, H, P, V.shape[2]))
    for b in range(B):
        for h in range(H):
            O[b, h] = softmax(Q[b, h] @ K[b, h].T / np.sqrt(E)) @ V[b]
    return O


case(
    "s18_att_value_shared_by_heads_keys_per_head",
    """
# per-head keys, one value tensor for every head
input  Q[b, h, p, e], K[b, h, m, e], V[b, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, m, f] / SD[b, h, p]
""",
    dict(Q=rn(2, 2, 4, 3), K=rn(2, 2, 5, 3), V=rn(2, 5, 2)),
    shared_v_ref,
    passes={"m": 3},
)


# --- keys centred by their mean over every key before the softmax: 4 passes as written, 3 deferred; with
# the online softmax in the second pass, 2 (passes="auto" fell back to deferral alone: 3)
def centred_ref(Q, K, V):
    return softmax(Q @ (K - K.mean(0)).T) @ V


case(
    "s18_bug_auto_streams_softmax_after_a_total_pass",
    """
# the scores read keys minus their mean, a total over every key that the softmax needs first
input  Q[p, e], K[m, e], V[m, f]
output O
KM[e]    = K[m, e] / M
KC[m, e] = K[m, e] - KM[e]
S[m, p]  = Q[p, e] * KC[m, e]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(5, 3), K=rn(8, 3), V=rn(8, 2)),
    centred_ref,
    passes={"m": 4},
)
