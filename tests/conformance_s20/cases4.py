"""Layouts and forms kernel writers use: the [b, p, h, e] (BSHD) layout, keys stored transposed, chunked
prefill with a runtime query offset, softmax normalised through its log-sum-exp (exp(S - LSE)), exp2 with
the log2(e) factor written out, masked_fill-style -inf scores (with and without empty rows), attention
weights returned with the output, slot attention (softmax over the queries, then a weighted mean over the
keys), a full float bias per head and pair, outputs summed over heads, and empty ranks (no keys, no
queries)."""

import numpy as np

from .common import att, lse, make_rn, pm, registry, softmax

rn, rng = make_rn(2004)
CASES, case = registry()


def scores(Q, K):
    return np.einsum("...pe,...me->...pm", Q, K) / np.sqrt(Q.shape[-1])


# --- the BSHD layout (flash-attn's [batch, seq, heads, dim]), causal, M = 70 so the default tile is ragged
def bshd_ref(Q, K, V):
    q, k, v = (np.moveaxis(x, 2, 1) for x in (Q, K, V))
    p, m = pm(q.shape[2], k.shape[2])
    return np.moveaxis(att(q, k, v, mask=m <= p + k.shape[2] - q.shape[2]), 1, 2)


case(
    "s20_form_bshd_layout_bottom_right_causal",
    """
input  Q[b, p, h, e], K[b, m, h, e], V[b, m, h, f]
output O
S[b, h, m, p]  = Q[b, p, h, e] * K[b, m, h, e] * rsqrt(E)  where m <= p + M - P
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, p, h, f]  = EX[b, h, m, p] * V[b, m, h, f] / DEN[b, h, p]
""",
    dict(Q=rn(1, 3, 2, 4), K=rn(1, 70, 2, 4), V=rn(1, 70, 2, 3)),
    bshd_ref,
)


# --- keys stored transposed ([b, h, e, m]) and values as [b, h, f, m]
case(
    "s20_form_keys_and_values_transposed",
    """
input  Q[b, h, p, e], KT[b, h, e, m], VT[b, h, f, m]
output O
S[b, h, m, p]  = Q[b, h, p, e] * KT[b, h, e, m] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * VT[b, h, f, m] / DEN[b, h, p]
""",
    dict(Q=rn(1, 2, 4, 3), KT=rn(1, 2, 3, 6), VT=rn(1, 2, 2, 6)),
    lambda Q, KT, VT: att(Q, np.swapaxes(KT, -1, -2), np.swapaxes(VT, -1, -2)),
)


# --- chunked prefill: the P new queries sit at positions off[b] .. off[b] + P - 1 of the cache
def prefill_ref(Q, K, V, off):
    O = np.zeros((*Q.shape[:-1], V.shape[-1]))
    for b in range(Q.shape[0]):
        p, m = pm(Q.shape[2], K.shape[2])
        O[b] = att(Q[b], K[b], V[b], mask=m <= p + off[b])
    return O


case(
    "s20_form_chunked_prefill_runtime_offset",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], off[b] : int
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + off[b]
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(3, 2, 3, 4), K=rn(3, 2, 9, 4), V=rn(3, 2, 9, 3), off=np.array([0, 4, 6], dtype=np.int32)),
    prefill_ref,
)


# --- normalised through the log-sum-exp, as FlashAttention's backward recomputes it: exp(S - LSE)
def lse_norm_ref(Q, K, V):
    s = scores(Q, K)
    p, m = pm(*s.shape[-2:])
    return att(Q, K, V, mask=m <= p), lse(s, m <= p)


case(
    "s20_form_normalised_by_lse",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O, L
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
GM[h, p]    = S[h, m, p] :: max(m)
DEN[h, p]   = exp(S[h, m, p] - GM[h, p])
L[h, p]     = GM[h, p] + log(DEN[h, p])
O[h, p, f]  = exp(S[h, m, p] - L[h, p]) * V[h, m, f]
""",
    dict(Q=rn(2, 5, 4), K=rn(2, 5, 4), V=rn(2, 5, 3)),
    lse_norm_ref,
)


# --- exp2 with log2(e) folded into the scale, as Triton's tutorial writes it
case(
    "s20_form_exp2_with_log2e_scale",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  LOG2E = 1.4426950408889634
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) * LOG2E
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp2(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(1, 2, 4, 4, scale=3), K=rn(1, 2, 6, 4), V=rn(1, 2, 6, 3)),
    lambda Q, K, V: att(Q, K, V),
)


# --- masked_fill style: the masked scores are -inf, not absent; every row keeps a key (causal)
MASKED_FILL = """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
SM[h, m, p] = QK[h, m, p]  where {mask}
S[h, m, p]  = SM[h, m, p] ?? -inf
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
"""


def masked_fill_ref(Q, K, V):
    p, m = pm(Q.shape[1], K.shape[1])
    return att(Q, K, V, mask=m <= p)


case(
    "s20_form_masked_fill_minus_inf_causal",
    MASKED_FILL.format(mask="m <= p"),
    dict(Q=rn(2, 6, 4), K=rn(2, 6, 4), V=rn(2, 6, 3)),
    masked_fill_ref,
)


# --- masked_fill style with empty rows: a row whose scores are all -inf is exp(-inf - -inf) = NaN, as IEEE
# arithmetic (and PyTorch's masked softmax) gives; the other rows are attention over their window
def masked_fill_empty_ref(Q, K, V):
    p, m = pm(Q.shape[1], K.shape[1])
    mask = (m >= p) & (m < p + 2)
    O = att(Q, K, V, mask=mask)
    return np.where(mask.any(-1)[None, :, None], O, np.nan)


case(
    "s20_form_masked_fill_minus_inf_empty_rows_nan",
    MASKED_FILL.format(mask="p <= m < p + 2"),
    dict(Q=rn(2, 6, 4), K=rn(2, 4, 4), V=rn(2, 4, 3)),
    masked_fill_empty_ref,
)


# --- the attention weights returned with the output (peers.md: users ask for them)
def weights_ref(Q, K, V):
    p, m = pm(Q.shape[1], K.shape[1])
    A = softmax(scores(Q, K), m <= p)  # [h, p, m]
    return A @ V, np.swapaxes(A, 1, 2)


case(
    "s20_form_weights_returned_with_output",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O, A
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
A[h, m, p]  = EX[h, m, p] / DEN[h, p]
O[h, p, f]  = A[h, m, p] * V[h, m, f]
""",
    dict(Q=rn(2, 4, 3), K=rn(2, 5, 3), V=rn(2, 5, 2)),
    weights_ref,
)


# --- slot attention (Locatello et al. 2020): the softmax runs over the slots (the queries), then each slot
# takes the weighted mean of the inputs, with EPS in the denominator
def slot_ref(SL, X, WV, EPS=1e-8):
    s = np.einsum("ne,me->nm", SL, X) / np.sqrt(SL.shape[1])
    a = softmax(s, axis=0) + EPS  # over slots
    w = a / a.sum(1, keepdims=True)
    return w @ (X @ WV)


case(
    "s20_form_slot_attention_softmax_over_queries",
    """
input  SL[n, e], X[m, e], WV[e, f]
param  EPS = 1e-8
output U
S[n, m]   = SL[n, e] * X[m, e] * rsqrt(E)
GM[m]     = S[n, m] :: max(n)
EX[n, m]  = exp(S[n, m] - GM[m])
DEN[m]    = EX[n, m]
A[n, m]   = EX[n, m] / DEN[m] + EPS
AS[n]     = A[n, m]
XV[m, f]  = X[m, e] * WV[e, f]
U[n, f]   = A[n, m] / AS[n] * XV[m, f]
""",
    dict(SL=rn(3, 4), X=rn(7, 4), WV=rn(4, 2)),
    slot_ref,
)


# --- a full float bias per head and pair added to the scores, outputs summed over the heads
def bias_sum_ref(Q, K, V, bias):
    return (softmax(scores(Q, K) + bias) @ V).sum(0)


case(
    "s20_form_full_bias_and_heads_summed",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], bias[h, p, m]
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, m, p]  = QK[h, m, p] + bias[h, p, m]
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[p, f]     = EX[h, m, p] * V[h, m, f] / DEN[h, p]
""",
    dict(Q=rn(3, 4, 3), K=rn(3, 5, 3), V=rn(3, 5, 2), bias=rn(3, 4, 5)),
    bias_sum_ref,
)


# --- empty ranks: no keys (every output row absent: 0, the log-sum-exp too) and no queries
EMPTY_SPEC = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O, L
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + M - P
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
L[b, h, p]     = GM[b, h, p] + log(DEN[b, h, p])
"""

case(
    "s20_form_empty_rank_no_keys",
    EMPTY_SPEC,
    dict(Q=rn(1, 2, 3, 4), K=rn(1, 2, 0, 4), V=rn(1, 2, 0, 3)),
    lambda Q, K, V: (np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3))),
)

case(
    "s20_form_empty_rank_no_queries",
    EMPTY_SPEC,
    dict(Q=rn(1, 2, 0, 4), K=rn(1, 2, 5, 4), V=rn(1, 2, 5, 3)),
    lambda Q, K, V: (np.zeros((1, 2, 0, 3)), np.zeros((1, 2, 0))),
)
