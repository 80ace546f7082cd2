"""Training and evaluation loops: a run folder that never loses a result, exact resume, progress,
metrics.json, a plot of the curves, a checkpoint.

Each epoch is committed as a unit: the checkpoint (weights, buffers, optimizer state, random
generators' states and the metrics so far) is written first, then metrics.json naming the
checkpoint's epoch, each atomically. ``--resume`` continues from the checkpoint's epoch; the data
order and augmentation of an epoch derive from the seed and the epoch, so the resumed run repeats
the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import platform
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from array_api_compat import device as _device
from tqdm.auto import tqdm

from .. import __version__, _random, optim
from .. import functional as F
from ..autograd import no_grad
from .._backend import get_namespace
from . import datasets, models
from .checkpoint import CheckpointError, atomic_write, json_text, read_checkpoint, save_checkpoint
from .rundir import RunFolder

__all__ = ["train", "evaluate", "evaluate_checkpoint", "latest_checkpoint", "versions", "model_default",
           "check_device", "TrainingFailed", "PROGRESS"]

#: Flags a model's DEFAULTS may leave out take these.
FALLBACKS = {"epochs": 10, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0,
             "label_smoothing": 0.0, "augment": None}
#: Values of ``progress``: a bar per epoch, a line per epoch, or neither; auto: a bar on a terminal.
PROGRESS = ("auto", "bar", "lines", "none")
_SETTINGS = ("model", "dataset", "dtype", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
             "label_smoothing", "augment", "seed", "limit")
_FLAGS = _SETTINGS[3:]  # recorded under metrics["flags"]


class TrainingFailed(RuntimeError):
    """Training stopped on a non-finite loss; the run folder keeps the last committed epoch."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler's stop) during training: handled as Ctrl-C, the run
    folder kept at its last committed epoch; the CLI exits with 143 (128 + 15)."""


def versions(backend) -> dict:
    """Versions of Python and of the libraries a run used."""
    found = {"python": platform.python_version(), "portaconv": __version__, "numpy": np.__version__}
    for name in ("array_api_compat", "array_api_extra", backend if isinstance(backend, str) else None):
        if name and name in sys.modules:
            found[name] = getattr(sys.modules[name], "__version__", "?")
    return found


def model_default(model, key):
    """The value of a training flag left out for ``model``."""
    return models.DEFAULTS.get(model, {}).get(key, FALLBACKS[key])


# -- flags -------------------------------------------------------------------------------------
def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


_RULES = {
    "model": (lambda v: v in models.MODELS, "one of " + ", ".join(sorted(models.MODELS))),
    "dataset": (lambda v: v in datasets.SPECS, "one of " + ", ".join(sorted(datasets.SPECS))),
    "dtype": (lambda v: v in ("float32", "float64"), "float32 or float64"),
    "epochs": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "lr": (lambda v: _is_real(v) and v > 0, "a positive finite number"),
    "optimizer": (lambda v: v in ("adam", "adamw", "sgd"), "adam, adamw or sgd"),
    "weight_decay": (lambda v: _is_real(v) and v >= 0, "a non-negative finite number"),
    "label_smoothing": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "augment": (lambda v: v in datasets.AUGMENTATIONS, "one of " + ", ".join(a or "none" for a in datasets.AUGMENTATIONS)),
    "seed": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "limit": (lambda v: _is_int(v) and v >= 1, "a positive integer (a number of training images)"),
}


def _flag(key):
    return "--" + key.replace("_", "-")


def _validate(given):
    for key, value in given.items():
        test, expected = _RULES[key]
        if not test(value):
            raise ValueError(f"{_flag(key)} must be {expected}, got {value!r}")


def _resolve(given):
    """Every setting: the given ones, the model's defaults for the rest."""
    model = given.get("model", "seed-cnn")
    settings = {"model": model, "dataset": "fashion-mnist", "dtype": "float32", "seed": 0, "limit": None}
    settings.update({key: model_default(model, key) for key in FALLBACKS})
    settings.update(given)
    return settings


def check_device(backend, device):
    """The backend's name, once it imports and can place an array on ``device``."""
    xp = get_namespace(backend)
    name = backend if isinstance(backend, str) else getattr(backend, "__name__", str(backend))
    try:
        xp.asarray([0.0], device=device)
    except Exception as error:  # noqa: BLE001 - any failure here means the same to the user
        where = f"--backend {name}" + (f" --device {device}" if device is not None else "")
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{where}: cannot place an array there ({type(error).__name__}: {first})") from None
    return name


def _progress_mode(progress):
    if progress is True or progress is None:
        progress = "auto"
    elif progress is False:
        progress = "none"
    if progress not in PROGRESS:
        raise ValueError(f"--progress must be one of {', '.join(PROGRESS)}, got {progress!r}")
    if progress == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return progress


# -- loops -------------------------------------------------------------------------------------
def _make_optimizer(name, params, lr, weight_decay):
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":  # weight decay decoupled from the adaptive step (Loshchilov & Hutter)
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw' or 'sgd', got {name!r}")


def _correct(log_probabilities, labels, xp) -> int:
    return int(xp.sum(xp.astype(xp.argmax(log_probabilities, axis=1) == labels, xp.int64)))


def evaluate(model, dataset, *, backend="numpy", dtype="float32", device=None, batch_size=1000):
    """Mean cross-entropy loss and accuracy of a classifier (logits or log-probabilities: the
    cross entropy of log_softmax output is its NLL) on a dataset, in eval mode without a graph."""
    xp = get_namespace(backend)
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    with no_grad():
        for x, y in datasets.batches(dataset, batch_size, shuffle=False, backend=backend, dtype=dtype, device=device):
            out = model(x).data
            total_loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += _correct(out, y, xp)
    model.train(was_training)
    return total_loss / len(dataset), correct / len(dataset)


def _subset(dataset, limit):
    if limit is None or limit >= len(dataset):
        return dataset
    return datasets.Dataset(dataset.images[:limit], dataset.labels[:limit], dataset.mean, dataset.std,
                            dataset.directory, dataset.sha256)


def _plot(metrics, path):
    """curves.png: the loss (saying which is label-smoothed) and accuracy curves, the final test
    accuracy in the title. ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install matplotlib)")
        return None
    history, smoothing = metrics["epochs"], metrics["flags"]["label_smoothing"]
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.3))
    left.plot(epochs, [h["train_loss"] for h in history], label=f"train (label-smoothed, ε = {smoothing:g})" if smoothing else "train")
    left.plot(epochs, [h["test_loss"] for h in history], label="test (plain cross-entropy)" if smoothing else "test")
    left.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    right.plot(epochs, [100 * h["train_accuracy"] for h in history], label="train (augmented)" if metrics["flags"]["augment"] else "train")
    right.plot(epochs, [100 * h["test_accuracy"] for h in history], label="test")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    state = "" if metrics.get("status") == "complete" else f" ({metrics.get('status')})"
    figure.suptitle(f"{metrics['model']} on {metrics['dataset']}: test accuracy {100 * history[-1]['test_accuracy']:.2f}% "
                    f"after {len(history)}/{metrics['flags']['epochs']} epochs{state}")
    figure.tight_layout()
    try:
        atomic_write(path, lambda out: figure.savefig(out, format="png", dpi=100))
    finally:
        plt.close(figure)
    return path


@contextlib.contextmanager
def _signal_handlers(handlers):
    """``{signal number: handler}`` in force for the block, the previous ones restored after (in
    the main thread only: Python sets handlers nowhere else)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _deferred_interrupt():
    """Hold a Ctrl-C or SIGTERM back until the block ends, so that an epoch's files are committed
    together; then raise it (KeyboardInterrupt or :class:`Terminated`)."""
    received = []
    with _signal_handlers({number: lambda number, frame: received.append(number) for number in (signal.SIGINT, signal.SIGTERM)}):
        yield
    if received:
        raise Terminated if received[0] == signal.SIGTERM else KeyboardInterrupt


def _terminate(number, frame):
    """SIGTERM's handler while training: stop as on Ctrl-C (by default SIGTERM ends the process
    at once, mid-epoch, without a word)."""
    raise Terminated


def _rng_states(net):
    """The states of the generators a training draws from besides the data order: the dropout
    layers' own generators, and the global one."""
    dropout = {name: m._rng.bit_generator.state for name, m in net.named_modules() if getattr(m, "_rng", None) is not None}
    return {"dropout": dropout, "global": _random.default_generator().bit_generator.state}


def _restore_rng_states(net, states):
    for name, module in net.named_modules():
        if getattr(module, "_rng", None) is not None:
            module._rng.bit_generator.state = states["dropout"][name]
    _random.default_generator().bit_generator.state = states["global"]


class _Session:
    """One process's part of a run: data, network, optimizer, and the epochs it trains and commits."""

    def __init__(self, settings, folder, *, backend, backend_name, device, progress, command, overwrite):
        self.s, self.folder, self.backend, self.backend_name, self.device = settings, folder, backend, backend_name, device
        self.progress, self.command, self.overwrite = progress, command, overwrite
        self.xp = get_namespace(backend)
        self.next_epoch, self.saved, self.position = 1, False, None

    # setup
    def load_data(self, data_dir):
        s = self.s
        train_full = datasets.load(s["dataset"], "train", data_dir=data_dir, progress=self.progress != "none")
        test_full = datasets.load(s["dataset"], "test", data_dir=data_dir, progress=self.progress != "none")
        self.train_set = _subset(train_full, s["limit"])
        self.test_set = _subset(test_full, None if s["limit"] is None else max(s["limit"] // 6, 1000))
        self.data = {"dir": train_full.directory, "sha256": {**train_full.sha256, **test_full.sha256}}

    def build(self):
        s = self.s
        self.net = models.build(s["model"], backend=self.backend, dtype=s["dtype"], device=self.device, seed=s["seed"])
        self.opt = _make_optimizer(s["optimizer"], self.net.parameters(), s["lr"], s["weight_decay"])

    def fresh_metrics(self):
        s = self.s
        self.metrics = {
            "model": s["model"], "dataset": s["dataset"], "backend": self.backend_name,
            "device": str(_device(self.net.parameters()[0].data)), "dtype": s["dtype"],
            "flags": {key: s[key] for key in _FLAGS}, "data": self.data,
            "versions": versions(self.backend), "machine": platform.platform(), "command": self.command,
            "train_size": len(self.train_set), "test_size": len(self.test_set), "status": "running", "epochs": [],
        }

    def restore(self, checkpoint):
        """Continue from a checkpoint: weights, buffers, optimizer, generators, metrics, epoch."""
        path, training = checkpoint.path, checkpoint.training
        _same_data(path, training["data"], self.data)
        try:
            self.net.load_state_dict(checkpoint.model_state)
            self.opt.load_state_dict(training["optimizer"])
            _restore_rng_states(self.net, training["rng"])
        except (KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"{path}: does not fit a {self.s['model']} network and its optimizer ({error})") from None
        self.metrics = training["metrics"]
        if training["epoch"] < self.s["epochs"]:
            self.metrics.setdefault("resumes", []).append(
                {"from_epoch": training["epoch"] + 1, "command": self.command, "backend": self.backend_name, "data_dir": self.data["dir"]})
        self.metrics["status"] = "running"
        self.metrics.pop("error", None)
        self.next_epoch, self.saved = training["epoch"] + 1, True
        self._write_metrics()

    # training
    def _epoch(self, epoch):
        s, xp = self.s, self.xp
        lr = set_epoch_lr(self.opt, s, epoch)
        start = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        steps = math.ceil(len(self.train_set) / s["batch_size"])
        batches = datasets.batches(self.train_set, s["batch_size"], seed=s["seed"] * 7919 + epoch, augment=s["augment"],
                                   backend=self.backend, dtype=s["dtype"], device=self.device)
        self.position = (epoch, 0, steps)
        with tqdm(batches, total=steps, desc=f"epoch {epoch}/{s['epochs']}", disable=self.progress != "bar", leave=True) as bar:
            for step, (x, y) in enumerate(bar, 1):
                self.position = (epoch, step, steps)
                out = self.net(x)
                loss = F.cross_entropy(out, y, label_smoothing=s["label_smoothing"])
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingFailed(self._failure(f"non-finite training loss ({value}) at epoch {epoch}, step {step} of {steps}"))
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                count = int(y.shape[0])
                seen += count
                loss_sum += value * count
                correct += _correct(out.data, y, xp)
                if self.progress == "bar":
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.2f}%",
                                    img_s=f"{seen / (time.perf_counter() - start):.0f}")
        train_seconds = time.perf_counter() - start
        test_loss, test_accuracy = evaluate(self.net, self.test_set, backend=self.backend, dtype=s["dtype"], device=self.device)
        if not math.isfinite(test_loss):
            raise TrainingFailed(self._failure(f"non-finite test loss ({test_loss}) after epoch {epoch}"))
        return {"epoch": epoch, "lr": lr, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                "test_loss": test_loss, "test_accuracy": test_accuracy, "seconds": time.perf_counter() - start,
                "images_per_second": seen / train_seconds}

    def _failure(self, what):
        return f"{what} with --lr {self.s['lr']:g}: training stopped; {self._kept()}"

    def _kept(self):
        done = len(self.metrics["epochs"])
        if self.saved and done:
            return f"{self.folder.path} keeps epochs 1-{done}" if done > 1 else f"{self.folder.path} keeps epoch 1"
        return "nothing was saved" + (f" ({self.folder.path} still holds the previous run)" if self.folder.holds_run() else "")

    def _commit(self, record):
        """The checkpoint, then metrics.json naming its epoch; a Ctrl-C waits until both are written."""
        epoch = record["epoch"]
        metrics = self.metrics
        metrics["epochs"].append(record)
        metrics.update(test_accuracy=record["test_accuracy"], total_seconds=sum(e["seconds"] for e in metrics["epochs"]),
                       checkpoint={"file": "checkpoint.npz", "epoch": epoch}, status="running")
        metadata = {"model": self.s["model"], "dtype": self.s["dtype"], "dataset": self.s["dataset"], "epoch": epoch,
                    "test_accuracy": record["test_accuracy"]}
        training = {"epoch": epoch, "settings": self.s, "data": self.data, "rng": _rng_states(self.net), "metrics": metrics,
                    "place": {"backend": self.backend_name, "device": None if self.device is None else str(self.device)}}
        with _deferred_interrupt():
            save_checkpoint(self.folder.path / "checkpoint.npz", self.net, metadata, optimizer=self.opt, training=training)
            self._write_metrics()
            if not self.saved and self.overwrite:
                (self.folder.path / "curves.png").unlink(missing_ok=True)  # the replaced run's
            self.saved = True

    def _write_metrics(self):
        text = json_text(self.metrics)
        atomic_write(self.folder.path / "metrics.json", lambda out: out.write(text.encode()))

    def _report(self, record):
        if self.progress == "none":
            return
        print(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} acc {100 * record['train_accuracy']:.2f}% | "
              f"test loss {record['test_loss']:.4f} acc {100 * record['test_accuracy']:.2f}% | "
              f"{record['seconds']:.1f} s, {record['images_per_second']:.0f} img/s", flush=True)

    def _finish(self, status, error=None):
        """Record how the run ended and plot its committed epochs (only a run this process wrote to)."""
        if not self.saved:
            return None
        self.metrics["status"] = status
        if error:
            self.metrics["error"] = error
        plot = _plot(self.metrics, self.folder.path / "curves.png") if self.metrics["epochs"] else None
        self._write_metrics()
        return plot

    def run(self):
        try:
            for epoch in range(self.next_epoch, self.s["epochs"] + 1):
                record = self._epoch(epoch)
                self._commit(record)
                self._report(record)
        except KeyboardInterrupt:
            self._finish("interrupted")
            print(self._interrupted(), file=sys.stderr, flush=True)
            raise
        except TrainingFailed as error:
            self._finish("failed", str(error))
            raise
        plot = self._finish("complete")
        m = self.metrics
        print(f"done: test accuracy {100 * m['test_accuracy']:.2f}% after {_epochs(len(m['epochs']))}; wrote "
              f"{self.folder.path / 'metrics.json'}, checkpoint.npz" + (", curves.png" if plot else ""), flush=True)
        return m

    def _interrupted(self):
        where = "" if self.position is None else f" in epoch {self.position[0]} (step {self.position[1]} of {self.position[2]})"
        text = f"interrupted{where}: {self._kept()}"
        if self.saved:
            text += f"\nresume with: portaconv train --resume {shlex.quote(str(self.folder.path))}"
        return text


def _epochs(count):
    return f"{count} epoch" + ("" if count == 1 else "s")


def _same_data(path, recorded, used):
    for name, digest in recorded["sha256"].items():
        if used["sha256"].get(name) != digest:
            raise ValueError(f"{path}: the run was trained on {recorded['dir']}/{name} (sha256 {digest[:16]}...), but "
                             f"{used['dir']}/{name} has sha256 {str(used['sha256'].get(name))[:16]}...: "
                             f"pass the run's data with --data-dir")


def _resumable(folder):
    """The run folder's checkpoint, if it can be resumed (format, training state, consistent metrics)."""
    checkpoint = read_checkpoint(folder / "checkpoint.npz")
    if checkpoint.training is None:
        raise CheckpointError(f"{checkpoint.path}: format {checkpoint.format} checkpoint with weights only (no optimizer, "
                              f"schedule or random state): it can be evaluated but not resumed")
    settings = checkpoint.training["settings"]
    try:
        on_disk = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return checkpoint
    for key in ("model", "dataset", "dtype"):
        if isinstance(on_disk, dict) and on_disk.get(key, settings[key]) != settings[key]:
            raise CheckpointError(f"{checkpoint.path}: a {settings[key]} checkpoint beside a metrics.json of {on_disk[key]} "
                                  f"({key}): the folder mixes two runs")
    return checkpoint


def _resumed_settings(checkpoint, given, folder):
    saved = checkpoint.training["settings"]
    for key, value in given.items():
        if saved.get(key) != value:
            raise ValueError(f"{_flag(key)} {value} differs from the run's {saved.get(key)} in {folder}: --resume continues "
                             f"a run with its own flags (leave {_flag(key)} out, or start a new run with --out)")
    return saved


def train(model=None, *, backend=None, dtype=None, device=None, epochs=None, batch_size=None, lr=None,
          optimizer=None, weight_decay=None, label_smoothing=None, augment="default", seed=None, limit=None, data_dir=None,
          out=None, dataset=None, progress="auto", command=None, resume=None, overwrite=False, distributed=False):
    """Train a built-in model; returns the metrics dict also written to ``out/metrics.json``.

    Flags left ``None`` (``augment``: ``"default"``) take the model's defaults
    (:data:`portaconv.app.models.DEFAULTS`); the learning rate follows a cosine schedule over the
    epochs. ``out`` (default ``runs/<model>``) must be new or empty unless ``overwrite``;
    ``resume=DIR`` continues the run in DIR with its own flags, data folder, backend and device
    (``backend``, default numpy, and ``device`` may move it). ``progress``: one of
    :data:`PROGRESS` (``True``: auto, ``False``: none). ``distributed``: every rank of an MPI job
    (``mpiexec -n K``) calls this; see :mod:`portaconv.app.distributed_train`.

    Raises
    ------
    ValueError
        A bad flag (named), a folder in use or holding another run, missing data, a bad checkpoint.
    TrainingFailed
        A non-finite loss.
    KeyboardInterrupt
        After the run folder is left at its last committed epoch (:class:`Terminated`, a subclass,
        on SIGTERM).
    """
    values = dict(model=model, dataset=dataset, dtype=dtype, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                  weight_decay=weight_decay, label_smoothing=label_smoothing, augment=augment, seed=seed, limit=limit)
    if distributed:
        from .distributed_train import train_distributed

        return train_distributed(values, augment, backend=backend, device=device, data_dir=data_dir, out=out, progress=progress,
                                 command=command, resume=resume, overwrite=overwrite)
    given = {k: v for k, v in values.items() if v is not None and k != "augment"}
    if augment != "default":  # None: no augmentation
        given["augment"] = augment
    _validate(given)
    progress = _progress_mode(progress)
    if resume is not None and (overwrite or (out is not None and Path(out).resolve() != Path(resume).resolve())):
        raise ValueError(f"--resume {resume} continues the run in its own folder: leave out --out and --overwrite")
    backend_name = None  # with --resume: the run's, once its checkpoint is read
    if resume is None:
        backend = "numpy" if backend is None else backend
        backend_name = check_device(backend, device)
    folder = RunFolder(resume if resume is not None else out if out is not None else Path("runs") / given.get("model", "seed-cnn"))
    with _signal_handlers({signal.SIGTERM: _terminate}):
        return _train_in(folder, given, resume, overwrite, backend, backend_name, device, data_dir, progress, command)


def _train_in(folder, given, resume, overwrite, backend, backend_name, device, data_dir, progress, command):
    """:func:`train` from the run folder on (one process)."""
    try:
        if resume is not None:
            folder.acquire("resume", "--resume")
            checkpoint = _resumable(folder.path)
            settings = _resumed_settings(checkpoint, given, folder.path)
            data_dir = checkpoint.training["data"]["dir"] if data_dir is None else data_dir
            if backend is None:
                backend, device = checkpoint.training["place"]["backend"], device or checkpoint.training["place"]["device"]
            backend_name = check_device(backend, device)
        else:
            folder.acquire("overwrite" if overwrite else "new")
            checkpoint, settings = None, _resolve(given)
        session = _Session(settings, folder, backend=backend, backend_name=backend_name, device=device, progress=progress,
                           command=command or " ".join(sys.argv), overwrite=overwrite)
        try:
            _start(session, checkpoint, data_dir)
        except KeyboardInterrupt:
            print("interrupted before training started: nothing was written", file=sys.stderr, flush=True)
            raise
        return session.run()
    finally:
        folder.release()


def _start(session, checkpoint, data_dir):
    s = session.s
    session.load_data(data_dir)
    session.build()
    if checkpoint is None:
        session.fresh_metrics()
    else:
        session.restore(checkpoint)
    print(f"portaconv train: {s['model']} on {s['dataset']} ({len(session.train_set)} train / {len(session.test_set)} test), "
          f"backend {session.backend_name} {s['dtype']}, {_epochs(s['epochs'])} -> {session.folder.path}", flush=True)
    sums = ", ".join(f"{name} {digest[:12]}" for name, digest in session.data["sha256"].items())
    print(f"data: {session.data['dir']} (sha256 {sums})", flush=True)
    if checkpoint is not None:
        print(f"resuming at epoch {session.next_epoch} of {s['epochs']}", flush=True)


# -- evaluation --------------------------------------------------------------------------------
def latest_checkpoint(model="seed-cnn", runs="runs"):
    """The most recently written ``checkpoint.npz`` of ``model`` under ``runs`` (unreadable ones are
    skipped with a note)."""
    found = []
    for path in sorted(Path(runs).rglob("checkpoint.npz")):
        try:
            meta = read_checkpoint(path).metadata
        except CheckpointError as error:
            print(f"skipping {error}", file=sys.stderr)
            continue
        if meta.get("model") == model:
            found.append((path.stat().st_mtime, str(path)))
    if not found:
        raise ValueError(f"no checkpoint of {model} under {Path(runs)}/: train one with `portaconv train --model {model}` "
                         f"or pass --checkpoint FILE")
    return Path(max(found)[1])


def set_epoch_lr(opt, settings, epoch):
    """The cosine schedule over the epochs: epoch ``epoch``'s learning rate, set on every group."""
    lr = settings["lr"] * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / settings["epochs"]))
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


def read_trained_checkpoint(path, model=None):
    """``(checkpoint, metadata)`` of a checkpoint ``portaconv train`` wrote; ``model``, when
    given, must be the one it holds."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint.metadata
    for key in ("model", "dtype"):
        if key not in meta:
            raise CheckpointError(f"{path}: not a portaconv train checkpoint (its metadata lacks {key!r})")
    if model is not None and meta["model"] != model:
        raise ValueError(f"--model {model}: {path} is a checkpoint of {meta['model']}")
    return checkpoint, meta


def evaluate_checkpoint(path, *, backend="numpy", device=None, data_dir=None, batch_size=1000, model=None):
    """Rebuild the model a checkpoint names, load its weights and evaluate on the test split.

    Returns ``((loss, accuracy), metadata)``; ``metadata["data_dir"]`` is the folder read."""
    checkpoint, meta = read_trained_checkpoint(path, model)
    net = models.build(meta["model"], backend=backend, dtype=meta["dtype"], device=device)
    try:
        net.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: does not fit a {meta['model']} network ({error})") from None
    test_set = datasets.load(meta.get("dataset", "fashion-mnist"), "test", data_dir=data_dir)
    result = evaluate(net, test_set, backend=backend, dtype=meta["dtype"], device=device, batch_size=batch_size)
    return result, {**meta, "data_dir": test_set.directory}
