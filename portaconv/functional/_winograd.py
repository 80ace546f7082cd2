"""Winograd F(2×2, 3×3): the 3×3 stride-1 convolution with 2.25× fewer multiplications.

Per transform position ξ (16 of them) the convolution is one matrix product ``M[ξ] = U[ξ] @ V[ξ]``
of the transformed kernel U (16, K, C) and the transformed input tiles V (16, C, N·th·tw); the
output transform turns M into the (N, K, oh, ow) output. The math, the tiling and the transforms
are in :mod:`portaconv.primitives.winograd_reference`; the data transforms are dispatched
primitives (numba kernels for NumPy), the kernel transforms are small matrix products.

The backward passes are the adjoints of the same linear maps:

* ``dM = output_adjoint(dY)`` (A dY Aᵀ per tile);
* grad_weight: ``kernel_adjoint(Σ_chunks dM @ Vᵀ)``;
* grad_input: ``input_adjoint(Uᵀ @ dM)`` (B dV Bᵀ per tile, overlap-added).

The batch is processed in chunks of whole images so that one (16, max(C, K), images·th·tw)
buffer stays within ``workspace_limit``.
"""

from __future__ import annotations

from .. import primitives as P
from .._options import get_options
from ..primitives import (
    winograd_input,
    winograd_input_adjoint,
    winograd_kernel,
    winograd_kernel_adjoint,
    winograd_output,
    winograd_output_adjoint,
    winograd_tiles,
)
from ..primitives.window import Window
from ._common import bytes_per_element

__all__ = ["forward", "backward", "chunk_images"]


def chunk_images(batch: int, channels: int, out_channels: int, w: Window, itemsize: int) -> int:
    """Images per chunk: ``16·max(C, K)·images·th·tw·itemsize ≤ workspace_limit``, at least 1."""
    th, tw = winograd_tiles(w)
    per_image = 16 * max(channels, out_channels) * th * tw * itemsize
    return max(1, min(batch, get_options().workspace_limit // max(per_image, 1)))


def _chunks(batch: int, size: int):
    return [(start, min(start + size, batch)) for start in range(0, batch, size)] or [(0, 0)]


def forward(x, weight, bias, w: Window, xp):
    """conv2d of (N, C, H, W) with a (K, C, 3, 3) kernel, stride 1: (N, K, oh, ow)."""
    batch, channels = x.shape[:2]
    out_channels = weight.shape[0]
    u = winograd_kernel(weight, xp)  # (16, K, C)
    size = chunk_images(batch, channels, out_channels, w, bytes_per_element(x.dtype, xp))
    outputs = []
    for start, stop in _chunks(batch, size):
        v = winograd_input(x[start:stop, ...], w, xp)  # (16, C, tiles)
        m = P.matmul(u, v, xp)  # (16, K, tiles)
        outputs.append(winograd_output(m, bias, (stop - start, out_channels, w.oh, w.ow), w, xp))
    return outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0)


def backward(grad, x, weight, w: Window, xp, *, input_grad=True, weight_grad=True, shape=None):
    """(grad_input or None, grad_weight or None) of :func:`forward` at ``x``, ``weight`` for the
    (N, K, oh, ow) output gradient ``grad``. ``x`` may be None without ``weight_grad`` and
    ``weight`` None without ``input_grad``; then ``shape`` = (N, C, H, W, K, …) gives the sizes."""
    batch, channels, height, width = x.shape if x is not None else shape[:4]
    out_channels = weight.shape[0] if weight is not None else shape[4]
    u = winograd_kernel(weight, xp) if input_grad else None
    size = chunk_images(batch, channels, out_channels, w, bytes_per_element(grad.dtype, xp))
    grad_u, grad_inputs = None, []
    for start, stop in _chunks(batch, size):
        dm = winograd_output_adjoint(grad[start:stop, ...], w, xp)  # (16, K, tiles)
        if weight_grad:
            v = winograd_input(x[start:stop, ...], w, xp)  # (16, C, tiles)
            part = P.matmul(dm, xp.matrix_transpose(v), xp)  # (16, K, C)
            grad_u = part if grad_u is None else grad_u + part
        if input_grad:
            dv = P.matmul(xp.matrix_transpose(u), dm, xp)  # (16, C, tiles)
            grad_inputs.append(winograd_input_adjoint(dv, (stop - start, channels, height, width), w, xp))
    grad_input = None
    if input_grad:
        grad_input = grad_inputs[0] if len(grad_inputs) == 1 else xp.concat(grad_inputs, axis=0)
    grad_weight = winograd_kernel_adjoint(grad_u, xp) if weight_grad else None
    return grad_input, grad_weight
