"""Sums over the keys that pair keys with queries and have no max: sigmoid, ReLU, squared ReLU, tanh and
causal linear attention, retention and Lightning-style decays, written densely as a researcher would. The
filters make whole key tiles (tile 3 in the rewritten config) absent for some rows, or whole rows absent;
the sums carry ``??`` defaults, come several to a score, are grouped (GQA ``h // R``), biased (ALiBi,
``log(M)``) and cut at per-batch lengths."""

import numpy as np

from .common import elu1, make_rn, pm, registry, relu, sig

rn, rng = make_rn(1601)
CASES, case = registry()


# --- sigmoid attention with a lag of 3: rows 0..2 see no key (absent, delivered as 0), and for every row the
# tiles past it are empty
def lag3_ref(Q, K, V, B=-1.5):
    _, P, E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    s = np.einsum("hpe,hme->hpm", Q, K) / np.sqrt(E)
    a = np.where(m <= p - 3, sig(s + B), 0.0)
    return np.einsum("hpm,hmf->hpf", a, V)


case(
    "s16_stream_sigmoid_lag3_rows_empty",
    """
# sigmoid attention with a lag of 3 keys: the first three rows see nothing
input  Q[h, p, e], K[h, m, e], V[h, m, f]
param  B = -1.5
output O
S[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p - 3
A[h, p, m] = sigmoid(S[h, p, m] + B)
O[h, p, f] = A[h, p, m] * V[h, m, f]
""",
    dict(Q=rn(2, 10, 4), K=rn(2, 10, 4), V=rn(2, 10, 3)),
    lag3_ref,
    passes={"m": 1},
)


# --- squared-ReLU attention over a sliding window, divided by the size M as a value; W overridden to 2
def sqrelu_ref(Q, K, V, W=2):
    P, E = Q.shape
    M = K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T / np.sqrt(E)
    a = np.where((m <= p) & (m > p - W), relu(s) ** 2, 0.0)
    return a @ V / M


case(
    "s16_stream_squared_relu_window_override",
    """
# squared-ReLU attention (Primer / ReLA-style), window of W keys, scaled by 1 / M
input  Q[p, e], K[m, e], V[m, f]
param  W = 4
output O
S[p, m] = Q[p, e] * K[m, e] * rsqrt(E)  where p - W < m <= p
O[p, f] = square(relu(S[p, m])) * V[m, f] / M
""",
    dict(Q=rn(9, 5), K=rn(9, 5), V=rn(9, 3)),
    sqrelu_ref,
    params={"W": 2},
)


# --- causal linear attention, strictly causal (row 0 sees no key), the scores in a statement of their own,
# defaults on both sums; a second output shows the denominator's absence as -1
def strict_linear_ref(Q, K, V):
    P = Q.shape[0]
    p, m = pm(P, K.shape[0])
    sc = np.where(m < p, elu1(Q) @ elu1(K).T, 0.0)
    num = sc @ V
    den = sc.sum(1)
    O = num / np.where(p[:, 0] > 0, den, 1.0)[:, None]
    return O, np.where(p[:, 0] > 0, den, -1.0)


case(
    "s16_stream_causal_linear_strict_defaulted_sums",
    """
# strictly causal linear attention: each query sees the keys before it; row 0 none
input  Q[p, e], K[m, e], V[m, f]
output O, DEN0
FQ[p, e]  = elu(Q[p, e]) + 1
FK[m, e]  = elu(K[m, e]) + 1
SC[p, m]  = FQ[p, e] * FK[m, e]  where m < p
NUM[p, f] = SC[p, m] * V[m, f]
DEN[p]    = SC[p, m]
O[p, f]   = (NUM[p, f] ?? 0) / (DEN[p] ?? 1)
DEN0[p]   = DEN[p] ?? -1
""",
    dict(Q=rn(8, 4), K=rn(8, 4), V=rn(8, 3)),
    strict_linear_ref,
    passes={"m": 1},
)


# --- retention (RetNet), parallel form, dense: decay gamma_h^(p - m) as exp(LG[h] * (p - m)), causal, GQA 2
def retention_ref(Q, K, V, LG):
    B, H, P, E = Q.shape
    M = K.shape[2]
    p, m = pm(P, M)
    out = np.zeros((B, H, P, V.shape[3]))
    for b in range(B):
        for h in range(H):
            s = Q[b, h] @ K[b, h // 2].T / np.sqrt(E)
            d = np.where(m <= p, s * np.exp(LG[h] * (p - m)), 0.0)
            out[b, h] = d @ V[b, h // 2]
    return out


case(
    "s16_stream_retention_decay_gqa",
    """
# retention, parallel form: causal, decayed by gamma_h^(p - m), two query heads per key head
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], LG[h]
param  R = 2
output O
S[b, h, p, m] = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where m <= p
D[b, h, p, m] = S[b, h, p, m] * exp(LG[h] * (p - m))
O[b, h, p, f] = D[b, h, p, m] * V[b, h // R, m, f]
""",
    dict(Q=rn(2, 4, 7, 4), K=rn(2, 2, 7, 4), V=rn(2, 2, 7, 3), LG=np.log(np.array([0.5, 0.8, 0.9, 0.97]))),
    retention_ref,
)


# --- sigmoid attention, GQA 3:1, two sums of one weight (the output and the mass), queries see one key ahead
def sig_mass_ref(Q, K, V, B=-2.0):
    H, P, E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    O = np.zeros((H, P, V.shape[2]))
    MASS = np.zeros((H, P))
    for h in range(H):
        a = np.where(m <= p + 1, sig(Q[h] @ K[h // 3].T / np.sqrt(E) + B), 0.0)
        O[h] = a @ V[h // 3]
        MASS[h] = a.sum(1)
    return O, MASS


case(
    "s16_stream_sigmoid_gqa3_output_and_mass",
    """
# sigmoid attention (Ramapuram et al.), GQA 3:1, with the total weight of each row
input  Q[h, p, e], K[g, m, e], V[g, m, f]
param  R = 3
param  B = -2.0
output O, MASS
S[h, p, m] = Q[h, p, e] * K[h // R, m, e] * rsqrt(E)  where m <= p + 1
A[h, p, m] = sigmoid(S[h, p, m] + B)
O[h, p, f] = A[h, p, m] * V[h // R, m, f]
MASS[h, p] = A[h, p, m]
""",
    dict(Q=rn(6, 7, 4), K=rn(2, 8, 4), V=rn(2, 8, 3)),
    sig_mass_ref,
    passes={"m": 1},
)


# --- sigmoid attention with an ALiBi bias and the -log(M) offset, keys cut at kvlen[b] (0 for batch 0)
def sig_alibi_ref(Q, K, V, slope, kvlen):
    B, H, P, E = Q.shape
    M = K.shape[2]
    p, m = pm(P, M)
    out = np.zeros((B, H, P, V.shape[3]))
    for b in range(B):
        for h in range(H):
            s = Q[b, h] @ K[b, h].T / np.sqrt(E) + slope[h] * (m - p)
            a = np.where(m < kvlen[b], sig(s - np.log(M)), 0.0)
            out[b, h] = a @ V[b, h]
    return out


case(
    "s16_stream_sigmoid_alibi_kvlen_empty_batch",
    """
# sigmoid attention with ALiBi and the -log(n) bias, keys past each batch's length absent
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], slope[h], kvlen[b] : int
output O
QK[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < kvlen[b]
S[b, h, p, m]  = QK[b, h, p, m] + slope[h] * (m - p)
O[b, h, p, f]  = sigmoid(S[b, h, p, m] - log(M)) * V[b, h, m, f]
""",
    dict(
        Q=rn(3, 2, 4, 4),
        K=rn(3, 2, 9, 4),
        V=rn(3, 2, 9, 3),
        slope=np.array([0.5, 0.125]),
        kvlen=np.array([0, 5, 9]),
    ),
    sig_alibi_ref,
    passes={"m": 1},
)


# --- ReLU attention, anticausal (m >= p), more queries than keys (rows 7, 8 see nothing): three sums of one
# weight; a default inside the summand (every row present) and one on the sum
def relu3_ref(Q, K, V):
    P = Q.shape[0]
    M = K.shape[0]
    p, m = pm(P, M)
    keep = m >= p
    r = np.where(keep, relu(Q @ K.T), 0.0)
    num = r @ V
    l1 = r.sum(1)
    alive = keep.any(1)
    O = np.where(alive[:, None], num / (l1 + 1)[:, None], 0.0)
    L2 = (r**2).sum(1)
    L1D = np.where(alive, l1, -1.0)
    return O, L2, L1D


case(
    "s16_stream_relu_three_sums_defaults",
    """
# ReLU attention over the keys at or after the query; three sums of one weight
input  Q[p, e], K[m, e], V[m, f]
output O, L2, L1D
S[p, m]   = Q[p, e] * K[m, e]  where m >= p
RW[p, m]  = relu(S[p, m])
NUM[p, f] = RW[p, m] * V[m, f]
L1[p]     = RW[p, m]
L2[p]     = square(RW[p, m]) ?? 0
O[p, f]   = NUM[p, f] / (L1[p] + 1)
L1D[p]    = L1[p] ?? -1
""",
    dict(Q=rn(9, 4), K=rn(7, 4), V=rn(7, 3)),
    relu3_ref,
    passes={"m": 1},
)


# --- cross-attention with sigmoid weights, query rows past qlen[b] and keys past kvlen[b] absent
def cross_len_ref(Q, K, V, qlen, kvlen):
    B, P, E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    out = np.zeros((B, P, V.shape[2]))
    for b in range(B):
        keep = (p < qlen[b]) & (m < kvlen[b])
        out[b] = np.where(keep, sig(Q[b] @ K[b].T / np.sqrt(E)), 0.0) @ V[b]
    return out


case(
    "s16_stream_sigmoid_cross_qlen_kvlen",
    """
# sigmoid cross-attention over padded batches: query and key lengths per batch
input  Q[b, p, e], K[b, m, e], V[b, m, f], qlen[b] : int, kvlen[b] : int
output O
S[b, p, m] = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where p < qlen[b] and m < kvlen[b]
O[b, p, f] = sigmoid(S[b, p, m]) * V[b, m, f]
""",
    dict(Q=rn(3, 6, 4), K=rn(3, 7, 4), V=rn(3, 7, 2), qlen=np.array([3, 0, 6]), kvlen=np.array([7, 4, 1])),
    cross_len_ref,
)


# --- causal linear attention inside documents whose ids are not monotone: a row's keys are scattered over
# tiles, some of which hold none of its document
_DOC = np.array([0, 0, 1, 1, 0, 2, 2, 1, 0, 3])


def doc_linear_ref(Q, K, V, doc):
    P = Q.shape[0]
    p, m = pm(P, P)
    keep = (doc[m] == doc[p]) & (m <= p)
    w = np.where(keep, elu1(Q) @ elu1(K).T, 0.0)
    return (w @ V) / w.sum(1, keepdims=True)


case(
    "s16_stream_linear_doc_ids_nonmonotone",
    """
# causal linear attention within documents; document ids need not be sorted
input  Q[p, e], K[m, e], V[m, f], doc[n] : int
output O
FQ[p, e]  = elu(Q[p, e]) + 1
FK[m, e]  = elu(K[m, e]) + 1
W[p, m]   = FQ[p, e] * FK[m, e]  where doc[m] == doc[p] and m <= p
NUM[p, f] = W[p, m] * V[m, f]
DEN[p]    = W[p, m]
O[p, f]   = NUM[p, f] / DEN[p]
""",
    dict(Q=rn(10, 3), K=rn(10, 3), V=rn(10, 2), doc=_DOC),
    doc_linear_ref,
)


# --- tanh attention added to a residual, the sum defaulted (rows 0, 1 see nothing), and the last row read at
# P - 1 as a second output
def tanh_res_ref(X, Q, K, V):
    P = Q.shape[0]
    p, m = pm(P, K.shape[0])
    av = np.where(m < p - 1, np.tanh(Q @ K.T), 0.0) @ V
    Y = av + X
    return Y, Y[P - 1]


case(
    "s16_stream_tanh_residual_default_last_row",
    """
# tanh attention over the keys two or more behind, plus a residual; the last row separately
input  X[p, f], Q[p, e], K[m, e], V[m, f]
output Y, LAST
S[p, m]  = Q[p, e] * K[m, e]  where m < p - 1
AV[p, f] = tanh(S[p, m]) * V[m, f]
Y[p, f]  = (AV[p, f] ?? 0) + X[p, f]
LAST[f]  = Y[P - 1, f]
""",
    dict(X=rn(7, 3), Q=rn(7, 4), K=rn(7, 4), V=rn(7, 3)),
    tanh_res_ref,
)


# --- sigmoid attention against a cache whose keys and values past n hold NaN and inf; a scalar float bias
_NC = 5


def _junk_tail(x, n):
    x = x.copy()
    junk = np.array([np.nan, np.inf, -np.inf, 1e308])
    x[n:] = junk[rng.integers(0, 4, size=x[n:].shape)]
    return x


def sig_nan_ref(Q, K, V, n, bias):
    E = Q.shape[1]
    return sig(Q @ K[:n].T / np.sqrt(E) + bias) @ V[:n]


case(
    "s16_stream_sigmoid_cache_nan_inf_past_n",
    """
# sigmoid decoding-style attention over the first n slots of a cache (garbage after them)
input  Q[p, e], K[m, e], V[m, f], n : int, bias
output O
S[p, m] = Q[p, e] * K[m, e] * rsqrt(E)  where m < n
O[p, f] = sigmoid(S[p, m] + bias) * V[m, f]
""",
    dict(
        Q=rn(4, 3),
        K=_junk_tail(rn(8, 3), _NC),
        V=_junk_tail(rn(8, 2), _NC),
        n=np.array(_NC),
        bias=np.array(-0.7),
    ),
    sig_nan_ref,
)


# --- Lightning attention, intra-block part: block-causal within chunks of C, decayed by exp(-LAM * (p - m));
# C = 4 over P = 11 (ragged last chunk), LAM overridden
def lightning_ref(Q, K, V, C=4, LAM=0.3):
    P = Q.shape[0]
    p, m = pm(P, P)
    keep = (m // C == p // C) & (m <= p)
    w = np.where(keep, (Q @ K.T) * np.exp(-LAM * (p - m)), 0.0)
    return w @ V


case(
    "s16_stream_lightning_intra_chunk_decay_override",
    """
# Lightning attention's intra-chunk part: causal within chunks of C, exponential decay
input  Q[p, e], K[m, e], V[m, f]
param  C = 4
param  LAM = 0.1
output O
S[p, m] = Q[p, e] * K[m, e] * exp(-LAM * (p - m))  where m // C == p // C and m <= p
O[p, f] = S[p, m] * V[m, f]
""",
    dict(Q=rn(11, 3), K=rn(11, 3), V=rn(11, 2)),
    lightning_ref,
    params={"LAM": 0.3},
)


# --- ReLU attention normalised by the number of keys it sees (a count over present points), symmetric window
def relu_count_ref(Q, K, V, W=3):
    P = Q.shape[0]
    p, m = pm(P, K.shape[0])
    keep = np.abs(p - m) < W
    r = np.where(keep, relu(Q @ K.T), 0.0)
    return (r @ V) / keep.sum(1, keepdims=True)


case(
    "s16_stream_relu_normalised_by_key_count",
    """
# ReLU attention divided by how many keys each query sees (a symmetric window)
input  Q[p, e], K[m, e], V[m, f]
param  W = 3
output O
S[p, m]   = Q[p, e] * K[m, e]  where abs(p - m) < W
ONE[p, m] = S[p, m] * 0 + 1
CNT[p]    = ONE[p, m]
NUM[p, f] = relu(S[p, m]) * V[m, f]
O[p, f]   = NUM[p, f] / CNT[p]
""",
    dict(Q=rn(10, 3), K=rn(10, 3), V=rn(10, 2)),
    relu_count_ref,
)


# --- one sigmoid score, two sums with different filters at the sums (past and future), two value tensors
def two_dir_ref(Q, K, V1, V2):
    P = Q.shape[0]
    p, m = pm(P, K.shape[0])
    a = sig(Q @ K.T)
    O1 = np.where(m <= p, a, 0.0) @ V1
    O2 = np.where(m > p, a, 0.0) @ V2
    return O1, O2


case(
    "s16_stream_one_score_two_filtered_sums",
    """
# one sigmoid score; past keys mix V1, future keys mix V2 (the last row has no future: absent, 0)
input  Q[p, e], K[m, e], V1[m, f], V2[m, g]
output O1, O2
S[p, m]   = Q[p, e] * K[m, e]
A[p, m]   = sigmoid(S[p, m])
O1[p, f]  = A[p, m] * V1[m, f]  where m <= p
O2[p, g]  = A[p, m] * V2[m, g]  where m > p
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V1=rn(8, 2), V2=rn(8, 4)),
    two_dir_ref,
)


# --- a decay read from a table by the distance p - m, causal; a distance past the table is absent
def table_decay_ref(Q, K, V, DEC):
    H, P, _ = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    out = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        d = p - m
        keep = (m <= p) & (d < DEC.shape[1])
        dec = DEC[h][np.clip(d, 0, DEC.shape[1] - 1)]
        out[h] = np.where(keep, (Q[h] @ K[h].T) * dec, 0.0) @ V[h]
    return out


case(
    "s16_stream_decay_table_by_distance",
    """
# linear attention with a learned decay per distance (a table of 4): older keys fall outside it
input  Q[h, p, e], K[h, m, e], V[h, m, f], DEC[h, d]
output O
S[h, p, m] = Q[h, p, e] * K[h, m, e]  where m <= p
O[h, p, f] = S[h, p, m] * DEC[h, p - m] * V[h, m, f]
""",
    dict(Q=rn(2, 9, 3), K=rn(2, 9, 3), V=rn(2, 9, 2), DEC=rng.uniform(0.2, 1.0, (2, 4))),
    table_decay_ref,
)


# --- the sum over the keys, then a max over the features in the same statement (left as written by rule 3)
def sum_then_max_ref(Q, K, V):
    P = Q.shape[0]
    p, m = pm(P, K.shape[0])
    av = np.where(m <= p, sig(Q @ K.T), 0.0) @ V
    return av.max(1), av


case(
    "s16_stream_sum_over_keys_then_max_over_features",
    """
# the largest feature of each sigmoid-attention row, in one statement, and the rows themselves
input  Q[p, e], K[m, e], V[m, f]
output MX, AV
S[p, m]  = Q[p, e] * K[m, e]  where m <= p
A[p, m]  = sigmoid(S[p, m])
MX[p]    = A[p, m] * V[m, f] :: max(f)
AV[p, f] = A[p, m] * V[m, f]
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 4)),
    sum_then_max_ref,
)
