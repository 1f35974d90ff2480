# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""Linear recurrences of recent sequence models, each against a plain Python loop: gated DeltaNet (L2-normalised
keys, the delta rule's k^T S inside the step), RWKV-6 (data-dependent per-channel decay and the bonus u),
Mamba-2's SSD as a scan and as its quadratic dual, HGRN with a lower-bounded forget gate (all states output),
decayed linear attention with a normaliser state, chunked decayed linear attention over a ragged 17 (the chunk
state a recurrence over chunks), a running log-sum-exp over +-1e4, and sLSTM's stabilised exponential gating."""

import numpy as np

from .common import make_rn, registry

rn, rng = make_rn(1504)
CASES, case = registry()


def sig(x):
    return 1 / (1 + np.exp(-x))


def softplus(x):
    return np.logaddexp(0.0, x)


# --- gated DeltaNet (Yang et al. 2025): S_t = a_t (S - b_t k (k^T S)) + b_t k v^T with k L2-normalised,
# o_t = q_t^T S_t / sqrt(E); also the final state
def gdn_ref(Q, K, V, A, BETA):
    T, E = Q.shape
    S = np.zeros((E, V.shape[1]))
    O = np.zeros((T, V.shape[1]))
    for t in range(T):
        k = K[t] / np.linalg.norm(K[t])
        a, b = sig(A[t]), sig(BETA[t])
        S = a * (S - b * np.outer(k, k @ S)) + b * np.outer(k, V[t])
        O[t] = Q[t] @ S / np.sqrt(E)
    return O, S


case(
    "s15_gated_deltanet_recurrence_final_state",
    """
input  Q[t, e], K[t, e], V[t, f], A[t], BETA[t]
rank   D = E
output O, SF
KS[t]          = square(K[t, e])
KN[t, e]       = K[t, e] * rsqrt(KS[t])
S[0, e, f]     = 0
KTS[t, f]      = KN[t, d] * S[t, d, f]
S[t + 1, e, f] = sigmoid(A[t]) * (S[t, e, f] - sigmoid(BETA[t]) * KN[t, e] * KTS[t, f]) \\
                 + sigmoid(BETA[t]) * KN[t, e] * V[t, f]
O[t, f]        = Q[t, e] * S[t + 1, e, f] * rsqrt(E)
SF[e, f]       = S[T, e, f]
""",
    dict(Q=rn(9, 3), K=rn(9, 3), V=rn(9, 2), A=rn(9) + 1.5, BETA=rn(9)),
    gdn_ref,
    passes={"t": 1},
)


# --- RWKV-6 (Peng et al. 2024): per head, per-channel decay w_t = exp(-exp(W_t)), the output reads the state
# before the step plus the bonus u for the current token
def rwkv6_ref(R, K, V, W, U):
    H, T, E = R.shape
    F = V.shape[2]
    O = np.zeros((H, T, F))
    for h in range(H):
        S = np.zeros((E, F))
        for t in range(T):
            kv = np.outer(K[h, t], V[h, t])
            O[h, t] = R[h, t] @ (S + U[h][:, None] * kv)
            S = np.exp(-np.exp(W[h, t]))[:, None] * S + kv
    return O


case(
    "s15_rwkv6_data_dependent_decay_bonus",
    """
input  R[h, t, e], K[h, t, e], V[h, t, f], W[h, t, e], U[h, e]
output O
WD[h, t, e]       = exp(-exp(W[h, t, e]))
S[h, 0, e, f]     = 0
S[h, t + 1, e, f] = WD[h, t, e] * S[h, t, e, f] + K[h, t, e] * V[h, t, f]
O[h, t, f]        = R[h, t, e] * (S[h, t, e, f] + U[h, e] * K[h, t, e] * V[h, t, f])
""",
    dict(R=rn(2, 7, 3), K=rn(2, 7, 3), V=rn(2, 7, 2), W=rn(2, 7, 3), U=rn(2, 3)),
    rwkv6_ref,
)


# --- Mamba-2's SSD: dt = softplus(DT + dtb), a = exp(dt * A) with A = -exp(ALOG), state h_t = a h + dt B x,
# y = C h + Dskip x; as a scan and as the quadratic dual (the decay between key m and query p a sum of dt * A
# over m < l <= p, over a filter-only rank), both against one loop
def ssd_ref(X, DT, dtb, ALOG, Bm, Cm, Dskip):
    T, H, F = X.shape
    N = Bm.shape[1]
    dt = softplus(DT + dtb[None, :])
    A = -np.exp(ALOG)
    Y = np.zeros((T, H, F))
    for h in range(H):
        st = np.zeros((N, F))
        for t in range(T):
            st = np.exp(dt[t, h] * A[h]) * st + dt[t, h] * np.outer(Bm[t], X[t, h])
            Y[t, h] = Cm[t] @ st + Dskip[h] * X[t, h]
    return Y, Y


case(
    "s15_mamba2_ssd_scan_and_quadratic_dual",
    """
input  X[t, h, f], DT[t, h], dtb[h], ALOG[h], Bm[t, n], Cm[t, n], Dskip[h]
rank   P = T
rank   M = T
rank   L = T
output Y1, Y2
DT1[t, h]         = softplus(DT[t, h] + dtb[h])
LA[t, h]          = DT1[t, h] * -exp(ALOG[h])
ST[0, h, n, f]    = 0
ST[t + 1, h, n, f] = exp(LA[t, h]) * ST[t, h, n, f] + DT1[t, h] * Bm[t, n] * X[t, h, f]
Y1[t, h, f]       = Cm[t, n] * ST[t + 1, h, n, f] + Dskip[h] * X[t, h, f] / N
CB[p, m]          = Cm[p, n] * Bm[m, n]
CUM[h, p, m]      = LA[l, h]  where m < l and l <= p
YQ[p, h, f]       = CB[p, m] * exp(CUM[h, p, m] ?? 0) * DT1[m, h] * X[m, h, f]  where m <= p
Y2[p, h, f]       = YQ[p, h, f] + Dskip[h] * X[p, h, f]
""",
    dict(X=rn(8, 2, 2), DT=rn(8, 2), dtb=rn(2), ALOG=rn(2, scale=0.5), Bm=rn(8, 3), Cm=rn(8, 3), Dskip=rn(2)),
    lambda X, DT, dtb, ALOG, Bm, Cm, Dskip: ssd_ref(X, DT, dtb, ALOG, Bm, Cm, Dskip),
)


# --- HGRN (Qin et al. 2023): h_t = f h + (1 - f) tanh(i) with f = LB + (1 - LB) sigmoid(F), LB overridden
# from 0.0 to 0.6; every state (T + 1 of them) and the gated output
def hgrn_ref(I, F, G, LB=0.6):
    T, D = I.shape
    Hs = np.zeros((T + 1, D))
    for t in range(T):
        f = LB + (1 - LB) * sig(F[t])
        Hs[t + 1] = f * Hs[t] + (1 - f) * np.tanh(I[t])
    return Hs, Hs[1:] * sig(G)


case(
    "s15_hgrn_lower_bounded_forget_gate_all_states_override",
    """
input  I[t, d], F[t, d], G[t, d]
param  LB = 0.0
output HS, O
FG[t, d]     = LB + (1 - LB) * sigmoid(F[t, d])
HS[0, d]     = 0
HS[t + 1, d] = FG[t, d] * HS[t, d] + (1 - FG[t, d]) * tanh(I[t, d])
O[t, d]      = HS[t + 1, d] * sigmoid(G[t, d])
""",
    dict(I=rn(6, 3), F=rn(6, 3), G=rn(6, 3)),
    hgrn_ref,
    params={"LB": 0.6},
)


# --- decayed linear attention with a normaliser state: S = g S + phi(k) v^T, z = g z + phi(k),
# o = phi(q) S / phi(q) z, phi = elu + 1, g a scalar input
def dla_ref(Q, K, V, g):
    T, E = Q.shape
    phi = lambda x: np.where(x > 0, x, np.expm1(x)) + 1  # noqa: E731
    S = np.zeros((E, V.shape[1]))
    z = np.zeros(E)
    O = np.zeros((T, V.shape[1]))
    for t in range(T):
        S = g * S + np.outer(phi(K[t]), V[t])
        z = g * z + phi(K[t])
        O[t] = phi(Q[t]) @ S / (phi(Q[t]) @ z)
    return O


case(
    "s15_decayed_linear_attention_normaliser_state_scalar_gate",
    """
input  Q[t, e], K[t, e], V[t, f], g
output O
FQ[t, e]       = elu(Q[t, e]) + 1
FK[t, e]       = elu(K[t, e]) + 1
S[0, e, f]     = 0
Z[0, e]        = 0
S[t + 1, e, f] = g * S[t, e, f] + FK[t, e] * V[t, f]
Z[t + 1, e]    = g * Z[t, e] + FK[t, e]
NUM[t, f]      = FQ[t, e] * S[t + 1, e, f]
DEN[t]         = FQ[t, e] * Z[t + 1, e]
O[t, f]        = NUM[t, f] / DEN[t]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2), g=np.array(0.8)),
    dla_ref,
)


# --- chunked decayed linear attention (retention without normalisation) over T = 17 in chunks of T0 = 4
# (a ragged last chunk): exact within a chunk, a state over the chunks before it; GAM overridden to 0.7. The
# chunk's key-value sum is a statement of its own (inside the update it would add the decayed state T0 times)
def chunk_ref(Q, K, V, GAM=0.7):
    T = Q.shape[0]
    p = np.arange(T)[:, None]
    m = np.arange(T)[None, :]
    w = np.where(m <= p, (Q @ K.T) * GAM ** np.maximum(p - m, 0), 0.0)
    return w @ V


case(
    "s15_chunked_decay_linear_attention_ragged17_override",
    """
input  Q[t, e], K[t, e], V[t, f]
param  T0 = 4
param  GAM = 0.9
rank   T = T1 * T0
rank   U = T0
output O
BQ[t1, t0, e]     = Q[t1 * T0 + t0, e]
BK[t1, u, e]      = K[t1 * T0 + u, e]
BV[t1, u, f]      = V[t1 * T0 + u, f]
QK[t1, t0, u]     = BQ[t1, t0, e] * BK[t1, u, e]  where u <= t0
OI[t1, t0, f]     = QK[t1, t0, u] * exp((t0 - u) * log(GAM)) * BV[t1, u, f]
KVC[t1, e, f]     = BK[t1, u, e] * BV[t1, u, f] * exp((T0 - 1 - u) * log(GAM))
S[0, e, f]        = 0
S[t1 + 1, e, f]   = exp(T0 * log(GAM)) * S[t1, e, f] + KVC[t1, e, f]
OX[t1, t0, f]     = BQ[t1, t0, e] * S[t1, e, f] * exp((t0 + 1) * log(GAM))
O[t, f]           = OI[t // T0, t % T0, f] + OX[t // T0, t % T0, f]
""",
    dict(Q=rn(17, 3), K=rn(17, 3), V=rn(17, 2)),
    chunk_ref,
    params={"GAM": 0.7},
)


# --- a running log-sum-exp (logcumsumexp) over inputs of +-1e4 and ordinary size, stabilised per step, and the
# softmax weights of every input against the final value (one input dominates, so that float32 keeps them)
def rlse_ref(X):
    L = np.zeros(len(X))
    acc = -np.inf
    for t, x in enumerate(X):
        acc = np.logaddexp(acc, x)
        L[t] = acc
    return L, np.exp(X - acc)


case(
    "s15_running_logsumexp_scan_pm_1e4",
    """
input  X[t]
output L, W
R[0]     = -inf
MX[t]    = max(R[t], X[t])
R[t + 1] = MX[t] + log(exp(R[t] - MX[t]) + exp(X[t] - MX[t]))
L[t]     = R[t + 1]
W[t]     = exp(X[t] - R[T])
""",
    dict(X=np.array([-1e4, 0.5, -1e4, 1e4, 3.0, -2.0, 9980.0, -1e4])),
    rlse_ref,
)


# --- sLSTM's exponential gating with its stabiliser (Beck et al. 2024): m_t = max(f~ + m, i~), i = exp(i~ - m_t),
# f = exp(f~ + m - m_t), c = f c + i z, n = f n + i, h = o c / n; per channel, log-sigmoid forget gates, input
# gate pre-activations up to 30 (exp would overflow float32 without the stabiliser)
def slstm_ref(IT, FT, Z, OG):
    T, D = IT.shape
    c = np.zeros(D)
    n = np.zeros(D)
    mm = np.full(D, -np.inf)
    H = np.zeros((T, D))
    for t in range(T):
        lf = -softplus(-FT[t])
        mn = np.maximum(lf + mm, IT[t])
        i = np.exp(IT[t] - mn)
        f = np.exp(lf + mm - mn)
        c = f * c + i * np.tanh(Z[t])
        n = f * n + i
        mm = mn
        H[t] = sig(OG[t]) * c / n
    return H


_IT = rn(7, 3, scale=3)
_IT[2, 1] = 30.0
_IT[4, 0] = 95.0
case(
    "s15_slstm_stabilised_exponential_gating",
    """
input  IT[t, d], FT[t, d], Z[t, d], OG[t, d]
output H
LF[t, d]     = -softplus(-FT[t, d])
MS[0, d]     = -inf
C[0, d]      = 0
N[0, d]      = 0
MS[t + 1, d] = max(LF[t, d] + MS[t, d], IT[t, d])
IG[t, d]     = exp(IT[t, d] - MS[t + 1, d])
FG[t, d]     = exp(LF[t, d] + MS[t, d] - MS[t + 1, d])
C[t + 1, d]  = FG[t, d] * C[t, d] + IG[t, d] * tanh(Z[t, d])
N[t + 1, d]  = FG[t, d] * N[t, d] + IG[t, d]
H[t, d]      = sigmoid(OG[t, d]) * C[t + 1, d] / N[t + 1, d]
""",
    dict(IT=_IT, FT=rn(7, 3), Z=rn(7, 3), OG=rn(7, 3)),
    slstm_ref,
)
