"""Global settings: the im2col workspace limit."""

from __future__ import annotations

import numbers

__all__ = ["get_workspace_limit", "set_workspace_limit"]

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
