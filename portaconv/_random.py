"""portaconv's global random generator: where random ops given neither ``seed=`` nor
``generator=`` draw their seed (:func:`portaconv.functional.dropout`).

A NumPy :class:`numpy.random.Generator`, seeded 0 at import so that runs repeat;
:func:`manual_seed` reseeds it, as ``torch.manual_seed`` does torch's.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["manual_seed", "default_generator"]

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Reseed the global generator with ``seed`` (a non-negative int) and return it."""
    global _generator
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def default_generator() -> np.random.Generator:
    """The global generator (replaced, not mutated, by :func:`manual_seed`)."""
    return _generator
