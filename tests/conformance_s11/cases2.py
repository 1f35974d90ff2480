# ruff: noqa (spec strings and oracles are data: as the reviewer wrote them)
import numpy as np
from .cases1 import rn, softmax, att, causal, rng

CASES = []


def case(name, spec, inputs, oracle, params=None, skip=()):
    CASES.append(
        dict(
            name=name, spec=spec.strip() + "\n", inputs=inputs, oracle=oracle, params=params or {}, skip=skip
        )
    )


SM = """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
"""
# large scores (stability)
case(
    "large_scores",
    SM,
    dict(Q=rn(4, 3, scale=40), K=rn(9, 3, scale=40), V=rn(9, 2)),
    lambda Q, K, V: att(Q, K, V),
)
# empty key sequence
case(
    "empty_keys",
    SM,
    dict(Q=rn(3, 3), K=np.zeros((0, 3)), V=np.zeros((0, 2))),
    lambda Q, K, V: np.zeros((3, 2)),
)


# float bias with -inf entries (partial rows)
def infbias_ref(Q, K, V, B):
    return att(Q, K, V, bias=B)


B = rn(4, 6)
B[0, 1:] = -np.inf
B[2, ::2] = -np.inf
case(
    "neg_inf_bias",
    """
input  Q[p, e], K[m, e], V[m, f], B[p, m]
output O
QK[m, p] = Q[p, e] * K[m, e] * rsqrt(E)
S[m, p]  = QK[m, p] + B[p, m]
G[p]     = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - G[p])
D[p]     = N[m, p]
O[p, f]  = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(4, 3), K=rn(6, 3), V=rn(6, 2), B=B),
    infbias_ref,
)


# filter applied in a later statement, scale after max, per-query gate after division
def later_ref(Q, K, V, g):
    s = Q @ K.T
    P, M = s.shape
    mask = causal(P, M)
    return att(Q, K, V, scale=0.7, mask=mask) * g[:, None]


case(
    "filter_later_gate",
    """
input  Q[p, e], K[m, e], V[m, f], g[p]
param  SC = 0.7
output O
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] where m <= p
G[p]     = S[m, p] :: max(m)
N[m, p]  = exp((S[m, p] - G[p]) * SC)
D[p]     = N[m, p]
NV[p, f] = N[m, p] * V[m, f]
O[p, f]  = NV[p, f] / D[p] * g[p]
""",
    dict(Q=rn(5, 3), K=rn(5, 3), V=rn(5, 2), g=rn(5)),
    later_ref,
)


# differential attention
def diff_ref(Q1, K1, Q2, K2, V, lam):
    mask = causal(Q1.shape[0], K1.shape[0])
    return att(Q1, K1, V, mask=mask) - lam * att(Q2, K2, V, mask=mask)


case(
    "differential",
    """
input  Q1[p, e], K1[m, e], Q2[p, e], K2[m, e], V[m, f], lam
output O
S1[m, p] = Q1[p, e] * K1[m, e] * rsqrt(E)  where m <= p
S2[m, p] = Q2[p, e] * K2[m, e] * rsqrt(E)  where m <= p
G1[p]    = S1[m, p] :: max(m)
G2[p]    = S2[m, p] :: max(m)
N1[m, p] = exp(S1[m, p] - G1[p])
N2[m, p] = exp(S2[m, p] - G2[p])
D1[p]    = N1[m, p]
D2[p]    = N2[m, p]
A[m, p]  = N1[m, p] / D1[p] - lam * N2[m, p] / D2[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q1=rn(5, 3), K1=rn(5, 3), Q2=rn(5, 3), K2=rn(5, 3), V=rn(5, 2), lam=0.4),
    diff_ref,
)


# cosine attention with learned temperature per head
def cos_ref(Q, K, V, tau):
    qn = Q / np.sqrt((Q**2).sum(-1, keepdims=True))
    kn = K / np.sqrt((K**2).sum(-1, keepdims=True))
    s = np.einsum("hpe,hme->hpm", qn, kn) * tau[:, None, None]
    return np.einsum("hpm,hmf->hpf", softmax(s), V)


case(
    "cosine_attention",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], tau[h]
output O
QN[h, p]    = square(Q[h, p, e])
KN[h, m]    = square(K[h, m, e])
QK[h, m, p] = Q[h, p, e] * K[h, m, e]
S[h, m, p]  = QK[h, m, p] * rsqrt(QN[h, p]) * rsqrt(KN[h, m]) * tau[h]
G[h, p]     = S[h, m, p] :: max(m)
N[h, m, p]  = exp(S[h, m, p] - G[h, p])
D[h, p]     = N[h, m, p]
O[h, p, f]  = N[h, m, p] * V[h, m, f] / D[h, p]
""",
    dict(Q=rn(2, 4, 3), K=rn(2, 5, 3), V=rn(2, 5, 2), tau=np.array([5.0, 10.0])),
    cos_ref,
)


# talking heads: mix logits across heads
def talk_ref(Q, K, V, W):
    s = np.einsum("hpe,hme->hpm", Q, K) / np.sqrt(Q.shape[-1])
    s2 = np.einsum("gh,hpm->gpm", W, s)
    return np.einsum("gpm,gmf->gpf", softmax(s2), V)


case(
    "talking_heads",
    """
input  Q[h, p, e], K[h, m, e], V[g, m, f], W[g, h]
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S2[g, m, p] = W[g, h] * S[h, m, p]
G[g, p]     = S2[g, m, p] :: max(m)
N[g, m, p]  = exp(S2[g, m, p] - G[g, p])
D[g, p]     = N[g, m, p]
O[g, p, f]  = N[g, m, p] * V[g, m, f] / D[g, p]
""",
    dict(Q=rn(3, 4, 3), K=rn(3, 5, 3), V=rn(2, 5, 2), W=rn(2, 3)),
    talk_ref,
)


# sequence-first layout, output [p, b, h, f], causal
def seqfirst_ref(Q, K, V):
    q = Q.transpose(1, 2, 0, 3)
    k = K.transpose(1, 2, 0, 3)
    v = V.transpose(1, 2, 0, 3)
    o = att(q, k, v, mask=causal(Q.shape[0], K.shape[0]))
    return o.transpose(2, 0, 1, 3)


case(
    "seq_first_layout",
    """
input  Q[p, b, h, e], K[m, b, h, e], V[m, b, h, f]
output O
S[b, h, m, p]  = Q[p, b, h, e] * K[m, b, h, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[p, b, h, f]  = EX[b, h, m, p] * V[m, b, h, f] / DEN[b, h, p]
""",
    dict(Q=rn(6, 2, 2, 3), K=rn(6, 2, 2, 3), V=rn(6, 2, 2, 2)),
    seqfirst_ref,
)


# 2D softmax over (m, n) grid
def twod_ref(Q, K, V):
    s = np.einsum("pe,mne->pmn", Q, K)
    P = s.shape[0]
    sf = s.reshape(P, -1)
    a = softmax(sf).reshape(s.shape)
    return np.einsum("pmn,mnf->pf", a, V)


case(
    "softmax_2d",
    """
input  Q[p, e], K[m, n, e], V[m, n, f]
output O
S[p, m, n] = Q[p, e] * K[m, n, e]
G[p]       = S[p, m, n] :: max(m, n)
N[p, m, n] = exp(S[p, m, n] - G[p])
D[p]       = N[p, m, n]
O[p, f]    = N[p, m, n] * V[m, n, f] / D[p]
""",
    dict(Q=rn(3, 2), K=rn(3, 4, 2), V=rn(3, 4, 2)),
    twod_ref,
)


# exp2-based softmax
def exp2_ref(Q, K, V):
    return att(Q, K, V, scale=1.0)


case(
    "exp2_softmax",
    """
input  Q[p, e], K[m, e], V[m, f]
param  LOG2E = 1.4426950408889634
output O
S[m, p] = Q[p, e] * K[m, e] * LOG2E
G[p]    = S[m, p] :: max(m)
N[m, p] = exp2(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(4, 3), K=rn(7, 3), V=rn(7, 2)),
    exp2_ref,
)


# filter on sizes: last W keys only, queries except last
def lastw_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    mask = (np.arange(M)[None] >= M - 3) & (np.arange(P)[:, None] < P - 1)
    return att(Q, K, V, mask=np.broadcast_to(mask, (P, M)))


case(
    "filter_sizes",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where m >= M - 3 and p < P - 1
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(4, 3), K=rn(7, 3), V=rn(7, 2)),
    lastw_ref,
)


# float literal in filter, float param inf in filter
def flt_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    d = np.arange(P)[:, None] - np.arange(M)[None]
    return att(Q, K, V, mask=(d < 2.5) & (d > -1.5))


case(
    "filter_float_literal",
    """
input  Q[p, e], K[m, e], V[m, f]
param  LO = -1.5
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where LO < p - m < 2.5
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2)),
    flt_ref,
)

case(
    "filter_inf_param",
    """
input  Q[p, e], K[m, e], V[m, f]
param  W = inf
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where 0 <= p - m < W
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(5, 3), K=rn(5, 3), V=rn(5, 2)),
    lambda Q, K, V: att(Q, K, V, mask=causal(5, 5)),
)


# nested gathers, gather arithmetic, gather in filter
def gath_ref(X, perm, pos):
    I = len(X)
    J = len(perm)

    def rd(i):
        return X[i] if 0 <= i < I else None

    A = np.zeros(J)
    Bv = np.zeros(J)
    C = np.zeros(J)
    for j in range(J):
        pj = perm[j]
        pp = perm[pj] if 0 <= pj < J else None
        a = rd(pp) if pp is not None else None
        A[j] = a if a is not None else 0.0
        b = rd(2 * perm[j] - 1)
        Bv[j] = b if b is not None else 0.0
    # C[j] = sum_i X[i] where pos[i] <= j
    for j in range(J):
        C[j] = sum(X[i] for i in range(I) if pos[i] <= j)
    return A, Bv, C


case(
    "gathers_nested",
    """
input  X[i], perm[j] : int, pos[i] : int
output A, B, C
A[j] = X[perm[perm[j]]]
B[j] = X[2 * perm[j] - 1]
C[j] = X[i] where pos[i] <= j
""",
    dict(X=rn(5), perm=np.array([1, 2, 0, 4, 3, 5]), pos=np.array([0, 3, 1, 5, 2])),
    gath_ref,
)


# negative modulo/floordiv in filters and indices
def negmod_ref(X):
    I = len(X)
    J = 8
    H = np.array([X[(j - 5) // 3] if 0 <= (j - 5) // 3 < I else 0.0 for j in range(J)])
    M = np.array([sum(X[i] for i in range(I) if (i - j) % 3 == 1) for j in range(J)])
    return H, M


case(
    "negative_floor_mod",
    """
input  X[i]
param  J = 8
output H, M
H[j] = X[(j - 5) // 3]
M[j] = X[i] where (i - j) % 3 == 1
""",
    dict(X=rn(6)),
    negmod_ref,
)


# present-count and union max
def count_ref(X):
    I, J = X.shape
    keep = (np.arange(J)[None] + np.arange(I)[:, None]) % 2 == 0
    cnt = keep.sum(1).astype(float)
    nxt = np.concatenate([X[:, 1:], np.full((I, 1), np.nan)], 1)
    un = np.where(np.isnan(nxt), X, np.maximum(X, nxt))
    return cnt, un


case(
    "count_union",
    """
input  X[i, j]
output CNT, UN
KEEP[i, j] = X[i, j] where (i + j) % 2 == 0
ONE[i, j]  = KEEP[i, j] * 0 + 1
CNT[i]     = ONE[i, j]
UN[i, j]   = max(X[i, j + 1] ?? X[i, j], X[i, j] ?? X[i, j + 1])
""",
    dict(X=rn(3, 4)),
    count_union := count_ref,
)


# rank S = T quadratic form (SSM dual)
def dual_ref(X, A, Bm, C):
    T = len(A)
    cs = np.concatenate([[0], np.cumsum(np.log(A))])
    Y = np.zeros((T, X.shape[1]))
    for t in range(T):
        for s in range(t + 1):
            Y[t] += (C[t] @ Bm[s]) * np.exp(cs[t + 1] - cs[s + 1]) * X[s]
    return Y


case(
    "ssm_dual_rankeq",
    """
input  X[s, d], A[t], Bm[s, n], C[t, n]
rank   S = T
output Y
LA[t]    = log(A[t])
CS[0]    = 0
CS[t + 1] = CS[t] + LA[t]
W[t, s]  = C[t, n] * Bm[s, n]  where s <= t
Y[t, d]  = W[t, s] * exp(CS[t + 1] - CS[s + 1]) * X[s, d]
""",
    dict(X=rn(5, 2), A=rng.uniform(0.5, 1.0, 5), Bm=rn(5, 3), C=rn(5, 3)),
    dual_ref,
)


# iterative states read with constants and summed
def iterread_ref(x):
    T = len(x)
    R = np.concatenate([[0], np.cumsum(x)])
    return R[2], R[:T].sum(), R


case(
    "iter_state_reads",
    """
input  x[t]
output R2, SUMS, R
R[0]     = 0
R[t + 1] = R[t] + x[t]
R2       = R[2]
SUMS     = R[t]
""",
    dict(x=rn(5)),
    lambda x: iterread_ref(x),
    skip=(),
)


# lightning block (recurrence over a partition, ragged)
def light_ref(Q, K, V, lam):
    P = Q.shape[2]
    d = np.arange(P)[:, None] - np.arange(P)[None]
    dec = np.where(d >= 0, lam[None, :, None, None] ** np.maximum(d, 0)[None, None], 0)
    w = np.einsum("bhpe,bhme->bhpm", Q, K) * dec
    return np.einsum("bhpm,bhmf->bhpf", w, V)


case(
    "lightning_block_ragged",
    open("/work/main/examples/variants/07_lightning_block.ein")
    .read()
    .replace("param  M0 = 4", "param  M0 = 3"),
    dict(Q=rn(1, 2, 7, 3), K=rn(1, 2, 7, 3), V=rn(1, 2, 7, 2), lam=np.array([0.9, 0.6])),
    light_ref,
)


# two recurrences over the same rank plus out-of-loop tensor
def tworec_ref(x, y):
    T = len(x)
    a = [0.0]
    b = [1.0]
    for t in range(T):
        a.append(a[-1] + x[t] * b[-1])
        b.append(b[-1] * y[t])
    return np.array(a), np.array(b)


case(
    "two_recurrences",
    """
input  x[t], y[t]
output RA, RB
RA[0]     = 0
RB[0]     = 1
RA[t + 1] = RA[t] + x[t] * RB[t]
RB[t + 1] = RB[t] * y[t]
""",
    dict(x=rn(4), y=rn(4)),
    tworec_ref,
)


# query-tiled partition (p split) non-iterative
def qtile_ref(Q, K, V):
    return att(Q, K, V)


case(
    "query_partition",
    """
input  Q[p, e], K[m, e], V[m, f]
param  P0 = 3
rank   P = P1 * P0
output O
S[p1, p0, m] = Q[p1 * P0 + p0, e] * K[m, e] * rsqrt(E)
G[p1, p0]    = S[p1, p0, m] :: max(m)
N[p1, p0, m] = exp(S[p1, p0, m] - G[p1, p0])
D[p1, p0]    = N[p1, p0, m]
OT[p1, p0, f] = N[p1, p0, m] * V[m, f] / D[p1, p0]
O[p, f]      = OT[p // P0, p % P0, f]
""",
    dict(Q=rn(7, 3), K=rn(5, 3), V=rn(5, 2)),
    qtile_ref,
)

# M0 = 1 override on cascade5
from . import cases1 as C1

C5 = [c for c in C1.CASES if c["name"] == "c5_bh_ragged"][0]["spec"]
case(
    "c5_M0_1",
    C5,
    dict(Q=rn(1, 1, 3, 2), K=rn(1, 1, 4, 2), V=rn(1, 1, 4, 2)),
    lambda Q, K, V: att(Q, K, V),
    params={"M0": 1},
)


# reduction + filter in one statement; rank only in filter
def redfilt_ref(X, Kk):
    I, J = X.shape
    mask = np.arange(J)[None] <= np.arange(I)[:, None]
    gm = np.where(mask, X, -np.inf).max(1)
    cnt = np.array([(np.arange(Kk.shape[0]) <= i).sum() for i in range(I)], float)
    return gm, cnt


case(
    "reduce_with_filter",
    """
input  X[i, j], Kk[m]
output GM, CNT
GM[i]  = X[i, j] :: max(j) where j <= i
CNT[i] = 1 where m <= i
""",
    dict(X=rn(4, 4), Kk=rn(3)),
    redfilt_ref,
)

# int tensor used as a value (may be rejected)
case(
    "int_as_value",
    """
input  X[i], c[i] : int
output Y
Y[i] = X[i] * c[i]
""",
    dict(X=rn(4), c=np.array([1, 2, 3, -1])),
    lambda X, c: X * c,
)

# unary plus, odd literals, continuation, comments
case(
    "lexical_oddities",
    """
input  X[i]   # comment
output Y
Y[i] = +X[i] * .5 + 2. * 1e-1 - \\
       -X[i] * 1.5E0 ?? 0
""",
    dict(X=rn(4)),
    lambda X: X * 0.5 + 0.2 + X * 1.5,
)

# statement order free, and the output defined first
case(
    "order_free",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
O[p, f] = N[m, p] * V[m, f] / D[p]
D[p]    = N[m, p]
N[m, p] = exp(S[m, p] - G[p])
G[p]    = S[m, p] :: max(m)
S[m, p] = Q[p, e] * K[m, e]
""",
    dict(Q=rn(3, 2), K=rn(4, 2), V=rn(4, 2)),
    lambda Q, K, V: att(Q, K, V, scale=1.0),
)


# softmax with V filtered differently from scores
def vfilt_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    a = softmax(Q @ K.T / np.sqrt(Q.shape[1]), causal(P, M))
    a = a * (np.arange(M)[None] >= 1)
    return a @ V


case(
    "numerator_filtered",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
G[p]     = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - G[p])
D[p]     = N[m, p]
NV[p, f] = N[m, p] * V[m, f]  where m >= 1
O[p, f]  = (NV[p, f] ?? 0) / D[p]
""",
    dict(Q=rn(5, 3), K=rn(5, 3), V=rn(5, 2)),
    vfilt_ref,
)


# natten-like window rank w, with K read at p + w - 1 (absent padding), softmax over w
def win_ref(Q, K, V):
    P = Q.shape[0]
    M = K.shape[0]
    W = 3
    O = np.zeros((P, V.shape[1]))
    for p in range(P):
        idx = [p + w - 1 for w in range(W) if 0 <= p + w - 1 < M]
        s = np.array([Q[p] @ K[i] for i in idx])
        a = np.exp(s - s.max())
        a /= a.sum()
        O[p] = a @ V[idx]
    return O


case(
    "window_rank",
    """
input  Q[p, e], K[m, e], V[m, f]
param  W = 3
output O
S[p, w] = Q[p, e] * K[p + w - 1, e]
G[p]    = S[p, w] :: max(w)
N[p, w] = exp(S[p, w] - G[p])
D[p]    = N[p, w]
O[p, f] = N[p, w] * V[p + w - 1, f] / D[p]
""",
    dict(Q=rn(5, 3), K=rn(5, 3), V=rn(5, 2)),
    win_ref,
)


# softmax where max is over a different order of ranks in reduction + filter with max() in filter
def mf_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    mask = np.arange(M)[None] <= np.maximum(np.arange(P)[:, None], 2)
    return att(Q, K, V, mask=mask)


case(
    "filter_max_fn",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where m <= max(p, 2)
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(5, 3), K=rn(6, 3), V=rn(6, 2)),
    mf_ref,
)


# :: min reduction softmax ("negative" attention: softmin)
def softmin_ref(Q, K, V):
    s = Q @ K.T
    return softmax(-s) @ V


case(
    "softmin",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p] = Q[p, e] * K[m, e]
G[p]    = S[m, p] :: min(m)
N[m, p] = exp(G[p] - S[m, p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(4, 3), K=rn(6, 3), V=rn(6, 2)),
    softmin_ref,
)
