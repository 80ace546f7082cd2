"""Reference implementations of the primitives: Array API only, sync-free.

Every function here runs under array-api-strict, torch, CuPy and ``jax.jit``: no ``bool()``,
``int()``, ``float()`` or ``.item()`` of array values, non-finite values handled by ``where``,
shapes from pure-int geometry (:class:`~portaconv.primitives.window.Window`). They are the
definitions the compiled kernels (``numba_kernels``, ``cuda_kernels``) are tested against, written
to be read next to the seeds' math: one strided slice per kernel tap.

Conventions: inputs are (N, C, H, W); column matrices are (C·kh·kw, N·oh·ow) with row
``(c, i, j)`` and column ``(n, a, b)`` in row-major order; tap ``k = i·kw + j``.
"""

from __future__ import annotations

from array_api_compat import device as _device
from array_api_extra import at

from .window import Window

__all__ = [
    "im2col",
    "col2im",
    "max_pool",
    "max_pool_backward",
    "max_pool_scatter",
    "window_sum",
    "window_spread",
    "to_nchw",
    "matmul",
    "relu",
    "relu_grad",
    "log_softmax",
    "log_softmax_backward",
    "channel_sum",
    "conv_im2col",
    "conv_im2col_backward",
]


def _frame(x, w: Window, value, xp):
    """``x`` dilated by (lh, lw) and padded with ``value`` to its frame (see :meth:`Window.frame`).

    Dilation inserts zeros whatever ``value`` is (only convolutions dilate)."""
    n, c, height, width = x.shape
    top, bottom, left, right = w.frame(height, width)
    rows, cols = (height - 1) * w.lh + 1, (width - 1) * w.lw + 1
    if (top, bottom, left, right, w.lh, w.lw) == (0, 0, 0, 0, 1, 1):
        return x
    shape = (n, c, top + rows + bottom, left + cols + right)
    out = xp.full(shape, value, dtype=x.dtype, device=_device(x))
    if (w.lh, w.lw) != (1, 1) and value != 0:
        out = at(out)[..., top : top + rows, left : left + cols].set(0.0)
    return at(out)[..., top : top + rows : w.lh, left : left + cols : w.lw].set(x)


def _tap_slices(w: Window):
    """Per tap, in order, the frame slice holding that tap's input for every output position.

    The stops are exact (array-api-strict rejects stops past the end of an axis)."""
    row0, col0 = w.origin()
    for i in range(w.kh):
        start = row0 + i * w.dh
        rows = slice(start, start + (w.oh - 1) * w.sh + 1, w.sh)
        for j in range(w.kw):
            start = col0 + j * w.dw
            yield (..., rows, slice(start, start + (w.ow - 1) * w.sw + 1, w.sw))


def im2col(x, w: Window, xp):
    """Column matrix of a convolution: ``cols[(c, i, j), (n, a, b)] = x_virtual[n, c, v, u]``
    with ``v = a·sh + i·dh − top``, ``u = b·sw + j·dw − left`` (zero outside the input).

    ``weight.reshape(K, C·kh·kw) @ im2col(x)`` is the convolution in (K, N, oh, ow) order.
    (N, C, H, W) → (C·kh·kw, N·oh·ow)."""
    n, c = x.shape[:2]
    frame = _frame(x, w, 0.0, xp)
    cols = xp.stack([frame[index] for index in _tap_slices(w)], axis=2)  # (N, C, taps, oh, ow)
    cols = xp.permute_dims(cols, (1, 2, 0, 3, 4))
    return xp.reshape(cols, (c * w.taps, n * w.oh * w.ow))


def _zeros_frame(shape, w: Window, dtype, device, xp):
    n, c, height, width = shape
    top, bottom, left, right = w.frame(height, width)
    return xp.zeros((n, c, top + (height - 1) * w.lh + 1 + bottom, left + (width - 1) * w.lw + 1 + right), dtype=dtype, device=device)


def _crop(frame, shape, w: Window):
    """The input's pixels of a frame-shaped gradient (the adjoint of :func:`_frame`)."""
    height, width = shape[-2:]
    top, _, left, _ = w.frame(height, width)
    return frame[..., top : top + (height - 1) * w.lh + 1 : w.lh, left : left + (width - 1) * w.lw + 1 : w.lw]


def col2im(cols, shape, w: Window, xp):
    """Adjoint of :func:`im2col`: every column entry added back to the pixel it was read from;
    each pixel sums its taps in tap order (the kernels keep that order: the same bits).

    (C·kh·kw, N·oh·ow) → ``shape`` = (N, C, H, W)."""
    n, c = shape[:2]
    cols = xp.reshape(cols, (c, w.taps, n, w.oh, w.ow))
    frame = _zeros_frame(shape, w, cols.dtype, _device(cols), xp)
    for k, index in enumerate(_tap_slices(w)):
        frame = at(frame)[index].add(xp.permute_dims(cols[:, k, ...], (1, 0, 2, 3)))
    return _crop(frame, shape, w)


def first_valid_taps(w: Window, height: int, width: int) -> list[list[int]]:
    """Per output position, the first tap that lands inside the input (torch's starting index of
    a max-pool window; for a window of padding only, the tap where the input would begin)."""
    rows = [max(0, -((a * w.sh - w.top) // w.dh)) for a in range(w.oh)]
    cols = [max(0, -((b * w.sw - w.left) // w.dw)) for b in range(w.ow)]
    return [[r * w.kw + q for q in cols] for r in rows]


def max_pool(x, w: Window, xp, *, taps=True):
    """Window maxima of the −inf-padded input and (``taps``) each window's winning tap.

    torch's rule, tap by tap: a tap wins when larger than the best so far or NaN. Padding (−inf)
    never wins, equal values keep the first, NaN propagates and the last NaN wins.
    (N, C, H, W) → ((N, C, oh, ow), (N, C, oh, ow) int32 or None)."""
    frame = _frame(x, w, -float("inf"), xp)
    device = _device(x)
    best = xp.full((*x.shape[:2], w.oh, w.ow), -float("inf"), dtype=x.dtype, device=device)
    winner = xp.asarray(first_valid_taps(w, *x.shape[-2:]), dtype=xp.int32, device=device) if taps else None
    for k, index in enumerate(_tap_slices(w)):
        value = frame[index]
        take = (value > best) | xp.isnan(value)
        best = xp.where(take, value, best)
        if taps:
            winner = xp.where(take, xp.asarray(k, dtype=xp.int32, device=device), winner)
    if taps:
        winner = xp.broadcast_to(winner, best.shape)
    return best, winner


def max_pool_scatter(grad, taps, shape, w: Window, xp):
    """Each window's gradient added to the input pixel of its tap ``taps`` (a tap in the padding
    reaches no pixel). (N, C, oh, ow) gradient and taps → ``shape`` = (N, C, H, W)."""
    frame = _zeros_frame(shape, w, grad.dtype, _device(grad), xp)
    zero = xp.zeros((), dtype=grad.dtype, device=_device(grad))
    for k, index in enumerate(_tap_slices(w)):
        frame = at(frame)[index].add(xp.where(taps == k, grad, zero))
    return _crop(frame, shape, w)


def max_pool_backward(grad, x, w: Window, xp):
    """max_pool2d's input gradient: each window's gradient to its winning tap (see
    :func:`max_pool`), summed where windows overlap."""
    _, taps = max_pool(x, w, xp)
    return max_pool_scatter(grad, taps, x.shape, w, xp)


def window_sum(x, w: Window, xp):
    """Sum over each window of the zero-padded input: (N, C, H, W) → (N, C, oh, ow)."""
    frame = _frame(x, w, 0.0, xp)
    slices = iter(_tap_slices(w))
    total = frame[next(slices)]
    for index in slices:
        total = total + frame[index]
    return total


def window_spread(grad, shape, w: Window, xp):
    """Adjoint of :func:`window_sum`: each window's value added to every pixel it covers.
    (N, C, oh, ow) → ``shape`` = (N, C, H, W)."""
    frame = _zeros_frame(shape, w, grad.dtype, _device(grad), xp)
    for index in _tap_slices(w):
        frame = at(frame)[index].add(grad)
    return _crop(frame, shape, w)


def matmul(a, b, xp):
    """The matrix product (stacks broadcast): the products every convolution and linear layer
    is made of."""
    return xp.matmul(a, b)


def to_nchw(y, bias, shape, xp):
    """A product's (K, N·oh·ow) result as the (N, K, oh, ow) output, plus ``bias`` (K,) when given."""
    k, n, oh, ow = shape[1], shape[0], shape[2], shape[3]
    out = xp.permute_dims(xp.reshape(y, (k, n, oh, ow)), (1, 0, 2, 3))
    if bias is not None:
        out = out + xp.reshape(bias, (1, k, 1, 1))
    return out


# ---- convolution by im2col: composed of the primitives above --------------------------------------
# These two compose im2col, matmul, to_nchw and col2im, each called through the dispatch (so a
# family's kernels for them run here too; under ``options(reference=True)`` all are the
# references above). A family may register one fused kernel for the whole composition instead.


def _dispatched(name, xp, dtype):
    from .dispatch import implementation  # the dispatch imports this module

    return implementation(name, xp, dtype)


def _per_group(matrix, groups, xp):
    """(G·p, q) → (G, p, q): one matrix per group."""
    return xp.reshape(matrix, (groups, matrix.shape[0] // groups, matrix.shape[1]))


def conv_im2col(x, weight, bias, w: Window, groups, xp, *, keep=False):
    """conv2d by im2col: ``weight (K, C/G·kh·kw) @ im2col(x)`` per group, as the (N, K, oh, ow)
    output plus ``bias``; and, with ``keep``, the column matrix (for the weight gradient), else None.

    (N, C, H, W), (K, C/G, kh, kw), (K,) or None → ((N, K, oh, ow), (C·kh·kw, N·oh·ow) or None)."""
    n, out_channels = x.shape[0], weight.shape[0]
    cols = _dispatched("im2col", xp, x.dtype)(x, w, xp)
    w_matrix = xp.reshape(weight, (out_channels, weight.shape[1] * w.taps))
    product = _dispatched("matmul", xp, x.dtype)(_per_group(w_matrix, groups, xp), _per_group(cols, groups, xp), xp)
    product = xp.reshape(product, (out_channels, n * w.oh * w.ow))
    out = _dispatched("to_nchw", xp, x.dtype)(product, bias, (n, out_channels, w.oh, w.ow), xp)
    return out, (cols if keep else None)


def conv_im2col_backward(grad, x, weight, w: Window, groups, input_shape, xp, *, input_grad=True, weight_grad=True, columns=None):
    """conv2d's input gradient ``col2im(weightᵀ @ grad)`` and weight gradient ``grad @ im2col(x)ᵀ``
    (per group), as (grad_input or None, grad_weight or None); ``x`` may be None without
    ``weight_grad`` or when ``columns`` (the forward's kept im2col(x)) is given, ``weight`` None
    without ``input_grad``.

    grad (N, K, oh, ow), x of ``input_shape`` (N, C, H, W) → ((N, C, H, W), (K, C/G, kh, kw))."""
    n, channels = input_shape[:2]
    out_channels = grad.shape[1]
    pixels = n * w.oh * w.ow
    grad_matrix = xp.reshape(xp.permute_dims(grad, (1, 0, 2, 3)), (out_channels, pixels))  # the columns' layout
    grad_matrix = _per_group(grad_matrix, groups, xp)  # (G, K/G, N·oh·ow)
    matmul = _dispatched("matmul", xp, grad.dtype)
    grad_input = grad_weight = None
    if weight_grad:
        cols = columns if columns is not None else _dispatched("im2col", xp, grad.dtype)(x, w, xp)
        # Summed as its transpose, cols · gradᵀ (G, C/G·kh·kw, K/G): the product OpenBLAS runs
        # fastest with this long inner dimension (docs/performance.md).
        total = matmul(_per_group(cols, groups, xp), xp.matrix_transpose(grad_matrix), xp)
        grad_weight = xp.reshape(xp.permute_dims(total, (0, 2, 1)), (out_channels, channels // groups, w.kh, w.kw))
    if input_grad:
        w_matrix = _per_group(xp.reshape(weight, (out_channels, channels // groups * w.taps)), groups, xp)
        grad_cols = xp.reshape(matmul(xp.matrix_transpose(w_matrix), grad_matrix, xp), (channels * w.taps, pixels))
        grad_input = _dispatched("col2im", xp, grad.dtype)(grad_cols, tuple(input_shape), w, xp)
    return grad_input, grad_weight


from .winograd_reference import *  # noqa: E402,F401,F403


def relu(x, xp):
    """``max(x, 0)`` as torch computes it: 0 where ``x < 0``, else ``x``, so NaN stays NaN and
    −0.0 stays −0.0 (a maximum would be free to return either zero)."""
    return xp.where(x < 0, xp.zeros((), dtype=x.dtype, device=_device(x)), x)


def relu_grad(grad, x, xp):
    """relu's input gradient (torch's threshold_backward at 0): ``grad`` where ``x > 0`` or ``x``
    is NaN, 0 where ``x <= 0``, whatever ``grad`` holds there (inf, NaN)."""
    return xp.where(x <= 0, xp.zeros((), dtype=grad.dtype, device=_device(grad)), grad)


def log_softmax(x, axis, xp):
    """``x − logsumexp(x, axis)``, shifted by the maximum along ``axis`` first so that exp never
    overflows (logits of ±1e4 stay finite); a NaN in a slice makes the whole slice NaN."""
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def log_softmax_backward(grad, x, axis, xp):
    """log_softmax's input gradient: ``grad − softmax(x) · sum(grad, axis)``."""
    return grad - xp.exp(log_softmax(x, axis, xp)) * xp.sum(grad, axis=axis, keepdims=True)


def channel_sum(grad, xp):
    """The sum of an (N, C, H, W) array over N, H and W, shape (C,): a convolution's bias gradient."""
    return xp.sum(grad, axis=(0, 2, 3))
