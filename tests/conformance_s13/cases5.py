"""Longer pipelines: a pre-norm transformer attention block written in full (layer norm, projections, causal
attention, output projection, residual), two attention layers over the same keys, a decoder layer (causal
self attention, then cross attention over another key rank), Sinkhorn normalisation as a recurrence, an
output read reversed and shifted, expected key position and its variance, a shared prefix merged with
causal suffix attention by log-sum-exp (empty rows), block-sparse layouts from an int table."""

import numpy as np

from .common import att, causal, make_rn, registry, scores, softmax

rn, rng = make_rn(1305)
CASES, case = registry()


# --- a pre-norm causal attention block with projections, the rank S an alias of T
def block_ref(X, WQ, WK, WV, WO, G):
    mu = X.mean(1, keepdims=True)
    xc = X - mu
    xn = xc / np.sqrt((xc**2).mean(1, keepdims=True) + 1e-5) * G
    q = np.einsum("td,dhe->hte", xn, WQ)
    k = np.einsum("td,dhe->hte", xn, WK)
    v = np.einsum("td,dhf->htf", xn, WV)
    T = X.shape[0]
    ao = att(q, k, v, mask=causal(T, T))
    return X + np.einsum("htf,hfc->tc", ao, WO)


case(
    "s13_prenorm_attention_block_full",
    """
input  X[t, d], WQ[d, h, e], WK[d, h, e], WV[d, h, f], WO[h, f, c], G[d]
rank   S = T
output Y
MU[t]       = X[t, d] / D
XC[t, d]    = X[t, d] - MU[t]
VR[t]       = square(XC[t, d]) / D
XN[t, d]    = XC[t, d] * rsqrt(VR[t] + 1e-5) * G[d]
Q[h, t, e]  = XN[t, d] * WQ[d, h, e]
K[h, s, e]  = XN[s, d] * WK[d, h, e]
V[h, s, f]  = XN[s, d] * WV[d, h, f]
SC[h, t, s] = Q[h, t, e] * K[h, s, e] * rsqrt(E)  where s <= t
GM[h, t]    = SC[h, t, s] :: max(s)
EX[h, t, s] = exp(SC[h, t, s] - GM[h, t])
SD[h, t]    = EX[h, t, s]
AO[h, t, f] = EX[h, t, s] * V[h, s, f] / SD[h, t]
PR[t, c]    = AO[h, t, f] * WO[h, f, c]
Y[t, c]     = X[t, c] + PR[t, c]
""",
    dict(X=rn(6, 4), WQ=rn(4, 2, 3), WK=rn(4, 2, 3), WV=rn(4, 2, 2), WO=rn(2, 2, 4), G=1 + 0.1 * rn(4)),
    block_ref,
    passes={"d": 3, "s": 3},
)


# --- two attention layers over the same keys: the first layer's output is the second layer's queries
def two_layers_ref(Q, K, V):
    o1 = att(Q, K, V, mask=causal(6, 6))
    return att(o1, K, V, mask=causal(6, 6), scale=0.5)


case(
    "s13_two_layers_same_keys",
    """
input  Q[p, e], K[m, e], V[m, e]
output O2
S1[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
G1[p]     = S1[p, m] :: max(m)
X1[p, m]  = exp(S1[p, m] - G1[p])
D1[p]     = X1[p, m]
O1[p, e]  = X1[p, m] * V[m, e] / D1[p]
S2[p, m]  = O1[p, e] * K[m, e] * 0.5  where m <= p
G2[p]     = S2[p, m] :: max(m)
X2[p, m]  = exp(S2[p, m] - G2[p])
D2[p]     = X2[p, m]
O2[p, e]  = X2[p, m] * V[m, e] / D2[p]
""",
    dict(Q=rn(6, 4), K=rn(6, 4), V=rn(6, 4)),
    two_layers_ref,
    passes={"m": 6},
)


# --- a decoder layer: causal self attention, then cross attention over the encoder's keys (rank n, with a
# key-padding length), each output also returned
def decoder_ref(Q, K, V, KE, VE, klen):
    o1 = att(Q, K, V, mask=causal(5, 5))
    mask = np.arange(KE.shape[0])[None, :] < int(klen)
    return o1, att(o1, KE, VE, mask=mask)


case(
    "s13_decoder_self_then_cross",
    """
input  Q[p, e], K[m, e], V[m, e], KE[n, e], VE[n, f], klen : int
output O1, O2
S1[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
G1[p]     = S1[p, m] :: max(m)
X1[p, m]  = exp(S1[p, m] - G1[p])
D1[p]     = X1[p, m]
O1[p, e]  = X1[p, m] * V[m, e] / D1[p]
S2[p, n]  = O1[p, e] * KE[n, e] * rsqrt(E)  where n < klen
G2[p]     = S2[p, n] :: max(n)
X2[p, n]  = exp(S2[p, n] - G2[p])
D2[p]     = X2[p, n]
O2[p, f]  = X2[p, n] * VE[n, f] / D2[p]
""",
    dict(Q=rn(5, 4), K=rn(5, 4), V=rn(5, 4), KE=rn(9, 4), VE=rn(9, 3), klen=np.array(7)),
    decoder_ref,
    passes={"m": 3, "n": 3},
)


# --- Sinkhorn normalisation: T alternating row and column scalings as a recurrence over t
def sinkhorn_ref(S, V, T=3):
    kk = np.exp(S - S.max())
    u = np.ones(S.shape[0])
    w = np.ones(S.shape[1])
    for _ in range(T):
        u = 1 / (kk @ w)
        w = 1 / (kk.T @ u)
    a = u[:, None] * kk * w[None, :]
    return a @ V, u


case(
    "s13_sinkhorn_recurrence",
    """
input  S[p, m], V[m, f]
param  T = 3
output O, UT
GM          = S[p, m] :: max(p, m)
KK[p, m]    = exp(S[p, m] - GM)
U[0, p]     = 1
W[0, m]     = 1
RS[t, p]    = KK[p, m] * W[t, m]
U[t + 1, p] = 1 / RS[t, p]
CS[t, m]    = KK[p, m] * U[t + 1, p]
W[t + 1, m] = 1 / CS[t, m]
A[p, m]     = U[T, p] * KK[p, m] * W[T, m]
O[p, f]     = A[p, m] * V[m, f]
UT[p]       = U[T, p]
""",
    dict(S=rn(5, 5), V=rn(5, 2)),
    sinkhorn_ref,
)


# --- the attention output read reversed and shifted by one row (the shift's last row defaults to 0)
def rev_ref(Q, K, V):
    o = att(Q, K, V, mask=causal(6, 6))
    nxt = np.concatenate([o[1:], np.zeros((1, o.shape[1]))])
    return o[::-1], nxt


case(
    "s13_output_read_reversed_and_shifted",
    """
input  Q[p, e], K[m, e], V[m, f]
output REV, NXT
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
GM[p]     = S[p, m] :: max(m)
EX[p, m]  = exp(S[p, m] - GM[p])
SD[p]     = EX[p, m]
O[p, f]   = EX[p, m] * V[m, f] / SD[p]
REV[p, f] = O[P - 1 - p, f]
NXT[p, f] = O[p + 1, f] ?? 0
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2)),
    rev_ref,
)


# --- the expected key position under the weights, and its variance (coordinates as values)
def pos_ref(Q, K):
    a = softmax(scores(Q, K), causal(6, 8, 2))
    m = np.arange(8)
    ep = a @ m
    return ep, (a * (m[None, :] - ep[:, None]) ** 2).sum(1)


case(
    "s13_expected_position_and_variance",
    """
input  Q[p, e], K[m, e]
output EP, VP
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p + 2
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
A[p, m]  = EX[p, m] / SD[p]
EP[p]    = A[p, m] * m
VP[p]    = A[p, m] * square(m - EP[p])
""",
    dict(Q=rn(6, 3, scale=2.0), K=rn(8, 3, scale=2.0)),
    pos_ref,
    passes={"m": 4},
)


# --- cascade attention: a shared prefix (every query) and the query's own earlier keys (strictly causal:
# row 0 has none), each a softmax with its log-sum-exp, merged; equals one softmax over both key sets
def shared_prefix_ref(Q, KP, VP, K, V):
    P, N = Q.shape[0], KP.shape[0]
    kk = np.concatenate([KP, K])
    vv = np.concatenate([VP, V])
    mask = np.concatenate([np.ones((P, N), bool), causal(P, K.shape[0], -1)], 1)
    return att(Q, kk, vv, mask=mask)


case(
    "s13_shared_prefix_merged_by_lse",
    """
input  Q[p, e], KP[n, e], VP[n, f], K[m, e], V[m, f]
output O
S1[p, n]  = Q[p, e] * KP[n, e] * rsqrt(E)
G1[p]     = S1[p, n] :: max(n)
X1[p, n]  = exp(S1[p, n] - G1[p])
D1[p]     = X1[p, n]
O1[p, f]  = X1[p, n] * VP[n, f] / D1[p]
L1[p]     = G1[p] + log(D1[p])
S2[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m < p
G2[p]     = S2[p, m] :: max(m)
X2[p, m]  = exp(S2[p, m] - G2[p])
D2[p]     = X2[p, m]
O2[p, f]  = X2[p, m] * V[m, f] / D2[p]
L2[p]     = G2[p] + log(D2[p])
MX[p]     = max(L1[p], L2[p] ?? L1[p])
W1[p]     = exp(L1[p] - MX[p])
W2[p]     = exp(L2[p] - MX[p]) ?? 0
O[p, f]   = (O1[p, f] * W1[p] + (O2[p, f] ?? 0) * W2[p]) / (W1[p] + W2[p])
""",
    dict(Q=rn(6, 4), KP=rn(3, 4), VP=rn(3, 2), K=rn(6, 4), V=rn(6, 2)),
    shared_prefix_ref,
)


# --- block-sparse attention from an int layout table over blocks of B = 3 (the last block ragged); block row
# 2 is empty, so rows 6..8 give 0; causal inside
def layout_ref(Q, K, V, LAY, B=3):
    P = Q.shape[0]
    bi = np.arange(P) // B
    mask = (LAY[bi[:, None], bi[None, :]] != 0) & causal(P, P)
    return att(Q, K, V, mask=mask)


case(
    "s13_block_sparse_layout_table",
    """
input  Q[p, e], K[m, e], V[m, f], LAY[i, j] : int
param  B = 3
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where LAY[p // B, m // B] != 0 and m <= p
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(
        Q=rn(10, 3),
        K=rn(10, 3),
        V=rn(10, 2),
        LAY=np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 1]]),
    ),
    layout_ref,
)
