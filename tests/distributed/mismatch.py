"""Ranks that disagree: run as ``mpiexec -n 2 python mismatch.py WHAT``; every rank must raise at init.

WHAT ``flags``: rank 1 passes lr 0.2 where rank 0 passes 0.1. ``model``: rank 1 builds the model
in float64. ``none``: no difference (the check passes and ``ok`` is printed).
"""

import sys

import portaconv.distributed as dist
from portaconv.app import models


def main(what):
    from mpi4py import MPI

    me = MPI.COMM_WORLD.Get_rank()
    odd = me == 1
    dtype = "float64" if what == "model" and odd else "float32"
    flags = {"lr": 0.2 if what == "flags" and odd else 0.1, "batch_size": 64}
    try:
        dist.init(model=models.build("seed-cnn", dtype=dtype), flags=flags)
    except dist.MismatchError as error:
        print(f"rank {me} raised MismatchError: {error}", flush=True)
        sys.exit(3)
    print(f"rank {me} ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
