# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""More attention variants: NSA's compressed-block branch gated with a sliding window, Infini-attention (a
linear memory of earlier segments plus local softmax attention), multi-token attention (a convolution over
the masked scores), CoPE (contextual positions interpolated with hat functions of the position), FIRE (an MLP
of log distances), MLA decoding with absorbed up-projections,
lagged windows with empty rows, a sliding window overridden to width 1 and to a width past M, ALiBi slopes
as an input with GQA at size 17, T5-style clamped relative tables with the clamp overridden, StreamingLLM
sinks overlapping the window."""

import numpy as np

from .common import att, lse, make_rn, pm, registry, softmax

rn, rng = make_rn(1502)
CASES, case = registry()

_ATT = """
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
"""


def sig(x):
    return 1 / (1 + np.exp(-x))


def elu1(x):
    return np.where(x > 0, x, np.expm1(x)) + 1


# --- NSA (native sparse attention), two of its branches: attention over compressed blocks (the mean key and
# value of each block of M0 = 4, visible once the whole block is at or before the query: rows 0..2 see none)
# and a sliding window of W = 3, mixed by per-query sigmoid gates; the compressed branch of rows without a
# block counts as 0. M = 10: the ragged last block is never visible
def nsa_ref(Q, K, V, GC, GW, M0=4, W=3):
    P, E = Q.shape
    M = K.shape[0]
    nb = -(-M // M0)
    Kc = np.zeros((nb, E))
    Vc = np.zeros((nb, V.shape[1]))
    for j in range(nb):
        Kc[j] = K[j * M0 : (j + 1) * M0].sum(0) / M0
        Vc[j] = V[j * M0 : (j + 1) * M0].sum(0) / M0
    p = np.arange(P)[:, None]
    j = np.arange(nb)[None, :]
    oc = att(Q, Kc, Vc, mask=j * M0 + M0 - 1 <= p)
    pp, m = pm(P, M)
    ow = att(Q, K, V, mask=(pp - m >= 0) & (pp - m < W))
    return sig(GC)[:, None] * oc + sig(GW)[:, None] * ow


case(
    "s15_nsa_compressed_blocks_and_window_gated",
    """
input  Q[p, e], K[m, e], V[m, f], GC[p], GW[p]
param  M0 = 4
param  W = 3
rank   M = M1 * M0
output O
KC[m1, e]   = K[m1 * M0 + m0, e] / M0
VC[m1, f]   = V[m1 * M0 + m0, f] / M0
SC[p, m1]   = Q[p, e] * KC[m1, e] * rsqrt(E)  where m1 * M0 + M0 - 1 <= p
GC1[p]      = SC[p, m1] :: max(m1)
EC[p, m1]   = exp(SC[p, m1] - GC1[p])
DC[p]       = EC[p, m1]
OC[p, f]    = EC[p, m1] * VC[m1, f] / DC[p]
SW[p, m]    = Q[p, e] * K[m, e] * rsqrt(E)  where 0 <= p - m < W
GW1[p]      = SW[p, m] :: max(m)
EW[p, m]    = exp(SW[p, m] - GW1[p])
DW[p]       = EW[p, m]
OW[p, f]    = EW[p, m] * V[m, f] / DW[p]
O[p, f]     = sigmoid(GC[p]) * (OC[p, f] ?? 0) + sigmoid(GW[p]) * OW[p, f]
""",
    dict(Q=rn(10, 3), K=rn(10, 3), V=rn(10, 2), GC=rn(10), GW=rn(10)),
    nsa_ref,
)


# --- Infini-attention (Munkhdalai et al. 2024): segments of SEG tokens (SEG overridden from 4 to 3, M = 10:
# a ragged last segment); local causal softmax attention inside the segment, and a compressive memory of all
# earlier segments read as ELU+1 linear attention (the first segment has no memory: 0), mixed by sigmoid(beta)
def infini_ref(Q, K, V, beta, SEG=3):
    P = Q.shape[0]
    p, m = pm(P, P)
    loc = att(Q, K, V, mask=(p // SEG == m // SEG) & (m <= p))
    w = np.where(m // SEG < p // SEG, elu1(Q) @ elu1(K).T, 0.0)
    den = w.sum(-1, keepdims=True)
    mem = np.where(den > 0, (w @ V) / np.where(den > 0, den, 1), 0.0)
    g = sig(beta)
    return g * mem + (1 - g) * loc


case(
    "s15_infini_attention_memory_and_local_segment_override",
    """
input  Q[p, e], K[m, e], V[m, f], beta
param  SEG = 4
output O
SL[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)  where p // SEG == m // SEG and m <= p
GL[p]      = SL[p, m] :: max(m)
EL[p, m]   = exp(SL[p, m] - GL[p])
DL[p]      = EL[p, m]
OL[p, f]   = EL[p, m] * V[m, f] / DL[p]
FQ[p, e]   = elu(Q[p, e]) + 1
FK[m, e]   = elu(K[m, e]) + 1
KV[p, e, f] = FK[m, e] * V[m, f]  where m // SEG < p // SEG
KZ[p, e]   = FK[m, e]             where m // SEG < p // SEG
NUM[p, f]  = FQ[p, e] * KV[p, e, f]
DEN[p]     = FQ[p, e] * KZ[p, e]
OM[p, f]   = NUM[p, f] / DEN[p]
O[p, f]    = sigmoid(beta) * (OM[p, f] ?? 0) + (1 - sigmoid(beta)) * OL[p, f]
""",
    dict(Q=rn(10, 3), K=rn(10, 3), V=rn(10, 2), beta=np.array(0.4)),
    infini_ref,
    params={"SEG": 3},
)


# --- multi-token attention (Golovneva et al. 2025): the causal scores, 0 where masked or outside, convolved
# over CQ = 2 earlier queries and CK = 3 centred keys, then masked again and soft-maxed
def mta_ref(Q, K, V, CW):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s0 = np.where(m <= p, Q @ K.T / np.sqrt(Q.shape[1]), 0.0)
    CQ, CK = CW.shape
    s = np.zeros((P, M))
    for a in range(P):
        for b in range(M):
            for i in range(CQ):
                for j in range(CK):
                    pa, mb = a - i, b - j + CK // 2
                    if 0 <= pa < P and 0 <= mb < M:
                        s[a, b] += CW[i, j] * s0[pa, mb]
    return softmax(s, m <= p) @ V


case(
    "s15_multi_token_attention_score_convolution",
    """
input  Q[p, e], K[m, e], V[m, f], CW[i, j]
output O
S0[p, m] = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
S[p, m]  = CW[i, j] * (S0[p - i, m - j + J // 2] ?? 0)  where m <= p
"""
    + _ATT,
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2), CW=rn(2, 3)),
    mta_ref,
)


# --- CoPE (Golovneva et al. 2024): gates sigmoid(q.k) summed from key m up to the query give a contextual
# position, clamped to C - 1; its embedding is interpolated between integer positions, written as a sum over
# c of the hat function relu(1 - |pos - c|) times q.PE[c]; causal
def cope_ref(Q, K, V, PE):
    P, E = Q.shape
    M = K.shape[0]
    C = PE.shape[0]
    qk = Q @ K.T
    g = sig(qk)
    p, m = pm(P, M)
    causal = m <= p
    pos = np.zeros((P, M))
    for a in range(P):
        for b in range(a + 1):
            pos[a, b] = min(g[a, b : a + 1].sum(), C - 1)
    z = Q @ PE.T
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, C - 1)
    fr = pos - lo
    bias = (1 - fr) * np.take_along_axis(z, lo, 1) + fr * np.where(hi > lo, np.take_along_axis(z, hi, 1), 0)
    return softmax((qk + bias) / np.sqrt(E), causal) @ V


case(
    "s15_cope_contextual_position_hat_interpolation",
    """
input  Q[p, e], K[m, e], V[m, f], PE[c, e]
rank   N = M
output O
QK[p, m]   = Q[p, e] * K[m, e]  where m <= p
G[p, m]    = sigmoid(QK[p, m])
POS[p, m]  = G[p, n]  where m <= n and n <= p
PC[p, m]   = min(POS[p, m], C - 1)
Z[p, c]    = Q[p, e] * PE[c, e]
BIAS[p, m] = relu(1 - abs(PC[p, m] - c)) * Z[p, c]
S[p, m]    = (QK[p, m] + BIAS[p, m]) * rsqrt(E)
"""
    + _ATT,
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2), PE=rn(4, 3)),
    cope_ref,
)


# --- FIRE (Li et al. 2024): bias = MLP(psi(p - m) / psi(max(L, p))), psi(x) = log(C0 x + 1), a one-hidden-layer
# ReLU MLP over a hidden rank u; causal; C0 overridden from 1.0 to 2.5
def fire_ref(Q, K, V, W1, B1, W2, L=4, C0=2.5):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    with np.errstate(invalid="ignore"):
        x = np.log(C0 * (p - m) + 1) / np.log(C0 * np.maximum(L, p) + 1)
    b = (W2[None, None, :] * np.maximum(W1[None, None, :] * x[..., None] + B1[None, None, :], 0)).sum(-1)
    return att(Q, K, V, mask=m <= p, bias=np.where(m <= p, b, 0))


case(
    "s15_fire_mlp_of_log_distance_bias_override",
    """
input  Q[p, e], K[m, e], V[m, f], W1[u], B1[u], W2[u]
param  L = 4
param  C0 = 1.0
output O
X[p, m]    = log(C0 * (p - m) + 1) / log(C0 * max(L, p) + 1)  where m <= p
BIAS[p, m] = W2[u] * relu(W1[u] * X[p, m] + B1[u])
QK[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)
S[p, m]    = QK[p, m] + BIAS[p, m]
"""
    + _ATT,
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2), W1=rn(5, scale=2), B1=rn(5), W2=rn(5, scale=2)),
    fire_ref,
    params={"C0": 2.5},
)


# --- MLA decoding with absorbed up-projections: the query is projected into the latent space (WUK), scored
# against the latent cache plus a decoupled RoPE part (two contractions, two statements: one statement would
# sum each over the other's rank too), the output is taken in latent space and projected up (WUV); cache
# lengths 5, 0 and 1; also the LSE
def mla_ref(q, qr, CKV, KR, WUK, WUV, kvlen, SCALE=0.25):
    B, H, _ = q.shape
    M = CKV.shape[1]
    O = np.zeros((B, H, WUV.shape[2]))
    L = np.zeros((B, H))
    for b in range(B):
        keep = np.arange(M) < kvlen[b]
        for h in range(H):
            ql = q[b, h] @ WUK[h]
            s = (CKV[b] @ ql + KR[b] @ qr[b, h]) * SCALE
            w = softmax(s, keep)
            O[b, h] = (w @ CKV[b]) @ WUV[h]
            L[b, h] = lse(s, keep) if keep.any() else 0.0
    return O, L


case(
    "s15_mla_absorbed_decode_lengths_lse",
    """
input  q[b, h, d], qr[b, h, r], CKV[b, m, c], KR[b, m, r], WUK[h, d, c], WUV[h, c, f], kvlen[b] : int
param  SCALE = 0.25
output O, LSE
QL[b, h, c]  = q[b, h, d] * WUK[h, d, c]
S1[b, h, m]  = QL[b, h, c] * CKV[b, m, c]
S2[b, h, m]  = qr[b, h, r] * KR[b, m, r]
S[b, h, m]   = (S1[b, h, m] + S2[b, h, m]) * SCALE  where m < kvlen[b]
GM[b, h]     = S[b, h, m] :: max(m)
EX[b, h, m]  = exp(S[b, h, m] - GM[b, h])
SD[b, h]     = EX[b, h, m]
OL[b, h, c]  = EX[b, h, m] * CKV[b, m, c] / SD[b, h]
O[b, h, f]   = OL[b, h, c] * WUV[h, c, f]
LSE[b, h]    = GM[b, h] + log(SD[b, h])
""",
    dict(
        q=rn(3, 2, 3),
        qr=rn(3, 2, 2),
        CKV=rn(3, 5, 4),
        KR=rn(3, 5, 2),
        WUK=rn(2, 3, 4),
        WUV=rn(2, 4, 3),
        kvlen=np.array([5, 0, 1]),
    ),
    mla_ref,
    passes={"m": 3},
)


# --- a lagged window: each query sees the keys D to D + W - 1 positions before it, so the first D rows see
# nothing (O and LSE 0 there); D overridden to 3 with W = 2
def lag_ref(Q, K, V, D=3, W=2):
    p, m = pm(Q.shape[0], K.shape[0])
    mask = (p - m >= D) & (p - m < D + W)
    s = Q @ K.T / np.sqrt(Q.shape[1])
    return att(Q, K, V, mask=mask), np.where(mask.any(-1), lse(s, mask), 0.0)


case(
    "s15_lagged_window_empty_rows_lse_override",
    """
input  Q[p, e], K[m, e], V[m, f]
param  D = 1
param  W = 2
output O, LSE
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where D <= p - m < D + W
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
LSE[p]   = GM[p] + log(SD[p])
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2)),
    lag_ref,
    params={"D": 3},
)


# --- a causal sliding window whose width is overridden to 1 (each query sees only itself: O = V) and to 100
# (more than M: plain causal attention)
_SWA = (
    """
input  Q[p, e], K[m, e], V[m, f]
param  W = 4
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where p - W < m and m <= p
"""
    + _ATT
)
_q, _k, _v = rn(6, 3, scale=3), rn(6, 3, scale=3), rn(6, 2)
case(
    "s15_sliding_window_override_width_one_is_identity",
    _SWA,
    dict(Q=_q, K=_k, V=_v),
    lambda Q, K, V: V.copy(),
    params={"W": 1},
)
case(
    "s15_sliding_window_override_width_past_M_is_causal",
    _SWA,
    dict(Q=_q, K=_k, V=_v),
    lambda Q, K, V: att(Q, K, V, mask=np.tril(np.ones((6, 6), bool))),
    params={"W": 100},
)


# --- ALiBi with the slopes as an input (one negative), GQA 4:2, causal, at P = M = 17; with the LSE
def alibi_ref(Q, K, V, slope):
    H, P, E = Q.shape
    p, m = pm(P, P)
    O = np.zeros((H, P, V.shape[2]))
    L = np.zeros((H, P))
    for h in range(H):
        s = Q[h] @ K[h // 2].T / np.sqrt(E) - slope[h] * (p - m)
        O[h] = softmax(s, m <= p) @ V[h // 2]
        L[h] = lse(s, m <= p)
    return O, L


case(
    "s15_alibi_slopes_input_gqa_causal_17_lse",
    """
input  Q[h, p, e], K[g, m, e], V[g, m, f], slope[h]
output O, LSE
QK[h, p, m]  = Q[h, p, e] * K[h // 2, m, e] * rsqrt(E)
S[h, p, m]   = QK[h, p, m] - slope[h] * (p - m)  where m <= p
GM[h, p]     = S[h, p, m] :: max(m)
EX[h, p, m]  = exp(S[h, p, m] - GM[h, p])
SD[h, p]     = EX[h, p, m]
NV[h, p, f]  = EX[h, p, m] * V[h // 2, m, f]
O[h, p, f]   = NV[h, p, f] / SD[h, p]
LSE[h, p]    = GM[h, p] + log(SD[h, p])
""",
    dict(Q=rn(4, 17, 4), K=rn(2, 17, 4), V=rn(2, 17, 3), slope=np.array([0.5, 0.25, -0.125, 0.0625])),
    alibi_ref,
    passes={"m": 2},
)


# --- a T5-style per-head relative table indexed by clamp(m - p, -MAXD, MAXD) + MAXD, bidirectional, MAXD
# overridden from 2 to 3 (the table has 2 * 3 + 1 entries per head)
def t5_ref(Q, K, V, TB, MAXD=3):
    H, P, _E = Q.shape
    p, m = pm(P, K.shape[1])
    idx = np.clip(m - p, -MAXD, MAXD) + MAXD
    return np.stack([att(Q[h], K[h], V[h], bias=TB[h][idx]) for h in range(H)])


case(
    "s15_t5_clamped_relative_table_per_head_override",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], TB[h, r]
param  MAXD = 2
output O
QK[h, p, m]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, p, m]   = QK[h, p, m] + TB[h, clamp(m - p, -MAXD, MAXD) + MAXD]
GM[h, p]     = S[h, p, m] :: max(m)
EX[h, p, m]  = exp(S[h, p, m] - GM[h, p])
SD[h, p]     = EX[h, p, m]
O[h, p, f]   = EX[h, p, m] * V[h, m, f] / SD[h, p]
""",
    dict(Q=rn(2, 6, 3), K=rn(2, 9, 3), V=rn(2, 9, 2), TB=rn(2, 7)),
    t5_ref,
    params={"MAXD": 3},
)


# --- StreamingLLM: NS sink tokens plus a causal window of W; NS overridden from 1 to 4 so that the sinks and
# the window overlap for the early queries (a key is counted once however many clauses keep it)
def stream_ref(Q, K, V, NS=4, W=3):
    p, m = pm(Q.shape[0], K.shape[0])
    return att(Q, K, V, mask=(m <= p) & ((m < NS) | (p - m < W)))


case(
    "s15_streaming_sinks_overlap_window_override",
    """
input  Q[p, e], K[m, e], V[m, f]
param  NS = 1
param  W = 3
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p and (m < NS or p - m < W)
"""
    + _ATT,
    dict(Q=rn(9, 3), K=rn(9, 3), V=rn(9, 2)),
    stream_ref,
    params={"NS": 4},
)
