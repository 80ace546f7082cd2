"""conv2d and conv_transpose2d, forward and backward.

Forward is im2col + one matrix product. The backward follows the stride0/rot180 derivation:

* grad_input  = conv(pad(stride0(grad_output)), rot180(weight) with in/out channels swapped),
  stride 1, the forward's dilation;
* grad_weight = conv(input, stride0(grad_output)) with batch and channel axes swapped: the "kernel"
  is the gradient dilated by the stride and the "stride" is the dilation, so its windows are exactly
  the forward's im2col columns and it is computed as ``grad_output_matrix @ im2col(input).T``;
* grad_bias   = sum of grad_output over N, H, W.

conv_transpose2d's forward *is* conv2d's grad_input; its backward is conv2d's forward (grad_input)
and conv2d's grad_weight with the roles of input and gradient exchanged.

Internally every array is kept in (C, N, H, W) layout between the permutes at the public boundary:
im2col's matrix then reads contiguously and only the small output is transposed back.

Faster paths compute the same functions, each chosen per call and tested against the reference:

* Winograd F(2×2, 3×3) (``_winograd.py``) for 3×3 stride-1 single-group convolutions
  (``CONV_ALGORITHM``); its gradients are the adjoints of its transforms;
* on NumPy, the batch split across threads (``portaconv._threads``): ``_forward_cnhw``,
  ``_grad_input_cnhw`` and ``_grad_weight_cnhw`` dispatch to their ``_serial`` versions per part;
* on CuPy, im2col and col2im as one raw kernel each (``window.WINDOW_KERNELS``, ``portaconv._cuda``),
  reading the unpadded input in place (``window._padded``). Winograd stays NumPy-only: its generic
  transforms, many small launches, ran 3–8× slower than im2col on an H100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from array_api_compat import device as _device

from .. import _threads
from .._backend import is_numpy, namespace_of
from .._config import _resolve_limit
from .._shapes import _is_int, _pair, _padding4, conv_output_size, conv_transpose_output_size, grad_input_padding
from .._validate import check_float_arrays, check_ndim, check_shape
from .. import window
from ..window import _add_at, _col2im, _col2im_frame, _im2col, _pad, _padded
from . import _winograd as winograd
from ._common import all_finite, batched, unbatch

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv_transpose2d",
    "conv_transpose2d_backward",
]


@dataclass(frozen=True)
class _Geometry:
    """A convolution's pure-int description: the conv that maps (H, W) to (oh, ow)."""

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pads: tuple  # (top, bottom, left, right)
    height: int
    width: int
    oh: int
    ow: int
    groups: int

    @property
    def padded(self) -> tuple:
        """(Hp, Wp): the input's size with the padding."""
        return self.height + self.pads[0] + self.pads[1], self.width + self.pads[2] + self.pads[3]


def _check_groups(op, groups, in_channels, out_channels):
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide both the input channels ({in_channels}) "
            f"and the output channels ({out_channels})"
        )


def _typed(value):
    """A cache key that tells 1, 1.0 and True apart (they hash alike but validate differently)."""
    if type(value) is tuple or type(value) is list:
        return (type(value), *[(type(v), v) for v in value])
    return (type(value), value)


def _cached(validate):
    """Memoize a geometry validator: a repeated call (every training step) skips ~5 µs of Python
    checks. Keys hold the parameters' types; errors are not cached; unhashable arguments skip."""
    cache = {}

    def wrapper(op, input_shape, weight_shape, *params):
        key = (op, tuple(input_shape), tuple(weight_shape), *[_typed(p) for p in params])
        try:
            return cache[key]
        except KeyError:
            pass
        except TypeError:
            return validate(op, input_shape, weight_shape, *params)
        if len(cache) > 4096:
            cache.clear()
        cache[key] = result = validate(op, input_shape, weight_shape, *params)
        return result

    wrapper.__wrapped__ = validate
    wrapper.__doc__ = validate.__doc__
    return wrapper


@_cached
def _conv_geometry(op, input_shape, weight_shape, stride, padding, dilation, groups) -> _Geometry:
    """Validate a conv2d call's shapes and parameters; input_shape is (N, C, H, W)."""
    sh, sw = _pair(stride, "stride", minimum=1)
    dh, dw = _pair(dilation, "dilation", minimum=1)
    out_channels, group_channels, kh, kw = weight_shape
    channels, height, width = input_shape[1:]
    _check_groups(op, groups, channels, out_channels)
    if group_channels * groups != channels:
        raise ValueError(
            f"{op}: weight of shape {tuple(weight_shape)} expects {group_channels * groups} input channels "
            f"(weight.shape[1] * groups = {group_channels} * {groups}), but input of shape "
            f"{tuple(input_shape)} has {channels}"
        )
    if kh < 1 or kw < 1:
        raise ValueError(f"{op}: weight of shape {tuple(weight_shape)} has an empty kernel")
    pads = _padding4(padding, (kh, kw), (dh, dw), (sh, sw))
    oh = conv_output_size(height, kh, stride=sh, padding=pads[:2], dilation=dh)
    ow = conv_output_size(width, kw, stride=sw, padding=pads[2:], dilation=dw)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: kernel size {(kh, kw)} with dilation {(dh, dw)} spans "
            f"{(dh * (kh - 1) + 1, dw * (kw - 1) + 1)}, larger than the padded input "
            f"{(height + pads[0] + pads[1], width + pads[2] + pads[3])} (input shape {tuple(input_shape)}, padding {padding!r})"
        )
    return _Geometry(kh, kw, sh, sw, dh, dw, pads, height, width, oh, ow, groups)


@_cached
def _transpose_geometry(op, input_shape, weight_shape, stride, padding, output_padding, dilation, groups):
    """Validate conv_transpose2d; return the geometry of the conv whose grad_input it is."""
    sh, sw = _pair(stride, "stride", minimum=1)
    dh, dw = _pair(dilation, "dilation", minimum=1)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a pair of ints, got {padding!r}")
    ph, pw = _pair(padding, "padding", minimum=0)
    oph, opw = _pair(output_padding, "output_padding", minimum=0)
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        raise ValueError(
            f"{op}: output_padding {(oph, opw)} must be smaller than stride {(sh, sw)} or dilation {(dh, dw)}"
        )
    in_channels, group_out, kh, kw = weight_shape
    channels, height, width = input_shape[1:]
    if in_channels != channels:
        raise ValueError(
            f"{op}: weight of shape {tuple(weight_shape)} expects {in_channels} input channels "
            f"(weight.shape[0]), but input of shape {tuple(input_shape)} has {channels}"
        )
    _check_groups(op, groups, channels, group_out * groups)
    if kh < 1 or kw < 1:
        raise ValueError(f"{op}: weight of shape {tuple(weight_shape)} has an empty kernel")
    out_h = conv_transpose_output_size(height, kh, stride=sh, padding=ph, output_padding=oph, dilation=dh)
    out_w = conv_transpose_output_size(width, kw, stride=sw, padding=pw, output_padding=opw, dilation=dw)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"{op}: output size {(out_h, out_w)} is not positive (input shape {tuple(input_shape)}, "
            f"kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}, dilation {(dh, dw)})"
        )
    return _Geometry(kh, kw, sh, sw, dh, dw, (ph, ph, pw, pw), out_h, out_w, height, width, groups)


def _itemsize(xp, dtype) -> int:
    return xp.finfo(dtype).bits // 8


# NumPy's im2col copy is memory-bound: columns built in chunks that stay in the CPU cache are read
# back by the matrix product from cache instead of DRAM (measured ~1.3x faster on 56x56 layers).
_NUMPY_CHUNK_BYTES = 4 * 2**20


def _column_bytes(g: _Geometry, channels, dtype, xp) -> int:
    """Bytes of one image's im2col columns (C·kh·kw × oh·ow)."""
    return channels * g.kh * g.kw * g.oh * g.ow * _itemsize(xp, dtype)


def _batch_chunks(per_image_bytes, batch, limit, xp):
    """(start, stop) ranges of the batch whose column buffers fit ``limit`` (one image at least)."""
    if is_numpy(xp):
        limit = min(limit, _NUMPY_CHUNK_BYTES)
    step = max(1, limit // max(per_image_bytes, 1))
    # An empty batch is one empty chunk: every loop then yields its (…, 0, …) result.
    return [(start, min(start + step, batch)) for start in range(0, max(batch, 1), step)]


def _join_batches(parts, xp):
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)


def _conv_cnhw(x_padded, weight, g: _Geometry, stride, dilation, limit, xp, bias=None, out=None, saved=None, offset=0):
    """Convolution of a padded (C, N, Hp, Wp) input with a (K, C/groups, kh, kw) weight, plus
    ``bias`` (K,) when given.

    Returns (K, N, oh, ow), written into ``out`` (NumPy, a (K, N, oh, ow) view) when given and the
    products go per image. The batch is processed in chunks whose column buffer fits ``limit``;
    ``saved`` (:class:`SavedColumns`) keeps each chunk's columns under its image range, counted
    from ``offset``.
    """
    sh, sw = stride
    dh, dw = dilation
    channels, batch = x_padded.shape[:2]
    out_channels, group_channels, kh, kw = weight.shape
    oh, ow, groups = g.oh, g.ow, g.groups
    w = xp.reshape(weight, (groups, out_channels // groups, group_channels * kh * kw))
    chunks = _batch_chunks(_column_bytes(g, channels, x_padded.dtype, xp), batch, limit, xp)
    if _per_image(groups, channels * kh * kw, batch, xp):
        return _conv_per_image(x_padded, w[0, ...], bias, g, stride, dilation, chunks, out, xp, saved, offset)
    outs = []
    for start, stop in chunks:
        size = (stop - start) * oh * ow
        cols = _saved_im2col(x_padded, start, stop, g, stride, dilation, xp, saved, offset, keep=True)
        if groups == 1:
            result = xp.matmul(w[0, ...], cols)
        else:
            result = xp.matmul(w, xp.reshape(cols, (groups, group_channels * kh * kw, size)))
        outs.append(xp.reshape(result, (out_channels, stop - start, oh, ow)))
    return _add_bias(_join_batches(outs, xp), bias, xp)


def _conv_per_image(x_padded, w, bias, g: _Geometry, stride, dilation, chunks, out, xp, saved, offset):
    """NumPy :func:`_conv_cnhw` for few weight columns (see :func:`_per_image`): one product per
    image, written straight into the (N, K, oh, ow) memory of the public result."""
    import numpy as np

    channels, batch = x_padded.shape[:2]
    out_channels, columns = w.shape
    positions = g.oh * g.ow
    if out is None:
        out = _numpy_result((out_channels, batch, g.oh, g.ow), x_padded.dtype, xp)
    images = np.reshape(np.permute_dims(out, (1, 0, 2, 3)), (batch, out_channels, positions))  # a view
    for start, stop in chunks:
        cols = _saved_im2col(x_padded, start, stop, g, stride, dilation, xp, saved, offset, keep=True)
        np.matmul(w, np.permute_dims(np.reshape(cols, (columns, stop - start, positions)), (1, 0, 2)), out=images[start:stop])
    if bias is not None:
        # Along whole images: with the bias broadcast over rows of oh·ow, NumPy's add ran 4× slower.
        flat = np.reshape(images, (batch, out_channels * positions))
        flat += np.repeat(bias, positions)
    return out


class SavedColumns:
    """The im2col column matrices of a forward, by image range, for the weight gradient of the
    same call (a training nn.Conv2d keeps them: one im2col less per step; seed-cnn's second layer,
    backward 6.7 → 5.7 ms in the training step). The previous step's matrices become buffers for
    the next forward's, so no fresh pages are mapped every step; only ``valid``'s are read as data."""

    def __init__(self, previous=None):
        self.valid = {}
        self.spare = {} if previous is None else previous.valid


def _saved_im2col(x_padded, start, stop, g: _Geometry, stride, dilation, xp, saved, offset, *, keep=False):
    """Images ``start:stop`` of ``x_padded`` as im2col columns: ``saved``'s if it holds that
    range (counted from ``offset``); else built, and with ``keep`` stored in ``saved``."""
    key = (offset + start, offset + stop)
    if saved is not None and not keep and key in saved.valid:
        return saved.valid[key]
    keep = keep and saved is not None
    buffer = saved.spare.pop(key, None) if keep else None
    cols = _im2col(x_padded[:, start:stop, ...], g.kh, g.kw, *stride, *dilation, g.oh, g.ow, xp, scratch=not keep, out=buffer)
    if keep:
        saved.valid[key] = cols
    return cols


# Columns are kept (see SavedColumns) when they take at most this many bytes and fit the workspace
# limit.
_SAVED_COLUMNS_MAX_BYTES = 64 * 2**20


def _keep_columns(g: _Geometry, channels, batch, dtype, limit, xp) -> bool:
    size = batch * _column_bytes(g, channels, dtype, xp)
    return is_numpy(xp) and size <= min(_SAVED_COLUMNS_MAX_BYTES, limit)


#: Convolution algorithm: "im2col" (the reference), "winograd" (F(2×2, 3×3) where it applies: 3×3
#: kernels, stride 1, dilation 1, one group) or "auto" (Winograd where it applies and was measured
#: to pay: NumPy, enough channels and tiles).
CONV_ALGORITHM = "auto"

# Winograd's matrix products have C (forward) or K (input gradient) as inner dimension, and its
# flat layout computes one extra tile row and column per image: with fewer channels or tiles than
# these im2col is as fast or faster (measured on NumPy, forward and backward: 28×28 maps with 16 channels
# even, with 32 channels Winograd 10 % faster; 13×13 with 32 channels 1.4× slower; 14×14 with
# 64 even, 7×7 with 256 1.3× slower).
_WINOGRAD_MIN_CHANNELS = 32
_WINOGRAD_MIN_TILES = 100


def _check_setting(name, value, choices):
    if value not in choices:
        raise ValueError(f"portaconv.functional.conv.{name} must be one of {choices}, got {value!r}")


def _use_winograd(g: _Geometry, channels, out_channels, xp) -> bool:
    _check_setting("CONV_ALGORITHM", CONV_ALGORITHM, ("auto", "im2col", "winograd"))
    if (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.groups) != (3, 3, 1, 1, 1, 1, 1) or CONV_ALGORITHM == "im2col":
        return False
    if CONV_ALGORITHM == "winograd":
        return True
    if not is_numpy(xp):
        # Measured on an H100: the generic transforms (many small launches) made CuPy's 3×3 layers
        # 3–8× slower than im2col with the window kernels.
        return False
    th, tw = winograd.tiles(g.oh, g.ow)
    return min(channels, out_channels) >= _WINOGRAD_MIN_CHANNELS and th * tw >= _WINOGRAD_MIN_TILES


def _winograd_chunks(g: _Geometry, channels, out_channels, batch, dtype, limit, xp):
    th, tw = winograd.tiles(g.oh, g.ow)
    per_image = 16 * max(channels, out_channels) * winograd.tiles_per_image(th, tw) * _itemsize(xp, dtype)
    return th, tw, _batch_chunks(per_image, batch, limit, xp)


def _winograd_forward(x_cnhw, weight, g: _Geometry, limit, xp, out=None):
    """conv2d by Winograd F(2×2, 3×3): (C, N, H, W) → (K, N, oh, ow), into ``out`` if given (NumPy)."""
    channels, batch = x_cnhw.shape[:2]
    out_channels = weight.shape[0]
    u = winograd.kernel_transform(weight, xp)
    th, tw, chunks = _winograd_chunks(g, channels, out_channels, batch, x_cnhw.dtype, limit, xp)
    if out is None:
        out = _numpy_result((out_channels, batch, g.oh, g.ow), x_cnhw.dtype, xp)
    outs = []
    for start, stop in chunks:
        v = winograd.input_transform(x_cnhw[:, start:stop, ...], (g.pads[0], g.pads[2]), th, tw, xp)
        target = None if out is None else out[:, start:stop, ...]
        shape = (out_channels, stop - start, g.oh, g.ow)
        outs.append(winograd.output_transform(xp.matmul(u, v), shape, th, tw, xp, target))
    return out if out is not None else _join_batches(outs, xp)


def _winograd_backward(grad_cnhw, x_cnhw, weight, g: _Geometry, limit, xp, *, input_grad=True, weight_grad=True, out=None):
    """Both gradients of the Winograd forward (the adjoints of its transforms), sharing dM.

    ``x_cnhw`` may be None without ``weight_grad``; ``weight`` None without ``input_grad``.
    Returns (grad_input (C, N, H, W) or None, grad_weight (K, C, 3, 3) or None).
    """
    out_channels, batch = grad_cnhw.shape[:2]
    channels = x_cnhw.shape[0] if x_cnhw is not None else weight.shape[1]
    th, tw, chunks = _winograd_chunks(g, channels, out_channels, batch, grad_cnhw.dtype, limit, xp)
    u_t = xp.matrix_transpose(winograd.kernel_transform(weight, xp)) if input_grad else None
    grad_u = xp.zeros((16, out_channels, channels), dtype=grad_cnhw.dtype, device=_device(grad_cnhw))
    if out is None and input_grad:
        out = _numpy_result((channels, batch, g.height, g.width), grad_cnhw.dtype, xp)
    grad_inputs = []
    pads = (g.pads[0], g.pads[2])
    for start, stop in chunks:
        grad_m = winograd.output_transform_adjoint(grad_cnhw[:, start:stop, ...], th, tw, xp)
        if weight_grad:
            v = winograd.input_transform(x_cnhw[:, start:stop, ...], pads, th, tw, xp, zero_extra=True)
            grad_u = grad_u + xp.matmul(grad_m, xp.matrix_transpose(v))
        if input_grad:
            shape = (channels, stop - start, g.height, g.width)
            target = None if out is None else out[:, start:stop, ...]
            grad_inputs.append(winograd.input_transform_adjoint(xp.matmul(u_t, grad_m), shape, pads, th, tw, xp, target))
    grad_input = (out if out is not None else _join_batches(grad_inputs, xp)) if input_grad else None
    return grad_input, winograd.kernel_transform_adjoint(grad_u, xp) if weight_grad else None


def _forward_serial(x_cnhw, weight, bias, g: _Geometry, limit, xp, out=None, saved=None, offset=0):
    """The forward, bias included, on one thread; ``out`` (NumPy), when given, may receive the
    result (the caller copies it there when the returned array is another); ``saved`` and
    ``offset`` as in :func:`_conv_cnhw` (Winograd saves nothing)."""
    if _use_winograd(g, x_cnhw.shape[0], weight.shape[0], xp):
        return _add_bias(_winograd_forward(x_cnhw, weight, g, limit, xp, out), bias, xp)
    x_padded = _padded(x_cnhw, g.pads, xp)
    return _conv_cnhw(x_padded, weight, g, (g.sh, g.sw), (g.dh, g.dw), limit, xp, bias, out, saved, offset)


#: How conv2d's input gradient is computed: "stride0" (the reference: stride0, pad, and a stride-1
#: convolution with the rotated kernel), "col2im" (columns Wᵀ·grad scatter-added back through the
#: forward's windows: no multiplications by inserted zeros), or "auto" (the smaller buffer).
GRAD_INPUT_METHOD = "auto"


def _grad_input_serial(grad_cnhw, weight, g: _Geometry, limit, xp):
    """(K, N, oh, ow) gradient → (C, N, H, W) input gradient."""
    if _use_winograd(g, weight.shape[1], weight.shape[0], xp):
        return _winograd_backward(grad_cnhw, None, weight, g, limit, xp, weight_grad=False)[0]
    method = GRAD_INPUT_METHOD
    _check_setting("GRAD_INPUT_METHOD", method, ("auto", "stride0", "col2im"))
    if method == "auto":
        out_channels, group_channels = weight.shape[:2]
        # Column buffers: stride0 builds K·kh·kw × N·H·W, col2im C·kh·kw × N·oh·ow.
        stride0_size = out_channels * g.height * g.width
        col2im_size = group_channels * g.groups * g.oh * g.ow
        method = "col2im" if col2im_size < stride0_size else "stride0"
    if method == "col2im":
        return _grad_input_col2im(grad_cnhw, weight, g, limit, xp)
    return _grad_input_stride0(grad_cnhw, weight, g, limit, xp)


# Stride-1 input gradients on NumPy scatter-add their columns over the padded frame (see
# window._col2im_frame) when that frame is at most this many times the output: the matrix product
# grows by that factor and the scatter-add runs on long rows (measured per half batch, product
# included: seed-cnn's 13² → 11² layer 3.09 → 2.69 ms, 13² padded 4.01 → 3.38; prototype on a
# 56² padded layer 70 → 46).
_FRAME_MAX_GROWTH = 1.5


def _use_frame(g: _Geometry, channels, batch, xp) -> bool:
    height_padded, width_padded = g.padded
    # Small column matrices keep the one-operation scatter-add (see window._GATHER_MAX_ELEMENTS).
    return (
        is_numpy(xp)
        and (g.sh, g.sw) == (1, 1)
        and height_padded * width_padded <= _FRAME_MAX_GROWTH * g.oh * g.ow
        and channels * g.kh * g.kw * batch * g.oh * g.ow > window._GATHER_MAX_ELEMENTS
    )


def _grad_input_col2im(grad_cnhw, weight, g: _Geometry, limit, xp):
    """dcols = Wᵀ · grad per group, then col2im: the exact adjoint of the forward's im2col."""
    out_channels, group_channels, kh, kw = weight.shape
    groups, oh, ow = g.groups, g.oh, g.ow
    channels, batch = group_channels * groups, grad_cnhw.shape[1]
    w_t = xp.matrix_transpose(xp.reshape(weight, (groups, out_channels // groups, group_channels * kh * kw)))
    height_padded, width_padded = g.padded
    # The frame's columns outside the output are zero only times a finite weight (0·inf = NaN).
    frame = _use_frame(g, channels, batch, xp) and all_finite(weight, xp)
    rows, columns = (height_padded, width_padded) if frame else (oh, ow)
    outs = []
    for start, stop in _batch_chunks(channels * kh * kw * rows * columns * _itemsize(xp, grad_cnhw.dtype), batch, limit, xp):
        grad_part = grad_cnhw[:, start:stop, ...]
        if frame:
            grad_part = _pad(grad_part, (0, height_padded - oh, 0, width_padded - ow), 0, xp)
        grad_matrix = xp.reshape(grad_part, (groups, out_channels // groups, (stop - start) * rows * columns))
        cols = xp.reshape(xp.matmul(w_t, grad_matrix), (channels * kh * kw, (stop - start) * rows * columns))
        shape = (channels, stop - start, height_padded, width_padded)
        if frame:
            outs.append(_pad(_col2im_frame(cols, shape, kh, kw, g.dh, g.dw, xp), tuple(-p for p in g.pads), 0, xp))
        else:
            outs.append(_col2im(cols, shape, kh, kw, g.sh, g.sw, g.dh, g.dw, oh, ow, xp, crop=g.pads))
    return _join_batches(outs, xp)


def _grad_input_stride0(grad_cnhw, weight, g: _Geometry, limit, xp):
    """stride0 + pad + a stride-1 convolution with the 180°-rotated, channel-swapped kernel."""
    low_h, high_h = grad_input_padding(g.height, g.oh, g.kh, stride=g.sh, padding_low=g.pads[0], dilation=g.dh)
    low_w, high_w = grad_input_padding(g.width, g.ow, g.kw, stride=g.sw, padding_low=g.pads[2], dilation=g.dw)
    # stride0: insert s-1 zeros so the backward conv runs at stride 1; the padding lets every input
    # pixel see each kernel tap that read it (negative values crop rows no tap reached).
    grad_padded = _padded(grad_cnhw, (low_h, high_h, low_w, high_w), xp, lhs=(g.sh, g.sw))
    out_channels, group_channels = weight.shape[:2]
    groups = g.groups
    # Per group, the kernel's in/out channels swap: (K, C/g) -> (C, K/g), then rotate by 180°.
    w = xp.reshape(weight, (groups, out_channels // groups, group_channels, g.kh, g.kw))
    w = xp.reshape(xp.permute_dims(w, (0, 2, 1, 3, 4)), (groups * group_channels, out_channels // groups, g.kh, g.kw))
    w = xp.flip(w, axis=(-2, -1))
    g_back = _Geometry(g.kh, g.kw, 1, 1, g.dh, g.dw, (0, 0, 0, 0), 0, 0, g.height, g.width, groups)
    return _conv_cnhw(grad_padded, w, g_back, (1, 1), (g.dh, g.dw), limit, xp)


# With fewer weight columns (C·kh·kw) than this, OpenBLAS's one product over the whole batch runs
# at a fraction of its rate: the weight gradient's (K × N·oh·ow)·(N·oh·ow × C·kh·kw) at a third,
# the forward's (K × C·kh·kw)·(C·kh·kw × N·oh·ow) is bound by writing its output twice (product,
# then the copy into the (N, K, oh, ow) result). One product per image does neither: seed-cnn's
# first conv, 32 × 9 weights over 64 × 26² positions, weight gradient 1.04 → 0.28 ms, forward
# 0.58 → 0.28 ms. At 147–576 columns both ways run at the same speed.
_PER_IMAGE_MAX_COLUMNS = 32


def _per_image(groups, columns, batch, xp) -> bool:
    return is_numpy(xp) and groups == 1 and columns < _PER_IMAGE_MAX_COLUMNS and batch > 1


def _grad_weight_serial(grad_cnhw, x_cnhw, g: _Geometry, limit, xp, saved=None, offset=0):
    """(K, N, oh, ow) gradient and (C, N, H, W) input → (K, C/groups, kh, kw) weight gradient.

    grad_weight[k, c, i, j] = sum_{n,a,b} grad[k, n, a, b] x_padded[c, n, a*sh + i*dh, b*sw + j*dw]:
    the convolution of the input (batch as channels) with the stride0'd gradient as its kernel.
    Its windows are the forward's im2col columns, so it is one matrix product with their transpose
    (taken from ``saved``, the forward's, where it holds them: images counted from ``offset``).
    """
    out_channels, batch = grad_cnhw.shape[:2]
    channels = x_cnhw.shape[0]
    if _use_winograd(g, channels, out_channels, xp):
        return _winograd_backward(grad_cnhw, x_cnhw, None, g, limit, xp, input_grad=False)[1]
    groups, kh, kw, oh, ow = g.groups, g.kh, g.kw, g.oh, g.ow
    group_channels = channels // groups
    x_padded = _padded(x_cnhw, g.pads, xp)
    per_image = _per_image(groups, channels * kh * kw, batch, xp)
    if not per_image:
        grad_matrix = xp.reshape(grad_cnhw, (groups, out_channels // groups, batch * oh * ow))
    # Summed as its transpose, cols · gradᵀ: OpenBLAS ran that 1.1–1.3× faster than grad · colsᵀ on
    # every conv benchmarked (the same long inner dimension, N·oh·ow).
    total_t = xp.zeros((groups, group_channels * kh * kw, out_channels // groups), dtype=x_cnhw.dtype, device=_device(x_cnhw))
    for start, stop in _batch_chunks(_column_bytes(g, channels, x_cnhw.dtype, xp), batch, limit, xp):
        cols = _saved_im2col(x_padded, start, stop, g, (g.sh, g.sw), (g.dh, g.dw), xp, saved, offset)
        if per_image:
            # Σ_n grad[n] (K, oh·ow) @ cols[n]ᵀ (oh·ow, C·kh·kw), on strided views (no copies).
            grad_images = xp.reshape(xp.permute_dims(grad_cnhw[:, start:stop, ...], (1, 0, 2, 3)), (stop - start, out_channels, oh * ow))
            cols_images = xp.permute_dims(xp.reshape(cols, (channels * kh * kw, stop - start, oh * ow)), (1, 2, 0))
            part = xp.matrix_transpose(xp.sum(xp.matmul(grad_images, cols_images), axis=0))
        else:
            cols = xp.reshape(cols, (groups, group_channels * kh * kw, (stop - start) * oh * ow))
            part = xp.matmul(cols, xp.matrix_transpose(grad_matrix[..., start * oh * ow : stop * oh * ow]))
        total_t = total_t + part
    return xp.reshape(xp.matrix_transpose(total_t), (out_channels, group_channels, kh, kw))


def _work(g: _Geometry, weight_shape) -> int:
    """Multiply-adds of one pass (forward, or either gradient)."""
    out_channels, group_channels = weight_shape[:2]
    return g.oh * g.ow * out_channels * group_channels * g.kh * g.kw


def _numpy_result(shape, dtype, xp):
    """NumPy: a whole (A, N, H, W) result laid out as (N, A, H, W) in memory (the public layout),
    for batch parts to write into; other backends (None) join their parts instead."""
    if not is_numpy(xp):
        return None
    return xp.permute_dims(xp.empty((shape[1], shape[0], *shape[2:]), dtype=dtype), (1, 0, 2, 3))


def _in_parts(run, batch, g: _Geometry, weight_shape, limit, xp, out_shape=None, dtype=None):
    """``run(start, stop, limit, out)`` over the batch: whole, or (NumPy, where it pays) split
    across portaconv's threads, each part with an equal share of the workspace limit.

    ``run`` returns (its (A, n, H, W) result, written into ``out`` when it can, or None; its weight
    gradient or None). Returns (the (A, N, H, W) result of shape ``out_shape``, the weight
    gradients summed over the parts).
    """
    ranges = _threads.batch_ranges(batch, batch * _work(g, weight_shape)) if is_numpy(xp) and batch > 1 else None
    if ranges is None:
        return run(0, batch, limit, None)
    limit = max(1, limit // len(ranges))
    out = None if out_shape is None else _numpy_result(out_shape, dtype, xp)

    def part(start, stop):
        target = None if out is None else out[:, start:stop, ...]
        result, grad_weight = run(start, stop, limit, target)
        if target is not None and result is not target:
            target[...] = result
        return grad_weight

    parts = _threads.map_ranges(part, ranges)
    return out, None if parts[0] is None else sum(parts[1:], parts[0])


def _forward_cnhw(x_cnhw, weight, g: _Geometry, limit, xp, bias=None, saved=None):
    """(C, N, H, W) → (K, N, oh, ow) plus ``bias``, the batch split across threads where that pays;
    ``saved`` (:class:`SavedColumns`) receives the column matrices by image range."""
    batch = x_cnhw.shape[1]

    def run(start, stop, limit, out):
        return _forward_serial(x_cnhw[:, start:stop, ...], weight, bias, g, limit, xp, out, saved, start), None

    return _in_parts(run, batch, g, weight.shape, limit, xp, (weight.shape[0], batch, g.oh, g.ow), x_cnhw.dtype)[0]


def _grad_input_cnhw(grad_cnhw, weight, g: _Geometry, limit, xp):
    """(K, N, oh, ow) gradient → (C, N, H, W) input gradient, split like :func:`_forward_cnhw`."""
    batch = grad_cnhw.shape[1]

    def run(start, stop, limit, out):
        return _grad_input_serial(grad_cnhw[:, start:stop, ...], weight, g, limit, xp), None

    shape = (weight.shape[1] * g.groups, batch, g.height, g.width)
    return _in_parts(run, batch, g, weight.shape, limit, xp, shape, grad_cnhw.dtype)[0]


def _grad_weight_cnhw(grad_cnhw, x_cnhw, g: _Geometry, limit, xp, saved=None):
    """Weight gradient, the batch split like :func:`_forward_cnhw` and the parts summed."""
    out_channels, batch = grad_cnhw.shape[:2]

    def run(start, stop, limit, out):
        part = grad_cnhw[:, start:stop, ...], x_cnhw[:, start:stop, ...]
        return None, _grad_weight_serial(*part, g, limit, xp, saved, start)

    weight_shape = (out_channels, x_cnhw.shape[0] // g.groups, g.kh, g.kw)
    return _in_parts(run, batch, g, weight_shape, limit, xp)[1]


def _gradients(grad_cnhw, x_cnhw, weight, g: _Geometry, limit, xp, saved=None):
    """Both gradients, one batch split for the two (each part's gradient is read by both)."""
    channels, batch = x_cnhw.shape[:2]

    def run(start, stop, limit, out):
        grad, x = grad_cnhw[:, start:stop, ...], x_cnhw[:, start:stop, ...]
        if _use_winograd(g, channels, weight.shape[0], xp):
            return _winograd_backward(grad, x, weight, g, limit, xp, out=out)
        grad = xp.reshape(xp.reshape(grad, (grad.shape[0], math.prod(grad.shape[1:]))), grad.shape)  # compact
        return _grad_input_serial(grad, weight, g, limit, xp), _grad_weight_serial(grad, x, g, limit, xp, saved, start)

    return _in_parts(run, batch, g, weight.shape, limit, xp, (channels, batch, g.height, g.width), x_cnhw.dtype)


def _to_cnhw(x, xp):
    return xp.permute_dims(x, (1, 0, 2, 3))


def _add_bias(out_knhw, bias, xp):
    if bias is None:
        return out_knhw
    return _add_at(out_knhw, (...,), xp.reshape(bias, (-1, 1, 1, 1)), xp)


# From this many gradient elements the bias gradient is a product with ones (seed-cnn's first
# layer, 64×32×26²: 0.25 → 0.08 ms on NumPy); below, the plain sum has less overhead (seed 002's
# 6×26²: 3 µs against 7).
_BIAS_PRODUCT_MIN_ELEMENTS = 65536


def _bias_grad(grad_output, bias, xp):
    """Sum of the (N, K, oh, ow) or unbatched (K, oh, ow) gradient over all but K, or None without
    a bias; for large gradients per image a product with ones, then a sum over the images."""
    if bias is None:
        return None
    if math.prod(grad_output.shape) < _BIAS_PRODUCT_MIN_ELEMENTS:
        return xp.sum(grad_output, axis=(0, 2, 3) if grad_output.ndim == 4 else (1, 2))
    channels, height, width = grad_output.shape[-3:]
    ones = xp.ones((height * width,), dtype=grad_output.dtype, device=_device(grad_output))
    return xp.sum(xp.matmul(xp.reshape(grad_output, (-1, channels, height * width)), ones), axis=0)


def _prepare(op, input, weight, bias, xp, grad_output=None):
    """Validate ndim/dtypes/device; add a batch axis to unbatched (C, H, W) arrays."""
    check_ndim(op, "weight", weight, (4,), "(out_channels, in_channels/groups, kh, kw)")
    if bias is not None:
        check_ndim(op, "bias", bias, (1,), "(channels,)")
    return batched(op, input, xp, grad_output, weight=weight, bias=bias)


def _check_bias(op, bias, channels):
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"{op}: bias must have shape ({channels},), got {tuple(bias.shape)}")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, workspace_limit=None):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    input : array
    weight : array
    bias : array, optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), "valid" or "same"
        Zero padding on both sides; "same" (stride 1 only) puts an odd extra pixel at the end.
    groups : int
        Input and output channels split into ``groups`` independent convolutions.
    workspace_limit : int, optional, keyword-only
        Bytes of im2col buffer; the batch is processed in chunks under it (default: global setting).

    Shapes
    ------
    input : (N, C, H, W) or unbatched (C, H, W)
    weight : (K, C / groups, kh, kw)
    bias : (K,)
    output : (N, K, oh, ow), ``oh = floor((H + 2 ph - dh (kh - 1) - 1) / sh) + 1``

    Returns
    -------
    array
        In the namespace, dtype and device of ``input``.
    """
    return _conv2d(input, weight, bias, stride, padding, dilation, groups, workspace_limit)


@_threads.single_threaded_blas
def _conv2d(input, weight, bias, stride, padding, dilation, groups, workspace_limit, saved=None):
    """:func:`conv2d`; ``saved`` (:class:`SavedColumns`) receives the forward's column matrices
    for :func:`_conv2d_backward` where :func:`_keep_columns` allows (nn.Conv2d's training path)."""
    xp = namespace_of(input, weight, bias)
    x, _, unbatched = _prepare("conv2d", input, weight, bias, xp)
    g = _conv_geometry("conv2d", x.shape, weight.shape, stride, padding, dilation, groups)
    _check_bias("conv2d", bias, weight.shape[0])
    limit = _resolve_limit(workspace_limit)
    if saved is not None and not _keep_columns(g, x.shape[1], x.shape[0], x.dtype, limit, xp):
        saved = None
    out = _forward_cnhw(_to_cnhw(x, xp), weight, g, limit, xp, bias, saved)
    return unbatch(_to_cnhw(out, xp), unbatched)


def _conv2d_backward_checked(op, grad_output, input, weight, bias, stride, padding, dilation, groups, xp):
    x, grad, unbatched = _prepare(op, input, weight, bias, xp, grad_output)
    g = _conv_geometry(op, x.shape, weight.shape, stride, padding, dilation, groups)
    _check_bias(op, bias, weight.shape[0])
    check_shape(op, "grad_output", grad, (x.shape[0], weight.shape[0], g.oh, g.ow))
    return x, grad, unbatched, g


def conv2d_backward(
    grad_output, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, workspace_limit=None
):
    """Gradients of :func:`conv2d` with respect to input, weight and bias.

    grad_input is the stride-1 convolution of the zero-padded stride0 gradient with the 180°-rotated
    kernel (channels swapped per group); grad_weight the convolution of the input with the stride0
    gradient (batch and channel axes swapped); grad_bias the sum over N, H, W.

    Parameters
    ----------
    grad_output : array
        Gradient of the loss with respect to ``conv2d(input, weight, bias, ...)``.
    input, weight, bias, stride, padding, dilation, groups, workspace_limit
        As passed to :func:`conv2d`.

    Shapes
    ------
    grad_output : (N, K, oh, ow)
    returns : ((N, C, H, W), (K, C / groups, kh, kw), (K,) or None)
    """
    return _conv2d_backward(grad_output, input, weight, bias, stride, padding, dilation, groups, workspace_limit)


@_threads.single_threaded_blas
def _conv2d_backward(
    grad_output, input, weight, bias, stride, padding, dilation, groups, workspace_limit, *, input_grad=True, saved=None
):
    """:func:`conv2d_backward`; without ``input_grad`` the input gradient is None (a first layer's);
    ``saved``: the forward's column matrices (see :func:`_conv2d`)."""
    xp = namespace_of(grad_output, input, weight, bias)
    x, grad, unbatched, g = _conv2d_backward_checked(
        "conv2d_backward", grad_output, input, weight, bias, stride, padding, dilation, groups, xp
    )
    limit = _resolve_limit(workspace_limit)
    if not input_grad:
        grad_weight = _grad_weight_cnhw(_to_cnhw(grad, xp), _to_cnhw(x, xp), g, limit, xp, saved)
        return None, grad_weight, _bias_grad(grad, bias, xp)
    grad_input, grad_weight = _gradients(_to_cnhw(grad, xp), _to_cnhw(x, xp), weight, g, limit, xp, saved)
    return unbatch(_to_cnhw(grad_input, xp), unbatched), grad_weight, _bias_grad(grad, bias, xp)


@_threads.single_threaded_blas
def conv2d_grad_input(
    grad_output, weight, *, input_shape, stride=1, padding=0, dilation=1, groups=1, workspace_limit=None, xp=None
):
    """Gradient of :func:`conv2d` with respect to its input (``torch.nn.grad.conv2d_input``).

    Shapes
    ------
    grad_output : (N, K, oh, ow)
    weight : (K, C / groups, kh, kw)
    input_shape : (N, C, H, W)
    returns : (N, C, H, W)
    """
    xp = namespace_of(grad_output, weight) if xp is None else xp
    op = "conv2d_grad_input"
    check_ndim(op, "grad_output", grad_output, (4,), "(N, K, oh, ow)")
    check_ndim(op, "weight", weight, (4,), "(K, C/groups, kh, kw)")
    check_float_arrays(op, xp, grad_output=grad_output, weight=weight)
    if len(input_shape) != 4:
        raise ValueError(f"{op}: input_shape must be (N, C, H, W), got {input_shape!r}")
    g = _conv_geometry(op, tuple(input_shape), weight.shape, stride, padding, dilation, groups)
    check_shape(op, "grad_output", grad_output, (input_shape[0], weight.shape[0], g.oh, g.ow))
    out = _grad_input_cnhw(_to_cnhw(grad_output, xp), weight, g, _resolve_limit(workspace_limit), xp)
    return _to_cnhw(out, xp)


@_threads.single_threaded_blas
def conv2d_grad_weight(
    grad_output, input, *, weight_shape, stride=1, padding=0, dilation=1, groups=1, workspace_limit=None, xp=None
):
    """Gradient of :func:`conv2d` with respect to its weight (``torch.nn.grad.conv2d_weight``).

    Shapes
    ------
    grad_output : (N, K, oh, ow)
    input : (N, C, H, W)
    weight_shape : (K, C / groups, kh, kw)
    returns : (K, C / groups, kh, kw)
    """
    xp = namespace_of(grad_output, input) if xp is None else xp
    op = "conv2d_grad_weight"
    check_ndim(op, "grad_output", grad_output, (4,), "(N, K, oh, ow)")
    check_ndim(op, "input", input, (4,), "(N, C, H, W)")
    check_float_arrays(op, xp, grad_output=grad_output, input=input)
    if len(weight_shape) != 4:
        raise ValueError(f"{op}: weight_shape must be (K, C/groups, kh, kw), got {weight_shape!r}")
    g = _conv_geometry(op, input.shape, tuple(weight_shape), stride, padding, dilation, groups)
    check_shape(op, "grad_output", grad_output, (input.shape[0], weight_shape[0], g.oh, g.ow))
    limit = _resolve_limit(workspace_limit)
    return _grad_weight_cnhw(_to_cnhw(grad_output, xp), _to_cnhw(input, xp), g, limit, xp)


@_threads.single_threaded_blas
def conv_transpose2d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, workspace_limit=None
):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    It is the input gradient of ``conv2d(·, weight, stride, padding, dilation, groups)`` evaluated
    at ``input``: stride0, pad, and a stride-1 convolution with the rotated kernel.

    Parameters
    ----------
    input, weight, bias : array
    stride, padding, dilation : int or (int, int)
    output_padding : int or (int, int)
        Extra rows/columns at the bottom/right; smaller than stride or dilation.
    groups : int
    workspace_limit : int, optional, keyword-only

    Shapes
    ------
    input : (N, C_in, H, W) or unbatched (C_in, H, W)
    weight : (C_in, C_out / groups, kh, kw)
    bias : (C_out,)
    output : (N, C_out, oh, ow), ``oh = (H - 1) sh - 2 ph + dh (kh - 1) + output_padding + 1``
    """
    xp = namespace_of(input, weight, bias)
    op = "conv_transpose2d"
    x, _, unbatched = _prepare(op, input, weight, bias, xp)
    g = _transpose_geometry(op, x.shape, weight.shape, stride, padding, output_padding, dilation, groups)
    _check_bias(op, bias, weight.shape[1] * groups)
    out = _grad_input_cnhw(_to_cnhw(x, xp), weight, g, _resolve_limit(workspace_limit), xp)
    out = _add_bias(out, bias, xp)
    return unbatch(_to_cnhw(out, xp), unbatched)


@_threads.single_threaded_blas
def conv_transpose2d_backward(
    grad_output,
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
    *,
    workspace_limit=None,
):
    """Gradients of :func:`conv_transpose2d` with respect to input, weight and bias.

    grad_input is ``conv2d(grad_output, weight, ...)`` (the forward convolution); grad_weight is
    conv2d's weight gradient with ``grad_output`` as the input and ``input`` as the gradient.

    Shapes
    ------
    grad_output : (N, C_out, oh, ow)
    returns : ((N, C_in, H, W), (C_in, C_out / groups, kh, kw), (C_out,) or None)
    """
    xp = namespace_of(grad_output, input, weight, bias)
    op = "conv_transpose2d_backward"
    x, grad, unbatched = _prepare(op, input, weight, bias, xp, grad_output)
    g = _transpose_geometry(op, x.shape, weight.shape, stride, padding, output_padding, dilation, groups)
    _check_bias(op, bias, weight.shape[1] * groups)
    check_shape(op, "grad_output", grad, (x.shape[0], weight.shape[1] * groups, g.height, g.width))
    limit = _resolve_limit(workspace_limit)
    grad_cnhw = _to_cnhw(grad, xp)
    grad_input = _to_cnhw(_forward_cnhw(grad_cnhw, weight, g, limit, xp), xp)
    grad_weight = _grad_weight_cnhw(_to_cnhw(x, xp), grad_cnhw, g, limit, xp)
    return unbatch(grad_input, unbatched), grad_weight, _bias_grad(grad, bias, xp)
