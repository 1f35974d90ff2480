"""Cascades that are not attention, as a researcher would write them in the language: a label-smoothed
cross-entropy with ignored rows and a count from a filter alone, a pre-norm SwiGLU block with RMSNorm and a
residual, group norm over a partition of the channels with a ragged last group, a dense mixture of experts
with a softmax router and an importance loss, max and average pooling with stride and padding (absent
padding, an output window past the end), a dilated causal depthwise convolution with gating, additive
(Bahdanau) attention, the symmetric InfoNCE loss of CLIP, and a log-sum-exp over two ranks at logits of
1e4 computed jointly and rank by rank."""

import numpy as np

from .common import make_rn, registry, sig, softmax

rn, rng = make_rn(1702)
CASES, case = registry()


# --- cross-entropy with label smoothing; tgt -1 is ignored; LOSS is the mean over the kept rows
def xent_ref(Z, tgt, EPS=0.1):
    P = Z.shape[0]
    gm = Z.max(1)
    lse_ = gm + np.log(np.exp(Z - gm[:, None]).sum(1))
    keep = tgt >= 0
    nll = np.zeros(P)
    for p in range(P):
        if keep[p]:
            nll[p] = lse_[p] - (1 - EPS) * Z[p, tgt[p]] - EPS * Z[p].mean()
    return nll[keep].sum() / keep.sum(), nll


case(
    "s17_nn_cross_entropy_label_smoothing_ignore_index",
    """
# cross-entropy over C classes with label smoothing EPS; rows with target -1 are ignored
input  Z[p, c], tgt[p] : int
param  EPS = 0.1
output LOSS, NLL
GM[p]  = Z[p, c] :: max(c)
SE[p]  = exp(Z[p, c] - GM[p])
LSE[p] = GM[p] + log(SE[p])
MZ[p]  = Z[p, c] / C
NLL[p] = LSE[p] - (1 - EPS) * Z[p, tgt[p]] - EPS * MZ[p]  where tgt[p] >= 0
CNT    = 1  where tgt[p] >= 0
TOT    = NLL[p]
LOSS   = TOT / CNT
""",
    dict(Z=rn(6, 5, scale=2.0), tgt=np.array([3, -1, 0, 4, -1, 1], dtype=np.int64)),
    xent_ref,
    passes={"c": 2, "p": 1},
)


# --- pre-norm SwiGLU block: RMSNorm with a gain, SiLU(X W1) * (X W3), projected back, plus the residual
def swiglu_ref(X, G, W1, W3, W2, EPS=1e-6):
    xn = X / np.sqrt((X**2).mean(1, keepdims=True) + EPS) * G
    a = xn @ W1
    h = a * sig(a) * (xn @ W3)
    return X + h @ W2


case(
    "s17_nn_prenorm_swiglu_block_residual",
    """
# RMSNorm -> SwiGLU -> down projection -> residual
input  X[p, d], G[d], W1[d, j], W3[d, j], W2[j, d]
param  EPS = 1e-6
output Y
MS[p]     = square(X[p, d]) / D
XN[p, d]  = X[p, d] * rsqrt(MS[p] + EPS) * G[d]
A[p, j]   = XN[p, d] * W1[d, j]
B[p, j]   = XN[p, d] * W3[d, j]
H[p, j]   = A[p, j] * sigmoid(A[p, j]) * B[p, j]
MLP[p, d] = H[p, j] * W2[j, d]
Y[p, d]   = X[p, d] + MLP[p, d]
""",
    dict(X=rn(3, 5), G=rn(5), W1=rn(5, 6), W3=rn(5, 6), W2=rn(6, 5)),
    swiglu_ref,
    passes={"d": 3, "j": 1},
)


# --- group norm: channels in groups of CG (C = 5: the last group has one channel), statistics per (b, g)
def groupnorm_ref(X, GAM, BET, CG=2, EPS=1e-5):
    B, C = X.shape[:2]
    Y = np.zeros_like(X)
    for b in range(B):
        for g0 in range(0, C, CG):
            blk = X[b, g0 : g0 + CG]
            mu, var = blk.mean(), blk.var()
            Y[b, g0 : g0 + CG] = (blk - mu) / np.sqrt(var + EPS)
    return Y * GAM[None, :, None] + BET[None, :, None]


case(
    "s17_nn_group_norm_partitioned_channels_ragged_group",
    """
# group norm over groups of CG channels; a ragged last group counts only its own channels
input  X[b, c, t], GAM[c], BET[c]
param  CG = 2
param  EPS = 1e-5
rank   C = G * CG
output Y
ONE[b, g, cg, t] = X[b, g * CG + cg, t] * 0 + 1
N[b, g]          = ONE[b, g, cg, t]
MU[b, g]         = X[b, g * CG + cg, t] / N[b, g]
VAR[b, g]        = square(X[b, g * CG + cg, t] - MU[b, g]) / N[b, g]
Y[b, c, t]       = (X[b, c, t] - MU[b, c // CG]) * rsqrt(VAR[b, c // CG] + EPS) * GAM[c] + BET[c]
""",
    dict(X=rn(2, 5, 3), GAM=rn(5), BET=rn(5)),
    groupnorm_ref,
    passes={
        "t": 4
    },  # N counts X's own points (X * 0 + 1), so MU divides by a reduction of X's fiber: 4 passes
)


# --- dense mixture of experts: softmax router over R experts, each expert linear; the importance loss
def moe_ref(X, WG, WE):
    P = X.shape[0]
    R = WG.shape[1]
    g = softmax(X @ WG)
    xe = np.einsum("pd,rdf->prf", X, WE)
    imp = g.sum(0) / P
    return np.einsum("pr,prf->pf", g, xe), (imp**2).sum() * R


case(
    "s17_nn_dense_moe_softmax_router_importance_loss",
    """
# every token mixes all R experts by its router's softmax; AUX is R * sum of squared mean gates
input  X[p, d], WG[d, r], WE[r, d, f]
output Y, AUX
L[p, r]     = X[p, d] * WG[d, r]
GM[p]       = L[p, r] :: max(r)
EX[p, r]    = exp(L[p, r] - GM[p])
SD[p]       = EX[p, r]
G[p, r]     = EX[p, r] / SD[p]
XE[p, r, f] = X[p, d] * WE[r, d, f]
Y[p, f]     = G[p, r] * XE[p, r, f]
IMP[r]      = G[p, r] / P
AUX         = square(IMP[r]) * R
""",
    dict(X=rn(5, 3), WG=rn(3, 4), WE=rn(4, 3, 2)),
    moe_ref,
    passes={"r": 3, "p": 1},
)


# --- max and average pooling, stride S, padding PAD (absent, not zero), window KW; O = 5 output positions
# (overridden) so the last window lies wholly past the end: absent, delivered as 0
def pool_ref(X, S=2, PAD=1, KW=3, O=5):
    C, T = X.shape
    MX = np.zeros((C, O))
    AVG = np.zeros((C, O))
    for o in range(O):
        idx = [o * S + k - PAD for k in range(KW) if 0 <= o * S + k - PAD < T]
        if idx:
            MX[:, o] = X[:, idx].max(1)
            AVG[:, o] = X[:, idx].mean(1)
    return MX, AVG


case(
    "s17_nn_max_and_avg_pool_stride_padding_absent",
    """
# pooling windows X[o * S + kw - PAD]: reads outside X are absent, so the average counts only real entries
input  X[c, t]
param  S = 2
param  PAD = 1
param  KW = 3
param  O = 4
output MX, AVG
MX[c, o]      = X[c, o * S + kw - PAD] :: max(kw)
ONE[c, o, kw] = X[c, o * S + kw - PAD] * 0 + 1
CNT[c, o]     = ONE[c, o, kw]
SUM[c, o]     = X[c, o * S + kw - PAD]
AVG[c, o]     = SUM[c, o] / CNT[c, o]
""",
    dict(X=rn(3, 7) - 3.0),
    pool_ref,
    params={"O": 5},
)


# --- dilated causal depthwise convolution (Mamba-style), a bias, SiLU, gated by SiLU(Z)
def dconv_ref(X, W, BIAS, Z, DIL=2):
    T, C = X.shape
    K = W.shape[1]
    cv = np.zeros((T, C))
    for t in range(T):
        for k in range(K):
            if t - DIL * k >= 0:
                cv[t] += W[:, k] * X[t - DIL * k]
    y = cv + BIAS
    return y * sig(y) * (Z * sig(Z))


case(
    "s17_nn_dilated_causal_depthwise_conv_gated",
    """
# causal depthwise convolution with dilation DIL: taps before t = 0 are absent (zero padding)
input  X[t, c], W[c, k], BIAS[c], Z[t, c]
param  DIL = 2
output O
CV[t, c] = W[c, k] * X[t - DIL * k, c]
Y[t, c]  = CV[t, c] + BIAS[c]
O[t, c]  = Y[t, c] * sigmoid(Y[t, c]) * Z[t, c] * sigmoid(Z[t, c])
""",
    dict(X=rn(8, 3), W=rn(3, 3), BIAS=rn(3), Z=rn(8, 3)),
    dconv_ref,
)


# --- additive (Bahdanau) attention: the score is v . tanh(Wq q + Wk k), a full [m, p, a] tensor
def bahdanau_ref(Q, K, V, WQ, WK, VA):
    qa = Q @ WQ
    ka = K @ WK
    s = np.tanh(qa[:, None, :] + ka[None, :, :]) @ VA
    return softmax(s) @ V


case(
    "s17_nn_additive_bahdanau_attention",
    """
# additive attention: each projection in its own statement, so tanh sees the whole sum
input  Q[p, e], K[m, e], V[m, f], WQ[e, a], WK[e, a], VA[a]
output O
QA[p, a] = Q[p, e] * WQ[e, a]
KA[m, a] = K[m, e] * WK[e, a]
S[m, p]  = VA[a] * tanh(QA[p, a] + KA[m, a])
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(4, 3), K=rn(7, 3), V=rn(7, 2), WQ=rn(3, 5), WK=rn(3, 5), VA=rn(5)),
    bahdanau_ref,
    passes={"m": 3},
)


# --- CLIP's symmetric InfoNCE: a softmax along each axis of the similarity matrix, the diagonal the targets
def clip_ref(X, Y, T=0.5):
    L = X @ Y.T / T
    I = L.shape[0]

    def lse_(a, ax):
        mx = a.max(ax, keepdims=True)
        return (mx + np.log(np.exp(a - mx).sum(ax, keepdims=True))).squeeze(ax)

    d = np.diag(L)
    return ((lse_(L, 1) - d).sum() + (lse_(L, 0) - d).sum()) / (2 * I)


case(
    "s17_nn_clip_symmetric_infonce",
    """
# image-text contrastive loss: log-softmax along rows and along columns, the matching pairs on the diagonal
input  X[i, d], Y[k, d]
param  T = 0.5
output LOSS
L[i, k] = X[i, d] * Y[k, d] / T
RM[i]   = L[i, k] :: max(k)
RS[i]   = exp(L[i, k] - RM[i])
CM[k]   = L[i, k] :: max(i)
CS[k]   = exp(L[i, k] - CM[k])
DIAG[i] = L[i, i]
LOSS    = (RM[i] + log(RS[i]) - DIAG[i] + CM[i] + log(CS[i]) - DIAG[i]) / (2 * I)
""",
    dict(X=rn(5, 3), Y=rn(5, 3)),
    clip_ref,
)


# --- log-sum-exp over two ranks of logits of size 1e4: jointly, and as a log-sum-exp of log-sum-exps
def lse2_ref(X):
    gm = X.max()
    joint = gm + np.log(np.exp(X - gm).sum())
    r = X.max(1)
    inner = r + np.log(np.exp(X - r[:, None]).sum(1))
    g2 = inner.max()
    return joint, g2 + np.log(np.exp(inner - g2).sum())


case(
    "s17_nn_logsumexp_two_ranks_joint_and_nested_1e4",
    """
# log-sum-exp over (i, j) two ways; the logits span +-3e4, so any unstabilised exp overflows
input  X[i, j]
output JOINT, NESTED
GM       = X[i, j] :: max(i, j)
SE       = exp(X[i, j] - GM)
JOINT    = GM + log(SE)
RM[i]    = X[i, j] :: max(j)
RS[i]    = exp(X[i, j] - RM[i])
IN[i]    = RM[i] + log(RS[i])
G2       = IN[i] :: max(i)
S2       = exp(IN[i] - G2)
NESTED   = G2 + log(S2)
""",
    dict(X=rn(4, 6, scale=1e4)),
    lse2_ref,
    passes={"j": 2},
)
