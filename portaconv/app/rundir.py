"""A training run's folder: held under an exclusive lock, never silently reused, left clean.

The folder holds ``checkpoint.npz`` (weights, optimizer and RNG state, and the metrics so far),
``metrics.json`` (written after the checkpoint and naming its epoch) and ``curves.png``. Each is
written atomically (:func:`portaconv.app.checkpoint.atomic_write`). While a run is active the
folder also holds ``.portaconv.lock``, locked with ``flock`` and naming the holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

__all__ = ["RunFolderError", "RunFolder", "RUN_FILES", "LOCK"]

RUN_FILES = ("metrics.json", "checkpoint.npz", "curves.png")
LOCK = ".portaconv.lock"

try:
    import fcntl
except ImportError:  # Windows: an exclusively created file stands in for the lock
    fcntl = None


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (held by another process, or holding another run)."""


def _describe(folder: Path) -> str:
    """A few words on the run a folder holds, from its metrics.json when readable."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        epochs = metrics.get("epochs", [])
        total = metrics.get("flags", {}).get("epochs", "?")
        accuracy = metrics.get("test_accuracy")
        text = f"{metrics.get('model', '?')}, {len(epochs)}/{total} epochs"
        return text + (f", test accuracy {100 * accuracy:.2f}%" if isinstance(accuracy, (int, float)) else "")
    except (OSError, ValueError, AttributeError, TypeError):
        return "a checkpoint" if (folder / "checkpoint.npz").exists() else "files of a run"


def _is_leftover(name: str) -> bool:
    """A lock or temporary file a killed run can leave behind (ours, safe to delete under the lock)."""
    return name == LOCK or (name.startswith(".") and name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in RUN_FILES))


class RunFolder:
    """Open with :meth:`acquire`; :meth:`release` drops the lock and removes what this process
    created if it holds nothing (a failed start leaves no empty folder)."""

    def __init__(self, path):
        self.path = Path(path)
        self._created = None  # the topmost folder this process created
        self._lock = None

    def acquire(self, mode: str, flag: str = "--out"):
        """Lock the folder for ``mode`` ``"new"`` (refuse one holding anything), ``"overwrite"``
        (replace a run at its first commit) or ``"resume"`` (continue the run it holds)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{flag} {self.path} is a file, not a folder")
        if mode == "resume" and not (self.path / "checkpoint.npz").exists():
            raise RunFolderError(f"--resume {self.path}: no checkpoint.npz there to resume"
                                 + ("" if self.path.is_dir() else " (no such folder)"))
        self._make()
        self._take_lock(flag)
        for entry in self.path.iterdir():
            if entry.name != LOCK and _is_leftover(entry.name):
                entry.unlink()
        if mode == "new":
            self._refuse_if_used(flag)
        return self

    def _make(self):
        missing = self.path
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        if not self.path.exists():
            self._created = missing
        self.path.mkdir(parents=True, exist_ok=True)

    def _refuse_if_used(self, flag):
        names = sorted(e.name for e in self.path.iterdir() if not _is_leftover(e.name))
        if any(name in RUN_FILES for name in names):
            raise RunFolderError(
                f"{flag} {self.path} already holds a run ({_describe(self.path)}): pass --resume {self.path} to "
                f"continue it, --overwrite to replace it, or choose another {flag}"
            )
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise RunFolderError(f"{flag} {self.path} is not empty ({shown}) and holds no portaconv run: "
                                 f"choose an empty or new folder, or pass --overwrite to write the run's files there")

    def _take_lock(self, flag):
        path = self.path / LOCK
        while True:
            handle = self._open_locked(path, flag)
            try:
                if os.stat(path).st_ino == os.fstat(handle).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(handle)  # the holder removed the file as we opened it: take the new one
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(handle, 0)
        os.write(handle, json.dumps(holder).encode())
        os.fsync(handle)
        self._lock = handle

    def _open_locked(self, path, flag):
        if fcntl is None:
            try:
                return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                raise RunFolderError(self._held_message(path, flag, stale_hint=True)) from None
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(handle)
            raise RunFolderError(self._held_message(path, flag)) from None
        return handle

    def _held_message(self, path, flag, stale_hint=False):
        try:
            holder = json.loads(path.read_text())
            who = f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            who = "holder unknown"
        hint = f" (if no such process runs, delete {path})" if stale_hint else ""
        return f"{flag} {self.path} is in use by another portaconv train ({who}){hint}: wait for it to end or choose another {flag}"

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES)

    def release(self):
        """Unlock and remove the lock file; remove the folders this process created if left empty."""
        if self._lock is not None:
            try:
                os.unlink(self.path / LOCK)
            except FileNotFoundError:
                pass
            os.close(self._lock)
            self._lock = None
        if self._created is not None:
            folder = self.path
            while folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                if folder == self._created:
                    break
                folder = folder.parent
            self._created = None
