"""Softmax attention in shapes the earlier sets do not use: heads cut from a flat model dimension by a
partition of a feature rank (the last head ragged), slot attention (softmax over the slots, then a mean
over the inputs), Chebyshev-distance scores reduced with ``:: min(e)``, a numerator over kept keys under a
denominator over every key, values read one key ahead, the attention each key receives as a second output,
two softmaxes over two key ranks blended, the attention entropy, caller-chosen key lists (gathers with
padding and duplicates), a negative temperature, a weighted max over the keys and a softmax over queries
and keys jointly."""

import numpy as np

from .common import lse, make_rn, pm, registry, softmax

rn, rng = make_rn(1701)
CASES, case = registry()


# --- heads from a flat model dimension: rank D = H * DH, D = 7 so the last head has one feature; V's
# columns per head from param GH, G = 5 so head 2's second value column is past the end (absent: 0)
def flat_heads_ref(Q, K, V, DH=3, GH=2):
    P, D = Q.shape
    G = V.shape[1]
    H = -(-D // DH)
    O = np.zeros((P, H, GH))
    for h in range(H):
        cols = list(range(h * DH, min(h * DH + DH, D)))
        a = softmax(Q[:, cols] @ K[:, cols].T / np.sqrt(DH))
        for gh in range(GH):
            if h * GH + gh < G:
                O[:, h, gh] = a @ V[:, h * GH + gh]
    return O


case(
    "s17_att_heads_from_flat_dim_partition_ragged_head",
    """
# multi-head attention on flat model dims: head h owns features h*DH .. h*DH + DH - 1 (the last head ragged)
input  Q[p, d], K[m, d], V[m, g]
param  DH = 3
param  GH = 2
rank   D = H * DH
output O
S[h, m, p]  = Q[p, h * DH + dh] * K[m, h * DH + dh] * rsqrt(DH)
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
SD[h, p]    = EX[h, m, p]
O[p, h, gh] = EX[h, m, p] * V[m, h * GH + gh] / SD[h, p]
""",
    dict(Q=rn(4, 7), K=rn(8, 7), V=rn(8, 5)),
    flat_heads_ref,
    passes={"m": 3},
)


# --- slot attention: softmax over the slots k for each input m (plus EPS), then a weighted mean over m
def slot_ref(S0, X, V, EPS=1e-8):
    L = S0 @ X.T / np.sqrt(S0.shape[1])
    A = softmax(L, axis=0) + EPS
    return (A @ V) / A.sum(1)[:, None], A


case(
    "s17_att_slot_attention_softmax_over_slots_mean_over_inputs",
    """
# slot attention (Locatello et al.): slots compete for each input, then each slot averages its inputs
input  S0[k, e], X[m, e], V[m, f]
param  EPS = 1e-8
output U, A
L[k, m]  = S0[k, e] * X[m, e] * rsqrt(E)
GM[m]    = L[k, m] :: max(k)
EX[k, m] = exp(L[k, m] - GM[m])
SD[m]    = EX[k, m]
A[k, m]  = EX[k, m] / SD[m] + EPS
DEN[k]   = A[k, m]
U[k, f]  = A[k, m] * V[m, f] / DEN[k]
""",
    dict(S0=rn(3, 4), X=rn(9, 4), V=rn(9, 2)),
    slot_ref,
    passes={"k": 3, "m": 2},
)


# --- Chebyshev-distance scores: -max_e |q - k| written as a min over e of -|q - k|, causal with P < M
def cheb_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    S = -np.abs(Q[:, None, :] - K[None, :, :]).max(-1)
    mask = m <= p
    return softmax(S, mask) @ V, lse(S, mask)


case(
    "s17_att_chebyshev_distance_min_over_e_causal",
    """
# distance attention: the score is minus the largest coordinate gap, a min over e of -|q - k|
input  Q[p, e], K[m, e], V[m, f]
output O, L
S[m, p]  = -abs(Q[p, e] - K[m, e]) :: min(e)  where m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
""",
    dict(Q=rn(5, 3), K=rn(7, 3), V=rn(7, 2)),
    cheb_ref,
    passes={"m": 3},
)


# --- a numerator over kept keys divided by a denominator over every key; batch 1 keeps nothing
def kept_ref(Q, K, V, keep):
    B, P, E = Q.shape
    O = np.zeros((B, P, V.shape[2]))
    MASS = np.zeros((B, P))
    for b in range(B):
        a = softmax(Q[b] @ K[b].T / np.sqrt(E))
        a = a * (keep[b] != 0)[None, :]
        O[b] = a @ V[b]
        MASS[b] = a.sum(1)
    return O, MASS


case(
    "s17_att_numerator_over_kept_keys_denominator_over_all",
    """
# dropped keys leave the numerator only: the kept weights no longer sum to one (MASS says how much is kept)
input  Q[b, p, e], K[b, m, e], V[b, m, f], keep[b, m] : int
output O, MASS
S[b, m, p]   = Q[b, p, e] * K[b, m, e] * rsqrt(E)
GM[b, p]     = S[b, m, p] :: max(m)
EX[b, m, p]  = exp(S[b, m, p] - GM[b, p])
SD[b, p]     = EX[b, m, p]
NUM[b, p, f] = EX[b, m, p] * V[b, m, f]  where keep[b, m] != 0
KEPT[b, p]   = EX[b, m, p]  where keep[b, m] != 0
O[b, p, f]   = NUM[b, p, f] / SD[b, p]
MASS[b, p]   = KEPT[b, p] / SD[b, p] ?? 0
""",
    dict(
        Q=rn(3, 4, 3),
        K=rn(3, 7, 3),
        V=rn(3, 7, 2),
        keep=np.array([[1, 0, 1, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]], dtype=np.int64),
    ),
    kept_ref,
    passes={"m": 2},
)


# --- values read one key ahead under a causal mask: the last key's successor is past the end (skipped)
def ahead_ref(Q, K, V):
    H, P, _ = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    O = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        a = softmax(Q[h] @ K[h].T, m <= p)
        O[h] = a[:, : M - 1] @ V[h, 1:]
    return O


case(
    "s17_att_values_one_key_ahead_causal",
    """
# each key hands over the value of its successor; the last key's successor is outside V and drops out
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
S[h, p, m]  = Q[h, p, e] * K[h, m, e]  where m <= p
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
SD[h, p]    = EX[h, p, m]
O[h, p, f]  = EX[h, p, m] * V[h, m + 1, f] / SD[h, p]
""",
    dict(Q=rn(2, 7, 3), K=rn(2, 7, 3), V=rn(2, 7, 2)),
    ahead_ref,
    passes={"m": 3},
)


# --- the attention each key receives, as a second output along m; keys 6 and 7 are seen by no query
def received_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    a = softmax(Q @ K.T / np.sqrt(Q.shape[1]), (p - 2 <= m) & (m <= p + 1))
    return a @ V, a.sum(0)


case(
    "s17_att_attention_received_per_key_output",
    """
# a band of keys per query; COL[m] is the attention key m receives over all queries (absent: 0)
input  Q[p, e], K[m, e], V[m, f]
output O, COL
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)  where p - 2 <= m <= p + 1
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
A[m, p]  = EX[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
COL[m]   = A[m, p]
""",
    dict(Q=rn(5, 3), K=rn(8, 3), V=rn(8, 2)),
    received_ref,
    passes={"m": 3},
)


# --- two softmaxes over two key ranks (causal self keys m, memory keys n), blended by a float param
def two_ranks_ref(Q, K, V, KM, VM, G=0.75):  # the override
    P, E = Q.shape
    p, m = pm(P, K.shape[0])
    o1 = softmax(Q @ K.T / np.sqrt(E), m <= p) @ V
    o2 = softmax(Q @ KM.T / np.sqrt(E)) @ VM
    return (1 - G) * o1 + G * o2


case(
    "s17_att_two_key_ranks_two_softmaxes_blended",
    """
# causal self-attention blended with attention over a memory of N slots
input  Q[p, e], K[m, e], V[m, f], KM[n, e], VM[n, f]
param  G = 0.3
output O
S1[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
G1[p]    = S1[m, p] :: max(m)
E1[m, p] = exp(S1[m, p] - G1[p])
D1[p]    = E1[m, p]
O1[p, f] = E1[m, p] * V[m, f] / D1[p]
S2[n, p] = Q[p, e] * KM[n, e] * rsqrt(E)
G2[p]    = S2[n, p] :: max(n)
E2[n, p] = exp(S2[n, p] - G2[p])
D2[p]    = E2[n, p]
O2[p, f] = E2[n, p] * VM[n, f] / D2[p]
O[p, f]  = (1 - G) * O1[p, f] + G * O2[p, f]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2), KM=rn(4, 3), VM=rn(4, 2)),
    two_ranks_ref,
    params={"G": 0.75},
    passes={"m": 3, "n": 3},
)


# --- the entropy of each causal row in a form that needs no weight matrix: GM + log SD - sum(EX * S) / SD
def entropy_ref(Q, K, V):
    P, E = Q.shape
    p, m = pm(P, K.shape[0])
    S = Q @ K.T / np.sqrt(E)
    a = softmax(S, m <= p)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(a > 0, a * np.log(np.where(a > 0, a, 1)), 0).sum(1)
    return a @ V, ent


case(
    "s17_att_entropy_of_causal_rows_deferred",
    """
# attention output and the entropy of each row's weights (row 0 has one key: entropy 0)
input  Q[p, e], K[m, e], V[m, f]
output O, ENT
S[m, p]   = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
GM[p]     = S[m, p] :: max(m)
EX[m, p]  = exp(S[m, p] - GM[p])
SD[p]     = EX[m, p]
SES[p]    = EX[m, p] * S[m, p]
SNV[p, f] = EX[m, p] * V[m, f]
O[p, f]   = SNV[p, f] / SD[p]
ENT[p]    = GM[p] + log(SD[p]) - SES[p] / SD[p]
""",
    dict(Q=rn(7, 4), K=rn(7, 4), V=rn(7, 3)),
    entropy_ref,
    passes={"m": 2},
)


# --- caller-chosen keys per query (top-k selection): -1 pads, duplicates count twice, row 2 has none
def chosen_ref(Q, K, V, idx):
    P, E = Q.shape
    M = K.shape[0]
    O = np.zeros((P, V.shape[1]))
    for p in range(P):
        ks = [int(i) for i in idx[p] if 0 <= i < M]
        if not ks:
            continue
        s = np.array([Q[p] @ K[i] for i in ks]) / np.sqrt(E)
        w = np.exp(s - s.max())
        w = w / w.sum()
        O[p] = sum(wi * V[i] for wi, i in zip(w, ks))
    return O


case(
    "s17_att_gathered_key_lists_padding_duplicates",
    """
# sparse attention over caller-chosen keys idx[p, j]: out-of-range entries pad, repeated keys count twice
input  Q[p, e], K[m, e], V[m, f], idx[p, j] : int
output O
S[p, j]  = Q[p, e] * K[idx[p, j], e] * rsqrt(E)
GM[p]    = S[p, j] :: max(j)
EX[p, j] = exp(S[p, j] - GM[p])
SD[p]    = EX[p, j]
O[p, f]  = EX[p, j] * V[idx[p, j], f] / SD[p]
""",
    dict(
        Q=rn(4, 3),
        K=rn(9, 3),
        V=rn(9, 2),
        idx=np.array([[0, 3, 3, 8], [7, -1, 2, 9], [-1, 9, 12, -5], [5, 5, 5, 5]], dtype=np.int64),
    ),
    chosen_ref,
    passes={"j": 3},
)


# --- a negative temperature param: exp((S - GM) / T) with T < 0 is the softmax of S / T (the max of S is
# then not the stabiliser of S / T, but the values stay small)
def negtemp_ref(Q, K, V, T=-0.7):
    P, M = Q.shape[1], K.shape[1]
    p, m = pm(P, M)
    S = np.einsum("hpe,hme->hpm", Q, K)
    return np.einsum("hpm,hmf->hpf", softmax(S / T, m <= p + 1), V)


case(
    "s17_att_negative_temperature_param",
    """
# softmax of S / T with a negative temperature, keys up to one ahead of the query
input  Q[h, p, e], K[h, m, e], V[h, m, f]
param  T = -0.7
output O
S[h, p, m]  = Q[h, p, e] * K[h, m, e]  where m <= p + 1
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp((S[h, p, m] - GM[h, p]) / T)
SD[h, p]    = EX[h, p, m]
O[h, p, f]  = EX[h, p, m] * V[h, m, f] / SD[h, p]
""",
    dict(Q=rn(2, 6, 2, scale=0.8), K=rn(2, 8, 2, scale=0.8), V=rn(2, 8, 3)),
    negtemp_ref,
    passes={"m": 3},
)


# --- the output and a weighted max over the keys (the largest a[m] * v[m, f]): a max over normalised weights
def wmax_ref(Q, K, V):
    a = softmax(Q @ K.T / np.sqrt(Q.shape[1]))
    return a @ V, (a[:, :, None] * V[None, :, :]).max(1)


case(
    "s17_att_weighted_max_over_keys_second_output",
    """
# besides the weighted sum, the largest single weighted value per feature
input  Q[p, e], K[m, e], V[m, f]
output O, WM
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
A[m, p]  = EX[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
WM[p, f] = A[m, p] * V[m, f] :: max(m)
""",
    dict(Q=rn(5, 3), K=rn(7, 3), V=rn(7, 4)),
    wmax_ref,
    passes={"m": 3},
)


# --- one softmax over every (query, key) pair at once: a max and a sum over m and p together
def joint_ref(Q, K, V):
    S = Q @ K.T
    W = np.exp(S - S.max())
    W = W / W.sum()
    return W @ V


case(
    "s17_att_joint_softmax_over_queries_and_keys",
    """
# the weights of all query-key pairs sum to one (a max over two ranks at once: not streamed)
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]
GM       = S[m, p] :: max(m, p)
EX[m, p] = exp(S[m, p] - GM)
SD       = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD
""",
    dict(Q=rn(4, 3), K=rn(6, 3), V=rn(6, 2)),
    joint_ref,
    passes={"m": 3, "p": 3},
)
