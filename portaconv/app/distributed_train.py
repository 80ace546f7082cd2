"""``mpiexec -n K portaconv train --distributed``: synchronous data-parallel training over MPI.

Every rank holds the model; rank 0's initial parameters are broadcast, each rank takes its
contiguous ``batch_size / K`` part of every global batch (the global batches, their order and
their augmentation are exactly one process's: :func:`portaconv.app.datasets.batches` with
``shard=``), one :func:`~portaconv.distributed.allreduce_gradients` per step (weighted by the
shard sizes: the global batch's mean gradient) inside :func:`~portaconv.distributed.guard`, the
epoch's sums reduced with :func:`~portaconv.distributed.allreduce_metrics`, the test set evaluated
sharded. Without dropout or BatchNorm a run equals one process's up to float summation order.

Rank 0 alone holds the run folder's lock, validates it (``--resume``), prints, and writes
checkpoint.npz, metrics.json (with ``world_size``) and curves.png, as one process does. Every rank
reads the checkpoint on ``--resume``. Flags and the model are compared across ranks at start
(:func:`~portaconv.distributed.check_consistent`); an error on any rank stops every rank, reported
once. A rank that raises or hangs in a step (past :data:`STEP_TIMEOUT`) aborts the job
(``MPI_Abort``); the folder keeps the last committed epoch, and ``--resume`` continues it.

Differences from one process: BatchNorm normalizes with each rank's shard statistics (torch
``DistributedDataParallel``'s default, no SyncBatchNorm); the running statistics are made rank
0's at the end of every epoch, before the evaluation and the checkpoint. Dropout draws each rank's
masks from its own stream (the layer's seed and the rank).

Testing hook: ``PORTACONV_FAULT_RANK=r PORTACONV_FAULT_STEP=n`` make rank r raise at its n-th
training step (counted from 1 over the whole run) — for tests/test_distributed_cli.py only.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from .. import functional as F
from . import datasets
from .checkpoint import read_checkpoint, save_checkpoint
from .rundir import RunFolder
from .train import (TrainingFailed, _Session, _correct, _deferred_interrupt, _epochs, _progress_mode, _resolve, _resumable,
                    _resumed_settings, _rng_states, _validate, check_device, set_epoch_lr)

__all__ = ["train_distributed", "STEP_TIMEOUT", "Quiet"]

INSTALL_HINT = "pip install 'portaconv[mpi]'"
#: Seconds one training step may take on a rank before the job is aborted (a hung rank or collective).
STEP_TIMEOUT = 900.0


class Quiet(RuntimeError):
    """This rank stops because another rank failed; that rank (or rank 0) reports it."""

    quiet = True


def _first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _together(comm, work):
    """Run ``work()`` on every rank; when it raises anywhere, raise everywhere: rank 0 its own
    error or one naming the rank that failed, the others :class:`Quiet` (no message repeated K times)."""
    try:
        result, error = work(), None
    except Exception as caught:  # noqa: BLE001 - re-raised below, on every rank
        result, error = None, caught
    errors = comm.allgather(None if error is None else _first_line(error))
    me = comm.Get_rank()
    if errors[0] is not None:
        if me == 0:
            raise error
        raise Quiet(errors[0])
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        if me == 0:
            raise RuntimeError("; ".join(f"rank {r} of {comm.Get_size()} failed: {e}" for r, e in failed)) from error
        raise Quiet(failed[0][1]) from error
    return result


def _fault_step(me):
    """The testing hook: the step at which this rank raises, or None."""
    if os.environ.get("PORTACONV_FAULT_RANK") != str(me) or not os.environ.get("PORTACONV_FAULT_STEP"):
        return None
    return int(os.environ["PORTACONV_FAULT_STEP"])


class _DistributedSession(_Session):
    """One rank's part of a distributed run: its shards; rank 0 writes."""

    def __init__(self, *args, comm, **kwargs):
        super().__init__(*args, **kwargs)
        self.comm, self.me, self.K = comm, comm.Get_rank(), comm.Get_size()
        self.fault, self.steps_done = _fault_step(self.me), 0

    def build(self):
        super().build()
        if self.me:  # each rank its own dropout stream
            for _, module in self.net.named_modules():
                if getattr(module, "_rng", None) is not None and getattr(module, "seed", None) is not None:
                    module._rng = np.random.default_rng([module.seed, self.me])
        state = self.net.state_dict()
        self.has_buffers = len(state) > len(self.net.parameters())

    def fresh_metrics(self):
        super().fresh_metrics()
        self.metrics["world_size"] = self.K

    def restore(self, checkpoint):
        super().restore(checkpoint)
        ranks = checkpoint.training.get("rank_rng")
        if self.me and ranks and len(ranks) == self.K:
            for name, module in self.net.named_modules():
                if getattr(module, "_rng", None) is not None:
                    module._rng.bit_generator.state = ranks[self.me]["dropout"][name]
        if checkpoint.training["epoch"] < self.s["epochs"]:
            self.metrics["resumes"][-1]["world_size"] = self.K
        self.metrics["world_size"] = self.K

    def _epoch(self, epoch):
        import portaconv.distributed as dist

        s, xp = self.s, self.xp
        lr = set_epoch_lr(self.opt, s, epoch)
        start = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        steps = math.ceil(len(self.train_set) / s["batch_size"])
        batches = datasets.batches(self.train_set, s["batch_size"], seed=s["seed"] * 7919 + epoch, augment=s["augment"],
                                   backend=self.backend, dtype=s["dtype"], device=self.device, shard=(self.me, self.K))
        self.position = (epoch, 0, steps)
        with tqdm(batches, total=steps, desc=f"epoch {epoch}/{s['epochs']}", disable=self.progress != "bar", leave=True) as bar:
            for step, (x, y) in enumerate(bar, 1):
                self.position = (epoch, step, steps)
                count = int(y.shape[0])
                with dist.guard(timeout=STEP_TIMEOUT, comm=self.comm):
                    self.steps_done += 1
                    if self.steps_done == self.fault:
                        raise RuntimeError(f"PORTACONV_FAULT_STEP: injected failure at epoch {epoch}, step {step} (testing hook)")
                    value = 0.0
                    self.opt.zero_grad()
                    if count:
                        out = self.net(x)
                        loss = F.cross_entropy(out, y, label_smoothing=s["label_smoothing"])
                        value = loss.item()
                        if not math.isfinite(value):
                            raise TrainingFailed(self._failure(f"non-finite training loss ({value}) on rank {self.me} at epoch "
                                                               f"{epoch}, step {step} of {steps}"))
                        loss.backward()
                        correct += _correct(out.data, y, xp)
                    dist.allreduce_gradients(self.net, count=count, comm=self.comm)
                    self.opt.step()
                seen += count
                loss_sum += value * count
                if self.progress == "bar":
                    bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}", acc=f"{100 * correct / max(seen, 1):.2f}%",
                                    img_s=f"{self.K * seen / (time.perf_counter() - start):.0f}")
        train_seconds = time.perf_counter() - start
        with dist.guard(timeout=STEP_TIMEOUT, comm=self.comm):
            total = dist.allreduce_metrics({"loss": loss_sum, "correct": correct, "seen": seen}, comm=self.comm)
            if self.has_buffers:  # BatchNorm's running statistics: rank 0's everywhere, as checkpointed
                dist.broadcast_parameters(self.net, comm=self.comm)
            test_loss, test_accuracy = dist.evaluate_sharded(self.net, self.test_set, backend=self.backend, dtype=s["dtype"],
                                                             device=self.device, comm=self.comm)
        if not math.isfinite(test_loss):
            raise TrainingFailed(self._failure(f"non-finite test loss ({test_loss}) after epoch {epoch}"))
        return {"epoch": epoch, "lr": lr, "train_loss": total["loss"] / total["seen"],
                "train_accuracy": total["correct"] / total["seen"], "test_loss": test_loss, "test_accuracy": test_accuracy,
                "seconds": time.perf_counter() - start, "images_per_second": total["seen"] / train_seconds}

    def _commit(self, record):
        """As one process's, by rank 0 alone; the checkpoint also holds every rank's dropout streams."""
        ranks = self.comm.gather(_rng_states(self.net), root=0)
        epoch = record["epoch"]
        metrics = self.metrics
        metrics["epochs"].append(record)
        metrics.update(test_accuracy=record["test_accuracy"], total_seconds=sum(e["seconds"] for e in metrics["epochs"]),
                       checkpoint={"file": "checkpoint.npz", "epoch": epoch}, status="running")
        if self.me:
            self.saved = True
            return
        metadata = {"model": self.s["model"], "dtype": self.s["dtype"], "dataset": self.s["dataset"], "epoch": epoch,
                    "test_accuracy": record["test_accuracy"]}
        training = {"epoch": epoch, "settings": self.s, "data": self.data, "rng": ranks[0], "rank_rng": ranks,
                    "metrics": metrics,
                    "place": {"backend": self.backend_name, "device": None if self.device is None else str(self.device)}}
        with _deferred_interrupt():
            save_checkpoint(self.folder.path / "checkpoint.npz", self.net, metadata, optimizer=self.opt, training=training)
            self._write_metrics()
            if not self.saved and self.overwrite:
                (self.folder.path / "curves.png").unlink(missing_ok=True)
            self.saved = True

    def _write_metrics(self):
        if self.me == 0:
            super()._write_metrics()

    def _finish(self, status, error=None):
        if self.me:
            return None
        return super()._finish(status, error)


def _comm():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise ImportError(f"--distributed needs mpi4py and an MPI library: {INSTALL_HINT}") from None
    import portaconv.distributed as dist

    return dist.init()


def train_distributed(values, augment, *, backend, device, data_dir, out, progress, command, resume, overwrite):
    """:func:`portaconv.app.train.train` with ``distributed=True``; same arguments, run by every rank."""
    import portaconv.distributed as dist

    comm = _comm()
    me, K = comm.Get_rank(), comm.Get_size()
    flags = {**values, "augment": augment, "backend": backend, "data_dir": None if data_dir is None else str(data_dir),
             "out": None if out is None else str(out), "resume": None if resume is None else str(resume),
             "overwrite": overwrite, "progress": progress}
    flags = {key: "(not given)" if value is None else value for key, value in flags.items()}
    quiet = open(os.devnull, "w") if me else None  # noqa: SIM115 - closed below
    try:
        dist.check_consistent(flags=flags, comm=comm)  # every rank raises, naming what differs
        with contextlib.redirect_stdout(quiet) if me else contextlib.nullcontext():
            return _run(comm, me, K, values, augment, backend=backend, device=device, data_dir=data_dir, out=out,
                        progress=progress if me == 0 else "none", command=command, resume=resume, overwrite=overwrite)
    except dist.MismatchError as error:
        if me:
            raise Quiet(str(error)) from None
        raise
    finally:
        if quiet is not None:
            quiet.close()


def _run(comm, me, K, values, augment, *, backend, device, data_dir, out, progress, command, resume, overwrite):
    import portaconv.distributed as dist

    def check_flags():
        given = {k: v for k, v in values.items() if v is not None and k != "augment"}
        if augment != "default":
            given["augment"] = augment
        _validate(given)
        if resume is not None and (overwrite or (out is not None and os.path.realpath(out) != os.path.realpath(resume))):
            raise ValueError(f"--resume {resume} continues the run in its own folder: leave out --out and --overwrite")
        return given, _progress_mode(progress)

    given, progress = _together(comm, check_flags)
    folder = RunFolder(resume if resume is not None else out if out is not None else os.path.join("runs", given.get("model", "seed-cnn")))
    placed = {"backend": "numpy" if backend is None else backend, "device": device}

    def open_folder():  # rank 0: the lock, the folder's checks, the settings
        if resume is None:
            folder.acquire("overwrite" if overwrite else "new")
            return _resolve(given), data_dir, placed["backend"], device
        folder.acquire("resume", "--resume")
        checkpoint = _resumable(folder.path)
        place = checkpoint.training["place"]
        return (_resumed_settings(checkpoint, given, folder.path),
                checkpoint.training["data"]["dir"] if data_dir is None else data_dir,
                place["backend"] if backend is None else backend, device or (place["device"] if backend is None else None))

    try:
        opened = _together(comm, lambda: open_folder() if me == 0 else None)
        settings, data_dir, backend, root_device = comm.bcast(opened, root=0)
        device = device if device is not None else root_device
        bs = settings["batch_size"]

        def prepare():
            if bs % K:
                raise ValueError(f"--batch-size {bs} is the global batch, split over the {K} ranks of mpiexec -n {K}: "
                                 f"{bs} is not a multiple of {K} (pass --batch-size {max(K, bs // K * K)} or another multiple of {K})")
            return check_device(backend, device)

        backend_name = _together(comm, prepare)
        session = _DistributedSession(settings, folder, backend=backend, backend_name=backend_name, device=device,
                                      progress=progress, command=command or " ".join(sys.argv), overwrite=overwrite, comm=comm)
        _together(comm, lambda: session.load_data(data_dir) if me == 0 else None)  # rank 0 first: it may download
        _together(comm, lambda: session.load_data(data_dir) if me else None)
        _together(comm, session.build)
        dist.check_consistent(session.net, {key: settings[key] for key in settings}, comm=comm)
        dist.broadcast_parameters(session.net, comm=comm)
        if resume is None:
            session.fresh_metrics()
        else:
            _together(comm, lambda: session.restore(read_checkpoint(folder.path / "checkpoint.npz")))
        s = settings
        print(f"portaconv train --distributed: {s['model']} on {s['dataset']} ({len(session.train_set)} train / "
              f"{len(session.test_set)} test), {K} rank{'s' if K != 1 else ''} × batch {bs // K} = global batch {bs}, backend {backend_name} "
              f"{s['dtype']}, {_epochs(s['epochs'])} -> {folder.path}", flush=True)
        sums = ", ".join(f"{name} {digest[:12]}" for name, digest in session.data["sha256"].items())
        print(f"data: {session.data['dir']} (sha256 {sums})", flush=True)
        if resume is not None:
            print(f"resuming at epoch {session.next_epoch} of {s['epochs']}", flush=True)
        return session.run()
    finally:
        folder.release()

