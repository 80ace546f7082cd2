"""Public building blocks of the convolutions, each a thin front to a primitive.

``pad`` (pad or crop the last two axes), ``stride0`` (insert stride − 1 zeros between rows and
columns: the gradient a strided convolution's backward runs on), ``rot180`` (flip both kernel
axes), ``im2col`` and ``col2im`` (the column matrix of a convolution and its adjoint). They take
torch-style parameters and validate them; the arithmetic lives in :mod:`portaconv.primitives`.
"""

from __future__ import annotations

from array_api_compat import device as _device
from array_api_extra import at

from . import primitives as P
from ._backend import namespace_of
from ._shapes import _pair, _padding4, conv_output_size
from .primitives.window import Window

__all__ = ["pad", "stride0", "rot180", "im2col", "col2im"]


def _check_ndim(op, x, minimum):
    if x.ndim < minimum:
        raise ValueError(f"{op} needs an array with at least {minimum} axes, got shape {tuple(x.shape)}")


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
    _check_ndim("pad", x, 2)
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        top, bottom, left, right = (_pair((p, p), "padding")[0] for p in padding)
    else:
        ph, pw = _pair(padding, "padding")
        top, bottom, left, right = ph, ph, pw, pw
    height, width = x.shape[-2:]
    if top + bottom + height < 0 or left + right + width < 0:
        raise ValueError(f"padding={padding!r} crops more than the shape {tuple(x.shape)} holds")
    x = x[..., max(-top, 0) : height - max(-bottom, 0), max(-left, 0) : width - max(-right, 0)]
    top, bottom, left, right = (max(p, 0) for p in (top, bottom, left, right))
    if top == bottom == left == right == 0:
        return x
    height, width = x.shape[-2:]
    out = xp.full((*x.shape[:-2], height + top + bottom, width + left + right), value, dtype=x.dtype, device=_device(x))
    return at(out)[..., top : top + height, left : left + width].set(x)


def stride0(x, stride, *, xp=None):
    """Insert ``stride - 1`` zeros between the rows and between the columns (the last two axes).

    The backward of a strided convolution runs at stride 1 on this "stride0" gradient.

    Shapes
    ------
    x : (..., H, W) → (..., (H - 1) * sh + 1, (W - 1) * sw + 1)
    """
    xp = namespace_of(x) if xp is None else xp
    sh, sw = _pair(stride, "stride", minimum=1)
    _check_ndim("stride0", x, 2)
    height, width = x.shape[-2:]
    out = xp.zeros((*x.shape[:-2], (height - 1) * sh + 1, (width - 1) * sw + 1), dtype=x.dtype, device=_device(x))
    return at(out)[..., ::sh, ::sw].set(x)


def rot180(x, *, xp=None):
    """Rotate the last two axes by 180° (flip both): the kernel of the input-gradient convolution.

    Shapes
    ------
    x : (..., kh, kw) → (..., kh, kw)
    """
    xp = namespace_of(x) if xp is None else xp
    return xp.flip(x, axis=(-2, -1))


def _window(height, width, kernel_size, stride, padding, dilation) -> Window:
    kh, kw = _pair(kernel_size, "kernel_size", minimum=1)
    sh, sw = _pair(stride, "stride", minimum=1)
    dh, dw = _pair(dilation, "dilation", minimum=1)
    pads = _padding4(padding, (kh, kw), (dh, dw), (sh, sw))
    oh = conv_output_size(height, kh, stride=sh, padding=pads[:2], dilation=dh)
    ow = conv_output_size(width, kw, stride=sw, padding=pads[2:], dilation=dw)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"kernel_size {(kh, kw)} with dilation {(dh, dw)} is larger than the padded input "
            f"{(height + pads[0] + pads[1], width + pads[2] + pads[3])}"
        )
    return Window(kh, kw, sh, sw, dh, dw, pads[0], pads[2], oh, ow)


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
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    return P.im2col(x, _window(*x.shape[2:], kernel_size, stride, padding, dilation), xp)


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
    w = _window(height, width, kernel_size, stride, padding, dilation)
    expected = (channels * w.taps, batch * w.oh * w.ow)
    if tuple(cols.shape) != expected:
        raise ValueError(f"cols has shape {tuple(cols.shape)}, expected {expected} for input_shape {input_shape}")
    return P.col2im(cols, (batch, channels, height, width), w, xp)
