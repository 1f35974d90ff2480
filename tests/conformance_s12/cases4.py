"""3-pass specs that the rewrite (passes="auto": numpy with tile 3, torch, triton) must turn into a 1-pass
form exactly, or leave alone: functions of the stabilised scores other than exp(S - G) (a square, relu and
sigmoid of the shift, per-key weights), stabilisers used as values, stabilisers that are not the row max (a
min, a max over another tensor, over more ranks), softmax plus one, weights renormalised or reduced."""

import numpy as np

from .common import causal, make_rn, registry, softmax

rn, rng = make_rn(1204)
CASES, case = registry()

P, M, E, F = 5, 11, 4, 3


def scores(Q, K):
    return Q @ K.T / np.sqrt(Q.shape[1])


def body(numer, extra=""):
    """A 3-pass spec whose weights are ``numer`` (in terms of S and G) normalised by their sum."""
    return f"""
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
G[p]     = S[p, m] :: max(m)
N[p, m]  = {numer}
D[p]     = N[p, m]
A[p, m]  = N[p, m] / D[p]
O[p, f]  = A[p, m] * V[m, f]
{extra}"""


def weights_ref(fn):
    def ref(Q, K, V):
        s = scores(Q, K)
        g = s.max(1, keepdims=True)
        w = fn(s, g)
        return (w / w.sum(1, keepdims=True)) @ V

    return ref


def qkv():
    return dict(Q=rn(P, E), K=rn(M, E), V=rn(M, F))


case(
    "s12_rw_square_of_exp",
    body("square(exp(S[p, m] - G[p]))"),
    qkv(),
    weights_ref(lambda s, g: np.exp(2 * (s - g))),
    passes={"m": 3},
)
case(
    "s12_rw_relu_of_shift",
    body("relu(S[p, m] - G[p] + 1)"),
    qkv(),
    weights_ref(lambda s, g: np.maximum(s - g + 1, 0)),
)
case(
    "s12_rw_sigmoid_of_shift",
    body("sigmoid(S[p, m] - G[p])"),
    qkv(),
    weights_ref(lambda s, g: 1 / (1 + np.exp(-(s - g)))),
)
case(
    "s12_rw_weighted_keys",
    body("exp(S[p, m] - G[p]) * W[m]").replace("V[m, f]\n", "V[m, f], W[m]\n", 1),
    dict(qkv(), W=np.abs(rn(M)) + 0.1),
    lambda Q, K, V, W: weights_ref(lambda s, g: np.exp(s - g) * W[None, :])(Q, K, V),
)


# the stabiliser also used as a value: O = softmax(S) V + G
def g_value_ref(Q, K, V):
    s = scores(Q, K)
    return softmax(s) @ V + s.max(1, keepdims=True)


case(
    "s12_rw_stabiliser_used_as_value",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
NV[p, f] = N[p, m] * V[m, f]
O[p, f]  = NV[p, f] / D[p] + G[p]
""",
    qkv(),
    g_value_ref,
    passes={"m": 2},
)

# a min as the "stabiliser": the weights are the same softmax (any per-row shift cancels)
case(
    "s12_rw_min_as_stabiliser",
    body("exp(S[p, m] - G[p])").replace(":: max(m)", ":: min(m)"),
    qkv(),
    lambda Q, K, V: softmax(scores(Q, K)) @ V,
)


# the shift is the row max of another score tensor
def other_max_ref(Q, K, K2, V):
    return softmax(scores(Q, K)) @ V


case(
    "s12_rw_max_of_other_scores",
    """
input  Q[p, e], K[m, e], K2[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
T[p, m]  = Q[p, e] * K2[m, e] * rsqrt(E)
G[p]     = T[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
O[p, f]  = N[p, m] * V[m, f] / D[p]
""",
    dict(Q=rn(P, E), K=rn(M, E), K2=rn(M, E), V=rn(M, F)),
    other_max_ref,
    passes={"m": 2},
)


# one stabiliser per head over all queries and keys
def head_max_ref(Q, K, V):
    s = np.einsum("hpe,hme->hpm", Q, K) / np.sqrt(Q.shape[-1])
    return np.einsum("hpm,hmf->hpf", softmax(s), V)


case(
    "s12_rw_stabiliser_over_p_and_m",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
S[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
G[h]       = S[h, p, m] :: max(p, m)
N[h, p, m] = exp(S[h, p, m] - G[h])
D[h, p]    = N[h, p, m]
O[h, p, f] = N[h, p, m] * V[h, m, f] / D[h, p]
""",
    dict(Q=rn(2, P, E), K=rn(2, M, E), V=rn(2, M, F)),
    head_max_ref,
    passes={"p": 2, "m": 3},
)


# softmax over heads and keys together (one distribution per query over (h, m))
def joint_ref(Q, K, V):
    s = np.einsum("hpe,hme->phm", Q, K) / np.sqrt(Q.shape[-1])
    Pn = s.shape[0]
    w = softmax(s.reshape(Pn, -1)).reshape(s.shape)
    return np.einsum("phm,hmf->pf", w, V)


case(
    "s12_rw_joint_softmax_heads_keys",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
S[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
G[p]       = S[h, p, m] :: max(h, m)
N[h, p, m] = exp(S[h, p, m] - G[p])
D[p]       = N[h, p, m]
O[p, f]    = N[h, p, m] * V[h, m, f] / D[p]
""",
    dict(Q=rn(3, P, E), K=rn(3, M, E), V=rn(3, M, F)),
    joint_ref,
    passes={"h": 3, "m": 3},
)


# softmax plus one ("quiet" attention): exp(S) / (1 + sum exp(S)), stabilised: exp(-G) is the one
def quiet_ref(Q, K, V):
    s = scores(Q, K)
    return (np.exp(s) / (1 + np.exp(s).sum(1, keepdims=True))) @ V


case(
    "s12_rw_softmax_plus_one",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
O[p, f]  = N[p, m] * V[m, f] / (D[p] + exp(-G[p]))
""",
    qkv(),
    quiet_ref,
)


# squared weights renormalised (4 passes), plus the expected score under the weights
def renorm_ref(Q, K, V):
    s = scores(Q, K)
    a = softmax(s)
    a2 = a * a
    a2 = a2 / a2.sum(1, keepdims=True)
    return a2 @ V, (a * s).sum(1)


case(
    "s12_rw_renormalised_square_and_expected_score",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, ES
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
A[p, m]  = N[p, m] / D[p]
A2[p, m] = A[p, m] * A[p, m]
D2[p]    = A2[p, m]
O[p, f]  = A2[p, m] * V[m, f] / D2[p]
ES[p]    = A[p, m] * S[p, m]
""",
    qkv(),
    renorm_ref,
    passes={"m": 4},
)


# causal, with the max of the weights and the min of the weights per row as outputs
def wstats_ref(Q, K, V):
    mask = causal(P, M, M - P)
    a = softmax(scores(Q, K), mask=mask)
    return a @ V, a.max(1), np.where(mask, a, np.inf).min(1)


case(
    "s12_rw_weight_max_min_outputs",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, AMAX, AMIN
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p + M - P
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
A[p, m]  = N[p, m] / D[p]
O[p, f]  = A[p, m] * V[m, f]
AMAX[p]  = A[p, m] :: max(m)
AMIN[p]  = A[p, m] :: min(m)
""",
    qkv(),
    wstats_ref,
)
