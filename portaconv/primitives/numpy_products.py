"""The NumPy family's matrix product: NumPy's own BLAS, on one thread per call, with each large
product split into blocks of rows (or columns) that numba's threads hand to BLAS in parallel.

Why not BLAS's own threads: OpenBLAS's worker threads keep spinning for a long time after every
multi-threaded product, and the numba kernels that run next (im2col, col2im, pooling) then share
a core with a spinning thread, which slowed them measurably. Why numba's threads and not a Python
thread pool (the previous scheme): a pool's worker sleeps between products, is slow to wake on a
VM, and then competes with numba's workers, which spin after the kernel that ran just before;
numba's threads are those very workers (both measured in docs/performance.md). Each block is the product BLAS computes for that block
of the result, the same sums as the whole product: bit-identical to ``np.matmul``, which calls the
same ``cblas_?gemm`` with the same transposition flags (except for a matrix times its own
transpose, which NumPy hands to ``syrk``; no op here forms one).

NumPy's BLAS is found through threadpoolctl (the library NumPy loaded) by its OpenBLAS symbols
with 64-bit integers (``scipy_cblas_sgemm64_``, NumPy's wheels; ``cblas_sgemm64_``). Where it is not
found (another BLAS build, threadpoolctl missing) products are plain ``np.matmul`` on BLAS's own
threads.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import threading

import numba
import numpy as np
from numba import njit, prange

from .._options import get_options
from .cblas import cblas_gemm
from .dispatch import register
from .numba_kernels import _threads  # numba's thread count from the options, set before a launch

__all__ = ["matmul", "usable_cores"]

# Products with fewer multiply-adds run whole: starting numba's threads costs more than splitting saves.
_MIN_SPLIT_MULTIPLY_ADDS = 4_000_000
# OpenBLAS runs products below this many multiply-adds on one thread by itself (its
# SMP_THRESHOLD_MIN × GEMM_MULTITHREAD_THRESHOLD): they need no thread setting.
_BLAS_SINGLE_THREADED_BELOW = 65536 * 4
# A block of the result has at least this many rows (or columns): thinner blocks leave BLAS's
# register tiles partly empty.
_MIN_BLOCK = 64

# A product with a result of at most this many elements per matrix and an inner dimension of at
# least _LONG_INNER (a first layer's weight gradient: 9 × 32 summed over 43 264 pixels) runs as a
# sum of products over blocks of _INNER_BLOCK of the inner dimension rather than as one BLAS call,
# threaded or not (each of numba's threads sums its share of the blocks, the shares are added);
# larger results gain nothing (measured in docs/performance.md).
_SMALL_RESULT = 512
_LONG_INNER = 16384
_INNER_BLOCK = 2048

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

_lock = threading.Lock()
_state = {"users": 0, "saved": None}


def _forget():
    # A forked child inherits the counters but not the threads that held them, and maybe a held lock.
    global _lock
    _lock = threading.Lock()
    _state.update(users=0, saved=None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def _numpy_blas_path():
    """The file of the BLAS library NumPy loaded (the one inside NumPy's own wheel), or None."""
    try:
        import threadpoolctl

        libraries = [lib for lib in threadpoolctl.ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    except Exception:  # threadpoolctl missing or failing
        return None
    numpy_dir = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    for lib in libraries:
        path = getattr(lib, "filepath", "") or ""
        if os.path.basename(os.path.dirname(path)) == "numpy.libs" and path.startswith(numpy_dir):
            return path
    return None


def _address(function):
    return ctypes.cast(function, ctypes.c_void_p).value


def _find_blas():
    """NumPy's OpenBLAS as {"gemm": {dtype: the address of its cblas_?gemm}, "get_threads": ..., "set_threads": ...},
    or {} where it cannot be found. Its thread count is read and set by direct calls: cheaper per
    product than threadpoolctl's, which counts at batch 1."""
    path = _numpy_blas_path()
    if path is None:
        return {}
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return {}
    for prefix in ("scipy_", ""):
        names = [f"{prefix}cblas_sgemm64_", f"{prefix}cblas_dgemm64_", f"{prefix}openblas_get_num_threads64_",
                 f"{prefix}openblas_set_num_threads64_"]
        if all(hasattr(library, name) for name in names):
            sgemm, dgemm, get_threads, set_threads = (getattr(library, name) for name in names)
            get_threads.restype, get_threads.argtypes = ctypes.c_int, []
            set_threads.restype, set_threads.argtypes = None, [ctypes.c_int]
            gemm = {np.dtype(np.float32): _address(sgemm), np.dtype(np.float64): _address(dgemm)}
            return {"gemm": gemm, "get_threads": get_threads, "set_threads": set_threads}
    return {}


_blas = functools.cache(_find_blas)


def _gemms():
    """{dtype: the address of cblas_?gemm} of NumPy's BLAS (for :func:`cblas_gemm`), or {} where
    it cannot be found."""
    return _blas().get("gemm", {})


class _OneBlasThread:
    """NumPy's BLAS on one thread while any portaconv product runs (counted across threads); the
    process's setting comes back after the last one (NumPy products other threads run meanwhile
    see one BLAS thread)."""

    def __enter__(self):
        blas = _blas()
        with _lock:
            if _state["users"] == 0:
                saved = blas["get_threads"]()
                if saved != 1:
                    blas["set_threads"](1)
                _state["saved"] = saved
            _state["users"] += 1

    def __exit__(self, *exc):
        with _lock:
            _state["users"] -= 1
            if _state["users"] == 0 and _state["saved"] != 1:
                _blas()["set_threads"](_state["saved"])


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_CORES = usable_cores()


@njit(parallel=True, cache=True, nogil=True)
def _blocked_gemm(gemm, trans_a, trans_b, m, n, k, one, zero, a_ptrs, lda, b_ptrs, ldb, c_ptrs, ldc, by_rows, a_step, b_step,
                  c_step, blocks):
    """C[s] = A[s] @ B[s] for each matrix s of the stack, in ``blocks`` blocks of C's rows
    (``by_rows``) or columns, one BLAS call per block on numba's threads. ``*_ptrs`` are the
    matrices' addresses, ``*_step`` the bytes from one row (or column) of a block to the next."""
    size = m if by_rows else n
    for t in prange(a_ptrs.size * blocks):
        s = t // blocks
        block = t - s * blocks
        lo = block * size // blocks
        hi = (block + 1) * size // blocks
        if by_rows:
            cblas_gemm(gemm, _ROW_MAJOR, trans_a, trans_b, hi - lo, n, k, one, a_ptrs[s] + lo * a_step, lda, b_ptrs[s], ldb,
                       zero, c_ptrs[s] + lo * c_step, ldc)
        else:
            cblas_gemm(gemm, _ROW_MAJOR, trans_a, trans_b, m, hi - lo, k, one, a_ptrs[s], lda, b_ptrs[s] + lo * b_step, ldb,
                       zero, c_ptrs[s] + lo * c_step, ldc)


@njit(parallel=True, cache=True, nogil=True)
def _inner_blocked_gemm(gemm, trans_a, trans_b, m, n, k, one, a_ptrs, lda, b_ptrs, ldb, c_ptrs, ldc, a_step, b_step, block,
                        parts, c_part_step):
    """C[s, part] += A[s] @ B[s] summed over the part's share of the inner blocks of ``block``
    (in order, one BLAS call with beta = 1 per block), the parts on numba's threads; ``*_step``:
    bytes from one inner index to the next, ``c_part_step``: bytes from one part's C to the next."""
    blocks = (k + block - 1) // block
    for t in prange(a_ptrs.size * parts):
        s = t // parts
        part = t - s * parts
        c = c_ptrs[s] + part * c_part_step
        for index in range(part * blocks // parts, (part + 1) * blocks // parts):
            start = index * block
            cblas_gemm(gemm, _ROW_MAJOR, trans_a, trans_b, m, n, min(block, k - start), one, a_ptrs[s] + start * a_step, lda,
                       b_ptrs[s] + start * b_step, ldb, one, c, ldc)


def _blas_layout(strides, rows, columns, itemsize):
    """(transposition flag, leading dimension) of a matrix with these byte strides, as NumPy's
    matmul passes it to BLAS (row-major first), or None where BLAS cannot read it in place."""
    def fits(outer, inner, width):
        return inner == itemsize and outer % itemsize == 0 and outer // itemsize >= max(width, 1)

    if fits(strides[0], strides[1], columns):
        return _NO_TRANS, strides[0] // itemsize
    if fits(strides[1], strides[0], rows):
        return _TRANS, strides[1] // itemsize
    return None


def _layouts(a, b, itemsize):
    """((flag, leading dimension) of ``a``, of ``b``) for BLAS, or None where one cannot be read in place."""
    layout_a = _blas_layout(a.strides[-2:], a.shape[-2], a.shape[-1], itemsize)
    layout_b = _blas_layout(b.strides[-2:], b.shape[-2], b.shape[-1], itemsize)
    return None if layout_a is None or layout_b is None else (layout_a, layout_b)


def _addresses(array, stack):
    """The address of each matrix of ``array`` broadcast to the stack shape ``stack``, in order."""
    array = np.broadcast_to(array, (*stack, *array.shape[-2:]))
    offsets = np.zeros(stack, dtype=np.int64)
    for axis, (size, step) in enumerate(zip(stack, array.strides)):
        offsets = offsets + np.arange(size, dtype=np.int64).reshape([size if i == axis else 1 for i in range(len(stack))]) * step
    return offsets.reshape(-1) + array.ctypes.data


def _split(a, b, stack, dtype, blocks):
    """``a @ b`` in blocks over numba's threads, or None where BLAS cannot read an operand in place."""
    rows, inner, columns = a.shape[-2], a.shape[-1], b.shape[-1]
    itemsize = dtype.itemsize
    layouts = _layouts(a, b, itemsize)
    if layouts is None:
        return None
    (trans_a, lda), (trans_b, ldb) = layouts
    out = np.empty((*stack, rows, columns), dtype=dtype)
    by_rows = rows >= columns
    blocks = max(1, min(blocks, (rows if by_rows else columns) // _MIN_BLOCK))
    one, zero = dtype.type(1), dtype.type(0)
    _blocked_gemm(
        _gemms()[dtype], trans_a, trans_b, rows, columns, inner, one, zero,
        _addresses(a, stack), lda, _addresses(b, stack), ldb, _addresses(out, stack), columns,
        by_rows, a.strides[-2], b.strides[-1], out.strides[-2] if by_rows else itemsize, blocks,
    )
    return out


@register("matmul", "numpy")
def matmul(a, b, xp):
    """``a @ b`` (stacks of matrices broadcast as in ``matmul``), split over numba's threads unless
    ``options(num_threads=1)`` or the process may use one core only."""
    rows, inner, columns = a.shape[-2], a.shape[-1], b.shape[-1]
    if rows * inner * columns < _BLAS_SINGLE_THREADED_BELOW:
        return np.matmul(a, b)
    dtype = np.result_type(a, b)
    if dtype not in _gemms() or a.dtype != dtype or b.dtype != dtype:
        return np.matmul(a, b)  # BLAS's own threads
    stack = a.shape[:-2] if a.shape[:-2] == b.shape[:-2] else np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    threads = min(get_options().num_threads or _CORES, numba.config.NUMBA_NUM_THREADS)
    with _OneBlasThread():
        out = None  # None: a route that does not apply, or an operand BLAS cannot read in place
        if rows * columns <= _SMALL_RESULT and inner >= _LONG_INNER:
            out = _blocked_inner(a, b, stack, dtype, threads)
        elif threads >= 2 and math.prod(stack) * rows * inner * columns >= _MIN_SPLIT_MULTIPLY_ADDS and max(rows, columns) >= 2:
            _threads()
            out = _split(a, b, stack, dtype, threads)
        return np.matmul(a, b) if out is None else out


def _blocked_inner(a, b, stack, dtype, parts):
    """``a @ b`` for a small result and a long inner dimension: each of ``parts`` threads sums its
    share of the inner blocks of _INNER_BLOCK in order into its own copy of the result, and the
    copies are added (in order); None where BLAS cannot read an operand in place."""
    rows, inner, columns = a.shape[-2], a.shape[-1], b.shape[-1]
    layouts = _layouts(a, b, dtype.itemsize)
    if layouts is None:
        return None
    (trans_a, lda), (trans_b, ldb) = layouts
    parts = max(1, min(parts, -(-inner // _INNER_BLOCK)))
    partial = np.zeros((*stack, parts, rows, columns), dtype=dtype)
    _threads()
    _inner_blocked_gemm(
        _gemms()[dtype], trans_a, trans_b, rows, columns, inner, dtype.type(1),
        _addresses(a, stack), lda, _addresses(b, stack), ldb, _addresses(partial[..., 0, :, :], stack), columns,
        a.strides[-1], b.strides[-2], _INNER_BLOCK, parts, partial.strides[-3],
    )
    out = partial[..., 0, :, :]
    for part in range(1, parts):
        out = out + partial[..., part, :, :]
    return np.ascontiguousarray(out)
