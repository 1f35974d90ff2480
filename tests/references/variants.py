"""NumPy references for the variants library (examples/variants/), each written from its paper's formula.

None of this uses einattn. Every function loops over batch, head and query (or time) and evaluates the paper's
equation for one row, so that it reads like the paper rather than like the spec: masks are sets of positions,
softmaxes are over explicit lists, recurrences are Python loops, powers are ``**``. Shapes follow the specs:
``Q[b, h, p, e]``, ``K[b, h, m, e]``, ``V[b, h, m, f]`` unless a function says otherwise. A query row that
sees no key gives 0 (as the language delivers absent output points).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def softmax(s):
    """Softmax of a 1-D array of finite scores."""
    s = np.asarray(s, dtype=np.float64)
    w = np.exp(s - s.max())
    return w / w.sum()


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _rows(q):
    """(b, h, p) for every query row of q[b, h, p, ...]."""
    return itertools.product(*(range(n) for n in q.shape[:3]))


def attend(q, keys, values, scale, bias=None):
    """softmax_j(q . keys[j] * scale + bias[j]) @ values; zeros if there is no key."""
    if len(keys) == 0:
        return np.zeros(values.shape[-1])
    s = np.array([q @ k for k in keys]) * scale
    if bias is not None:
        s = s + bias
    return softmax(s) @ values


# ---- 1. multi-head attention, the four CAB patterns --------------------------------------------------------
def mha(Q, K, V, causal=False):
    """Vaswani et al. 2017. Causal (CAB, bottom-right aligned): key m is visible to p iff m <= p + M - P."""
    P, E, M = Q.shape[2], Q.shape[3], K.shape[2]
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        keys = [m for m in range(M) if not causal or m <= p + M - P]
        O[b, h, p] = attend(Q[b, h, p], K[b, h, keys], V[b, h, keys], 1 / math.sqrt(E))
    return O


# ---- 2. GQA, MQA -------------------------------------------------------------------------------------------
def gqa(Q, K, V, group):
    """Ainslie et al. 2023: query head h uses key/value head group(h)."""
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        g = group(h)
        O[b, h, p] = attend(Q[b, h, p], K[b, g], V[b, g], 1 / math.sqrt(Q.shape[3]))
    return O


def mqa(Q, K, V):
    """Shazeer 2019: one key/value head K[b, m, e] for all query heads."""
    O = np.zeros((*Q.shape[:3], V.shape[2]))
    for b, h, p in _rows(Q):
        O[b, h, p] = attend(Q[b, h, p], K[b], V[b], 1 / math.sqrt(Q.shape[3]))
    return O


# ---- 3. MoH ------------------------------------------------------------------------------------------------
def moh(Q, K, V, g, Wo):
    """Jin et al. 2024: O[b, p] = sum_h g[b, p, h] * head_h[b, p] @ Wo[h]."""
    heads = mha(Q, K, V)
    B, H, P = Q.shape[:3]
    O = np.zeros((B, P, Wo.shape[2]))
    for b, p in itertools.product(range(B), range(P)):
        O[b, p] = sum(g[b, p, h] * heads[b, h, p] @ Wo[h] for h in range(H))
    return O


# ---- 4. sigmoid attention without normalisation ------------------------------------------------------------
def sigmoid_causal(Q, K, V, bias):
    """Gu et al. 2024: O[p] = sum_{m <= p} sigmoid(q.k / sqrt(E) + bias) v_m."""
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        for m in range(min(p + 1, K.shape[2])):
            O[b, h, p] += sigmoid(Q[b, h, p] @ K[b, h, m] / math.sqrt(Q.shape[3]) + bias) * V[b, h, m]
    return O


# ---- 5. softmax with a sink --------------------------------------------------------------------------------
def softmax_sink(Q, K, V, sink):
    """a_m = exp(s_m) / (exp(sink[h]) + sum_{m' <= p} exp(s_m')), causal."""
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        s = np.array([Q[b, h, p] @ K[b, h, m] for m in range(p + 1)]) / math.sqrt(Q.shape[3])
        c = max(s.max(), sink[h])  # any shift; the max keeps exp finite
        a = np.exp(s - c) / (np.exp(sink[h] - c) + np.exp(s - c).sum())
        O[b, h, p] = a @ V[b, h, : p + 1]
    return O


# ---- 6. linear attention -----------------------------------------------------------------------------------
def elu_plus_one(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def linear(Q, K, V, causal=False):
    """Katharopoulos et al. 2020: sum_m phi(q).phi(k_m) v_m / sum_m phi(q).phi(k_m), m <= p if causal."""
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        last = p + 1 if causal else K.shape[2]
        w = np.array([elu_plus_one(Q[b, h, p]) @ elu_plus_one(K[b, h, m]) for m in range(last)])
        O[b, h, p] = w @ V[b, h, :last] / w.sum()
    return O


# ---- 7. Lightning Attention-2 ------------------------------------------------------------------------------
def lightning(Q, K, V, lam):
    """Qin et al. 2024: O[t] = sum_{s <= t} lam[h] ** (t - s) (q_t . k_s) v_s."""
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, t in _rows(Q):
        for s in range(t + 1):
            O[b, h, t] += lam[h] ** (t - s) * (Q[b, h, t] @ K[b, h, s]) * V[b, h, s]
    return O


# ---- 8. Agent attention ------------------------------------------------------------------------------------
def agent(Q, K, V, n_agents):
    """Han et al. 2024: A = adaptive_avg_pool(Q); O = softmax(Q A^T / sqrt E) softmax(A K^T / sqrt E) V."""
    P, E = Q.shape[2], Q.shape[3]
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h in itertools.product(*(range(n) for n in Q.shape[:2])):
        # PyTorch's adaptive_avg_pool1d: window n is [floor(n P / N), ceil((n + 1) P / N))
        A = np.array(
            [
                Q[b, h, math.floor(n * P / n_agents) : math.ceil((n + 1) * P / n_agents)].mean(axis=0)
                for n in range(n_agents)
            ]
        )
        agent_v = np.array([attend(a, K[b, h], V[b, h], 1 / math.sqrt(E)) for a in A])
        for p in range(P):
            O[b, h, p] = attend(Q[b, h, p], A, agent_v, 1 / math.sqrt(E))
    return O


# ---- 9. Flowformer -----------------------------------------------------------------------------------------
def flowformer(Q, K, V, eps):
    """Wu et al. 2022, with the constants of the authors' Flow_Attention (eps, clamp, P/M and M factors)."""
    P, M = Q.shape[2], K.shape[2]
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h in itertools.product(*(range(n) for n in Q.shape[:2])):
        q, k, v = sigmoid(Q[b, h]), sigmoid(K[b, h]), V[b, h]  # phi = sigmoid
        incoming = np.array([(q[i] + eps) @ (k.sum(0) + eps) for i in range(P)])  # I_i
        outgoing = np.array([(k[j] + eps) @ (q.sum(0) + eps) for j in range(M)])  # O_j
        sink_c = np.array([(q[i] + eps) @ ((k / outgoing[:, None]).sum(0) + eps) for i in range(P)])
        src_c = np.array([(k[j] + eps) @ ((q / incoming[:, None]).sum(0) + eps) for j in range(M)])
        src_c = np.clip(src_c, -1.0, 1.0)
        competition = softmax(src_c) * M
        allocation = sigmoid(sink_c * P / M)
        v_hat = v * competition[:, None]
        for i in range(P):
            agg = sum((q[i] / incoming[i]) @ k[j] * v_hat[j] for j in range(M))
            O[b, h, i] = agg * allocation[i]
    return O


# ---- 10. neighborhood attention (NATTEN) and HaloNet -------------------------------------------------------
def natten_window_start(index, length, kernel, stride=1):
    """NATTEN's reference window start (natten/csrc reference mask, non-causal), within one dilation group.

    The stride group's leader min(index // stride * stride + stride // 2, length - 1) takes the window that
    starts kernel // 2 before it, pushed back inside [0, length) at the borders.
    """
    left, right = kernel // 2, kernel // 2 + kernel % 2 - 1
    leader = min(index // stride * stride + stride // 2, length - 1)
    return max(leader - left, 0) + (leader + right >= length) * (length - right - leader - 1)


def natten_neighbors(i, length, kernel, dilation=1, stride=1):
    """Positions of query i's neighbourhood: the window of its dilation group (i mod dilation)."""
    group = list(range(i % dilation, length, dilation))
    start = natten_window_start(i // dilation, len(group), kernel, stride)
    return group[start : start + kernel]


def natten_1d(Q, K, V, W, D, S):
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        nb = natten_neighbors(p, K.shape[2], W, D, S)
        assert len(nb) == W
        O[b, h, p] = attend(Q[b, h, p], K[b, h, nb], V[b, h, nb], 1 / math.sqrt(Q.shape[3]))
    return O


def natten_2d(Q, K, V, WX, WY, DX, DY):
    """Q[b, h, x, y, e]: one softmax over the product of the two axes' neighbourhoods."""
    B, H, X, Y, E = Q.shape
    O = np.zeros((B, H, X, Y, V.shape[-1]))
    for b, h, x, y in itertools.product(range(B), range(H), range(X), range(Y)):
        cells = list(itertools.product(natten_neighbors(x, X, WX, DX), natten_neighbors(y, Y, WY, DY)))
        keys = np.array([K[b, h, u, v] for u, v in cells])
        vals = np.array([V[b, h, u, v] for u, v in cells])
        O[b, h, x, y] = attend(Q[b, h, x, y], keys, vals, 1 / math.sqrt(E))
    return O


def halo_1d(Q, K, V, W, halo):
    """Vaswani et al. 2021 (as timm's HaloAttn): blocks of W - 2 halo queries; K, V zero-padded by halo."""
    block = W - 2 * halo
    M = K.shape[2]
    pad = ((0, 0), (0, 0), (halo, halo + block), (0, 0))  # enough zeros on the right for a ragged last block
    Kp, Vp = np.pad(K, pad), np.pad(V, pad)
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        start = p // block * block  # the block's first position, = its window's start in padded coordinates
        assert start + W <= M + 2 * halo + block
        O[b, h, p] = attend(
            Q[b, h, p], Kp[b, h, start : start + W], Vp[b, h, start : start + W], 1 / math.sqrt(Q.shape[3])
        )
    return O


# ---- 11. Core Context Aware attention ----------------------------------------------------------------------
def cca(Q, K, V, group, window):
    """Chen et al. 2024, as the authors' generate_mask and fast_calculate_fusion_weights (1-based rows)."""
    E, M = Q.shape[3], K.shape[2]
    n_groups = M // group  # only whole groups are ever visible
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h in itertools.product(*(range(n) for n in Q.shape[:2])):
        core_k, core_v = [], []
        for j in range(n_groups):
            ks, vs = K[b, h, j * group : (j + 1) * group], V[b, h, j * group : (j + 1) * group]
            a = softmax(ks @ Q[b, h, (j + 1) * group - 1] / math.sqrt(E))  # the group's last query weighs it
            core_k.append(a @ ks)
            core_v.append(a @ vs)
        for p in range(Q.shape[2]):
            row = p + 1
            pooled = max((row - window) // group, 0) if row > window else 0  # groups fully before the window
            local = list(range(pooled * group, p + 1))  # every key after the pooled groups, up to the query
            keys = np.array(core_k[:pooled] + [K[b, h, m] for m in local])
            vals = np.array(core_v[:pooled] + [V[b, h, m] for m in local])
            O[b, h, p] = attend(Q[b, h, p], keys, vals, 1 / math.sqrt(E))
    return O


# ---- 12. Landmark attention --------------------------------------------------------------------------------
def landmark(Q, K, V, L, block):
    """Mohtashami & Jaggi 2023, grouped softmax: own block + earlier landmarks in one softmax; the landmark's
    probability gates its block's own softmax."""
    E, M = Q.shape[3], K.shape[2]
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        c = p // block
        own = list(range(c * block, p + 1))
        s = [Q[b, h, p] @ K[b, h, m] for m in own] + [Q[b, h, p] @ L[b, h, j] for j in range(c)]
        g = softmax(np.array(s) / math.sqrt(E))
        out = g[: len(own)] @ V[b, h, own]
        for j in range(c):
            blk = list(range(j * block, min((j + 1) * block, M)))
            out = out + g[len(own) + j] * attend(Q[b, h, p], K[b, h, blk], V[b, h, blk], 1 / math.sqrt(E))
        O[b, h, p] = out
    return O


# ---- 13. Aaren ---------------------------------------------------------------------------------------------
def aaren(q, K, V):
    """Feng et al. 2024: o_t = softmax over i <= t of (q . k_i), applied to v_i: every prefix, directly."""
    B, H, T, _ = K.shape
    O = np.zeros((B, H, T, V.shape[3]))
    for b, h, t in itertools.product(range(B), range(H), range(T)):
        O[b, h, t] = attend(q[h], K[b, h, : t + 1], V[b, h, : t + 1], 1.0)
    return O


# ---- 14. split-K decoding ----------------------------------------------------------------------------------
def decode(q, K, V):
    """One query per (b, h) over all keys: what any split-and-merge must equal."""
    B, H, E = q.shape
    O = np.zeros((B, H, V.shape[3]))
    for b, h in itertools.product(range(B), range(H)):
        O[b, h] = attend(q[b, h], K[b, h], V[b, h], 1 / math.sqrt(E))
    return O


# ---- 15. tensor attention ----------------------------------------------------------------------------------
def tensor_attention(Q, K1, K2, V1, V2):
    """Alman & Song 2023: softmax over (m, n) of sum_e q_e k1_me k2_ne / E, values V1[m] * V2[n]."""
    E, M, N = Q.shape[3], K1.shape[2], K2.shape[2]
    O = np.zeros((*Q.shape[:3], V1.shape[3]))
    for b, h, p in _rows(Q):
        pairs = list(itertools.product(range(M), range(N)))
        s = np.array([np.sum(Q[b, h, p] * K1[b, h, m] * K2[b, h, n]) / E for m, n in pairs])
        a = softmax(s)
        O[b, h, p] = sum(a[k] * V1[b, h, m] * V2[b, h, n] for k, (m, n) in enumerate(pairs))
    return O


# ---- 16. relative position bias + depthwise convolution ----------------------------------------------------
def causal_depthwise_conv(X, w):
    """Y[b, h, p] = sum_j w[h, j] * X[b, h, p - j] with zeros before the start (per channel)."""
    Y = np.zeros_like(X)
    for b, h, p in _rows(X):
        for j in range(w.shape[1]):
            if p - j >= 0:
                Y[b, h, p] += w[h, j] * X[b, h, p - j]
    return Y


def relpos_conv(Q, K, V, wq, wk, wv, bias, R):
    """RCMHA-style: convolved Q, K, V; causal softmax of q.k / sqrt(E) + bias[h, clip(p - m, -R, R) + R]."""
    Qc, Kc, Vc = causal_depthwise_conv(Q, wq), causal_depthwise_conv(K, wk), causal_depthwise_conv(V, wv)
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        rel = np.array([bias[h, min(max(p - m, -R), R) + R] for m in range(p + 1)])
        O[b, h, p] = attend(Qc[b, h, p], Kc[b, h, : p + 1], Vc[b, h, : p + 1], 1 / math.sqrt(Q.shape[3]), rel)
    return O


# ---- 17. GAAM ----------------------------------------------------------------------------------------------
def gaam(X, delta, xi, eps):
    """Ioannides et al. 2024: Gaussian weights of x over the sequence, normalised, times x (one per head)."""
    Y = np.zeros_like(X)
    B, H, _, E = X.shape
    for b, h, e in itertools.product(range(B), range(H), range(E)):
        x = X[b, h, :, e]
        mu, var = x.mean(), x.var()  # population variance, as the paper's (1/N) sum x^2 - mu^2
        g = np.exp(-(((x - (mu + delta[h])) / math.sqrt(var + eps)) ** 2) / (2 * xi[h]))
        Y[b, h, :, e] = x * g / g.sum()
    return Y


# ---- 18. tree and document masks ---------------------------------------------------------------------------
def tree_mask(Q, K, V, anc):
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        keys = [m for m in range(K.shape[2]) if anc[b, p, m] == 1]
        O[b, h, p] = attend(Q[b, h, p], K[b, h, keys], V[b, h, keys], 1 / math.sqrt(Q.shape[3]))
    return O


def document_mask(Q, K, V, doc):
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    for b, h, p in _rows(Q):
        keys = [m for m in range(p + 1) if doc[b, m] == doc[b, p]]
        O[b, h, p] = attend(Q[b, h, p], K[b, h, keys], V[b, h, keys], 1 / math.sqrt(Q.shape[3]))
    return O


# ---- 19. selective SSM -------------------------------------------------------------------------------------
def ssm(X, A, Bm, C):
    """h_t = a_t h_{t-1} + B_t x_t^T (an N x D state per head), y_t = C_t . h_t: the recurrence itself."""
    B, H, T, D = X.shape
    Y = np.zeros_like(X)
    for b, h in itertools.product(range(B), range(H)):
        state = np.zeros((Bm.shape[3], D))
        for t in range(T):
            state = A[b, h, t] * state + np.outer(Bm[b, h, t], X[b, h, t])
            Y[b, h, t] = C[b, h, t] @ state
    return Y


# ---- 20. softcap + ALiBi + LSE -----------------------------------------------------------------------------
def softcap_alibi_lse(Q, K, V, slope, C):
    """Gemma 2 cap, then ALiBi: s = C tanh(q.k / sqrt(E) / C) + slope[h] (m - p), m <= p; (O, logsumexp s)."""
    O = np.zeros((*Q.shape[:3], V.shape[3]))
    lse = np.zeros(Q.shape[:3])
    for b, h, p in _rows(Q):
        s = np.array(
            [
                C * math.tanh(Q[b, h, p] @ K[b, h, m] / math.sqrt(Q.shape[3]) / C) + slope[h] * (m - p)
                for m in range(p + 1)
            ]
        )
        O[b, h, p] = softmax(s) @ V[b, h, : p + 1]
        lse[b, h, p] = np.logaddexp.reduce(s)
    return O, lse


# ---- 22. Titans, linear memory -----------------------------------------------------------------------------
def titans_linear(Q, K, V, eta, theta, alpha):
    """Behrouz et al. 2024: S = eta S - theta grad ||M k - v||^2, M = (1 - alpha) M + S, y_t = M q_t."""
    B, H, T, E = K.shape
    F = V.shape[3]
    Y = np.zeros((B, H, T, F))
    for b, h in itertools.product(range(B), range(H)):
        mem, mom = np.zeros((F, E)), np.zeros((F, E))
        for t in range(T):
            k, v = K[b, h, t], V[b, h, t]
            grad = 2 * np.outer(mem @ k - v, k)  # d/dM of ||M k - v||^2
            mom = eta[b, h, t] * mom - theta[b, h, t] * grad
            mem = (1 - alpha[b, h, t]) * mem + mom
            Y[b, h, t] = mem @ Q[b, h, t]
    return Y
