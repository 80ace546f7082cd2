"""Synchronous data-parallel training over MPI (mpi4py): the Horovod pattern.

Every rank holds a full copy of the model; :func:`broadcast_parameters` makes the copies equal
at the start, each rank computes the gradient of its shard of the global batch
(:class:`~portaconv.distributed.DistributedSampler`), :func:`allreduce_gradients` averages the
gradients with one collective per step, and every rank then takes the same optimizer step, so the
copies stay equal. mpi4py is imported on the first call that needs it (``init``), never at
``import portaconv.distributed``.

A training step, from a user's script run as ``mpiexec -n K python train.py``::

    import portaconv.distributed as dist
    dist.init(model=net, flags={"lr": lr, "batch_size": 64})   # same model and flags on every rank?
    dist.broadcast_parameters(net)                             # rank 0's initial weights everywhere
    sampler = dist.DistributedSampler(len(train_set), 64, seed=epoch)
    for x, y in dist.shard_batches(train_set, sampler):
        with dist.guard(timeout=600):                          # a failing rank stops the job
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            dist.allreduce_gradients(net)                      # one collective: the mean gradient
            opt.step()

Equivalence and its limits: with equal shards the mean of the ranks' mean-reduced losses is the
global batch's mean, so the averaged gradient is the one-process gradient of the global batch, up
to floating-point summation order. Models with BatchNorm are *not* equivalent: each rank
normalizes with its own shard's batch statistics and updates its own running statistics (torch
``DistributedDataParallel``'s default, without ``SyncBatchNorm``); :func:`broadcast_parameters`
again makes the running statistics equal when called (before evaluation, say).

Faults: MPI collectives block until every rank enters them, so a rank that raises and leaves the
loop would leave the others waiting forever. :func:`guard` prints the error with the rank and
calls ``MPI_Abort``, which ends every rank of the job (MPICH's ``mpiexec`` kills them all); its
``timeout`` also aborts a step that hangs. A rank that dies (a signal, ``os._exit``) is noticed
by MPICH's ``mpiexec``, which then ends the others.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import sys
import threading
import time
import traceback

import numpy as np
import array_api_compat

from .._backend import backend_name, namespace_of, to_numpy

__all__ = [
    "DistributedError",
    "MismatchError",
    "init",
    "is_initialized",
    "get_comm",
    "rank",
    "world_size",
    "local_rank",
    "ranks_on_node",
    "check_consistent",
    "broadcast_parameters",
    "allreduce_gradients",
    "allreduce_metrics",
    "evaluate_sharded",
    "gradient_bytes",
    "guard",
]

INSTALL_HINT = "pip install 'portaconv[mpi]'"

_comm = None
_node_ranks = None  # (rank on this node, ranks on this node), found once
_ABORT_GRACE = 1.0  # seconds between printing a failure and MPI_Abort
_LISTED = 8  # differences listed per rank in a MismatchError


class DistributedError(RuntimeError):
    """A distributed call cannot proceed (MPI not initialized, ...)."""


class MismatchError(DistributedError):
    """Ranks disagree on something they must share (the model's layout, the flags, metric keys)."""


# -- setup ----------------------------------------------------------------------------------------
def _mpi():
    """The ``mpi4py.MPI`` module (importing it initializes MPI), or an ImportError saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"portaconv.distributed needs mpi4py and an MPI library ({error}); install them with {INSTALL_HINT} "
            "(mpi4py and the mpich wheel, which provides mpiexec)"
        ) from error
    return MPI


def init(comm=None, *, model=None, flags=None, num_threads="auto"):
    """Join the MPI job this process was started in (``mpiexec -n K python ...``).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The communicator of the ranks that train together; ``MPI.COMM_WORLD`` by default. A
        process started without ``mpiexec`` is a job of one rank.
    model : portaconv.nn.Module, optional
        Checked with :func:`check_consistent` together with ``flags``.
    flags : dict, optional
        Settings every rank must share (learning rate, batch size, ...), checked likewise.
    num_threads : "auto", int or None
        Threads for this rank's compiled NumPy kernels and matrix products, set for the process
        with ``portaconv.set_options(num_threads=...)``. ``"auto"``: when several ranks share a
        node, each takes its share of the cores this process may use (``cores // ranks on the
        node``, at least 1), so the ranks do not fight over cores; one rank on its node keeps the
        setting it has. ``None``: leave the setting alone.

    Returns
    -------
    mpi4py.MPI.Comm
        The communicator now used by default by this module's functions.

    Raises
    ------
    ImportError
        When mpi4py is missing (the message names ``pip install 'portaconv[mpi]'``).
    MismatchError
        On every rank, when ``model`` or ``flags`` differ between ranks.
    """
    MPI = _mpi()
    if not MPI.Is_initialized():  # mpi4py.rc.initialize = False was set: initialize here, finalize at exit
        MPI.Init_thread(MPI.THREAD_MULTIPLE)
        atexit.register(lambda: MPI.Is_finalized() or MPI.Finalize())
    global _comm, _node_ranks
    _comm = MPI.COMM_WORLD if comm is None else comm
    _node_ranks = None
    if num_threads == "auto" and ranks_on_node() > 1:
        from ..primitives.numpy_products import usable_cores

        num_threads = max(1, usable_cores() // ranks_on_node())
    if num_threads not in ("auto", None):
        from .._options import set_options

        set_options(num_threads=num_threads)
    if model is not None or flags is not None:
        check_consistent(model, flags)
    return _comm


def is_initialized() -> bool:
    """Whether :func:`init` has been called in this process."""
    return _comm is not None


def get_comm():
    """The communicator :func:`init` chose.

    Raises
    ------
    DistributedError
        Before :func:`init`.
    """
    if _comm is None:
        raise DistributedError("portaconv.distributed.init() has not been called in this process; call it first (under mpiexec -n K)")
    return _comm


def _resolve(comm):
    return get_comm() if comm is None else comm


def rank() -> int:
    """This process's rank in the job (0 … world_size() - 1); needs :func:`init`."""
    return get_comm().Get_rank()


def world_size() -> int:
    """The number of ranks K in the job; needs :func:`init`."""
    return get_comm().Get_size()


def local_rank() -> int:
    """This process's rank among the ranks on its own node: the GPU index to use, one GPU per rank
    (``device=f"cuda:{local_rank()}"`` on torch, ``cupy.cuda.Device(local_rank()).use()``)."""
    return _node()[0]


def ranks_on_node() -> int:
    """How many ranks of the job run on this process's node (they share its cores and memory)."""
    return _node()[1]


def _node():
    global _node_ranks
    if _node_ranks is None:
        MPI = _mpi()
        node = get_comm().Split_type(MPI.COMM_TYPE_SHARED)
        _node_ranks = (node.Get_rank(), node.Get_size())
        node.Free()
    return _node_ranks


# -- agreement between ranks -----------------------------------------------------------------------
def _signature(model) -> list:
    """The model's parameters and buffers in state order: ``"name: kind shape dtype"`` strings."""
    lines = []
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        for kind, table in (("parameter", module._parameters), ("buffer", module._buffers)):
            for name, value in table.items():
                if value is not None:
                    array = value.data if kind == "parameter" else value
                    lines.append(f"{dot}{name}: {kind} {tuple(array.shape)} {_dtype_name(array.dtype)}")
    return lines


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _plain(description: dict) -> dict:
    """The description as JSON would give it back (tuples become lists, other objects their repr)."""
    return json.loads(json.dumps(description, sort_keys=True, default=repr))


def _digest(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def _model_differences(reference: list, other: list) -> list:
    ref = dict(line.split(": ", 1) for line in reference)
    own = dict(line.split(": ", 1) for line in other)
    found = [f"lacks {name} (rank 0: {ref[name]})" for name in ref if name not in own]
    found += [f"has {name} ({own[name]}), which rank 0 lacks" for name in own if name not in ref]
    found += [f"{name} is {own[name]}, rank 0 has {ref[name]}" for name in ref if name in own and own[name] != ref[name]]
    if not found and reference != other:
        found.append("the parameters and buffers come in another order than on rank 0")
    return found


def _dict_differences(reference: dict, other: dict, what: str) -> list:
    found = [f"lacks {what} {key!r} (rank 0: {reference[key]!r})" for key in reference if key not in other]
    found += [f"has {what} {key!r} = {other[key]!r}, which rank 0 lacks" for key in other if key not in reference]
    found += [f"{what} {key!r} = {other[key]!r}, rank 0 has {reference[key]!r}" for key in reference
              if key in other and other[key] != reference[key]]
    return found


def _differences(reference: dict, other: dict) -> list:
    found = []
    for section in sorted(set(reference) | set(other)):
        if section not in other or section not in reference:
            found.append(f"{'gave no' if section not in other else 'gave a'} {section} where rank 0 {'did' if section in reference else 'did not'}")
        elif section == "model":
            found += [f"model: {d}" for d in _model_differences(reference[section], other[section])]
        else:
            found += _dict_differences(reference[section], other[section], section.rstrip("s"))
    return found


def _agree(comm, description: dict, what: str):
    """Check that every rank passed an equal ``description``; raise on every rank when not.

    One allgather of a SHA-256 digest; only on a mismatch a second one gathers the descriptions,
    to name the ranks and what differs. Every rank raises, so none is left waiting in a collective.
    """
    description = _plain(description)
    digests = comm.allgather(_digest(description))
    if len(set(digests)) == 1:
        return
    descriptions = comm.allgather(description)
    lines = []
    for other, (digest, seen) in enumerate(zip(digests, descriptions)):
        if digest != digests[0]:
            found = _differences(descriptions[0], seen) or ["differs"]
            lines += [f"  rank {other} {difference}" for difference in found[:_LISTED]]
            lines += [f"  rank {other}: {len(found) - _LISTED} more differences"] if len(found) > _LISTED else []
    raise MismatchError(
        f"{what}: the {comm.Get_size()} ranks disagree (raised on rank {comm.Get_rank()}); compared with rank 0:\n" + "\n".join(lines)
    )


def check_consistent(model=None, flags=None, *, comm=None):
    """Check that every rank built the same model and passed the same flags.

    Compares a SHA-256 digest of the model's parameter and buffer names, shapes and dtypes (in
    state order: the layout of the gradient buffer) and of ``flags`` across ranks: one small
    collective. On a mismatch every rank raises, naming each differing rank and what differs.

    Parameters
    ----------
    model : portaconv.nn.Module, optional
    flags : dict, optional
        JSON-like settings (values compared through their JSON form, others through ``repr``).
    comm : mpi4py.MPI.Comm, optional
        The communicator of :func:`init` by default.

    Raises
    ------
    MismatchError
        For example ``rank 1 flag 'lr' = 0.2, rank 0 has 0.1`` or
        ``rank 1 model: 0.weight is parameter (32, 1, 3, 3) float64, rank 0 has ... float32``.
    """
    description = {}
    if model is not None:
        description["model"] = _signature(model)
    if flags is not None:
        description["flags"] = {str(key): value for key, value in dict(flags).items()}
    _agree(_resolve(comm), description, "check_consistent")


# -- parameters and buffers ------------------------------------------------------------------------
def broadcast_parameters(model, root: int = 0, *, comm=None):
    """Copy ``root``'s parameters and buffers (BatchNorm's running statistics) to every rank.

    The state goes as the bytes of one contiguous host buffer in one ``Bcast`` (any dtypes, no
    pickling), after a check that every rank's model has the same layout (else every rank raises
    :class:`MismatchError`). Values are reassigned, never written in place, keeping each array's
    backend, dtype and device (:meth:`portaconv.nn.Module.load_state_dict`).

    Parameters
    ----------
    model : portaconv.nn.Module
    root : int
        The rank whose values everyone takes.
    comm : mpi4py.MPI.Comm, optional
    """
    comm = _resolve(comm)
    if not 0 <= root < comm.Get_size():
        raise ValueError(f"broadcast_parameters: root must be a rank in 0..{comm.Get_size() - 1}, got {root}")
    _agree(comm, {"model": _signature(model)}, "broadcast_parameters")
    state = {key: np.asarray(to_numpy(value), order="C") for key, value in model.state_dict().items()}
    sizes = [value.nbytes for value in state.values()]
    buffer = np.empty(sum(sizes), dtype=np.uint8)
    if comm.Get_rank() == root:
        _pack_bytes(state.values(), sizes, buffer)
    comm.Bcast(buffer, root=root)
    model.load_state_dict(_unpack_bytes(state, sizes, buffer))


def _pack_bytes(arrays, sizes, buffer):
    start = 0
    for array, size in zip(arrays, sizes):
        buffer[start : start + size] = array.reshape(-1).view(np.uint8)
        start += size


def _unpack_bytes(like: dict, sizes, buffer) -> dict:
    out, start = {}, 0
    for (key, array), size in zip(like.items(), sizes):
        out[key] = buffer[start : start + size].view(array.dtype).reshape(array.shape).copy()
        start += size
    return out


# -- gradients -------------------------------------------------------------------------------------
def _trainable(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def _host_dtype(params):
    return np.result_type(*[np.dtype(_dtype_name(p.data.dtype)) for p in params])


def _flatten_gradients(grads, sizes, xp, dtype, weight: float):
    """One contiguous buffer ``[g_0 · w, …, g_n · w, has_grad_0, …, has_grad_n, w]`` of namespace ``xp``.

    A missing gradient (``None``) contributes zeros and ``has_grad = 0``; after a sum over ranks
    the last entry is the summed weight, the divisor of the mean.
    """
    parts = []
    for grad, size in zip(grads, sizes):
        if grad is None:
            parts.append(xp.zeros(size, dtype=dtype))
        else:
            flat = xp.reshape(xp.astype(grad, dtype), (size,))
            parts.append(flat if weight == 1.0 else flat * weight)
    flags = [0.0 if grad is None else 1.0 for grad in grads] + [weight]
    like = parts[0] if parts else None
    return xp.concat(parts + [xp.asarray(flags, dtype=dtype, device=array_api_compat.device(like) if like is not None else None)])


def _assign_gradients(params, sizes, buffer, xp):
    """Divide the summed buffer by the summed weight and give each parameter its mean gradient
    (``None`` where no rank had one), as an array of the parameter's backend, dtype and device."""
    count = len(params)
    total = sum(sizes)
    present = to_numpy(buffer[total : total + count])
    weight = float(to_numpy(buffer[-1]))
    grads = buffer[:total] / (weight if weight > 0 else 1.0)
    start = 0
    for p, size, has in zip(params, sizes, present):
        if has == 0:
            p.grad = None
        else:
            like = p.grad if p.grad is not None else p.data
            p.grad = _like(xp.reshape(grads[start : start + size], tuple(p.data.shape)), like)
        start += size


def _like(array, like):
    """``array`` (NumPy or CuPy) as an array of ``like``'s backend, dtype and device."""
    if backend_name(array) == backend_name(like):
        return namespace_of(array).astype(array, like.dtype, copy=False)
    xp = namespace_of(like)
    return xp.asarray(array, dtype=like.dtype, device=array_api_compat.device(like))


def allreduce_gradients(model, *, count=None, comm=None) -> int:
    """Average every trainable parameter's gradient across the ranks, in one collective.

    The gradients are flattened into one contiguous float buffer (the widest parameter dtype),
    summed with one ``Allreduce`` and divided by the number of ranks, or, when ``count`` is given,
    weighted by each rank's sample count (the exact mean of the global batch when the shards
    differ in size: the last batch of an epoch). NumPy buffers go to MPI directly, without
    pickling; torch, JAX and array-api-strict gradients are staged through a NumPy buffer; CuPy
    gradients take a CUDA-aware MPI, NCCL or host staging (:mod:`portaconv.distributed._cupy`).

    Parameters
    ----------
    model : portaconv.nn.Module
        The same layout on every rank (:func:`check_consistent`), else the buffers do not line up.
    count : int, optional
        The number of samples behind this rank's mean-reduced gradient (0 for an empty shard:
        the rank still has to call, so that the collective completes).
    comm : mpi4py.MPI.Comm, optional

    Returns
    -------
    int
        The bytes of the buffer reduced (gradients plus one flag per parameter and the weight).

    Notes
    -----
    A parameter without a gradient on some rank counts as a zero gradient there; one with no
    gradient on any rank keeps ``grad = None``.
    """
    comm = _resolve(comm)
    params = _trainable(model)
    if not params:
        return 0
    weight = 1.0 if count is None else float(count)
    sizes = [int(np.prod(tuple(p.data.shape), dtype=np.int64)) for p in params]
    dtype = _host_dtype(params)
    if any(backend_name(p.data) == "cupy" for p in params):
        from ._cupy import allreduce_cupy

        return allreduce_cupy(comm, params, sizes, dtype, weight)
    import array_api_compat.numpy as xp

    buffer = _flatten_gradients([None if p.grad is None else to_numpy(p.grad) for p in params], sizes, xp, dtype, weight)
    comm.Allreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)
    _assign_gradients(params, sizes, buffer, xp)
    return int(buffer.nbytes)


def gradient_bytes(model) -> int:
    """Bytes of the gradient values one :func:`allreduce_gradients` call reduces per rank
    (parameter count × item size; the call adds one flag per parameter and the weight)."""
    return sum(int(np.prod(tuple(p.data.shape), dtype=np.int64)) * np.dtype(_dtype_name(p.data.dtype)).itemsize for p in _trainable(model))


# -- metrics and evaluation ------------------------------------------------------------------------
def allreduce_metrics(metrics: dict, *, op: str = "sum", comm=None) -> dict:
    """Sum (or average) scalar metrics over the ranks: one float64 ``Allreduce`` (after a small
    ``allgather`` checking that the ranks passed the same names).

    Parameters
    ----------
    metrics : dict
        Names to numbers, 0-d arrays or Tensors; the same names on every rank.
    op : {"sum", "mean"}
    comm : mpi4py.MPI.Comm, optional

    Returns
    -------
    dict
        The same names, as Python floats.

    Raises
    ------
    MismatchError
        On every rank when the ranks passed different names.

    Examples
    --------
    Loss of a global batch from per-rank mean losses, weighting by the shard sizes::

        total = allreduce_metrics({"loss": loss.item() * n, "count": n})
        loss_global = total["loss"] / total["count"]
    """
    if op not in ("sum", "mean"):
        raise ValueError(f"allreduce_metrics: op must be 'sum' or 'mean', got {op!r}")
    comm = _resolve(comm)
    keys = sorted(metrics)
    _agree(comm, {"metric names": {key: True for key in keys}}, "allreduce_metrics")
    values = np.array([float(to_numpy(metrics[key])) for key in keys], dtype=np.float64)
    MPI = _mpi()
    comm.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)
    if op == "mean":
        values /= comm.Get_size()
    return {key: float(value) for key, value in zip(keys, values)}


def evaluate_sharded(model, dataset, *, batch_size=1000, backend="numpy", dtype="float32", device=None, comm=None):
    """Loss and accuracy of a classifier on a dataset split across the ranks.

    Each rank evaluates a contiguous part (``np.array_split`` of the indices) with
    :func:`portaconv.app.train.evaluate`; the sums are reduced with :func:`allreduce_metrics`.
    Equal to the one-process evaluation up to the summation order of the loss.

    Returns
    -------
    (float, float)
        Mean cross-entropy loss and accuracy, the same on every rank.
    """
    from ..app import datasets
    from ..app.train import evaluate

    comm = _resolve(comm)
    part = np.array_split(np.arange(len(dataset)), comm.Get_size())[comm.Get_rank()]
    count, loss_sum, correct = len(part), 0.0, 0.0
    if count:
        shard = datasets.Dataset(dataset.images[part], dataset.labels[part], dataset.mean, dataset.std)
        loss, accuracy = evaluate(model, shard, backend=backend, dtype=dtype, device=device, batch_size=batch_size)
        loss_sum, correct = loss * count, round(accuracy * count)
    total = allreduce_metrics({"loss": loss_sum, "correct": correct, "count": count}, comm=comm)
    return total["loss"] / total["count"], total["correct"] / total["count"]


# -- faults ----------------------------------------------------------------------------------------
def _abort(comm, message: str):
    """Print ``message`` with the rank, then ``MPI_Abort(1)``: the MPI launcher ends every rank."""
    me, size = comm.Get_rank(), comm.Get_size()
    sys.stdout.flush()
    sys.stderr.write(f"portaconv.distributed: rank {me} of {size} failed: {message}\n"
                     f"portaconv.distributed: rank {me} aborts the job (MPI_Abort): every rank stops\n")
    sys.stderr.flush()
    time.sleep(_ABORT_GRACE)  # let mpiexec forward the message: the abort tears its I/O forwarding down
    comm.Abort(1)
    os._exit(1)  # MPI_Abort does not return; should an implementation return, end this rank anyway


@contextlib.contextmanager
def guard(timeout=None, *, comm=None):
    """Stop the whole job, not just this rank, when a step fails or hangs.

    Wrap each training step (anything between collectives) in it. An exception inside prints its
    traceback with the rank to stderr, waits one second (so that ``mpiexec`` forwards the message
    before the abort tears its I/O forwarding down) and calls ``comm.Abort(1)``: MPICH's
    ``mpiexec`` then kills every rank and exits non-zero, where the other ranks would otherwise
    wait forever in their next collective. With one rank the exception propagates normally.

    Parameters
    ----------
    timeout : float, optional
        Seconds the block may take; past it a watchdog thread prints which rank timed out and
        aborts the job (for a rank stuck in a collective because another rank hangs). ``None``:
        no limit. Needs MPI initialized with threads (mpi4py's default, ``MPI_THREAD_MULTIPLE``).
    comm : mpi4py.MPI.Comm, optional

    Examples
    --------
    ::

        with dist.guard(timeout=300):
            loss = step(x, y)
    """
    comm = _resolve(comm)
    timer = None
    if timeout is not None:
        message = f"the guarded step took longer than timeout={timeout} s (a hung rank or collective)"
        timer = threading.Timer(timeout, _abort, args=(comm, message))
        timer.daemon = True
        timer.start()
    try:
        yield
    except BaseException:
        if comm.Get_size() == 1:
            raise
        _abort(comm, "an exception in the guarded step:\n" + traceback.format_exc())
    finally:
        if timer is not None:
            timer.cancel()
