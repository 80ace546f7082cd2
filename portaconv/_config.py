"""Global settings: the im2col workspace limit."""

from __future__ import annotations

import numbers

__all__ = ["get_workspace_limit", "set_workspace_limit", "tune_allocator"]

_DEFAULT_WORKSPACE_LIMIT = 256 * 2**20
_workspace_limit = _DEFAULT_WORKSPACE_LIMIT


def _check_limit(limit, name="workspace_limit"):
    if not isinstance(limit, numbers.Integral) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"{name} must be a positive number of bytes, got {limit!r}")
    return int(limit)


def get_workspace_limit() -> int:
    """Bytes one im2col column buffer may take (default 256 MiB)."""
    return _workspace_limit


def set_workspace_limit(limit=None) -> int:
    """Set the global im2col workspace limit in bytes; ``None`` restores the default.

    Convolutions and their gradients process the batch in chunks so that one column buffer stays
    under the limit (a single image larger than the limit is still processed whole). Returns the
    previous limit, so a caller can restore it.
    """
    global _workspace_limit
    previous = _workspace_limit
    _workspace_limit = _DEFAULT_WORKSPACE_LIMIT if limit is None else _check_limit(limit)
    return previous


def _resolve_limit(limit):
    return _workspace_limit if limit is None else _check_limit(limit)


_allocator_tuned = False


def tune_allocator() -> bool:
    """Keep freed memory mapped in this process (glibc only); returns whether it was applied.

    NumPy allocates every temporary through malloc, and glibc hands large freed blocks back to the
    OS, so the next array of that size is faulted in page by page: measured here, 19 000 page faults
    and ~90 ms of a 280 ms conv2d forward+backward (N32 C64 56²). Raising glibc's mmap and trim
    thresholds (``mallopt``) keeps those pages mapped. Process-wide: the ``portaconv train`` and
    ``portaconv bench`` commands call it; a library import never does.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    _allocator_tuned = bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 31))
    return _allocator_tuned
