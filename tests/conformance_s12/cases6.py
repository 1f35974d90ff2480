"""3-pass specs that the rewrite streams and the triton backend fuses, with what production models add: two
score contractions (MLA's content and RoPE parts), two query-row ranks (GQA packed as [g, r, p]), ALiBi over
int position ids, odd layouts, paged prefill, QK-norm computed in the spec, gated
values computed in the spec, two value tensors sharing one softmax, sinks with a window and GQA (gpt-oss)."""

import numpy as np

from .common import att, causal, lse, make_rn, registry, softmax

rn, rng = make_rn(1206)
CASES, case = registry()


# --- MLA-style scores: a content part over e and a decoupled RoPE part over r, different head dims
def mla_ref(Q, K, QR, KR, V):
    E, R = Q.shape[-1], QR.shape[-1]
    s = (np.einsum("hpe,hme->hpm", Q, K) + np.einsum("hpr,mr->hpm", QR, KR)) / np.sqrt(E + R)
    P, M = s.shape[1:]
    return np.einsum("hpm,hmf->hpf", softmax(s, mask=causal(P, M)), V)


case(
    "s12_mla_two_score_contractions",
    """
input  Q[h, p, e], K[h, m, e], QR[h, p, r], KR[m, r], V[h, m, f]
output O
SC[h, p, m] = Q[h, p, e] * K[h, m, e]
SR[h, p, m] = QR[h, p, r] * KR[m, r]
S[h, p, m]  = (SC[h, p, m] + SR[h, p, m]) * rsqrt(E + R)  where m <= p
G[h, p]     = S[h, p, m] :: max(m)
N[h, p, m]  = exp(S[h, p, m] - G[h, p])
D[h, p]     = N[h, p, m]
O[h, p, f]  = N[h, p, m] * V[h, m, f] / D[h, p]
""",
    dict(Q=rn(2, 9, 5), K=rn(2, 9, 5), QR=rn(2, 9, 2), KR=rn(9, 2), V=rn(2, 9, 3)),
    mla_ref,
)


# --- GQA packed with two query-row ranks: Q[b, g, r, p, e] against K[b, g, m, e], causal
def gqa2_ref(Q, K, V):
    _B, _G, _R, P, E = Q.shape
    M = K.shape[2]
    s = np.einsum("bgrpe,bgme->bgrpm", Q, K) / np.sqrt(E)
    return np.einsum("bgrpm,bgmf->bgrpf", softmax(s, mask=causal(P, M, M - P)), V)


case(
    "s12_gqa_two_row_ranks",
    """
input  Q[b, g, r, p, e], K[b, g, m, e], V[b, g, m, f]
output O
S[b, g, r, p, m] = Q[b, g, r, p, e] * K[b, g, m, e] * rsqrt(E)  where m <= p + M - P
X[b, g, r, p]    = S[b, g, r, p, m] :: max(m)
N[b, g, r, p, m] = exp(S[b, g, r, p, m] - X[b, g, r, p])
D[b, g, r, p]    = N[b, g, r, p, m]
O[b, g, r, p, f] = N[b, g, r, p, m] * V[b, g, m, f] / D[b, g, r, p]
""",
    dict(Q=rn(1, 2, 3, 4, 4), K=rn(1, 2, 10, 4), V=rn(1, 2, 10, 3)),
    gqa2_ref,
)


# --- ALiBi over int position ids (packed sequences with gaps), causal on positions
def alibi_pos_ref(Q, K, V, SL, qpos, kpos):
    bias = SL[:, None, None] * (kpos[None, None, :] - qpos[None, :, None])
    return att(Q, K, V, mask=(kpos[None, :] <= qpos[:, None])[None], bias=bias)


case(
    "s12_alibi_int_position_ids",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], SL[h], qpos[p] : int, kpos[m] : int
output O
S[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where kpos[m] <= qpos[p]
B[h, p, m] = S[h, p, m] + SL[h] * (kpos[m] - qpos[p])
G[h, p]    = B[h, p, m] :: max(m)
N[h, p, m] = exp(B[h, p, m] - G[h, p])
D[h, p]    = N[h, p, m]
O[h, p, f] = N[h, p, m] * V[h, m, f] / D[h, p]
""",
    dict(
        Q=rn(2, 5, 4),
        K=rn(2, 12, 4),
        V=rn(2, 12, 3),
        SL=np.array([0.5, 0.125]),
        qpos=np.array([3, 7, 8, 20, 21]),
        kpos=np.array([0, 1, 2, 3, 5, 7, 8, 9, 15, 20, 21, 22]),
    ),
    alibi_pos_ref,
)


# --- odd layouts: sequence-first inputs, batch in the middle, head last in V; output in yet another order
def layout_ref(Q, K, V):
    q = Q.transpose(1, 2, 0, 3)  # [b, h, p, e]
    k = K.transpose(1, 2, 0, 3)
    v = V.transpose(0, 3, 1, 2)  # V[b, m, f, h] -> [b, h, m, f]
    o = att(q, k, v, mask=causal(q.shape[2], k.shape[2]))
    return o.transpose(3, 1, 2, 0)  # O[f, h, p, b]


case(
    "s12_odd_layouts_causal",
    """
input  Q[p, b, h, e], K[m, b, h, e], V[b, m, f, h]
output O
S[h, p, b, m] = Q[p, b, h, e] * K[m, b, h, e] * rsqrt(E)  where m <= p
G[p, h, b]    = S[h, p, b, m] :: max(m)
N[m, h, p, b] = exp(S[h, p, b, m] - G[p, h, b])
D[b, p, h]    = N[m, h, p, b]
O[f, h, p, b] = N[m, h, p, b] * V[b, m, f, h] / D[b, p, h]
""",
    dict(Q=rn(6, 2, 2, 3), K=rn(6, 2, 2, 3), V=rn(2, 6, 2, 2)),
    layout_ref,
)


# --- paged prefill: keys and values through a page table, causal, the last page partly used
def paged_ref(Q, KC, VC, table):
    P = Q.shape[0]
    k = np.concatenate([KC[t] for t in table])[:P]
    v = np.concatenate([VC[t] for t in table])[:P]
    return att(Q, k, v, mask=causal(P, P))


case(
    "s12_paged_prefill_causal",
    """
input  Q[p, e], KC[n, s, e], VC[n, s, f], table[j] : int
rank   M = P
output O
SC[p, m] = Q[p, e] * KC[table[m // S], m % S, e] * rsqrt(E)  where m <= p
G[p]     = SC[p, m] :: max(m)
N[p, m]  = exp(SC[p, m] - G[p])
D[p]     = N[p, m]
O[p, f]  = N[p, m] * VC[table[m // S], m % S, f] / D[p]
""",
    dict(Q=rn(10, 4), KC=rn(5, 4, 4), VC=rn(5, 4, 3), table=np.array([3, 0, 4])),
    paged_ref,
)


# --- QK-norm computed in the spec (RMS over the head dim), then softmax attention
def qknorm_ref(Q, K, V, GQ, GK):
    def rms(x, g):
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * g

    return att(rms(Q, GQ), rms(K, GK), V, mask=causal(Q.shape[0], K.shape[0], K.shape[0] - Q.shape[0]))


case(
    "s12_qk_norm_in_spec",
    """
input  Q[p, e], K[m, e], V[m, f], GQ[e], GK[e]
output O
QS[p]     = square(Q[p, e]) / E
KS[m]     = square(K[m, e]) / E
QN[p, e]  = Q[p, e] * rsqrt(QS[p] + 1e-6) * GQ[e]
KN[m, e]  = K[m, e] * rsqrt(KS[m] + 1e-6) * GK[e]
S[p, m]   = QN[p, e] * KN[m, e] * rsqrt(E)  where m <= p + M - P
G[p]      = S[p, m] :: max(m)
N[p, m]   = exp(S[p, m] - G[p])
D[p]      = N[p, m]
O[p, f]   = N[p, m] * V[m, f] / D[p]
""",
    dict(Q=rn(4, 6), K=rn(11, 6), V=rn(11, 3), GQ=rn(6), GK=rn(6)),
    qknorm_ref,
    passes={"e": 2, "m": 3},
)


# --- values gated in the spec, and the numerator weighted by a per-key weight (not the denominator)
def gatedv_ref(Q, K, V, GV, KW):
    v = V / (1 + np.exp(-GV[:, None])) * KW[:, None]
    return att(Q, K, v)


case(
    "s12_gated_values_key_weights",
    """
input  Q[p, e], K[m, e], V[m, f], GV[m], KW[m]
output O
V2[m, f]  = V[m, f] * sigmoid(GV[m])
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)
G[p]      = S[p, m] :: max(m)
N[p, m]   = exp(S[p, m] - G[p])
D[p]      = N[p, m]
O[p, f]   = N[p, m] * V2[m, f] * KW[m] / D[p]
""",
    dict(Q=rn(4, 3), K=rn(11, 3), V=rn(11, 2), GV=rn(11), KW=np.abs(rn(11))),
    gatedv_ref,
)


# --- two value tensors sharing one softmax, and the log-sum-exp; bottom-right causal with more queries than
# keys: the first rows have no key (every output 0 there)
def twov_ref(Q, K, V1, V2):
    P, M = Q.shape[0], K.shape[0]
    mask = causal(P, M, M - P)
    s = Q @ K.T / np.sqrt(Q.shape[1])
    a = softmax(s, mask=mask)
    l = lse(s, mask=mask)
    return a @ V1, a @ V2, np.where(np.isfinite(l), l, 0.0)


case(
    "s12_two_values_one_softmax_lse",
    """
input  Q[p, e], K[m, e], V1[m, f], V2[m, g]
output O1, O2, LSE
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p + M - P
G[p]      = S[p, m] :: max(m)
N[p, m]   = exp(S[p, m] - G[p])
D[p]      = N[p, m]
O1[p, f]  = N[p, m] * V1[m, f] / D[p]
O2[p, g]  = N[p, m] * V2[m, g] / D[p]
LSE[p]    = G[p] + log(D[p])
""",
    dict(Q=rn(8, 4), K=rn(5, 4), V1=rn(5, 3), V2=rn(5, 1)),
    twov_ref,
    passes={"m": 3},
)


# --- gpt-oss style: GQA, a sliding window, per-head sinks and soft-capped logits
def gptoss_ref(Q, K, V, SINK, W=3, C=5.0):
    B, H, P, E = Q.shape
    Gk = K.shape[1]
    k = np.repeat(K, H // Gk, axis=1)
    v = np.repeat(V, H // Gk, axis=1)
    s = np.einsum("bhpe,bhme->bhpm", Q, k) / np.sqrt(E)
    s = C * np.tanh(s / C)
    d = np.arange(P)[:, None] - np.arange(P)[None, :]
    s = np.where((d >= 0) & (d < W), s, -np.inf)
    full = np.concatenate([s, np.broadcast_to(SINK[None, :, None, None], (B, H, P, 1))], -1)
    w = np.exp(full - full.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    return np.einsum("bhpm,bhmf->bhpf", w[..., :-1], v)


case(
    "s12_gptoss_sink_window_gqa_softcap",
    """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], SINK[h]
param  R = 2
param  W = 3
param  C = 5.0
output O
QK[b, h, p, m] = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where 0 <= p - m < W
S[b, h, p, m]  = C * tanh(QK[b, h, p, m] / C)
L[b, h, p]     = S[b, h, p, m] :: max(m)
G[b, h, p]     = max(L[b, h, p], SINK[h])
N[b, h, p, m]  = exp(S[b, h, p, m] - G[b, h, p])
D[b, h, p]     = N[b, h, p, m]
O[b, h, p, f]  = N[b, h, p, m] * V[b, h // R, m, f] / (D[b, h, p] + exp(SINK[h] - G[b, h, p]))
""",
    dict(Q=rn(1, 4, 7, 4, scale=2.0), K=rn(1, 2, 7, 4, scale=2.0), V=rn(1, 2, 7, 3), SINK=rn(4)),
    gptoss_ref,
)
