"""Runtime helpers of the PyTorch code that ``lowering/torch_backend.py`` generates.

This module needs only ``torch`` (and ``math``): ``einattn compile --backend torch`` copies its source into
the standalone module it writes. Generated code calls these helpers for the parts that depend on sizes known
only at call time: slicing with out-of-range padding, gathers, reductions over absent points, state updates.

Conventions:

* A value is a tensor laid out over the axes of an iteration space (one axis per rank, size 1 where the value
  does not vary), or a Python number.
* A presence mask is a bool tensor broadcastable to its value, or ``None`` when every point is present. Masks
  stay as small as their variation (a causal mask is ``[M, P]`` even in a ``[B, H, M, P]`` space).
* Values at absent points are meaningless. Functions that can overflow or divide by zero see a safe value
  there (:func:`_safe`), so that gradients at absent points are exactly zero, never NaN. Where the generator
  knows a value is finite everywhere (given finite inputs), filling absent points is done by arithmetic
  (``finite=True``), which is several times faster than ``torch.where`` on CPU; else by ``torch.where``.
"""

import contextlib
import math
import numbers
import threading

import torch
import torch.utils.checkpoint


def _softplus(x):
    return torch.logaddexp(x, torch.zeros_like(x))


def _elu(x):
    # expm1, as the reference: exp(x) - 1 loses the low bits that 1 + elu(x) keeps for x near -37
    return torch.where(x > 0, x, torch.expm1(x.clamp(max=0)))


def _step(x):
    # 1 where x > 0, else 0 (NaN too, as the comparison); a derivative of 0 (a comparison records none)
    return (x > 0).to(x.dtype)


LOG2E = 1.4426950408889634


def _fast_exp2(x) -> bool:
    return x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() > 0


def _exp(x):
    """``exp``. On CPU in float32 it is ``exp2(x * log2 e)``: ATen's float32 ``exp`` runs at half the speed of
    ``exp2`` there, and the exponential of a tile is a large share of an attention step. The rounding of the
    product adds at most ``|x| * 2**-24`` relative error (4e-6 at the ends of float32's range, 1e-6 over
    softmax's [-20, 0]). ``exp`` is faster for finite scores on some CPUs (Intel Sapphire Rapids), but its
    AVX-512 kernel is 10-100x slower at ``-inf`` (masked points), underflow and denormal results, which
    ``exp2`` of the product takes at full speed but for the last (docs/backends.md). float64, and other
    devices, use ``torch.exp``. With a gradient recorded, the
    derivative is ``exp``'s own (:class:`_Exp2E`)."""
    if not _fast_exp2(x):
        return torch.exp(x)
    if x.requires_grad and torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return _Exp2E.apply(x)
    return torch.exp2(x * LOG2E)


class _Exp2E(torch.autograd.Function):
    """``exp2(x * log2 e)`` whose backward is ``grad * exp(x)`` from the saved result: one pass over a tile,
    where autograd through the product and ``exp2`` takes three (5-11 % of a CPU training step). The saved
    result is the function's own output, so under ``create_graph=True`` the product is differentiated again
    through this function: every order of derivative is exp's."""

    @staticmethod
    def forward(ctx, x):
        y = torch.exp2(x * LOG2E)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y


def _stable(x, floor=False):
    """A stabilizer's value (:mod:`einattn.stabilizers`: no output depends on it, as softmax's max): no
    gradient is recorded through it, so autograd does not differentiate the max into terms that cancel.

    ``floor``: a running max of einattn.rewrite's streamed form, at least the lowest finite value of its
    dtype (``einattn.stabilizers.lowest``). Its
    derivation (``exp(x - a) = exp(x - b) * exp(b - a)``) takes the max finite; a max of ``-inf`` scores (a
    padding mask of ``-inf`` over a whole first tile) made ``exp(-inf - -inf)`` NaN where the spec as written
    is finite. Any value is right for a stabilizer; a finite one keeps every ``exp`` defined (FlashAttention
    substitutes 0 the same way)."""
    if not isinstance(x, torch.Tensor):
        return x
    if x.requires_grad:
        x = x.detach()
    return x.clamp_min(torch.finfo(x.dtype).min) if floor else x


def _floored(x):
    """A running max of the rewrite that is not a stabilizer but is read only as the shift of exponentials
    (an output reads its value from an exact copy: einattn.rewrite.exact): floored as ``_stable(x,
    floor=True)``, its gradient kept (a denominator that an output reads depends on it)."""
    if not isinstance(x, torch.Tensor):
        return x
    return x.clamp_min(torch.finfo(x.dtype).min)


def _exp_fresh(x, inplace, m=None, finite=False):
    """``exp`` of a temporary that nothing else reads (``-inf`` where ``m`` says absent, as ``_safe``),
    computed in the temporary's memory when no gradient is recorded."""
    if not inplace or (m is not None and not _covers(x.shape, m.shape)):
        return _exp(_safe(x, m, -math.inf, finite))
    if m is not None:
        x = x.masked_fill_(~m, -math.inf)
    return x.mul_(LOG2E).exp2_() if _fast_exp2(x) else x.exp_()


# `_exp_diff` fuses the shift and the product by log2 e only where the shift is at most this large in
# magnitude (or infinite: `_shift_fusable`): the exponent's rounding then stays within a few 1e-6 relative
# (docs/backends.md).
FUSED_SHIFT_BOUND = 32.0


def _shift_fusable(b) -> bool:
    """Whether every value of the shift ``b`` is at most :data:`FUSED_SHIFT_BOUND` in magnitude or not
    finite (``-inf - b`` and ``a - inf`` give the same infinity or NaN in either form). A larger finite
    shift takes the unfused form, exact for ``a`` near ``b``: logits of 1e4, or a running max's ``-1e30``
    start, where the fused form's ``log2e * a - log2e * b``, one fused multiply-add, keeps the rounding of
    ``log2e * b`` (1e23 there) instead of cancelling it."""
    if not b.numel():
        return True
    return bool(torch.nan_to_num(b, 0.0, 0.0, 0.0).abs_().amax() <= FUSED_SHIFT_BOUND)


def _exp_diff(a, b, inplace, m=None, finite=False):
    """``exp(a - b)`` of a temporary ``a`` that nothing else reads (a score tile less its running max): as
    ``_exp_fresh(_ip_sub(a, b, inplace), inplace, m, finite)``.

    On CPU in float32 with no gradient recorded, and a shift ``b`` (a tensor smaller than the tile) of at
    most :data:`FUSED_SHIFT_BOUND` in magnitude everywhere, the subtraction and the product by ``log2 e``
    are one pass, ``log2e * a + (-log2e * b)`` (an ``add`` with ``alpha``, in ``a``'s memory), then
    ``exp2`` in place: two passes over the tile where there were three. Scaling before subtracting rounds
    ``log2e * a`` and ``log2e * b`` where the subtraction first was exact for ``a`` near ``b``: with
    ``|b| <= 32`` the weights that matter (``a - b`` in [-20, 0]) keep their exponent to 7e-6, about 5e-6
    relative (against 2e-6 for the unfused form); a larger finite shift (logits of 1e4) takes the unfused
    form, exact there (:func:`_shift_fusable`)."""
    fused = (
        inplace
        and isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and _fast_exp2(a)
        and _writable(a, b)
        and b.numel() < a.numel()
        and (m is None or _covers(a.shape, m.shape))
        and not torch.compiler.is_compiling()
        and _shift_fusable(b)
    )
    if not fused:
        return _exp_fresh(_ip_sub(a, b, inplace), inplace, m, finite)
    if m is not None:
        a = a.masked_fill_(~m, -math.inf)
    return torch.add(b * -LOG2E, a, alpha=LOG2E, out=a).exp2_()


# One entry per function of einattn.functions.FUNCTIONS; arguments are tensors.
FUNCTIONS = {
    "exp": _exp,
    "exp2": torch.exp2,
    "log": torch.log,
    "log2": torch.log2,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "elu": _elu,
    "softplus": _softplus,
    "abs": torch.abs,
    "square": torch.square,
    "step": _step,
    "max": torch.maximum,
    "min": torch.minimum,
    "clamp": lambda x, lo, hi: torch.minimum(torch.maximum(x, lo), hi),
}

# Functions whose value or derivative can be infinite at a finite argument: their argument is made safe at
# absent points (see _safe).
UNSAFE = frozenset({"exp", "exp2", "log", "log2", "sqrt", "rsqrt"})


class InputError(ValueError):
    """A call-time problem with the inputs (wrong dtype, device, shape); ``hint``: what to do instead."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


# ---- constants and coordinates ----------------------------------------------------------------------------


def _c(x, o):
    """A number as a 0-dim tensor of the compute dtype and device ``o = (dtype, device)``."""
    return torch.full((), x, dtype=o[0], device=o[1])


def _place(x, axes, ndim):
    """Move the dimensions of ``x`` to the axes ``axes`` (one per dimension) of an ``ndim``-axis space."""
    if x is None:
        return None
    order = sorted(range(len(axes)), key=axes.__getitem__)
    if order != list(range(len(axes))):
        x = x.permute(order)
    shape = [1] * ndim
    for k, a in enumerate(sorted(axes)):
        shape[a] = x.shape[k]
    return x.reshape(shape)


def _coord(start, length, axis, ndim, dtype, device):
    c = torch.arange(start, start + length, dtype=dtype, device=device)
    return _place(c, (axis,), ndim)


def _cf(start, length, axis, ndim, o):
    """The coordinates ``start .. start + length - 1`` of one axis, as values of the compute dtype."""
    return _coord(start, length, axis, ndim, o[0], o[1])


def _ci(start, length, axis, ndim, o):
    """The coordinates of one axis as int64, for index expressions and filters."""
    return _coord(start, length, axis, ndim, torch.int64, o[1])


def _cond(x, o, ndim):
    """A filter value that is a Python bool, or a tensor with fewer axes than the space (a comparison of
    values read at a loop's step, which are 0-d), as a bool tensor with ``ndim`` axes."""
    if isinstance(x, torch.Tensor):
        return x if x.dim() >= ndim else x.reshape((1,) * (ndim - x.dim()) + tuple(x.shape))
    return torch.full((1,) * ndim, bool(x), dtype=torch.bool, device=o[1])


# ---- presence masks --------------------------------------------------------------------------------------


_SMALL_MASK = 1 << 14  # a mask this small (on the CPU) is checked for being all true before it is combined


def _and(*masks):
    """All present (None: every point present). A small mask on the CPU that is all true is left out: a
    running state's presence (`RM ?? LM` in the rewritten cascade) is true everywhere once every row has
    seen a key, and combining it would broadcast a tile's mask over every head, or fill what has nothing
    absent."""
    out, dropped, kept = None, False, 0
    for m in masks:
        if m is None or m is True:
            continue
        if _all_true(m):
            dropped = True
            continue
        out = m if out is None else out & m
        kept += 1
    if dropped and kept == 1:
        return out.clone()  # a new mask, as `a & b` was: a state's mask may be updated in place later
    return out


def _all_true(m, limit: int | None = _SMALL_MASK) -> bool:
    """Whether ``m`` is a small (at most ``limit`` points; None: any size), non-empty CPU mask with no false
    point (a check costs a few microseconds there; on other devices it would wait for the device, and under
    ``torch.compile`` break the graph)."""
    return _checkable(m, limit) and bool(m.all())


def _all_false(m, limit: int | None = _SMALL_MASK) -> bool:
    """Whether ``m`` is a small, non-empty CPU mask with no true point (as :func:`_all_true`)."""
    return _checkable(m, limit) and not bool(m.any())


def _checkable(m, limit) -> bool:
    if m.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    return 0 < m.numel() <= (limit or m.numel())


def _fmask(m, ndim, o):
    """A filter's mask as a factor of a sum of products (1 where present, 0 where absent), over ``ndim`` axes;
    None (all present: :func:`_and` leaves out masks that are all true at run time) is a broadcast 1."""
    if m is None:
        return torch.ones((1,) * ndim, dtype=o[0], device=o[1])
    return m.to(o[0])


def _or(a, b):
    """Present in either (for ``a ?? b``)."""
    return None if a is None or b is None else a | b


def _safe(x, m, value=1.0, finite=False):
    """``x`` with ``value`` at absent points: the argument of a function that could overflow or divide by zero
    (``-inf`` for ``exp``, which then gives exactly 0 there). The gradient at absent points is exactly 0.

    ``finite``: ``x`` holds no infinity or NaN (present or not), so arithmetic does it, several times faster
    on CPU than ``torch.where``.
    """
    if m is None:
        return x
    if not finite:
        return torch.where(m, x, value)
    mf = m.to(x.dtype)
    return torch.addcmul(_fill(m, value, x.dtype) if math.isinf(value) else value * (1.0 - mf), x, mf)


def _zf(x, m, finite=False):
    """``x`` with 0 at absent points: a term that a sum skips (``finite``: by a product, as in _safe)."""
    if m is None:
        return x
    return x * m.to(x.dtype) if finite else torch.where(m, x, 0.0)


def _zf_own(x, m, axes):
    """``x``, whose dimensions are ``axes`` of a statement's space, with 0 where ``m`` (over the whole space)
    is false; ``m`` is constant along the other dimensions (the generator proved it), so its first slice
    along them is exact and ``x`` keeps its shape. None: all present."""
    if m is None:
        return x
    m = _sq(m, tuple(d for d in range(m.dim()) if d not in axes))
    kept = sorted(axes)
    m = m.permute([kept.index(a) for a in axes])
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _zero_unread(x, m, axes, own, inplace):
    """``x``, an operand of a sum of products over ``axes`` of the statement's space (varying along
    ``own`` of them), with 0 wherever the result's presence ``m`` (over the whole space) is false at every
    point that reads it: a key past a KV cache's length (``where m < n``) for every query. Only in
    ``program_any`` (inputs that hold an infinity or NaN) and when a gradient is recorded (``inplace``
    false): the forward pass masks those products' sums, but the gradient of a product's operand is the
    other operand times the result's gradient, 0 there, and ``0 * NaN`` is NaN (``Q``'s gradient read
    ``K``'s NaN padding). Zeroed before the product, the value is never multiplied: its gradient is 0."""
    if inplace or m is None:
        return x
    wide = tuple(d for d in range(m.dim()) if d not in own and m.shape[d] != 1)
    if wide:
        m = m.any(dim=wide, keepdim=True)
    if _all_true(m):  # (every point read: a causal query sees key 0)
        return x
    drop = tuple(d for d in range(m.dim()) if d not in axes)
    if drop:
        m = m.squeeze(drop)
    kept = sorted(axes)
    m = m.permute([kept.index(a) for a in axes])
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _fill(m, value, dtype):
    """0 where present, ``value`` (an infinity) where absent: added to a finite value, fills absent points.

    Laid out as ``m`` (a permuted mask gives a permuted fill), so that adding it to a tile of the same layout
    runs contiguously. Adding a fill is how a tile's absent points are set: ``masked_fill_`` with a mask
    broadcast over heads runs 10x slower on CPU."""
    zero = torch.zeros((), dtype=dtype, device=m.device)
    return torch.where(m, zero, torch.full((), value, dtype=dtype, device=m.device))


def _memory_order(x) -> tuple[int, ...]:
    """``x``'s dimensions from the outermost in memory to the innermost. A dimension of size 1 has no
    place in memory: it keeps its logical position (a contiguous tensor's order is the identity, whatever
    strides its size-1 dimensions have). Under ``torch.compile`` the logical order: the compiler lays memory
    out itself, and its symbolic strides cannot be sorted."""
    if torch.compiler.is_compiling():
        return tuple(range(x.dim()))
    big = iter(sorted((d for d in range(x.dim()) if x.shape[d] != 1), key=lambda d: (-x.stride(d), d)))
    return tuple(d if x.shape[d] == 1 else next(big) for d in range(x.dim()))


def _inverse(order):
    """The permutation that undoes ``permute(order)``."""
    return sorted(range(len(order)), key=order.__getitem__)


def _laid_out(t, order, copy=False):
    """``t`` with its memory in the dimension order ``order`` (a tile's: see :func:`_memory_order`), so that
    an operation between the two runs along both contiguously (a fill added to a tile laid out ``[rows,
    keys]`` while its mask is ``[keys, rows]``). ``copy``: always in memory of its own (``t`` itself when it
    is laid out so already, otherwise)."""
    if order == tuple(range(t.dim())):
        return t.clone(memory_format=torch.contiguous_format) if copy else t
    inverse = _inverse(order)
    t = t.permute(order)
    return (t.clone(memory_format=torch.contiguous_format) if copy else t.contiguous()).permute(inverse)


def _fill_as(pool, m, value, x):
    """:func:`_fill` of ``m`` with ``value``, laid out as tile ``x``, kept with ``m`` (:func:`_derived`)."""
    order = _memory_order(x)
    made = lambda: _laid_out(_fill(m, value, x.dtype), order)  # noqa: E731
    return _derived(pool, m, ("fill", value, x.dtype, order), made)


def _neg_fill(x, m, inplace, pool=None):
    """``x`` with ``-inf`` at its absent points (``m`` false), in ``x``'s memory when no gradient is recorded
    (``x`` is then a temporary of the generated code's own). ``x`` is finite at its absent points, so that
    adding :func:`_fill` sets them. A tile filled once serves its max (no masked copy, :func:`_rmax` with
    ``filled``) and its exponential (``exp(-inf - b)`` is 0 when ``b > -inf``, see :func:`_above`)."""
    if m is None:
        return x
    fill = _fill_as(pool, m, -math.inf, x)
    if inplace and _writable(x, fill):
        return x.add_(fill)
    return x + fill


def _above(b):
    """``b`` with ``-inf`` raised to ``-max / 2`` of its dtype: subtracted from a tile whose absent points
    hold ``-inf``, they stay ``-inf`` (``-inf - -inf`` would be NaN). At a present point ``a`` (finite) the
    result is unchanged in effect: ``exp(a + max / 2)`` is ``inf``, as ``exp(a - -inf)`` is."""
    if isinstance(b, torch.Tensor):
        return b.clamp_min(-torch.finfo(b.dtype).max / 2)
    return max(b, -torch.finfo(torch.float64).max / 2)


def _self_diff(x, m):
    """``x - x``: 0, or NaN where ``x`` is infinite or NaN, and 0 at ``x``'s absent points (``m`` false)
    whatever they hold. The rewrite adds ``XM - XM`` to a running sum read at its end (NaN where the row's
    exact max is not finite, as the spec's ``exp(-inf - -inf)``; einattn.rewrite.exact); at a row without a
    present point the copy ``XM`` holds ``-inf``, and ``-inf - -inf`` there, though masked, is NaN that
    autograd multiplies the masked value's zero gradient by (``0 * NaN``) through the product it is in. The
    gradient with respect to ``x`` is 0, as ``x - x``'s is."""
    if m is None or _all_true(m):
        return x - x
    return torch.where(m, x - x, 0.0)


def _dflt(a, m, b, finite=False, own=False, keep=False):
    """``a ?? b``: ``a`` where present, else ``b`` (``finite``: ``a`` holds no infinity or NaN).

    Nothing absent: ``a``, broadcast to the shape ``torch.where(m, a, b)`` would have (the generator counts
    ``b``'s ranks among the value's: ``exp(T[i]) ?? X[i, j]`` has ``j``). ``keep``: ``b`` carries an input
    that may reach the outputs through such defaults only (torch_codegen.defaulted_inputs): when a gradient
    is recorded for ``b``, it stays in the graph with a zero gradient (:func:`_kept`), as through the
    ``torch.where`` it skips, instead of leaving the input out ("not used in the graph").

    ``own``: ``a`` is a temporary of the generated code's own that nothing reads afterwards (no gradient
    recorded): a number ``b`` is written into its memory, which stays a tensor a matmul may accumulate into
    (the rewrite's running sum at its first step, `SPNV ?? 0` with nothing present)."""
    if m is None or _all_true(m):
        shape = a.shape if m is None else _bshape(a.shape, m.shape)
        if isinstance(b, torch.Tensor):
            shape = _bshape(shape, b.shape)
            if keep:
                a = _kept(a, b)
        return a if shape == a.shape else a.expand(shape)
    if own and isinstance(b, (int, float)) and _covers(a.shape, m.shape) and _writable(a, b):
        return a.fill_(b) if _all_false(m) else a.masked_fill_(m.logical_not(), b)
    if isinstance(b, (int, float)) and _all_false(m):  # nothing present (a running state at its first
        # step): the default, broadcast as a view (a `where` wrote a whole tile of it)
        return torch.full((), b, dtype=a.dtype, device=a.device).expand(_bshape(a.shape, m.shape))
    if finite and isinstance(b, (int, float)):
        if b == 0:
            return _zf(a, m, True)
        if math.isinf(b):
            return a + _fill(m, b, a.dtype)
    return torch.where(m, a, b)


def _usq(m, dim):
    return None if m is None else m.unsqueeze(dim)


def _sq(m, dims):
    """Drop axes ``dims`` (an int or a tuple) of a mask that does not vary along them (the analysis says
    so): size 1, or its first slice where it was built wider (a sum's presence over an empty rank is one
    value along the others, ``KS[e] = K[m, e]`` with M = 0); an empty axis holds no point, nothing varies."""
    if m is None or dims == ():
        return m
    for d in (dims,) if isinstance(dims, int) else dims:
        if m.shape[d] != 1:
            m = m.narrow(d, 0, 1) if m.shape[d] else m.all(d, keepdim=True)
    return m.squeeze(dims)


# ---- reads ---------------------------------------------------------------------------------------------


def _range_mask(n, lo, hi, dim, ndim, device):
    ok = torch.zeros(n, dtype=torch.bool, device=device)
    ok[lo:hi] = True
    shape = [1] * ndim
    shape[dim] = n
    return ok.reshape(shape)


def _take(x, m, dim, start, length, extent, squeeze=False):
    """Positions ``start .. start + length - 1`` of dimension ``dim``: a view when in range, else padded.

    Positions outside ``0 .. extent - 1`` read 0 and are absent. ``m`` is the presence mask of ``x`` (its
    ``dim`` of size 1 or ``extent``). Returns (value, mask); ``squeeze`` drops the dimension (``length`` 1).
    """
    lo = min(max(0, -start), length)  # (an empty rank: length 0, nothing before or after)
    hi = max(min(length, extent - start), lo)
    inner = x.narrow(dim, start + lo, hi - lo) if hi > lo else x.narrow(dim, 0, 0)
    mm = None
    if m is not None:
        mm = (
            m if m.shape[dim] == 1 else m.narrow(dim, start + lo, hi - lo) if hi > lo else m.narrow(dim, 0, 0)
        )
    if lo > 0 or hi < length:
        shape = list(inner.shape)
        shape[dim] = lo
        before = inner.new_zeros(shape)
        shape[dim] = length - hi
        inner = torch.cat([before, inner, inner.new_zeros(shape)], dim)
        if mm is not None and mm.shape[dim] != 1:
            shape = list(mm.shape)
            shape[dim] = lo
            pre = mm.new_zeros(shape)
            shape[dim] = length - hi
            mm = torch.cat([pre, mm, mm.new_zeros(shape)], dim)
        mm = _and(mm, _range_mask(length, lo, hi, dim, x.dim(), x.device))
    if squeeze:
        inner = inner.squeeze(dim)
        mm = None if mm is None else mm.squeeze(dim)
    return inner, mm


def _split(x, m, dim, tile, outer, extent):
    """Dimension ``dim`` read at ``outer_index * tile + inner_index``: padded to ``outer * tile``, split."""
    v, mm = _take(x, m, dim, 0, outer * tile, extent)
    v = v.unflatten(dim, (outer, tile))
    if mm is not None:
        mm = mm.unflatten(dim, (outer, tile) if mm.shape[dim] != 1 else (1, 1))
    return v, mm


def _gather(x, m, index, extents, check, ndim):
    """``x[index]`` with one integer index (tensor over the space, or int) per dimension.

    ``check[k]`` says whether index ``k`` may fall outside ``0 .. extents[k] - 1``: such points read 0 and are
    absent. The result has ``ndim`` axes.
    """
    valid = None
    idx = []
    for i, n, c in zip(index, extents, check):
        if c:
            if isinstance(i, torch.Tensor):
                valid = _and(valid, (i >= 0) & (i < n))
                i = i.clamp(0, max(n - 1, 0))
            else:
                if not 0 <= i < n:
                    valid = torch.zeros((), dtype=torch.bool, device=x.device)
                i = min(max(i, 0), max(n - 1, 0))
        idx.append(i)
    if any(n == 0 for n in extents):
        shape = torch.broadcast_shapes(*(i.shape for i in idx if isinstance(i, torch.Tensor)))
        v = x.new_zeros(shape)
        valid = torch.zeros(shape, dtype=torch.bool, device=x.device)
    else:
        v = x[tuple(idx)]
        if m is not None:
            valid = _and(valid, m.expand(extents)[tuple(idx)])
    v = v.reshape((1,) * (ndim - v.dim()) + tuple(v.shape))
    if valid is not None:
        valid = valid.reshape((1,) * (ndim - valid.dim()) + tuple(valid.shape))
    return v, valid


# ---- intervals (is an index expression in range?) ----------------------------------------------------------


def _iv(op, a, b=None):
    """Interval arithmetic on (lo, hi) pairs and numbers: for index expressions without tensor reads, and
    for the bound of a library kernel's bias (:func:`_sdpa_bias`), which adds ``/`` and the language's
    monotone functions (``exp``, ``log``, ``sqrt``, ``rsqrt``, ``tanh``, ``sigmoid``). An interval it
    cannot bound (a division by one holding 0, ``log`` of one reaching 0) is ``(-inf, inf)``; NaN stays."""
    a = a if isinstance(a, tuple) else (a, a)
    if op == "neg":
        return (-a[1], -a[0])
    if op == "abs":
        return (0 if a[0] <= 0 <= a[1] else min(abs(a[0]), abs(a[1])), max(abs(a[0]), abs(a[1])))
    if op in _IV_MONOTONE:
        return _iv_monotone(op, *a)
    b = b if isinstance(b, tuple) else (b, b)
    if op == "/":
        if not (b[0] > 0 or b[1] < 0):
            return (-math.inf, math.inf)
        op, b = "*", (1.0 / b[1], 1.0 / b[0])
    if op == "*" and any(x != x for x in (*a, *b)):
        return (math.nan, math.nan)
    if op == "+":
        return (a[0] + b[0], a[1] + b[1])
    if op == "-":
        return (a[0] - b[1], a[1] - b[0])
    if op in ("*", "//"):
        if op == "//" and b[0] <= 0 <= b[1]:
            return (-math.inf, math.inf)
        vals = [x * y if op == "*" else x // y for x in a for y in b]
        return (min(vals), max(vals))
    if op == "%":
        return (0, b[1] - 1) if b[0] > 0 else (-math.inf, math.inf)
    if op == "max":
        return (max(a[0], b[0]), max(a[1], b[1]))
    if op == "min":
        return (min(a[0], b[0]), min(a[1], b[1]))
    raise ValueError(op)


_IV_MONOTONE = ("exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid")


def _iv_monotone(op, lo, hi):
    if lo != lo or hi != hi:
        return (math.nan, math.nan)
    if (op in ("log", "rsqrt") and not lo > 0) or (op == "sqrt" and not lo >= 0):
        return (-math.inf, math.inf)
    if op == "rsqrt":  # (decreasing)
        return (1.0 / math.sqrt(hi), 1.0 / math.sqrt(lo))
    fn = {
        "exp": lambda x: math.exp(x) if x < 709.0 else math.inf,
        "log": math.log,
        "sqrt": math.sqrt,
        "tanh": math.tanh,
        "sigmoid": lambda x: 1.0 / (1.0 + math.exp(-x)) if x > -709.0 else 0.0,
    }[op]
    return (fn(lo), fn(hi))


def _outside(iv, n):
    """Whether interval ``iv`` may leave ``0 .. n - 1``."""
    iv = iv if isinstance(iv, tuple) else (iv, iv)
    return iv[0] < 0 or iv[1] > n - 1


# ---- in place, and buffers reused across steps ------------------------------------------------------------


def _scratch(pool, key, shape, like, copy=False):
    """A buffer from ``pool`` (None: no pool, the caller allocates) for a temporary of ``key`` and ``shape``
    (the dtype and device of ``like``) that is dead before the next step of the loop reuses it. ``copy``: the
    buffer receives a copy of ``like``, and is laid out as ``like`` when it has that shape (a permuted tile
    gives a permuted buffer: the copy runs in memory order); else contiguous.

    Each key has one block of memory, as large as its largest shape so far, and a buffer is a view of its
    beginning: steps that compute different numbers of rows (a causal step over a block of rows computes
    those at or below its diagonal) write the same memory, which the previous step left in cache, and a
    call keeps one tile per temporary, not one per shape (a causal call over blocks of 2048 rows made eight
    score tiles of up to 16 MB, past what :func:`_keep_pool` keeps, so every call faulted them in anew)."""
    if pool is None or torch.compiler.is_compiling():
        return None
    numel = math.prod(shape)
    slot = (key, like.dtype, like.device)
    block = pool.get(slot)
    if block is None or block.numel() < numel:
        kept = pool.get("kept")
        old = kept[1].pop(slot, None) if kept else None
        if old is None or old.numel() < numel:
            old = torch.empty(max(numel, 1), dtype=like.dtype, device=like.device)
        pool[slot] = block = old
    flat = block[:numel]
    if copy and tuple(like.shape) == tuple(shape):
        order = _memory_order(like)
        return flat.view([shape[d] for d in order]).permute(_inverse(order))
    return flat.view(shape)


def _bshape(a, b):
    """``torch.broadcast_shapes(a, b)`` for two valid operands of one elementwise operation (torch's own is
    a Python function that costs more than the operation on a small tile, once per statement and step)."""
    if torch.compiler.is_compiling():
        return torch.broadcast_shapes(a, b)
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    return torch.Size(y if x == 1 else x for x, y in zip(a, b))


def _covers(a, b) -> bool:
    """Whether ``b`` broadcasts to shape ``a`` exactly (``a`` needs no broadcasting)."""
    if torch.compiler.is_compiling():
        return torch.broadcast_shapes(a, b) == a
    if len(b) > len(a):
        return False  # (the result would have more dimensions)
    return all(y in (1, x) for x, y in zip(a[len(a) - len(b) :], b))


def _new_pool(scope, o):
    """The pool of one call (when no gradient is recorded): buffers reused by the next steps, and the scope
    under which masks are kept across calls (:func:`_memo`): the generated module and the device.

    On the CPU the pool starts with the buffers that the last call of the same program on this thread used
    (:func:`_keep_pool` keeps them; they are taken out while this call runs, so that a call nested in it gets
    its own). Fresh memory costs a page fault per 4 KB at its first write: a 4 MB score tile of causal
    attention at N = 1024 cost 20 % of a call when it was allocated anew at every call.

    Tensors made under ``torch.inference_mode`` are inference tensors, which no later call outside it may
    write to: what a call keeps is kept apart by the mode it ran in."""
    compiling = torch.compiler.is_compiling()  # (Dynamo cannot trace the mode's query; nothing is kept)
    pool = {"scope": (scope, str(o[1]), not compiling and torch.is_inference_mode_enabled())}
    if o[1].type == "cpu" and not compiling:
        key = (*pool["scope"], threading.get_ident())
        with _POOLS_LOCK:
            pool["kept"] = (key, _POOLS.pop(key, None) or {})
    return pool


# The buffers of the last call of a generated program, by (scope, device, thread): the _POOLS_MAX last kept,
# at most _POOLS_BYTES in all (a batch of 32 x 32 heads makes a 512 MB score tile: the memory is given back,
# and the page faults of such a call are a small part of its time)
_POOLS: dict[tuple, dict] = {}
_POOLS_MAX = 8
_POOLS_BYTES = 64 << 20
_POOLS_LOCK = threading.Lock()  # (threads keep their pools in the one dict)


def _keep_pool(pool, outs):
    """``outs``, the call's outputs; keeps the buffers this call used for the next call (see
    :func:`_new_pool`). Those it did not use are dropped, so that what is kept is one call's scratch: O(tile),
    as the analysis bounds it. (The generator computes only a loop's dead temporaries in the pool; a buffer
    that an output shares memory with would never be kept.)"""
    if pool is None or "kept" not in pool:
        return outs
    key = pool["kept"][0]
    owned = {x.untyped_storage().data_ptr() for x in outs if isinstance(x, torch.Tensor)}
    bufs = {s: b for s, b in pool.items() if isinstance(b, torch.Tensor)}
    kept = {s: b for s, b in bufs.items() if b.untyped_storage().data_ptr() not in owned}
    if sum(b.untyped_storage().nbytes() for b in kept.values()) > _POOLS_BYTES:
        return outs
    with _POOLS_LOCK:
        _POOLS.pop(key, None)
        _POOLS[key] = kept
        while len(_POOLS) > _POOLS_MAX or _kept_bytes() > _POOLS_BYTES:
            _POOLS.pop(next(iter(_POOLS)))
    return outs


def _kept_bytes() -> int:
    return sum(b.untyped_storage().nbytes() for pool in _POOLS.values() for b in pool.values())


# Masks kept across calls (see _memo): (scope, key) -> (mask, what is derived from it: its -inf fill, its
# any), the oldest first; and, by the memory of each kept mask (alive while it is kept), its derived values.
_KEPT: dict[tuple, tuple[torch.Tensor, dict]] = {}
_KEPT_PTRS: dict[int, dict] = {}
_KEPT_MAX = 16  # (a 256 x 256 mask and its float32 fill: 0.3 MB)


def _memo(pool, key, make):
    """``make()``, kept under ``key`` (a tuple that determines the value: see
    ``torch_codegen.Generator.mask_key``) for the later steps of the call and for later calls of the same
    generated program on the same device (the last ``_KEPT_MAX`` masks made); no pool (a gradient is recorded,
    or under ``torch.compile``): computed every time. The value is never written to. Otherwise a sliding
    window's two masks cost 0.2-1 ms each to make at every call."""
    if pool is None or torch.compiler.is_compiling():
        return make()
    full = (pool.get("scope"), key)
    kept = _KEPT.get(full)
    if kept is not None:
        return kept[0]
    value = make()
    return _keep(full, value) if isinstance(value, torch.Tensor) else value


def _keep(full, mask):
    """Keep ``mask`` under ``full`` (or return the one another thread kept first); drop the oldest beyond
    ``_KEPT_MAX``. A derived value lives in its mask's record, so nothing outlives the mask it came from."""
    with _POOLS_LOCK:  # (one lock for what calls keep across calls)
        record = _KEPT.setdefault(full, (mask, {}))
        if record[0] is mask:
            _KEPT_PTRS[mask.untyped_storage().data_ptr()] = record[1]
            while len(_KEPT) > _KEPT_MAX:
                old = _KEPT.pop(next(iter(_KEPT)))
                ptr = old[0].untyped_storage().data_ptr()
                if _KEPT_PTRS.get(ptr) is old[1]:
                    _KEPT_PTRS.pop(ptr, None)
    return record[0]


def _derived(pool, m, what, make):
    """``make()`` (a value computed from mask ``m`` alone: its ``-inf`` fill, its ``any`` over some
    dimensions), kept with the mask when ``m`` is a view of one :func:`_memo` keeps."""
    if pool is None or m is None or torch.compiler.is_compiling():
        return make()
    store = _KEPT_PTRS.get(m.untyped_storage().data_ptr())
    if store is None:
        return make()
    key = (what, tuple(m.shape), m.stride(), m.storage_offset())
    value = store.get(key)
    if value is None:
        value = store.setdefault(key, make())
    return value


def _writable(a, b) -> bool:
    """``a <op>= b`` gives ``a <op> b``: same shape and dtype, and ``a`` is no broadcast view."""
    if isinstance(b, torch.Tensor):
        if b.dtype != a.dtype or (b.shape != a.shape and not _covers(a.shape, b.shape)):
            return False
    elif not (a.is_floating_point() and isinstance(b, (int, float))):
        return False
    strides = a.stride()
    return 0 not in strides or all(st != 0 or n == 1 for st, n in zip(strides, a.shape))


def _in_place(method, op):
    def run(a, b, inplace):
        if inplace and isinstance(a, torch.Tensor) and _writable(a, b):
            return getattr(a, method)(b)
        return op(a, b)

    run.__doc__ = f"``a {op.__name__} b``, in the memory of ``a`` when no gradient is recorded: a temporary "
    run.__doc__ += "that nothing reads after this statement."
    return run


_ip_add = _in_place("add_", torch.add)
_ip_sub = _in_place("sub_", torch.sub)
_ip_mul = _in_place("mul_", torch.mul)
_ip_div = _in_place("div_", torch.div)
_OPS = {_ip_add: torch.add, _ip_sub: torch.sub, _ip_mul: torch.mul, _ip_div: torch.div}


# ---- contractions ----------------------------------------------------------------------------------------


_PLANS: dict[tuple[str, bool], tuple | None] = {}

# A batched matmul whose right operand has at most this many free columns runs with its operands swapped
# (``(B^T A^T)^T``): MKL's batched product is 3-3.5x slower with a narrow right operand than with the same
# narrow operand on the left (decoding's ``P V`` with one query row: [32, 64, 256] x [32, 256, 1] streams V at
# a third of the rate of [32, 1, 256] x [32, 256, 64]; 16 columns are at par; docs/benchmarks.md).
NARROW = 8


def _mm_plan(spec, flip=False):
    """The plan of :func:`_mm_plan_of`, kept per spec (Dynamo traces the computation itself: a global mutated
    inside a checkpoint would break its trace)."""
    if torch.compiler.is_compiling():
        return _mm_plan_of(spec, flip)
    if (spec, flip) not in _PLANS:
        _PLANS[spec, flip] = _mm_plan_of(spec, flip)
    return _PLANS[spec, flip]


def _oriented(spec, a, b, narrow=1):
    """(plan, flipped): the plan of ``einsum(spec, a, b)`` for these operands' sizes: :func:`_mm_plan`'s, or
    its mirror image when that one would put a narrow operand (at most ``narrow`` free columns) on the right
    of a wider left one. A fresh result flips only a single column (its layout is then the same); a product
    accumulated into memory of its own (:func:`_into_views`) up to :data:`NARROW` where its memory allows."""
    plan = _mm_plan(spec)
    if plan is None or torch.compiler.is_compiling():  # (the compiler lays matmuls out itself)
        return plan, False
    a_left, perm_left, perm_right, nb, nl, nc, _ = plan
    left, right = (a, b) if a_left else (b, a)
    rows = math.prod(left.shape[d] for d in perm_left[nb : nb + nl])
    cols = math.prod(right.shape[d] for d in perm_right[nb + nc :])
    if cols <= narrow and rows > cols:
        return _mm_plan(spec, True), True
    return plan, False


def _mm_plan_of(spec, flip=False):
    """How ``torch.einsum(spec, a, b)`` runs as one batched matmul, or None (then einsum runs it).

    Returns (a_left, perm_left, perm_right, n_batch, n_left, n_contracted, out_perm): the operand put on the
    right is the one that owns the output's innermost free rank, so that the matmul's result is laid out as
    the output wants it (attention's ``[rows, keys]`` scores, ``[features, rows]`` accumulators), at least
    in its innermost rank, and the permute back is a view. ``flip``: the other operand on the right (for a
    narrow one, see :data:`NARROW`)."""
    ins, out = spec.split("->")
    a, b = ins.split(",")
    if len(set(a)) < len(a) or len(set(b)) < len(b) or any(c not in out for c in set(a) ^ set(b)):
        return None  # a diagonal, or a rank summed within one operand: einsum's own plan
    batch = [c for c in out if c in a and c in b]
    contracted = [c for c in a if c in b and c not in out]
    free_a = [c for c in out if c in a and c not in b]
    free_b = [c for c in out if c in b and c not in a]
    a_left = not free_b or (bool(free_a) and out.index(free_b[-1]) > out.index(free_a[-1]))
    a_left = a_left != flip
    (lt, ln), (rt, rn) = ((a, free_a), (b, free_b)) if a_left else ((b, free_b), (a, free_a))
    perm_left = tuple(lt.index(c) for c in batch + ln + contracted)
    perm_right = tuple(rt.index(c) for c in batch + contracted + rn)
    made = batch + ln + rn
    out_perm = tuple(made.index(c) for c in out)
    return a_left, perm_left, perm_right, len(batch), len(ln), len(contracted), out_perm


def _mm(spec, a, b, pool=None, key=None, alpha=None, acc=None, inplace=False):
    """``acc + alpha * torch.einsum(spec, a, b)`` for two operands, as one ``torch.matmul`` whose result needs
    no copy to take the output's layout (einsum's own plan may transpose the result and copy an operand).

    ``pool``: a dict of buffers (None when a gradient is recorded): the result is computed into the buffer of
    ``key`` and its shape, which an earlier step's result of this statement occupied (the generator proved it
    dead by the end of its step: ``torch_codegen.pooled_tiles``), instead of into fresh memory.

    ``alpha``: the contraction's scalar factors (attention's ``rsqrt(E)``). A constant on the CPU is the
    matmul's own ``alpha`` (``torch.baddbmm``): no pass over an operand. Otherwise (a scalar input that may
    take a gradient, another device, or under ``torch.compile``) it scales the smaller operand.

    ``acc``: a term the product is added to (laid out as the result). With ``inplace`` (a temporary that
    nothing reads afterwards, no gradient recorded) the matmul accumulates into its memory
    (``baddbmm_``, ``beta = 1``) and returns it: attention's ``P V`` of a tile is added to the rescaled
    running sum with no tensor of its own."""
    if acc is not None:
        return _mm_into(spec, a, b, alpha, acc, inplace)
    fast = _views_known(a, b)
    if fast:
        gkey = (spec, a.shape, a.stride(), b.shape, b.stride())
        g = _GEOMETRY.get(gkey)
        scale = None if not g else 1.0 if alpha is None else _gemm_alpha(alpha, a, b)
        if scale is not None:
            a_left, gl, gr, dims, gout = g
            left, right = (_view(a, gl), _view(b, gr)) if a_left else (_view(b, gl), _view(a, gr))
            buf = _scratch(pool, key, dims, left)
            buf = left.new_empty(dims) if buf is None else buf
            return _view(torch.baddbmm(buf, left, right, beta=0, alpha=scale, out=buf), gout)
    plan = _oriented(spec, a, b)[0]
    scale = _gemm_alpha(alpha, a, b) if alpha is not None and plan is not None else None
    if alpha is not None and scale is None:
        if a.numel() <= b.numel():
            a = a * alpha
        else:
            b = b * alpha
    operands = None if plan is None else _mm_operands(plan, a, b)
    if operands is None:  # einsum's own plan (a rank broadcast in one operand: einsum expands nothing)
        return torch.einsum(spec, a, b) if scale is None else torch.einsum(spec, a, b) * scale
    left, right, (nbatch, rows, _, cols), made = operands
    if left.dtype != right.dtype:
        pool = None
    buf = _scratch(pool, key, (nbatch, rows, cols), left)
    if scale is None:
        r = torch.matmul(left, right, out=buf)
    else:
        out = buf if buf is not None else left.new_empty((nbatch, rows, cols))
        if torch.is_grad_enabled() and (left.requires_grad or right.requires_grad):  # (out= records none)
            r = torch.baddbmm(out, left, right, beta=0, alpha=scale)
        else:
            r = torch.baddbmm(out, left, right, beta=0, alpha=scale, out=out)
    result = r.reshape(made).permute(plan[-1])
    if fast and (alpha is None or scale is not None):  # the views of a later step with these layouts
        lt, rt = (a, b) if plan[0] else (b, a)
        views = (_geometry(left, lt), _geometry(right, rt), _geometry(result, r))
        _remember(gkey, None if None in views else (plan[0], views[0], views[1], tuple(r.shape), views[2]))
    return result


# The views of a matmul by (spec, the operands' shapes and strides[, the accumulator's]): the batched operands
# and the result as (shape, strides, offset from the tensor's own). The permutes and reshapes that
# _mm_operands takes are functions of those alone, so a later step (or call) with the same layouts takes each
# view in one `as_strided`: the planning cost 0.1 ms of Python a step, as much as a 64-key tile's matmuls.
# None: a view needs a copy there (the general path then).
_GEOMETRY: dict[tuple, tuple | None] = {}
_GEOMETRY_MAX = 4096


def _views_known(a, b) -> bool:
    """Whether a matmul of ``a`` and ``b`` may take its views from :data:`_GEOMETRY`: float tensors of one
    dtype, no gradient recorded (the known path writes into its result), outside ``torch.compile``."""
    if torch.compiler.is_compiling() or a.dtype != b.dtype or not a.is_floating_point():
        return False
    return not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad))


def _geometry(v, base):
    """(shape, strides, offset) of ``v`` in the memory of ``base``, or None when ``v`` is a copy."""
    if v.untyped_storage().data_ptr() != base.untyped_storage().data_ptr():
        return None
    return (tuple(v.shape), v.stride(), v.storage_offset() - base.storage_offset())


def _view(x, g):
    """The view :func:`_geometry` described, of ``x`` (a tensor laid out as the one it was taken from)."""
    return x.as_strided(g[0], g[1], x.storage_offset() + g[2])


def _remember(key, value):
    if len(_GEOMETRY) >= _GEOMETRY_MAX:
        _GEOMETRY.clear()
    _GEOMETRY[key] = value


def _mm_operands(plan, a, b):
    """The operands of a plan (:func:`_mm_plan_of`) as one batched matmul's: ``(left, right, (batch, rows,
    inner, cols), made)``, ``left`` and ``right`` 3-D, ``made`` the result's shape before the permute to the
    output; None when a rank is broadcast (size 1) in one operand only."""
    a_left, perm_left, perm_right, nb, nl, nc, _ = plan
    left, right = (a, b) if a_left else (b, a)
    left, right = left.permute(perm_left), right.permute(perm_right)
    batch = left.shape[:nb]
    lshape, cshape, rshape = left.shape[nb : nb + nl], left.shape[nb + nl :], right.shape[nb + nc :]
    if right.shape[:nb] != batch or right.shape[nb : nb + nc] != cshape:
        return None
    dims = (math.prod(batch), math.prod(lshape), math.prod(cshape), math.prod(rshape))
    n, rows, inner, cols = dims
    return left.reshape(n, rows, inner), right.reshape(n, inner, cols), dims, (*batch, *lshape, *rshape)


def _mm_into(spec, a, b, alpha, acc, inplace):
    """``acc + alpha * einsum(spec, a, b)``, in ``acc``'s memory where it can be (see :func:`_mm`). The
    matmul is planned for ``acc``'s layout: a running sum laid out ``[rows, features]`` behind a ``[features,
    rows]`` view takes ``P V``, one laid out ``[features, rows]`` takes ``(P V)^T``."""
    if inplace and _views_known(a, b) and acc.dtype == a.dtype:
        gkey = (spec, a.shape, a.stride(), b.shape, b.stride(), acc.shape, acc.stride())
        g = _GEOMETRY.get(gkey, False)
        if g is False:
            g = _into_views(spec, a, b, acc)
            _remember(gkey, g)
        scale = None if g is None else 1.0 if alpha is None else _gemm_alpha(alpha, a, b)
        if scale is not None:
            a_left, gl, gr, gc, planned = g
            if gl is None or gr is None:  # an operand is copied into the matmul's layout
                left, right = _mm_operands(_mm_plan(*planned), a, b)[:2]
            else:
                left, right = (_view(a, gl), _view(b, gr)) if a_left else (_view(b, gl), _view(a, gr))
            c = _view(acc, gc)
            if c.shape[0] > 1 and not c.is_contiguous():
                # a batch of results that is not one block of memory (a block of rows narrowed within
                # the running state): torch would run one gemm per batch item; one batched product into
                # fresh memory and an add is 15-30% faster (docs/benchmarks.md, session 12)
                c.add_(torch.bmm(left, right), alpha=scale)
            else:
                c.baddbmm_(left, right, alpha=scale)
            return acc
    return acc + _mm(spec, a, b, alpha=alpha)


def _into_views(spec, a, b, acc):
    """The views of :func:`_mm_into` (as :data:`_GEOMETRY` keeps them: the operands' (None: a copy), the
    accumulator's memory seen as the batched matmul's result, and the spec planned for its memory order), or
    None when the matmul cannot accumulate in ``acc``."""
    ins, out = spec.split("->")
    order = _memory_order(acc)
    mine = acc
    if len(out) == acc.dim() and order != tuple(range(acc.dim())):  # plan for acc's memory order
        spec, mine = ins + "->" + "".join(out[d] for d in order), acc.permute(order)
    plan, flipped = _oriented(spec, a, b, NARROW)
    if plan is None or not _writable(mine, mine):
        return None
    # the narrow operand on the left where acc's memory allows it, else the plan for acc's layout
    for flip in (True, False) if flipped else (False,):
        plan = _mm_plan(spec, flip)
        operands = _mm_operands(plan, a, b)
        if operands is None:
            return None
        left, right, (n, rows, _, cols), made = operands
        inverse = tuple(sorted(range(len(plan[-1])), key=plan[-1].__getitem__))
        if len(inverse) != mine.dim() or tuple(mine.permute(inverse).shape) != made:
            return None
        try:
            c = mine.permute(inverse).view(n, rows, cols)  # the result's memory seen as the matmul's: no copy
        except RuntimeError:
            continue
        if c.stride(-1) == 1:
            lt, rt = (a, b) if plan[0] else (b, a)
            return plan[0], _geometry(left, lt), _geometry(right, rt), _geometry(c, acc), (spec, flip)
    return None


def _gemm_alpha(alpha, a, b):
    """``alpha`` as a Python number when it may be a matmul's ``alpha``: a finite constant (a number, or a
    0-dim CPU tensor that takes no gradient) and float operands, outside ``torch.compile``. None otherwise."""
    if torch.compiler.is_compiling() or not (a.is_floating_point() and b.is_floating_point()):
        return None
    if isinstance(alpha, torch.Tensor):
        if alpha.dim() or alpha.device.type != "cpu" or alpha.requires_grad:
            return None
        alpha = alpha.item()
    alpha = float(alpha)
    # an alpha that is not finite scales an operand instead: the CPU's baddbmm with a transposed operand
    # and alpha = NaN returns finite values (the spec's scores are NaN there)
    return alpha if math.isfinite(alpha) else None


# ---- reductions ----------------------------------------------------------------------------------------


def _rsum(v, m, dims, shape, zero=False, finite=False, pool=None, key=None, mask=True):
    """Sum over ``dims`` of the present points; a point with none is absent. ``shape``: the space.

    ``zero``: ``v`` is already 0 at its absent points; ``finite``: it holds no infinity or NaN. ``pool``,
    ``key``: where the zero-filled copy may go (:func:`_scratch`). ``mask=False``: nothing reads the result's
    presence (None is returned for it)."""
    if not zero and m is not None:
        buf = _scratch(pool, key, _bshape(v.shape, m.shape), v, copy=True)
        if buf is not None:
            zero_t = torch.zeros((), dtype=v.dtype, device=v.device)
            v = torch.mul(v, m, out=buf) if finite else torch.where(m, v, zero_t, out=buf)
            zero = True
    v = v if zero else _zf(v, m, finite)
    r = v.expand(shape).sum(dim=dims) if dims else v
    return r, (_rmask(m, dims, shape, r) if mask else None)


def _rmax(v, m, dims, shape, largest=True, finite=False, pool=None, key=None, filled=False, mask=True):
    """Max (``largest``) or min over ``dims`` of the present points; a point with none is absent. ``pool``,
    ``key``: where the filled copy may go (:func:`_scratch`). ``filled``: ``v`` already holds ``-inf`` at its
    absent points (:func:`_neg_fill`; max only), so no copy is filled. ``mask=False``: nothing reads the
    result's presence (None is returned for it; the values at absent points are then left as they are)."""
    fill = -math.inf if largest else math.inf
    if m is not None and not (filled and largest):
        buf = _scratch(pool, key, _bshape(v.shape, m.shape), v, copy=True)
        if finite:
            v = torch.add(v, _fill_as(pool, m, fill, v), out=buf)
        else:
            v = torch.where(m, v, torch.full((), fill, dtype=v.dtype, device=v.device), out=buf)
    if any(shape[d] == 0 for d in dims):
        out = [n for k, n in enumerate(shape) if k not in dims]
        r = torch.full(out, fill, dtype=v.dtype, device=v.device)
    else:
        r = v.amax(dim=dims) if largest else v.amin(dim=dims)
    if not mask:
        return r, None
    mask = _derived(pool, m, ("any", dims, tuple(shape)), lambda: _rmask(m, dims, shape, r))
    return (r if mask is None else torch.where(mask, r, 0.0)), mask  # no infinity left at absent points


def _rmin(v, m, dims, shape, finite=False, pool=None, key=None, mask=True):
    return _rmax(v, m, dims, shape, largest=False, finite=finite, pool=pool, key=key, mask=mask)


def _rmask(m, dims, shape, r):
    if any(shape[d] == 0 for d in dims):
        return torch.zeros(r.shape, dtype=torch.bool, device=r.device)
    if m is None:
        return None
    return _any(m, dims) if dims else m


def _any(m, dims):
    """``m.any(dim=dims)``. On CPU, the max of the mask's bytes: ``any`` runs 5-10x slower there."""
    if m.device.type != "cpu" or m.numel() == 0 or torch.compiler.is_compiling():
        return m.any(dim=dims)
    return m.view(torch.uint8).amax(dim=dims).view(torch.bool)


def _cmask(dims, outer, inner):
    """Presence of a sum of products over ``dims``: masks that do not vary over ``dims`` (``outer``) must all
    hold; of the others (``inner``), some point of ``dims`` must have them all."""
    out = _and(*(_sq(m, dims) for m in outer))
    inside = _and(*inner)
    if inside is not None:
        out = _and(out, _any(inside, dims))
    return out


# ---- storage -----------------------------------------------------------------------------------------------


def _store(x, shape, o):
    """A value laid out over the left-hand ranks, broadcast (as a view) to the tensor's full shape."""
    if not isinstance(x, torch.Tensor):
        x = _c(x, o)
    return x.expand(shape)


def _store_init(x, dim, shape, o):
    """The initial state: the value over the other ranks, with the iterative dimension ``dim`` inserted."""
    if not isinstance(x, torch.Tensor):
        x = _c(x, o)
    if x.dim():
        x = x.unsqueeze(dim)
    return x.expand(shape)


def _rows_block(fn, start, length, inplace, inputs=()):
    """``fn(start, length)``: the whole loop for one block of independent rows. When a gradient is recorded
    (``inplace`` false), through ``torch.utils.checkpoint``: the backward pass recomputes the block's steps
    instead of keeping every step's tiles, so training keeps the forward pass's bound (memory for one block
    of rows against all keys, not for every row at once); the price is one more forward pass per block.

    ``inputs``: the program's inputs, which ``fn`` reads from its closure. The recomputation refuses to run
    when one was modified in place since the forward pass (autograd's own error: a checkpoint checks only
    the tensors passed to it, and the gradient would silently be that of the new values)."""
    if inplace:
        return fn(start, length)
    if torch.compiler.is_compiling():  # (Dynamo refuses a checkpoint with side effects; it saves its own)
        return torch.utils.checkpoint.checkpoint(fn, start, length, use_reentrant=False)
    tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
    versions = [x._version for x in tensors]
    runs = []

    def run(start, length):
        if runs:
            for k, x in enumerate(tensors):
                if x._version != versions[k]:
                    raise RuntimeError(
                        "one of the variables needed for gradient computation has been modified by an "
                        f"inplace operation: input {k} of the einattn kernel is at version {x._version}; "
                        f"expected version {versions[k]} instead (the backward pass recomputes the forward "
                        "pass's blocks of rows from the inputs: recompute=False keeps their values instead)"
                    )
        runs.append(True)
        return fn(start, length)

    return torch.utils.checkpoint.checkpoint(run, start, length, use_reentrant=False)


def _mine(x, inplace, order=None):
    """A state that a step updates in place (when no gradient is recorded): its own memory (the initial
    state may be a broadcast constant or a view of an input), laid out in ``order`` (see :func:`_own`)."""
    return _laid_out(x, order or tuple(range(x.dim())), copy=True) if inplace else x


def _own(x, m, shape, order=None, view=False):
    """A state about to be updated in place: its own memory, mask included (in its own shape, which
    :func:`_putm` widens where a step's piece needs it). ``order``: the state's dimensions from the outermost
    in memory to the innermost (``torch_codegen.Generator.state_layout``: the layout its final reader
    wants, attention's running sum ``RNV[f, p]`` laid out ``[p, f]`` as its output ``AV[p, f]``); None:
    contiguous. ``view``: ``x`` is memory of the program's own already (a block's rows of the whole state):
    kept as it is, only the mask is copied."""
    if view:
        return x, None if m is None else m.clone(memory_format=torch.contiguous_format)
    x = x.expand(shape)
    order = order or tuple(range(len(shape)))
    if x.numel() and not any(x.stride()) and not torch.compiler.is_compiling():
        # one value everywhere (an initial state `RNV[.., 0, p] = 0`): a fill, not a copy from a
        # broadcast view (a strided copy ran at a tenth of the speed: 0.6 ms of a causal call at N = 1024)
        value = x.as_strided((), (), x.storage_offset())
        made = torch.empty([shape[d] for d in order], dtype=x.dtype, device=x.device).fill_(value)
        x = made.permute(_inverse(order)) if order != tuple(range(len(shape))) else made
    else:
        x = _laid_out(x, order, copy=True)
    return x, None if m is None else m.clone(memory_format=torch.contiguous_format)


def _put(full, part, dim, start, inplace):
    """``full`` with positions ``start ..`` of ``dim`` replaced by ``part``.

    In place (``full`` is then memory of its own, see :func:`_own`) when nothing needs the old state for a
    gradient; else a new tensor.
    """
    piece = full.narrow(dim, start, part.shape[dim])
    if inplace:
        same = part.shape == piece.shape and part.stride() == piece.stride()
        same = same and not torch.compiler.is_compiling() and part.data_ptr() == piece.data_ptr()
        if not same:  # (else a step updated the state in place)
            piece.copy_(part.expand_as(piece))
        return full
    if start == 0 and part.shape[dim] == full.shape[dim]:
        return part.expand(full.shape)
    return torch.slice_scatter(full, part.expand_as(piece), dim, start, start + piece.shape[dim])


def _putm(full, part, dim, start, length, shape, inplace):
    """The mask of :func:`_put`; ``part`` covers ``length`` positions from ``start`` (None: all present).

    The mask has the state's extent along ``dim`` (its rows, written piece by piece) and wherever it or a
    piece varies, and 1 elsewhere: a running state's presence varies along its rows, not along its features
    (``RNV[b, h, p, f]``'s mask is ``[b, h, p, 1]``), so combining it costs a row's worth, not the state's."""
    if full is None and part is None:
        return None
    need = [1] * len(shape) if full is None else list(full.shape)
    need[dim] = shape[dim]
    if part is not None:  # (its dimensions aligned to the right, as broadcasting does)
        for k, n in enumerate(part.shape, start=len(shape) - part.dim()):
            if n != 1 and k != dim:
                need[k] = shape[k]
    if full is None:
        full, inplace = torch.ones(need, dtype=torch.bool, device=part.device), True
    elif list(full.shape) != need:
        full, inplace = full.expand(need).clone(memory_format=torch.contiguous_format), True
    piece_shape = list(need)
    piece_shape[dim] = length
    piece = (
        torch.ones(piece_shape, dtype=torch.bool, device=full.device)
        if part is None
        else part.expand(piece_shape)
    )
    if inplace:
        full.narrow(dim, start, length).copy_(piece)
    else:
        full = torch.slice_scatter(full, piece, dim, start, start + length)
    # A running state's presence (``RM ?? LM`` in the rewritten cascade) is true everywhere once every row
    # has seen a key: from then on it is None, and the next steps combine no mask for it. The check reads
    # the mask once a step, a fraction of the pass that updated the state itself, whatever its size.
    return None if _all_true(full, limit=None) else full


def _cat(parts, dim, into=None):
    """``torch.cat(parts, dim)`` in the parts' memory order: ``torch.cat`` lays its result out in the
    logical order, so blocks of a state laid out ``[rows, features]`` behind a ``[features, rows]`` view
    would be transposed by it (and every later use would read across memory).

    ``into``: the whole state in memory of the program's own, which the blocks updated through views of it
    (``torch_codegen.Generator.block_open``): it is returned, nothing copied, when every part is the view
    of its rows; otherwise (a step replaced a block's state) the parts are concatenated. Either way the
    result is then memory of the program's own. Without ``into``, one part is returned as it is."""
    if into is not None and not torch.compiler.is_compiling():
        start, mine = 0, True
        for x in parts:
            piece = into.narrow(dim, start, x.shape[dim])
            mine = mine and x.data_ptr() == piece.data_ptr() and x.stride() == piece.stride()
            mine = mine and x.shape == piece.shape
            start += x.shape[dim]
        if mine and start == into.shape[dim]:
            return into
    elif len(parts) == 1:
        return parts[0]
    order = _memory_order(parts[0])
    if order == tuple(range(parts[0].dim())) or any(_memory_order(x) != order for x in parts[1:]):
        return torch.cat(parts, dim)
    inverse = _inverse(order)
    return torch.cat([x.permute(order) for x in parts], inverse[dim]).permute(inverse)


def _catm(masks, dim, values):
    """Concatenate the masks of the pieces ``values`` (None: all present)."""
    if all(m is None for m in masks):
        return None
    parts = [
        torch.ones(v.shape, dtype=torch.bool, device=v.device) if m is None else m.expand(v.shape)
        for m, v in zip(masks, values)
    ]
    return torch.cat(parts, dim)


def _dense_op(method, a, b, inplace):
    """``a <op> b`` (``method``: one of the ``_ip_*`` helpers) for an output, computed straight into
    contiguous memory when no gradient is recorded: the layout :func:`_out` returns, so that it copies
    nothing (the operands may be laid out otherwise, as attention's ``[features, rows]`` running sum is)."""
    op = _OPS[method]
    tensors = [x for x in (a, b) if isinstance(x, torch.Tensor)]
    if not inplace or not tensors or torch.compiler.is_compiling():
        return op(a, b)
    shape = _bshape(a.shape, b.shape) if len(tensors) == 2 else tensors[0].shape
    out = torch.empty(shape, dtype=torch.result_type(a, b), device=tensors[0].device)
    return op(a, b, out=out)


def _out(x, m, dtype, view=False):
    """An output: absent points delivered as 0, in its own memory, in the caller's dtype. ``view``: ``x``
    may be a view of an input or of another output (``O[i] = X[i]``): under ``torch.compile``, where
    :func:`_unaliased` cannot compare memory, it is copied."""
    if m is not None:
        x = torch.where(m, x, 0.0)
    elif view and torch.compiler.is_compiling():
        return x.to(dtype).clone(memory_format=torch.contiguous_format)
    return x.to(dtype).contiguous()


class _Attach(torch.autograd.Function):
    """An output that depends on no input (a loop over an empty rank left the initial state) joined to
    the inputs' graph with zero gradients, so that ``out.sum().backward()`` works as it does where the
    output depends on them."""

    @staticmethod
    def forward(ctx, out, *inputs):
        ctx.metas = [(x.shape, x.dtype, x.device) for x in inputs]
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        return (None, *(torch.zeros(s, dtype=d, device=v) for s, d, v in ctx.metas))


class _Join(_Attach):
    """:class:`_Attach` for an output that has a graph: its gradient passes through, and ``inputs`` whose
    values reach the outputs only through stabilizers (torch_codegen.gradless_inputs) or through a ``??``
    default that no point needed (torch_codegen.defaulted_inputs, :func:`_kept`) get zeros."""

    @staticmethod
    def backward(ctx, grad):
        return (grad, *_Attach.backward(ctx, grad)[1:])


def _joined(outs, inputs):
    """``outs`` with the ``inputs`` that record a gradient joined to the first output that has a graph
    (:class:`_Join`); an output without one is joined to every input by :func:`_attached`."""
    if not torch.is_grad_enabled():
        return outs
    needs = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
    k = next((i for i, o in enumerate(outs) if o.requires_grad), None)
    if not needs or k is None:
        return outs
    return (*outs[:k], _Join.apply(outs[k], *needs), *outs[k + 1 :])


def _kept(a, b):
    """``a``, with ``b`` joined to its graph with a zero gradient (:class:`_Join`: a copy of ``a``) when a
    gradient is recorded for ``b``; else ``a`` itself (no cost). A default that no point needed at run time
    (``S ?? X`` where every row saw a key): its inputs keep a gradient, the zeros of ``torch.where``."""
    if torch.is_grad_enabled() and b.requires_grad:
        return _Join.apply(a, b)
    return a


def _attached(outs, inputs):
    """``outs``, each float output joined to the graph when a gradient is recorded for some input and the
    output has none (see :class:`_Attach`)."""
    if not torch.is_grad_enabled():
        return outs
    needs = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
    if not needs or all(o.requires_grad or not o.is_floating_point() for o in outs):
        return outs
    return tuple(
        _Attach.apply(o, *needs) if o.is_floating_point() and not o.requires_grad else o for o in outs
    )


# ---- skipping dead tiles (einattn.skip) --------------------------------------------------------------------


def _alive(bounds, conds, n):
    """Rows ``lo .. hi - 1`` of ``0 .. n - 1`` alive at this step: ``a * p + L >= 0`` for every (L, a)."""
    lo, hi = 0, n
    for low, a in bounds:
        if a > 0:
            lo = max(lo, -(low // a))
        else:
            hi = min(hi, low // -a + 1)
    if any(c < 0 for c in conds) or hi <= lo:
        return 0, 0
    return lo, hi


ROW_ALIGN = 32  # rows computed by a step: a multiple of this many, where rows allow


def _rows(lo, hi, est, n, trailing, leading):
    """The interval of rows a step must compute: the alive rows, plus dead rows that may not be skipped,
    widened to a multiple of :data:`ROW_ALIGN` rows when that adds at most an eighth (computing a dead row is
    what the cascade says: always exact). On CPU, reductions and matmuls over a tile whose row count is not
    a multiple of 32 (a sliding window's 255 rows) run 1.2-4x slower than over 256 rows.

    The rows added come before the interval where those are established, else after it (else before):
    a row not yet established holds its running state's initial value, and a running max's ``-1e30``
    start is a shift too large for ``_exp_diff``'s fused form, which one such row takes from the whole tile.

    ``est``: the rows established (alive at an earlier step), disjoint intervals ``(a, b)`` in order (see
    :func:`_grow`). Dead established rows may be skipped when ``trailing``, dead rows not established when
    ``leading``.
    """
    start, stop = _rows_needed(lo, hi, est, n, trailing, leading)
    extra = (start - stop) % ROW_ALIGN
    if start >= stop or not extra or 8 * extra > stop - start:
        return start, stop  # (widening by more than an eighth costs more than it saves)

    def established(a, b):
        return any(x <= a and b <= y for x, y in est)

    if start >= extra and established(start - extra, start):
        return start - extra, stop
    if stop + extra <= n:
        return start, stop + extra
    return (start - extra, stop) if start >= extra else (start, stop)


def _rows_needed(lo, hi, est, n, trailing, leading):
    if hi <= lo:
        lo = hi = n  # nothing alive: the rows to compute come from the dead-row rules alone

    def skippable(a, b):  # may every row of a .. b - 1 (all dead) be skipped?
        if a >= b or (trailing and leading):
            return True
        if trailing and any(x <= a and b <= y for x, y in est):  # all established
            return True
        return leading and all(y <= a or x >= b for x, y in est)  # none established

    ends = {min(max(x, 0), n) for iv in est for x in iv}
    start = lo
    if not skippable(0, lo):
        cuts = sorted({0, lo} | {c for c in ends if c <= lo}, reverse=True)
        start = next(c for c in cuts if skippable(0, c))
    stop = hi
    if not skippable(hi, n):
        stop = next(c for c in sorted({hi, n} | {c for c in ends if c >= hi}) if skippable(c, n))
    if lo == hi == n:  # nothing alive
        return (0, 0) if skippable(0, n) else (start, stop)
    return start, stop


def _grow(est, lo, hi):
    """The established rows (disjoint intervals ``(a, b)`` in order) after a step whose alive rows were
    ``lo .. hi - 1``. An exact set, not one interval: rows alive at one step and then others apart from them
    (a filter on the tile index, `p >= 2 * m1 - 2 and p + 2 * m1 <= 6`) are all established, and a dead
    step may skip only those when it changes a fresh row's initial state (``leading`` false)."""
    if hi <= lo:
        return est
    out, placed = [], False
    for a, b in est:  # (in order, without sorting: under torch.compile the bounds may be symbolic)
        if b < lo:
            out.append((a, b))
        elif a > hi:
            if not placed:
                out.append((lo, hi))
                placed = True
            out.append((a, b))
        else:  # overlapping or touching: one interval
            lo, hi = min(a, lo), max(b, hi)
    if not placed:
        out.append((lo, hi))
    return tuple(out)


def _nonempty(dims, shape, o):
    """None, or an all-absent mask when a reduced dimension is empty."""
    if any(shape[d] == 0 for d in dims):
        return torch.zeros((1,) * len(shape), dtype=torch.bool, device=o[1])
    return None


def _idiv(a, b, op, o):
    """``a // b`` or ``a % b`` (floor semantics) and its presence: a zero divisor makes the point absent."""
    if isinstance(b, torch.Tensor) or b != 0:
        return (a // b if op == "//" else a % b), None
    return a * 0, torch.zeros((), dtype=torch.bool, device=o[1])


def _imax(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))
    return max(a, b)


def _imin(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return min(a, b)


def _iabs(a):
    return torch.abs(a) if isinstance(a, torch.Tensor) else abs(a)


# ---- calling a program -------------------------------------------------------------------------------------

_HALF = (torch.float16, torch.bfloat16)
FLOATS = (torch.float64, torch.float32, *_HALF)  # the float dtypes einattn takes (not float8, complex)


def prepare(decls, values, dtype=None):
    """Check and convert the inputs of a call.

    ``decls``: ``(name, ranks, kind)`` per input, ``kind`` "float" or "int"; ``values``: name -> value.
    Float inputs must be floating tensors (a Python number is accepted for a scalar), all on one device; int
    inputs integer tensors. Returns the converted tensors and ``o = (compute dtype, device, output dtype)``:
    float64 inputs compute in float64, float32/float16/bfloat16 in float32 (``dtype`` overrides the compute
    dtype; float16 and bfloat16 accumulate in float32 anyway); outputs have the inputs' promoted dtype.
    """
    device, first, out_dtype = None, None, None
    values = {name: _plain_number(values[name]) for name, _, _ in decls}
    for name, ranks, kind in decls:
        x = values[name]
        if isinstance(x, torch.Tensor):
            if device is None:
                device, first = x.device, name
            elif x.device != device:
                raise InputError(
                    f"inputs `{first}` and `{name}` are on different devices: {device} and {x.device}"
                )
            if x.layout != torch.strided or x.is_nested:
                kind_ = "nested" if x.is_nested else str(x.layout)
                raise InputError(f"input `{name}` is a {kind_} tensor: einattn takes dense (strided) ones")
            if kind == "float":
                if x.dtype not in FLOATS:
                    raise InputError(
                        f"input `{name}` must be a floating-point tensor (float64, float32, float16 or "
                        f"bfloat16), got {x.dtype}"
                    )
                out_dtype = x.dtype if out_dtype is None else torch.promote_types(out_dtype, x.dtype)
            elif x.is_floating_point() or x.is_complex():
                raise InputError(f"input `{name}` is declared `: int` but was given {x.dtype} values")
            elif x.dtype == torch.uint64 and bool((x.view(torch.int64) < 0).any()):  # (read modulo 2**64)
                big = int(x.view(torch.int64).min()) + 2**64
                raise InputError(f"input `{name}` holds {big}, beyond a 64-bit integer's range")
        elif ranks or isinstance(x, bool) or not isinstance(x, (int, float)):
            number = isinstance(x, (int, float)) and not isinstance(x, bool)
            why = f" (declared [{', '.join(ranks)}]: a Python number is accepted for a scalar input only)"
            raise InputError(
                f"input `{name}` must be a torch tensor, got {type(x).__name__}" + (why if number else ""),
                hint="torch.from_numpy(x) takes a NumPy array, torch.as_tensor(x) anything array-like",
            )
        elif kind == "int" and not isinstance(x, int):
            raise InputError(f"input `{name}` is declared `: int` but was given {x!r}")
        else:
            problem = _scalar_problem(name, x, kind)
            if problem:
                raise InputError(problem)
    device = device if device is not None else torch.device("cpu")
    out_dtype = out_dtype or torch.get_default_dtype()
    if dtype is None:
        compute = torch.float64 if out_dtype == torch.float64 else torch.float32
    else:
        compute = torch.float32 if dtype in _HALF else dtype
    tensors = {}
    for name, _, kind in decls:
        x = values[name]
        if kind == "int":
            tensors[name] = torch.as_tensor(x, device=device).to(torch.int64)
        elif isinstance(x, torch.Tensor):
            tensors[name] = x.to(compute)
        else:
            tensors[name] = torch.full((), float(x), dtype=compute, device=device)
    refused = _transform_refused(tensors.values())
    if refused:
        raise InputError(refused)
    return tensors, (compute, device, out_dtype)


def _plain_number(x):
    """A NumPy scalar (``np.float32(0.5)``, ``np.int64(3)``: what NumPy arithmetic returns) as the Python
    number it holds, as ``np.float64`` (a subclass of ``float``) always was; anything else unchanged. Before,
    ``np.float32`` for a scalar input and ``np.int64`` for an ``: int`` scalar were refused ("must be a torch
    tensor, got float32") while ``np.float64`` was taken."""
    if isinstance(x, (torch.Tensor, bool, int, float)) or not isinstance(x, numbers.Real):
        return x
    return int(x) if isinstance(x, numbers.Integral) else float(x)


def _scalar_problem(name, x, kind) -> str | None:
    """What is wrong with the Python number ``x`` for scalar input ``name`` (``kind`` "int" or "float"):
    an integer beyond int64, or a number beyond float64's range; None when it fits."""
    if kind == "int" or isinstance(x, bool) or not isinstance(x, (int, float)):
        if isinstance(x, int) and not -(2**63) <= x < 2**63:
            return f"input `{name}` is {x}, beyond a 64-bit integer's range"
        return None
    try:
        float(x)
    except OverflowError:
        return f"input `{name}` is a Python integer beyond float64's range"
    return None


def execute(programs, tensors, names, sizes, o, given):
    """Run a generated program on prepared inputs (:func:`prepare`; ``given``: the caller's values):
    ``programs`` is the pair (for finite inputs, for any inputs or None) of the source's ``PROGRAMS``, the
    second run when an input holds an infinity or NaN (:func:`_all_finite`), or when the first gives an
    output that is not finite; in place when no gradient is
    recorded, with autocast off (:func:`_own_precision`); outputs that are the caller's own
    (:func:`_unaliased`) and in the inputs' graph (:func:`_attached`)."""
    program, other = programs
    scans = not getattr(program, "checks_inputs", False)  # (torch_library's program checks its own)
    if other is not None and scans and not _all_finite(tensors.values()):
        program, other = other, None
    inplace = not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors.values()))
    args = (*(tensors[n] for n in names), *sizes, o, inplace)
    with _own_precision(o):
        outs = program(*args)
        # finite inputs can still overflow (`square(X)` of 1e20 where a filter drops the point): the
        # arithmetic fills would make that NaN where the reference skips the point, so an output that is
        # not finite is computed again with the exact fills (a rare second run; the inputs are untouched)
        if other is not None and not _all_finite(x for x in outs if isinstance(x, torch.Tensor)):
            outs = other(*args)
    return _attached(_unaliased(outs, given), tensors.values())


def _valueless(t) -> bool:
    """Whether ``t``'s values cannot be read here: under ``torch.compile`` (a value-dependent branch would
    break the graph) or on the ``meta`` device (shapes, no values). Checks of values then take them to be
    finite and bounded."""
    return torch.compiler.is_compiling() or t.device.type == "meta"


def _all_finite(tensors) -> bool:
    """Whether no float input holds an infinity or NaN: one sum per input (finite only if every term is;
    a sum that overflows counts as not finite, which costs only the slower program). Inputs whose values
    cannot be read (:func:`_valueless`) are taken to be finite."""
    if torch.compiler.is_compiling():
        return True
    with torch.no_grad():
        for t in tensors:
            if t.is_floating_point() and t.numel() and not _valueless(t):
                total = t.sum(dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
                if not bool(torch.isfinite(total)):
                    return False
    return True


def bind_sizes(decls, ranks, fixed, partitions, tensors):
    """Rank sizes from the input shapes, the param-sized ranks (``fixed``) and the partitions
    ``(parent, outer, inner, tile part)``; the standalone modules' version of einattn.sizes.bind_sizes."""
    sizes, origin = dict(fixed), {r: "a param" for r in fixed}
    for name, dims, _ in decls:
        shape = tuple(tensors[name].shape)
        if len(shape) != len(dims):
            raise InputError(f"input `{name}` has {len(dims)} dimensions {list(dims)}, got shape {shape}")
        for r, n in zip(dims, shape):
            if r in sizes and sizes[r] != n:
                raise InputError(f"rank `{r}` has size {sizes[r]} in {origin[r]} but {n} in `{name}`")
            sizes[r], origin[r] = n, f"`{name}`"
    for parent, outer, inner, tile in partitions:
        if tile == "inner":
            sizes[outer] = -(-sizes[parent] // sizes[inner])
        else:
            sizes[inner] = -(-sizes[parent] // sizes[outer])
    return tuple(sizes[r] for r in ranks)


def _unaliased(outs, inputs):
    """``outs`` with any output that shares memory with an input or with an earlier output copied: an
    output is the caller's own tensor (writing into it must not change an input, and two outputs that are
    equal are two tensors), whatever the spec (``O[i] = X[i]`` is a copy)."""
    if torch.compiler.is_compiling():
        return outs
    seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor) and t.numel()}
    done = []
    for x in outs:
        if x.numel():
            ptr = x.untyped_storage().data_ptr()
            if ptr in seen:
                x = x.clone(memory_format=torch.contiguous_format)
                ptr = x.untyped_storage().data_ptr()
            seen.add(ptr)
        done.append(x)
    return tuple(done)


def fits_one_tile(short, rows: dict, sizes: dict) -> bool:
    """Whether a call runs the spec as written rather than the rewrite's loop: every rank the rewrite streams
    fits in one tile (``short``: (rank, tile) pairs), and every rank the loop blocks has at most a block's
    rows (``rows``); ``sizes`` by rank. (TorchKernel.run and the standalone modules' ``call``.)"""
    return (
        bool(short)
        and all(0 < sizes[r] <= t for r, t in short)
        and all(sizes[r] <= n for r, n in rows.items())
    )


def call(signature, programs, args, kwargs, dtype=None, one_tile=None):
    """Bind a standalone module's arguments (positional in declaration order, or by name) and run it.
    ``one_tile``: (signature, programs, ((rank, tile), ...), {rank: rows}) of the cascade as written, run
    where every rank the rewrite streams fits in one tile and every rank the loop blocks has at most a
    block's rows (as einattn's TorchKernel.run)."""
    decls, ranks, fixed, partitions = signature
    names = [d[0] for d in decls]
    if len(args) > len(names):
        raise InputError(f"{len(args)} positional inputs given, the spec declares {len(names)}: {names}")
    values = dict(zip(names, args))
    for k, v in kwargs.items():
        if k not in names or k in values:
            raise InputError(f"unexpected or repeated input `{k}`; the inputs are {names}")
        values[k] = v
    missing = [n for n in names if n not in values]
    if missing:
        raise InputError(f"missing inputs {missing}")
    tensors, o = prepare(decls, values, dtype)
    sizes = bind_sizes(decls, ranks, fixed, partitions, tensors)
    if any(n == 0 for n in sizes):
        raise InputError("a rank of size 0: use einattn itself, which compiles that case separately")
    if one_tile is not None and fits_one_tile(one_tile[2], one_tile[3], dict(zip(ranks, sizes))):
        (_, ranks_w, fixed_w, partitions_w), programs = one_tile[0], one_tile[1]
        sizes = bind_sizes(decls, ranks_w, fixed_w, partitions_w, tensors)
    outs = execute(programs, tensors, names, sizes, o, values.values())
    return outs[0] if len(outs) == 1 else outs


def _transform_refused(tensors):
    """Why the kernel cannot run under the active function transform, or None. ``torch.func`` (grad, vjp,
    jvp, vmap) and forward-mode AD meet the kernel's in-place and ``out=`` paths, its checkpoints and its
    memory checks, and failed deep inside with messages about ``baddbmm_out`` or saved tensor hooks."""
    if torch.compiler.is_compiling():
        return None  # (Dynamo traces the call; the transforms it runs itself are its own business)
    if torch._C._are_functorch_transforms_active():
        return (
            "torch.func transforms (grad, vjp, jvp, jacrev, vmap...) are not supported by einattn's torch "
            "kernels: differentiate with torch.autograd (loss.backward(), torch.autograd.grad), and batch "
            "with a batch rank of the spec"
        )
    fwad = torch.autograd.forward_ad
    if fwad._current_level >= 0 and any(fwad.unpack_dual(x).tangent is not None for x in tensors):
        return (
            "forward-mode AD (dual tensors) is not supported by einattn's torch kernels: use torch.autograd"
        )
    return None


def _own_precision(o):
    """A context in which the kernel computes in its own dtypes (``o``: compute dtype, device, output
    dtype): autocast off. Under ``torch.autocast`` the matmuls recorded for a gradient were cast to the
    autocast dtype and the others (``out=``, which autocast leaves alone) were not: two answers for one
    kernel and input. The kernel's precision is its inputs' (see the dtype rules)."""
    device = o[1].type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


# ---- library kernels (einattn.lowering.torch_library): softmax attention by SDPA ---------------------------


def _sdpa_operand(t, batch, sizes, seq, feat, keys=False):
    """An input of SDPA as ``[B, H, L, D]``: ``batch`` gives, per batch rank of the output (the heads
    last), the input's axis ``(axis,)``, a grouped read ``h // R`` of an axis ``(axis, R)``, or None (the
    input is the same for every point of that rank: broadcast); ``sizes`` the batch ranks' sizes; ``seq``
    and ``feat`` the axes of the sequence and the feature. A view wherever a view can be. On the heads,
    a key/value input (``keys``) read as ``h // R`` with exactly ``H / R`` groups, or shared by every head,
    keeps its own count of heads: SDPA's grouped-query attention (:func:`_sdpa`) maps query head ``h`` to
    ``h // R``. The queries always have every head (a view where they are shared)."""
    present = [b[0] for b in batch if b is not None]
    x = t.permute(*present, seq, feat)
    last = len(batch) - 1
    for j, (b, n) in enumerate(zip(batch, sizes)):
        if b is None:
            x = x.unsqueeze(j)
            if j != last or not keys:
                x = x.expand(*x.shape[:j], n, *x.shape[j + 1 :])
        elif len(b) == 2 and not (keys and j == last and x.shape[j] * b[1] == n):
            x = x.index_select(j, torch.arange(n, device=x.device) // b[1])
    lead = x.shape[:-2]
    if len(lead) == 0:
        return x[None, None]
    if len(lead) == 1:
        return x[None]
    return x.reshape(-1, lead[-1], *x.shape[-2:])


def _sdpa_index(t, batch, sizes, rows, keys):
    """An input that a filter or a bias reads (``klen[b]``, ``doc[b, m]``, ``slope[h]``) as ``[B, H, P,
    M]`` for SDPA's mask, laid out as :func:`_sdpa_operand` lays out Q: ``batch`` gives the input's axis
    per batch rank of the output, or None; ``rows`` and ``keys`` its axes read at the query and the key
    coordinate, or None. An axis it does not vary along has size 1 (the mask broadcasts there); the
    leading batch ranks are expanded only where one of them varies (they are flattened into one)."""
    for b, n in zip(batch, sizes):  # (a table longer than the rank it is read at: its first entries)
        if b is not None and t.shape[b[0]] != n:
            t = t.narrow(b[0], 0, n)
    present = [b[0] for b in batch if b is not None]
    order = [*present, *(a for a in (rows, keys) if a is not None)]
    x = t.permute(*order) if order else t  # (a scalar input, `m < n`: no axis to order)
    for j, b in enumerate(batch):
        if b is None:
            x = x.unsqueeze(j)
    if rows is None:
        x = x.unsqueeze(len(batch))
    if keys is None:
        x = x.unsqueeze(len(batch) + 1)
    n = len(batch)
    if n == 0:
        return x[None, None]
    if n == 1:
        return x[None]
    if any(d != 1 for d in x.shape[: n - 1]):
        x = x.expand(*sizes[: n - 1], *x.shape[n - 1 :])
    return x.reshape(-1, *x.shape[n - 1 :])


def _sdpa_mask(m, rows, keys, device):
    """A block's filter: a bool (broadcast to rows x keys), or a tensor of aranges and lookups, as it is
    (``m < klen[b]`` is ``[B, 1, 1, keys]``: SDPA broadcasts a mask, where one expanded to every row would
    be converted to a float mask of B x rows x keys)."""
    m = torch.as_tensor(m, device=device)
    return torch.broadcast_to(m, (rows, keys)) if m.dim() < 2 else m


class _SDPAFallback(Exception):
    """A library kernel's precondition that fails only once its values are computed (a term added to the
    scores that is not finite, or so large the scores could overflow): the generated cascade runs."""


def _sdpa_bias(b, keep, rows, keys, dtype, device, bound=None):
    """The float mask of a block, and its filter: the terms ``b`` added to its scores, ``-inf`` where
    ``keep`` (the filter, or None) fails. Raises :class:`_SDPAFallback` where a kept term is not finite or
    could make the scores overflow (SDPA would treat a row of ``-inf`` as masked, where the spec gives NaN).
    ``bound``: an interval that holds every term (:func:`_iv`, from the lookups' extremes and the block's
    coordinates), which spares the check's pass over the block where it proves the terms small enough;
    otherwise one pass checks every term, and only where one fails are the kept ones checked alone."""
    b = _sdpa_mask(b, rows, keys, device).to(dtype)
    limit = torch.finfo(dtype).max / 16
    proved = bound is not None and max(-bound[0], bound[1]) < limit  # (False for NaN)
    if not proved and not _valueless(b) and b.numel():
        with torch.no_grad():
            if not _magnitude(b) < limit:  # (NaN too)
                kept = b if keep is None else torch.where(keep, b, 0.0)
                if not _magnitude(kept) < limit:
                    raise _SDPAFallback
    if keep is None:
        return b, None
    return torch.where(keep, b, -math.inf), keep


def _ivc(iv, limit):
    """``iv``, or NaN (no bound) where it reaches ``limit``: a bias's intermediate that would overflow the
    compute dtype (float32's 3.4e38, where Python's floats go on to 1.8e308)."""
    return iv if max(-iv[0], iv[1]) < limit else (math.nan, math.nan)


def _iv_of(t):
    """The (low, high) of a lookup's values (NaN where it holds one), once per call."""
    if _valueless(t) or not t.numel():
        return math.nan, math.nan
    low, high = torch.aminmax(t.detach() if t.is_floating_point() else t.double())
    return float(low), float(high)


def _sdpa_scale(scale):
    """The scores' scale, ``scale()``, or NaN where Python's float arithmetic raises rather than giving an
    infinity or NaN as the spec's does (``1.0 / 0.0``, ``math.exp(1000.0)``, ``math.log(-1.0)``): the
    library's guard then runs the generated cascade, which computes the spec's value (under
    ``torch.compile``, which traces the ``try``, SDPA gets the NaN: NaN rows, as the spec's)."""
    try:
        return scale()
    except (ArithmeticError, ValueError):
        return math.nan


def _sdpa(q, k, v, scale, causal, mask=None):
    """``scaled_dot_product_attention``, exact for any scale: a scale <= 0 is applied to ``q`` first (the
    CPU kernel's causal path returns NaN for one). Keys and values with fewer heads than the queries are
    grouped-query attention (``enable_gqa``), with as many heads in ``k`` as in ``v``."""
    if scale <= 0:
        q, scale = q * scale, 1.0
    hq, hk, hv = q.shape[1], k.shape[1], v.shape[1]
    # query head h reads group h // (hq / hk) (_sdpa_operand checked); a Python bool, by a branch (SDPA takes
    # no SymBool, which the head counts give under torch.compile(dynamic=True); the branch specialises)
    gqa = False
    if hk == hv and 1 < hk < hq:
        gqa = True
    if not gqa:
        k, v = _sdpa_heads(k, hq), _sdpa_heads(v, hq)
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=gqa
    )


class _SDPAGraph(torch.autograd.Function):
    """SDPA (``run(q, k, v)``) whose gradient can be differentiated again. PyTorch's FlashAttention kernel
    for the CPU has no derivative of its backward: here the first backward is the kernel's own (its graph,
    recorded in ``forward`` on detached copies of the inputs), and a backward that records a graph
    (``create_graph=True``: double backward, ``gradgradcheck``) recomputes with SDPA's math kernel, which
    is twice differentiable (it holds one block's scores: ``row_block x M``, or P x M without blocks)."""

    @staticmethod
    def forward(ctx, run, q, k, v):
        leaves = tuple(x.detach().requires_grad_(x.requires_grad) for x in (q, k, v))
        with torch.enable_grad():
            y = run(*leaves)
        ctx.run, ctx.leaves, ctx.y = run, leaves, y
        ctx.save_for_backward(q, k, v)
        return y.detach()

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():  # a graph of the gradient is asked for: the math kernel, recomputed
            inputs = ctx.saved_tensors
            with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
                y = ctx.run(*inputs)
            create = True
        else:
            inputs, y, create = ctx.leaves, ctx.y, False
        wanted = [x for x in inputs if x.requires_grad]
        if not y.requires_grad:  # no query row saw a key (every block was zeros): every gradient is 0
            return (None, *(torch.zeros_like(x) if x.requires_grad else None for x in inputs))
        # (the recorded graph is kept for another backward through the caller's retained graph; it goes
        # when the caller's graph does)
        grads = torch.autograd.grad(y, wanted, g, create_graph=create, retain_graph=True, allow_unused=True)
        got = iter(grads)
        return (None, *(next(got) if x.requires_grad else None for x in inputs))


def _sdpa_graded(run, q, k, v):
    """``run(q, k, v)`` (an SDPA call, or blocks of them) with gradients of any order (:class:`_SDPAGraph`)
    where one is recorded; as it is otherwise, and under ``torch.compile``."""
    graded = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if torch.compiler.is_compiling() or not graded:
        return run(q, k, v)
    return _SDPAGraph.apply(run, q, k, v)


def _sdpa_bounded(q, k, scale, n):
    """Whether no score ``scale * sum of n products`` of ``q`` and ``k`` can overflow. Where one could, a
    row's scores could all be ``-inf``: SDPA treats such a row as masked (0) where the spec gives NaN, so
    the generated cascade runs instead. Nor may the scaled operands overflow: ``q * scale`` (a scale <= 0,
    :func:`_sdpa`) and ``q`` and ``k`` times ``sqrt(scale)`` (SDPA's math kernel, which a backward that
    records a graph recomputes with). Inputs whose values cannot be read (:func:`_valueless`) are taken to
    be bounded."""
    if _valueless(q) or not q.numel() or not k.numel():
        return True
    with torch.no_grad():
        tops = [_magnitude(q), _magnitude(k)]
    c, limit = abs(scale), torch.finfo(q.dtype).max / 16
    return c * n * tops[0] * tops[1] < limit and c * tops[0] < limit and math.sqrt(c) * max(tops) < limit


def _magnitude(x) -> float:
    """The largest magnitude in ``x``: one pass, no temporary (``aminmax``); NaN where it holds one."""
    low, high = torch.aminmax(x)
    return max(-float(low), float(high))


def _sdpa_heads(x, n):
    """``x`` with ``n`` heads: as it is, broadcast from one, or each of its groups repeated."""
    if x.shape[1] == n:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, n, -1, -1)
    return x.repeat_interleave(n // x.shape[1], dim=1)


def _sdpa_blocks(q, k, v, scale, rows, keys, mask, shifts=False):
    """SDPA over blocks of ``rows`` query rows, each against the keys ``keys(c, w)`` that rows ``c .. c + w
    - 1`` may see, with the filter ``mask(c, w, lo, hi, device)`` (None: every point passes; or a pair of
    a float mask and the filter, :func:`_sdpa_bias`). A row that no key passes gives 0 (the spec's value),
    whatever the device's kernel gives there. ``shifts``: the filter depends on ``p - m`` alone (a window),
    so blocks placed alike against their keys share one mask."""
    n, outs, masks = q.shape[2], [], {}
    for c in range(0, n, rows):
        w = min(rows, n - c)
        lo, hi = keys(c, w)
        lo, hi = max(lo, 0), min(hi, k.shape[2])
        if hi <= lo:
            outs.append(q.new_zeros(*q.shape[:2], w, v.shape[-1]))
            continue
        at = (c - lo, w, hi - lo) if shifts else None
        if at is None or at not in masks:
            m = mask(c, w, lo, hi, q.device)
            keep = m
            if isinstance(m, tuple):  # (a float mask of terms added to the scores, and the filter)
                m, keep = m
            empty = None if keep is None else ~keep.any(-1, keepdim=True)
            if empty is not None and not _valueless(q) and not bool(empty.any()):
                empty = None  # (every row keeps a key: nothing to zero)
            masks[at] = (m, empty)
        m, empty = masks[at]
        y = _sdpa(q[:, :, c : c + w], k[:, :, lo:hi], v[:, :, lo:hi], scale, False, m)
        outs.append(y if empty is None else y.masked_fill(empty, 0.0))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 2)


# What generated code takes from this module (a star import).
__all__ = [name for name in dir() if name.startswith("_") and not name.startswith("__")]
__all__ += ["FUNCTIONS", "InputError", "call", "execute", "math", "torch"]
