"""Softmax attention against KV caches whose slots past each sequence's length hold NaN, inf, -inf and 1e308
(an uninitialised cache): prefill with batch and heads and the LSE, a chunk of new queries at the end of the
cache (bottom-right causal through the per-batch length), keys that would score +inf under a soft cap, a
paged cache whose unused pages are garbage, and a joint softmax over a cache and the new keys."""

import numpy as np

from .common import lse, make_rn, registry, softmax

rn, rng = make_rn(1602)
CASES, case = registry()

_JUNK = np.array([np.nan, np.inf, -np.inf, 1e308])


def _garbage_after(x, lengths, axis):
    """x with every slot at or past lengths[b] along ``axis`` (batch first) replaced by garbage."""
    x = x.copy()
    for b, ln in enumerate(lengths):
        sl = [b] + [slice(None)] * (x.ndim - 1)
        sl[axis] = slice(ln, None)
        tail = x[tuple(sl)]
        x[tuple(sl)] = _JUNK[rng.integers(0, 4, size=tail.shape)]
    return x


# --- prefill against a cache: batch and heads, lengths 1, 6 (all), 3 and 0, with the LSE
_L1 = np.array([1, 6, 3, 0])


def prefill_ref(Q, K, V, kvlen):
    B, H, P, E = Q.shape
    O = np.zeros((B, H, P, V.shape[3]))
    L = np.zeros((B, H, P))
    for b in range(B):
        n = kvlen[b]
        if n == 0:
            continue
        for h in range(H):
            s = Q[b, h] @ K[b, h, :n].T / np.sqrt(E)
            O[b, h] = softmax(s) @ V[b, h, :n]
            L[b, h] = lse(s)
    return O, L


case(
    "s16_kv_nan_inf_past_len_3pass_lse",
    """
# attention over a padded KV cache: keys at or past kvlen[b] are absent, whatever they hold
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], kvlen[b] : int
output O, LSE
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < kvlen[b]
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
LSE[b, h, p]   = GM[b, h, p] + log(SD[b, h, p])
""",
    dict(
        Q=rn(4, 2, 3, 4),
        K=_garbage_after(rn(4, 2, 6, 4), _L1, 2),
        V=_garbage_after(rn(4, 2, 6, 3), _L1, 2),
        kvlen=_L1,
    ),
    prefill_ref,
    passes={"m": 3},
)


# --- a chunk of P new queries appended to a cache of length n[b] (its last P slots are the chunk): query p
# is at position n[b] - P + p and sees the slots up to it; slots past n[b] are garbage
_L2 = np.array([3, 8, 5])


def chunk_ref(Q, K, V, n):
    B, P, E = Q.shape
    O = np.zeros((B, P, V.shape[2]))
    for b in range(B):
        for p in range(P):
            hi = n[b] - P + p  # last visible slot
            if hi < 0:
                continue
            s = K[b, : hi + 1] @ Q[b, p] / np.sqrt(E)
            O[b, p] = softmax(s) @ V[b, : hi + 1]
    return O


case(
    "s16_kv_nan_past_len_chunk_bottom_right_causal",
    """
# chunked prefill: the P queries are the last P positions of each cache; causal from the bottom right
input  Q[b, p, e], K[b, m, e], V[b, m, f], n[b] : int
output O
S[b, p, m]  = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where m < n[b] and m <= p + n[b] - P
GM[b, p]    = S[b, p, m] :: max(m)
EX[b, p, m] = exp(S[b, p, m] - GM[b, p])
SD[b, p]    = EX[b, p, m]
NV[b, p, f] = EX[b, p, m] * V[b, m, f]
O[b, p, f]  = NV[b, p, f] / SD[b, p]
""",
    dict(
        Q=rn(3, 4, 3),
        K=_garbage_after(rn(3, 8, 3), _L2, 1),
        V=_garbage_after(rn(3, 8, 2), _L2, 1),
        n=_L2,
    ),
    chunk_ref,
    passes={"m": 2},
)


# --- a soft cap (Gemma 2) on scores whose keys past the length are +-inf / NaN: tanh(inf) would be finite,
# so a wrong mask order would let garbage in as a finite logit; decode, GQA 2
_L3 = np.array([4, 1])


def softcap_ref(q, K, V, kvlen, C=20.0):
    B, H, E = q.shape
    O = np.zeros((B, H, V.shape[3]))
    for b in range(B):
        n = kvlen[b]
        for h in range(H):
            s = K[b, h // 2, :n] @ q[b, h] / np.sqrt(E)
            O[b, h] = softmax(C * np.tanh(s / C)) @ V[b, h // 2, :n]
    return O


case(
    "s16_kv_inf_keys_past_len_softcap_decode_gqa",
    """
# decoding with a logit soft cap over a cache whose tail holds inf and NaN keys
input  q[b, h, e], K[b, g, m, e], V[b, g, m, f], kvlen[b] : int
param  C = 20.0
output O
S[b, h, m]  = q[b, h, e] * K[b, h // 2, m, e] * rsqrt(E)  where m < kvlen[b]
T[b, h, m]  = C * tanh(S[b, h, m] / C)
GM[b, h]    = T[b, h, m] :: max(m)
EX[b, h, m] = exp(T[b, h, m] - GM[b, h])
SD[b, h]    = EX[b, h, m]
O[b, h, f]  = EX[b, h, m] * V[b, h // 2, m, f] / SD[b, h]
""",
    dict(
        q=rn(2, 4, 3),
        K=_garbage_after(rn(2, 2, 6, 3), _L3, 2),
        V=_garbage_after(rn(2, 2, 6, 2), _L3, 2),
        kvlen=_L3,
    ),
    softcap_ref,
)


# --- a paged cache: key m of batch b is slot m % S of page table[b, m // S]; the pages hold garbage past each
# sequence's length, and a page no sequence uses is all NaN
_PAGE = 3


def _paged_cache():
    # 5 pages of 3 slots; batch 0 uses pages 4, 1 (length 5), batch 1 uses page 0 (length 2); pages 2 and 3
    # are used by no sequence's valid slots
    KC = rn(5, _PAGE, 4)
    VC = rn(5, _PAGE, 2)
    table = np.array([[4, 1, 2], [0, 3, 3]])
    lens = np.array([5, 2])
    KC[2], VC[2] = np.nan, np.nan
    KC[3], VC[3] = np.inf, np.nan
    KC[1, 2], VC[1, 2] = np.nan, np.inf  # batch 0's slot 5, past its length 5
    KC[0, 2], VC[0, 2] = -np.inf, np.nan  # batch 1's slot 2, past its length 2
    return KC, VC, table, lens


_KC, _VC, _TB, _LN = _paged_cache()


def paged_ref(Q, KC, VC, table, kvlen):
    B, P, E = Q.shape
    O = np.zeros((B, P, VC.shape[2]))
    for b in range(B):
        n = kvlen[b]
        ks = np.stack([KC[table[b, m // _PAGE], m % _PAGE] for m in range(n)])
        vs = np.stack([VC[table[b, m // _PAGE], m % _PAGE] for m in range(n)])
        O[b] = softmax(Q[b] @ ks.T / np.sqrt(E)) @ vs
    return O


case(
    "s16_kv_paged_cache_garbage_pages",
    """
# attention over a paged KV cache (pages of S slots), keys past kvlen[b] absent
input  Q[b, p, e], KC[n, s, e], VC[n, s, f], table[b, j] : int, kvlen[b] : int
param  M = 9
output O
SC[b, p, m] = Q[b, p, e] * KC[table[b, m // S], m % S, e] * rsqrt(E)  where m < kvlen[b]
GM[b, p]    = SC[b, p, m] :: max(m)
EX[b, p, m] = exp(SC[b, p, m] - GM[b, p])
SD[b, p]    = EX[b, p, m]
O[b, p, f]  = EX[b, p, m] * VC[table[b, m // S], m % S, f] / SD[b, p]
""",
    dict(Q=rn(2, 3, 4), KC=_KC, VC=_VC, table=_TB, kvlen=_LN),
    paged_ref,
)


# --- one softmax over two key sources: a cache (garbage past n[b]) and the new keys of this step (causal
# among themselves); the joint max and denominator span both key ranks
_L4 = np.array([0, 4, 2])


def joint_ref(Q, KC, VC, KN, VN, n):
    B, P, E = Q.shape
    O = np.zeros((B, P, VC.shape[2]))
    for b in range(B):
        for p in range(P):
            ks = np.concatenate([KC[b, : n[b]], KN[b, : p + 1]])
            vs = np.concatenate([VC[b, : n[b]], VN[b, : p + 1]])
            O[b, p] = softmax(ks @ Q[b, p] / np.sqrt(E)) @ vs
    return O


case(
    "s16_kv_nan_cache_plus_new_keys_joint_softmax",
    """
# new queries attend to a cache (first n[b] slots valid) and, causally, to the new keys; one softmax
input  Q[b, p, e], KC[b, m, e], VC[b, m, f], KN[b, j, e], VN[b, j, f], n[b] : int
output O
S1[b, p, m] = Q[b, p, e] * KC[b, m, e] * rsqrt(E)  where m < n[b]
S2[b, p, j] = Q[b, p, e] * KN[b, j, e] * rsqrt(E)  where j <= p
G1[b, p]    = S1[b, p, m] :: max(m)
G2[b, p]    = S2[b, p, j] :: max(j)
GM[b, p]    = max(G1[b, p] ?? G2[b, p], G2[b, p])
E1[b, p, m] = exp(S1[b, p, m] - GM[b, p])
E2[b, p, j] = exp(S2[b, p, j] - GM[b, p])
D1[b, p]    = E1[b, p, m]
D2[b, p]    = E2[b, p, j]
N1[b, p, f] = E1[b, p, m] * VC[b, m, f]
N2[b, p, f] = E2[b, p, j] * VN[b, j, f]
O[b, p, f]  = ((N1[b, p, f] ?? 0) + N2[b, p, f]) / ((D1[b, p] ?? 0) + D2[b, p])
""",
    dict(
        Q=rn(3, 3, 4),
        KC=_garbage_after(rn(3, 5, 4), _L4, 1),
        VC=_garbage_after(rn(3, 5, 2), _L4, 1),
        KN=rn(3, 3, 4),
        VN=rn(3, 3, 2),
        n=_L4,
    ),
    joint_ref,
)
