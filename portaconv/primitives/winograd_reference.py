"""Reference Winograd F(2×2, 3×3) transforms: Array API only, sync-free.

Each 2×2 block of outputs (a *tile*) of a 3×3 stride-1 convolution is computed from the 4×4 input
patch under it (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015)::

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        g: 3×3 kernel, d: 4×4 patch, Y: 2×2 outputs

    Bᵀ = [1  0 −1  0]     G = [1    0    0 ]     Aᵀ = [1  1  1  0]
         [0  1  1  0]         [½    ½    ½ ]          [0  1 −1 −1]
         [0 −1  1  0]         [½   −½    ½ ]
         [0  1  0 −1]         [0    0    1 ]

Summed over input channels the ⊙ becomes 16 matrix products, one per transform position
ξ = 4p + q: ``M[ξ] = U[ξ] @ V[ξ]`` with U (K, C) from the kernel and V (C, tiles) from the input.

Geometry (a :class:`~portaconv.primitives.window.Window` with kh = kw = 3, unit stride, dilation
and input dilation): ``th = ⌈oh/2⌉ × tw = ⌈ow/2⌉`` tiles per image; tile (ty, tx) reads the 4×4
virtual patch at rows ``2ty − top … 2ty − top + 3``, columns ``2tx − left … 2tx − left + 3``
(zeros outside the input) and yields outputs ``2ty … 2ty + 1``, ``2tx … 2tx + 1``; outputs past
oh or ow (the last tile row or column may hang over) are dropped, and their gradient is zero.
The tiles' column index in V and M is ``(n·th + ty)·tw + tx``.

The data transforms hold only 0 and ±1: each is sums and differences of strided slices, computed
in a fixed order that the numba kernels (:mod:`~portaconv.primitives.numba_winograd`) repeat
expression by expression, so both give the same bits. The adjoints (backward passes) are exact:
Winograd computes the same linear function of input and kernel as the direct convolution.

* input: ``t = d B`` (column pass, per patch row), then ``V = Bᵀ t`` (row pass);
* input adjoint: ``B dV Bᵀ`` per tile (row pass, then column pass), overlap-added into the input
  tap by tap in *reverse* tap order (3,3), (3,2), …, (0,0): a pixel then receives its tiles'
  contributions in raster order of the tiles;
* output: ``s = Aᵀ M`` (row pass), then ``Y = s A`` (column pass), then ``+ bias``;
* output adjoint: ``h = dY Aᵀ`` (column pass), then ``dM = A h`` (row pass);
* kernel: one product with the 16×9 matrix G ⊗ G; its adjoint with the transpose.
"""

from __future__ import annotations

from array_api_compat import device as _device
from array_api_extra import at

from .window import Window

__all__ = [
    "winograd_tiles",
    "winograd_input",
    "winograd_input_adjoint",
    "winograd_output",
    "winograd_output_adjoint",
    "winograd_kernel",
    "winograd_kernel_adjoint",
]

# The ±1 matrices as rows of (index, sign) pairs, summed left to right: row p of Bᵀ is
# Σ sign·d[index]. B, A are the transposes (the adjoints' rows).
BT = (((0, 1), (2, -1)), ((1, 1), (2, 1)), ((2, 1), (1, -1)), ((1, 1), (3, -1)))
B = (((0, 1),), ((1, 1), (2, -1), (3, 1)), ((1, 1), (2, 1), (0, -1)), ((3, -1),))
AT = (((0, 1), (1, 1), (2, 1)), ((1, 1), (2, -1), (3, -1)))
A = (((0, 1),), ((0, 1), (1, 1)), ((0, 1), (1, -1)), ((1, -1),))
G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))

# G ⊗ G (16×9): U[4p + q] = Σ_ij G[p, i] G[q, j] g[i, j], the kernel transform as one product.
GG = tuple(tuple(G[p][i] * G[q][j] for i in range(3) for j in range(3)) for p in range(4) for q in range(4))


def winograd_tiles(w: Window) -> tuple[int, int]:
    """(th, tw): 2×2 output tiles along each axis (the last ones may hang over the edge)."""
    return (w.oh + 1) // 2, (w.ow + 1) // 2


def _combine(row, parts):
    """Σ sign·parts[index] over ``row`` ((index, ±1) pairs), left to right."""
    (first, sign), *rest = row
    total = parts[first] if sign > 0 else -parts[first]
    for index, sign in rest:
        total = total + parts[index] if sign > 0 else total - parts[index]
    return total


def _place(x, rows, cols, top, left, xp):
    """(…, rows, cols): ``x`` (…, H, W) at offset (top, left), zeros elsewhere; the parts of
    ``x`` outside are cropped. Its adjoint is :func:`_place` with (−top, −left) and x's size."""
    height, width = x.shape[-2:]
    r0, r1 = max(top, 0), min(top + height, rows)
    c0, c1 = max(left, 0), min(left + width, cols)
    if (top, left, height, width) == (0, 0, rows, cols):
        return x
    out = xp.zeros((*x.shape[:-2], rows, cols), dtype=x.dtype, device=_device(x))
    if r1 <= r0 or c1 <= c0:
        return out
    return at(out)[..., r0:r1, c0:c1].set(x[..., r0 - top : r1 - top, c0 - left : c1 - left])


def _tap(frame, i, j, th, tw):
    """Tap (i, j) of every tile: ``frame[..., 2ty + i, 2tx + j]`` as (…, th, tw)."""
    return frame[..., i : i + 2 * th - 1 : 2, j : j + 2 * tw - 1 : 2]


def _interleave(blocks, th, tw, xp):
    """blocks[2p + q] (…, th, tw) → (…, 2th, 2tw) with pixel (2ty + p, 2tx + q) = blocks[2p + q][ty, tx]."""
    rows = [xp.stack([blocks[2 * p], blocks[2 * p + 1]], axis=-1) for p in range(2)]  # (…, th, tw, 2)
    full = xp.stack(rows, axis=-3)  # (…, th, 2, tw, 2)
    return xp.reshape(full, (*full.shape[:-4], 2 * th, 2 * tw))


def _to_columns(planes, th, tw, xp):
    """16 (N, A, th, tw) → (16, A, N·th·tw), tile column (n·th + ty)·tw + tx."""
    n, channels = planes[0].shape[:2]
    v = xp.permute_dims(xp.stack(planes, axis=0), (0, 2, 1, 3, 4))
    return xp.reshape(v, (16, channels, n * th * tw))


def _from_columns(v, n, th, tw, xp):
    """(16, A, N·th·tw) → 16 (N, A, th, tw)."""
    channels = v.shape[1]
    v = xp.permute_dims(xp.reshape(v, (16, channels, n, th, tw)), (0, 2, 1, 3, 4))
    return [v[k, ...] for k in range(16)]


def winograd_input(x, w: Window, xp):
    """V = Bᵀ d B of every tile's 4×4 patch: (N, C, H, W) → (16, C, N·th·tw), V[4p + q] = (Bᵀ d B)[p, q]."""
    th, tw = winograd_tiles(w)
    frame = _place(x, 2 * th + 2, 2 * tw + 2, w.top, w.left, xp)
    # Column pass on whole frame rows: cols[q][..., r, tx] = (d B)[r − 2ty, q] of tile tx.
    taps = [frame[..., :, j : j + 2 * tw - 1 : 2] for j in range(4)]
    cols = [_combine(BT[q], taps) for q in range(4)]
    patches = [None] * 16
    for q in range(4):
        rows = [cols[q][..., i : i + 2 * th - 1 : 2, :] for i in range(4)]
        for p in range(4):
            patches[4 * p + q] = _combine(BT[p], rows)
    return _to_columns(patches, th, tw, xp)


def winograd_input_adjoint(grad_v, shape, w: Window, xp):
    """Adjoint of :func:`winograd_input`: B dV Bᵀ per tile, overlap-added (reverse tap order).
    (16, C, N·th·tw) → ``shape`` = (N, C, H, W)."""
    n, c, height, width = shape
    th, tw = winograd_tiles(w)
    dv = _from_columns(grad_v, n, th, tw, xp)
    dt = [[_combine(B[i], [dv[4 * p + q] for p in range(4)]) for q in range(4)] for i in range(4)]  # dt[i][q]
    dd = [[_combine(B[j], dt[i]) for j in range(4)] for i in range(4)]  # dd[i][j]
    rows, cols = 2 * th + 2, 2 * tw + 2
    frame = xp.zeros((n, c, rows, cols), dtype=grad_v.dtype, device=_device(grad_v))
    for i in reversed(range(4)):
        for j in reversed(range(4)):
            frame = at(frame)[..., i : i + 2 * th - 1 : 2, j : j + 2 * tw - 1 : 2].add(dd[i][j])
    return _place(frame, height, width, -w.top, -w.left, xp)


def winograd_output(m, bias, shape, w: Window, xp):
    """Y = Aᵀ M A per tile, plus ``bias`` (K,) when given: (16, K, N·th·tw) → ``shape`` = (N, K, oh, ow)."""
    n, k, oh, ow = shape
    th, tw = winograd_tiles(w)
    planes = _from_columns(m, n, th, tw, xp)
    s = [[_combine(AT[p], [planes[4 * a + b] for a in range(4)]) for b in range(4)] for p in range(2)]  # s[p][b]
    y = [_combine(AT[q], s[p]) for p in range(2) for q in range(2)]  # y[2p + q]
    out = _interleave(y, th, tw, xp)[..., :oh, :ow]
    if bias is not None:
        out = out + xp.reshape(bias, (1, k, 1, 1))
    return out


def winograd_output_adjoint(grad, w: Window, xp):
    """Adjoint of :func:`winograd_output` (without the bias): dM = A dY Aᵀ per tile, the overhanging
    outputs' gradient zero. (N, K, oh, ow) → (16, K, N·th·tw)."""
    th, tw = winograd_tiles(w)
    frame = _place(grad, 2 * th, 2 * tw, 0, 0, xp)
    dy = [_tap(frame, p, q, th, tw) for p in range(2) for q in range(2)]  # dy[2p + q]
    h = [[_combine(A[b], [dy[2 * p], dy[2 * p + 1]]) for b in range(4)] for p in range(2)]  # h[p][b]
    dm = [None] * 16
    for b in range(4):
        for a in range(4):
            dm[4 * a + b] = _combine(A[a], [h[0][b], h[1][b]])
    return _to_columns(dm, th, tw, xp)


def winograd_kernel(weight, xp):
    """U = G g Gᵀ for each (k, c): (K, C, 3, 3) → (16, K, C)."""
    out_channels, channels = weight.shape[:2]
    gg = xp.asarray(GG, dtype=weight.dtype, device=_device(weight))
    u = xp.matmul(gg, xp.matrix_transpose(xp.reshape(weight, (out_channels * channels, 9))))
    return xp.reshape(u, (16, out_channels, channels))


def winograd_kernel_adjoint(grad_u, xp):
    """Adjoint of :func:`winograd_kernel`, Gᵀ dU G: (16, K, C) → (K, C, 3, 3)."""
    out_channels, channels = grad_u.shape[1:]
    gg = xp.asarray(GG, dtype=grad_u.dtype, device=_device(grad_u))
    grad = xp.matmul(xp.matrix_transpose(gg), xp.reshape(grad_u, (16, out_channels * channels)))
    return xp.reshape(xp.matrix_transpose(grad), (out_channels, channels, 3, 3))
