"""Shapes and ranks: rank names that collide with the rewrite's generated ones, specs with six to eight
ranks (an explicit group rank, two batch ranks, two contracted feature ranks, two value ranks), size-1
ranks with empty rows, ragged prime sizes with odd head dims, latent queries without a batch rank."""

import numpy as np

from .common import att, causal, make_rn, registry, rel, scores, softmax

rn, rng = make_rn(1304)
CASES, case = registry()


# --- the key rank is `k` and the feature ranks are `k1` and `k0`: the rewrite's tile ranks must not clash
case(
    "s13_rank_names_like_rewrite_parts",
    """
input  Q[i, k1], K[k, k1], V[k, k0]
output O
S[i, k]  = Q[i, k1] * K[k, k1] * rsqrt(K1)  where k <= i
GM[i]    = S[i, k] :: max(k)
EX[i, k] = exp(S[i, k] - GM[i])
SD[i]    = EX[i, k]
O[i, k0] = EX[i, k] * V[k, k0] / SD[i]
""",
    dict(Q=rn(6, 3), K=rn(7, 3), V=rn(7, 2)),
    lambda Q, K, V: att(Q, K, V, mask=causal(6, 7)),
)


# --- seven ranks: batch, KV group, query head within the group, query, key, and two feature ranks;
# bottom-right causal (more keys than queries)
def seven_ref(Q, K, V):
    B, G, R, P, E = Q.shape
    M = K.shape[2]
    k = np.broadcast_to(K[:, :, None], (B, G, R, M, E))
    v = np.broadcast_to(V[:, :, None], (B, G, R, M, V.shape[-1]))
    return att(Q, k, v, mask=causal(P, M, M - P))


case(
    "s13_seven_ranks_explicit_groups",
    """
input  Q[b, g, r, p, e], K[b, g, m, e], V[b, g, m, f]
output O
S[b, g, r, p, m]  = Q[b, g, r, p, e] * K[b, g, m, e] * rsqrt(E)  where m <= p + M - P
GM[b, g, r, p]    = S[b, g, r, p, m] :: max(m)
EX[b, g, r, p, m] = exp(S[b, g, r, p, m] - GM[b, g, r, p])
SD[b, g, r, p]    = EX[b, g, r, p, m]
O[b, g, r, p, f]  = EX[b, g, r, p, m] * V[b, g, m, f] / SD[b, g, r, p]
""",
    dict(Q=rn(2, 2, 2, 3, 4), K=rn(2, 2, 5, 4), V=rn(2, 2, 5, 3)),
    seven_ref,
)


# --- eight ranks: layer and batch, heads, queries, keys, two contracted feature ranks, one value rank; a
# per-layer scale as an input
def eight_ref(Q, K, V, SC):
    s = np.einsum("lbhpxy,lbhmxy->lbhpm", Q, K) * SC[:, None, None, None, None]
    return np.einsum("lbhpm,lbhmf->lbhpf", softmax(s), V)


case(
    "s13_eight_ranks_two_contracted_features",
    """
input  Q[l, b, h, p, x, y], K[l, b, h, m, x, y], V[l, b, h, m, f], SC[l]
output O
QK[l, b, h, p, m] = Q[l, b, h, p, x, y] * K[l, b, h, m, x, y]
S[l, b, h, p, m]  = QK[l, b, h, p, m] * SC[l]
GM[l, b, h, p]    = S[l, b, h, p, m] :: max(m)
EX[l, b, h, p, m] = exp(S[l, b, h, p, m] - GM[l, b, h, p])
SD[l, b, h, p]    = EX[l, b, h, p, m]
O[l, b, h, p, f]  = EX[l, b, h, p, m] * V[l, b, h, m, f] / SD[l, b, h, p]
""",
    dict(Q=rn(2, 1, 2, 3, 2, 2), K=rn(2, 1, 2, 4, 2, 2), V=rn(2, 1, 2, 4, 2), SC=np.array([0.5, 1.5])),
    eight_ref,
)


# --- two value ranks: every head's values are a matrix per key
def two_val_ref(Q, K, V):
    w = softmax(scores(Q, K), causal(5, 5))
    return np.einsum("hpm,hmfc->hpfc", w, V)


case(
    "s13_two_value_ranks",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f, c]
output O
S[h, p, m]    = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
GM[h, p]      = S[h, p, m] :: max(m)
EX[h, p, m]   = exp(S[h, p, m] - GM[h, p])
SD[h, p]      = EX[h, p, m]
O[h, p, f, c] = EX[h, p, m] * V[h, m, f, c] / SD[h, p]
""",
    dict(Q=rn(2, 5, 3), K=rn(2, 5, 3), V=rn(2, 5, 2, 3)),
    two_val_ref,
)


# --- size-1 ranks everywhere but the queries: one key, one feature each; rows 2 and 3 see no key
def size1_ref(Q, K, V):
    mask = np.arange(1)[None, :] + 1 >= np.arange(4)[:, None]  # [p, m]
    return att(Q, K, V, mask=mask[None, None])


case(
    "s13_size_one_ranks_and_empty_rows",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m + 1 >= p
GM[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - GM[b, h, p])
SD[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / SD[b, h, p]
""",
    dict(Q=rn(1, 1, 4, 1), K=rn(1, 1, 1, 1), V=rn(1, 1, 1, 1)),
    size1_ref,
)


# --- ragged prime sizes and odd head dims (P = 7, M = 13, E = 3, F = 5), a band and a doc mask
def prime_ref(Q, K, V, dq, dk):
    d = rel(7, 13) + 6
    mask = (dq[:, None] == dk[None, :]) & (np.abs(d) <= 4)
    return att(Q, K, V, mask=mask)


case(
    "s13_ragged_prime_sizes_band_docs",
    """
input  Q[p, e], K[m, e], V[m, f], dq[p] : int, dk[m] : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where dq[p] == dk[m] and abs(p + 6 - m) <= 4
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(
        Q=rn(7, 3),
        K=rn(13, 3),
        V=rn(13, 5),
        dq=np.array([0, 0, 0, 1, 1, 1, 1]),
        dk=np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]),
    ),
    prime_ref,
)


# --- latent queries without a batch rank (Perceiver-style) attend to each batch's keys, with key lengths
def latent_ref(L, K, V, n):
    out = []
    for b in range(K.shape[0]):
        mask = np.arange(K.shape[1])[None, :] < n[b]
        out.append(att(L, K[b], V[b], mask=mask))
    return np.stack(out)


case(
    "s13_latent_queries_broadcast_over_batch",
    """
input  L[n, e], K[b, m, e], V[b, m, f], len[b] : int
output O
S[b, n, m]  = L[n, e] * K[b, m, e] * rsqrt(E)  where m < len[b]
GM[b, n]    = S[b, n, m] :: max(m)
EX[b, n, m] = exp(S[b, n, m] - GM[b, n])
SD[b, n]    = EX[b, n, m]
O[b, n, f]  = EX[b, n, m] * V[b, m, f] / SD[b, n]
""",
    dict(L=rn(3, 4), K=rn(3, 8, 4), V=rn(3, 8, 2), len=np.array([8, 0, 5])),
    lambda L, K, V, len: latent_ref(L, K, V, len),
)


# --- scores as the max over heads of per-head dot products (sum over e first, then max over h), then a
# softmax over keys: the reduction order of one statement inside an attention
def maxhead_ref(Q, K, V):
    s = np.einsum("hpe,hme->hpm", Q, K).max(0)
    return softmax(s, causal(5, 6, 1)) @ V


case(
    "s13_scores_max_over_heads_then_softmax",
    """
input  Q[h, p, e], K[h, m, e], V[m, f]
output O
S[p, m]  = Q[h, p, e] * K[h, m, e] :: max(h)
T[p, m]  = S[p, m]  where m <= p + 1
GM[p]    = T[p, m] :: max(m)
EX[p, m] = exp(T[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(3, 5, 4), K=rn(3, 6, 4), V=rn(6, 3)),
    maxhead_ref,
)
