"""Data-parallel scaling: measure a training step and its gradient allreduce, project K workers.

Measure (every rank of ``mpiexec -n K``, or one process without mpiexec)::

    mpiexec -n 2 python benchmarks/scaling.py measure --model seed-cnn --batch-size 64

times, for a global batch split over the K ranks (``--batch-size`` per rank with ``--per-rank``),
the compute of one training step (forward, ``loss.backward()``, optimizer step: no communication)
and one :func:`portaconv.distributed.allreduce_gradients`, median of ``--steps`` after warm-up,
and prints one JSON line (rank 0). :func:`portaconv.distributed.init` gives each rank its share
of the node's cores, as ``portaconv train --distributed`` does.

Project (pure arithmetic, no MPI)::

    python benchmarks/scaling.py project --step-ms 17 --bytes 139304 --batch 64

prints the step time and images/s for 1, 2, 8, 64 and 512 workers under the model below, on two
networks. The model (all assumptions):

- weak scaling: each worker keeps the per-worker batch and its measured compute time ``T_c``
  (identical workers, no stragglers; the global batch grows with K, so the learning rate must be
  re-tuned — the CLI instead keeps the global batch, which stops scaling once batch/K is small);
- the gradient allreduce is MPICH's large-message algorithm (Rabenseifner: reduce-scatter, then
  allgather), ``T_ar = 2·log2(K)·α + 2·(K−1)/K · N/β + (K−1)/K · N/γ`` with N the bytes of
  gradients per worker, α the per-message latency, β the link bandwidth per worker, γ the
  reduction's memory speed (summing N bytes; 5 GB/s, one core);
- no overlap of communication with the backward pass (portaconv reduces after ``backward()``,
  one collective per step), so ``T_step = T_c + T_ar``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

NETWORKS = {  # name: (latency α in s, bandwidth β in bytes/s)
    "10 GbE (α 25 µs, β 1.25 GB/s)": (25e-6, 1.25e9),
    "100 Gb/s InfiniBand (α 2 µs, β 12.5 GB/s)": (2e-6, 12.5e9),
}
REDUCE_BYTES_PER_S = 5e9
WORKERS = (1, 2, 8, 64, 512)


def allreduce_seconds(nbytes: int, workers: int, latency: float, bandwidth: float) -> float:
    """Rabenseifner's allreduce of ``nbytes`` over ``workers`` ranks (0 for one rank)."""
    if workers == 1:
        return 0.0
    share = (workers - 1) / workers
    return 2 * math.log2(workers) * latency + 2 * share * nbytes / bandwidth + share * nbytes / REDUCE_BYTES_PER_S


def project(step_ms: float, nbytes: int, batch: int) -> str:
    lines = [f"compute {step_ms:g} ms per step at {batch} images per worker, {nbytes:,} bytes of gradients", ""]
    lines.append("| network | " + " | ".join(f"K={k}" for k in WORKERS) + " |")
    lines.append("|---|" + "---:|" * len(WORKERS))
    for name, (latency, bandwidth) in NETWORKS.items():
        cells = []
        for k in WORKERS:
            step = step_ms / 1e3 + allreduce_seconds(nbytes, k, latency, bandwidth)
            cells.append(f"{k * batch / step:,.0f} img/s ({100 * step_ms / 1e3 / step:.0f} %)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure(model_name: str, batch_size: int, per_rank: bool, steps: int, dtype: str) -> dict | None:
    import numpy as np

    import portaconv
    import portaconv.distributed as dist
    import portaconv.functional as F
    from portaconv import optim
    from portaconv.app import models

    comm = dist.init()
    me, k = comm.Get_rank(), comm.Get_size()
    local = batch_size if per_rank else batch_size // k
    net = models.build(model_name, dtype=dtype)
    dist.broadcast_parameters(net)
    opt = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(me)
    x = rng.standard_normal((local, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 10, local)
    compute, reduce = [], []
    for step in range(steps + 3):
        comm.Barrier()
        start = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        middle = time.perf_counter()
        dist.allreduce_gradients(net)
        end = time.perf_counter()
        opt.step()
        compute.append(middle - start + time.perf_counter() - end)
        reduce.append(end - middle)
    compute, reduce = compute[3:], reduce[3:]
    # The job's step is its slowest rank's.
    compute = comm.allreduce(float(np.median(compute)), op=_max())
    reduce = comm.allreduce(float(np.median(reduce)), op=_max())
    if me:
        return None
    return {"model": model_name, "dtype": dtype, "ranks": k, "batch_per_rank": local, "global_batch": local * k,
            "num_threads": portaconv.get_options().num_threads, "compute_ms": 1e3 * compute, "allreduce_ms": 1e3 * reduce,
            "gradient_bytes": dist.gradient_bytes(net), "images_per_second": local * k / (compute + reduce)}


def _max():
    from mpi4py import MPI

    return MPI.MAX


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--model", default="seed-cnn")
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--per-rank", action="store_true", help="--batch-size per rank (default: global, split over the ranks)")
    m.add_argument("--steps", type=int, default=30)
    m.add_argument("--dtype", default="float32")
    p = sub.add_parser("project")
    p.add_argument("--step-ms", type=float, required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "measure":
        result = measure(args.model, args.batch_size, args.per_rank, args.steps, args.dtype)
        if result is not None:
            print(json.dumps(result), flush=True)
    else:
        print(project(args.step_ms, args.bytes, args.batch))


if __name__ == "__main__":
    main()
