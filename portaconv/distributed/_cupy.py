"""The CuPy gradient allreduce: three paths, chosen once per process.

1. ``"cuda-aware-mpi"``: the device buffer goes to ``MPI_Allreduce`` itself (mpi4py reads its
   ``__cuda_array_interface__``): no host copy and the same communicator as everything else.
   Chosen when the MPI library reports CUDA support (``MPIX_Query_cuda_support()``, in Open MPI
   and MPICH >= 4; the ``mpich`` wheel is built without it), or when
   ``PORTACONV_MPI_CUDA_AWARE=1`` says so (``=0`` rules it out).
2. ``"nccl"``: ``cupyx.distributed.NCCLBackend(K, rank, use_mpi=True)``: NCCL's ring/tree
   allreduce between the GPUs, its communicator set up through MPI (the unique id travels over
   ``MPI.COMM_WORLD``, so this path needs the job's communicator to be ``COMM_WORLD``). Chosen
   when MPI is not CUDA-aware and CuPy has NCCL.
3. ``"host"``: copy the buffer to a NumPy array, ``Allreduce`` it, copy it back: two device-host
   copies of the buffer per step; always works.

``PORTACONV_GPU_ALLREDUCE=cuda-aware-mpi|nccl|host`` forces a path (NCCL is often the faster one
on NVLink machines even where MPI is CUDA-aware). MPI does not see CUDA streams: the current
stream is synchronized before MPI reads the buffer.
"""

from __future__ import annotations

import ctypes
import os

PATHS = ("cuda-aware-mpi", "nccl", "host")

_nccl = {}


def cuda_aware_mpi() -> bool:
    """Whether MPI can read device buffers: ``PORTACONV_MPI_CUDA_AWARE`` when set, else the MPI
    library's ``MPIX_Query_cuda_support()`` when it has one, else False."""
    setting = os.environ.get("PORTACONV_MPI_CUDA_AWARE")
    if setting is not None:
        return setting.strip().lower() in ("1", "true", "yes", "on")
    try:
        from mpi4py import MPI

        query = ctypes.CDLL(MPI.__file__).MPIX_Query_cuda_support
    except (ImportError, OSError, AttributeError):
        return False
    query.restype = ctypes.c_int
    return bool(query())


def nccl_available(comm) -> bool:
    """Whether ``cupyx.distributed.NCCLBackend`` can serve ``comm`` (NCCL present, ``comm`` congruent to COMM_WORLD)."""
    try:
        from cupy.cuda import nccl
        from cupyx.distributed import NCCLBackend  # noqa: F401
        from mpi4py import MPI
    except ImportError:
        return False
    if not getattr(nccl, "available", True):
        return False
    return MPI.Comm.Compare(comm, MPI.COMM_WORLD) in (MPI.IDENT, MPI.CONGRUENT)


def choose_path(comm) -> str:
    """The path :func:`allreduce_cupy` takes (see the module docstring for the order)."""
    forced = os.environ.get("PORTACONV_GPU_ALLREDUCE")
    if forced is not None:
        if forced not in PATHS:
            raise ValueError(f"PORTACONV_GPU_ALLREDUCE must be one of {PATHS}, got {forced!r}")
        return forced
    if cuda_aware_mpi():
        return "cuda-aware-mpi"
    if nccl_available(comm):
        return "nccl"
    return "host"


def _nccl_backend(comm):
    """One ``NCCLBackend`` per (communicator size, device), created on first use (a collective)."""
    import cupy
    from cupyx.distributed import NCCLBackend

    key = (comm.Get_size(), cupy.cuda.Device().id)
    if key not in _nccl:
        _nccl[key] = NCCLBackend(comm.Get_size(), comm.Get_rank(), use_mpi=True)
    return _nccl[key]


def reduce_buffer(comm, buffer, path: str):
    """Sum a CuPy buffer over the ranks by ``path``; returns the summed CuPy buffer."""
    import cupy
    from mpi4py import MPI

    if path == "cuda-aware-mpi":
        cupy.cuda.get_current_stream().synchronize()
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        return buffer
    if path == "nccl":
        out = cupy.empty_like(buffer)
        _nccl_backend(comm).all_reduce(buffer, out, op="sum", stream=cupy.cuda.get_current_stream())
        return out
    host = cupy.asnumpy(buffer)
    comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
    return cupy.asarray(host)


def allreduce_cupy(comm, params, sizes, dtype, weight) -> int:
    """:func:`portaconv.distributed.allreduce_gradients` for CuPy parameters (the buffer stays on the device)."""
    import array_api_compat.cupy as xp

    from .mpi import _assign_gradients, _flatten_gradients

    buffer = _flatten_gradients([p.grad for p in params], sizes, xp, dtype, weight)
    buffer = reduce_buffer(comm, buffer, choose_path(comm))
    _assign_gradients(params, sizes, buffer, xp)
    return int(buffer.nbytes)
