"""The NumPy family's matrix product: BLAS on one thread inside portaconv's calls, each large
product split in two halves across portaconv's own two-thread pool.

Why: OpenBLAS's worker threads keep spinning for a long time after every multi-threaded product,
and the numba kernels that run next (im2col, col2im, pooling) then share a core with a spinning
thread; measured, a convolution's kernels ran up to 2× slower after a product than before one
(docs/performance.md). With BLAS single-threaded in portaconv's products no BLAS worker wakes,
and a product still uses both cores: its two halves run on two Python threads (NumPy releases
the GIL inside BLAS). Each half is the product of a block of rows or columns, the same sums BLAS
computes for that block. The BLAS thread count is set back on return, so the rest of the process
keeps its setting (threads running NumPy products concurrently with portaconv's see one BLAS
thread meanwhile).
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import threading

import numpy as np

from .._options import get_options
from .dispatch import register

__all__ = ["matmul"]

# Products with fewer multiply-adds run whole: a hand-off to the pool costs tens of µs.
_MIN_SPLIT_MULTIPLY_ADDS = 4_000_000
# OpenBLAS runs products below this many multiply-adds on one thread by itself (its
# SMP_THRESHOLD_MIN × GEMM_MULTITHREAD_THRESHOLD): they need no thread setting.
_BLAS_SINGLE_THREADED_BELOW = 65536 * 4

# A product with a result of at most this many elements per matrix and an inner dimension of at
# least _LONG_INNER (a first layer's weight gradient: 9 × 32 summed over 43 264 pixels) runs faster
# as a sum of products over blocks of _INNER_BLOCK of the inner dimension, on one thread, than as
# one BLAS call, threaded or not; larger results gain nothing (measured in docs/performance.md).
_SMALL_RESULT = 512
_LONG_INNER = 16384
_INNER_BLOCK = 2048

_lock = threading.Lock()
_state = {"pool": None, "blas": None, "users": 0, "saved": None}


def _forget():
    # A forked child inherits the pool object but not its thread, and maybe a held lock.
    global _lock
    _lock = threading.Lock()
    _state.update(pool=None, users=0, saved=None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def _blas_libraries():
    if _state["blas"] is None:
        try:
            import threadpoolctl

            controller = threadpoolctl.ThreadpoolController()
            _state["blas"] = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
        except Exception:  # threadpoolctl missing or failing: leave BLAS alone
            _state["blas"] = []
    return _state["blas"]


class _OneBlasThread:
    """BLAS on one thread while any portaconv product runs (counted across threads)."""

    def __enter__(self):
        with _lock:
            if _state["users"] == 0:
                libraries = _blas_libraries()
                _state["saved"] = [lib.get_num_threads() for lib in libraries]
                for lib in libraries:
                    lib.set_num_threads(1)
            _state["users"] += 1

    def __exit__(self, *exc):
        with _lock:
            _state["users"] -= 1
            if _state["users"] == 0:
                for lib, threads in zip(_blas_libraries(), _state["saved"] or []):
                    lib.set_num_threads(threads)


def _pool():
    with _lock:
        if _state["pool"] is None:
            _state["pool"] = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="portaconv-matmul")
        return _state["pool"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_CORES = usable_cores()


@register("matmul", "numpy")
def matmul(a, b, xp):
    """``a @ b`` (stacks of matrices broadcast as in ``matmul``), split over two threads unless
    ``options(num_threads=1)`` or the process may use one core only."""
    rows, inner, columns = a.shape[-2], a.shape[-1], b.shape[-1]
    if rows * inner * columns < _BLAS_SINGLE_THREADED_BELOW:
        return np.matmul(a, b)
    stack = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    threads = get_options().num_threads or _CORES  # options(num_threads=1): one core, no split
    with _OneBlasThread():
        if rows * columns <= _SMALL_RESULT and inner >= _LONG_INNER:
            return _blocked_inner(a, b)
        if threads < 2 or math.prod(stack) * rows * inner * columns < _MIN_SPLIT_MULTIPLY_ADDS or max(rows, columns) < 2:
            return np.matmul(a, b)
        out = np.empty((*stack, rows, columns), dtype=np.result_type(a, b))
        if columns >= rows:
            half = columns // 2
            other = _pool().submit(np.matmul, a, b[..., half:], out=out[..., half:])
            np.matmul(a, b[..., :half], out=out[..., :half])
        else:
            half = rows // 2
            other = _pool().submit(np.matmul, a[..., half:, :], b, out=out[..., half:, :])
            np.matmul(a[..., :half, :], b, out=out[..., :half, :])
        other.result()
        return out


def _blocked_inner(a, b):
    """``a @ b`` summed block by block over the inner dimension (in order, one thread)."""
    out = np.matmul(a[..., :_INNER_BLOCK], b[..., :_INNER_BLOCK, :])
    for start in range(_INNER_BLOCK, a.shape[-1], _INNER_BLOCK):
        out += np.matmul(a[..., start:start + _INNER_BLOCK], b[..., start:start + _INNER_BLOCK, :])
    return out
