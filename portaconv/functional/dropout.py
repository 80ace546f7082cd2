"""dropout and dropout2d, forward and backward, with the mask drawn on the array's device.

The mask comes from the backend's own generator where it has one
(:func:`portaconv.primitives.random.keep_mask`). ``seed=`` makes the mask a pure function of the
seed, so ``f_backward`` regenerates it; ``generator=`` draws from a caller's generator, which
moves on, so only portaconv's autograd (which keeps the forward's mask,
:meth:`~portaconv.autograd.graph.differentiable` ``defvjp``) can differentiate such a call.
"""

from __future__ import annotations

import numbers

from array_api_compat import device as _device

from .._backend import namespace_of
from .._validate import check_float_arrays, check_ndim, check_shape
from ..autograd.graph import differentiable
from ..primitives import random

__all__ = ["dropout", "dropout_backward", "dropout2d", "dropout2d_backward"]

def _check(op, xp, input, p, training, seed, generator, grad_output=None):
    """Validate the arguments (dtypes, shapes and Python values only); return ``p`` as a float."""
    check_float_arrays(op, xp, input=input, grad_output=grad_output)
    if grad_output is not None:
        check_shape(op, "grad_output", grad_output, input.shape)
    if not isinstance(p, numbers.Real) or isinstance(p, bool):
        raise TypeError(f"{op}: p must be a real number (a probability in [0, 1]), got {p!r}")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: p must be a probability in [0, 1], got {p!r}")
    if not isinstance(training, bool):
        raise TypeError(f"{op}: training must be a bool, got {training!r}")
    if seed is not None and generator is not None:
        raise ValueError(f"{op}: pass seed= or generator=, not both")
    if seed is not None:
        _check_seed(op, seed, input)
    return p


def _check_seed(op, seed, input):
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"{op}: seed must be a non-negative int, got {seed!r}")
        return
    if random.is_array_seed(seed, input):
        return  # a (possibly traced) JAX integer: jax.random.key(seed) under jit
    raise TypeError(f"{op}: seed must be a non-negative int (or, for JAX input, a 0-D JAX integer array), got {seed!r}")


def _random_mask(p, training):
    """Whether the mask is random: training with ``0 < p < 1`` (p=0 keeps all, p=1 none)."""
    return training and 0.0 < p < 1.0


def _scale(op, input, shape, p, training, seed, generator, xp):
    """The multiplier ``mask / (1 - p)`` (``shape``, broadcasting against ``input``), or None where
    dropout is the identity (not training, or p = 0)."""
    if not training or p == 0.0:
        return None
    device = _device(input)
    zero = xp.zeros((), dtype=input.dtype, device=device)
    if p == 1.0:
        return xp.zeros(shape, dtype=input.dtype, device=device)  # torch: input * 0 (NaN stays NaN)
    keep = random.keep_mask(op, input, shape, p, seed, generator, xp)
    return xp.where(keep, xp.asarray(1.0 / (1.0 - p), dtype=input.dtype, device=device), zero)


def _channel_shape(op, input):
    check_ndim(op, "input", input, (3, 4), "(N, C, H, W) or unbatched (C, H, W)")
    return (*input.shape[:-2], 1, 1)


def _forward(op, input, p, training, seed, generator, channels):
    xp = namespace_of(input)
    p = _check(op, xp, input, p, training, seed, generator)
    shape = _channel_shape(op, input) if channels else tuple(input.shape)
    scale = _scale(op, input, shape, p, training, seed, generator, xp)
    return (input if scale is None else input * scale), scale


def _backward(op, grad_output, input, p, training, seed, generator, channels):
    xp = namespace_of(grad_output, input)
    shape = _channel_shape(op, input) if channels else tuple(input.shape)
    p = _check(op, xp, input, p, training, seed, generator, grad_output)
    if generator is not None:
        raise ValueError(
            f"{op}: the mask drawn from generator= cannot be regenerated (the generator has moved on); pass the same "
            "seed= to the forward and the backward, or differentiate through portaconv's autograd (Tensors), which keeps the mask"
        )
    if seed is None and _random_mask(p, training):
        raise ValueError(
            f"{op}: seed= is needed to regenerate the mask (without it the forward drew a fresh seed from "
            "portaconv's global generator); pass the same seed= to the forward and the backward"
        )
    scale = _scale(op, input, shape, p, training, seed, None, xp)
    return ((grad_output if scale is None else grad_output * scale),)


def _dropout_vjp_forward(needs, input, p=0.5, training=True, *, seed=None, generator=None):
    """dropout keeping its multiplier (the residual): the graph's backward reuses the mask."""
    return _forward("dropout", input, p, training, seed, generator, channels=False)


def _dropout2d_vjp_forward(needs, input, p=0.5, training=True, *, seed=None, generator=None):
    return _forward("dropout2d", input, p, training, seed, generator, channels=True)


def _vjp_backward(scale, grad_output, needs):
    return ((grad_output if scale is None else grad_output * scale),)


@differentiable("input")
def dropout(input, p=0.5, training=True, *, seed=None, generator=None):
    """Zero each element with probability ``p`` and scale the kept ones by ``1 / (1 - p)``, as
    ``torch.nn.functional.dropout``.

    ``training=False`` or ``p=0`` return ``input`` itself; ``p=1`` gives ``input * 0`` (zeros, NaN
    where ``input`` is not finite), as torch. A dropped NaN or inf stays NaN (``x * 0``), as torch.

    Parameters
    ----------
    input : array
    p : float
        Probability of zeroing an element, in [0, 1] (a Python or NumPy real number).
    training : bool
    seed : int, optional, keyword-only
        Seeds the backend's generator on the input's device: the same seed gives the same mask
        (per backend, shape and dtype), and :func:`dropout_backward` regenerates it. For JAX it may
        be a 0-D JAX integer array, a ``jax.jit`` argument: with a Python int (or no seed) a jitted
        function keeps the mask of its trace.
    generator : optional, keyword-only
        A ``numpy.random.Generator``, or the input library's generator (``torch.Generator`` on the
        input's device, a ``cupy.random`` generator). At most one of ``seed`` and ``generator``;
        with neither, the seed is drawn from portaconv's global generator
        (:func:`portaconv.manual_seed`).

    Shapes
    ------
    input : any → same shape
    """
    return _forward("dropout", input, p, training, seed, generator, channels=False)[0]


@dropout.defbackward
def dropout_backward(grad_output, input, p=0.5, training=True, *, seed=None, generator=None):
    """Gradient of :func:`dropout`, regenerating the mask from ``seed``.

    ``y = x · m / (1 - p)`` with the mask ``m`` in {0, 1} independent of ``x``:
    ``dL/dx = g · m / (1 - p)`` (``g`` itself when dropout is the identity, ``g · 0`` for p = 1).

    Raises ``ValueError`` for ``generator=`` (its mask cannot be drawn again) and, when the mask
    is random, for a missing ``seed=``: portaconv's autograd keeps the forward's mask instead.

    Shapes
    ------
    grad_output, input : same shape → ((same shape),)
    """
    return _backward("dropout_backward", grad_output, input, p, training, seed, generator, channels=False)


dropout.defvjp(_dropout_vjp_forward, _vjp_backward)


@differentiable("input")
def dropout2d(input, p=0.5, training=True, *, seed=None, generator=None):
    """Zero whole channels with probability ``p`` and scale the kept ones by ``1 / (1 - p)``, as
    ``torch.nn.functional.dropout2d`` on (N, C, H, W) input.

    One draw per (sample, channel): the mask has shape (N, C, 1, 1). Unbatched (C, H, W) input
    draws one per channel, (C, 1, 1), as ``nn.Dropout2d`` documents; torch's functional form
    still reads 3-D input as (N, C, L) (deprecated, with a warning), which portaconv does not.
    Parameters, identities and the NaN rule as :func:`dropout`.

    Shapes
    ------
    input : (N, C, H, W) or unbatched (C, H, W) → same shape
    """
    return _forward("dropout2d", input, p, training, seed, generator, channels=True)[0]


@dropout2d.defbackward
def dropout2d_backward(grad_output, input, p=0.5, training=True, *, seed=None, generator=None):
    """Gradient of :func:`dropout2d`: ``dL/dx = g · m / (1 - p)`` with the channel mask ``m``
    (N, C, 1, 1) broadcast over H and W, regenerated from ``seed`` (see :func:`dropout_backward`).

    Shapes
    ------
    grad_output, input : (N, C, H, W) or (C, H, W) → ((same shape),)
    """
    return _backward("dropout2d_backward", grad_output, input, p, training, seed, generator, channels=True)


dropout2d.defvjp(_dropout2d_vjp_forward, _vjp_backward)
