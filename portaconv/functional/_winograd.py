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

Layout ("flat planes"): the padded input is split by row and column parity into 4 planes of
``(th + 1) × (tw + 1)`` cells per image, and each plane is flattened over channels, images and cells
into one 1-D array. Tap (i, j) of every tile is then *one contiguous slice* of plane
(i mod 2, j mod 2), shifted by ``(i // 2) (tw + 1) + j // 2``, and every sum in the transforms is
one NumPy operation on whole 1-D arrays: on strided 2-D or 3-D views NumPy's ufuncs run ~3× slower
(measured: 0.28 ms against 0.09 ms for the same 3.3 MB subtraction). The price is one extra tile row
and column per image (``ty = th`` or ``tx = tw``), whose patches run into the next row, image or
channel: their outputs are dropped and their gradients are zero. Tile ``(ty, tx)`` of image n,
channel c has flat index ``((c N + n) (th + 1) + ty) (tw + 1) + tx``; the planes carry
``tw + 2`` zeros of slack at the end for the last extra tiles' reads.

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


def tiles_per_image(th, tw):
    """Tiles per image and channel in the flat layout, the extra row and column included."""
    return (th + 1) * (tw + 1)


def _combine(row, parts, xp, out=None):
    """Σ coefficient · parts[index] over ``row`` ({index: ±1}); ``out`` (NumPy) receives it."""
    (first, sign), *rest = row.items()
    if out is None:
        total = parts[first] if sign > 0 else -parts[first]
        for index, coefficient in rest:
            total = total + parts[index] if coefficient > 0 else total - parts[index]
        return total
    import numpy as np

    if not rest:
        if sign > 0:
            np.copyto(out, parts[first])
            return out
        return np.negative(parts[first], out=out)
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


# G ⊗ G (16×9): U[4 p + q] = Σ_ij G[p, i] G[q, j] g[i, j], the whole kernel transform as one
# matrix product (a batched G g Gᵀ is K·C tiny products: measured 1.6 ms at K = C = 128, and 7 ms
# when two threads' tiny BLAS calls contend).
_GG = tuple(tuple(_G[p][i] * _G[q][j] for i in range(3) for j in range(3)) for p in range(4) for q in range(4))


def kernel_transform(weight, xp):
    """U = G g Gᵀ for each (k, c): (K, C, 3, 3) → (16, K, C)."""
    out_channels, channels = weight.shape[:2]
    gg = xp.asarray(_GG, dtype=weight.dtype, device=_device(weight))
    u = xp.matmul(gg, xp.matrix_transpose(xp.reshape(weight, (out_channels * channels, 9))))
    return xp.reshape(u, (16, out_channels, channels))


def kernel_transform_adjoint(grad_u, xp):
    """Gᵀ dU G: (16, K, C) → (K, C, 3, 3)."""
    out_channels, channels = grad_u.shape[1:]
    gg = xp.asarray(_GG, dtype=grad_u.dtype, device=_device(grad_u))
    grad = xp.matmul(xp.matrix_transpose(gg), xp.reshape(grad_u, (16, out_channels * channels)))
    return xp.reshape(xp.matrix_transpose(grad), (out_channels, channels, 3, 3))


def _buffer(shape, dtype, xp):
    """A NumPy output buffer for :func:`_combine`, or None for the generic path."""
    if not is_numpy(xp):
        return None
    import numpy as np

    return np.empty(shape, dtype=dtype)


def _shifted(first, second, shift, xp):
    """first + second moved ``shift`` elements on (1-D; length + shift): the adjoint of reading
    both from one array at offsets 0 and ``shift``."""
    length = first.shape[0]
    if is_numpy(xp) and length >= shift:
        import numpy as np

        out = np.empty(length + shift, dtype=first.dtype)
        out[:shift] = first[:shift]
        np.add(first[shift:], second[: length - shift], out=out[shift:length])
        out[length:] = second[length - shift :]
        return out
    zeros = xp.zeros(shift, dtype=first.dtype, device=_device(first))
    return xp.concat([first, zeros]) + xp.concat([zeros, second])


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


def _to_parity(x, top, left, rows, cols, xp, slack=0):
    """(A, N, H, W) → its 4 parity planes [2 row parity + column parity], each flattened to
    ``A N rows cols + slack`` elements: cell (a, n, r, t) holds pixel (2 r + row parity − top,
    2 t + column parity − left) of (a, n), zeros elsewhere (the padding and the slack)."""
    channels, batch, height, width = x.shape
    length = channels * batch * rows * cols
    if is_numpy(xp):
        import numpy as np

        planes = np.zeros((4, length + slack), dtype=x.dtype)
        cells = np.reshape(planes[:, :length], (2, 2, channels, batch, rows, cols))
        for rp, cp, pixels, where in _parity_slices(height, width, top, left):
            cells[(rp, cp, ..., *where)] = x[(..., *pixels)]
        return list(planes)
    padded = _pad(x, (top, 2 * rows - height - top, left, 2 * cols - width - left), 0, xp)
    flat = [xp.reshape(padded[..., rp::2, cp::2], (length,)) for rp in range(2) for cp in range(2)]
    if not slack:
        return flat
    zeros = xp.zeros(slack, dtype=x.dtype, device=_device(x))
    return [xp.concat([plane, zeros]) for plane in flat]


def _from_parity(planes, shape, top, left, rows, cols, xp, out=None):
    """Adjoint of :func:`_to_parity` (without the zeros): gather (A, N, H, W) from 4 flat parity
    planes of at least ``A N rows cols`` elements; ``out`` (NumPy) receives the result."""
    channels, batch, height, width = shape
    length = channels * batch * rows * cols
    planes = [xp.reshape(plane[:length], (channels, batch, rows, cols)) for plane in planes]
    if is_numpy(xp):
        import numpy as np

        out = np.empty(shape, dtype=planes[0].dtype) if out is None else out
        for rp, cp, pixels, where in _parity_slices(height, width, top, left):
            out[(..., *pixels)] = planes[2 * rp + cp][(..., *where)]
        return out
    # Interleave: (A, N, rows, 2, cols, 2) → (A, N, 2 rows, 2 cols), then crop the padding.
    pairs = [xp.stack([planes[2 * rp], planes[2 * rp + 1]], axis=-1) for rp in range(2)]
    full = xp.reshape(xp.stack(pairs, axis=-3), (channels, batch, 2 * rows, 2 * cols))
    return full[..., top : top + height, left : left + width]


def input_transform(x, pads, th, tw, xp, *, zero_extra=False):
    """Bᵀ d B of every 4×4 patch: (C, N, H, W) → V (16, C, N (th + 1)(tw + 1)).

    ``pads`` = (top, left) zero padding; bottom and right are padded to the tiles' extent.
    ``zero_extra``: zero the extra tiles' entries. Their patches read the next row, image or
    channel; the weight gradient multiplies them by a zero dM, which is 0 only for finite pixels,
    so a non-finite pixel would spread NaN into another channel's weight gradient.
    """
    channels, batch = x.shape[:2]
    cols = tw + 1
    length = channels * batch * tiles_per_image(th, tw)
    # Planes of (th + 1) × (tw + 1) cells per image, and slack for the last extra tiles' reads.
    planes = _to_parity(x, pads[0], pads[1], th + 1, cols, xp, slack=cols + 1)
    buffer = _buffer((4, 4, length), x.dtype, xp)
    scratch = _buffer((2, length + cols), x.dtype, xp)
    patches = [None] * 16
    for b in range(4):
        # Column pass for this b only (its two row parities), consumed at once by the row pass
        # while still in cache: tap j of row parity rp is plane (rp, j mod 2) shifted by j // 2.
        columns = [
            _combine(
                _BT[b],
                [planes[2 * rp + j % 2][j // 2 : j // 2 + length + cols] for j in range(4)],
                xp,
                None if scratch is None else scratch[rp],
            )
            for rp in range(2)
        ]
        taps = [columns[i % 2][(i // 2) * cols : (i // 2) * cols + length] for i in range(4)]
        for a in range(4):
            patches[4 * a + b] = _combine(_BT[a], taps, xp, None if buffer is None else buffer[a, b])
    v = buffer if buffer is not None else xp.stack(patches, axis=0)
    if zero_extra:
        v = _zero_extra_tiles(xp.reshape(v, (16, channels * batch, th + 1, cols)), th, tw, xp)
    return xp.reshape(v, (16, channels, length // channels))


def _zero_extra_tiles(v, th, tw, xp):
    """Zero tile row ``th`` and column ``tw`` of V viewed as (16, C·N, th + 1, tw + 1)."""
    if is_numpy(xp):
        v[..., th, :] = 0
        v[..., :th, tw] = 0
        return v
    rows = xp.arange(th + 1, device=_device(v))[:, None]
    cols = xp.arange(tw + 1, device=_device(v))[None, :]
    return xp.where((rows < th) & (cols < tw), v, xp.zeros((), dtype=v.dtype, device=_device(v)))


def input_transform_adjoint(grad_v, shape, pads, th, tw, xp, out=None):
    """Adjoint of :func:`input_transform`: V (16, C, N (th + 1)(tw + 1)) → (C, N, H, W)."""
    cols = tw + 1
    length = shape[0] * shape[1] * tiles_per_image(th, tw)
    grad_v = xp.reshape(grad_v, (4, 4, length))
    columns = [[None] * 4 for _ in range(2)]  # columns[rp][b], each of length + cols elements
    for b in range(4):
        rows = [_combine(_B[i], [grad_v[a, b, ...] for a in range(4)], xp) for i in range(4)]  # rows[i]
        for rp in range(2):
            columns[rp][b] = _shifted(rows[rp], rows[rp + 2], cols, xp)
    planes = [None] * 4
    for rp in range(2):
        taps = [_combine(_B[j], columns[rp], xp) for j in range(4)]  # taps[j]
        for cp in range(2):
            planes[2 * rp + cp] = _shifted(taps[cp], taps[cp + 2], 1, xp)
    return _from_parity(planes, shape, pads[0], pads[1], th + 1, cols, xp, out)


def output_transform(m, out_shape, th, tw, xp, out=None):
    """Aᵀ M A per tile: M (16, K, N (th + 1)(tw + 1)) → (K, N, oh, ow); ``out`` (NumPy) receives it."""
    out_channels, batch = out_shape[:2]
    rows, cols = th + 1, tw + 1
    m = xp.reshape(m, (4, 4, out_channels * batch * rows * cols))
    half = [[_combine(_AT[p], [m[a, b, ...] for a in range(4)], xp) for b in range(4)] for p in range(2)]
    # Output pixel (2 ty + p, 2 tx + q) is cell (ty, tx) of parity plane (p, q).
    planes = [_combine(_AT[q], half[p], xp) for p in range(2) for q in range(2)]
    return _from_parity(planes, out_shape, 0, 0, rows, cols, xp, out)


def output_transform_adjoint(grad, th, tw, xp):
    """Adjoint of :func:`output_transform`: (K, N, oh, ow) → dM (16, K, N (th + 1)(tw + 1))."""
    out_channels, batch = grad.shape[:2]
    rows, cols = th + 1, tw + 1
    length = out_channels * batch * rows * cols
    blocks = _to_parity(grad, 0, 0, rows, cols, xp)  # blocks[2 p + q]: pixels (2 ty + p, 2 tx + q)
    buffer = _buffer((4, 4, length), grad.dtype, xp)
    patches = [None] * 16
    for b in range(4):
        # Column pass for this b only, consumed at once by the row pass (see input_transform).
        columns = [_combine(_A[b], [blocks[2 * p], blocks[2 * p + 1]], xp) for p in range(2)]
        for a in range(4):
            patches[4 * a + b] = _combine(_A[a], columns, xp, None if buffer is None else buffer[a, b])
    dm = buffer if buffer is not None else xp.stack(patches, axis=0)
    return xp.reshape(dm, (16, out_channels, length // out_channels))
