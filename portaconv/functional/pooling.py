"""max_pool2d and avg_pool2d, forward and backward, on the pooling window primitives.

Both reduce over the ``kh·kw`` taps of each window of the padded input (−inf padding for max,
zeros for average); the backwards send each window's gradient back through the same taps:
to the window's first maximum (torch's rule) for max, spread over the window for average.
"""

from __future__ import annotations

from array_api_compat import device as _device

from .. import primitives as P
from .._backend import namespace_of
from .._shapes import _is_int, _pair, pool_output_size
from .._validate import cached_geometry, check_shape
from ..primitives.window import Window
from ._common import batched, unbatch

__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]


@cached_geometry(shapes=1)
def _pool_geometry(op, shape, kernel_size, stride, padding, dilation, ceil_mode) -> Window:
    kh, kw = _pair(kernel_size, "kernel_size", minimum=1)
    sh, sw = (kh, kw) if stride is None or stride == () else _pair(stride, "stride", minimum=1)
    ph, pw = _pair(padding, "padding", minimum=0)
    dh, dw = _pair(dilation, "dilation", minimum=1)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{op}: padding {(ph, pw)} must be at most half the kernel size {(kh, kw)}")
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    height, width = shape[-2:]
    oh = pool_output_size(height, kh, stride=sh, padding=ph, dilation=dh, ceil_mode=ceil_mode)
    ow = pool_output_size(width, kw, stride=sw, padding=pw, dilation=dw, ceil_mode=ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: kernel size {(kh, kw)} with dilation {(dh, dw)} is larger than the padded input "
            f"{(height + 2 * ph, width + 2 * pw)} (input shape {tuple(shape)})"
        )
    return Window(kh, kw, sh, sw, dh, dw, ph, pw, oh, ow)


def _window_origins(w: Window, device, xp):
    """Input row (oh, 1) and column (1, ow) of each window's first tap (negative in the padding)."""
    rows = xp.reshape(xp.arange(w.oh, dtype=xp.int64, device=device) * w.sh - w.top, (w.oh, 1))
    cols = xp.reshape(xp.arange(w.ow, dtype=xp.int64, device=device) * w.sw - w.left, (1, w.ow))
    return rows, cols


def _flat_indices(taps, w: Window, width, xp):
    """Window-tap index → torch's flat index ``row * W + col`` into the unpadded input."""
    rows, cols = _window_origins(w, _device(taps), xp)
    return (rows + (taps // w.kw) * w.dh) * width + cols + (taps % w.kw) * w.dw


def _taps_from_flat(indices, w: Window, width, xp):
    """torch's flat index → window-tap index (inverse of :func:`_flat_indices`)."""
    rows, cols = _window_origins(w, _device(indices), xp)
    return ((indices // width - rows) // w.dh) * w.kw + (indices % width - cols) // w.dw


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Padding is ``-inf``. Within a window the first maximum in row-major order wins ties; NaN
    propagates (the last NaN of a window wins its index, as in torch). A dilated window whose taps
    all fall in the padding gives ``-inf`` and torch's index (outside the input); its gradient goes
    to no input element (torch's backward adds it to the next channel).

    Parameters
    ----------
    input : array
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        At most half the kernel size.
    dilation : int or (int, int)
    ceil_mode : bool
        Round the output size up; a last window is kept only if it starts inside the input or the
        left padding.
    return_indices : bool
        Also return torch-compatible flat indices ``row * W + col`` of each maximum.

    Shapes
    ------
    input : (N, C, H, W) or unbatched (C, H, W)
    output, indices : (N, C, oh, ow), ``oh`` from :func:`portaconv.pool_output_size`

    Examples
    --------
    >>> import numpy as np, portaconv.functional as F
    >>> F.max_pool2d(np.arange(16.0).reshape(1, 4, 4), 2)
    array([[[ 5.,  7.],
            [13., 15.]]])
    """
    xp = namespace_of(input)
    x, _, unbatched = batched("max_pool2d", input, xp)
    w = _pool_geometry("max_pool2d", x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    out, taps = P.max_pool(x, w, xp, taps=return_indices)
    if not return_indices:
        return unbatch(out, unbatched)
    flat = _flat_indices(xp.astype(taps, xp.int64), w, x.shape[-1], xp)
    return unbatch(out, unbatched), unbatch(flat, unbatched)


def max_pool2d_backward(
    grad_output, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *, indices=None
):
    """Gradient of :func:`max_pool2d`: each window's gradient goes to its maximum (summed where
    windows overlap).

    Parameters
    ----------
    grad_output : array
    input, kernel_size, stride, padding, dilation, ceil_mode
        As passed to :func:`max_pool2d` (``return_indices`` is accepted and ignored).
    indices : array, optional, keyword-only
        The indices :func:`max_pool2d` returned; the gradient then goes where they point.

    Shapes
    ------
    grad_output, indices : (N, C, oh, ow)
    returns : ((N, C, H, W),)
    """
    xp = namespace_of(grad_output, input, indices)
    op = "max_pool2d_backward"
    x, grad, unbatched = batched(op, input, xp, grad_output)
    w = _pool_geometry(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    expected = (*x.shape[:2], w.oh, w.ow)
    check_shape(op, "grad_output", grad, expected)
    if indices is None:
        return (unbatch(P.max_pool_backward(grad, x, w, xp), unbatched),)
    if not xp.isdtype(indices.dtype, "integral"):
        raise TypeError(f"{op}: indices must have an integer dtype, got {indices.dtype}")
    if unbatched:
        indices = xp.expand_dims(indices, axis=0)
    check_shape(op, "indices", indices, expected)
    taps = _taps_from_flat(xp.astype(indices, xp.int64), w, x.shape[-1], xp)
    return (unbatch(P.max_pool_scatter(grad, taps, x.shape, w, xp), unbatched),)


def _avg_divisor(w: Window, height, width, count_include_pad, divisor_override, dtype, device, xp):
    """torch's divisor per output position: the window clipped to the padded input (never the
    ceil_mode overhang), or to the input alone without count_include_pad."""
    if divisor_override is not None:
        return xp.asarray(float(divisor_override), dtype=dtype, device=device)

    def counts(out_size, stride, kernel, pad, size):
        result = []
        for a in range(out_size):
            start = a * stride - pad
            end = min(start + kernel, size + pad)
            if not count_include_pad:
                start, end = max(start, 0), min(end, size)
            result.append(end - start)
        return result

    rows = counts(w.oh, w.sh, w.kh, w.top, height)
    cols = counts(w.ow, w.sw, w.kw, w.left, width)
    return xp.asarray([[float(r * c) for c in cols] for r in rows], dtype=dtype, device=device)


def _avg_geometry(op, shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    if not isinstance(count_include_pad, bool):
        raise TypeError(f"{op}: count_include_pad must be a bool, got {count_include_pad!r}")
    if divisor_override is not None and (not _is_int(divisor_override) or divisor_override == 0):
        raise ValueError(f"{op}: divisor_override must be a non-zero int or None, got {divisor_override!r}")
    return _pool_geometry(op, shape, kernel_size, stride, padding, 1, ceil_mode)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    input : array
    kernel_size, stride, padding, ceil_mode
        As in :func:`max_pool2d` (padding is zeros).
    count_include_pad : bool
        Count padded zeros in the divisor (never the ceil_mode overhang past the padding).
    divisor_override : int, optional
        Divide every window sum by this instead.

    Shapes
    ------
    input : (N, C, H, W) or unbatched (C, H, W)
    output : (N, C, oh, ow)
    """
    xp = namespace_of(input)
    op = "avg_pool2d"
    x, _, unbatched = batched(op, input, xp)
    w = _avg_geometry(op, x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    divisor = _avg_divisor(w, *x.shape[-2:], count_include_pad, divisor_override, x.dtype, _device(x), xp)
    return unbatch(P.window_sum(x, w, xp) / divisor, unbatched)


def avg_pool2d_backward(
    grad_output, input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    """Gradient of :func:`avg_pool2d`: each window spreads ``grad / divisor`` over its taps.

    Shapes
    ------
    grad_output : (N, C, oh, ow)
    returns : ((N, C, H, W),)
    """
    xp = namespace_of(grad_output, input)
    op = "avg_pool2d_backward"
    x, grad, unbatched = batched(op, input, xp, grad_output)
    w = _avg_geometry(op, x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    check_shape(op, "grad_output", grad, (*x.shape[:2], w.oh, w.ow))
    divisor = _avg_divisor(w, *x.shape[-2:], count_include_pad, divisor_override, x.dtype, _device(x), xp)
    return (unbatch(P.window_spread(grad / divisor, x.shape, w, xp), unbatched),)
