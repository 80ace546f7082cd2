"""conv2d and conv_transpose2d, forward and backward, on the im2col / col2im primitives.

A convolution's output is ``weight (K, C·kh·kw) @ im2col(input) (C·kh·kw, N·oh·ow)`` per group.
The backward follows from it (seed 003's derivation, JAX's lax.conv_general_dilated in spirit):

* grad_weight = ``grad_matrix (K, N·oh·ow) @ im2col(input)ᵀ``: the convolution of the input with
  the stride0'd gradient as its kernel, whose windows are exactly the forward's columns;
* grad_input  = ``col2im(weightᵀ @ grad_matrix)``, the exact adjoint of the forward's im2col
  (``grad_input="col2im"``), or equally the stride-1 convolution of the stride0'd (zero-dilated),
  padded gradient with the 180°-rotated kernel, in/out channels swapped per group
  (``grad_input="stride0"``: im2col with input dilation, one more call to the same primitive);
* grad_bias   = the sum of grad_output over N, oh, ow.

conv_transpose2d's forward *is* conv2d's grad_input; its backward is conv2d's forward (grad_input)
and conv2d's grad_weight with the roles of input and gradient exchanged.

Winograd F(2×2, 3×3) (``_winograd``) computes the same linear maps for 3×3 stride-1 convolutions
where :func:`portaconv.primitives.dispatch.conv_algorithm` picks it. Memory: every column buffer
stays under ``workspace_limit`` by tiling the batch, then the output rows, then the kernel rows
(:func:`portaconv.primitives.dispatch.conv_tiles`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .. import primitives as P
from .._options import get_options
from ..autograd.graph import differentiable
from .._backend import namespace_of
from .._shapes import _is_int, _pair, _padding4, conv_output_size, conv_transpose_output_size
from .._validate import cached_geometry, check_float_arrays, check_ndim, check_shape
from ..primitives import dispatch
from ..primitives.window import Window
from . import _winograd as winograd
from ._common import batched, bytes_per_element, unbatch

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
    """A convolution's pure-int description: its window over an (H, W) input, and the groups."""

    window: Window
    height: int
    width: int
    groups: int


def _check_groups(op, groups, in_channels, out_channels):
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide both the input channels ({in_channels}) "
            f"and the output channels ({out_channels})"
        )


@cached_geometry(shapes=2)
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
    return _Geometry(Window(kh, kw, sh, sw, dh, dw, pads[0], pads[2], oh, ow), height, width, groups)


@cached_geometry(shapes=2)
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
    # The conv whose input gradient this is maps (out_h, out_w) to the input's (H, W).
    return _Geometry(Window(kh, kw, sh, sw, dh, dw, ph, pw, height, width), out_h, out_w, groups)


def _tiles(batch, channels, window: Window, itemsize):
    """(n0, n1, r0, r1, kernel-row blocks) covering the batch and the output rows, each column
    buffer under the workspace limit (see :func:`~portaconv.primitives.dispatch.conv_tiles`);
    memoized per geometry and limit (a training step asks for the same tiles every time)."""
    return _tile_list(batch, channels, window, itemsize, get_options().workspace_limit)


@functools.lru_cache(maxsize=1024)
def _tile_list(batch, channels, window: Window, itemsize, workspace_limit):
    images, rows, kernel_rows = dispatch.conv_tiles(batch, channels, window, itemsize)  # (reads workspace_limit)
    blocks = tuple((i0, min(window.kh, i0 + kernel_rows)) for i0 in range(0, window.kh, kernel_rows))
    return tuple(
        (n0, min(batch, n0 + images), r0, min(window.oh, r0 + rows), blocks)
        for n0 in range(0, max(batch, 1), images)  # an empty batch is one empty tile
        for r0 in range(0, window.oh, rows)
    )


def _kernel_rows(weight, i0, i1):
    return weight if (i0, i1) == (0, weight.shape[2]) else weight[:, :, i0:i1, :]


def _join(parts, axis, xp):
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=axis)


def _accumulate(total, term):
    return term if total is None else total + term


def _im2col_conv(x, weight, bias, window: Window, groups, xp, *, keep=None):
    """(N, C, H, W) → (N, K, oh, ow): per tile, the im2col convolution of its images and output
    rows (kernel-row blocks summed, then the bias), joined.

    ``keep`` (a dict): when the whole convolution is one tile, its column matrix is stored there
    under the tile's key, for the weight gradient (autograd keeps it in the graph node), if the
    implementation built one."""
    batch, channels = x.shape[:2]
    tiles = _tiles(batch, channels, window, bytes_per_element(x.dtype, xp))
    if len(tiles) == 1 and len(tiles[0][4]) == 1:  # one buffer: the whole convolution in one call
        (n0, n1, r0, r1, ((i0, i1),)), = tiles
        out, cols = P.conv_im2col(x, weight, bias, window, groups, xp, keep=keep is not None)
        if cols is not None:
            keep[(n0, n1, r0, r1, i0, i1)] = cols
        return out
    batches = {}
    for n0, n1, r0, r1, blocks in tiles:
        images, rows_window = x[n0:n1, ...], window.output_rows(r0, r1)
        whole = len(blocks) == 1
        out = None
        for i0, i1 in blocks:
            term, cols = P.conv_im2col(
                images, _kernel_rows(weight, i0, i1), bias if whole else None, rows_window.kernel_rows(i0, i1), groups, xp,
                keep=keep is not None and len(tiles) == 1 and whole,
            )
            if cols is not None:
                keep[(n0, n1, r0, r1, i0, i1)] = cols  # one buffer, under the workspace limit
            del cols  # one column buffer alive at a time: the workspace bound
            out = _accumulate(out, term)
            del term
        batches.setdefault(n0, []).append(out if whole else _add_bias(out, bias, xp))
    return _join([_join(rows, 2, xp) for rows in batches.values()], 0, xp)


def _im2col_gradients(grad, x, weight, window: Window, groups, xp, *, input_grad, weight_grad, shape=None, columns=None):
    """conv2d's input gradient (by col2im) and weight gradient, tile by tile; ``x`` may be None
    without ``weight_grad`` and ``weight`` None without ``input_grad`` (then ``shape`` gives the
    input's (N, C, H, W) and the weight's shape comes from ``weight``). ``columns``: im2col(x)
    matrices the forward kept, by tile key; a tile found there is not computed again."""
    batch, channels, height, width = x.shape if x is not None else shape[:4]
    tiles = _tiles(batch, channels, window, bytes_per_element(grad.dtype, xp))
    if len(tiles) == 1 and len(tiles[0][4]) == 1:  # one buffer: both gradients in one call
        (n0, n1, r0, r1, ((i0, i1),)), = tiles
        cols = (columns or {}).pop((n0, n1, r0, r1, i0, i1), None) if weight_grad else None
        return P.conv_im2col_backward(grad, x, weight, window, groups, (batch, channels, height, width), xp,
                                      input_grad=input_grad, weight_grad=weight_grad, columns=cols)
    weight_blocks, input_batches = {}, {}
    for n0, n1, r0, r1, blocks in tiles:
        grad_tile = grad[n0:n1, :, r0:r1, :]
        rows_window = window.output_rows(r0, r1)
        for i0, i1 in blocks:
            cols = (columns or {}).pop((n0, n1, r0, r1, i0, i1), None) if weight_grad else None
            part, weight_part = P.conv_im2col_backward(
                grad_tile, None if x is None else x[n0:n1, ...], None if weight is None else _kernel_rows(weight, i0, i1),
                rows_window.kernel_rows(i0, i1), groups, (n1 - n0, channels, height, width), xp,
                input_grad=input_grad, weight_grad=weight_grad, columns=cols,
            )
            del cols  # one column buffer alive at a time: the workspace bound
            if weight_grad:
                weight_blocks[i0] = _accumulate(weight_blocks.get(i0), weight_part)
            if input_grad:
                input_batches[n0] = _accumulate(input_batches.get(n0), part)
            del part, weight_part
    grad_input = _join(list(input_batches.values()), 0, xp) if input_grad else None
    grad_weight = _join(list(weight_blocks.values()), 2, xp) if weight_grad else None
    return grad_input, grad_weight


def _stride0_grad_input(grad, weight, window: Window, groups, height, width, xp):
    """conv2d's input gradient as a stride-1 convolution of the gradient dilated by the stride
    (stride0) and padded, with the kernel rotated by 180° and in/out channels swapped per group.

    Input row y read tap i of output a where ``y = a·sh + i·dh − top``; with ``i' = kh − 1 − i``
    that is the virtual row ``a·sh = y + i'·dh − ((kh − 1)·dh − top)`` of the stride0'd gradient:
    a window of top ``(kh − 1)·dh − top``, stride 1, input dilation sh (the same for columns)."""
    out_channels, group_channels, kh, kw = weight.shape
    w = xp.reshape(weight, (groups, out_channels // groups, group_channels, kh, kw))
    w = xp.reshape(xp.permute_dims(w, (0, 2, 1, 3, 4)), (groups * group_channels, out_channels // groups, kh, kw))
    w = xp.flip(w, axis=(-2, -1))
    back = Window(
        kh, kw, 1, 1, window.dh, window.dw,
        (kh - 1) * window.dh - window.top, (kw - 1) * window.dw - window.left,
        height, width, window.sh, window.sw,
    )
    return _im2col_conv(grad, w, None, back, groups, xp)


def _forward(x, weight, bias, g: _Geometry, xp, *, keep=None):
    """(N, C, H, W) → (N, K, oh, ow) by the algorithm the options pick (``keep``: see
    :func:`_im2col_conv`)."""
    algorithm = dispatch.conv_algorithm(g.window, g.groups)
    if algorithm == "winograd":
        return winograd.forward(x, weight, bias, g.window, xp)
    return _im2col_conv(x, weight, bias, g.window, g.groups, xp, keep=keep)


def _gradients(grad, x, weight, g: _Geometry, xp, *, input_grad=True, weight_grad=True, shape=None, columns=None):
    """(grad_input or None, grad_weight or None) of conv2d at ``x`` (None without ``weight_grad``;
    then ``shape`` = (N, C, H, W, K, C/groups, kh, kw))."""
    height, width = x.shape[2:] if x is not None else shape[2:4]
    if dispatch.conv_algorithm(g.window, g.groups) == "winograd":
        return winograd.backward(grad, x, weight, g.window, xp, input_grad=input_grad, weight_grad=weight_grad, shape=shape)
    stride0 = input_grad and dispatch.grad_input_method() == "stride0"
    grad_input, grad_weight = _im2col_gradients(
        grad, x, weight, g.window, g.groups, xp, input_grad=input_grad and not stride0, weight_grad=weight_grad, shape=shape,
        columns=columns,
    )
    if stride0:
        grad_input = _stride0_grad_input(grad, weight, g.window, g.groups, height, width, xp)
    return grad_input, grad_weight


def _bias_grad(grad_output, bias, xp):
    """Sum of the (N, K, oh, ow) or unbatched (K, oh, ow) gradient over all but K; None without a bias."""
    if bias is None:
        return None
    return P.channel_sum(grad_output if grad_output.ndim == 4 else grad_output[None, ...], xp)


def _add_bias(out, bias, xp):
    return out if bias is None else out + xp.reshape(bias, (1, -1, 1, 1))


def _prepare(op, input, weight, bias, xp, grad_output=None):
    """Validate ndim/dtypes/device; add a batch axis to unbatched (C, H, W) arrays."""
    check_ndim(op, "weight", weight, (4,), "(out_channels, in_channels/groups, kh, kw)")
    if bias is not None:
        check_ndim(op, "bias", bias, (1,), "(channels,)")
    return batched(op, input, xp, grad_output, weight=weight, bias=bias)


def _check_bias(op, bias, channels):
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"{op}: bias must have shape ({channels},), got {tuple(bias.shape)}")


@differentiable("input", "weight", "bias")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
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

    Examples
    --------
    >>> import numpy as np, portaconv.functional as F
    >>> x = np.ones((1, 1, 4, 4)); w = np.ones((1, 1, 3, 3))
    >>> F.conv2d(x, w, padding=1)[0, 0]
    array([[4., 6., 6., 4.],
           [6., 9., 9., 6.],
           [6., 9., 9., 6.],
           [4., 6., 6., 4.]])
    """
    return _conv2d(input, weight, bias, stride, padding, dilation, groups)


def _conv2d(input, weight, bias, stride, padding, dilation, groups, *, keep=None):
    xp = namespace_of(input, weight, bias)
    x, _, unbatched = _prepare("conv2d", input, weight, bias, xp)
    g = _conv_geometry("conv2d", x.shape, weight.shape, stride, padding, dilation, groups)
    _check_bias("conv2d", bias, weight.shape[0])
    return unbatch(_forward(x, weight, bias, g, xp, keep=keep), unbatched)


@conv2d.defbackward
def conv2d_backward(grad_output, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of :func:`conv2d` with respect to input, weight and bias.

    grad_input is ``col2im(weightᵀ · grad)`` (equivalently the stride-1 convolution of the
    zero-padded stride0 gradient with the 180°-rotated kernel, channels swapped per group);
    grad_weight the convolution of the input with the stride0 gradient (batch and channel axes
    swapped), i.e. ``grad · im2col(input)ᵀ``; grad_bias the sum over N, H, W.

    Parameters
    ----------
    grad_output : array
        Gradient of the loss with respect to ``conv2d(input, weight, bias, ...)``.
    input, weight, bias, stride, padding, dilation, groups
        As passed to :func:`conv2d`.

    Shapes
    ------
    grad_output : (N, K, oh, ow)
    returns : ((N, C, H, W), (K, C / groups, kh, kw), (K,) or None)
    """
    return _conv2d_backward(grad_output, input, weight, bias, stride, padding, dilation, groups)


def _conv2d_backward(grad_output, input, weight, bias, stride, padding, dilation, groups, *, input_grad=True, weight_grad=True,
                     columns=None):
    """:func:`conv2d_backward`; without ``input_grad`` (``weight_grad``) that gradient is None and
    not computed: a first layer's input gradient, a frozen weight's. ``columns``: the forward's
    kept im2col matrices (see :func:`_im2col_conv`)."""
    xp = namespace_of(grad_output, input, weight, bias)
    op = "conv2d_backward"
    x, grad, unbatched = _prepare(op, input, weight, bias, xp, grad_output)
    g = _conv_geometry(op, x.shape, weight.shape, stride, padding, dilation, groups)
    _check_bias(op, bias, weight.shape[0])
    check_shape(op, "grad_output", grad, (x.shape[0], weight.shape[0], g.window.oh, g.window.ow))
    grad_input, grad_weight = _gradients(grad, x, weight, g, xp, input_grad=input_grad, weight_grad=weight_grad, columns=columns)
    return (None if grad_input is None else unbatch(grad_input, unbatched)), grad_weight, _bias_grad(grad, bias, xp)


def _conv2d_vjp_forward(needs, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    # Training keeps the forward's column matrix (when it is one buffer under the workspace
    # limit) for the weight gradient, instead of running im2col on the input again; nothing for
    # a frozen weight.
    columns = {} if needs[1] else None
    out = _conv2d(input, weight, bias, stride, padding, dilation, groups, keep=columns)
    return out, ((input, weight, bias, stride, padding, dilation, groups), columns)


def _conv2d_vjp_backward(residuals, grad_output, needs):
    # The graph asks only for the gradients its inputs need: no col2im for a first layer's input.
    arguments, columns = residuals
    input_grad, weight_grad, bias_grad = needs
    grad_input, grad_weight, grad_bias = _conv2d_backward(
        grad_output, *arguments, input_grad=input_grad, weight_grad=weight_grad, columns=columns if weight_grad else None
    )
    return grad_input, grad_weight, (grad_bias if bias_grad else None)


conv2d.defvjp(_conv2d_vjp_forward, _conv2d_vjp_backward)


def conv2d_grad_input(grad_output, weight, *, input_shape, stride=1, padding=0, dilation=1, groups=1, xp=None):
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
    input_shape = tuple(int(s) for s in input_shape)
    g = _conv_geometry(op, input_shape, weight.shape, stride, padding, dilation, groups)
    check_shape(op, "grad_output", grad_output, (input_shape[0], weight.shape[0], g.window.oh, g.window.ow))
    return _gradients(grad_output, None, weight, g, xp, weight_grad=False, shape=(*input_shape, *weight.shape))[0]


def conv2d_grad_weight(grad_output, input, *, weight_shape, stride=1, padding=0, dilation=1, groups=1, xp=None):
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
    weight_shape = tuple(int(s) for s in weight_shape)
    g = _conv_geometry(op, input.shape, weight_shape, stride, padding, dilation, groups)
    check_shape(op, "grad_output", grad_output, (input.shape[0], weight_shape[0], g.window.oh, g.window.ow))
    return _gradients(grad_output, input, None, g, xp, input_grad=False, shape=(*input.shape, *weight_shape))[1]


@differentiable("input", "weight", "bias")
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
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
    out_channels = weight.shape[1] * groups
    _check_bias(op, bias, out_channels)
    shape = (x.shape[0], out_channels, g.height, g.width, *weight.shape)
    out = _gradients(x, None, weight, g, xp, weight_grad=False, shape=shape)[0]
    return unbatch(_add_bias(out, bias, xp), unbatched)


@conv_transpose2d.defbackward
def conv_transpose2d_backward(grad_output, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
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
    grad_input = _forward(grad, weight, None, g, xp)
    grad_weight = _gradients(x, grad, None, g, xp, input_grad=False, shape=(*grad.shape, *weight.shape))[1]
    return unbatch(grad_input, unbatched), grad_weight, _bias_grad(grad, bias, xp)
