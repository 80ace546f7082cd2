"""Threads per rank: run as ``mpiexec -n 2 python threads.py MODE`` (MODE ``auto``, ``none`` or an
int, passed as ``init(num_threads=...)``); each rank prints one line of what it sees."""

import sys

import portaconv
import portaconv.distributed as dist
from portaconv.primitives.numpy_products import usable_cores


def main(mode):
    value = "auto" if mode == "auto" else None if mode == "none" else int(mode)
    dist.init(num_threads=value)
    print(f"rank {dist.rank()} local_rank {dist.local_rank()} ranks_on_node {dist.ranks_on_node()} "
          f"cores {usable_cores()} num_threads {portaconv.get_options().num_threads}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
