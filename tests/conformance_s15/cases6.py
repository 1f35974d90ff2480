# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""Absent points that must stay absent however garbage the data behind them: a KV cache holding NaN and inf past
each sequence's length (as an uninitialised `torch.empty` cache does), padding keys of a document nobody
queries, query rows past a per-batch length that hold NaN, the same in a hand-written 1-pass loop; a split
count given as the outer param of the partition and overridden so that the last split is entirely past M (an
unguarded Cascade 5 then has no result at all, a guarded one the ordinary one); a max taken over a wider filter
than the exponentials use; a constant offset inside the exponent with a denominator that filters its own keys."""

import numpy as np

from .common import att, lse, make_rn, pm, registry, softmax

rn, rng = make_rn(1506)
CASES, case = registry()


def _garbage(shape, lengths, axis_len):
    """Random data, NaN / inf / -inf past lengths[b] along axis 1 (of size axis_len)."""
    x = rn(*shape)
    junk = np.array([np.nan, np.inf, -np.inf, 1e308])
    for b, ln in enumerate(lengths):
        tail = x[b, ln:]
        tail[...] = junk[rng.integers(0, 4, size=tail.shape)]
    return x


# --- decoding against a cache whose slots past kvlen[b] hold NaN, inf, -inf and 1e308 (lengths 5, 0, 17 and 1
# of M = 17): those keys are absent, so nothing of them may reach the output; GQA 2:1, with the LSE
_KL = np.array([5, 0, 17, 1])


def cache_ref(q, K, V, kvlen):
    B, H, E = q.shape
    O = np.zeros((B, H, V.shape[3]))
    L = np.zeros((B, H))
    for b in range(B):
        ln = kvlen[b]
        for h in range(H):
            if ln == 0:
                continue
            s = K[b, :ln, h // 2] @ q[b, h] / np.sqrt(E)
            O[b, h] = softmax(s) @ V[b, :ln, h // 2]
            L[b, h] = lse(s)
    return O, L


case(
    "s15_bug_torch_kv_cache_nan_inf_past_length_decode_gqa",
    """
input  q[b, h, e], K[b, m, g, e], V[b, m, g, f], kvlen[b] : int
output O, LSE
S[b, h, m]  = q[b, h, e] * K[b, m, h // 2, e] * rsqrt(E)  where m < kvlen[b]
GM[b, h]    = S[b, h, m] :: max(m)
EX[b, h, m] = exp(S[b, h, m] - GM[b, h])
SD[b, h]    = EX[b, h, m]
O[b, h, f]  = EX[b, h, m] * V[b, m, h // 2, f] / SD[b, h]
LSE[b, h]   = GM[b, h] + log(SD[b, h])
""",
    dict(q=rn(4, 4, 3), K=_garbage((4, 17, 2, 3), _KL, 17), V=_garbage((4, 17, 2, 2), _KL, 17), kvlen=_KL),
    cache_ref,
)


# --- the same garbage past the lengths, over a cache long enough for several key tiles (M = 150) and a causal
# prefill of 20 queries placed at the end of each sequence (bottom-right within the valid length)
_KL2 = np.array([150, 37, 20])


def prefill_ref(Q, K, V, kvlen):
    B, P, _E = Q.shape
    O = np.zeros((B, P, V.shape[2]))
    for b in range(B):
        ln = kvlen[b]
        p, m = pm(P, ln)
        O[b] = att(Q[b], K[b, :ln], V[b, :ln], mask=m <= p + ln - P)
    return O


case(
    "s15_bug_kv_cache_nan_inf_past_length_prefill_tiles",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f], kvlen[b] : int
output O
S[b, p, m]  = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where m < kvlen[b] and m <= p + kvlen[b] - P
GM[b, p]    = S[b, p, m] :: max(m)
EX[b, p, m] = exp(S[b, p, m] - GM[b, p])
SD[b, p]    = EX[b, p, m]
O[b, p, f]  = EX[b, p, m] * V[b, m, f] / SD[b, p]
""",
    dict(Q=rn(3, 20, 4), K=_garbage((3, 150, 4), _KL2, 150), V=_garbage((3, 150, 3), _KL2, 150), kvlen=_KL2),
    prefill_ref,
    passes={"m": 3},
)


# --- packed documents with a padding document (id -1) whose keys and values are NaN and whose positions no
# query has; rows of queries past qlen hold NaN and are filtered out (their output is 0)
def pad_doc_ref(Q, K, V, doc, qlen):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    mask = (doc[:P][:, None] == doc[None, :]) & (m <= p) & (p < qlen) & (doc[:P][:, None] >= 0)
    return att(np.nan_to_num(Q), np.nan_to_num(K), np.nan_to_num(V), mask=mask)


_doc = np.array([0, 0, 0, 1, 1, -1, -1, 2, 2, 2, -1, -1])
_Kp = rn(12, 3)
_Vp = rn(12, 2)
_Kp[_doc == -1] = np.nan
_Vp[_doc == -1] = np.inf
_Qp = rn(12, 3)
_Qp[10:] = np.nan
case(
    "s15_bug_padding_document_nan_keys_and_nan_query_rows",
    """
input  Q[p, e], K[m, e], V[m, f], doc[n] : int, qlen : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where doc[m] == doc[p] and m <= p and p < qlen and doc[p] >= 0
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=_Qp, K=_Kp, V=_Vp, doc=_doc, qlen=np.array(10)),
    pad_doc_ref,
    limits={
        "triton": "fused path: an infinite V at keys that no row sees, but only through terms of the filter "
        "that involve the rows (doc[m] == doc[p] and doc[p] >= 0), is NaN in tl.dot (docs/backends.md)"
    },
)


# --- a hand-written 1-pass loop (tiles of 4) over a cache with NaN and inf past the lengths (17, 6, 0)
_KL3 = np.array([17, 6, 0])


def hand_cache_ref(q, K, V, kvlen):
    B, E = q.shape
    O = np.zeros((B, V.shape[2]))
    for b in range(B):
        ln = kvlen[b]
        if ln:
            O[b] = softmax(K[b, :ln] @ q[b] / np.sqrt(E)) @ V[b, :ln]
    return O


case(
    "s15_bug_torch_1pass_hand_cache_nan_inf_past_length",
    """
input  q[b, e], K[b, m, e], V[b, m, f], kvlen[b] : int
param  M0 = 4
rank   M = M1 * M0
output O
BQK[b, m1, m0]    = q[b, e] * K[b, m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 < kvlen[b]
LM[b, m1]         = BQK[b, m1, m0] :: max(m0)
RM[b, 0]          = -inf
RD[b, 0]          = 0
RNV[b, 0, f]      = 0
RM[b, m1 + 1]     = max(RM[b, m1], LM[b, m1]) ?? RM[b, m1]
SLN[b, m1, m0]    = exp(BQK[b, m1, m0] - RM[b, m1 + 1])
SLD[b, m1]        = SLN[b, m1, m0]
SLNV[b, m1, f]    = SLN[b, m1, m0] * V[b, m1 * M0 + m0, f]
PRM[b, m1]        = exp(RM[b, m1] - max(RM[b, m1], LM[b, m1])) ?? 1
RD[b, m1 + 1]     = (SLD[b, m1] ?? 0) + RD[b, m1] * PRM[b, m1]
RNV[b, m1 + 1, f] = (SLNV[b, m1, f] ?? 0) + RNV[b, m1, f] * PRM[b, m1]
O[b, f]           = RNV[b, M1, f] / RD[b, M1]  where kvlen[b] > 0
""",
    dict(q=rn(3, 3), K=_garbage((3, 17, 3), _KL3, 17), V=_garbage((3, 17, 2), _KL3, 17), kvlen=_KL3),
    hand_cache_ref,
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- Cascade 5 with the split count as the partition's param, overridden to 7 splits of M = 17: M0 = 3, and
# the last split (keys 18 to 20) lies past M. The unguarded cascade's last step has an absent local max, so
# the running max, the sums and the output are absent: 0 everywhere (the spec is wrong for this override,
# and says so); the guarded form of the same loop gives attention
_C5_SPLITS = """
input  Q[p, e], K[m, e], V[m, f]
param  M1 = 2
rank   M = M1 * M0
output O
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e]
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[0, p]          = -inf
RD[0, p]          = 0
RNV[0, p, f]      = 0
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p])GUARD_RM
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p]     = SLDX + RD[m1, p] * PRM[m1, p]
RNV[m1 + 1, p, f] = SLNVX + RNV[m1, p, f] * PRM[m1, p]
O[p, f]           = RNV[M1, p, f] / RD[M1, p]
"""
_q, _k, _v = rn(5, 3), rn(17, 3), rn(17, 2)
case(
    "s15_cascade5_split_count_overridden_last_split_past_M_unguarded",
    _C5_SPLITS.replace("GUARD_RM", "").replace("SLDX", "SLD[m1, p]").replace("SLNVX", "SLNV[m1, p, f]"),
    dict(Q=_q, K=_k, V=_v),
    lambda Q, K, V: np.zeros((Q.shape[0], V.shape[1])),
    params={"M1": 7},
    passes={"m": 1, "m1": 1, "m0": 2},
)
case(
    "s15_cascade5_split_count_overridden_last_split_past_M_guarded",
    _C5_SPLITS.replace("GUARD_RM", " ?? RM[m1, p]")
    .replace("SLDX", "(SLD[m1, p] ?? 0)")
    .replace("SLNVX", "(SLNV[m1, p, f] ?? 0)"),
    dict(Q=_q, K=_k, V=_v),
    lambda Q, K, V: softmax(Q @ K.T) @ V,
    params={"M1": 7},
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- split-K decoding where the number of splits is the param (overridden from 2 to 7 over M = 17: the last
# split is empty) and each split's partial state is combined by LSE
def splits_ref(q, K, V):
    s = K @ q / np.sqrt(q.shape[0])
    return softmax(s) @ V, lse(s)


case(
    "s15_bug_torch_splitk_split_count_param_empty_last_split",
    """
input  q[e], K[m, e], V[m, f]
param  M1 = 2
rank   M = M1 * M0
output O, LSE
S[m1, m0]    = q[e] * K[m1 * M0 + m0, e] * rsqrt(E)
LM[m1]       = S[m1, m0] :: max(m0)
EX[m1, m0]   = exp(S[m1, m0] - LM[m1])
LD[m1]       = EX[m1, m0]
ON[m1, f]    = EX[m1, m0] * V[m1 * M0 + m0, f]
LS[m1]       = LM[m1] + log(LD[m1])
GL           = LS[m1] :: max(m1)
W[m1]        = exp(LS[m1] - GL)
WS           = W[m1]
O[f]         = W[m1] * ON[m1, f] / LD[m1] / WS
LSE          = GL + log(WS)
""",
    dict(q=rn(3), K=rn(17, 3), V=rn(17, 2)),
    splits_ref,
    params={"M1": 7},
)


# --- the max taken over all keys, the exponentials only over the causal ones (any stabiliser gives the same
# softmax while nothing underflows); with the LSE, which then needs the same max
def wide_max_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T / np.sqrt(Q.shape[1])
    return softmax(s, m <= p) @ V, lse(s, m <= p)


case(
    "s15_max_over_all_keys_exponentials_over_causal",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, LSE
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])  where m <= p
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
LSE[p]   = GM[p] + log(SD[p])
""",
    dict(Q=rn(9, 3), K=rn(9, 3), V=rn(9, 2)),
    wide_max_ref,
)


# --- a constant offset in the exponent (a per-row log temperature-like shift k[p] that cancels) while the
# denominator leaves out the query's own key (the numerator keeps it): the weights do not sum to 1
def offset_ref(Q, K, V, k):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T / np.sqrt(Q.shape[1])
    mx = s.max(-1, keepdims=True)
    ex = np.exp(s - mx - k[:, None])
    den = np.where(m != p, ex, 0).sum(-1)
    return (ex @ V) / den[:, None]


case(
    "s15_offset_in_exponent_denominator_filters_own_key",
    """
input  Q[p, e], K[m, e], V[m, f], k[p]
output O
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]     = S[p, m] :: max(m)
EX[p, m]  = exp(S[p, m] - GM[p] - k[p])
SD[p]     = EX[p, m]  where m != p
NV[p, f]  = EX[p, m] * V[m, f]
O[p, f]   = NV[p, f] / SD[p]
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2), k=rn(7, scale=5)),
    offset_ref,
    passes={"m": 2},
)


# --- the smallest forms of the two bugs above. (1) A value at a key the filter dropped is absent, whatever it
# holds: V[2] = NaN (or inf) with n = 2 must not reach O (torch's default program multiplies the zero weight by
# it, and so does triton's fused path; the scores' K may hold NaN there without harm)
def nan_v_ref(Q, K, V, n):
    s = Q @ K[:n].T
    return softmax(s) @ V[:n]


_Vn = rn(3, 2)
_Vn[2] = [np.nan, np.inf]
case(
    "s15_bug_value_nan_inf_at_filtered_key_minimal",
    """
input  Q[p, e], K[m, e], V[m, f], n : int
output O
S[p, m]  = Q[p, e] * K[m, e]  where m < n
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(2, 3), K=rn(3, 3), V=_Vn, n=np.array(2)),
    nan_v_ref,
)


# (2) torch: a sum over the tiles m1 of a ragged partition (M = 5, M0 = 2), divided by a scalar that may be
# absent, crashes in torch.einsum ("the number of subscripts in the equation (0) does not match the number of
# dimensions (2) for operand 2"): the scalar's mask is placed with two dimensions
def scalar_div_ref(X, V):
    M0 = 2
    M1 = -(-len(X) // M0)
    LM = np.array([X[j * M0 : (j + 1) * M0].max() for j in range(M1)])
    return (LM[:, None] * V[:M1]).sum(0) / LM.sum()


case(
    "s15_bug_torch_ragged_tiles_sum_divided_by_scalar_crash",
    """
input  X[m], V[m, f]
param  M0 = 2
rank   M = M1 * M0
output O
LM[m1] = X[m1 * M0 + m0] :: max(m0)
WS     = LM[m1]
O[f]   = LM[m1] * V[m1, f] / WS
""",
    dict(X=np.array([1.0, 2.0, 3.0, 4.0, 5.0]), V=np.arange(10.0).reshape(5, 2)),
    scalar_div_ref,
)
