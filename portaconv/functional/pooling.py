"""max_pool2d and avg_pool2d, forward and backward, on the shared window helper.

Both read the ``kh * kw`` strided slices of the padded input (one per kernel offset) and reduce
across them; the backwards scatter-add the gradient back through the same slices.
"""

from __future__ import annotations

from array_api_compat import device as _device

from .. import _threads
from .._backend import is_numpy, namespace_of
from .._shapes import _is_int, _pair, pool_output_size
from .._validate import check_shape
from ..window import _add_at, _from_window_target, _pad, _set_at, _window_index, _window_source, _window_target, _windows_overlap
from ._common import all_finite, batched, masked, unbatch

__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]


def _pool_geometry(op, shape, kernel_size, stride, padding, dilation, ceil_mode):
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
    # The padded input holds every window: the left padding, then up to the end of the last
    # window (ceil_mode may reach past the right padding; a negative bottom crops unread rows).
    bottom = (oh - 1) * sh + dh * (kh - 1) + 1 - height - ph
    right = (ow - 1) * sw + dw * (kw - 1) + 1 - width - pw
    return kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, (ph, bottom, pw, right)


def _first_valid(out_size, stride, padding, dilation):
    """Per output position, the first kernel tap that lands inside the input (not the padding)."""
    return [max(0, -((a * stride - padding) // dilation)) for a in range(out_size)]


def _max_pool_exact(x_padded, geometry, xp):
    """torch's rule, tap by tap: start from -inf at the first tap inside the input and take a tap
    if it is larger or NaN. Padding (-inf) never wins, equal values keep the first, and the last
    NaN wins."""
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, pads = geometry
    device = _device(x_padded)
    rows = _first_valid(oh, sh, ph, dh)
    cols = _first_valid(ow, sw, pw, dw)
    taps = xp.asarray([[r * kw + c for c in cols] for r in rows], dtype=xp.int32, device=device)
    best = xp.full((*x_padded.shape[:2], oh, ow), -float("inf"), dtype=x_padded.dtype, device=device)
    for k, window in enumerate(_window_index(kh, kw, sh, sw, dh, dw, oh, ow)):
        value = x_padded[window]
        take = (value > best) | xp.isnan(value)
        best = xp.where(take, value, best)
        taps = xp.where(take, xp.asarray(k, dtype=xp.int32, device=device), taps)
    return best, taps


def _max_values(source, windows, xp):
    # Elementwise maxima across the tap slices: reductions along a short last axis are far slower.
    # The standard's maximum propagates NaN.
    best = source[windows[0]]
    for window in windows[1:]:
        best = xp.maximum(best, source[window])
    return best


def _max_taps(source, best, windows, geometry, xp, x_padded):
    """Index of each window's winning tap: the first tap equal to the maximum (torch's tie rule),
    found by comparisons and arithmetic (NumPy's where is slow on random masks). Windows whose
    maximum is not finite take the exact path (torch: the last NaN wins; an all -inf window points
    at its first tap inside the input)."""
    if not all_finite(best, xp):
        return _max_pool_exact(x_padded, geometry, xp)[1]  # reads x_padded: torch's rule, tap by tap
    taps = xp.zeros(best.shape, dtype=xp.int32, device=_device(best))
    found = None
    for k, window in enumerate(windows[:-1]):
        hit = source[window] == best
        if found is not None:
            hit = hit & ~found
        taps = taps + k * xp.astype(hit, xp.int32)
        found = hit if found is None else found | hit
    if found is not None:
        taps = taps + (len(windows) - 1) * xp.astype(~found, xp.int32)
    return taps


def _maxima(x, geometry, xp, passes):
    """``(x_padded, source, windows, best)``: the -inf-padded input, its window source (see
    window._window_source; ``passes`` over the taps) and the window maxima."""
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, pads = geometry
    x_padded = _pad(x, pads, -float("inf"), xp)
    source, windows = _window_source(x_padded, kh, kw, sh, sw, dh, dw, oh, ow, xp, passes=passes)
    return x_padded, source, windows, _max_values(source, windows, xp)


def _max_pool(x, geometry, xp, *, taps=True):
    """Window maxima and (``taps``) the index of each window's winning tap."""
    x_padded, source, windows, best = _maxima(x, geometry, xp, 2 if taps else 1)
    return best, (_max_taps(source, best, windows, geometry, xp, x_padded) if taps else None)


def _window_origins(geometry, device, xp):
    """Input row (oh, 1) and column (1, ow) of each window's first tap (negative in the padding)."""
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, _ = geometry
    rows = xp.reshape(xp.arange(oh, dtype=xp.int64, device=device) * sh - ph, (oh, 1))
    cols = xp.reshape(xp.arange(ow, dtype=xp.int64, device=device) * sw - pw, (1, ow))
    return rows, cols


def _flat_indices(index, geometry, width, xp):
    """Window-tap index → torch's flat index ``row * W + col`` into the unpadded input."""
    kw, dh, dw = geometry[1], geometry[4], geometry[5]
    rows, cols = _window_origins(geometry, _device(index), xp)
    return (rows + (index // kw) * dh) * width + cols + (index % kw) * dw


def _taps_from_flat(indices, geometry, width, xp):
    """torch's flat index → window-tap index (inverse of :func:`_flat_indices`)."""
    kw, dh, dw = geometry[1], geometry[4], geometry[5]
    rows, cols = _window_origins(geometry, _device(indices), xp)
    return ((indices // width - rows) // dh) * kw + (indices % width - cols) // dw


def _first_max_scatter(x, grad, geometry, xp, out=None, maxima=None):
    """max_pool2d's input gradient without tap indices: tap by tap, the gradient goes where the
    tap holds its window's maximum and no earlier tap did (torch's first-max rule). ``maxima``:
    the forward's ``(source, windows, best)`` (see :func:`_max_pool2d_keeping`), else found again.

    Returns None when some window's maximum is not finite (NaN and -inf windows take the exact
    index path). Windows that do not overlap (stride >= extent, the common 2×2/2) are written,
    not accumulated, and on NumPy with a finite gradient the product lands in place: in ``out``
    (NumPy, x's shape, any contents) when given and the windows need no padding.
    """
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, pads = geometry
    source, windows, best = _maxima(x, geometry, xp, 2)[1:] if maxima is None else maxima
    if not all_finite(best, xp):
        return None
    shape = _padded_shape(x.shape, pads)
    overlap = _windows_overlap(kh, kw, sh, sw, dh, dw)
    if out is not None and tuple(shape) == tuple(x.shape) and not overlap:
        # Rows and columns no window reads (floor mode) keep a zero gradient; windows that tile
        # the rest (stride = kernel, no dilation) write every pixel of it below.
        if (sh, sw, dh, dw) == (kh, kw, 1, 1) and kh * kw > 1:
            out[..., oh * sh :, :] = 0
            out[..., : oh * sh, ow * sw :] = 0
        else:
            out[...] = 0
        grad_padded, targets = out, _window_index(kh, kw, sh, sw, dh, dw, oh, ow)
    else:
        grad_padded, targets = _window_target(shape, x.dtype, _device(x), kh, kw, sh, sw, dh, dw, oh, ow, xp)
    finite = all_finite(grad, xp)
    in_place = is_numpy(xp) and finite and not overlap
    remaining = None  # windows whose maximum no earlier tap held
    for k, (window, target) in enumerate(zip(windows, targets)):
        if k == len(windows) - 1:
            hit = remaining
        else:
            hit = source[window] == best
            hit = hit if remaining is None else hit & remaining
            remaining = ~hit if remaining is None else remaining ^ hit
        if hit is None:  # a 1×1 window
            grad_padded = _add_at(grad_padded, target, grad, xp)
        elif in_place:
            import numpy as np

            np.multiply(grad, hit, out=grad_padded[target])
        else:
            grad_padded = (_add_at if overlap else _set_at)(grad_padded, target, masked(grad, hit, xp, finite=finite), xp)
    result = _unpadded_grad(grad_padded, shape, x.shape, geometry, xp)
    if out is not None and result is not out:
        out[...] = result
        return out
    return result


# Elements (input × taps) from which a NumPy max-pool backward splits its batch across threads:
# its ~12 passes per tap release the GIL (2×2 pools, 2 threads: seed-cnn's first, 64×32×26², 2.4 →
# 1.7 ms; its second, 64×64×11², 0.99 → 0.77; 1.4M elements even, 0.7M 1.5x slower).
_SPLIT_ELEMENTS = 1_500_000


def _split_ranges(x, geometry, xp, elements):
    """Batch ranges for a NumPy pooling split across threads from ``elements`` (input × taps), or
    None to run whole."""
    kh, kw = geometry[:2]
    return _threads.batch_ranges(x.shape[0], x.size * kh * kw, elements) if is_numpy(xp) else None


def _kept_maxima(maxima, start, stop):
    """Images ``start:stop`` of :func:`_max_pool2d_keeping`'s maxima, or None when no kept part
    holds them all (the caller finds them again)."""
    for (first, last), (source, windows, best) in (maxima or {}).items():
        if first <= start and stop <= last:
            images = (slice(None),) * (source.ndim - 4) + (slice(start - first, stop - first), ...)  # source's batch axis
            return source[images], windows, best[start - first : stop - first, ...]
    return None


def _first_max_scatter_split(x, grad, geometry, xp, maxima=None):
    """:func:`_first_max_scatter`, the batch split across portaconv's threads on NumPy; ``maxima``
    from :func:`_max_pool2d_keeping`."""
    batch = x.shape[0]
    ranges = _split_ranges(x, geometry, xp, _SPLIT_ELEMENTS)
    if ranges is None:
        return _first_max_scatter(x, grad, geometry, xp, maxima=_kept_maxima(maxima, 0, batch))
    import numpy as np

    # Each thread writes its part of one result (a concatenation afterwards would be one more
    # serial pass over the input's size).
    out = np.empty(x.shape, dtype=x.dtype)
    parts = _threads.map_ranges(
        lambda start, stop: _first_max_scatter(
            x[start:stop], grad[start:stop], geometry, xp, out[start:stop], _kept_maxima(maxima, start, stop)
        ),
        ranges,
    )
    return None if any(part is None for part in parts) else out


def _scatter_windows(parts, x_shape, geometry, dtype, device, xp):
    """Sum ``parts(k, window)`` into the padded input through each tap's slice, then crop."""
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, pads = geometry
    shape = _padded_shape(x_shape, pads)
    grad, targets = _window_target(shape, dtype, device, kh, kw, sh, sw, dh, dw, oh, ow, xp)
    for k, target in enumerate(targets):
        grad = _add_at(grad, target, parts(k), xp)
    return _unpadded_grad(grad, shape, x_shape, geometry, xp)


def _padded_shape(x_shape, pads):
    """Shape of the gradient's padded buffer: the pooling pads, a negative bottom/right not cropped
    (the rows no window reads keep their zero gradient)."""
    height, width = x_shape[-2:]
    return (*x_shape[:2], height + pads[0] + max(pads[1], 0), width + pads[2] + max(pads[3], 0))


def _unpadded_grad(grad, shape_padded, x_shape, geometry, xp):
    """The input's gradient from :func:`_window_target`'s accumulated buffer: planes interleaved
    back, padding cropped."""
    sh, sw, ph, pw = geometry[2], geometry[3], geometry[6], geometry[7]
    grad = _from_window_target(grad, shape_padded, sh, sw, xp)
    return grad[..., ph : ph + x_shape[-2], pw : pw + x_shape[-1]]


def max_pool2d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
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
    """
    xp = namespace_of(input)
    x, _, unbatched = batched("max_pool2d", input, xp)
    geometry = _pool_geometry("max_pool2d", x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    out, index = _max_pool(x, geometry, xp, taps=return_indices)
    if not return_indices:
        return unbatch(out, unbatched)
    flat = xp.broadcast_to(_flat_indices(xp.astype(index, xp.int64), geometry, x.shape[-1], xp), out.shape)
    return unbatch(out, unbatched), unbatch(flat, unbatched)


# Elements (input × taps) from which a NumPy training max-pool forward splits its batch across
# threads (2×2 pools, 2 threads: seed-cnn's first, 5.5M elements, 0.84 → 0.60 ms; its second,
# 2M, no faster).
_FORWARD_SPLIT_ELEMENTS = 4_000_000


def _max_pool2d_keeping(input, kernel_size, stride, padding, dilation, ceil_mode):
    """:func:`max_pool2d` for a training layer: ``(output, maxima)``, where ``maxima`` (the window
    source and the maxima, by batch range) spares :func:`_max_pool2d_backward` finding the maxima
    again (seed-cnn's first pool, backward per half batch 1.1 → 0.7 ms). On NumPy the source is the
    input's stride-parity planes: a copy of the input's size, kept until the next forward."""
    xp = namespace_of(input)
    x, _, unbatched = batched("max_pool2d", input, xp)
    geometry = _pool_geometry("max_pool2d", x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    ranges = _split_ranges(x, geometry, xp, _FORWARD_SPLIT_ELEMENTS)
    if ranges is None:
        ranges, parts = [(0, x.shape[0])], [_maxima(x, geometry, xp, 2)[1:]]
    else:
        parts = _threads.map_ranges(lambda start, stop: _maxima(x[start:stop], geometry, xp, 2)[1:], ranges)
    best = parts[0][2] if len(parts) == 1 else xp.concat([part[2] for part in parts], axis=0)
    return unbatch(best, unbatched), dict(zip(ranges, parts))


def max_pool2d_backward(
    grad_output,
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
    *,
    indices=None,
):
    """Gradient of :func:`max_pool2d`: each window's gradient goes to its maximum (summed where
    windows overlap).

    Parameters
    ----------
    grad_output : array
    input, kernel_size, stride, padding, dilation, ceil_mode
        As passed to :func:`max_pool2d` (``return_indices`` is accepted and ignored).
    indices : array, optional, keyword-only
        The indices :func:`max_pool2d` returned; saves recomputing the maxima.

    Shapes
    ------
    grad_output, indices : (N, C, oh, ow)
    returns : ((N, C, H, W),)
    """
    return _max_pool2d_backward(grad_output, input, kernel_size, stride, padding, dilation, ceil_mode, indices)


def _max_pool2d_backward(grad_output, input, kernel_size, stride, padding, dilation, ceil_mode, indices=None, maxima=None):
    """:func:`max_pool2d_backward`; ``maxima`` from :func:`_max_pool2d_keeping` on ``input``."""
    xp = namespace_of(grad_output, input, indices)
    op = "max_pool2d_backward"
    x, grad, unbatched = batched(op, input, xp, grad_output)
    geometry = _pool_geometry(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    expected = (*x.shape[:2], geometry[8], geometry[9])
    check_shape(op, "grad_output", grad, expected)
    if indices is None:
        grad_input = _first_max_scatter_split(x, grad, geometry, xp, maxima)
        if grad_input is not None:
            return (unbatch(grad_input, unbatched),)
        _, taps = _max_pool(x, geometry, xp)
    else:
        if not xp.isdtype(indices.dtype, "integral"):
            raise TypeError(f"{op}: indices must have an integer dtype, got {indices.dtype}")
        if unbatched:
            indices = xp.expand_dims(indices, axis=0)
        check_shape(op, "indices", indices, expected)
        taps = _taps_from_flat(xp.astype(indices, xp.int64), geometry, x.shape[-1], xp)
    finite = all_finite(grad, xp)
    grad_input = _scatter_windows(
        lambda k: masked(grad, taps == k, xp, finite=finite), x.shape, geometry, x.dtype, _device(x), xp
    )
    return (unbatch(grad_input, unbatched),)


def _avg_divisor(geometry, height, width, count_include_pad, divisor_override, dtype, device, xp):
    """torch's divisor per output position: the window clipped to the padded input (never the
    ceil_mode overhang), or to the input alone without count_include_pad."""
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, _ = geometry
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

    rows = counts(oh, sh, kh, ph, height)
    cols = counts(ow, sw, kw, pw, width)
    return xp.asarray([[float(r * c) for c in cols] for r in rows], dtype=dtype, device=device)


def _avg_geometry(op, shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    if not isinstance(count_include_pad, bool):
        raise TypeError(f"{op}: count_include_pad must be a bool, got {count_include_pad!r}")
    if divisor_override is not None and (not _is_int(divisor_override) or divisor_override == 0):
        raise ValueError(f"{op}: divisor_override must be a non-zero int or None, got {divisor_override!r}")
    return _pool_geometry(op, shape, kernel_size, stride, padding, 1, ceil_mode)


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
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
    geometry = _avg_geometry(op, x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, pads = geometry
    x_padded = _pad(x, pads, 0, xp)
    source, (first, *rest) = _window_source(x_padded, kh, kw, sh, sw, dh, dw, oh, ow, xp)
    total = source[first]
    for window in rest:
        total = total + source[window]
    divisor = _avg_divisor(geometry, *x.shape[-2:], count_include_pad, divisor_override, x.dtype, _device(x), xp)
    return unbatch(total / divisor, unbatched)


def avg_pool2d_backward(
    grad_output,
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
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
    geometry = _avg_geometry(op, x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    check_shape(op, "grad_output", grad, (*x.shape[:2], geometry[8], geometry[9]))
    divisor = _avg_divisor(geometry, *x.shape[-2:], count_include_pad, divisor_override, x.dtype, _device(x), xp)
    share = grad / divisor
    grad_input = _scatter_windows(lambda k: share, x.shape, geometry, x.dtype, _device(x), xp)
    return (unbatch(grad_input, unbatched),)
