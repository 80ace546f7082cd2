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
sums and differences of shifted slices: no multiplications on the data.

Layout ("planes"): the padded input is split by row and column parity into 4 planes of
``(th + 2) × (tw + 1)`` pixels, each flattened. Tap (i, j) of every tile is then *one contiguous
run* of plane (i mod 2, j mod 2), shifted by ``(i // 2) (tw + 1) + j // 2``, and every sum in the
transforms runs over long contiguous arrays (NumPy's loops over short rows cost ~2× more). The price
is one extra tile per tile row (``tx = tw``, whose patch wraps into the next row): its outputs are
dropped and its gradients are zero. Tile ``(ty, tx)`` has flat index ``ty (tw + 1) + tx``.

Arrays are in the conv module's (C, N, H, W) layout.
"""

from __future__ import annotations

from array_api_compat import device as _device

from .._backend import is_numpy
from ..window import _pad

# Bᵀ (4×4), G (4×3), Aᵀ (2×4) of F(2×2, 3×3); the ±1 matrices as rows of {index: coefficient}.
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


def _shifted(parts, shift, xp):
    """parts[0] + parts[1] moved ``shift`` elements along the last axis (overlap-add of two taps
    ``shift`` apart): the adjoint of reading both from one array at offsets 0 and ``shift``."""
    first, second = parts
    if is_numpy(xp):
        import numpy as np

        out = np.zeros((*first.shape[:-1], first.shape[-1] + shift), dtype=first.dtype)
        out[..., : first.shape[-1]] = first
        out[..., shift:] += second
        return out
    return _pad(first, (0, 0, 0, shift), 0, xp) + _pad(second, (0, 0, shift, 0), 0, xp)


def _parity_slices(height, width, top, left):
    """Per parity plane (rp, cp): the input pixels it holds, ``(rows, cols)`` slices of the
    unpadded (H, W), and where they sit in the plane. Padded pixel (y, x) = (h + top, w + left)
    lies in plane (y mod 2, x mod 2) at cell (y // 2, x // 2)."""
    result = []
    for rp in range(2):
        h0 = (rp - top) % 2  # first input row whose padded row has parity rp
        r0, count_h = (h0 + top) // 2, len(range(h0, height, 2))
        for cp in range(2):
            w0 = (cp - left) % 2
            t0, count_w = (w0 + left) // 2, len(range(w0, width, 2))
            pixels = (slice(h0, None, 2), slice(w0, None, 2))
            cells = (slice(r0, r0 + count_h), slice(t0, t0 + count_w))
            result.append((rp, cp, pixels, cells))
    return result


def _planes(x, top, left, th, tw, xp):
    """(C, N, H, W) → 4 flat parity planes [2 row parity + column parity], each
    (C, N, (th + 2) (tw + 1)) holding padded pixel (2 r + row parity, 2 t + column parity)."""
    channels, batch, height, width = x.shape
    rows, cols = th + 2, tw + 1
    if is_numpy(xp):
        import numpy as np

        planes = np.zeros((2, 2, channels, batch, rows, cols), dtype=x.dtype)
        for rp, cp, pixels, cells in _parity_slices(height, width, top, left):
            planes[(rp, cp, ..., *cells)] = x[(..., *pixels)]
        flat = np.reshape(planes, (2, 2, channels, batch, rows * cols))
        return [flat[rp, cp] for rp in range(2) for cp in range(2)]
    padded = _pad(x, (top, 2 * rows - height - top, left, 2 * cols - width - left), 0, xp)
    return [xp.reshape(padded[..., rp::2, cp::2], (channels, batch, rows * cols)) for rp in range(2) for cp in range(2)]


def _from_planes(planes, shape, top, left, th, tw, xp, out=None):
    """Adjoint of :func:`_planes` (without the zeros): gather (C, N, H, W) from 4 planes of
    (C, N, (th + 1) (tw + 1) + 1) elements; ``out`` (NumPy) receives the result."""
    channels, batch, height, width = shape
    rows, cols = th + 1, tw + 1
    planes = [xp.reshape(plane[..., : rows * cols], (channels, batch, rows, cols)) for plane in planes]
    if is_numpy(xp):
        import numpy as np

        out = np.empty(shape, dtype=planes[0].dtype) if out is None else out
        for rp, cp, pixels, cells in _parity_slices(height, width, top, left):
            out[(..., *pixels)] = planes[2 * rp + cp][(..., *cells)]
        return out
    # Interleave: (C, N, rows, 2, cols, 2) → (C, N, 2 rows, 2 cols), then crop the padding.
    pairs = [xp.stack([planes[2 * rp], planes[2 * rp + 1]], axis=-1) for rp in range(2)]
    full = xp.reshape(xp.stack(pairs, axis=-3), (channels, batch, 2 * rows, 2 * cols))
    return full[..., top : top + height, left : left + width]


def input_transform(x, pads, th, tw, xp):
    """Bᵀ d B of every 4×4 patch: (C, N, H, W) → (16, C, N·th·(tw + 1)).

    ``pads`` = (top, left) zero padding; bottom and right are padded to the tiles' extent.
    """
    channels, batch = x.shape[:2]
    cols = tw + 1
    size, length = th * cols, (th + 1) * cols
    planes = _planes(x, pads[0], pads[1], th, tw, xp)
    buffer = _buffer((4, 4, channels, batch, size), x.dtype, xp)
    patches = [None] * 16
    for b in range(4):
        # Column pass for this b only (its two row parities), consumed at once by the row pass
        # while still in cache: tap j of row parity rp is plane (rp, j mod 2) shifted by j // 2.
        columns = [
            _apply(_BT[b : b + 1], [planes[2 * rp + j % 2][..., j // 2 : j // 2 + length] for j in range(4)])[0] for rp in range(2)
        ]
        taps = [columns[i % 2][..., (i // 2) * cols : (i // 2) * cols + size] for i in range(4)]
        outs = None if buffer is None else [buffer[a, b] for a in range(4)]
        for a, value in enumerate(_apply(_BT, taps, outs)):
            patches[4 * a + b] = value
    return _stack16(patches, buffer, (16, channels, batch * size), xp)


def input_transform_adjoint(grad_v, shape, pads, th, tw, xp, out=None):
    """Adjoint of :func:`input_transform`: (16, C, N·th·(tw + 1)) → (C, N, H, W)."""
    channels, batch = shape[:2]
    cols = tw + 1
    grad_v = xp.reshape(grad_v, (4, 4, channels, batch, th * cols))
    columns = [[None] * 4 for _ in range(2)]  # columns[rp][b], each (C, N, (th + 1)(tw + 1))
    for b in range(4):
        rows = _apply(_B, [grad_v[a, b, ...] for a in range(4)])  # rows[i]
        for rp in range(2):
            columns[rp][b] = _shifted([rows[rp], rows[rp + 2]], cols, xp)
    planes = [None] * 4
    for rp in range(2):
        taps = _apply(_B, columns[rp])  # taps[j]
        for cp in range(2):
            planes[2 * rp + cp] = _shifted([taps[cp], taps[cp + 2]], 1, xp)
    return _from_planes(planes, shape, pads[0], pads[1], th, tw, xp, out)


def output_transform(m, out_shape, th, tw, xp, out=None):
    """Aᵀ M A per tile: (16, K, N·th·(tw + 1)) → (K, N, oh, ow); ``out`` (NumPy) receives it."""
    out_channels, batch, oh, ow = out_shape
    cols = tw + 1
    m = xp.reshape(m, (4, 4, out_channels, batch, th * cols))
    rows = [_apply(_AT, [m[a, b, ...] for a in range(4)]) for b in range(4)]  # rows[b][p]
    # The wrapped tile (tx = tw) of each row is dropped before the last pass.
    rows = [[xp.reshape(r, (out_channels, batch, th, cols))[..., :tw] for r in row] for row in rows]
    if is_numpy(xp):
        import numpy as np

        full = None
        if (oh, ow) == (2 * th, 2 * tw) and out is not None:
            # Even output sizes: the last pass writes straight into ``out`` split into its tiles
            # (when that split is a view: a reshape that had to copy would lose the writes).
            full = out.reshape(out_channels, batch, th, 2, tw, 2)
            full = full if np.may_share_memory(full, out) else None
        tiled = full is not None
        if full is None:
            full = np.empty((out_channels, batch, th, 2, tw, 2), dtype=m.dtype)
        for p in range(2):
            _apply(_AT, [rows[b][p] for b in range(4)], [full[:, :, :, p, :, q] for q in range(2)])
        if tiled:
            return out
        y = np.reshape(full, (out_channels, batch, 2 * th, 2 * tw))[..., :oh, :ow]
        if out is None:
            return y
        out[...] = y
        return out
    blocks = [_apply(_AT, [rows[b][p] for b in range(4)]) for p in range(2)]  # blocks[p][q]
    y = xp.stack([xp.stack(blocks[p], axis=-1) for p in range(2)], axis=-3)  # (K, N, th, 2, tw, 2)
    return xp.reshape(y, (out_channels, batch, 2 * th, 2 * tw))[..., :oh, :ow]


def output_transform_adjoint(grad, th, tw, xp):
    """Adjoint of :func:`output_transform`: (K, N, oh, ow) → dM (16, K, N·th·(tw + 1))."""
    out_channels, batch, oh, ow = grad.shape
    cols = tw + 1
    size = th * cols
    if is_numpy(xp):
        import numpy as np

        blocks = np.zeros((2, 2, out_channels, batch, th, cols), dtype=grad.dtype)
        for p in range(2):
            for q in range(2):
                part = grad[:, :, p::2, q::2]
                blocks[p, q, :, :, : part.shape[2], : part.shape[3]] = part
        blocks = np.reshape(blocks, (2, 2, out_channels, batch, size))
    else:
        padded = _pad(grad, (0, 2 * th - oh, 0, 2 * cols - ow), 0, xp)
        blocks = [[xp.reshape(padded[..., p::2, q::2], (out_channels, batch, size)) for q in range(2)] for p in range(2)]
    buffer = _buffer((4, 4, out_channels, batch, size), grad.dtype, xp)
    patches = [None] * 16
    for b in range(4):
        # Column pass for this b only, consumed at once by the row pass (see input_transform).
        columns = [_apply(_A[b : b + 1], [blocks[p][0], blocks[p][1]])[0] for p in range(2)]
        outs = None if buffer is None else [buffer[a, b] for a in range(4)]
        for a, value in enumerate(_apply(_A, columns, outs)):
            patches[4 * a + b] = value
    return _stack16(patches, buffer, (16, out_channels, batch * size), xp)
