"""Recurrences written by hand: 1-pass attention whose states are outputs (ragged last tile), chunked
retention (a partition, a rank aliased to the tile, an inter-chunk state), RWKV-4's WKV, gated linear
attention, a selective scan with scalar inputs, cumulative products, recurrences on size-1 ranks."""

import numpy as np

from .common import att, make_rn, registry, softmax

rn, rng = make_rn(1203)
CASES, case = registry()


# --- a hand-written 1-pass cascade whose running states are outputs: every state, M = 37, M0 = 8
def states_ref(Q, K, V, M0=8):
    P, E = Q.shape
    M = K.shape[0]
    s = Q @ K.T / np.sqrt(E)
    M1 = -(-M // M0)
    rm = np.full((M1 + 1, P), -np.inf)
    rd = np.zeros((M1 + 1, P))
    for t in range(M1):
        blk = s[:, : (t + 1) * M0]
        rm[t + 1] = blk.max(1)
        rd[t + 1] = np.exp(blk - rm[t + 1][:, None]).sum(1)
    return att(Q, K, V), rm, rd


case(
    "s12_1pass_states_as_outputs",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 8
rank   M = M1 * M0
output AV, RM, RD
BQK[m1, m0, p] = Q[p, e] * K[m1 * M0 + m0, e] * rsqrt(E)
RM[0, p]       = -inf
RD[0, p]       = 0
RNV[0, p, f]   = 0
LM[m1, p]      = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]  = max(RM[m1, p], LM[m1, p])
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
PRM[m1, p]     = exp(RM[m1, p] - RM[m1 + 1, p])
SLD[m1, p]     = SLN[m1, m0, p]
SLNV[m1, p, f] = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
RD[m1 + 1, p]  = SLD[m1, p] + RD[m1, p] * PRM[m1, p]
RNV[m1 + 1, p, f] = SLNV[m1, p, f] + RNV[m1, p, f] * PRM[m1, p]
AV[p, f]       = RNV[M1, p, f] / RD[M1, p]
""",
    dict(Q=rn(3, 4), K=rn(37, 4), V=rn(37, 2)),
    states_ref,
)


# --- chunked retention: intra-chunk quadratic part with decay, inter-chunk state carried by a recurrence over
# chunks; T = 13 with chunks of 4 (ragged), j0 a second rank of the tile's size
def retention_ref(Q, K, V, LG):
    T = Q.shape[0]
    g = np.exp(LG)
    d = np.arange(T)[:, None] - np.arange(T)[None, :]
    dec = np.where(d >= 0, g ** np.maximum(d, 0), 0)
    return ((Q @ K.T) * dec) @ V


case(
    "s12_chunked_retention_ragged",
    """
input  Q[t, e], K[t, e], V[t, f], LG
param  C0 = 4
rank   T = C1 * C0
rank   J0 = C0
output O
IN[c1, c0, f]     = (Q[c1 * C0 + c0, e] * K[c1 * C0 + j0, e] * exp(LG * (c0 - j0))
                     * V[c1 * C0 + j0, f])  where j0 <= c0
KVC[c1, e, f]     = K[c1 * C0 + j0, e] * V[c1 * C0 + j0, f] * exp(LG * (C0 - 1 - j0))
ST[0, e, f]       = 0
ST[c1 + 1, e, f]  = exp(LG * C0) * ST[c1, e, f] + KVC[c1, e, f]
CR[c1, c0, f]     = Q[c1 * C0 + c0, e] * ST[c1, e, f] * exp(LG * (c0 + 1))
O[t, f]           = IN[t // C0, t % C0, f] + CR[t // C0, t % C0, f]
""",
    dict(Q=rn(13, 3), K=rn(13, 3), V=rn(13, 2), LG=np.array(np.log(0.8))),
    retention_ref,
)


# --- RWKV-4 WKV: per-channel decay W and bonus U, state before the step read outside the recurrence
def wkv_ref(K, V, W, U):
    T, C = K.shape
    out = np.zeros((T, C))
    for t in range(T):
        num = sum(np.exp(-(t - 1 - i) * W + K[i]) * V[i] for i in range(t)) + np.exp(U + K[t]) * V[t]
        den = sum(np.exp(-(t - 1 - i) * W + K[i]) for i in range(t)) + np.exp(U + K[t])
        out[t] = num / den
    return out


case(
    "s12_rwkv4_wkv",
    """
input  K[t, c], V[t, c], W[c], U[c]
output O
A[0, c]     = 0
B[0, c]     = 0
A[t + 1, c] = exp(-W[c]) * A[t, c] + exp(K[t, c]) * V[t, c]
B[t + 1, c] = exp(-W[c]) * B[t, c] + exp(K[t, c])
O[t, c]     = (A[t, c] + exp(U[c] + K[t, c]) * V[t, c]) / (B[t, c] + exp(U[c] + K[t, c]))
""",
    dict(K=rn(9, 3), V=rn(9, 3), W=np.abs(rn(3)) + 0.1, U=rn(3)),
    wkv_ref,
    passes={"t": 1},
)


# --- gated linear attention, recurrent form with a per-step, per-key-channel gate sigmoid(GL[t, e])
def gla_ref(Q, K, V, GL):
    T, E = Q.shape
    F = V.shape[1]
    S = np.zeros((E, F))
    out = np.zeros((T, F))
    for t in range(T):
        S = (1 / (1 + np.exp(-GL[t])))[:, None] * S + np.outer(K[t], V[t])
        out[t] = Q[t] @ S
    return out


case(
    "s12_gated_linear_attention",
    """
input  Q[t, e], K[t, e], V[t, f], GL[t, e]
output O
S[0, e, f]     = 0
S[t + 1, e, f] = sigmoid(GL[t, e]) * S[t, e, f] + K[t, e] * V[t, f]
O[t, f]        = Q[t, e] * S[t + 1, e, f]
""",
    dict(Q=rn(10, 3), K=rn(10, 3), V=rn(10, 2), GL=rn(10, 3)),
    gla_ref,
    passes={"t": 1},
)


# --- a selective scan (Mamba-like) with scalar inputs A and D, per-channel step sizes
def scan_ref(X, DT, B, C, A, DSK):
    T, Dm = X.shape
    N = B.shape[1]
    h = np.zeros((Dm, N))
    y = np.zeros((T, Dm))
    for t in range(T):
        h = np.exp(DT[t] * A)[:, None] * h + (DT[t] * X[t])[:, None] * B[t][None, :]
        y[t] = h @ C[t] + DSK * X[t]
    return y


case(
    "s12_selective_scan_scalar_inputs",
    """
input  X[t, d], DT[t, d], B[t, n], C[t, n], A, DSK
output Y
H[0, d, n]     = 0
H[t + 1, d, n] = exp(DT[t, d] * A) * H[t, d, n] + DT[t, d] * X[t, d] * B[t, n]
HC[t, d]       = H[t + 1, d, n] * C[t, n]
Y[t, d]        = HC[t, d] + DSK * X[t, d]
""",
    dict(
        X=rn(8, 3),
        DT=np.abs(rn(8, 3)) * 0.5,
        B=rn(8, 2),
        C=rn(8, 2),
        A=np.array(-1.5),
        DSK=np.array(0.3),
    ),
    scan_ref,
)


# --- cumulative product as a recurrence; every state is an output, with a scalar of the final state
def cumprod_ref(X):
    R = np.concatenate([[1.0], np.cumprod(X)])
    return R, np.log(np.abs(R[-1]))


case(
    "s12_cumprod_states_and_log",
    """
input  X[t]
output R, L
R[0]     = 1
R[t + 1] = R[t] * X[t]
L        = log(abs(R[T]))
""",
    dict(X=rn(7) + 1.5),
    cumprod_ref,
)


# --- every rank of size 1 in a hand-written causal 1-pass cascade whose tile (8) exceeds M (1)
case(
    "s12_1pass_all_sizes_one",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  M0 = 8
rank   M = M1 * M0
output AV
BQK[b, h, m1, m0, p] = Q[b, h, p, e] * K[b, h, m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p
RM[b, h, 0, p]       = -inf
RD[b, h, 0, p]       = 0
RNV[b, h, 0, p, f]   = 0
LM[b, h, m1, p]      = BQK[b, h, m1, m0, p] :: max(m0)
RM[b, h, m1 + 1, p]  = max(RM[b, h, m1, p], LM[b, h, m1, p] ?? -inf)
SLN[b, h, m1, m0, p] = exp(BQK[b, h, m1, m0, p] - RM[b, h, m1 + 1, p])
PRM[b, h, m1, p]     = exp(RM[b, h, m1, p] - RM[b, h, m1 + 1, p])
SLD[b, h, m1, p]     = SLN[b, h, m1, m0, p]
SLNV[b, h, m1, p, f] = SLN[b, h, m1, m0, p] * V[b, h, m1 * M0 + m0, f]
RD[b, h, m1 + 1, p]  = (SLD[b, h, m1, p] ?? 0) + RD[b, h, m1, p] * PRM[b, h, m1, p]
RNV[b, h, m1 + 1, p, f] = (SLNV[b, h, m1, p, f] ?? 0) + RNV[b, h, m1, p, f] * PRM[b, h, m1, p]
AV[b, h, p, f]       = RNV[b, h, M1, p, f] / RD[b, h, M1, p]
""",
    dict(Q=rn(1, 1, 1, 1), K=rn(1, 1, 1, 1), V=rn(1, 1, 1, 1)),
    lambda Q, K, V: V.copy(),
    passes={"m": 1},
)


# --- a prefix-attention scan: O[t, p, f] is attention of query p over keys 0 .. t; the running
# states are rescaled with ?? guards because query p only sees keys t <= p (causal): later steps are absent
def prefix_causal_ref(Q, K, V):
    P, E = Q.shape
    T = K.shape[0]
    s = Q @ K.T / np.sqrt(E)
    out = np.zeros((T, P, V.shape[1]))
    for t in range(T):
        for p in range(P):
            keys = [m for m in range(t + 1) if m <= p]
            if keys:
                w = softmax(s[p, keys])
                out[t, p] = w @ V[keys]
    return out


case(
    "s12_prefix_outputs_causal_guarded",
    """
input  Q[p, e], K[t, e], V[t, f]
output O
S[t, p]        = Q[p, e] * K[t, e] * rsqrt(E)  where t <= p
RM[0, p]       = -inf
RD[0, p]       = 0
RN[0, p, f]    = 0
RM[t + 1, p]   = max(RM[t, p], S[t, p]) ?? RM[t, p]
C[t, p]        = exp(RM[t, p] - RM[t + 1, p])
RD[t + 1, p]   = RD[t, p] * C[t, p] + (exp(S[t, p] - RM[t + 1, p]) ?? 0)
RN[t + 1, p, f] = RN[t, p, f] * C[t, p] + (exp(S[t, p] - RM[t + 1, p]) * V[t, f] ?? 0)
O[t, p, f]     = RN[t + 1, p, f] / RD[t + 1, p]
""",
    dict(Q=rn(4, 3), K=rn(6, 3), V=rn(6, 2)),
    prefix_causal_ref,
)
