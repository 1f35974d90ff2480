"""Normalisers other than plain softmax: differential attention (two softmaxes subtracted with a lambda,
given and computed from lambda vectors, with its head-wise RMSNorm), attention sinks (a learned logit per
head that joins the denominator, with a sliding window; StreamingLLM's first keys plus a window),
off-by-one softmax, stick-breaking attention, ReLU and ReLU^2 attention normalised by the length, softpick,
scalable softmax (scores times s * log n), a tanh softcap on the scores and on the output, per-head
temperatures, cosine attention and QK-norm."""

import numpy as np

from .common import att, make_rn, pm, registry, relu, sig, sink_softmax, softmax

rn, rng = make_rn(2001)
CASES, case = registry()


def scores(Q, K):
    """Q[..., p, e] . K[..., m, e] / sqrt(E), as [..., p, m]."""
    return np.einsum("...pe,...me->...pm", Q, K) / np.sqrt(Q.shape[-1])


# --- differential attention (Ye et al. 2024): softmax(Q1 K1) V - lam * softmax(Q2 K2) V, lam a scalar input
case(
    "s20_norm_differential_attention_scalar_lambda",
    """
input  Q1[b, h, p, e], K1[b, h, m, e], Q2[b, h, p, e], K2[b, h, m, e], V[b, h, m, f], lam
output O
S1[b, h, m, p] = Q1[b, h, p, e] * K1[b, h, m, e] * rsqrt(E)
G1[b, h, p]    = S1[b, h, m, p] :: max(m)
X1[b, h, m, p] = exp(S1[b, h, m, p] - G1[b, h, p])
D1[b, h, p]    = X1[b, h, m, p]
S2[b, h, m, p] = Q2[b, h, p, e] * K2[b, h, m, e] * rsqrt(E)
G2[b, h, p]    = S2[b, h, m, p] :: max(m)
X2[b, h, m, p] = exp(S2[b, h, m, p] - G2[b, h, p])
D2[b, h, p]    = X2[b, h, m, p]
O[b, h, p, f]  = (X1[b, h, m, p] / D1[b, h, p] - lam * X2[b, h, m, p] / D2[b, h, p]) * V[b, h, m, f]
""",
    dict(
        Q1=rn(1, 2, 4, 4), K1=rn(1, 2, 6, 4), Q2=rn(1, 2, 4, 4), K2=rn(1, 2, 6, 4), V=rn(1, 2, 6, 3), lam=0.37
    ),
    lambda Q1, K1, Q2, K2, V, lam: att(Q1, K1, V) - lam * att(Q2, K2, V),
)


# --- differential attention, causal, with lambda computed from the lambda vectors per head and the
# sub-layer's RMSNorm over f times (1 - LI); LI a param overridden
def diff_full_ref(Q1, K1, Q2, K2, V, LQ1, LK1, LQ2, LK2, g, LI=0.2):
    P, M = Q1.shape[-2], K1.shape[-2]
    p, m = pm(P, M)
    mask = m <= p
    lam = np.exp((LQ1 * LK1).sum(-1)) - np.exp((LQ2 * LK2).sum(-1)) + LI  # [h]
    a1 = softmax(scores(Q1, K1), mask)
    a2 = softmax(scores(Q2, K2), mask)
    d = a1 @ V - lam[None, :, None, None] * (a2 @ V)
    rms = np.sqrt((d**2).mean(-1, keepdims=True) + 1e-5)
    return d / rms * g * (1 - LI)


case(
    "s20_norm_differential_causal_lambda_vectors_rmsnorm",
    """
input  Q1[b, h, p, e], K1[b, h, m, e], Q2[b, h, p, e], K2[b, h, m, e], V[b, h, m, f]
input  LQ1[h, d], LK1[h, d], LQ2[h, d], LK2[h, d], g[f]
param  LI = 0.8
param  EPS = 1e-5
output O
LA[h]          = LQ1[h, d] * LK1[h, d]
LB[h]          = LQ2[h, d] * LK2[h, d]
LAM[h]         = exp(LA[h]) - exp(LB[h]) + LI
S1[b, h, m, p] = Q1[b, h, p, e] * K1[b, h, m, e] * rsqrt(E)  where m <= p
G1[b, h, p]    = S1[b, h, m, p] :: max(m)
X1[b, h, m, p] = exp(S1[b, h, m, p] - G1[b, h, p])
D1[b, h, p]    = X1[b, h, m, p]
S2[b, h, m, p] = Q2[b, h, p, e] * K2[b, h, m, e] * rsqrt(E)  where m <= p
G2[b, h, p]    = S2[b, h, m, p] :: max(m)
X2[b, h, m, p] = exp(S2[b, h, m, p] - G2[b, h, p])
D2[b, h, p]    = X2[b, h, m, p]
A1[b, h, p, f] = X1[b, h, m, p] * V[b, h, m, f] / D1[b, h, p]
A2[b, h, p, f] = X2[b, h, m, p] * V[b, h, m, f] / D2[b, h, p]
DF[b, h, p, f] = A1[b, h, p, f] - LAM[h] * A2[b, h, p, f]
MS[b, h, p]    = square(DF[b, h, p, f]) / F
O[b, h, p, f]  = DF[b, h, p, f] * rsqrt(MS[b, h, p] + EPS) * g[f] * (1 - LI)
""",
    dict(
        Q1=rn(2, 2, 5, 4),
        K1=rn(2, 2, 5, 4),
        Q2=rn(2, 2, 5, 4),
        K2=rn(2, 2, 5, 4),
        V=rn(2, 2, 5, 3),
        LQ1=rn(2, 3, scale=0.3),
        LK1=rn(2, 3, scale=0.3),
        LQ2=rn(2, 3, scale=0.3),
        LK2=rn(2, 3, scale=0.3),
        g=rn(3),
    ),
    diff_full_ref,
    params={"LI": 0.2},
)


# --- attention sinks (gpt-oss): a learned logit per head joins the denominator of every row
SINK_SPEC = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], sink[h]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
LM[b, h, p]    = S[b, h, m, p] :: max(m)
GM[b, h, p]    = max(LM[b, h, p], sink[h])
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
TOT[b, h, p]   = DEN[b, h, p] + exp(sink[h] - GM[b, h, p])
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / TOT[b, h, p]
"""

case(
    "s20_norm_attention_sink_logit_per_head",
    SINK_SPEC,
    dict(Q=rn(1, 3, 4, 4), K=rn(1, 3, 7, 4), V=rn(1, 3, 7, 2), sink=np.array([-1.0, 0.5, 4.0])),
    lambda Q, K, V, sink: sink_softmax(scores(Q, K), sink[None, :, None]) @ V,
)


# --- sinks with a causal sliding window (gpt-oss's local layers); a row's window is never empty; the
# window W overridden
def sink_window_ref(Q, K, V, sink, W=3):
    P, M = Q.shape[-2], K.shape[-2]
    p, m = pm(P, M)
    mask = (m <= p) & (p - m < W)
    return sink_softmax(scores(Q, K), sink[None, :, None], mask) @ V


case(
    "s20_norm_attention_sink_causal_window_overridden",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], sink[h]
param  W = 128
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p and p - m < W
LM[b, h, p]    = S[b, h, m, p] :: max(m)
GM[b, h, p]    = max(LM[b, h, p], sink[h])
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
TOT[b, h, p]   = DEN[b, h, p] + exp(sink[h] - GM[b, h, p])
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / TOT[b, h, p]
""",
    dict(Q=rn(1, 2, 7, 4), K=rn(1, 2, 7, 4), V=rn(1, 2, 7, 3), sink=np.array([0.3, 2.0])),
    sink_window_ref,
    params={"W": 3},
)


# --- sinks in a window that can be empty: cross attention where query p sees keys [p + 2, p + 4); rows past
# the keys see only the sink, whose weight multiplies no value: 0
def sink_empty_ref(Q, K, V, sink):
    P, M = Q.shape[-2], K.shape[-2]
    p, m = pm(P, M)
    mask = (m >= p + 2) & (m < p + 4)
    return sink_softmax(scores(Q, K), sink[None, :, None], mask) @ V


case(
    "s20_norm_attention_sink_empty_windows_default",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], sink[h]
output O, Z
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where p + 2 <= m < p + 4
LM[b, h, p]    = S[b, h, m, p] :: max(m)
GM[b, h, p]    = max(LM[b, h, p] ?? sink[h], sink[h])
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p] ?? 0
TOT[b, h, p]   = DEN[b, h, p] + exp(sink[h] - GM[b, h, p])
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / TOT[b, h, p]
Z[b, h, p]     = exp(sink[h] - GM[b, h, p]) / TOT[b, h, p]   # the sink's own weight
""",
    dict(Q=rn(1, 2, 6, 3), K=rn(1, 2, 5, 3), V=rn(1, 2, 5, 2), sink=np.array([-0.5, 1.5])),
    lambda Q, K, V, sink: (
        sink_empty_ref(Q, K, V, sink),
        1
        - sink_softmax(
            scores(Q, K),
            sink[None, :, None],
            (pm(6, 5)[1] >= pm(6, 5)[0] + 2) & (pm(6, 5)[1] < pm(6, 5)[0] + 4),
        ).sum(-1),
    ),
)


# --- StreamingLLM: the first NS keys (attention sinks as tokens) plus a causal window of W
def streaming_ref(Q, K, V, NS=2, W=3):
    p, m = pm(Q.shape[-2], K.shape[-2])
    return att(Q, K, V, mask=(m <= p) & ((m < NS) | (p - m < W)))


case(
    "s20_norm_streaming_llm_sink_tokens_plus_window",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
param  NS = 2
param  W = 3
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p and (m < NS or p - m < W)
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
""",
    dict(Q=rn(2, 9, 4), K=rn(2, 9, 4), V=rn(2, 9, 3)),
    streaming_ref,
)


# --- off-by-one softmax (softmax_1, Miller 2023): exp(s) / (1 + sum exp(s)), stabilised by max(GM, 0)
def softmax1_ref(Q, K, V):
    s = scores(Q, K) * 3.0  # large logits: the stabiliser matters
    return sink_softmax(s, np.zeros(s.shape[:-1])) @ V


case(
    "s20_norm_off_by_one_softmax",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E) * 3
LM[p]    = S[m, p] :: max(m)
GM[p]    = max(LM[p], 0)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / (DEN[p] + exp(-GM[p]))
""",
    dict(Q=rn(5, 4), K=rn(6, 4), V=rn(6, 3)),
    softmax1_ref,
)


# --- stick-breaking attention (Tan et al. 2024): A[p, m] = sigmoid(z) * prod over m < k < p of (1 -
# sigmoid(z[p, k])), in log space: -softplus(-z) - sum softplus(z[p, k])
def stick_ref(Q, K, V):
    z = scores(Q, K)  # [p, m]
    P, M = z.shape
    A = np.zeros((P, M))
    for p in range(P):
        for m in range(min(p, M)):
            w = sig(z[p, m])
            for k in range(m + 1, p):
                w *= 1 - sig(z[p, k])
            A[p, m] = w
    return A @ V, A.sum(1)


case(
    "s20_norm_stick_breaking_attention",
    """
input  Q[p, e], K[m, e], V[m, f]
rank   N = M
output O, MASS
Z[m, p]   = Q[p, e] * K[m, e] * rsqrt(E)
LF[m, p]  = softplus(Z[m, p])                       # -log(1 - sigmoid(z))
CS[m, p]  = LF[n, p]  where m < n and n < p         # the sticks broken after m and before p
A[m, p]   = exp(-softplus(-Z[m, p]) - (CS[m, p] ?? 0))  where m < p
O[p, f]   = A[m, p] * V[m, f]
MASS[p]   = A[m, p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2)),
    stick_ref,
)


# --- ReLU attention normalised by the number of keys (Wortsman et al. 2023), and causal ReLU^2 by the
# number of keys a query sees (p + 1)
def relu_ref(Q, K, V):
    s = scores(Q, K)
    p, m = pm(*s.shape[-2:])
    M = K.shape[-2]
    return relu(s) @ V / M, (np.where(m <= p, relu(s) ** 2, 0) @ V) / (p + 1)


case(
    "s20_norm_relu_by_length_and_causal_relu_squared",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O, O2
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
O[h, p, f]  = relu(S[h, m, p]) * V[h, m, f] / M
R2[h, m, p] = square(relu(S[h, m, p]))  where m <= p
O2[h, p, f] = R2[h, m, p] * V[h, m, f] / (p + 1)
""",
    dict(Q=rn(2, 5, 4), K=rn(2, 5, 4), V=rn(2, 5, 3)),
    relu_ref,
)


# --- softpick (Zuhri et al. 2025): relu(exp(x) - 1) / sum |exp(x) - 1|, stabilised by the row max
def softpick_ref(Q, K, V):
    s = scores(Q, K)
    e = np.exp(s) - 1
    w = relu(e) / np.abs(e).sum(-1, keepdims=True)
    p, m = pm(*s.shape[-2:])
    ec = np.where(m <= p, e, 0.0)
    wc = relu(ec) / np.abs(ec).sum(-1, keepdims=True)
    return w @ V, wc @ V


case(
    "s20_norm_softpick_rectified_softmax",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, OC
S[m, p]   = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]     = S[m, p] :: max(m)
E1[m, p]  = exp(S[m, p] - GM[p]) - exp(-GM[p])
DEN[p]    = abs(E1[m, p])
O[p, f]   = relu(E1[m, p]) * V[m, f] / DEN[p]
SC[m, p]  = S[m, p]  where m <= p
GC[p]     = SC[m, p] :: max(m)
EC[m, p]  = exp(SC[m, p] - GC[p]) - exp(-GC[p])
DC[p]     = abs(EC[m, p])
OC[p, f]  = relu(EC[m, p]) * V[m, f] / DC[p]
""",
    dict(Q=rn(5, 4, scale=1.5), K=rn(5, 4), V=rn(5, 3)),
    softpick_ref,
)


# --- scalable softmax (SSMax, Nakanishi 2025): scores times s[h] * log(n), n the number of keys the query
# sees: M for full attention, p + 1 under the causal mask
def ssmax_ref(Q, K, V, s):
    z = scores(Q, K)
    M = K.shape[-2]
    p, m = pm(Q.shape[-2], M)
    full = softmax(z * s[:, None, None] * np.log(M)) @ V
    causal = softmax(z * s[:, None, None] * np.log(p + 1), m <= p) @ V
    return full, causal


case(
    "s20_norm_scalable_softmax_log_length",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], s[h]
output O, OC
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E) * s[h] * log(M)
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
SC[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E) * s[h] * log(p + 1)  where m <= p
GC[h, p]    = SC[h, m, p] :: max(m)
XC[h, m, p] = exp(SC[h, m, p] - GC[h, p])
DC[h, p]    = XC[h, m, p]
OC[h, p, f] = XC[h, m, p] * V[h, m, f] / DC[h, p]
""",
    dict(Q=rn(2, 6, 4), K=rn(2, 6, 4), V=rn(2, 6, 3), s=np.array([0.4, 1.3])),
    ssmax_ref,
)


# --- a tanh softcap on the scores and another on the output (Gemma 2 style), both caps overridden
def capcap_ref(Q, K, V, C1=2.0, C2=0.3):
    s = C1 * np.tanh(scores(Q, K) / C1)
    return C2 * np.tanh(softmax(s) @ V / C2)


case(
    "s20_norm_tanh_softcap_scores_and_output",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  C1 = 50.0
param  C2 = 30.0
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)   # e summed here, before the tanh
S[b, h, m, p]  = C1 * tanh(QK[b, h, m, p] / C1)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
AV[b, h, p, f] = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
O[b, h, p, f]  = C2 * tanh(AV[b, h, p, f] / C2)
""",
    dict(Q=rn(1, 2, 4, 4, scale=2), K=rn(1, 2, 6, 4, scale=2), V=rn(1, 2, 6, 3)),
    capcap_ref,
    params={"C1": 2.0, "C2": 0.3},
)


# --- a temperature per batch and head, given at call time
def temp_ref(Q, K, V, temp):
    s = np.einsum("bhpe,bhme->bhpm", Q, K) / temp[:, :, None, None]
    return softmax(s) @ V


case(
    "s20_norm_per_head_temperature_input",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], temp[b, h]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] / temp[b, h]
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(2, 2, 3, 4), K=rn(2, 2, 5, 4), V=rn(2, 2, 5, 3), temp=np.array([[0.25, 1.0], [3.0, 0.7]])),
    temp_ref,
)


# --- cosine attention (Swin v2): unit-norm queries and keys, divided by a per-head tau clamped at 0.01
def cosine_ref(Q, K, V, tau):
    qn = Q / np.linalg.norm(Q, axis=-1, keepdims=True)
    kn = K / np.linalg.norm(K, axis=-1, keepdims=True)
    s = np.einsum("hpe,hme->hpm", qn, kn) / np.maximum(tau, 0.01)[:, None, None]
    return softmax(s) @ V


case(
    "s20_norm_cosine_attention_clamped_tau",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], tau[h]
output O
QN[h, p]    = square(Q[h, p, e])
KN[h, m]    = square(K[h, m, e])
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(QN[h, p]) * rsqrt(KN[h, m]) / max(tau[h], 0.01)
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
""",
    dict(Q=rn(2, 4, 3), K=rn(2, 6, 3), V=rn(2, 6, 2), tau=np.array([0.001, 0.5])),
    cosine_ref,
)


# --- QK-norm: RMSNorm of queries and keys over e with learned gains before the scores
def qknorm_ref(Q, K, V, gq, gk):
    qn = Q / np.sqrt((Q**2).mean(-1, keepdims=True) + 1e-6) * gq
    kn = K / np.sqrt((K**2).mean(-1, keepdims=True) + 1e-6) * gk
    return att(qn, kn, V)


case(
    "s20_norm_qk_rmsnorm_with_gains",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f], gq[e], gk[e]
param  EPS = 1e-6
output O
RQ[b, p]    = square(Q[b, p, e]) / E
RK[b, m]    = square(K[b, m, e]) / E
QN[b, p, e] = Q[b, p, e] * rsqrt(RQ[b, p] + EPS) * gq[e]
KN[b, m, e] = K[b, m, e] * rsqrt(RK[b, m] + EPS) * gk[e]
S[b, m, p]  = QN[b, p, e] * KN[b, m, e] * rsqrt(E)
GM[b, p]    = S[b, m, p] :: max(m)
EX[b, m, p] = exp(S[b, m, p] - GM[b, p])
DEN[b, p]   = EX[b, m, p]
O[b, p, f]  = EX[b, m, p] * V[b, m, f] / DEN[b, p]
""",
    dict(Q=rn(2, 4, 4, scale=3), K=rn(2, 5, 4, scale=0.1), V=rn(2, 5, 3), gq=rn(4), gk=rn(4)),
    qknorm_ref,
)
