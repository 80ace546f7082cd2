"""Scoped settings: ``portaconv.options(...)`` for a block, ``portaconv.set_options(...)`` for the
process.

The settings live in one immutable :class:`Options` held by a :class:`contextvars.ContextVar`, so a
``with portaconv.options(...)`` block changes them for its own thread or asyncio task only, and
every exit restores what was there before. Nothing else in the library holds a mutable switch.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import numbers

__all__ = ["Options", "options", "set_options", "get_options"]

_CHOICES = {
    "algorithm": ("auto", "im2col", "winograd"),
    "grad_input": ("auto", "col2im", "stride0"),
    "kernels": ("auto", "reference"),
}


@dataclasses.dataclass(frozen=True)
class Options:
    """The settings in force.

    Attributes
    ----------
    algorithm : {"auto", "im2col", "winograd"}
        How conv2d computes: im2col and one matrix product per group, or Winograd F(2×2, 3×3)
        where it applies (3×3 kernel, stride 1, dilation 1, one group; elsewhere im2col).
        ``"auto"``: the rule in :mod:`portaconv.primitives.dispatch`.
    grad_input : {"auto", "col2im", "stride0"}
        How conv2d's input gradient is computed: ``col2im(weightᵀ · grad)``, the adjoint of the
        forward's im2col, or a stride-1 convolution of the stride0'd (zero-dilated) gradient
        with the 180°-rotated kernel.
    kernels : {"auto", "reference"}
        ``"auto"``: a primitive runs its backend's registered kernel where one exists (numba for
        NumPy, raw CUDA for CuPy); ``"reference"``: the Array API reference everywhere.
    reference : bool
        Everything on the reference path: reference kernels, im2col, col2im. Overrides the three
        settings above.
    workspace_limit : int
        Bytes one im2col column buffer may take (default 256 MiB). Convolutions split the batch,
        then the output rows, then the kernel rows until a buffer fits.
    num_threads : int or None
        Threads of the compiled NumPy kernels and of the NumPy matrix products (None: the usable
        cores). ``portaconv.distributed.init`` sets it for each of several ranks sharing a node.
    """

    algorithm: str = "auto"
    grad_input: str = "auto"
    kernels: str = "auto"
    reference: bool = False
    workspace_limit: int = 256 * 2**20
    num_threads: int | None = None

    @property
    def effective_algorithm(self) -> str:
        return "im2col" if self.reference else self.algorithm

    @property
    def effective_grad_input(self) -> str:
        return "col2im" if self.reference else self.grad_input

    @property
    def use_kernels(self) -> bool:
        return not self.reference and self.kernels == "auto"


_FIELDS = tuple(field.name for field in dataclasses.fields(Options))


def _validated(current: Options, changes: dict) -> Options:
    unknown = sorted(set(changes) - set(_FIELDS))
    if unknown:
        raise ValueError(f"portaconv.options: unknown setting(s) {unknown}; the settings are {list(_FIELDS)}")
    for name, value in changes.items():
        if name in _CHOICES and value not in _CHOICES[name]:
            raise ValueError(f"portaconv.options: {name} must be one of {_CHOICES[name]}, got {value!r}")
        if name == "reference" and not isinstance(value, bool):
            raise ValueError(f"portaconv.options: reference must be True or False, got {value!r}")
        if name == "workspace_limit" and (not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1):
            raise ValueError(f"portaconv.options: workspace_limit must be a positive number of bytes, got {value!r}")
        if name == "num_threads" and value is not None and (
            not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"portaconv.options: num_threads must be a positive int or None, got {value!r}")
    return dataclasses.replace(current, **{k: (int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v) for k, v in changes.items()})


_current: contextvars.ContextVar[Options] = contextvars.ContextVar("portaconv_options", default=Options())


def get_options() -> Options:
    """The :class:`Options` in force in this context."""
    return _current.get()


@contextlib.contextmanager
def options(**changes):
    """Change settings inside a ``with`` block (this thread or task only).

    Examples
    --------
    >>> import portaconv
    >>> with portaconv.options(reference=True):
    ...     portaconv.get_options().reference
    True
    >>> portaconv.get_options().reference
    False
    """
    token = _current.set(_validated(_current.get(), changes))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def set_options(**changes) -> Options:
    """Change settings for the rest of this context (the whole process when called at top level,
    before threads start); returns the previous :class:`Options`, which ``set_options(**vars(previous))``
    restores."""
    previous = _current.get()
    _current.set(_validated(previous, changes))
    return previous
