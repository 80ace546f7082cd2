"""Checkpoints as ``.npz`` without pickle, and the atomic writes every file of a run goes through.

A checkpoint holds the model's ``state_dict()`` by name, a JSON metadata member (model, dtype,
dataset, epoch, ``format``) and, when written by ``portaconv train``, the training state needed
to resume exactly: the optimizer's arrays as members, and a JSON member with its param groups and
step counts, the random generators' states and the metrics so far.

Formats: 1 (portaconv 0.1 before resume; weights and metadata only: it evaluates, it cannot be
resumed) and 2 (this one).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "CheckpointError", "Checkpoint", "save_checkpoint", "read_checkpoint", "load_checkpoint",
           "atomic_write", "json_text"]

#: The checkpoint format this version writes; it reads this one and every older one.
FORMAT = 2

_META = "__portaconv_meta__"
_TRAINING = "__portaconv_training__"
_OPTIM = "__portaconv_optim__."  # + "<parameter index>.<state name>"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, not ours, or of an unreadable format."""


@dataclass
class Checkpoint:
    """A checkpoint as read: ``training`` is ``None`` for weights-only files (format 1 or none saved)."""

    path: Path
    model_state: dict
    metadata: dict
    training: dict | None
    format: int


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path):
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible everywhere (Windows): the rename itself is still atomic
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def atomic_write(path, write):
    """Write ``path`` through ``write(binary_file)`` into a temporary file of the same folder, with
    the permissions of the user's umask, fsynced and renamed into place: readers see the old file or
    the complete new one, never a part. The temporary file is removed on any failure or interrupt."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp creates files 0600
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def _finite(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def json_text(value) -> str:
    """Strict JSON (non-finite floats become ``null``: never ``NaN`` or ``Infinity``)."""
    return json.dumps(_finite(value), indent=2, allow_nan=False) + "\n"


def _pack_optimizer(state_dict):
    """Optimizer state dict → (array members, JSON part)."""
    arrays, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if hasattr(value, "shape"):
                from .._backend import to_numpy

                arrays[f"{_OPTIM}{index}.{name}"] = to_numpy(value)
            else:
                scalars.setdefault(str(index), {})[name] = value
    return arrays, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unpack_optimizer(packed, arrays):
    state = {}
    for index, values in packed["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    for member, array in arrays.items():
        index, name = member[len(_OPTIM):].split(".", 1)
        state.setdefault(int(index), {})[name] = array
    return {"state": dict(sorted(state.items())), "param_groups": packed["param_groups"]}


def save_checkpoint(path, model, metadata=None, *, optimizer=None, training=None):
    """Write ``model.state_dict()``, a JSON-serializable ``metadata`` dict and, for a resumable
    checkpoint, ``optimizer.state_dict()`` and a JSON-serializable ``training`` dict, atomically."""
    from .._backend import to_numpy

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: to_numpy(value) for name, value in model.state_dict().items()}
    reserved = [name for name in arrays if name.startswith("__portaconv")]
    if reserved:
        raise ValueError(f"parameter names starting with '__portaconv' are reserved: {reserved}")
    arrays[_META] = np.asarray(json_text({**(metadata or {}), "format": FORMAT}))
    if training is not None or optimizer is not None:
        training = dict(training or {})
        if optimizer is not None:
            optimizer_arrays, training["optimizer"] = _pack_optimizer(optimizer.state_dict())
            arrays.update(optimizer_arrays)
        arrays[_TRAINING] = np.asarray(json_text(training))
    return atomic_write(path, lambda out: np.savez(out, **arrays))


def _why(error) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _open_archive(path: Path):
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(4)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror or _why(error)})") from None
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a portaconv checkpoint")
    if head[:2] != b"PK":
        raise CheckpointError(f"{path}: not a portaconv checkpoint (not an .npz archive: it starts with {head!r})")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any failure to open the archive means the same to the user
        raise CheckpointError(f"{path}: truncated or damaged archive ({_why(error)})") from None


def _read_members(path: Path) -> dict:
    with _open_archive(path) as archive:
        members = {}
        for name in archive.files:
            try:
                members[name] = archive[name]
            except ValueError as error:
                if "allow_pickle" not in str(error):
                    raise CheckpointError(f"{path}: corrupt member {name!r} ({_why(error)})") from None
                raise CheckpointError(
                    f"{path}: member {name!r} holds Python objects, which no portaconv checkpoint does; not loading it"
                ) from None
            except Exception as error:  # noqa: BLE001 - bad CRC, truncated member, damaged header
                raise CheckpointError(f"{path}: corrupt member {name!r} ({_why(error)})") from None
    return members


def _json_member(path, members, name):
    try:
        value = json.loads(str(members.pop(name)))
    except ValueError as error:
        raise CheckpointError(f"{path}: corrupt member {name!r} (not JSON: {_why(error)})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: corrupt member {name!r} (a JSON object expected)")
    return value


def read_checkpoint(path) -> Checkpoint:
    """Read every part of a checkpoint (NumPy arrays, never unpickling).

    Raises
    ------
    CheckpointError
        One line naming the file and what is wrong with it.
    """
    path = Path(path)
    members = _read_members(path)
    if _META not in members:
        raise CheckpointError(f"{path}: not a portaconv checkpoint (an .npz archive without its {_META} member)")
    metadata = _json_member(path, members, _META)
    version = metadata.pop("format", 1)
    if not isinstance(version, int) or version > FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this portaconv reads "
                              f"(formats 1 to {FORMAT}): upgrade portaconv")
    training = _json_member(path, members, _TRAINING) if _TRAINING in members else None
    optimizer_arrays = {name: members.pop(name) for name in list(members) if name.startswith(_OPTIM)}
    if training is not None and "optimizer" in training:
        training["optimizer"] = _unpack_optimizer(training["optimizer"], optimizer_arrays)
    return Checkpoint(path, members, metadata, training, version)


def load_checkpoint(path):
    """Read a checkpoint's weights: ``(state, metadata)`` with NumPy arrays (never unpickles)."""
    checkpoint = read_checkpoint(path)
    return checkpoint.model_state, checkpoint.metadata
