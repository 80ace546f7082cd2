"""Shards of every global batch, in one seeded order shared by all ranks."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DistributedSampler", "shard_batches"]


class DistributedSampler:
    """Each rank's contiguous share of every global batch, the global order seeded alike on all ranks.

    The global order is the permutation :func:`portaconv.app.datasets.batches` draws for the same
    ``seed`` (``np.random.default_rng(seed).permutation(n)``), cut into global batches of
    ``batch_size``; rank r takes the r-th of K contiguous equal parts of each, ``batch_size / K``
    samples. So K ranks together see exactly the batches of one process at ``batch_size``.

    Parameters
    ----------
    n : int
        The number of samples.
    batch_size : int
        The global batch size; a multiple of the number of ranks K.
    seed : int
        The order's seed (pass ``seed + epoch`` for a new order per epoch).
    rank, world_size : int, optional
        This rank and K; from :func:`portaconv.distributed.rank` / ``world_size`` when omitted.
    shuffle : bool
        ``False``: the samples in index order.
    drop_last : bool
        Drop the last global batch when it has fewer than ``batch_size`` samples. When kept, it is
        split as evenly as possible (``np.array_split``: ranks differ by one sample at most; a rank
        may get none when it has fewer than K samples): pass ``count=len(index)`` to
        :func:`~portaconv.distributed.allreduce_gradients` for the exact global mean, and still
        call it on a rank with an empty share, so that the collective completes.

    Raises
    ------
    ValueError
        When K does not divide ``batch_size`` (naming both), or a rank outside 0..K-1.

    Examples
    --------
    >>> from portaconv.distributed import DistributedSampler
    >>> [i.tolist() for i in DistributedSampler(10, 4, shuffle=False, rank=1, world_size=2)]
    [[2, 3], [6, 7], [9]]
    """

    def __init__(self, n, batch_size, seed=0, *, rank=None, world_size=None, shuffle=True, drop_last=False):
        if rank is None or world_size is None:
            from . import mpi

            rank = mpi.rank() if rank is None else rank
            world_size = mpi.world_size() if world_size is None else world_size
        _check(n, batch_size, rank, world_size)
        self.n, self.batch_size, self.seed = int(n), int(batch_size), seed
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.local_batch_size = self.batch_size // self.world_size

    def order(self) -> np.ndarray:
        """The global order of the sample indices (the same on every rank)."""
        return np.random.default_rng(self.seed).permutation(self.n) if self.shuffle else np.arange(self.n)

    def global_batches(self):
        """Yield the global batches' index arrays: one process's batches at ``batch_size``."""
        order = self.order()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size]

    def shard(self, global_index) -> np.ndarray:
        """This rank's contiguous part of one global batch."""
        return np.array_split(np.asarray(global_index), self.world_size)[self.rank]

    def __iter__(self):
        for global_index in self.global_batches():
            yield self.shard(global_index)

    def __len__(self) -> int:
        """The number of steps (the same on every rank)."""
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __repr__(self):
        return (f"DistributedSampler(n={self.n}, batch_size={self.batch_size}, seed={self.seed}, rank={self.rank}, "
                f"world_size={self.world_size}, local_batch_size={self.local_batch_size})")


def _check(n, batch_size, rank, world_size):
    if n < 0:
        raise ValueError(f"DistributedSampler: n must be >= 0, got {n}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"DistributedSampler: rank must be in 0..world_size-1, got rank {rank} of world_size {world_size}")
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(
            f"DistributedSampler (rank {rank}): the global batch_size {batch_size} is not a positive multiple of the "
            f"{world_size} ranks; each rank takes batch_size / {world_size} samples of every global batch"
        )


def shard_batches(dataset, sampler, *, backend="numpy", dtype="float32", device=None, augment=None):
    """Yield this rank's ``(x, y)`` of every step, prepared as :func:`portaconv.app.datasets.batches`
    prepares them (the same normalization, hence the same values per sample as one process).

    ``augment`` draws from a stream per (seed, step, rank), so augmented batches differ from one
    process's; :func:`portaconv.app.datasets.batches` with ``shard=(rank, K)`` (what
    ``portaconv train --distributed`` uses) draws the whole global batch's augmentation instead and
    equals one process's. An empty share gives ``x`` of shape ``(0, 1, H, W)``.
    """
    from ..app import datasets

    for step, index in enumerate(sampler):
        part = datasets.Dataset(dataset.images[index], dataset.labels[index], dataset.mean, dataset.std)
        if len(index) == 0:
            yield _empty(dataset, backend, dtype, device)
            continue
        seed = (int(sampler.seed) * 1_000_003 + step) * sampler.world_size + sampler.rank
        yield next(datasets.batches(part, len(index), shuffle=False, seed=seed, augment=augment, backend=backend, dtype=dtype, device=device))


def _empty(dataset, backend, dtype, device):
    from .._backend import get_namespace

    xp = get_namespace(backend)
    shape = (0, 1) + tuple(dataset.images.shape[1:])
    return xp.zeros(shape, dtype=getattr(xp, dtype), device=device), xp.zeros((0,), dtype=xp.int64, device=device)
