"""Winograd F(2×2, 3×3): the 3×3 stride-1 convolution with 2.25× fewer multiplications.

Each 2×2 block of outputs (a *tile*) is computed from the 4×4 input patch under it (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2015)::

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        g: 3×3 kernel, d: 4×4 patch, Y: 2×2 outputs

16 products per tile instead of 36. Summed over input channels, the ⊙ becomes 16 matrix products,
one per transform position ξ: ``M[ξ] = U[ξ] @ V[ξ]`` with U (K, C) from the kernel and V (C, tiles)
from the input. Patches overlap by 2 (tile stride 2, patch size 4).

The backward passes are the adjoints of these linear maps (exact: Winograd computes the same
linear function of input and kernel as the direct convolution):

* ``dM[ξ] = (A dY Aᵀ)[ξ]`` for each tile's 2×2 gradient block;
* grad_weight: ``G ᵀ (Σ_tiles dM[ξ] V[ξ]ᵀ) G``;
* grad_input: ``B (U[ξ]ᵀ dM[ξ]) Bᵀ`` per tile, overlap-added back into the input.

All transforms are separable and their matrices hold only 0, ±1 (Bᵀ, Aᵀ) and ±½ (G), so they are
sums and differences of strided slices: no multiplications on the data. The columns are split into
even and odd ones first, so every slice the sums read runs along a contiguous axis.

Arrays are in the conv module's (C, N, H, W) layout.
"""

from __future__ import annotations

from array_api_compat import device as _device

from .._backend import is_numpy
from ..window import _pad

# Bᵀ (4×4), G (4×3), Aᵀ (2×4) of F(2×2, 3×3), as rows of {coefficient: index}.
_BT = ({0: 1, 2: -1}, {1: 1, 2: 1}, {1: -1, 2: 1}, {1: 1, 3: -1})
_B = ({0: 1}, {1: 1, 2: -1, 3: 1}, {0: -1, 1: 1, 2: 1}, {3: -1})  # B = (Bᵀ)ᵀ: the adjoint
_AT = ({0: 1, 1: 1, 2: 1}, {1: 1, 2: -1, 3: -1})
_A = ({0: 1}, {0: 1, 1: 1}, {0: 1, 1: -1}, {1: -1})
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def tiles(oh, ow):
    """Number of 2×2 output tiles along each axis (the last ones may hang over the edge)."""
    return (oh + 1) // 2, (ow + 1) // 2


def _apply(rows, parts, outs=None):
    """Row r of the result is Σ coefficient · parts[index] over ``rows[r]`` (coefficients ±1).

    ``outs`` (NumPy only): write row r into ``outs[r]`` instead of new arrays, so the 16
    transform positions land in one buffer without a stacking copy.
    """
    if outs is not None:
        return [_apply_into(row, parts, out) for row, out in zip(rows, outs)]
    result = []
    for row in rows:
        (first, sign), *rest = row.items()
        total = parts[first] if sign > 0 else -parts[first]
        for index, coefficient in rest:
            total = total + parts[index] if coefficient > 0 else total - parts[index]
        result.append(total)
    return result


def _apply_into(row, parts, out):
    import numpy as np

    (first, sign), *rest = row.items()
    if not rest:
        return np.copyto(out, parts[first]) if sign > 0 else np.negative(parts[first], out=out)
    (second, coefficient), *rest = rest
    if sign > 0:
        (np.add if coefficient > 0 else np.subtract)(parts[first], parts[second], out=out)
    elif coefficient > 0:
        np.subtract(parts[second], parts[first], out=out)
    else:
        np.negative(np.add(parts[first], parts[second], out=out), out=out)
    for index, coefficient in rest:
        (np.add if coefficient > 0 else np.subtract)(out, parts[index], out=out)
    return out


def _taps(x, axis_from_end, count, xp):
    """The 4 stride-2 slices ``x[..., i : i + 2 (count - 1) + 1 : 2, ...]``, i = 0..3, along an axis."""
    index = [slice(None)] * axis_from_end

    def take(start):
        return x[(..., slice(start, start + 2 * (count - 1) + 1, 2), *index)]

    return [take(i) for i in range(4)]


def _overlap_add(parts, axis_from_end, xp):
    """Adjoint of :func:`_taps`: positions 0..3 of tiles at stride 2, summed where tiles overlap.

    Returns the full axis of length ``2 (count + 1)``, with ``count`` = length of each part.
    """
    pad_end = [(0, 0)] * 2
    pad_start = [(0, 0)] * 2
    pad_end[-1 - axis_from_end] = (0, 1)
    pad_start[-1 - axis_from_end] = (1, 0)

    def pads(pair):
        return (*pair[0], *pair[1])

    even = _pad(parts[0], pads(pad_end), 0, xp) + _pad(parts[2], pads(pad_start), 0, xp)
    odd = _pad(parts[1], pads(pad_end), 0, xp) + _pad(parts[3], pads(pad_start), 0, xp)
    stacked = xp.stack([even, odd], axis=_axis(even.ndim, axis_from_end) + 1)
    shape = list(even.shape)
    shape[_axis(even.ndim, axis_from_end)] *= 2
    return xp.reshape(stacked, tuple(shape))


def _axis(ndim, axis_from_end):
    return ndim - 1 - axis_from_end


def kernel_transform(weight, xp):
    """U = G g Gᵀ for each (k, c): (K, C, 3, 3) → (16, K, C)."""
    out_channels, channels = weight.shape[:2]
    g = xp.asarray(_G, dtype=weight.dtype, device=_device(weight))
    u = xp.matmul(xp.matmul(g, weight), xp.matrix_transpose(g))  # (K, C, 4, 4)
    return xp.reshape(xp.permute_dims(u, (2, 3, 0, 1)), (16, out_channels, channels))


def kernel_transform_adjoint(grad_u, xp):
    """Gᵀ dU G: (16, K, C) → (K, C, 3, 3)."""
    out_channels, channels = grad_u.shape[1:]
    g = xp.asarray(_G, dtype=grad_u.dtype, device=_device(grad_u))
    grad_u = xp.permute_dims(xp.reshape(grad_u, (4, 4, out_channels, channels)), (2, 3, 0, 1))
    return xp.matmul(xp.matmul(xp.matrix_transpose(g), grad_u), g)


def _split_columns(x, xp):
    """(even, odd) columns of x. NumPy gets contiguous copies: the sums that follow then run
    along unit-stride rows (strided loops measured ~2× slower)."""
    if is_numpy(xp):
        import numpy as np

        width = x.shape[-1]
        split = np.empty((2, *x.shape[:-1], width // 2), dtype=x.dtype)
        np.copyto(split, np.moveaxis(np.reshape(x, (*x.shape[:-1], width // 2, 2)), -1, 0))
        return split[0], split[1]
    return x[..., 0::2], x[..., 1::2]


def _buffer(shape, dtype, xp):
    """A NumPy output buffer for :func:`_apply`, or None for the generic path."""
    if not is_numpy(xp):
        return None
    import numpy as np

    return np.empty(shape, dtype=dtype)


def _stack16(patches, buffer, shape, xp):
    if buffer is not None:
        return xp.reshape(buffer, shape)
    return xp.reshape(xp.stack(patches, axis=0), shape)


def input_transform(x, pads, th, tw, xp):
    """Bᵀ d B of every 4×4 patch: (C, N, H, W) → (16, C, N·th·tw).

    ``pads`` = (top, left) zero padding; bottom and right are padded to the tiles' extent.
    """
    channels, batch, height, width = x.shape
    top, left = pads
    x = _pad(x, (top, 2 * th + 2 - height - top, left, 2 * tw + 2 - width - left), 0, xp)
    even, odd = _split_columns(x, xp)  # column 2 t + j of tile t is even/odd[..., t + j // 2]
    taps = [even[..., :tw], odd[..., :tw], even[..., 1:], odd[..., 1:]]
    columns = _apply(_BT, taps)  # 4 × (C, N, Hp, tw)
    buffer = _buffer((4, 4, channels, batch, th, tw), x.dtype, xp)
    patches = [None] * 16
    for b, column in enumerate(columns):
        outs = None if buffer is None else [buffer[a, b] for a in range(4)]
        for a, value in enumerate(_apply(_BT, _taps(column, 1, th, xp), outs)):
            patches[4 * a + b] = value
    return _stack16(patches, buffer, (16, channels, batch * th * tw), xp)


def input_transform_adjoint(grad_v, shape, pads, th, tw, xp):
    """Adjoint of :func:`input_transform`: (16, C, N·th·tw) → (C, N, H, W)."""
    channels, batch, height, width = shape
    top, left = pads
    grad_v = xp.reshape(grad_v, (4, 4, channels, batch, th, tw))
    columns = []
    for b in range(4):
        rows = _apply(_B, [grad_v[a, b, ...] for a in range(4)])  # each (C, N, th, tw)
        columns.append(_overlap_add(rows, 1, xp))  # (C, N, Hp, tw)
    x = _overlap_add(_apply(_B, columns), 0, xp)  # (C, N, Hp, Wp)
    return x[..., top : top + height, left : left + width]


def output_transform(m, out_shape, th, tw, xp):
    """Aᵀ M A per tile: (16, K, N·th·tw) → (K, N, oh, ow)."""
    out_channels, batch, oh, ow = out_shape
    m = xp.reshape(m, (4, 4, out_channels, batch, th, tw))
    rows = [_apply(_AT, [m[a, b, ...] for a in range(4)]) for b in range(4)]  # rows[b][p]
    buffer = _buffer((out_channels, batch, th, 2, tw, 2), m.dtype, xp)
    blocks = [
        _apply(_AT, [rows[b][p] for b in range(4)], None if buffer is None else [buffer[:, :, :, p, :, q] for q in range(2)])
        for p in range(2)
    ]  # blocks[p][q]
    if buffer is None:
        buffer = xp.stack([xp.stack(blocks[p], axis=-1) for p in range(2)], axis=-3)
    y = xp.reshape(buffer, (out_channels, batch, 2 * th, 2 * tw))
    return y[..., :oh, :ow]


def output_transform_adjoint(grad, th, tw, xp):
    """Adjoint of :func:`output_transform`: (K, N, oh, ow) → dM (16, K, N·th·tw)."""
    out_channels, batch, oh, ow = grad.shape
    grad = _pad(grad, (0, 2 * th - oh, 0, 2 * tw - ow), 0, xp)
    buffer = _buffer((4, 4, out_channels, batch, th, tw), grad.dtype, xp)
    patches = [None] * 16
    for b, column in enumerate(_apply(_A, list(_split_columns(grad, xp)))):
        outs = None if buffer is None else [buffer[a, b] for a in range(4)]
        for a, value in enumerate(_apply(_A, [column[..., p::2, :] for p in range(2)], outs)):
            patches[4 * a + b] = value
    return _stack16(patches, buffer, (16, out_channels, batch * th * tw), xp)
