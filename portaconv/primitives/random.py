"""Random draws on the array's own device: the one place that knows each library's generator.

The functional ops (dropout) ask for a boolean keep-mask; this module draws it with
``numpy.random.Generator`` for NumPy (and, copied over, for array-api-strict or any other
library), a ``torch.Generator`` on the tensor's device, ``cupy.random`` for CuPy, and a
``jax.random`` key for JAX (traceable under ``jax.jit`` with a JAX integer seed).
"""

from __future__ import annotations

import numpy as np
from array_api_compat import device as _device

from .. import _random
from .._backend import backend_name

__all__ = ["keep_mask", "is_array_seed", "SEED_BOUND"]

#: Seeds drawn from portaconv's global generator: valid for every backend's seeding.
SEED_BOUND = 2**31


def is_array_seed(seed, input) -> bool:
    """A 0-D JAX integer array (traced under ``jax.jit`` or not) seeding a JAX input's mask."""
    if backend_name(input) == "jax" and backend_name(seed) == "jax" and hasattr(seed, "dtype"):
        import jax.numpy as jnp

        return seed.ndim == 0 and bool(jnp.issubdtype(seed.dtype, jnp.integer))
    return False


def keep_mask(op, input, shape, p, seed, generator, xp):
    """Boolean mask of ``shape`` on ``input``'s device: True (kept) with probability ``1 - p``."""
    device = _device(input)
    library = backend_name(input)
    if generator is None and seed is None:
        seed = int(_random.default_generator().integers(0, SEED_BOUND))
    if isinstance(generator, np.random.Generator):
        return xp.asarray(generator.random(shape) >= p, device=device)
    if library == "torch":
        import torch

        if generator is None:
            generator = torch.Generator(device=input.device)
            generator.manual_seed(int(seed))
        elif not isinstance(generator, torch.Generator):
            raise TypeError(
                f"{op}: generator must be a torch.Generator or a numpy.random.Generator for torch input, "
                f"got {type(generator).__name__}"
            )
        elif generator.device.type != input.device.type:
            raise ValueError(
                f"{op}: generator is on device {generator.device} but input is on {input.device}; "
                "use a generator of the input's device"
            )
        return torch.rand(shape, generator=generator, device=input.device, dtype=input.dtype) >= p
    if library == "cupy":
        import cupy

        with input.device:
            if generator is None:
                generator = cupy.random.default_rng(int(seed))
            elif not isinstance(generator, (cupy.random.Generator, cupy.random.RandomState)):
                raise TypeError(
                    f"{op}: generator must be a cupy.random.Generator, cupy.random.RandomState or numpy.random.Generator "
                    f"for CuPy input, got {type(generator).__name__}"
                )
            draw = generator.random if isinstance(generator, cupy.random.Generator) else generator.random_sample
            return draw(shape) >= p
    if library == "jax":
        import jax

        if generator is not None:
            raise TypeError(
                f"{op}: generator must be a numpy.random.Generator for JAX input (JAX has no stateful "
                f"generator; pass seed=), got {type(generator).__name__}"
            )
        keep = jax.random.uniform(jax.random.key(seed), shape, dtype=input.dtype) >= p
        return keep if device is None else xp.asarray(keep, device=device)  # device None: a tracer
    if generator is not None:
        raise TypeError(f"{op}: generator must be a numpy.random.Generator for {library} input, got {type(generator).__name__}")
    return xp.asarray(np.random.default_rng(int(seed)).random(shape) >= p, device=device)
