"""Roadmap-shaped cascades, continued: split-K decoding with partial states as outputs, merging partials by
their log-sum-exp (context parallel), two KV sources, non-softmax normalisers (softpick, stick-breaking,
sigmoid with a -log n bias), compressed keys, learned position biases (KERPLE, T5 buckets, RoPE from position
ids), 2-D neighbourhoods, shifted and chunked windows, global tokens."""

import numpy as np

from .common import att, causal, lse, make_rn, registry, softmax

rn, rng = make_rn(1202)
CASES, case = registry()


# --- split-K decoding: one query per (b, h), keys split into chunks of S0; partial max / sum / numerator per
# chunk are outputs too, then the merge gives O and the log-sum-exp
def splitk_ref(q, K, V, S0=8):
    B, H, M, E = K.shape
    s = np.einsum("bhe,bhme->bhm", q, K) / np.sqrt(E)
    S1 = -(-M // S0)
    pad = np.full((B, H, S1 * S0), -np.inf)
    pad[..., :M] = s
    ch = pad.reshape(B, H, S1, S0)
    lm = ch.max(-1)
    ex = np.exp(ch - lm[..., None])
    ld = ex.sum(-1)
    vp = np.zeros((B, H, S1 * S0, V.shape[-1]))
    vp[:, :, :M] = V
    ln = np.einsum("bhsk,bhskf->bhsf", ex, vp.reshape(B, H, S1, S0, -1))
    o = np.einsum("bhm,bhmf->bhf", softmax(s), V)
    return o, lse(s), lm, ld, ln


case(
    "s12_splitk_partials_outputs",
    """
input  q[b, h, e], K[b, h, m, e], V[b, h, m, f]
param  S0 = 8
rank   M = S1 * S0
output O, LSE, LM, LD, LN
S[b, h, s1, s0]  = q[b, h, e] * K[b, h, s1 * S0 + s0, e] * rsqrt(E)
LM[b, h, s1]     = S[b, h, s1, s0] :: max(s0)
LX[b, h, s1, s0] = exp(S[b, h, s1, s0] - LM[b, h, s1])
LD[b, h, s1]     = LX[b, h, s1, s0]
LN[b, h, s1, f]  = LX[b, h, s1, s0] * V[b, h, s1 * S0 + s0, f]
GM[b, h]         = LM[b, h, s1] :: max(s1)
CF[b, h, s1]     = exp(LM[b, h, s1] - GM[b, h])
GD[b, h]         = LD[b, h, s1] * CF[b, h, s1]
GN[b, h, f]      = LN[b, h, s1, f] * CF[b, h, s1]
O[b, h, f]       = GN[b, h, f] / GD[b, h]
LSE[b, h]        = GM[b, h] + log(GD[b, h])
""",
    dict(q=rn(2, 2, 5), K=rn(2, 2, 37, 5), V=rn(2, 2, 37, 3)),
    splitk_ref,
    passes={"m": 1},
)


# --- split-K with chunk boundaries given as an int tensor (uneven splits, one empty split)
def bounds_ref(q, K, V, bnd):
    E = K.shape[-1]
    s = K @ q / np.sqrt(E)
    S = len(bnd) - 1
    lm, ld, ln = [], [], []
    for i in range(S):
        sl = s[bnd[i] : bnd[i + 1]]
        if len(sl) == 0:
            continue
        mx = sl.max()
        ex = np.exp(sl - mx)
        lm.append(mx)
        ld.append(ex.sum())
        ln.append(ex @ V[bnd[i] : bnd[i + 1]])
    g = max(lm)
    cf = np.exp(np.array(lm) - g)
    return (cf[:, None] * np.array(ln)).sum(0) / (cf * np.array(ld)).sum()


case(
    "s12_splitk_int_bounds_empty_split",
    """
input  q[e], K[m, e], V[m, f], bnd[n] : int
param  S = 4
output O
SC[s, m]  = q[e] * K[m, e] * rsqrt(E)  where bnd[s] <= m and m < bnd[s + 1]
LM[s]     = SC[s, m] :: max(m)
LX[s, m]  = exp(SC[s, m] - LM[s])
LD[s]     = LX[s, m]
LN[s, f]  = LX[s, m] * V[m, f]
GM        = LM[s] :: max(s)
CF[s]     = exp(LM[s] - GM)
GD        = LD[s] * CF[s]
GN[f]     = LN[s, f] * CF[s]
O[f]      = GN[f] / GD
""",
    dict(q=rn(4), K=rn(29, 4), V=rn(29, 3), bnd=np.array([0, 9, 9, 20, 29])),
    bounds_ref,
    passes={"m": 2, "s": 2},
)


# --- context parallel: merge C partial outputs by their log-sum-exps; one chunk is empty for some rows
# (LSE = -inf there); the merged LSE is an output too
def cp_ref(OP, L):
    g = L.max(0)
    w = np.exp(L - g)
    den = w.sum(0)
    return (w[..., None] * OP).sum(0) / den[:, None], g + np.log(den)


_L = rn(3, 6)
_L[1, :4] = -np.inf
case(
    "s12_cp_merge_lse_partials",
    """
input  OP[c, p, f], L[c, p]
output O, LSE
G[p]     = L[c, p] :: max(c)
W[c, p]  = exp(L[c, p] - G[p])
DEN[p]   = W[c, p]
O[p, f]  = W[c, p] * OP[c, p, f] / DEN[p]
LSE[p]   = G[p] + log(DEN[p])
""",
    dict(OP=rn(3, 6, 4), L=_L),
    cp_ref,
    passes={"c": 3},
)


# --- two KV sources in one softmax: a cache (all visible) and the new tokens (causal among themselves)
def two_src_ref(Q, KC, VC, KN, VN):
    P, _E = Q.shape
    MC = KC.shape[0]
    k = np.concatenate([KC, KN])
    v = np.concatenate([VC, VN])
    mask = np.concatenate([np.ones((P, MC), bool), causal(P, KN.shape[0])], axis=1)
    return att(Q, k, v, mask=mask)


case(
    "s12_two_kv_sources_cache_and_new",
    """
input  Q[p, e], KC[m, e], VC[m, f], KN[n, e], VN[n, f]
output O
SC[p, m]  = Q[p, e] * KC[m, e] * rsqrt(E)
SN[p, n]  = Q[p, e] * KN[n, e] * rsqrt(E)  where n <= p
GC[p]     = SC[p, m] :: max(m)
GN[p]     = SN[p, n] :: max(n)
G[p]      = max(GC[p], GN[p])
XC[p, m]  = exp(SC[p, m] - G[p])
XN[p, n]  = exp(SN[p, n] - G[p])
DC[p]     = XC[p, m]
DN[p]     = XN[p, n]
NC[p, f]  = XC[p, m] * VC[m, f]
NN[p, f]  = XN[p, n] * VN[n, f]
O[p, f]   = (NC[p, f] + NN[p, f]) / (DC[p] + DN[p])
""",
    dict(Q=rn(3, 4), KC=rn(37, 4), VC=rn(37, 2), KN=rn(3, 4), VN=rn(3, 2)),
    two_src_ref,
    passes={"m": 2, "n": 2},
)


# --- softpick (rectified softmax): relu(e^x - 1) / sum |e^x - 1|, stabilised by the row max
def softpick_ref(Q, K, V):
    s = Q @ K.T / np.sqrt(Q.shape[1])
    num = np.maximum(np.exp(s) - 1, 0)
    den = np.abs(np.exp(s) - 1).sum(1, keepdims=True)
    return (num / den) @ V


case(
    "s12_softpick",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
G[p]     = S[p, m] :: max(m)
T[p, m]  = exp(S[p, m] - G[p]) - exp(-G[p])
D[p]     = abs(T[p, m])
O[p, f]  = relu(T[p, m]) * V[m, f] / D[p]
""",
    dict(Q=rn(5, 4), K=rn(9, 4), V=rn(9, 3)),
    softpick_ref,
    passes={"m": 3},
)


# --- stick-breaking attention, in log space:
# A[p, m] = sigmoid(z[p, m]) * prod_{m < j < p} (1 - sigmoid(z[p, j]));
# row 0 has no key (strictly causal): 0
def stick_ref(Q, K, V):
    P = Q.shape[0]
    z = Q @ K.T / np.sqrt(Q.shape[1])
    sig = 1 / (1 + np.exp(-z))
    A = np.zeros_like(z)
    for p in range(P):
        for m in range(p):
            A[p, m] = sig[p, m] * np.prod([1 - sig[p, j] for j in range(m + 1, p)])
    return A @ V


case(
    "s12_stick_breaking",
    """
input  Q[p, e], K[m, e], V[m, f]
rank   J = M
output O
Z[p, m]    = Q[p, e] * K[m, e] * rsqrt(E)
SP[p, m]   = softplus(Z[p, m])
CUM[p, m]  = SP[p, j]  where m < j and j < p
A[p, m]    = exp(-softplus(-Z[p, m]) - (CUM[p, m] ?? 0))  where m < p
O[p, f]    = A[p, m] * V[m, f]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    stick_ref,
)


# --- sigmoid attention with the -log(n) bias (Ramapuram et al.), causal, n = M as a value
case(
    "s12_sigmoid_attention_log_n_bias",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
S[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
O[h, p, f] = sigmoid(S[h, p, m] - log(M)) * V[h, m, f]
""",
    dict(Q=rn(2, 6, 4), K=rn(2, 6, 4), V=rn(2, 6, 3)),
    lambda Q, K, V: np.einsum(
        "hpm,hmf->hpf",
        np.where(causal(6, 6), 1 / (1 + np.exp(-(np.einsum("hpe,hme->hpm", Q, K) / 2 - np.log(6)))), 0),
        V,
    ),
)


# --- compressed keys (NSA-style): mean-pool K and V over blocks of M0 (the ragged last block averages fewer
# keys), then softmax attention over the blocks
def pooled_ref(Q, K, V, M0=8):
    M = K.shape[0]
    kc = np.array([K[i : i + M0].mean(0) for i in range(0, M, M0)])
    vc = np.array([V[i : i + M0].mean(0) for i in range(0, M, M0)])
    return att(Q, kc, vc)


case(
    "s12_mean_pooled_block_keys",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 8
rank   M = M1 * M0
output O
ONE[m1, m0] = K[m1 * M0 + m0, 0] * 0 + 1
CNT[m1]     = ONE[m1, m0]
KC[m1, e]   = K[m1 * M0 + m0, e] / CNT[m1]
VC[m1, f]   = V[m1 * M0 + m0, f] / CNT[m1]
S[p, m1]    = Q[p, e] * KC[m1, e] * rsqrt(E)
G[p]        = S[p, m1] :: max(m1)
N[p, m1]    = exp(S[p, m1] - G[p])
D[p]        = N[p, m1]
O[p, f]     = N[p, m1] * VC[m1, f] / D[p]
""",
    dict(Q=rn(4, 5), K=rn(37, 5), V=rn(37, 3)),
    pooled_ref,
    passes={"m": 1, "m1": 3, "m0": 2},
)


# --- KERPLE logarithmic bias: -r1[h] * log(1 + r2[h] * |p - m|), causal
def kerple_ref(Q, K, V, R1, R2):
    P, M = Q.shape[1], K.shape[1]
    d = np.abs(np.arange(P)[:, None] - np.arange(M)[None, :])
    bias = -R1[:, None, None] * np.log(1 + R2[:, None, None] * d)
    return att(Q, K, V, mask=causal(P, M), bias=bias)


case(
    "s12_kerple_log_bias",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], R1[h], R2[h]
output O
QK[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
S[h, p, m]  = QK[h, p, m] - R1[h] * log(1 + R2[h] * abs(p - m))
G[h, p]     = S[h, p, m] :: max(m)
N[h, p, m]  = exp(S[h, p, m] - G[h, p])
D[h, p]     = N[h, p, m]
O[h, p, f]  = N[h, p, m] * V[h, m, f] / D[h, p]
""",
    dict(Q=rn(2, 10, 4), K=rn(2, 10, 4), V=rn(2, 10, 3), R1=np.array([0.5, 2.0]), R2=np.array([1.0, 0.25])),
    kerple_ref,
)


# --- T5 relative-position buckets: an int bucket table indexed by p - m + M - 1, then a per-head bias table
def t5_ref(Q, K, V, BKT, TB):
    _H, P, _E = Q.shape
    M = K.shape[1]
    idx = np.arange(P)[:, None] - np.arange(M)[None, :] + M - 1
    bias = TB[:, BKT[idx]]
    return att(Q, K, V, bias=bias)


_M = 7
_rel = np.arange(-(_M - 1), 5)  # P - 1 = 4
_bkt = np.where(_rel < 0, 0, 1) * 4 + np.minimum(np.abs(_rel), 3)
case(
    "s12_t5_bucket_gather_bias",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], BKT[r] : int, TB[h, n]
output O
QK[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, p, m]  = QK[h, p, m] + TB[h, BKT[p - m + M - 1]]
G[h, p]     = S[h, p, m] :: max(m)
N[h, p, m]  = exp(S[h, p, m] - G[h, p])
D[h, p]     = N[h, p, m]
O[h, p, f]  = N[h, p, m] * V[h, m, f] / D[h, p]
""",
    dict(Q=rn(2, 5, 4), K=rn(2, _M, 4), V=rn(2, _M, 3), BKT=_bkt, TB=rn(2, 8)),
    t5_ref,
)


# --- RoPE from int position ids: cos/sin tables indexed by pos, rotating the pairs (2j, 2j + 1)
def rope_ref(Q, K, V, qpos, kpos, CS, SN):
    def rot(X, pos):
        a, b = X[:, 0::2], X[:, 1::2]
        c, s = CS[pos], SN[pos]
        return a * c - b * s, a * s + b * c

    qa, qb = rot(Q, qpos)
    ka, kb = rot(K, kpos)
    s = (qa @ ka.T + qb @ kb.T) / np.sqrt(Q.shape[1])
    return softmax(s, mask=kpos[None, :] <= qpos[:, None]) @ V


_th = np.arange(16)[:, None] * (10.0 ** -np.arange(3))[None, :]
case(
    "s12_rope_from_position_ids",
    """
input  Q[p, e], K[m, e], V[m, f], qpos[p] : int, kpos[m] : int, CS[t, j], SN[t, j]
output O
QA[p, j] = Q[p, 2 * j] * CS[qpos[p], j] - Q[p, 2 * j + 1] * SN[qpos[p], j]
QB[p, j] = Q[p, 2 * j] * SN[qpos[p], j] + Q[p, 2 * j + 1] * CS[qpos[p], j]
KA[m, j] = K[m, 2 * j] * CS[kpos[m], j] - K[m, 2 * j + 1] * SN[kpos[m], j]
KB[m, j] = K[m, 2 * j] * SN[kpos[m], j] + K[m, 2 * j + 1] * CS[kpos[m], j]
S[p, m]  = (QA[p, j] * KA[m, j] + QB[p, j] * KB[m, j]) * rsqrt(E)  where kpos[m] <= qpos[p]
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
O[p, f]  = N[p, m] * V[m, f] / D[p]
""",
    dict(
        Q=rn(4, 6),
        K=rn(9, 6),
        V=rn(9, 2),
        qpos=np.array([9, 10, 12, 15]),
        kpos=np.array([0, 1, 2, 5, 6, 9, 10, 12, 15]),
        CS=np.cos(_th),
        SN=np.sin(_th),
    ),
    rope_ref,
)


# --- 2-D neighbourhood attention on a grid of rows of WD, flattened row-major (NATTEN 2-D, kernel 3 x 3,
# no clamping)
def nat2d_ref(Q, K, V, WD=5):
    P = Q.shape[0]
    y, x = np.arange(P) // WD, np.arange(P) % WD
    mask = (np.abs(y[:, None] - y[None, :]) <= 1) & (np.abs(x[:, None] - x[None, :]) <= 1)
    return att(Q, K, V, mask=mask)


case(
    "s12_neighbourhood_2d_grid",
    """
input  Q[p, e], K[m, e], V[m, f]
param  WD = 5
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where abs(p // WD - m // WD) <= 1 and abs(p % WD - m % WD) <= 1
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
O[p, f]  = N[p, m] * V[m, f] / D[p]
""",
    dict(Q=rn(20, 3), K=rn(20, 3), V=rn(20, 2)),
    nat2d_ref,
)


# --- Swin-style shifted windows over a cyclic shift of the sequence
def swin_ref(Q, K, V, SH=2, WS=4):
    P = Q.shape[0]
    blk = ((np.arange(P) + SH) % P) // WS
    return att(Q, K, V, mask=blk[:, None] == blk[None, :])


case(
    "s12_shifted_window_blocks",
    """
input  Q[p, e], K[m, e], V[m, f]
param  SH = 2
param  WS = 4
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where (p + SH) % P // WS == (m + SH) % M // WS
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
O[p, f]  = N[p, m] * V[m, f] / D[p]
""",
    dict(Q=rn(14, 3), K=rn(14, 3), V=rn(14, 2)),
    swin_ref,
)

# --- chunked local causal attention (Llama 4 style): same chunk of C and causal
case(
    "s12_chunked_local_causal",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f]
param  C = 4
output O
S[b, p, m]  = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where p // C == m // C and m <= p
G[b, p]     = S[b, p, m] :: max(m)
N[b, p, m]  = exp(S[b, p, m] - G[b, p])
D[b, p]     = N[b, p, m]
O[b, p, f]  = N[b, p, m] * V[b, m, f] / D[b, p]
""",
    dict(Q=rn(2, 11, 4), K=rn(2, 11, 4), V=rn(2, 11, 3)),
    lambda Q, K, V: att(
        Q, K, V, mask=(np.arange(11)[:, None] // 4 == np.arange(11)[None, :] // 4) & causal(11, 11)
    ),
)


# --- global tokens plus a band (BigBird / Longformer): the first G queries and keys are global
def global_ref(Q, K, V, NG=2):
    P, M = Q.shape[0], K.shape[0]
    p, m = np.arange(P)[:, None], np.arange(M)[None, :]
    return att(Q, K, V, mask=(m < NG) | (p < NG) | (np.abs(p - m) <= 1))


case(
    "s12_global_tokens_and_band",
    """
input  Q[p, e], K[m, e], V[m, f]
param  NG = 2
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m < NG or p < NG or abs(p - m) <= 1
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
O[p, f]  = N[p, m] * V[m, f] / D[p]
""",
    dict(Q=rn(12, 4), K=rn(12, 4), V=rn(12, 3)),
    global_ref,
)
