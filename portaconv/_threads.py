"""Batch-parallel NumPy: split a batch across threads, each running single-threaded BLAS.

NumPy releases the GIL in its copies, ufuncs and matrix products, but everything around a matrix
product (im2col, Winograd's transforms, col2im) runs on one core while OpenBLAS threads only the
product. Measured on this project's 2-core machine, running the two halves of a batch in two
threads with BLAS limited to one thread each made conv2d forward+backward 1.2–1.4× faster than
one thread with two-threaded BLAS (Winograd 56×56: 193 → 140 ms).

BLAS is kept on one thread through threadpoolctl (process-wide, for the duration of the call only;
see :func:`single_threaded_blas`). Without threadpoolctl no thread is started: BLAS threads times
our threads would oversubscribe the cores.
"""

from __future__ import annotations

import os
import threading

__all__ = ["get_num_threads", "set_num_threads"]

# Below this many multiply-adds a call is too small for a thread hand-off (~50 µs) to pay.
_MIN_WORK = 20_000_000
# Calls whose arrays are all smaller leave BLAS alone (see single_threaded_blas).
_SMALL_CALL = 10_000


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_num_threads = _default_threads()
_lock = threading.Lock()
_pool = None
_local = threading.local()  # .worker: this thread is one of the pool's
_libraries = None  # threadpoolctl's controllers of the loaded BLAS libraries
_libraries_ready = False
_blas_users = 0  # calls inside _one_blas_thread now, across all threads
_blas_saved = None  # the BLAS thread counts the first of them found


def _forget_pool():
    # A forked child inherits the pool object but not its threads, and maybe a held lock.
    global _pool, _lock, _blas_users
    _pool, _lock, _blas_users = None, threading.Lock(), 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def get_num_threads() -> int:
    """Threads the NumPy backend splits a convolution's batch across (default: the usable cores)."""
    return _num_threads


def set_num_threads(threads=None) -> int:
    """Set the threads NumPy convolutions split their batch across.

    Parameters
    ----------
    threads : int or None
        1 turns batch threading off; ``None`` restores the default (the usable cores).

    Returns
    -------
    int
        The previous setting, so a caller can restore it.

    Notes
    -----
    While a split call runs, BLAS is limited to one thread process-wide (threadpoolctl); calls
    below 2·10⁷ multiply-adds, or made from inside a worker, run on the calling thread.
    """
    global _num_threads, _pool
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    previous = _num_threads
    with _lock:
        _num_threads = _default_threads() if threads is None else threads
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None
    return previous


def _blas_libraries():
    """threadpoolctl's controllers of the loaded BLAS libraries, or None without threadpoolctl."""
    global _libraries, _libraries_ready
    if not _libraries_ready:
        try:
            from threadpoolctl import ThreadpoolController

            _libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        except ImportError:
            _libraries = None
        _libraries_ready = True
    return _libraries


def single_threaded_blas(function):
    """Run a NumPy call with BLAS on one thread when portaconv threads itself (threads > 1).

    OpenBLAS's idle workers busy-wait for ~0.1 s after every multi-threaded call and take a core
    from whatever runs next: measured here, a seed-cnn training step ran 29 ms with two-threaded
    BLAS and 22 ms with BLAS on one thread and the batch split across portaconv's threads. So the
    functions that multiply matrices keep BLAS single-threaded for their duration (~2 µs a call;
    the setting is restored afterwards, process-wide in between). Non-NumPy arrays pass through.
    """
    import functools

    import numpy as np

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        # Arrays all under _SMALL_CALL elements make products OpenBLAS runs on one thread anyway:
        # skip the ~3 µs. Non-NumPy calls pass through.
        numpy_call = bool(args) and type(args[0]) is np.ndarray
        if numpy_call:
            numpy_call = max(a.size for a in args if type(a) is np.ndarray) >= _SMALL_CALL
        libraries = _blas_libraries() if _num_threads > 1 and numpy_call else None
        if not libraries:
            return function(*args, **kwargs)
        with _one_blas_thread():
            return function(*args, **kwargs)

    return wrapper


class _one_blas_thread:
    """Context: BLAS on one thread; the first entrant saves the libraries' settings and the last
    one out restores them, so concurrent and nested calls cannot leave BLAS at 1."""

    def __enter__(self):
        global _blas_users, _blas_saved
        with _lock:
            if _blas_users == 0:
                _blas_saved = [library.get_num_threads() for library in _libraries]
                for library in _libraries:
                    library.set_num_threads(1)
            _blas_users += 1

    def __exit__(self, *exc):
        global _blas_users
        with _lock:
            _blas_users -= 1
            if _blas_users == 0:
                for library, threads in zip(_libraries, _blas_saved):
                    library.set_num_threads(threads)


def _in_worker() -> bool:
    return getattr(_local, "worker", False)


def _mark_worker():
    _local.worker = True


def batch_ranges(batch, work, minimum=None):
    """(start, stop) parts of the batch for :func:`map_ranges`, or None to run it whole: one
    thread, a small call (``work`` under ``minimum``, default ``_MIN_WORK`` multiply-adds), a call
    from inside a worker, or no way to limit BLAS."""
    threads = min(_num_threads, batch)
    minimum = _MIN_WORK if minimum is None else minimum
    if threads < 2 or work < minimum or _in_worker() or _blas_libraries() is None:
        return None
    bounds = [batch * i // threads for i in range(threads + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def map_ranges(function, ranges):
    """``[function(start, stop) for each range]``, run in the pool with BLAS on one thread."""
    global _pool
    from concurrent.futures import ThreadPoolExecutor

    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_num_threads, initializer=_mark_worker, thread_name_prefix="portaconv")
        pool = _pool
    with _one_blas_thread():  # batch_ranges made sure the libraries are known
        return list(pool.map(lambda bounds: function(*bounds), ranges))
