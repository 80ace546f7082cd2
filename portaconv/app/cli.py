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
        augment="default" if args.augment is None else None if args.augment == "none" else args.augment,
        data_dir=args.data_dir, out=args.out, dataset=args.dataset, progress=args.progress,
        resume=args.resume, overwrite=args.overwrite, distributed=args.distributed,
        command="portaconv " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    return 0


def _evaluate(args):
    from .train import check_device, evaluate_checkpoint, latest_checkpoint

    if args.dask is not None:
        from .dask_eval import require

        require()  # says what to install before any work
    backend = check_device(args.backend, args.device)
    path = args.checkpoint or latest_checkpoint(args.model or "seed-cnn")
    if args.dask is not None:
        from .dask_eval import evaluate_checkpoint_dask

        (loss, accuracy), meta = evaluate_checkpoint_dask(path, args.dask or None, backend=backend, data_dir=args.data_dir,
                                                          model=args.model)
    else:
        (loss, accuracy), meta = evaluate_checkpoint(path, backend=args.backend, device=args.device, data_dir=args.data_dir,
                                                     model=args.model)
    epoch = f" (epoch {meta['epoch']})" if "epoch" in meta else ""
    print(f"{meta['model']}{epoch} from {path} on {backend}, test set from {meta['data_dir']}: "
          f"test loss {loss:.4f}, accuracy {100 * accuracy:.2f}%")
    return 0


def _check(args):
    from .check import run_check

    return run_check(args.backend, device=args.device)


def _bench(args):
    from .bench import main as bench_main

    return bench_main(args)


def _defaults_table():
    from .train import model_default

    keys = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "label_smoothing", "augment")
    rows = [["model", *(k.replace("_", "-") for k in keys)]]
    for name in models.MODELS:
        rows.append([name, *(("none" if v is None else f"{v:g}" if isinstance(v, float) else str(v))
                             for v in (model_default(name, k) for k in keys))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "model defaults (a flag left out takes its model's value):\n" + "\n".join(lines)


def _add_train(commands):
    from .datasets import AUGMENTATIONS
    from .train import PROGRESS

    train = commands.add_parser(
        "train", help="train a built-in model (default: seed-cnn on Fashion-MNIST)", epilog=_defaults_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a built-in model. The run folder (--out) gets checkpoint.npz, metrics.json and\n"
                    "curves.png, committed at the end of every epoch; --resume continues an interrupted run\n"
                    "exactly. Ctrl-C stops at the last committed epoch (exit code 130), SIGTERM likewise (143).")
    add = train.add_argument
    add("--model", default=None, choices=list(models.MODELS), help="network to train (default: seed-cnn)")
    add("--backend", default=None, help="numpy, cupy, torch, jax or array_api_strict (default: numpy; with --resume, the run's)")
    add("--device", default=None, help="backend device, e.g. cuda:0 for torch (default: the backend's; with --resume, the run's)")
    add("--dtype", default=None, choices=["float32", "float64"], help="(default: float32)")
    add("--epochs", type=int, default=None, metavar="N", help="(default: the model's, in the table below)")
    add("--batch-size", type=int, default=None, metavar="N", help="(default: the model's, in the table below)")
    add("--lr", type=float, default=None, help="peak learning rate of the cosine schedule (default: the model's, in the table below)")
    add("--optimizer", default=None, choices=["adam", "adamw", "sgd"],
        help="adamw: decoupled weight decay; sgd: momentum 0.9, Nesterov (default: the model's, in the table below)")
    add("--weight-decay", type=float, default=None,
        help="weight decay: L2 in the gradient for adam and sgd, decoupled for adamw (default: the model's, in the table below)")
    add("--label-smoothing", type=float, default=None,
        help="label smoothing of the training loss (default: the model's, in the table below)")
    add("--augment", default=None, choices=[a or "none" for a in AUGMENTATIONS],
        help="training augmentation (default: the model's, in the table below)")
    add("--seed", type=int, default=None, help="seed of the initialization, data order and augmentation (default: 0)")
    add("--limit", type=int, default=None, metavar="N",
        help="train on the first N images only, test on the first max(N/6, 1000) (default: all)")
    add("--dataset", default=None, choices=["fashion-mnist", "mnist"], help="(default: fashion-mnist)")
    add("--data-dir", default=None, metavar="DIR",
        help="folder of the four IDX .gz files, the only place looked at: missing files are downloaded there or the "
             "command fails naming them (default: $PORTACONV_DATA, the same way; else ~/.cache/portaconv/DATASET, "
             "then /usr/share/datasets/fashion-mnist, else a download into the cache)")
    add("--out", default=None, metavar="DIR", help="run folder, new or empty (default: runs/MODEL)")
    add("--distributed", action="store_true",
        help="data-parallel over the ranks of an MPI job: mpiexec -n K portaconv train --distributed ...; the global "
             "batch stays --batch-size (batch/K per rank), rank 0 prints and writes the run folder (needs "
             "pip install 'portaconv[mpi]')")
    runs = train.add_mutually_exclusive_group()
    runs.add_argument("--resume", default=None, metavar="DIR",
                      help="continue the run in DIR from its last completed epoch, with its flags")
    runs.add_argument("--overwrite", action="store_true", help="replace the run held by --out (at the end of the first epoch)")
    shows = train.add_mutually_exclusive_group()
    shows.add_argument("--progress", default="auto", choices=PROGRESS,
                       help="bar: a progress bar per epoch; lines: a line per epoch; none: neither; auto: a bar on a "
                            "terminal, else lines (default: auto)")
    shows.add_argument("--no-progress", dest="progress", action="store_const", const="none", help="same as --progress none")
    train.set_defaults(run=_train)


def build_parser():
    from .. import __version__

    parser = argparse.ArgumentParser(prog="portaconv", description="CNN layer math on any Array API backend.")
    parser.add_argument("--version", action="version", version=f"portaconv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)

    evaluate = commands.add_parser("evaluate", help="test accuracy of a checkpoint")
    evaluate.add_argument("--checkpoint", default=None, metavar="FILE",
                          help="(default: the most recent runs/**/checkpoint.npz of --model)")
    evaluate.add_argument("--model", default=None, choices=list(models.MODELS), help="(default: seed-cnn)")
    evaluate.add_argument("--backend", default="numpy", help="(default: numpy)")
    evaluate.add_argument("--device", default=None, help="(default: the backend's)")
    evaluate.add_argument("--data-dir", default=None, metavar="DIR", help="as for train")
    evaluate.add_argument("--dask", nargs="?", const="", default=None, metavar="ADDRESS",
                          help="evaluate on the Dask cluster at ADDRESS (scheduler address), or on a local cluster of "
                               "2 worker processes when no ADDRESS is given (needs pip install 'portaconv[dask]')")
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
    from .train import Terminated, TrainingFailed

    try:
        return args.run(args)
    except KeyboardInterrupt as interrupt:
        if args.command != "train":  # train says what it kept and how to resume
            print(f"portaconv {args.command}: interrupted", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130  # 128 + the signal's number
    except TrainingFailed as error:
        print(f"portaconv {args.command}: error: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, ImportError, RuntimeError, OSError) as error:
        if not getattr(error, "quiet", False):  # quiet: another rank of an MPI job reports it
            print(f"portaconv {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
