"""Checkpoints as ``.npz`` without pickle: parameters by name plus a JSON metadata string."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint"]

_META = "__portaconv_meta__"


def save_checkpoint(path, model, metadata=None):
    """Write ``model.state_dict()`` and a JSON-serializable ``metadata`` dict atomically to ``path``.

    The file is written under a temporary name in the same directory and renamed into place, so a
    crash never leaves a truncated checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .._backend import to_numpy

    arrays = {name: to_numpy(value) for name, value in model.state_dict().items()}
    if _META in arrays:
        raise ValueError(f"parameter name {_META!r} is reserved")
    arrays[_META] = np.asarray(json.dumps(metadata or {}))
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def load_checkpoint(path):
    """Read a checkpoint: ``(state, metadata)`` with NumPy arrays (never unpickles)."""
    with np.load(Path(path), allow_pickle=False) as data:
        state = {name: data[name] for name in data.files if name != _META}
        metadata = json.loads(str(data[_META])) if _META in data.files else {}
    return state, metadata
