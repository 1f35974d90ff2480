"""Recurrences and linear attention: chunked causal linear attention over a ragged partition (the state across
chunks by an iterative rank, the diagonal chunk by a filter over an alias of the inner part), decode by an
online softmax one key per step with lengths per batch (an empty batch guarded by a filter on the output),
RetNet's recurrent and parallel forms agreeing, causal linear attention by a scan and by a filter agreeing,
and the 2-pass online-normaliser softmax (Milakov and Gimelshein): running statistics over tiles, then the
scores re-read."""

import numpy as np

from .common import att, elu, make_rn, pm, registry, softmax

rn, rng = make_rn(2104)
CASES, case = registry()


def causal_linear(Q, K, V):
    fq, fk = elu(Q) + 1, elu(K) + 1
    w = np.tril(fq @ fk.T)
    return (w @ V) / w.sum(1, keepdims=True)


# --- chunked causal linear attention: T = 10 in chunks of T0 = 4 (the last holds 2); the inter-chunk state
# is a recurrence over the chunk rank c, the intra-chunk part a filter over s0 (rank S0 = T0)
case(
    "s21_rec_chunked_causal_linear_attention_ragged_partition",
    """
input  Q[t, e], K[t, e], V[t, f]
param  T0 = 4
rank   T = C * T0
rank   S0 = T0
output O
FQ[c, t0, e]    = elu(Q[c * T0 + t0, e]) + 1
FK[c, t0, e]    = elu(K[c * T0 + t0, e]) + 1
BV[c, t0, f]    = V[c * T0 + t0, f]
KVC[c, e, f]    = FK[c, t0, e] * BV[c, t0, f]
ZC[c, e]        = FK[c, t0, e]
ST[0, e, f]     = 0
ST[c + 1, e, f] = ST[c, e, f] + KVC[c, e, f]
ZS[0, e]        = 0
ZS[c + 1, e]    = ZS[c, e] + ZC[c, e]
INN[c, t0, f]   = FQ[c, t0, e] * FK[c, s0, e] * BV[c, s0, f]  where s0 <= t0
IND[c, t0]      = FQ[c, t0, e] * FK[c, s0, e]  where s0 <= t0
INT[c, t0, f]   = FQ[c, t0, e] * ST[c, e, f]
IDT[c, t0]      = FQ[c, t0, e] * ZS[c, e]
OC[c, t0, f]    = (INT[c, t0, f] + INN[c, t0, f]) / (IDT[c, t0] + IND[c, t0])
O[t, f]         = OC[t // T0, t % T0, f]
""",
    dict(Q=rn(10, 3), K=rn(10, 3), V=rn(10, 2)),
    causal_linear,
)


# --- decode by an online softmax over single keys (no partition), MQA keys, lengths per batch (batch 1 has
# none: its states stay -inf, 0, 0 and the output is filtered to absent, delivered as 0)
def decode_ref(q, K, V, kvlen):
    out = np.zeros((q.shape[0], q.shape[1], V.shape[2]))
    for b in range(q.shape[0]):
        n = kvlen[b]
        if n:
            out[b] = softmax(q[b] @ K[b, :n].T / np.sqrt(q.shape[2])) @ V[b, :n]
    return out


case(
    "s21_rec_decode_online_softmax_per_key_lengths_empty_batch",
    """
input  q[b, h, e], K[b, m, e], V[b, m, f], kvlen[b] : int
output O
S[b, h, m]        = q[b, h, e] * K[b, m, e] * rsqrt(E)  where m < kvlen[b]
RM[b, h, 0]       = -inf
RD[b, h, 0]       = 0
RN[b, h, f, 0]    = 0
RM[b, h, m + 1]   = max(RM[b, h, m], S[b, h, m]) ?? RM[b, h, m]
CF[b, h, m]       = exp(RM[b, h, m] - RM[b, h, m + 1])
RD[b, h, m + 1]   = RD[b, h, m] * CF[b, h, m] + exp(S[b, h, m] - RM[b, h, m + 1]) ?? RD[b, h, m]
RN[b, h, f, m + 1] = RN[b, h, f, m] * CF[b, h, m] \\
                   + exp(S[b, h, m] - RM[b, h, m + 1]) * V[b, m, f] ?? RN[b, h, f, m]
O[b, h, f]        = RN[b, h, f, M] / RD[b, h, M]  where kvlen[b] > 0
""",
    dict(q=rn(3, 2, 4), K=rn(3, 7, 4), V=rn(3, 7, 3), kvlen=np.array([7, 0, 3])),
    decode_ref,
    passes={"m": 1},
)


# --- RetNet: the recurrent form (state decayed by GAMMA) and the parallel form (decay GAMMA^(t - s) from the
# coordinates) give the same outputs; GAMMA overridden
def retnet_ref(Q, K, V, GAMMA=0.7):
    T = Q.shape[0]
    t, s = pm(T, T)
    d = np.where(s <= t, GAMMA ** (t - s).astype(float), 0.0)
    o = ((Q @ K.T) * d) @ V
    return o, o


case(
    "s21_rec_retnet_recurrent_and_parallel_forms_agree",
    """
input  Q[t, e], K[t, e], V[t, f]
param  GAMMA = 0.9
rank   S = T
output OR, OP
ST[0, e, f]     = 0
ST[t + 1, e, f] = GAMMA * ST[t, e, f] + K[t, e] * V[t, f]
OR[t, f]        = Q[t, e] * ST[t + 1, e, f]
QK[t, s]        = Q[t, e] * K[s, e]
OP[t, f]        = QK[t, s] * V[s, f] * exp(log(GAMMA) * (t - s))  where s <= t
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2)),
    retnet_ref,
    params={"GAMMA": 0.7},
)


# --- causal linear attention by a scan (states read after the step) and by a filter over an alias rank
case(
    "s21_rec_causal_linear_attention_scan_and_filter_agree",
    """
input  Q[t, e], K[t, e], V[t, f]
rank   S = T
output OSCAN, OFILT
FQ[t, e]        = elu(Q[t, e]) + 1
FK[t, e]        = elu(K[t, e]) + 1
KV[0, e, f]     = 0
Z[0, e]         = 0
KV[t + 1, e, f] = KV[t, e, f] + FK[t, e] * V[t, f]
Z[t + 1, e]     = Z[t, e] + FK[t, e]
NUM[t, f]       = FQ[t, e] * KV[t + 1, e, f]
DEN[t]          = FQ[t, e] * Z[t + 1, e]
OSCAN[t, f]     = NUM[t, f] / DEN[t]
NF[t, f]        = FQ[t, e] * FK[s, e] * V[s, f]  where s <= t
DF[t]           = FQ[t, e] * FK[s, e]  where s <= t
OFILT[t, f]     = NF[t, f] / DF[t]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    lambda Q, K, V: (causal_linear(Q, K, V), causal_linear(Q, K, V)),
)


# --- the online-normaliser softmax: the running max and denominator over tiles (M = 11, tiles of 4) in one
# pass, then the scores re-read and normalised by the final states: 2 passes over m
def online_norm_ref(Q, K, V):
    s = Q @ K.T
    return softmax(s) @ V, softmax(s)


case(
    "s21_rec_online_normaliser_softmax_two_passes",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 4
rank   M = M1 * M0
output O, A
S[p, m]        = Q[p, e] * K[m, e]
BS[p, m1, m0]  = S[p, m1 * M0 + m0]
LM[p, m1]      = BS[p, m1, m0] :: max(m0)
RM[p, 0]       = -inf
RD[p, 0]       = 0
RM[p, m1 + 1]  = max(RM[p, m1], LM[p, m1])
LD[p, m1]      = exp(BS[p, m1, m0] - RM[p, m1 + 1])
RD[p, m1 + 1]  = RD[p, m1] * exp(RM[p, m1] - RM[p, m1 + 1]) + LD[p, m1]
A[p, m]        = exp(S[p, m] - RM[p, M1]) / RD[p, M1]
O[p, f]        = A[p, m] * V[m, f]
""",
    dict(Q=rn(4, 3), K=rn(11, 3), V=rn(11, 2)),
    online_norm_ref,
    passes={"m": 2},
)


# --- Cascade 5 with the query rank tiled too (P = 7 in tiles of 3, M = 9 in tiles of 4): the states carry
# both query parts and the output is put back together with // and %
case(
    "s21_rec_cascade5_query_and_key_tiles_states_per_query_tile",
    """
input  Q[p, e], K[m, e], V[m, f]
param  P0 = 3
param  M0 = 4
rank   P = P1 * P0
rank   M = M1 * M0
output O
BQ[p1, p0, e]         = Q[p1 * P0 + p0, e]
BK[m1, m0, e]         = K[m1 * M0 + m0, e]
BV[m1, m0, f]         = V[m1 * M0 + m0, f]
RM[0, p1, p0]         = -inf
RD[0, p1, p0]         = 0
RN[0, p1, p0, f]      = 0
BQK[m1, m0, p1, p0]   = BQ[p1, p0, e] * BK[m1, m0, e] * rsqrt(E)
LM[m1, p1, p0]        = BQK[m1, m0, p1, p0] :: max(m0)
RM[m1 + 1, p1, p0]    = max(RM[m1, p1, p0], LM[m1, p1, p0])
SLN[m1, m0, p1, p0]   = exp(BQK[m1, m0, p1, p0] - RM[m1 + 1, p1, p0])
PRM[m1, p1, p0]       = exp(RM[m1, p1, p0] - RM[m1 + 1, p1, p0])
SLD[m1, p1, p0]       = SLN[m1, m0, p1, p0]
SLNV[m1, p1, p0, f]   = SLN[m1, m0, p1, p0] * BV[m1, m0, f]
RD[m1 + 1, p1, p0]    = RD[m1, p1, p0] * PRM[m1, p1, p0] + SLD[m1, p1, p0]
RN[m1 + 1, p1, p0, f] = RN[m1, p1, p0, f] * PRM[m1, p1, p0] + SLNV[m1, p1, p0, f]
OT[p1, p0, f]         = RN[M1, p1, p0, f] / RD[M1, p1, p0]
O[p, f]               = OT[p // P0, p % P0, f]
""",
    dict(Q=rn(7, 3), K=rn(9, 3), V=rn(9, 2)),
    lambda Q, K, V: att(Q, K, V),
    passes={"m": 1, "m1": 1, "m0": 2},
)
