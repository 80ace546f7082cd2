"""Window helpers shared by convolution, transposed convolution and pooling.

One idea serves every windowed op: for each kernel offset ``(i, j)`` the strided slice
``x[..., i*dh : i*dh + (oh-1)*sh + 1 : sh, j*dw : j*dw + (ow-1)*sw + 1 : sw]`` holds that
offset's input for every output position at once. ``im2col`` stacks the ``kh*kw`` slices into the
matrix a convolution multiplies; ``col2im`` scatter-adds them back (its adjoint); pooling reduces
over them without building the matrix.

On CuPy, im2col and col2im are one raw kernel each (``portaconv._cuda``, chosen by
``WINDOW_KERNELS``): the kernel reads the input as if padded and dilated (:class:`_Padded`), so
neither the padded copy nor the kh·kw slice copies are made.
"""

from __future__ import annotations

import functools
import math
import threading

import array_api_compat
from array_api_extra import at

from ._backend import is_numpy, namespace_of
from ._shapes import _pair, _padding4, conv_output_size

__all__ = ["pad", "stride0", "rot180", "im2col", "col2im"]


@functools.lru_cache(maxsize=1024)
def _window_index(kh, kw, sh, sw, dh, dw, oh, ow):
    """Per kernel offset in row-major order, the index of its strided slice (a cached tuple: every
    windowed call asks for it, and small calls are dominated by such Python work).

    The stops are exact (``start + (out - 1) * stride + 1``): array-api-strict rejects slice stops
    past the end of an axis.
    """
    index = []
    for i in range(kh):
        rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
        for j in range(kw):
            index.append((..., rows, slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)))
    return tuple(index)


def _planes_shape(shape_padded, sh, sw):
    """Shape of the stride-parity planes of a padded array: (sh, sw, ..., ceil(Hp/sh), ceil(Wp/sw))."""
    height, width = shape_padded[-2:]
    return (sh, sw, *shape_padded[:-2], -(-height // sh), -(-width // sw))


@functools.lru_cache(maxsize=1024)
def _plane_window_index(kh, kw, sh, sw, dh, dw, oh, ow):
    """Tap ``(i, j)``'s slice of the stride-parity planes: padded row ``a sh + i dh`` is row
    ``a + (i dh) // sh`` of plane ``(i dh) mod sh`` (columns likewise), so each tap reads unit-stride
    rows instead of every sh-th element."""
    index = []
    for i in range(kh):
        row_offset, p = divmod(i * dh, sh)
        for j in range(kw):
            col_offset, q = divmod(j * dw, sw)
            index.append((p, q, ..., slice(row_offset, row_offset + oh), slice(col_offset, col_offset + ow)))
    return tuple(index)


def _windows_overlap(kh, kw, sh, sw, dh, dw) -> bool:
    """Whether neighbouring windows share pixels (a window spans more than the stride)."""
    return (kh - 1) * dh + 1 > sh or (kw - 1) * dw + 1 > sw


def _use_planes(kh, kw, sh, sw, dh, dw, xp, passes) -> bool:
    """Whether taps go through stride-parity planes: NumPy's loops over stride-2 views run several
    times slower than over unit-stride rows (a 9-tap pooling backward spent 90 % of its time there),
    so the one strided copy into planes pays when pixels are visited more than once: overlapping
    windows, or ``passes`` > 1 over the taps. Other backends index strided views natively."""
    if (sh, sw) == (1, 1) or not is_numpy(xp):
        return False
    return _windows_overlap(kh, kw, sh, sw, dh, dw) or passes > 1


def _window_source(x_padded, kh, kw, sh, sw, dh, dw, oh, ow, xp, *, passes=1):
    """``(source, windows)`` with ``source[windows[k]]`` the (..., oh, ow) input of kernel tap k.

    The source is ``x_padded`` itself, or (NumPy, stride > 1, see :func:`_use_planes`) its
    stride-parity planes, copied once so that every tap is a unit-stride slice
    (see :func:`_plane_window_index`). ``passes``: how many times the caller reads every tap.
    """
    if not _use_planes(kh, kw, sh, sw, dh, dw, xp, passes):
        return x_padded, _window_index(kh, kw, sh, sw, dh, dw, oh, ow)
    import numpy as np

    planes = np.empty(_planes_shape(x_padded.shape, sh, sw), dtype=x_padded.dtype)
    for p in range(sh):
        for q in range(sw):
            part = x_padded[..., p::sh, q::sw]
            planes[p, q, ..., : part.shape[-2], : part.shape[-1]] = part
    return planes, _plane_window_index(kh, kw, sh, sw, dh, dw, oh, ow)


def _window_target(shape_padded, dtype, device, kh, kw, sh, sw, dh, dw, oh, ow, xp):
    """Zeros to scatter-add tap gradients into, and the windows to add them at: the adjoint side of
    :func:`_window_source`. :func:`_from_window_target` turns the result into (..., Hp, Wp).
    Planes only where windows overlap: else each pixel is written once either way."""
    if not _use_planes(kh, kw, sh, sw, dh, dw, xp, 1):
        zeros = xp.zeros(shape_padded, dtype=dtype, device=device)
        return zeros, _window_index(kh, kw, sh, sw, dh, dw, oh, ow)
    import numpy as np

    return np.zeros(_planes_shape(shape_padded, sh, sw), dtype=dtype), _plane_window_index(kh, kw, sh, sw, dh, dw, oh, ow)


def _from_window_target(target, shape_padded, sh, sw, xp):
    """(..., Hp, Wp) from :func:`_window_target`'s array: interleave the planes back."""
    if tuple(target.shape) == tuple(shape_padded):
        return target
    import numpy as np

    out = np.empty(shape_padded, dtype=target.dtype)
    for p in range(sh):
        for q in range(sw):
            part = out[..., p::sh, q::sw]
            part[...] = target[p, q, ..., : part.shape[-2], : part.shape[-1]]
    return out


def _set_at(x, index, values, xp):
    """``x[index] = values``, returning the result: in place for NumPy (``array_api_extra.at``
    costs ~6 µs a call, a quarter of a small convolution), through ``at`` elsewhere so immutable
    arrays work. Only call it on arrays this library created."""
    if is_numpy(xp):
        x[index] = values
        return x
    return at(x)[index].set(values)


def _add_at(x, index, values, xp):
    """``x[index] += values``, returning the result (see :func:`_set_at`)."""
    if is_numpy(xp):
        x[index] += values
        return x
    return at(x)[index].add(values)


def _pad(x, pads, value, xp):
    """Pad (positive) or crop (negative) the last two axes by (top, bottom, left, right)."""
    top, bottom, left, right = pads
    if min(pads) < 0:
        height, width = x.shape[-2:]
        x = x[..., max(-top, 0) : height - max(-bottom, 0), max(-left, 0) : width - max(-right, 0)]
        top, bottom, left, right = (max(p, 0) for p in pads)
    if top == bottom == left == right == 0:
        return x
    height, width = x.shape[-2:]
    shape = (*x.shape[:-2], height + top + bottom, width + left + right)
    out = xp.full(shape, value, dtype=x.dtype, device=array_api_compat.device(x))
    return _set_at(out, (..., slice(top, top + height), slice(left, left + width)), x, xp)


def _dilate_pad(x, sh, sw, pads, xp):
    """stride0 and pad in one write: put ``x`` at every ``sh``-th row and ``sw``-th column of a
    zero array already holding the padding (negative pads crop afterwards)."""
    top, bottom, left, right = (max(p, 0) for p in pads)
    height, width = x.shape[-2:]
    dilated_h, dilated_w = (height - 1) * sh + 1, (width - 1) * sw + 1
    if (sh, sw) == (1, 1):
        return _pad(x, pads, 0, xp)
    shape = (*x.shape[:-2], dilated_h + top + bottom, dilated_w + left + right)
    out = xp.zeros(shape, dtype=x.dtype, device=array_api_compat.device(x))
    out = _set_at(out, (..., slice(top, top + dilated_h, sh), slice(left, left + dilated_w, sw)), x, xp)
    if min(pads) < 0:
        out = _pad(out, tuple(min(p, 0) for p in pads), 0, xp)
    return out


#: How column matrices are built and folded back on CuPy: "auto" (one raw kernel each, see
#: ``portaconv._cuda``) or "generic" (the slice copies every backend runs: the reference).
WINDOW_KERNELS = "auto"


def _use_kernels(xp, dtype) -> bool:
    if WINDOW_KERNELS not in ("auto", "generic"):
        raise ValueError(f"portaconv.window.WINDOW_KERNELS must be 'auto' or 'generic', got {WINDOW_KERNELS!r}")
    if WINDOW_KERNELS == "generic" or xp.__name__ != "array_api_compat.cupy":
        return False
    from . import _cuda

    return _cuda.supports(dtype)


class _Padded:
    """A (C, N, H, W) array padded by ``pads`` and dilated by ``lhs`` only as far as the CuPy
    im2col kernel reads it (see :func:`_padded`): no padded copy is made."""

    def __init__(self, x, pads, lhs):
        self.x, self.pads, self.lhs = x, pads, lhs
        channels, batch, height, width = x.shape
        top, bottom, left, right = pads
        self.shape = (channels, batch, (height - 1) * lhs[0] + 1 + top + bottom, (width - 1) * lhs[1] + 1 + left + right)
        self.dtype = x.dtype

    def __getitem__(self, index):
        # Only the batch ranges of _conv_cnhw's chunks: [:, start:stop, ...].
        return _Padded(self.x[index], self.pads, self.lhs)


def _padded(x, pads, xp, *, lhs=(1, 1)):
    """``x`` (C, N, H, W) dilated by ``lhs`` (stride0) and padded by ``pads`` (negative: crop), as
    :func:`_im2col` takes it: a copy, or on CuPy a :class:`_Padded` its kernel reads in place."""
    if _use_kernels(xp, x.dtype):
        return _Padded(x, pads, lhs)
    return _dilate_pad(x, *lhs, pads, xp)


class _Scratch(threading.local):
    buffers: dict

    def __init__(self):
        self.buffers = {}


_scratch = _Scratch()


def _numpy_scratch(shape, dtype):
    """A per-thread NumPy buffer reused for column matrices.

    Freshly allocated multi-megabyte arrays are mapped anew by the OS on every call; their page
    faults cost as much as the copy itself (measured: ~8000 faults and ~40% of a small conv's
    forward + backward). The result is valid until the next call on this thread.
    """
    import numpy as np

    size = math.prod(shape)
    buffer = _scratch.buffers.get(dtype)
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, dtype=dtype)
        _scratch.buffers[dtype] = buffer
    return buffer[:size].reshape(shape)


# NumPy column matrices up to this many elements are gathered (im2col) and scatter-added (col2im)
# through one cached flat index: one operation instead of kh·kw slice copies, whose per-operation
# overhead outweighs the copying at this size (seed 002's 1×1×28² convolution: im2col 11 → 7.6 µs,
# col2im 23 → 10 µs). Larger calls keep the slices (the gather ran up to 3× slower there).
_GATHER_MAX_ELEMENTS = 16384


@functools.lru_cache(maxsize=256)
def _gather_index(shape_padded, kh, kw, sh, sw, dh, dw, oh, ow):
    """Flat position in a C-contiguous padded (C, N, Hp, Wp) array of each entry of its column
    matrix (C·kh·kw, N·oh·ow), in the matrix's row-major order (read-only: it is shared)."""
    import numpy as np

    channels, batch, height, width = shape_padded
    c, i, j, n, a, b = np.ix_(*(np.arange(size) for size in (channels, kh, kw, batch, oh, ow)))
    index = (((c * batch + n) * height + a * sh + i * dh) * width + b * sw + j * dw).reshape(-1)
    index.flags.writeable = False
    return index


def _use_gather(size, xp) -> bool:
    return size <= _GATHER_MAX_ELEMENTS and is_numpy(xp)


def _im2col(x_padded, kh, kw, sh, sw, dh, dw, oh, ow, xp, *, scratch=False, out=None):
    """Column matrix of a padded input in (C, N, H, W) layout.

    Returns ``(C * kh * kw, N * oh * ow)``, C-contiguous: the layout in which the convolution's
    matrix product reads its big operand contiguously and only the small output is transposed.
    On NumPy the matrix may go into ``out`` (any array: used when its shape and dtype fit) or, with
    ``scratch``, a reused buffer (see :func:`_numpy_scratch`): consume it before the next call.
    """
    channels, batch = x_padded.shape[:2]
    rows, columns = channels * kh * kw, batch * oh * ow
    if isinstance(x_padded, _Padded):
        from . import _cuda

        return _cuda.im2col(x_padded.x, kh, kw, sh, sw, dh, dw, oh, ow, pads=x_padded.pads, lhs=x_padded.lhs)
    if _use_gather(rows * columns, xp):
        index = _gather_index(tuple(x_padded.shape), kh, kw, sh, sw, dh, dw, oh, ow)
        return xp.reshape(xp.reshape(x_padded, (-1,))[index], (rows, columns))
    source, windows = _window_source(x_padded, kh, kw, sh, sw, dh, dw, oh, ow, xp)
    slices = [source[index] for index in windows]
    if not is_numpy(xp):
        return xp.reshape(xp.stack(slices, axis=1), (rows, columns))
    import numpy as np

    shape = (channels, kh * kw, batch, oh, ow)
    if out is not None and out.shape == (rows, columns) and out.dtype == x_padded.dtype:
        buffer = np.reshape(out, shape)
    else:
        buffer = _numpy_scratch(shape, x_padded.dtype) if scratch else None
    return np.reshape(np.stack(slices, axis=1, out=buffer), (rows, columns))


def _col2im(cols, shape_padded, kh, kw, sh, sw, dh, dw, oh, ow, xp, *, crop=(0, 0, 0, 0)):
    """Adjoint of :func:`_im2col`: scatter-add columns into a zero (C, N, Hp, Wp) array, then
    take ``crop`` = (top, bottom, left, right) off its sides (CuPy: only the kept pixels are summed)."""
    if _use_kernels(xp, cols.dtype):
        from . import _cuda

        channels, batch, height, width = shape_padded
        shape = (channels, batch, height - crop[0] - crop[1], width - crop[2] - crop[3])
        return _cuda.col2im(cols, shape, kh, kw, sh, sw, dh, dw, oh, ow, pads=crop)
    return _pad(_col2im_padded(cols, shape_padded, kh, kw, sh, sw, dh, dw, oh, ow, xp), tuple(-p for p in crop), 0, xp)


def _col2im_padded(cols, shape_padded, kh, kw, sh, sw, dh, dw, oh, ow, xp):
    """The generic :func:`_col2im`, before the crop: the whole (C, N, Hp, Wp) array."""
    channels, batch = shape_padded[:2]
    if _use_gather(channels * kh * kw * batch * oh * ow, xp):
        import numpy as np

        # Unbuffered scatter-add in the matrix's order: each pixel sums its taps in tap order, as
        # the slice loop below does (bit-identical results).
        out = np.zeros(math.prod(shape_padded), dtype=cols.dtype)
        np.add.at(out, _gather_index(tuple(shape_padded), kh, kw, sh, sw, dh, dw, oh, ow), np.reshape(cols, (-1,)))
        return np.reshape(out, shape_padded)
    cols = xp.reshape(cols, (channels, kh * kw, batch, oh, ow))
    device = array_api_compat.device(cols)
    out, windows = _window_target(shape_padded, cols.dtype, device, kh, kw, sh, sw, dh, dw, oh, ow, xp)
    for k, index in enumerate(windows):
        out = _add_at(out, index, cols[:, k, ...], xp)
    return _from_window_target(out, shape_padded, sh, sw, xp)


def _col2im_frame(cols, shape_padded, kh, kw, dh, dw, xp):
    """Stride-1 col2im (NumPy) of columns taken over the whole padded frame.

    ``cols`` is (C·kh·kw, N·Hp·Wp): column ``(n, y, x)`` of tap ``(i, j)`` belongs at pixel
    ``(n, y + i dh, x + j dw)``, which lies ``i dh Wp + j dw`` further along the flattened frame.
    So each tap is one shifted add of C rows N·Hp·Wp long, where :func:`_col2im` adds C·N·oh rows of
    ow (NumPy pays per row). Columns outside the output (y ≥ oh or x ≥ ow) must be zero: their
    shifted adds land on other pixels, or past a channel's end into the next one.
    """
    import numpy as np

    channels, batch, height, width = shape_padded
    length = batch * height * width
    cols = np.reshape(cols, (channels, kh * kw, length))
    slack = (kh - 1) * dh * width + (kw - 1) * dw
    out = np.zeros(channels * length + slack, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            offset = i * dh * width + j * dw
            out[offset : offset + channels * length].reshape(channels, length)[...] += cols[:, i * kw + j, :]
    return out[: channels * length].reshape(shape_padded)


def _check_nchw(x, name):
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")


def pad(x, padding, *, value=0.0, xp=None):
    """Pad or crop the last two axes.

    Parameters
    ----------
    x : array
        Any array with at least two axes.
    padding : int or tuple
        ``p`` (all sides), ``(ph, pw)`` or ``(top, bottom, left, right)``. Negative values crop.
    value : float, keyword-only
        Fill value (``-inf`` for max pooling).
    xp : namespace, optional

    Shapes
    ------
    x : (..., H, W) → (..., H + top + bottom, W + left + right)
    """
    xp = namespace_of(x) if xp is None else xp
    if x.ndim < 2:
        raise ValueError(f"pad needs an array with at least 2 axes, got shape {tuple(x.shape)}")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        pads = tuple(_pair((p, p), "padding")[0] for p in padding)
    else:
        ph, pw = _pair(padding, "padding")
        pads = (ph, ph, pw, pw)
    if pads[0] + pads[1] + x.shape[-2] < 0 or pads[2] + pads[3] + x.shape[-1] < 0:
        raise ValueError(f"padding={padding!r} crops more than the shape {tuple(x.shape)} holds")
    return _pad(x, pads, value, xp)


def stride0(x, stride, *, xp=None):
    """Insert ``stride - 1`` zeros between the rows and between the columns (the last two axes).

    The backward of a strided convolution runs at stride 1 on this "stride0" gradient.

    Shapes
    ------
    x : (..., H, W) → (..., (H - 1) * sh + 1, (W - 1) * sw + 1)
    """
    xp = namespace_of(x) if xp is None else xp
    sh, sw = _pair(stride, "stride", minimum=1)
    if x.ndim < 2:
        raise ValueError(f"stride0 needs an array with at least 2 axes, got shape {tuple(x.shape)}")
    return _dilate_pad(x, sh, sw, (0, 0, 0, 0), xp)


def rot180(x, *, xp=None):
    """Rotate the last two axes by 180° (flip both): the kernel of the input-gradient convolution.

    Shapes
    ------
    x : (..., kh, kw) → (..., kh, kw)
    """
    xp = namespace_of(x) if xp is None else xp
    return xp.flip(x, axis=(-2, -1))


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, xp=None):
    """Unfold sliding windows into the column matrix of a convolution.

    Row ``(c, i, j)`` and column ``(n, a, b)`` hold ``x_padded[n, c, a*sh + i*dh, b*sw + j*dw]``;
    ``weight.reshape(K, -1) @ im2col(x)`` is the convolution in (K, N, oh, ow) order.

    Parameters
    ----------
    x : array
    kernel_size, stride, padding, dilation : int or pair of ints, keyword-only
        As in :func:`portaconv.functional.conv2d` (padding may also be ``"same"``/``"valid"``).

    Shapes
    ------
    x : (N, C, H, W) → (C * kh * kw, N * oh * ow)
    """
    xp = namespace_of(x) if xp is None else xp
    _check_nchw(x, "x")
    kh, kw = _pair(kernel_size, "kernel_size", minimum=1)
    sh, sw = _pair(stride, "stride", minimum=1)
    dh, dw = _pair(dilation, "dilation", minimum=1)
    pads = _padding4(padding, (kh, kw), (dh, dw), (sh, sw))
    oh = conv_output_size(x.shape[2], kh, stride=sh, padding=pads[:2], dilation=dh)
    ow = conv_output_size(x.shape[3], kw, stride=sw, padding=pads[2:], dilation=dw)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"kernel_size {(kh, kw)} with dilation {(dh, dw)} is larger than the padded input "
            f"{(x.shape[2] + pads[0] + pads[1], x.shape[3] + pads[2] + pads[3])}"
        )
    x_padded = _padded(xp.permute_dims(x, (1, 0, 2, 3)), pads, xp)
    return _im2col(x_padded, kh, kw, sh, sw, dh, dw, oh, ow, xp)


def col2im(cols, input_shape, kernel_size, *, stride=1, padding=0, dilation=1, xp=None):
    """Fold a column matrix back, summing overlaps: the adjoint of :func:`im2col`.

    Shapes
    ------
    cols : (C * kh * kw, N * oh * ow) → (N, C, H, W) with ``input_shape = (N, C, H, W)``
    """
    xp = namespace_of(cols) if xp is None else xp
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {input_shape!r}")
    batch, channels, height, width = (int(s) for s in input_shape)
    kh, kw = _pair(kernel_size, "kernel_size", minimum=1)
    sh, sw = _pair(stride, "stride", minimum=1)
    dh, dw = _pair(dilation, "dilation", minimum=1)
    pads = _padding4(padding, (kh, kw), (dh, dw), (sh, sw))
    oh = conv_output_size(height, kh, stride=sh, padding=pads[:2], dilation=dh)
    ow = conv_output_size(width, kw, stride=sw, padding=pads[2:], dilation=dw)
    expected = (channels * kh * kw, batch * oh * ow)
    if tuple(cols.shape) != expected:
        raise ValueError(f"cols has shape {tuple(cols.shape)}, expected {expected} for input_shape {input_shape}")
    shape_padded = (channels, batch, height + pads[0] + pads[1], width + pads[2] + pads[3])
    out = _col2im(cols, shape_padded, kh, kw, sh, sw, dh, dw, oh, ow, xp, crop=pads)
    return xp.permute_dims(out, (1, 0, 2, 3))
