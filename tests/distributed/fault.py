"""A rank fails at step 3: run as ``mpiexec -n 2 python fault.py MODE``; the job must stop, not hang.

MODE ``raise``: rank 1 raises inside :func:`portaconv.distributed.guard`, which prints the error
with the rank and aborts the job. ``hang``: rank 1 sleeps inside a guard with ``--timeout``; the
watchdog aborts. ``exit``: rank 1's process ends abruptly (``os._exit``); ``mpiexec`` ends the others.
Rank 0 meanwhile waits in its next gradient allreduce.
"""

import argparse
import os
import time

from _common import forward_backward, synthetic

import portaconv.distributed as dist
from portaconv import optim
from portaconv.app import models


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["raise", "hang", "exit"])
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    net = models.build("seed-cnn")
    dist.init(model=net, flags={"mode": args.mode})
    dist.broadcast_parameters(net)
    opt = optim.SGD(net.parameters(), lr=0.01)
    data = synthetic(16 * 10)
    for step, (x, y) in enumerate(dist.shard_batches(data, dist.DistributedSampler(len(data), 16, seed=0))):
        with dist.guard(timeout=args.timeout):
            if step == 3 and dist.rank() == 1:
                if args.mode == "raise":
                    raise RuntimeError("injected failure at step 3")
                if args.mode == "hang":
                    time.sleep(1000)
                os._exit(3)
            forward_backward(net, opt, x, y)
            dist.allreduce_gradients(net)
            opt.step()
        print(f"rank {dist.rank()} finished step {step}", flush=True)
    print(f"rank {dist.rank()}: completed all steps", flush=True)


if __name__ == "__main__":
    main()
