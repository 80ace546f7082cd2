"""Training and evaluation loops: progress bars, metrics.json, a plot of the curves, a checkpoint."""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
from array_api_compat import device as _device

from .. import __version__, optim
from .. import functional as F
from ..autograd import no_grad
from .._backend import get_namespace
from . import datasets, models
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["train", "evaluate", "evaluate_checkpoint", "versions"]

def versions(backend) -> dict:
    """Versions of Python and of the libraries a run used."""
    found = {"python": platform.python_version(), "portaconv": __version__, "numpy": np.__version__}
    for name in ("array_api_compat", "array_api_extra", backend if isinstance(backend, str) else None):
        if name and name in sys.modules:
            found[name] = getattr(sys.modules[name], "__version__", "?")
    return found

def _make_optimizer(name, params, lr, weight_decay):
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")

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
    return datasets.Dataset(dataset.images[:limit], dataset.labels[:limit], dataset.mean, dataset.std)

def _plot(history, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install matplotlib)")
        return None
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    left.plot(epochs, [h["test_loss"] for h in history], label="test")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    right.plot(epochs, [100 * h["train_accuracy"] for h in history], label="train")
    right.plot(epochs, [100 * h["test_accuracy"] for h in history], label="test")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

def train(model="seed-cnn", *, backend="numpy", dtype="float32", device=None, epochs=None, batch_size=None, lr=None,
          optimizer=None, weight_decay=None, label_smoothing=None, augment="default", seed=0, limit=None, data_dir=None, out=None, dataset="fashion-mnist", progress=True,
          command=None):
    """Train a built-in model; returns the metrics dict also written to ``out/metrics.json``.

    Flags left ``None`` take the model's defaults (:data:`portaconv.app.models.DEFAULTS`). The learning
    rate follows a cosine schedule over the epochs.
    """
    from tqdm.auto import tqdm

    defaults = models.DEFAULTS[model] if model in models.DEFAULTS else {}
    epochs = defaults.get("epochs", 10) if epochs is None else epochs
    batch_size = defaults.get("batch_size", 64) if batch_size is None else batch_size
    lr = defaults.get("lr", 1e-3) if lr is None else lr
    optimizer = defaults.get("optimizer", "adam") if optimizer is None else optimizer
    augment = defaults.get("augment") if augment == "default" else augment
    weight_decay = defaults.get("weight_decay", 0.0) if weight_decay is None else weight_decay
    label_smoothing = defaults.get("label_smoothing", 0.0) if label_smoothing is None else label_smoothing
    if epochs < 1:
        raise ValueError(f"epochs must be positive, got {epochs}")
    out = Path(out if out is not None else Path("runs") / model)
    out.mkdir(parents=True, exist_ok=True)
    xp = get_namespace(backend)
    train_set = _subset(datasets.load(dataset, "train", data_dir=data_dir), limit)
    test_set = _subset(datasets.load(dataset, "test", data_dir=data_dir), None if limit is None else max(limit // 6, 1000))
    net = models.build(model, backend=backend, dtype=dtype, device=device, seed=seed)
    opt = _make_optimizer(optimizer, net.parameters(), lr, weight_decay)
    # Models end in logits or in log_softmax, which is idempotent: the cross entropy of
    # log-probabilities is their NLL, and with label smoothing the smoothed cross entropy of the logits.
    metrics = {
        "model": model, "dataset": dataset, "backend": backend if isinstance(backend, str) else backend.__name__,
        "device": str(_device(net.parameters()[0].data)), "dtype": dtype,
        "flags": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer, "weight_decay": weight_decay,
                  "label_smoothing": label_smoothing,
                  "augment": augment, "seed": seed,
                  "limit": limit},
        "versions": versions(backend), "machine": platform.platform(), "command": command or " ".join(sys.argv),
        "train_size": len(train_set), "test_size": len(test_set), "epochs": [],
    }
    print(f"portaconv train: {model} on {dataset} ({len(train_set)} train / {len(test_set)} test), backend {metrics['backend']} {dtype}")
    for epoch in range(1, epochs + 1):
        epoch_lr = lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))
        for group in opt.param_groups:
            group["lr"] = epoch_lr
        start = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        steps = math.ceil(len(train_set) / batch_size)
        bar = tqdm(datasets.batches(train_set, batch_size, seed=seed * 7919 + epoch, augment=augment, backend=backend, dtype=dtype, device=device),
                   total=steps, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=True)
        for x, y in bar:
            out_batch = net(x)
            loss = F.cross_entropy(out_batch, y, label_smoothing=label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            count = int(y.shape[0])
            seen += count
            loss_sum += loss.item() * count
            correct += _correct(out_batch.data, y, xp)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.2f}%",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}")
        train_seconds = time.perf_counter() - start
        test_loss, test_accuracy = evaluate(net, test_set, backend=backend, dtype=dtype, device=device)
        record = {"epoch": epoch, "lr": epoch_lr, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                  "test_loss": test_loss, "test_accuracy": test_accuracy, "seconds": time.perf_counter() - start,
                  "images_per_second": seen / train_seconds}
        metrics["epochs"].append(record)
        print(f"epoch {epoch}: train loss {record['train_loss']:.4f} acc {100 * record['train_accuracy']:.2f}% | "
              f"test loss {test_loss:.4f} acc {100 * test_accuracy:.2f}% | {record['seconds']:.1f} s, {record['images_per_second']:.0f} img/s")
        metrics["test_accuracy"] = test_accuracy
        metrics["total_seconds"] = sum(e["seconds"] for e in metrics["epochs"])
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        save_checkpoint(out / "checkpoint.npz", net, {"model": model, "dtype": dtype, "dataset": dataset, "epoch": epoch, "test_accuracy": test_accuracy})
    plot = _plot(metrics["epochs"], out / "curves.png")
    print(f"wrote {out / 'metrics.json'}, {out / 'checkpoint.npz'}" + (f", {plot}" if plot else ""))
    return metrics

def evaluate_checkpoint(path, *, backend="numpy", device=None, data_dir=None, batch_size=1000):
    """Rebuild the model a checkpoint names, load its weights and evaluate on the test split."""
    state, meta = load_checkpoint(path)
    for key in ("model", "dtype"):
        if key not in meta:
            raise ValueError(f"{path}: checkpoint metadata lacks {key!r} (not written by portaconv train?)")
    net = models.build(meta["model"], backend=backend, dtype=meta["dtype"], device=device)
    net.load_state_dict(state)
    test_set = datasets.load(meta.get("dataset", "fashion-mnist"), "test", data_dir=data_dir)
    return evaluate(net, test_set, backend=backend, dtype=meta["dtype"], device=device, batch_size=batch_size), meta

