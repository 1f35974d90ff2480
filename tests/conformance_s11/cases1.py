# ruff: noqa (spec strings and oracles are data: as the reviewer wrote them)
import numpy as np

rng = np.random.default_rng(11)


def rn(*s, scale=1.0):
    return rng.standard_normal(s) * scale


def softmax(s, mask=None, axis=-1):
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    mx = np.max(s, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    ex = np.exp(s - mx)
    if mask is not None:
        ex = np.where(mask, ex, 0.0)
    den = ex.sum(axis=axis, keepdims=True)
    return np.where(den > 0, ex / np.where(den > 0, den, 1.0), 0.0)


def att(q, k, v, mask=None, scale=None, bias=None):
    # q[..., p, e], k[..., m, e], v[..., m, f]
    s = np.einsum("...pe,...me->...pm", q, k)
    s = s * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if bias is not None:
        s = s + bias
    return np.einsum("...pm,...mf->...pf", softmax(s, mask), v)


CASES = []


def case(name, spec, inputs, oracle, params=None, skip=()):
    CASES.append(
        dict(
            name=name, spec=spec.strip() + "\n", inputs=inputs, oracle=oracle, params=params or {}, skip=skip
        )
    )


def causal(P, M, off=0):
    return np.arange(M)[None, :] <= np.arange(P)[:, None] + off


# 1 cascade4 in [p, m] order, float scale param
case(
    "c4_pm_order",
    """
input  Q[p, e], K[m, e], V[m, f]
param  SC = 0.3
output O
S[p, m]  = Q[p, e] * K[m, e] * SC
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
A[p, m]  = N[p, m] / D[p]
O[p, f]  = A[p, m] * V[m, f]
""",
    dict(Q=rn(5, 3), K=rn(7, 3), V=rn(7, 2)),
    lambda Q, K, V: att(Q, K, V, scale=0.3),
)

# 2 batch/head with transposed output and size-1 batch
case(
    "c4_transposed_out",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[h, b, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
G[b, h, p]     = S[h, b, p, m] :: max(m)
N[m, p, h, b]  = exp(S[h, b, p, m] - G[b, h, p])
D[p, b, h]     = N[m, p, h, b]
O[f, p, h, b]  = N[m, p, h, b] * V[b, h, m, f] / D[p, b, h]
""",
    dict(Q=rn(1, 3, 4, 5), K=rn(1, 3, 6, 5), V=rn(1, 3, 6, 3)),
    lambda Q, K, V: att(Q, K, V).transpose(3, 2, 1, 0),
)

# 3 cascade 5 with b,h and ragged, param override
C5BH = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  M0 = 3
rank   M = M1 * M0
output AV
BK[b, h, e, m1, m0] = K[b, h, m1 * M0 + m0, e]
BV[b, h, f, m1, m0] = V[b, h, m1 * M0 + m0, f]
RM[b, h, 0, p]      = -inf
RD[b, h, 0, p]      = 0
RNV[b, h, f, 0, p]  = 0
BQK[b, h, m1, m0, p] = Q[b, h, p, e] * BK[b, h, e, m1, m0] * rsqrt(E)
LM[b, h, m1, p]     = BQK[b, h, m1, m0, p] :: max(m0)
RM[b, h, m1 + 1, p] = max(RM[b, h, m1, p], LM[b, h, m1, p])
SLN[b, h, m1, m0, p] = exp(BQK[b, h, m1, m0, p] - RM[b, h, m1 + 1, p])
SLD[b, h, m1, p]    = SLN[b, h, m1, m0, p]
SLNV[b, h, f, m1, p] = SLN[b, h, m1, m0, p] * BV[b, h, f, m1, m0]
PRM[b, h, m1, p]    = exp(RM[b, h, m1, p] - RM[b, h, m1 + 1, p])
RD[b, h, m1 + 1, p] = SLD[b, h, m1, p] + RD[b, h, m1, p] * PRM[b, h, m1, p]
RNV[b, h, f, m1 + 1, p] = SLNV[b, h, f, m1, p] + RNV[b, h, f, m1, p] * PRM[b, h, m1, p]
AV[b, h, p, f]      = RNV[b, h, f, M1, p] / RD[b, h, M1, p]
"""
case(
    "c5_bh_ragged",
    C5BH,
    dict(Q=rn(2, 2, 3, 4), K=rn(2, 2, 7, 4), V=rn(2, 2, 7, 3)),
    lambda Q, K, V: att(Q, K, V),
)
case(
    "c5_bh_ragged_M0_5",
    C5BH,
    dict(Q=rn(1, 1, 2, 3), K=rn(1, 1, 7, 3), V=rn(1, 1, 7, 2)),
    lambda Q, K, V: att(Q, K, V),
    params={"M0": 5},
)
case(
    "c5_bh_M0_big",
    C5BH,
    dict(Q=rn(1, 2, 3, 3), K=rn(1, 2, 5, 3), V=rn(1, 2, 5, 2)),
    lambda Q, K, V: att(Q, K, V),
    params={"M0": 16},
)

# 4 partition with the outer part as param
case(
    "c5_outer_param",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M1 = 3
rank   M = M1 * M0
output AV
BQK[m1, m0, p]  = Q[p, e] * K[m1 * M0 + m0, e]
RM[0, p]        = -inf
RD[0, p]        = 0
RNV[0, p, f]    = 0
LM[m1, p]       = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]   = max(RM[m1, p], LM[m1, p])
SLN[m1, m0, p]  = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
PRM[m1, p]      = exp(RM[m1, p] - RM[m1 + 1, p])
SLD[m1, p]      = SLN[m1, m0, p]
SLNV[m1, p, f]  = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
RD[m1 + 1, p]   = SLD[m1, p] + RD[m1, p] * PRM[m1, p]
RNV[m1 + 1, p, f] = SLNV[m1, p, f] + RNV[m1, p, f] * PRM[m1, p]
AV[p, f]        = RNV[M1, p, f] / RD[M1, p]
""",
    dict(Q=rn(4, 3), K=rn(8, 3), V=rn(8, 2)),
    lambda Q, K, V: att(Q, K, V, scale=1.0),
)

# 5 FuseMax 2-pass cascade (per-tile max then global max)
case(
    "c_2pass",
    """
input  Q[e, p], K[e, m], V[f, m]
param  M0 = 3
rank   M = M1 * M0
output AV
BK[e, m1, m0]   = K[e, m1 * M0 + m0]
BV[f, m1, m0]   = V[f, m1 * M0 + m0]
BQK[m1, m0, p]  = Q[e, p] * BK[e, m1, m0]
LM[m1, p]       = BQK[m1, m0, p] :: max(m0)
GM[p]           = LM[m1, p] :: max(m1)
SLN[m1, m0, p]  = exp(BQK[m1, m0, p] - LM[m1, p])
SLD[m1, p]      = SLN[m1, m0, p]
SLNV[f, m1, p]  = SLN[m1, m0, p] * BV[f, m1, m0]
PRM[m1, p]      = exp(LM[m1, p] - GM[p])
SD[p]           = SLD[m1, p] * PRM[m1, p]
SNV[f, p]       = SLNV[f, m1, p] * PRM[m1, p]
AV[f, p]        = SNV[f, p] / SD[p]
""",
    dict(Q=rn(3, 4), K=rn(3, 8), V=rn(2, 8)),
    lambda Q, K, V: att(Q.T, K.T, V.T, scale=1.0).T,
)

# 6 causal with offset (cross attention, P < M, bottom-right aligned) and sliding window
case(
    "window_offset",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f]
param  W = 3
output O
S[b, p, m] = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where p + M - P - W < m <= p + M - P
G[b, p]    = S[b, p, m] :: max(m)
N[b, p, m] = exp(S[b, p, m] - G[b, p])
D[b, p]    = N[b, p, m]
O[b, p, f] = N[b, p, m] * V[b, m, f] / D[b, p]
""",
    dict(Q=rn(2, 4, 3), K=rn(2, 9, 3), V=rn(2, 9, 2)),
    lambda Q, K, V: att(
        Q,
        K,
        V,
        mask=(np.arange(9)[None] <= np.arange(4)[:, None] + 5)
        & (np.arange(9)[None] > np.arange(4)[:, None] + 5 - 3),
    ),
)


# 7 and/or/not precedence
def m_andornot(P, M):
    p = np.arange(P)[:, None]
    m = np.arange(M)[None]
    return ((m <= p) & ~(p - m == 2)) | (m == 0)


case(
    "filter_and_or_not",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p] = Q[p, e] * K[m, e]  where m <= p and not p - m == 2 or m == 0
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2)),
    lambda Q, K, V: att(Q, K, V, scale=1.0, mask=m_andornot(6, 6)),
)

# 8 symmetric abs window
case(
    "filter_abs_window",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  W = 2
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where abs(p - m) < W
G[b, h, p]    = S[b, h, m, p] :: max(m)
N[b, h, m, p] = exp(S[b, h, m, p] - G[b, h, p])
D[b, h, p]    = N[b, h, m, p]
O[b, h, p, f] = N[b, h, m, p] * V[b, h, m, f] / D[b, h, p]
""",
    dict(Q=rn(1, 2, 7, 3), K=rn(1, 2, 7, 3), V=rn(1, 2, 7, 2)),
    lambda Q, K, V: att(Q, K, V, mask=np.abs(np.arange(7)[:, None] - np.arange(7)[None]) < 2),
)

# 9 strided (mod) + causal; fully masked none
case(
    "filter_strided_mod",
    """
input  Q[p, e], K[m, e], V[m, f]
param  S = 3
output O
X[m, p] = Q[p, e] * K[m, e]  where (p - m) % S == 0 and m <= p or p - m == 1
G[p]    = X[m, p] :: max(m)
N[m, p] = exp(X[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    lambda Q, K, V: att(
        Q,
        K,
        V,
        scale=1.0,
        mask=(
            ((np.arange(8)[:, None] - np.arange(8)[None]) % 3 == 0)
            & (np.arange(8)[None] <= np.arange(8)[:, None])
        )
        | (np.arange(8)[:, None] - np.arange(8)[None] == 1),
    ),
)

# 10 fully masked rows (strict causal) -> 0
case(
    "strict_causal_masked_row",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < p
G[b, h, p]    = S[b, h, m, p] :: max(m)
N[b, h, m, p] = exp(S[b, h, m, p] - G[b, h, p])
D[b, h, p]    = N[b, h, m, p]
A[b, h, m, p] = N[b, h, m, p] / D[b, h, p]
O[b, h, p, f] = A[b, h, m, p] * V[b, h, m, f]
""",
    dict(Q=rn(2, 1, 6, 4), K=rn(2, 1, 6, 4), V=rn(2, 1, 6, 3)),
    lambda Q, K, V: att(Q, K, V, mask=np.arange(6)[None] < np.arange(6)[:, None]),
)

# 11 causal cross attention P > M, top-left aligned with shift: first rows masked
case(
    "causal_shift_masked_rows",
    """
input  Q[p, e], K[m, e], V[m, f]
param  SH = 2
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where m + SH <= p
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(7, 3), K=rn(5, 3), V=rn(5, 2)),
    lambda Q, K, V: att(Q, K, V, mask=np.arange(5)[None] + 2 <= np.arange(7)[:, None]),
)


# 12 key padding via int lengths (len 0 -> fully masked batch)
def kp_ref(Q, K, V, ln):
    mask = np.arange(K.shape[1])[None, None, :] < ln[:, None, None]
    return att(Q, K, V, mask=mask)


case(
    "key_padding_len",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f], ln[b] : int
output O
S[b, m, p] = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where m < ln[b]
G[b, p]    = S[b, m, p] :: max(m)
N[b, m, p] = exp(S[b, m, p] - G[b, p])
D[b, p]    = N[b, m, p]
O[b, p, f] = N[b, m, p] * V[b, m, f] / D[b, p]
""",
    dict(Q=rn(3, 4, 3), K=rn(3, 6, 3), V=rn(3, 6, 2), ln=np.array([6, 0, 3])),
    kp_ref,
)


# 13 ?? defaults with absent max
def dflt_ref(X):
    I, J = X.shape
    keep = np.arange(J)[None] < np.arange(I)[:, None]
    mx = np.where(keep, X, -np.inf).max(1)
    safe = np.where(keep.any(1), mx, -1.0)
    mn = np.where(keep, X, np.inf).min(1)
    nxt = np.concatenate([X[1:], np.full((1, J), np.nan)], 0)
    y = np.where(np.isnan(nxt), X * 2, nxt + X)
    return safe, np.where(keep.any(1), mn, 0.0), y


case(
    "defaults_qq",
    """
input  X[i, j]
output SAFE, MN, Y
KEEP[i, j] = X[i, j] where j < i
MX[i]      = KEEP[i, j] :: max(j)
SAFE[i]    = MX[i] ?? -1
MN[i]      = KEEP[i, j] :: min(j)
Y[i, j]    = X[i + 1, j] + X[i, j] ?? X[i, j] * 2
""",
    dict(X=rn(4, 5)),
    dflt_ref,
)


# 14 reductions: sum then max over several ranks, min, +()
def red_ref(X):
    return (X.sum(1).max(1), X.min(axis=(1, 2)), X.sum(axis=(1, 2)), X.sum(2).min(1), X.sum())


case(
    "reductions_mix",
    """
input  X[i, j, k]
output A, B, C, D, T
A[i] = X[i, j, k] :: max(k)
B[i] = X[i, j, k] :: min(j, k)
C[i] = X[i, j, k] :: +(j, k)
D[i] = X[i, j, k] :: min(j)
T    = X[i, j, k]
""",
    dict(X=rn(3, 4, 2)),
    red_ref,
)


# 15 all functions
def fn_ref(X):
    sp = np.logaddexp(0, X)
    sig = 1 / (1 + np.exp(-X))
    elu = np.where(X > 0, X, np.expm1(np.minimum(X, 0)))
    ax = np.abs(X)
    return (
        np.exp(X / 10) + np.exp2(X / 10),
        np.log(1 + ax) + np.log2(2 + ax),
        np.sqrt(ax) + 1 / np.sqrt(1 + ax),
        np.tanh(X),
        sig,
        np.maximum(X, 0),
        elu,
        sp,
        np.square(X),
        np.maximum(X, -1),
        np.minimum(X, 1),
        np.clip(X, -2, 3.5),
    )


case(
    "all_functions",
    """
input  X[i, j]
output E1, L1, R1, TH, SG, RL, EL, SP, SQ, MX, MN, CL
E1[i, j] = exp(X[i, j] / 10) + exp2(X[i, j] / 10)
L1[i, j] = log(1 + abs(X[i, j])) + log2(2 + abs(X[i, j]))
R1[i, j] = sqrt(abs(X[i, j])) + rsqrt(1 + abs(X[i, j]))
TH[i, j] = tanh(X[i, j])
SG[i, j] = sigmoid(X[i, j])
RL[i, j] = relu(X[i, j])
EL[i, j] = elu(X[i, j])
SP[i, j] = softplus(X[i, j])
SQ[i, j] = square(X[i, j])
MX[i, j] = max(X[i, j], -1)
MN[i, j] = min(X[i, j], 1)
CL[i, j] = clamp(X[i, j], -2, 3.5)
""",
    dict(
        X=np.concatenate(
            [
                rn(2, 5, scale=3),
                np.array([[-60.0, -30.0, 1e-9, 30.0, 60.0], [-5e-5, 5e-5, 0.0, -700.0, 700.0]]),
            ]
        )
    ),
    fn_ref,
)


# 16 functions in indices (edge padding, reflect via abs, min/max)
def idxfn_ref(X):
    I = len(X)
    J = I + 4
    j = np.arange(J)
    pad = X[np.clip(j - 2, 0, I - 1)]
    refl_idx = np.abs(j - 2)
    refl = np.where(refl_idx < I, X[np.minimum(refl_idx, I - 1)], 0.0)
    mx = X[np.minimum(j, I - 1)] + X[np.maximum(j - 4, 0)]
    return pad, refl, mx


case(
    "index_functions",
    """
input  X[i]
param  J = 9
output PAD, REFL, MM
PAD[j]  = X[clamp(j - 2, 0, I - 1)]
REFL[j] = X[abs(j - 2)]
MM[j]   = X[min(j, I - 1)] + X[max(j - 4, 0)]
""",
    dict(X=rn(5)),
    idxfn_ref,
)

# 17 scalar input temperature + float param
case(
    "scalar_temp_param",
    """
input  Q[p, e], K[m, e], V[m, f], temp
param  ALPHA = 0.5
output O
S[p, m] = Q[p, e] * K[m, e] / temp + ALPHA * (p - m)
G[p]    = S[p, m] :: max(m)
N[p, m] = exp(S[p, m] - G[p])
D[p]    = N[p, m]
O[p, f] = N[p, m] * V[m, f] / D[p]
""",
    dict(Q=rn(4, 3), K=rn(6, 3), V=rn(6, 2), temp=np.array(1.7)),
    lambda Q, K, V, temp: att(
        Q, K, V, scale=1 / 1.7, bias=3 * 0.5 * (np.arange(4)[:, None] - np.arange(6)[None])
    ),
)

case(
    "scalar_temp_param_override",
    CASES[-1]["spec"],
    CASES[-1]["inputs"],
    lambda Q, K, V, temp: att(
        Q, K, V, scale=1 / 1.7, bias=3 * -1.25 * (np.arange(4)[:, None] - np.arange(6)[None])
    ),
    params={"ALPHA": -1.25},
)


# 18 ALiBi causal with slope input
def alibi_ref(Q, K, V, slope):
    P, M = Q.shape[2], K.shape[2]
    bias = slope[:, None, None] * (np.arange(M)[None, None] - np.arange(P)[None, :, None])
    return att(Q, K, V, mask=causal(P, M), bias=bias[None])


case(
    "alibi_causal",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], slope[h]
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
S[b, h, m, p]  = QK[b, h, m, p] + slope[h] * (m - p)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
""",
    dict(Q=rn(1, 3, 7, 4), K=rn(1, 3, 7, 4), V=rn(1, 3, 7, 3), slope=np.array([0.5, 0.25, 0.125])),
    alibi_ref,
)


# 19 softcap causal
def softcap_ref(Q, K, V):
    s = np.einsum("bhpe,bhme->bhpm", Q, K) / np.sqrt(Q.shape[-1])
    s = 2.0 * np.tanh(s / 2.0)
    return np.einsum("bhpm,bhmf->bhpf", softmax(s, causal(Q.shape[2], K.shape[2])), V)


case(
    "softcap_causal",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  C = 2.0
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
S[b, h, m, p]  = C * tanh(QK[b, h, m, p] / C)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
""",
    dict(Q=rn(2, 2, 5, 3, scale=2), K=rn(2, 2, 5, 3, scale=2), V=rn(2, 2, 5, 2)),
    softcap_ref,
)


# 20 sigmoid attention, causal, scalar bias
def sig_ref(Q, K, V, bias):
    s = np.einsum("bhpe,bhme->bhpm", Q, K) / np.sqrt(Q.shape[-1]) + bias
    a = 1 / (1 + np.exp(-s)) * causal(Q.shape[2], K.shape[2])
    return np.einsum("bhpm,bhmf->bhpf", a, V)


case(
    "sigmoid_causal",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], bias
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
A[b, h, m, p]  = sigmoid(QK[b, h, m, p] + bias)
AV[b, h, p, f] = A[b, h, m, p] * V[b, h, m, f]
""",
    dict(Q=rn(1, 2, 5, 3), K=rn(1, 2, 6, 3), V=rn(1, 2, 6, 2), bias=-1.5),
    sig_ref,
)


# 21 linear attention recurrence with batch/head
def linrec_ref(Q, K, V):
    fq = np.where(Q > 0, Q, np.expm1(np.minimum(Q, 0))) + 1
    fk = np.where(K > 0, K, np.expm1(np.minimum(K, 0))) + 1
    w = np.einsum("bhte,bhse->bhts", fq, fk) * np.tril(np.ones((Q.shape[2],) * 2))
    return np.einsum("bhts,bhsf->bhtf", w, V) / w.sum(-1)[..., None]


case(
    "linear_recurrent",
    """
input  Q[b, h, t, e], K[b, h, t, e], V[b, h, t, f]
output O
FQ[b, h, t, e]    = elu(Q[b, h, t, e]) + 1
FK[b, h, t, e]    = elu(K[b, h, t, e]) + 1
ST[b, h, 0, e, f] = 0
Z[b, h, 0, e]     = 0
ST[b, h, t + 1, e, f] = ST[b, h, t, e, f] + FK[b, h, t, e] * V[b, h, t, f]
Z[b, h, t + 1, e]     = Z[b, h, t, e] + FK[b, h, t, e]
NUM[b, h, t, f]   = FQ[b, h, t, e] * ST[b, h, t + 1, e, f]
DEN[b, h, t]      = FQ[b, h, t, e] * Z[b, h, t + 1, e]
O[b, h, t, f]     = NUM[b, h, t, f] / DEN[b, h, t]
""",
    dict(Q=rn(2, 1, 5, 3), K=rn(2, 1, 5, 3), V=rn(2, 1, 5, 2)),
    linrec_ref,
)


# 22 retention-style decay recurrence with float param and state as output
def ret_ref(Q, K, V):
    T = Q.shape[0]
    S = np.zeros((K.shape[1], V.shape[1]))
    states = [S]
    outs = []
    for t in range(T):
        S = 0.9 * S + np.outer(K[t], V[t])
        states.append(S)
        outs.append(Q[t] @ S)
    return np.array(outs), np.array(states).transpose(1, 0, 2)


case(
    "retention_decay_states",
    """
input  Q[t, e], K[t, e], V[t, f]
param  LAM = 0.9
output O, ST
ST[e, 0, f]     = 0
ST[e, t + 1, f] = LAM * ST[e, t, f] + K[t, e] * V[t, f]
O[t, f]         = Q[t, e] * ST[e, t + 1, f]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2)),
    ret_ref,
)


# 23 decay as quadratic form with coordinate exponent
def decay_ref(Q, K, V, lam):
    P = Q.shape[1]
    d = np.arange(P)[:, None] - np.arange(P)[None]
    w = np.einsum("hpe,hme->hpm", Q, K) * np.where(d >= 0, lam[:, None, None] ** np.maximum(d, 0), 0)
    return np.einsum("hpm,hmf->hpf", w, V)


case(
    "retention_quadratic",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], lam[h]
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e]  where m <= p
O[h, p, f]  = QK[h, m, p] * exp(log(lam[h]) * (p - m)) * V[h, m, f]
""",
    dict(Q=rn(2, 6, 3), K=rn(2, 6, 3), V=rn(2, 6, 2), lam=np.array([0.9, 0.5])),
    decay_ref,
)


# 24 GQA with different layout and R=3
def gqa_ref(Q, K, V):
    Kr = np.repeat(K.transpose(0, 2, 1, 3), 3, axis=1)
    Vr = np.repeat(V.transpose(0, 2, 1, 3), 3, axis=1)
    return att(Q, Kr, Vr, mask=causal(Q.shape[2], K.shape[1]))


case(
    "gqa_R3_layout",
    """
input  Q[b, h, p, e], K[b, m, g, e], V[b, m, g, f]
param  R = 3
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, m, h // R, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, m, h // R, f] / DEN[b, h, p]
""",
    dict(Q=rn(1, 6, 5, 4), K=rn(1, 5, 2, 4), V=rn(1, 5, 2, 3)),
    gqa_ref,
)


# 25 GQA with interleaved group mapping h % G
def gqa_mod_ref(Q, K, V):
    G = K.shape[1]
    H = Q.shape[1]
    idx = np.arange(H) % G
    return att(Q, K[:, idx], V[:, idx])


case(
    "gqa_mod_groups",
    """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h % G, m, e] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h % G, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(2, 4, 3, 3), K=rn(2, 2, 5, 3), V=rn(2, 2, 5, 2)),
    gqa_mod_ref,
)

# 26 MQA
case(
    "mqa",
    """
input  Q[b, h, p, e], K[b, m, e], V[b, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, m, e] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(2, 3, 4, 3), K=rn(2, 5, 3), V=rn(2, 5, 2)),
    lambda Q, K, V: att(Q, K[:, None], V[:, None]),
)


# 27 agent attention
def agent_ref(Q, K, V, N=3):
    B, H, P, E = Q.shape
    AG = np.zeros((B, H, N, E))
    for n in range(N):
        lo = (n * P) // N
        hi = -((-(n + 1) * P) // N)
        AG[:, :, n] = Q[:, :, lo:hi].mean(2)
    AV = att(AG, K, V)
    return att(Q, AG, AV)


case(
    "agent",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  N = 3
output O
CNT[n]         = 1  where n * P // N <= p and p < ((n + 1) * P + N - 1) // N
AG[b, h, n, e] = Q[b, h, p, e] / CNT[n]  where n * P // N <= p and p < ((n + 1) * P + N - 1) // N
S1[b, h, n, m] = AG[b, h, n, e] * K[b, h, m, e] * rsqrt(E)
G1[b, h, n]    = S1[b, h, n, m] :: max(m)
X1[b, h, n, m] = exp(S1[b, h, n, m] - G1[b, h, n])
D1[b, h, n]    = X1[b, h, n, m]
AV[b, h, n, f] = X1[b, h, n, m] * V[b, h, m, f] / D1[b, h, n]
S2[b, h, p, n] = Q[b, h, p, e] * AG[b, h, n, e] * rsqrt(E)
G2[b, h, p]    = S2[b, h, p, n] :: max(n)
X2[b, h, p, n] = exp(S2[b, h, p, n] - G2[b, h, p])
D2[b, h, p]    = X2[b, h, p, n]
O[b, h, p, f]  = X2[b, h, p, n] * AV[b, h, n, f] / D2[b, h, p]
""",
    dict(Q=rn(1, 2, 7, 3), K=rn(1, 2, 5, 3), V=rn(1, 2, 5, 2)),
    agent_ref,
)


# 28 mixture of heads
def moh_ref(Q, K, V, g, Wo):
    av = att(Q, K, V)
    return np.einsum("bph,bhpf,hfd->bpd", g, av, Wo)


case(
    "moh",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], g[b, p, h], Wo[h, f, d]
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
O[b, p, d]     = g[b, p, h] * AV[b, h, p, f] * Wo[h, f, d]
""",
    dict(Q=rn(1, 3, 4, 3), K=rn(1, 3, 5, 3), V=rn(1, 3, 5, 2), g=rn(1, 4, 3), Wo=rn(3, 2, 4)),
    moh_ref,
)


# 29 attention sink causal
def sink_ref(Q, K, V, sink):
    s = np.einsum("bhpe,bhme->bhpm", Q, K) / np.sqrt(Q.shape[-1])
    P, M = s.shape[-2:]
    s = np.where(causal(P, M), s, -np.inf)
    full = np.concatenate([s, np.broadcast_to(sink[None, :, None, None], s.shape[:-1] + (1,))], -1)
    mx = full.max(-1, keepdims=True)
    ex = np.exp(full - mx)
    a = ex / ex.sum(-1, keepdims=True)
    return np.einsum("bhpm,bhmf->bhpf", a[..., :-1], V)


case(
    "attention_sink",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], sink[h]
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
MK[b, h, p]    = QK[b, h, m, p] :: max(m)
GM[b, h, p]    = max(MK[b, h, p], sink[h])
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SK[b, h, p]    = SN[b, h, m, p]
SD[b, h, p]    = SK[b, h, p] + exp(sink[h] - GM[b, h, p])
O[b, h, p, f]  = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
""",
    dict(Q=rn(1, 2, 5, 3), K=rn(1, 2, 5, 3), V=rn(1, 2, 5, 2), sink=np.array([0.3, 2.0])),
    sink_ref,
)


# 30 sink with strict causal: row 0 has only the sink -> O = 0 via ?? defaults
def sink2_ref(Q, K, V, sink):
    s = np.einsum("pe,me->pm", Q, K)
    P, M = s.shape
    mask = np.arange(M)[None] < np.arange(P)[:, None]
    s = np.where(mask, s, -np.inf)
    full = np.concatenate([s, np.full((P, 1), sink[()])], -1)
    mx = full.max(-1, keepdims=True)
    ex = np.exp(full - mx)
    a = ex / ex.sum(-1, keepdims=True)
    return a[:, :-1] @ V


case(
    "sink_strict_defaults",
    """
input  Q[p, e], K[m, e], V[m, f], sink
output O
QK[m, p] = Q[p, e] * K[m, e]  where m < p
GM[p]    = max(QK[m, p] :: max(m) ?? sink, sink)
""".replace(
        "GM[p]    = max(QK[m, p] :: max(m) ?? sink, sink)",
        """MK[p]    = QK[m, p] :: max(m)
GM[p]    = max(MK[p] ?? sink, sink)
SN[m, p] = exp(QK[m, p] - GM[p])
SK[p]    = SN[m, p]
SD[p]    = (SK[p] ?? 0) + exp(sink - GM[p])
NV[p, f] = SN[m, p] * V[m, f]
O[p, f]  = (NV[p, f] ?? 0) / SD[p]""",
    ),
    dict(Q=rn(5, 3), K=rn(5, 3), V=rn(5, 2), sink=np.array(0.7)),
    sink2_ref,
)

# 31 split-K decode, M1 param, ragged; and M1 > M (empty chunks)
SPLITK = """
input  q[b, h, e], K[b, h, m, e], V[b, h, m, f]
param  M1 = 3
rank   M = M1 * M0
output O, L
S[b, h, m1, m0]  = q[b, h, e] * K[b, h, m1 * M0 + m0, e] * rsqrt(E)
LM[b, h, m1]     = S[b, h, m1, m0] :: max(m0)
LX[b, h, m1, m0] = exp(S[b, h, m1, m0] - LM[b, h, m1])
LD[b, h, m1]     = LX[b, h, m1, m0]
LN[b, h, m1, f]  = LX[b, h, m1, m0] * V[b, h, m1 * M0 + m0, f]
GM[b, h]     = LM[b, h, m1] :: max(m1)
CF[b, h, m1] = exp(LM[b, h, m1] - GM[b, h])
GD[b, h]     = LD[b, h, m1] * CF[b, h, m1]
GN[b, h, f]  = LN[b, h, m1, f] * CF[b, h, m1]
O[b, h, f]   = GN[b, h, f] / GD[b, h]
L[b, h]      = GM[b, h] + log(GD[b, h])
"""


def splitk_ref(q, K, V):
    s = np.einsum("bhe,bhme->bhm", q, K) / np.sqrt(q.shape[-1])
    mx = s.max(-1)
    a = np.exp(s - mx[..., None])
    return np.einsum("bhm,bhmf->bhf", a, V) / a.sum(-1)[..., None], mx + np.log(a.sum(-1))


case("splitk_ragged", SPLITK, dict(q=rn(2, 2, 3), K=rn(2, 2, 10, 3), V=rn(2, 2, 10, 2)), splitk_ref)
case(
    "splitk_empty_chunks",
    SPLITK,
    dict(q=rn(1, 2, 3), K=rn(1, 2, 5, 3), V=rn(1, 2, 5, 2)),
    splitk_ref,
    params={"M1": 4},
)
# M=5, M1=4 -> M0=2, chunks: [0,1],[2,3],[4,(5)],[(6),(7)] -> last chunk empty


# 32 LSE with causal mask where row fully masked
def lse_ref(Q, K, V):
    s = Q @ K.T
    P, M = s.shape
    mask = np.arange(M)[None] + 1 < np.arange(P)[:, None]
    o = att(Q, K, V, scale=1.0, mask=mask)
    sm = np.where(mask, s, -np.inf)
    mx = sm.max(-1)
    lse = np.where(
        mask.any(-1), mx + np.log(np.exp(sm - np.where(np.isfinite(mx), mx, 0)[:, None]).sum(-1)), 0.0
    )
    return o, lse


case(
    "lse_masked",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, L
S[m, p]  = Q[p, e] * K[m, e]  where m + 1 < p
GM[p]    = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - GM[p])
D[p]     = N[m, p]
O[p, f]  = N[m, p] * V[m, f] / D[p]
L[p]     = GM[p] + log(D[p])
""",
    dict(Q=rn(6, 3, scale=2), K=rn(6, 3, scale=2), V=rn(6, 2)),
    lse_ref,
)


# 33 intermediates as outputs, multiple outputs in odd order
def inter_ref(Q, K, V):
    s = np.einsum("pe,me->mp", Q, K)
    gm = s.max(0)
    n = np.exp(s - gm)
    d = n.sum(0)
    return d, (n / d) @ V if False else (n.T / d[:, None]) @ V, gm


case(
    "intermediate_outputs",
    """
input  Q[p, e], K[m, e], V[m, f]
output D, O, GM
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - GM[p])
D[p]     = N[m, p]
O[p, f]  = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(4, 3), K=rn(6, 3), V=rn(6, 2)),
    inter_ref,
)


# 34 paged KV cache gather attention
def paged_ref(q, KC, VC, table, ln):
    B = q.shape[0]
    S = KC.shape[1]
    M = 6
    out = []
    for b in range(B):
        ks = np.array([KC[table[b, m // S], m % S] for m in range(M)])
        vs = np.array([VC[table[b, m // S], m % S] for m in range(M)])
        mask = np.arange(M) < ln[b]
        out.append(att(q[b][None], ks, vs, mask=mask[None])[0])
    return np.array(out)


case(
    "paged_kv",
    """
input  q[b, e], KC[n, s, e], VC[n, s, f], table[b, j] : int, ln[b] : int
param  M = 6
output O
SC[b, m] = q[b, e] * KC[table[b, m // S], m % S, e] * rsqrt(E)  where m < ln[b]
GM[b]    = SC[b, m] :: max(m)
N[b, m]  = exp(SC[b, m] - GM[b])
D[b]     = N[b, m]
O[b, f]  = N[b, m] * VC[table[b, m // S], m % S, f] / D[b]
""",
    dict(
        q=rn(2, 3),
        KC=rn(4, 2, 3),
        VC=rn(4, 2, 2),
        table=np.array([[3, 0, 1], [2, 2, 0]]),
        ln=np.array([5, 6]),
    ),
    paged_ref,
)


# 35 relative position bias per head
def relbias_ref(Q, K, V, bias):
    H, P, E = Q.shape
    M = K.shape[1]
    idx = np.arange(P)[:, None] - np.arange(M)[None] + M - 1
    return att(Q, K, V, bias=bias[:, idx])


case(
    "relpos_bias",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], bias[h, r]
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, m, p] = QK[h, m, p] + bias[h, p - m + M - 1]
G[h, p]    = S[h, m, p] :: max(m)
N[h, m, p] = exp(S[h, m, p] - G[h, p])
D[h, p]    = N[h, m, p]
O[h, p, f] = N[h, m, p] * V[h, m, f] / D[h, p]
""",
    dict(Q=rn(2, 4, 3), K=rn(2, 5, 3), V=rn(2, 5, 2), bias=rn(2, 8)),
    relbias_ref,
)


# 36 document mask (different docs for q and k) + causal
def doc_ref(Q, K, V, doc):
    mask = (doc[:, :, None] == doc[:, None, :]) & causal(Q.shape[2], K.shape[2])[None]
    return att(Q, K, V, mask=mask[:, None])


case(
    "doc_mask_bh",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], doc[b, m] : int
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where doc[b, p] == doc[b, m] and m <= p
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
O[b, h, p, f]  = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
""",
    dict(
        Q=rn(2, 2, 7, 3),
        K=rn(2, 2, 7, 3),
        V=rn(2, 2, 7, 2),
        doc=np.array([[0, 0, 1, 1, 1, 2, 2], [0, 1, 1, 1, 1, 1, 3]]),
    ),
    doc_ref,
)

# 37 size-1 everything
case(
    "size_one",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(1, 1, 1, 1), K=rn(1, 1, 1, 1), V=rn(1, 1, 1, 1)),
    lambda Q, K, V: V.copy(),
)


# 38 iterative rank in middle position, param step count, output all states
def iter_ref(x, w):
    N = 4
    R = [x]
    for n in range(N):
        R.append(R[-1] * w[n % len(w)] + 1)
    return np.stack(R, 1), R[-1]


case(
    "iterative_middle_param",
    """
input  x[i], w[k]
param  N = 4
output R, F
R[i, 0]     = x[i]
R[i, n + 1] = R[i, n] * w[n % K] + 1
F[i]        = R[i, N]
""",
    dict(x=rn(3), w=rn(3)),
    iter_ref,
)


# 39 prefix scan attention with batch and ragged t, final state read
def scan_ref(q, K, V):
    B, T, E = K.shape
    outs = np.zeros((B, T, V.shape[2]))
    lse = np.zeros(B)
    for b in range(B):
        s = K[b] @ q[b]
        for t in range(T):
            w = np.exp(s[: t + 1] - s[: t + 1].max())
            outs[b, t] = w @ V[b, : t + 1] / w.sum()
        lse[b] = s.max() + np.log(np.exp(s - s.max()).sum())
    return outs, lse


case(
    "scan_batch_lse",
    """
input  q[b, e], K[b, t, e], V[b, t, f]
output O, L
S[b, t]         = q[b, e] * K[b, t, e]
RM[b, 0]        = -inf
RD[b, 0]        = 0
RN[b, 0, f]     = 0
RM[b, t + 1]    = max(RM[b, t], S[b, t])
RD[b, t + 1]    = RD[b, t] * exp(RM[b, t] - RM[b, t + 1]) + exp(S[b, t] - RM[b, t + 1])
RN[b, t + 1, f] = RN[b, t, f] * exp(RM[b, t] - RM[b, t + 1]) + exp(S[b, t] - RM[b, t + 1]) * V[b, t, f]
O[b, t, f]      = RN[b, t + 1, f] / RD[b, t + 1]
L[b]            = RM[b, T] + log(RD[b, T])
""",
    dict(q=rn(2, 3), K=rn(2, 5, 3), V=rn(2, 5, 2)),
    scan_ref,
)


# 40 column softmax (softmax over p) and min-reduction "attention"
def colsm_ref(Q, K, V):
    s = Q @ K.T  # p, m
    a = softmax(s, axis=0)
    mn = s.min(1)
    return np.einsum("pm,pf->mf", a, V), mn


case(
    "column_softmax_min",
    """
input  Q[p, e], K[m, e], V[p, f]
output O, MN
S[p, m] = Q[p, e] * K[m, e]
G[m]    = S[p, m] :: max(p)
N[p, m] = exp(S[p, m] - G[m])
D[m]    = N[p, m]
O[m, f] = N[p, m] * V[p, f] / D[m]
MN[p]   = S[p, m] :: min(m)
""",
    dict(Q=rn(5, 3), K=rn(4, 3), V=rn(5, 2)),
    colsm_ref,
)


# 41 size as value: mean pooling, and M in expression
def sizeval_ref(X):
    J = X.shape[1]
    mean = X.mean(1)
    return mean, X - mean[:, None] * J / (J + 1.0)


case(
    "sizes_as_values",
    """
input  X[i, j]
output MEAN, C
MEAN[i]  = X[i, j] / J
C[i, j]  = X[i, j] - MEAN[i] * J / (J + 1.0)
""",
    dict(X=rn(3, 5)),
    sizeval_ref,
)


# 42 convolution with clamp + gather of int permutation
def convperm_ref(X, w, perm):
    P = X.shape[0]
    Y = np.zeros_like(X)
    for p in range(P):
        for k in range(3):
            i = min(max(p + k - 1, 0), P - 1)
            Y[p] += w[k] * X[i]
    Z = np.array([X[j] if 0 <= j < P else np.zeros(X.shape[1]) for j in perm])
    return Y, Z


case(
    "conv_clamp_gather",
    """
input  X[p, e], w[k], perm[j] : int
output Y, Z
Y[p, e] = w[k] * X[clamp(p + k - 1, 0, P - 1), e]
Z[j, e] = X[perm[j], e]
""",
    dict(X=rn(5, 2), w=rn(3), perm=np.array([4, -1, 0, 5, 2])),
    convperm_ref,
)

# 43 hand-written causal 1-pass with ?? guards, ragged, b/h
case(
    "causal_1pass_ragged",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  M0 = 3
rank   M = M1 * M0
output AV
BK[b, h, m1, m0, e] = K[b, h, m1 * M0 + m0, e]
BV[b, h, m1, m0, f] = V[b, h, m1 * M0 + m0, f]
RM[b, h, 0, p]      = -inf
RD[b, h, 0, p]      = 0
RNV[b, h, f, 0, p]  = 0
BQK[b, h, m1, m0, p] = Q[b, h, p, e] * BK[b, h, m1, m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p
LM[b, h, m1, p]         = BQK[b, h, m1, m0, p] :: max(m0)
RM[b, h, m1 + 1, p]     = max(RM[b, h, m1, p], LM[b, h, m1, p] ?? -inf)
SLN[b, h, m1, m0, p]    = exp(BQK[b, h, m1, m0, p] - RM[b, h, m1 + 1, p])
SLD[b, h, m1, p]        = SLN[b, h, m1, m0, p]
SLNV[b, h, f, m1, p]    = SLN[b, h, m1, m0, p] * BV[b, h, m1, m0, f]
PRM[b, h, m1, p]        = exp(RM[b, h, m1, p] - RM[b, h, m1 + 1, p])
RD[b, h, m1 + 1, p]     = (SLD[b, h, m1, p] ?? 0) + RD[b, h, m1, p] * PRM[b, h, m1, p]
RNV[b, h, f, m1 + 1, p] = (SLNV[b, h, f, m1, p] ?? 0) + RNV[b, h, f, m1, p] * PRM[b, h, m1, p]
AV[b, h, p, f] = RNV[b, h, f, M1, p] / RD[b, h, M1, p]
""",
    dict(Q=rn(1, 2, 8, 3), K=rn(1, 2, 8, 3), V=rn(1, 2, 8, 2)),
    lambda Q, K, V: att(Q, K, V, mask=causal(8, 8)),
)


# 44 deferred-normalisation with float data-dependent bias tensor and chained comparisons
def chain_ref(Q, K, V, B):
    P, M = Q.shape[0], K.shape[0]
    d = np.arange(P)[:, None] - np.arange(M)[None]
    mask = (0 <= d) & (d < 3)
    return att(Q, K, V, bias=B, mask=mask)


case(
    "chained_bias_matrix",
    """
input  Q[p, e], K[m, e], V[m, f], B[p, m]
output O
QK[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where 0 <= p - m < 3
S[m, p]  = QK[m, p] + B[p, m]
G[p]     = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - G[p])
NV[p, f] = N[m, p] * V[m, f]
D[p]     = N[m, p]
O[p, f]  = NV[p, f] / D[p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2), B=rn(6, 6)),
    chain_ref,
)


# 45 scalar output, sum of everything with filter
def scal_ref(X):
    I, J = X.shape
    return np.sum(np.where(np.arange(J)[None] >= np.arange(I)[:, None], X, 0)), X.max()


case(
    "scalar_outputs",
    """
input  X[i, j]
output T, MX
T  = X[i, j] where j >= i
MX = X[i, j] :: max(i, j)
""",
    dict(X=rn(4, 3)),
    scal_ref,
)


# 46 tanh-gelu-like and softplus in attention (relu attention normalised by M)
def relu_att_ref(Q, K, V):
    s = Q @ K.T / np.sqrt(Q.shape[1])
    a = np.maximum(s, 0) ** 2 / K.shape[0] + np.logaddexp(0, s) * 0.1
    return a @ V


case(
    "relu2_softplus_att",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m] = Q[p, e] * K[m, e] * rsqrt(E)
A[p, m] = square(relu(S[p, m])) / M + softplus(S[p, m]) * 0.1
O[p, f] = A[p, m] * V[m, f]
""",
    dict(Q=rn(4, 3), K=rn(5, 3), V=rn(5, 2)),
    relu_att_ref,
)


# 47 2-stage causal: query in blocks with p // P0 tile-level causal (block-causal mask)
def blockcausal_ref(Q, K, V):
    P = Q.shape[0]
    M = K.shape[0]
    mask = (np.arange(M)[None] // 3) <= (np.arange(P)[:, None] // 3)
    return att(Q, K, V, mask=mask)


case(
    "block_causal_floordiv",
    """
input  Q[p, e], K[m, e], V[m, f]
param  BS = 3
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where m // BS <= p // BS
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2)),
    blockcausal_ref,
)


# 48 != filter with two ranks compared and int tensors on both sides (tree / segment mask with gather)
def seg_ref(Q, K, V, seg):
    mask = seg[:, None] != seg[None, :]
    return att(Q, K, V, mask=mask)


case(
    "neq_segments",
    """
input  Q[p, e], K[m, e], V[m, f], seg[n] : int
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where seg[p] != seg[m]
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(5, 3), K=rn(5, 3), V=rn(5, 2), seg=np.array([0, 0, 1, 1, 1])),
    seg_ref,
)
