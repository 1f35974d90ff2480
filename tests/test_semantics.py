"""The NumPy reference against hand-computed values: absent points, filters, indices, recurrences.

Each test states a tiny program and the exact answer worked out by hand (or by a direct NumPy formula).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import einattn


def run(text: str, **inputs):
    return einattn.compile(einattn.parse(text), backend="numpy")(**inputs)


def test_filter_makes_points_absent_and_outputs_deliver_zero():
    out = run(
        """
input X[i]
output Y
Y[i] = X[i] * 2 where i < 2
""",
        X=np.array([1.0, 2.0, 3.0]),
    )
    np.testing.assert_array_equal(out, [2.0, 4.0, 0.0])


def test_reduction_skips_absent_points_and_empty_reduction_is_absent():
    # row 0 sees nothing (m < p is empty), so its max is absent; `?? -7` replaces it.
    out = run(
        """
input S[p, m]
output R, D
MX[p] = S[p, m] :: max(m) where m < p
R[p] = MX[p] ?? -7
D[p] = MX[p]
""",
        S=np.array([[5.0, 1.0, 2.0], [3.0, 9.0, 4.0], [0.5, -1.0, 8.0]]),
    )
    r, d = out
    np.testing.assert_array_equal(r, [-7.0, 3.0, 0.5])
    np.testing.assert_array_equal(d, [0.0, 3.0, 0.5])  # absent output point delivered as 0


def test_absence_propagates_through_elementwise_ops_and_default_replaces_it():
    out = run(
        """
input X[i]
output A, B
T[i] = X[i] where i != 1
A[i] = exp(T[i]) + 1
B[i] = (exp(T[i]) + 1) ?? 100
""",
        X=np.zeros(3),
    )
    np.testing.assert_array_equal(out[0], [2.0, 0.0, 2.0])
    np.testing.assert_array_equal(out[1], [2.0, 100.0, 2.0])


def test_out_of_bounds_read_is_absent_zero_padding_convolution():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    w = np.array([10.0, 1.0, 0.1])
    out = run(
        """
input X[p], w[k]
output Y
Y[p] = w[k] * X[p + k - 1]
""",
        X=x,
        w=w,
    )
    want = [10 * 0 + 1 * 1 + 0.1 * 2, 10 * 1 + 2 + 0.3, 10 * 2 + 3 + 0.4, 10 * 3 + 4 + 0]
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)


def test_floor_division_and_modulo_follow_python_for_negative_values():
    # index (i - 2) // 2 and (i - 2) % 3 for i = 0..4, read from a table of 10 values at offset 5
    t = np.arange(10.0)
    out = run(
        """
input T[j], X[i]
output D, M
D[i] = T[(i - 2) // 2 + 5] + 0 * X[i]
M[i] = T[(i - 2) % 3] + 0 * X[i]
""",
        T=t,
        X=np.zeros(5),
    )
    np.testing.assert_array_equal(out[0], [(i - 2) // 2 + 5 for i in range(5)])
    np.testing.assert_array_equal(out[1], [(i - 2) % 3 for i in range(5)])


def test_gather_through_integer_tensor_and_out_of_range_gather_is_absent():
    k = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    perm = np.array([2, 0, 7, 1])  # 7 is out of range: that row is absent -> 0
    out = run(
        """
input K[m, e], perm[n] : int
output G
G[n, e] = K[perm[n], e]
""",
        K=k,
        perm=perm,
    )
    np.testing.assert_array_equal(out, [[5, 6], [1, 2], [0, 0], [3, 4]])


def test_paged_kv_cache_gather():
    rng = np.random.default_rng(0)
    pages = rng.standard_normal((4, 2, 3))  # 4 pages of S = 2 slots, E = 3
    table = np.array([[3, 1], [0, 2]])  # batch b -> its pages
    q = rng.standard_normal((2, 3))
    out = run(
        """
input KC[n, s, e], table[b, j] : int, q[b, e]
param M = 4
output O
O[b, m] = q[b, e] * KC[table[b, m // S], m % S, e]
""",
        KC=pages,
        table=table,
        q=q,
    )
    want = [[q[b] @ pages[table[b, m // 2], m % 2] for m in range(4)] for b in range(2)]
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)


def test_filter_on_integer_tensors_document_mask():
    out = run(
        """
input X[m], doc[m] : int
param P = 4
output C
C[p] = X[m] where doc[p] == doc[m] and m <= p
""",
        X=np.array([1.0, 10.0, 100.0, 1000.0]),
        doc=np.array([0, 0, 1, 1]),
    )
    np.testing.assert_array_equal(out, [1.0, 11.0, 100.0, 1100.0])


def test_coordinates_sizes_and_params_as_values():
    out = run(
        """
input X[p, m]
param C = 0.5
output Y
Y[p, m] = X[p, m] + C * (p - m) + M
""",
        X=np.zeros((2, 3)),
    )
    want = np.array([[0.5 * (p - m) + 3 for m in range(3)] for p in range(2)])
    np.testing.assert_array_equal(out, want)


def test_named_reduction_applies_after_the_sum():
    # S[p] = max over m of (sum over e of A[p, m, e])
    a = np.random.default_rng(1).standard_normal((2, 3, 4))
    out = run(
        """
input A[p, m, e]
output S
S[p] = A[p, m, e] :: max(m)
""",
        A=a,
    )
    np.testing.assert_allclose(out, a.sum(-1).max(-1), rtol=1e-14)


def test_filter_applies_to_reduced_ranks():
    # causal prefix sums: Y[p] = sum_{m <= p} X[m]
    x = np.array([1.0, 2.0, 4.0, 8.0])
    out = run(
        """
input X[m]
output Y
Y[p] = X[m] where m <= p
param P = 4
""",
        X=x,
    )
    np.testing.assert_array_equal(out, np.cumsum(x))


def test_index_min_max_clamp():
    t = np.arange(5.0) * 10
    out = run(
        """
input T[j]
param P = 7
output Y
Y[p] = T[clamp(p - 1, 0, J - 1)] + T[min(p, 0)] + T[max(p - 6, 0)]
""",
        T=t,
    )
    want = [t[min(max(p - 1, 0), 4)] + t[0] + t[max(p - 6, 0)] for p in range(7)]
    np.testing.assert_array_equal(out, want)


def test_iterative_rank_prefix_sum_and_final_state():
    x = np.array([1.0, 2.0, 3.0])
    out = run(
        """
input X[t]
output P, F
S[0] = 0
S[t + 1] = S[t] + X[t]
P[t] = S[t + 1]
F = S[T]
""",
        X=x,
    )
    np.testing.assert_array_equal(out[0], [1.0, 3.0, 6.0])
    assert out[1] == 6.0


def test_teaching_cascade_3_iterative():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    out = run(
        """
input A[k], B[k]
output Z
RY[0] = 0
RZ[0] = 0
RY[k + 1] = RY[k] + A[k] * B[k]
RZ[k + 1] = RZ[k] * RY[k + 1] / RY[k] + RY[k + 1] * A[k]
Z = RZ[K]
""",
        A=a,
        B=b,
    )
    # Z = (sum A*B) * (sum A), computed incrementally; RZ[1] = 0 * RY1/0 = NaN in IEEE at k = 0
    assert np.isnan(out)  # IEEE: 0 * x / 0 at the first step; the cascade as written is not guarded


def test_teaching_cascade_3_guarded():
    # the same cascade with the division guarded at the first step: Z = (sum A*B) * (sum A)
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    out = run(
        """
input A[k], B[k]
output Z
RY[0] = 0
RZ[0] = 0
RY[k + 1] = RY[k] + A[k] * B[k]
R1[k] = RY[k + 1] / RY[k] where k > 0
SC[k] = R1[k] ?? 0
RZ[k + 1] = RZ[k] * SC[k] + RY[k + 1] * A[k]
Z = RZ[K]
""",
        A=a,
        B=b,
    )
    assert out == pytest.approx(np.dot(a, b) * a.sum(), rel=1e-12)


def test_int_tensor_read_as_value():
    out = run(
        """
input n[i] : int
output Y
Y[i] = n[i] * 0.5
""",
        n=np.array([1, 2, 3]),
    )
    np.testing.assert_array_equal(out, [0.5, 1.0, 1.5])


def test_scalar_input_and_scalar_output():
    out = run(
        """
input X[i], s
output T
T = X[i] * s
""",
        X=np.array([1.0, 2.0]),
        s=np.float64(3.0),
    )
    assert out == 9.0 and np.ndim(out) == 0


def test_nan_is_ieee_not_absence():
    out = run(
        """
input X[i]
output Y
Y[i] = log(X[i]) ?? 5
""",
        X=np.array([-1.0, 1.0]),
    )
    assert np.isnan(out[0]) and out[1] == 0.0


def test_float32_mode():
    k = einattn.compile(
        einattn.parse("input X[i]\noutput Y\nY[i] = exp(X[i])\n"), backend="numpy", dtype="float32"
    )
    out = k(X=np.array([0.0, 1.0]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.exp([0.0, 1.0]), rtol=1e-6)


def test_params_override_at_compile_time():
    prog = einattn.parse("input X[i]\nparam C = 2\noutput Y\nY[i] = X[i] * C\n")
    assert einattn.compile(prog, params={"C": 5})(X=np.ones(2)).tolist() == [5.0, 5.0]
    with pytest.raises(einattn.EinError, match="unknown param `D`"):
        einattn.compile(prog, params={"D": 1})


def test_contraction_fast_path_equals_general_path_with_masks_and_infinities():
    # -inf scores with a filter: the fast path must not turn 0 * inf into NaN
    s = np.array([[-np.inf, 1.0], [2.0, -np.inf]])
    v = np.array([[1.0], [2.0]])
    out = run(
        """
input S[p, m], V[m, f]
output O
O[p, f] = S[p, m] * V[m, f] where m <= p
""",
        S=s,
        V=v,
    )
    assert out[0, 0] == -np.inf
    assert out[1, 0] == 2.0 * 1.0 + -np.inf * 2.0


def test_ragged_partition_tiles_are_absent():
    x = np.arange(1.0, 6.0)  # M = 5, M0 = 2 -> M1 = 3, last tile has one absent point
    out = run(
        """
input X[m]
param M0 = 2
rank M = M1 * M0
output T, C
B[m1, m0] = X[m1 * M0 + m0]
T[m1] = B[m1, m0]
C[m1] = B[m1, m0] * 0 + 1
""",
        X=x,
    )
    np.testing.assert_array_equal(out[0], [3.0, 7.0, 5.0])
    np.testing.assert_array_equal(out[1], [2.0, 2.0, 1.0])


def test_rewritten_reference_on_an_empty_rank_gives_the_specs_zeros():
    k = einattn.compile(
        einattn.load(Path(__file__).resolve().parent.parent / "examples" / "attention_3pass.ein"),
        passes="auto",
        tile=4,
    )
    assert k.program.iterative_ranks == ("m1",) and k.written is not None
    q, empty = np.ones((1, 1, 3, 4)), np.zeros((1, 1, 0, 4))
    np.testing.assert_array_equal(k(Q=q, K=empty, V=empty), np.zeros((1, 1, 3, 4)))


def test_an_overflow_at_an_absent_point_does_not_reach_the_result():
    """One query, one key, tiles of two keys: the tile's second key is absent (out of range). A score of
    -709.75 makes exp(0 - -709.75) = 1.7e308 at that absent point, and a contraction that multiplied it by
    the clamped value read there overflowed to NaN in the reference's fast path (found by the property suite
    at 1000 examples). Softmax over one key is that key's value: exactly V, in every backend."""
    import torch
    from conftest import EXAMPLES

    prog = einattn.load(EXAMPLES / "causal_1pass.ein").with_params({"M0": 2})
    q = np.array([[[[-24.05794276, -39.73076987, -7.45084866]]]])
    k = np.array([[[[49.04349129, 8.18306328, -36.99985992]]]])
    v = np.array([[[[-18.87864282]]]])
    assert einattn.compile(prog, backend="numpy")(Q=q, K=k, V=v).tolist() == v.tolist()
    kern = einattn.compile(prog, backend="torch", row_block=0)
    for grad in (False, True):
        x = {n: torch.tensor(a, requires_grad=grad) for n, a in (("Q", q), ("K", k), ("V", v))}
        assert kern(**x).tolist() == v.tolist()


def test_a_sum_over_a_rank_no_factor_varies_along_counts_every_point():
    """`X0 * (X0 ?? X2[i])` is X0 * X0 at each of the I points of i (X0 is never absent): the sum is
    I * X0**2. The reference's contraction fast path dropped the rank, which no factor's value carries, and
    gave X0**2 (found by the property suite at 1000 examples)."""
    import torch

    prog = einattn.parse("input X0, X2[i]\noutput T0\nT0 = X0 * (X0 ?? X2[i])\n", "count.ein")
    x = {"X0": np.array(0.5), "X2": np.array([0.25, 2.0, -1.0])}
    assert einattn.compile(prog, backend="numpy")(**x) == 3 * 0.25
    assert einattn.compile(prog, backend="torch")(**{n: torch.tensor(v) for n, v in x.items()}).item() == 0.75


def test_a_filtered_sum_over_an_empty_rank_is_absent():
    """Rule 6: a reduction over no point is absent, with a filter as without one. The reference's masked
    path ignored a summed rank that no mask varies along: `S[i, j] = X[i, e] * Y[j, e] where i <= j`
    with E = 0 was a present 0, and anything built on it (softmax attention with no head dimension)
    followed."""
    spec = (
        "input X[i, e], Y[j, e]\noutput C\nS[i, j] = X[i, e] * Y[j, e]  where i <= j\n"
        "C[i] = S[i, j] * 0 + 1\n"
    )
    got = einattn.compile(spec)(X=np.ones((3, 0)), Y=np.ones((3, 0)))
    np.testing.assert_array_equal(got, np.zeros(3))  # every S absent: C is a sum of nothing, absent -> 0
