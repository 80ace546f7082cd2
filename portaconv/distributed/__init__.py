"""Scale out on existing engines: data-parallel training over MPI, batch inference over Dask.

MPI (extra ``[mpi]``: ``pip install 'portaconv[mpi]'``, mpi4py and the mpich wheel): synchronous
data-parallel SGD, one gradient allreduce per step (:mod:`portaconv.distributed.mpi`):
:func:`init`, :func:`rank`, :func:`world_size`, :class:`DistributedSampler`,
:func:`broadcast_parameters`, :func:`allreduce_gradients`, :func:`allreduce_metrics`,
:func:`evaluate_sharded`, :func:`check_consistent`, :func:`guard`. Run the script with
``mpiexec -n K python script.py``.

Dask (extra ``[dask]``: ``pip install 'portaconv[dask]'``): :func:`predict` and :func:`evaluate`
over a ``dask.array`` of NumPy or CuPy chunks (:mod:`portaconv.distributed.dask`), on the active
``distributed.Client`` or dask's local scheduler.

Neither mpi4py nor dask is imported until a function needs it.

GPUs: CuPy gradients are reduced on the device through a CUDA-aware MPI when the MPI library
reports CUDA support, else through NCCL (``cupyx.distributed``), else staged through the host; see
:mod:`portaconv.distributed._cupy`. torch and JAX gradients are staged through NumPy.
"""

from .dask import evaluate, predict
from .mpi import (
    DistributedError,
    MismatchError,
    allreduce_gradients,
    allreduce_metrics,
    broadcast_parameters,
    check_consistent,
    evaluate_sharded,
    get_comm,
    gradient_bytes,
    guard,
    init,
    is_initialized,
    local_rank,
    ranks_on_node,
    rank,
    world_size,
)
from .sampler import DistributedSampler, shard_batches

__all__ = [
    "DistributedError",
    "DistributedSampler",
    "MismatchError",
    "allreduce_gradients",
    "allreduce_metrics",
    "broadcast_parameters",
    "check_consistent",
    "evaluate",
    "evaluate_sharded",
    "get_comm",
    "gradient_bytes",
    "guard",
    "init",
    "is_initialized",
    "local_rank",
    "ranks_on_node",
    "predict",
    "rank",
    "shard_batches",
    "world_size",
]
