"""Hand-written 1-pass cascades in the forms kernels use, for the fused triton path and the torch loop:
running
states initialised from inputs (attention sinks as RM[0] = sink, RD[0] = 1; a ring-attention step continuing a
previous partial (O, LSE)), a finite -1e30 sentinel, the correction written inline, tiles of 16 and 32 over a
ragged M, an LSE output, and a document-masked 1-pass whose states start absent."""

import numpy as np

from .common import att, causal, lse, make_rn, registry, softmax

rn, rng = make_rn(1207)
CASES, case = registry()


def sinks_ref(Q, K, V, SINK):
    H, P, E = Q.shape
    s = np.einsum("hpe,hme->hpm", Q, K) / np.sqrt(E)
    full = np.concatenate([s, np.broadcast_to(SINK[:, None, None], (H, P, 1))], -1)
    w = np.exp(full - full.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    return np.einsum("hpm,hmf->hpf", w[..., :-1], V)


# --- sinks as the initial running state: RM[0] = SINK[h], RD[0] = 1 (exp(SINK - RM[0]))
case(
    "s12_1pass_sink_initial_state",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], SINK[h]
param  M0 = 8
rank   M = M1 * M0
output O
BQK[h, m1, m0, p]  = Q[h, p, e] * K[h, m1 * M0 + m0, e] * rsqrt(E)
RM[h, 0, p]        = SINK[h]
RD[h, 0, p]        = 1
RNV[h, 0, p, f]    = 0
LM[h, m1, p]       = BQK[h, m1, m0, p] :: max(m0)
RM[h, m1 + 1, p]   = max(RM[h, m1, p], LM[h, m1, p])
SLN[h, m1, m0, p]  = exp(BQK[h, m1, m0, p] - RM[h, m1 + 1, p])
SLD[h, m1, p]      = SLN[h, m1, m0, p]
SLNV[h, m1, p, f]  = SLN[h, m1, m0, p] * V[h, m1 * M0 + m0, f]
PRM[h, m1, p]      = exp(RM[h, m1, p] - RM[h, m1 + 1, p])
RD[h, m1 + 1, p]   = SLD[h, m1, p] + RD[h, m1, p] * PRM[h, m1, p]
RNV[h, m1 + 1, p, f] = SLNV[h, m1, p, f] + RNV[h, m1, p, f] * PRM[h, m1, p]
O[h, p, f]         = RNV[h, M1, p, f] / RD[h, M1, p]
""",
    dict(Q=rn(2, 5, 4), K=rn(2, 21, 4), V=rn(2, 21, 3), SINK=np.array([2.0, -1.0])),
    sinks_ref,
    passes={"m": 1},
)


# --- a ring-attention step: continue the previous partial (OP, LP) with a new block of keys; outputs the
# updated output and log-sum-exp
def ring_ref(Q, K, V, OP, LP):
    s = Q @ K.T / np.sqrt(Q.shape[1])
    lb = lse(s)
    ob = softmax(s) @ V
    g = np.maximum(LP, lb)
    wp, wb = np.exp(LP - g), np.exp(lb - g)
    return (wp[:, None] * OP + wb[:, None] * ob) / (wp + wb)[:, None], g + np.log(wp + wb)


case(
    "s12_1pass_ring_step_from_partial",
    """
input  Q[p, e], K[m, e], V[m, f], OP[p, f], LP[p]
param  M0 = 4
rank   M = M1 * M0
output O, LSE
BQK[m1, m0, p]  = Q[p, e] * K[m1 * M0 + m0, e] * rsqrt(E)
RM[0, p]        = LP[p]
RD[0, p]        = 1
RNV[0, p, f]    = OP[p, f]
LM[m1, p]       = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]   = max(RM[m1, p], LM[m1, p])
SLN[m1, m0, p]  = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
PRM[m1, p]      = exp(RM[m1, p] - RM[m1 + 1, p])
SLD[m1, p]      = SLN[m1, m0, p]
SLNV[m1, p, f]  = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
RD[m1 + 1, p]   = RD[m1, p] * PRM[m1, p] + SLD[m1, p]
RNV[m1 + 1, p, f] = PRM[m1, p] * RNV[m1, p, f] + SLNV[m1, p, f]
O[p, f]         = RNV[M1, p, f] / RD[M1, p]
LSE[p]          = RM[M1, p] + log(RD[M1, p])
""",
    dict(Q=rn(6, 4), K=rn(10, 4), V=rn(10, 3), OP=rn(6, 3), LP=rn(6) + 1.0),
    ring_ref,
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- causal with a finite sentinel (-1e30) and the correction written inline in the updates; the sums over m0
# cover the whole right-hand side, so the carried state is divided by M0 (every point is present: ?? 0)
C1P_SENT = """
input  Q[b, p, e], K[b, m, e], V[b, m, f]
param  M0 = 8
rank   M = M1 * M0
output O
BQK[b, m1, m0, p]  = Q[b, p, e] * K[b, m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p
RM[b, 0, p]        = -1e30
RD[b, 0, p]        = 0
RNV[b, 0, p, f]    = 0
LM[b, m1, p]       = BQK[b, m1, m0, p] :: max(m0)
RM[b, m1 + 1, p]   = max(RM[b, m1, p], LM[b, m1, p] ?? -1e30)
SLN[b, m1, m0, p]  = exp(BQK[b, m1, m0, p] - RM[b, m1 + 1, p])
RD[b, m1 + 1, p]   = (SLN[b, m1, m0, p] ?? 0) + RD[b, m1, p] * exp(RM[b, m1, p] - RM[b, m1 + 1, p]) / M0
RNV[b, m1 + 1, p, f] = ((SLN[b, m1, m0, p] * V[b, m1 * M0 + m0, f] ?? 0)
                        + RNV[b, m1, p, f] * exp(RM[b, m1, p] - RM[b, m1 + 1, p]) / M0)
O[b, p, f]         = RNV[b, M1, p, f] / RD[b, M1, p]
"""


def causal_ref(Q, K, V):
    P, M = Q.shape[1], K.shape[1]
    return att(Q, K, V, mask=causal(P, M)[None])


case(
    "s12_1pass_sentinel_inline_correction",
    C1P_SENT,
    dict(Q=rn(2, 19, 4), K=rn(2, 19, 4), V=rn(2, 19, 2)),
    causal_ref,
)


# --- the same with tiles of 16 and 32 over M = 37 (power-of-two tiles, a ragged last tile)
C1P = """
input  Q[b, p, e], K[b, m, e], V[b, m, f]
param  M0 = 16
rank   M = M1 * M0
output O, LSE
BQK[b, m1, m0, p]  = Q[b, p, e] * K[b, m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p + M - P
RM[b, 0, p]        = -inf
RD[b, 0, p]        = 0
RNV[b, 0, p, f]    = 0
LM[b, m1, p]       = BQK[b, m1, m0, p] :: max(m0)
RM[b, m1 + 1, p]   = max(RM[b, m1, p], LM[b, m1, p] ?? -inf)
SLN[b, m1, m0, p]  = exp(BQK[b, m1, m0, p] - RM[b, m1 + 1, p])
PRM[b, m1, p]      = exp(RM[b, m1, p] - RM[b, m1 + 1, p])
SLD[b, m1, p]      = SLN[b, m1, m0, p]
SLNV[b, m1, p, f]  = SLN[b, m1, m0, p] * V[b, m1 * M0 + m0, f]
RD[b, m1 + 1, p]   = (SLD[b, m1, p] ?? 0) + RD[b, m1, p] * PRM[b, m1, p]
RNV[b, m1 + 1, p, f] = (SLNV[b, m1, p, f] ?? 0) + RNV[b, m1, p, f] * PRM[b, m1, p]
O[b, p, f]         = RNV[b, M1, p, f] / RD[b, M1, p]
LSE[b, p]          = RM[b, M1, p] + log(RD[b, M1, p])
"""


def c1p_ref(Q, K, V):
    P, M = Q.shape[1], K.shape[1]
    mask = causal(P, M, M - P)[None]
    s = np.einsum("bpe,bme->bpm", Q, K) / np.sqrt(Q.shape[-1])
    return att(Q, K, V, mask=mask), lse(s, mask=mask)


case(
    "s12_1pass_tile16_ragged_lse",
    C1P,
    dict(Q=rn(1, 20, 4), K=rn(1, 37, 4), V=rn(1, 37, 3)),
    c1p_ref,
    passes={"m": 1, "m1": 1, "m0": 2},
)
case(
    "s12_1pass_tile32_ragged_lse",
    C1P,
    dict(Q=rn(2, 3, 4), K=rn(2, 37, 4), V=rn(2, 37, 3)),
    c1p_ref,
    params={"M0": 32},
)
case("s12_1pass_tile1_lse", C1P, dict(Q=rn(1, 4, 2), K=rn(1, 6, 2), V=rn(1, 6, 2)), c1p_ref, params={"M0": 1})


# --- a document-masked 1-pass cascade whose states start absent (a filter that is never true): a query whose
# document has no key before it stays absent and is delivered as 0; tiles may be empty for some rows
def doc_ref(Q, K, V, qdoc, kdoc):
    P, M = Q.shape[0], K.shape[0]
    mask = (qdoc[:, None] == kdoc[None, :]) & causal(P, M, M - P)
    return att(Q, K, V, mask=mask)


case(
    "s12_1pass_doc_mask_absent_start",
    """
input  Q[p, e], K[m, e], V[m, f], qdoc[p] : int, kdoc[m] : int
param  M0 = 4
rank   M = M1 * M0
output O
BQK[m1, m0, p]  = Q[p, e] * K[m1 * M0 + m0, e] * rsqrt(E)  \
                  where kdoc[m1 * M0 + m0] == qdoc[p] and m1 * M0 + m0 <= p + M - P
RM[0, p]        = -inf  where 0 != 0
RD[0, p]        = 0     where 0 != 0
RNV[0, p, f]    = 0     where 0 != 0
LM[m1, p]       = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]   = max(RM[m1, p] ?? LM[m1, p], LM[m1, p] ?? RM[m1, p])
SLN[m1, m0, p]  = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
PRM[m1, p]      = exp(RM[m1, p] - RM[m1 + 1, p])
SLD[m1, p]      = SLN[m1, m0, p]
SLNV[m1, p, f]  = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
RD[m1 + 1, p]   = SLD[m1, p] + (RD[m1, p] * PRM[m1, p] ?? 0) ?? RD[m1, p] * PRM[m1, p]
RNV[m1 + 1, p, f] = SLNV[m1, p, f] + (RNV[m1, p, f] * PRM[m1, p] ?? 0) ?? RNV[m1, p, f] * PRM[m1, p]
O[p, f]         = RNV[M1, p, f] / RD[M1, p]
""",
    dict(
        Q=rn(6, 4),
        K=rn(15, 4),
        V=rn(15, 3),
        qdoc=np.array([1, 1, 3, 2, 2, 2]),
        kdoc=np.array([0] * 5 + [1] * 5 + [2] * 5),
    ),
    doc_ref,
)


# --- differential attention in one pass: two running maxes, denominators and numerators in one loop
def diff1p_ref(Q1, K1, Q2, K2, V, LAM):
    return att(Q1, K1, V) - LAM * att(Q2, K2, V)


case(
    "s12_1pass_differential_two_states",
    """
input  Q1[p, e], K1[m, e], Q2[p, e], K2[m, e], V[m, f], LAM
param  M0 = 4
rank   M = M1 * M0
output O
A1[m1, m0, p]   = Q1[p, e] * K1[m1 * M0 + m0, e] * rsqrt(E)
A2[m1, m0, p]   = Q2[p, e] * K2[m1 * M0 + m0, e] * rsqrt(E)
R1[0, p]        = -inf
R2[0, p]        = -inf
D1[0, p]        = 0
D2[0, p]        = 0
N1[0, p, f]     = 0
N2[0, p, f]     = 0
L1[m1, p]       = A1[m1, m0, p] :: max(m0)
L2[m1, p]       = A2[m1, m0, p] :: max(m0)
R1[m1 + 1, p]   = max(R1[m1, p], L1[m1, p])
R2[m1 + 1, p]   = max(R2[m1, p], L2[m1, p])
X1[m1, m0, p]   = exp(A1[m1, m0, p] - R1[m1 + 1, p])
X2[m1, m0, p]   = exp(A2[m1, m0, p] - R2[m1 + 1, p])
C1[m1, p]       = exp(R1[m1, p] - R1[m1 + 1, p])
C2[m1, p]       = exp(R2[m1, p] - R2[m1 + 1, p])
S1[m1, p]       = X1[m1, m0, p]
S2[m1, p]       = X2[m1, m0, p]
T1[m1, p, f]    = X1[m1, m0, p] * V[m1 * M0 + m0, f]
T2[m1, p, f]    = X2[m1, m0, p] * V[m1 * M0 + m0, f]
D1[m1 + 1, p]   = S1[m1, p] + D1[m1, p] * C1[m1, p]
D2[m1 + 1, p]   = S2[m1, p] + D2[m1, p] * C2[m1, p]
N1[m1 + 1, p, f] = T1[m1, p, f] + N1[m1, p, f] * C1[m1, p]
N2[m1 + 1, p, f] = T2[m1, p, f] + N2[m1, p, f] * C2[m1, p]
O[p, f]         = N1[M1, p, f] / D1[M1, p] - LAM * N2[M1, p, f] / D2[M1, p]
""",
    dict(Q1=rn(5, 3), K1=rn(10, 3), Q2=rn(5, 3), K2=rn(10, 3), V=rn(10, 2), LAM=np.array(0.6)),
    diff1p_ref,
    passes={"m": 1},
)


# --- decoding in one pass with GQA (h // R), no query-row rank, and a per-batch cache length (int)
def decode_ref(q, K, V, lens):
    B, H, E = q.shape
    G = K.shape[1]
    out = np.zeros((B, H, V.shape[-1]))
    for b in range(B):
        for h in range(H):
            n = lens[b]
            if n > 0:
                s = K[b, h // (H // G), :n] @ q[b, h] / np.sqrt(E)
                out[b, h] = softmax(s) @ V[b, h // (H // G), :n]
    return out


case(
    "s12_1pass_decode_gqa_lengths",
    """
input  q[b, h, e], K[b, g, m, e], V[b, g, m, f], lens[b] : int
param  R = 2
param  M0 = 4
rank   M = M1 * M0
output O
S[b, h, m1, m0]   = q[b, h, e] * K[b, h // R, m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 < lens[b]
RM[b, h, 0]       = -inf  where 0 != 0
RD[b, h, 0]       = 0     where 0 != 0
RN[b, h, 0, f]    = 0     where 0 != 0
LM[b, h, m1]      = S[b, h, m1, m0] :: max(m0)
RM[b, h, m1 + 1]  = max(RM[b, h, m1] ?? LM[b, h, m1], LM[b, h, m1] ?? RM[b, h, m1])
X[b, h, m1, m0]   = exp(S[b, h, m1, m0] - RM[b, h, m1 + 1])
C[b, h, m1]       = exp(RM[b, h, m1] - RM[b, h, m1 + 1])
SD[b, h, m1]      = X[b, h, m1, m0]
SN[b, h, m1, f]   = X[b, h, m1, m0] * V[b, h // R, m1 * M0 + m0, f]
RD[b, h, m1 + 1]  = SD[b, h, m1] + (RD[b, h, m1] * C[b, h, m1] ?? 0) ?? RD[b, h, m1] * C[b, h, m1]
RN[b, h, m1 + 1, f] = SN[b, h, m1, f] + (RN[b, h, m1, f] * C[b, h, m1] ?? 0) ?? RN[b, h, m1, f] * C[b, h, m1]
O[b, h, f]        = RN[b, h, M1, f] / RD[b, h, M1]
""",
    dict(q=rn(3, 4, 4), K=rn(3, 2, 13, 4), V=rn(3, 2, 13, 3), lens=np.array([13, 0, 6])),
    decode_ref,
)
