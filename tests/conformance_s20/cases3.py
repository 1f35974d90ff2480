"""Structure: multi-query cross attention (one KV head, P != M) with key lengths, agent attention with the
agents given as an input, a mixture of heads chosen per query by an int index table and weighted by a
router, talking-heads attention (logits and weights mixed across heads), multi-head latent attention in
its absorbed form with a shared RoPE key, adaptive attention spans (a soft ramp from coordinates), gated
outputs, sigmoid attention with its -log(M) bias, decode with one query against long keys (GQA, key
lengths, returning the log-sum-exp), head dims 1 and 3, and the FuseMax Cascade 5 with its tile and a
softcap overridden."""

import numpy as np

from .common import att, lse, make_rn, pm, registry, sig, softmax

rn, rng = make_rn(2003)
CASES, case = registry()


def scores(Q, K):
    return np.einsum("...pe,...me->...pm", Q, K) / np.sqrt(Q.shape[-1])


# --- multi-query cross attention: one K/V head shared by every query head, P != M, key lengths per batch
def mqa_ref(Q, K, V, klen):
    B, H, P, E = Q.shape
    M = K.shape[1]
    O = np.zeros((B, H, P, V.shape[-1]))
    for b in range(B):
        mask = np.arange(M)[None, :] < klen[b]
        O[b] = softmax(np.einsum("hpe,me->hpm", Q[b], K[b]) / np.sqrt(E), mask) @ V[b]
    return O


case(
    "s20_struct_mqa_cross_attention_key_lengths",
    """
input  Q[b, h, p, e], K[b, m, e], V[b, m, f], klen[b] : int
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, m, e] * rsqrt(E)  where m < klen[b]
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(3, 4, 2, 4), K=rn(3, 9, 4), V=rn(3, 9, 3), klen=np.array([9, 4, 0])),
    mqa_ref,
)


# --- agent attention (Han et al. 2024) with the agent tokens given as an input: agents attend to the keys,
# then the queries attend to the agents
def agent_in_ref(Q, K, V, AG):
    E = Q.shape[-1]
    av = softmax(np.einsum("hne,hme->hnm", AG, K) / np.sqrt(E)) @ V
    return softmax(np.einsum("hpe,hne->hpn", Q, AG) / np.sqrt(E)) @ av


case(
    "s20_struct_agent_attention_agents_as_input",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], AG[h, n, e]
output O
S1[h, n, m] = AG[h, n, e] * K[h, m, e] * rsqrt(E)
G1[h, n]    = S1[h, n, m] :: max(m)
X1[h, n, m] = exp(S1[h, n, m] - G1[h, n])
D1[h, n]    = X1[h, n, m]
AV[h, n, f] = X1[h, n, m] * V[h, m, f] / D1[h, n]
S2[h, p, n] = Q[h, p, e] * AG[h, n, e] * rsqrt(E)
G2[h, p]    = S2[h, p, n] :: max(n)
X2[h, p, n] = exp(S2[h, p, n] - G2[h, p])
D2[h, p]    = X2[h, p, n]
O[h, p, f]  = X2[h, p, n] * AV[h, n, f] / D2[h, p]
""",
    dict(Q=rn(2, 5, 4), K=rn(2, 7, 4), V=rn(2, 7, 3), AG=rn(2, 3, 4)),
    agent_in_ref,
)


# --- a mixture of heads: each query takes the heads sel[b, p, j] (top-k chosen outside) weighted by w; a
# selection of -1 is a hole
def moh_sel_ref(Q, K, V, sel, w):
    HO = att(Q, K, V)  # [b, h, p, f]
    B, H, P, F = HO.shape
    O = np.zeros((B, P, F))
    for b in range(B):
        for p in range(P):
            for j in range(sel.shape[2]):
                if 0 <= sel[b, p, j] < H:
                    O[b, p] += w[b, p, j] * HO[b, sel[b, p, j], p]
    return O


case(
    "s20_struct_mixture_of_heads_selected_by_index",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], sel[b, p, j] : int, w[b, p, j]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
HO[b, h, p, f] = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
O[b, p, f]     = w[b, p, j] * HO[b, sel[b, p, j], p, f]
""",
    dict(
        Q=rn(2, 4, 3, 2),
        K=rn(2, 4, 5, 2),
        V=rn(2, 4, 5, 3),
        sel=np.array([[[0, 3], [2, -1], [1, 1]], [[3, 2], [0, 1], [4, 0]]]),
        w=rn(2, 3, 2),
    ),
    moh_sel_ref,
)


# --- talking-heads attention (Shazeer et al. 2020): logits mixed across heads before the softmax, weights
# mixed after it
def talking_ref(Q, K, V, WL, WW):
    s = scores(Q, K)  # [h, p, m]
    s2 = np.einsum("gh,hpm->gpm", WL, s)
    a = softmax(s2)
    a2 = np.einsum("kg,gpm->kpm", WW, a)
    return a2 @ V


case(
    "s20_struct_talking_heads",
    """
input  Q[h, p, e], K[h, m, e], V[k, m, f], WL[g, h], WW[k, g]
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S2[g, m, p] = WL[g, h] * S[h, m, p]
GM[g, p]    = S2[g, m, p] :: max(m)
EX[g, m, p] = exp(S2[g, m, p] - GM[g, p])
DEN[g, p]   = EX[g, m, p]
A2[k, m, p] = WW[k, g] * EX[g, m, p] / DEN[g, p]
O[k, p, f]  = A2[k, m, p] * V[k, m, f]
""",
    dict(Q=rn(3, 4, 2), K=rn(3, 5, 2), V=rn(2, 5, 3), WL=rn(4, 3), WW=rn(2, 4)),
    talking_ref,
)


# --- multi-head latent attention (DeepSeek-V2), absorbed: queries times W_UK against the latent cache C,
# plus a decoupled RoPE part whose key is shared by all heads; values from the latent times W_UV; causal
def mla_ref(QN, QR, C, KR, WUK, WUV):
    _H, P, D = QN.shape
    M = C.shape[0]
    k = np.einsum("mc,hcd->hmd", C, WUK)
    v = np.einsum("mc,hcf->hmf", C, WUV)
    s = (np.einsum("hpd,hmd->hpm", QN, k) + np.einsum("hpr,mr->hpm", QR, KR)) / np.sqrt(D + QR.shape[-1])
    p, m = pm(P, M)
    return softmax(s, m <= p + M - P) @ v


case(
    "s20_struct_mla_absorbed_latent_cache_shared_rope_key",
    """
input  QN[h, p, d], QR[h, p, r], C[m, c], KR[m, r], WUK[h, c, d], WUV[h, c, f]
output O
QA[h, p, c]  = QN[h, p, d] * WUK[h, c, d]                 # W_UK absorbed into the query
SN[h, m, p]  = QA[h, p, c] * C[m, c]
SR[h, m, p]  = QR[h, p, r] * KR[m, r]
S[h, m, p]   = (SN[h, m, p] + SR[h, m, p]) * rsqrt(D + R)  where m <= p + M - P
GM[h, p]     = S[h, m, p] :: max(m)
EX[h, m, p]  = exp(S[h, m, p] - GM[h, p])
DEN[h, p]    = EX[h, m, p]
CV[h, p, c]  = EX[h, m, p] * C[m, c] / DEN[h, p]           # attention over the latents
O[h, p, f]   = CV[h, p, c] * WUV[h, c, f]
""",
    dict(QN=rn(2, 3, 4), QR=rn(2, 3, 2), C=rn(6, 5), KR=rn(6, 2), WUK=rn(2, 5, 4), WUV=rn(2, 5, 3)),
    mla_ref,
)


# --- adaptive attention span (Sukhbaatar et al. 2019): exp weights times a ramp clamp((RR + z[h] - (p -
# m)) / RR, 0, 1) before normalising, causal
def span_ref(Q, K, V, z, RR=2.0):
    P, M = Q.shape[1], K.shape[1]
    p, m = pm(P, M)
    ramp = np.clip((RR + z[:, None, None] - (p - m)) / RR, 0, 1)
    s = scores(Q, K)
    ex = np.where(m <= p, np.exp(s - np.where(m <= p, s, -np.inf).max(-1, keepdims=True)), 0) * ramp
    return ex @ V / ex.sum(-1, keepdims=True)


case(
    "s20_struct_adaptive_span_soft_ramp",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], z[h]
param  RR = 2.0
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p]) * clamp((RR + z[h] - (p - m)) / RR, 0, 1)
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
""",
    dict(Q=rn(2, 7, 3), K=rn(2, 7, 3), V=rn(2, 7, 2), z=np.array([1.5, 4.0])),
    span_ref,
)


# --- gated attention output (Qiu et al. 2025): sigmoid of a gate per query and feature times the output
case(
    "s20_struct_gated_output_sigmoid",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], G[b, h, p, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
AV[b, h, p, f] = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
O[b, h, p, f]  = AV[b, h, p, f] * sigmoid(G[b, h, p, f])
""",
    dict(Q=rn(1, 2, 4, 4), K=rn(1, 2, 6, 4), V=rn(1, 2, 6, 3), G=rn(1, 2, 4, 3)),
    lambda Q, K, V, G: att(Q, K, V) * sig(G),
)


# --- sigmoid attention (Ramapuram et al. 2024) with its bias -log(M), causal with the bias -log(p + 1)
def sigm_ref(Q, K, V):
    s = scores(Q, K)
    M = K.shape[-2]
    p, m = pm(Q.shape[-2], M)
    return sig(s - np.log(M)) @ V, np.where(m <= p, sig(s - np.log(p + 1)), 0) @ V


case(
    "s20_struct_sigmoid_attention_log_length_bias",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O, OC
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
O[h, p, f]  = sigmoid(S[h, m, p] - log(M)) * V[h, m, f]
SC[h, m, p] = sigmoid(S[h, m, p] - log(p + 1))  where m <= p
OC[h, p, f] = SC[h, m, p] * V[h, m, f]
""",
    dict(Q=rn(2, 5, 4), K=rn(2, 5, 4), V=rn(2, 5, 3)),
    sigm_ref,
)


# --- decode: one query per batch against 150 cached keys, GQA (2 query heads per KV head), key lengths per
# batch (one empty cache), the output and the log-sum-exp
DECODE_SPEC = """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], klen[b] : int
param  R = 2
output O, L
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where m < klen[b]
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h // R, m, f] / DEN[b, h, p]
L[b, h, p]     = GM[b, h, p] + log(DEN[b, h, p])
"""


def decode_ref(Q, K, V, klen, R=2):
    B, H, P, _E = Q.shape
    M = K.shape[2]
    Kr, Vr = np.repeat(K, R, axis=1), np.repeat(V, R, axis=1)
    O = np.zeros((B, H, P, V.shape[-1]))
    L = np.zeros((B, H, P))
    for b in range(B):
        mask = np.arange(M)[None, :] < klen[b]
        s = scores(Q[b], Kr[b])
        O[b] = softmax(s, mask) @ Vr[b]
        L[b] = np.where(mask.any(), lse(s, mask), 0.0)
    return O, L


case(
    "s20_struct_decode_one_query_long_keys_gqa_lse",
    DECODE_SPEC,
    dict(Q=rn(3, 4, 1, 8), K=rn(3, 2, 150, 8), V=rn(3, 2, 150, 4), klen=np.array([150, 67, 0])),
    decode_ref,
)


# --- head dims 1 and 3: E = 1, F = 3 (causal) and E = 3, F = 1
def small_dims_ref(Q1, K1, V3, Q3, K3, V1):
    p, m = pm(Q1.shape[-2], K1.shape[-2])
    return att(Q1, K1, V3, mask=m <= p), att(Q3, K3, V1)


case(
    "s20_struct_head_dims_one_and_three",
    """
input  Q1[b, p, e], K1[b, m, e], V3[b, m, f], Q3[b, p, d], K3[b, m, d], V1[b, m, c]
output O1, O3
S[b, m, p]   = Q1[b, p, e] * K1[b, m, e] * rsqrt(E)  where m <= p
GM[b, p]     = S[b, m, p] :: max(m)
EX[b, m, p]  = exp(S[b, m, p] - GM[b, p])
DEN[b, p]    = EX[b, m, p]
O1[b, p, f]  = EX[b, m, p] * V3[b, m, f] / DEN[b, p]
T[b, m, p]   = Q3[b, p, d] * K3[b, m, d] * rsqrt(D)
TM[b, p]     = T[b, m, p] :: max(m)
TX[b, m, p]  = exp(T[b, m, p] - TM[b, p])
TD[b, p]     = TX[b, m, p]
O3[b, p, c]  = TX[b, m, p] * V1[b, m, c] / TD[b, p]
""",
    dict(
        Q1=rn(2, 5, 1, scale=2),
        K1=rn(2, 5, 1, scale=2),
        V3=rn(2, 5, 3),
        Q3=rn(2, 5, 3),
        K3=rn(2, 5, 3),
        V1=rn(2, 5, 1),
    ),
    small_dims_ref,
)


# --- head dim 1 alone in the standard [b, h, p, e] layout, so the fused kernel meets it
case(
    "s20_struct_head_dim_one_standard_layout",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(1, 2, 5, 1, scale=3), K=rn(1, 2, 70, 1, scale=3), V=rn(1, 2, 70, 1)),
    lambda Q, K, V: att(Q, K, V),
)


# --- Cascade 5 with a softcap on the tile scores, the tile M0 and the cap C overridden; M = 10 ragged
def c5_cap_ref(Q, K, V, C=1.5):
    s = C * np.tanh(Q.T @ K / C)  # [p, m]
    return (softmax(s) @ V.T).T


case(
    "s20_struct_cascade5_softcap_tile_and_cap_overridden",
    """
input  Q[e, p], K[e, m], V[f, m]
param  M0 = 4
param  C = 30.0
rank   M = M1 * M0
output AV
BK[e, m1, m0]     = K[e, m1 * M0 + m0]
BV[f, m1, m0]     = V[f, m1 * M0 + m0]
RM[0, p]          = -inf
RD[0, p]          = 0
RNV[f, 0, p]      = 0
RQK[m1, m0, p]    = Q[e, p] * BK[e, m1, m0]
BQK[m1, m0, p]    = C * tanh(RQK[m1, m0, p] / C)
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p])
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[f, m1, p]    = SLN[m1, m0, p] * BV[f, m1, m0]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p]     = SLD[m1, p] + RD[m1, p] * PRM[m1, p]
RNV[f, m1 + 1, p] = SLNV[f, m1, p] + RNV[f, m1, p] * PRM[m1, p]
AV[f, p]          = RNV[f, M1, p] / RD[M1, p]
""",
    dict(Q=rn(3, 4, scale=2), K=rn(3, 10, scale=2), V=rn(2, 10)),
    c5_cap_ref,
    params={"M0": 3, "C": 1.5},
)
