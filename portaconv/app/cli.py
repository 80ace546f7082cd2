"""The ``portaconv`` command: train, evaluate, check, bench."""

from __future__ import annotations

import argparse
import shlex
import sys

from . import models

__all__ = ["main"]


def _train(args):
    from .train import train

    train(
        args.model, backend=args.backend, dtype=args.dtype, device=args.device, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, seed=args.seed, limit=args.limit,
        augment=None if args.augment == "none" else args.augment,
        data_dir=args.data_dir, out=args.out, dataset=args.dataset, progress=not args.no_progress,
        command="portaconv " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    return 0


def _evaluate(args):
    from .train import evaluate_checkpoint

    (loss, accuracy), meta = evaluate_checkpoint(args.checkpoint, backend=args.backend, device=args.device, data_dir=args.data_dir)
    print(f"{meta.get('model')} from {args.checkpoint} on {args.backend}: test loss {loss:.4f}, accuracy {100 * accuracy:.2f}%")
    return 0


def _check(args):
    from .check import run_check

    return run_check(args.backend, device=args.device)


def _bench(args):
    from .bench import main as bench_main

    return bench_main(args)


def build_parser():
    parser = argparse.ArgumentParser(prog="portaconv", description="CNN layer math on any Array API backend.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a built-in model (default: seed-cnn on Fashion-MNIST)")
    train.add_argument("--model", default="seed-cnn", choices=sorted(models.MODELS))
    train.add_argument("--backend", default="numpy", help="numpy, cupy, torch or array_api_strict (default numpy)")
    train.add_argument("--device", default=None, help="backend device, e.g. cuda:0 for torch")
    train.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    train.add_argument("--epochs", type=int, default=None, help="default: the model's (see portaconv.app.models.DEFAULTS)")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--optimizer", default=None, choices=["adam", "sgd"], help="sgd: momentum 0.9, Nesterov")
    train.add_argument("--weight-decay", type=float, default=None, help="L2 weight decay (default: the model's)")
    train.add_argument("--label-smoothing", type=float, default=None, help="label smoothing of the training loss (default: the model's)")
    train.add_argument("--augment", default="default", choices=["default", "flip", "shift1", "shift2", "flip+shift1", "flip+shift2", "none"],
                       help="training augmentation (default: the model's, see portaconv.app.models.DEFAULTS)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    train.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    train.add_argument("--data-dir", default=None)
    train.add_argument("--out", default=None, help="output directory (default runs/<model>)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="test accuracy of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--backend", default="numpy")
    evaluate.add_argument("--device", default=None)
    evaluate.add_argument("--data-dir", default=None)
    evaluate.set_defaults(run=_evaluate)

    check = commands.add_parser(
        "check", help="every op, forward and backward, on a backend against float64 NumPy on the Array API reference path",
        description="Every functional op, forward and backward, in float32 and float64 on the chosen backend (its kernels, "
                    "as a user runs it), compared with float64 NumPy run with portaconv.options(reference=True): the "
                    "Array API reference path, no compiled kernels. No torch needed.",
    )
    check.add_argument("--backend", required=True)
    check.add_argument("--device", default=None)
    check.set_defaults(run=_check)

    bench = commands.add_parser("bench", help="time ops side by side with torch")
    from .bench import add_arguments

    add_arguments(bench)
    bench.set_defaults(run=_bench)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, ImportError, RuntimeError, OSError) as error:
        print(f"portaconv {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
