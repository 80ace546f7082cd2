"""K ranks at global batch B against one process at B: run as ``mpiexec -n K python equivalence.py OUT.npz``.

Each rank builds the model from a different seed (so the broadcast must make them equal), trains
``--steps`` steps of global batch ``--batch-size`` on a synthetic set (augmentation off; with
``--samples`` not a multiple of the batch, the last global batch is split unevenly and
``--weighted`` weights the gradients by the shard sizes), and the
per-step global loss (the shard-size-weighted mean of the ranks' mean losses) is recorded. Rank 0
then trains one process at the same global batch and writes both runs to OUT.npz, with whether
all ranks ended with identical parameters and the sharded and one-process evaluations.
"""

import argparse
import hashlib

import numpy as np
from _common import flat_parameters, forward_backward, synthetic

import portaconv.distributed as dist
from portaconv import optim
from portaconv.app import datasets, models
from portaconv.app.train import evaluate


def run_distributed(args, data):
    net = models.build(args.model, dtype=args.dtype, seed=args.seed + 100 * dist.rank())
    dist.broadcast_parameters(net)
    opt = optim.Adam(net.parameters(), lr=args.lr)
    sampler = dist.DistributedSampler(len(data), args.batch_size, seed=args.seed)
    losses = []
    for x, y in dist.shard_batches(data, sampler, dtype=args.dtype):
        with dist.guard(timeout=300):
            loss = forward_backward(net, opt, x, y)
            dist.allreduce_gradients(net, count=int(y.shape[0]) if args.weighted else None)
            opt.step()
        count = int(y.shape[0])
        total = dist.allreduce_metrics({"loss": loss.item() * count, "count": count})
        losses.append(total["loss"] / total["count"])
    return net, losses


def run_single(args, data):
    net = models.build(args.model, dtype=args.dtype, seed=args.seed)
    opt = optim.Adam(net.parameters(), lr=args.lr)
    losses = []
    for x, y in datasets.batches(data, args.batch_size, seed=args.seed, dtype=args.dtype):
        losses.append(forward_backward(net, opt, x, y).item())
        opt.step()
    return net, losses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--model", default="seed-cnn")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, help="the subset's size (default: steps × batch size); "
                        "a last global batch of other size needs --weighted")
    parser.add_argument("--weighted", action="store_true", help="allreduce_gradients(count=shard size): the exact global mean")
    args = parser.parse_args()
    data = synthetic(args.samples or args.steps * args.batch_size, seed=args.seed)
    flags = {"model": args.model, "dtype": args.dtype, "batch_size": args.batch_size, "lr": args.lr, "steps": args.steps}
    dist.init(model=models.build(args.model, dtype=args.dtype), flags=flags)
    net, losses = run_distributed(args, data)
    held_out = synthetic(300, seed=args.seed + 1)
    sharded = dist.evaluate_sharded(net, held_out, batch_size=128, dtype=args.dtype)
    digest = hashlib.sha256(flat_parameters(net).tobytes()).hexdigest()
    digests = dist.get_comm().gather(digest, root=0)
    if dist.rank() != 0:
        return
    single_net, single_losses = run_single(args, data)
    np.savez(args.out, losses=np.array(losses), single_losses=np.array(single_losses),
             parameters=flat_parameters(net), single_parameters=flat_parameters(single_net),
             same_on_all_ranks=len(set(digests)) == 1, world_size=dist.world_size(),
             sharded_evaluation=np.array(sharded),
             evaluation=np.array(evaluate(net, held_out, batch_size=128, dtype=args.dtype)))


if __name__ == "__main__":
    main()
