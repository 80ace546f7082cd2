"""Built-in networks and their default training settings."""

from __future__ import annotations

from .. import nn

__all__ = ["MODELS", "DEFAULTS", "build"]


def _seed_cnn(layer):
    # Seed 000: conv 32@3×3 → relu → maxpool 2 → conv 64@3×3 → relu → maxpool 2 → linear 1600→10.
    return [
        layer(nn.Conv2d, 1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        layer(nn.Conv2d, 32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), layer(nn.Linear, 1600, 10), nn.LogSoftmax(dim=1),
    ]


def _seed004(layer):
    # Seed 004: conv 16@5×5 pad 2 + tanh → flatten → dense 10.
    return [layer(nn.Conv2d, 1, 16, 5, padding=2), nn.Tanh(), nn.Flatten(), layer(nn.Linear, 16 * 28 * 28, 10), nn.LogSoftmax(dim=1)]


def _cnn_fc(layer, seed):
    # seed-cnn's two conv blocks with padding 1 (7×7×64 left after pooling), dropout, and a hidden
    # fully connected layer: "2 conv + 2 FC" in the published Fashion-MNIST results.
    return [
        layer(nn.Conv2d, 1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        layer(nn.Conv2d, 32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25, seed=seed + 101),
        nn.Flatten(), layer(nn.Linear, 64 * 7 * 7, 256), nn.ReLU(), nn.Dropout(0.5, seed=seed + 102),
        layer(nn.Linear, 256, 10), nn.LogSoftmax(dim=1),
    ]


MODELS = {
    "seed-cnn": "seed 000's network: 2 × (conv 3×3, relu, maxpool 2), linear 1600→10, log_softmax",
    "seed004": "seed 004's network: conv 16@5×5 pad 2, tanh, linear 12544→10, log_softmax",
    "cnn-fc": "2 × (conv 3×3 pad 1, relu, maxpool 2), dropout .25, linear 3136→256 + relu, dropout .5, linear 256→10",
}

#: Default training flags per model (epochs, batch size, learning rate, optimizer, augmentation).
DEFAULTS = {
    "seed-cnn": {"epochs": 20, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "augment": "flip", "label_smoothing": 0.1},
    # seed004 is a wide linear layer on 12 544 tanh features: Adam's per-weight steps move its logits
    # by ~lr · 12 544 a step, so it needs a small lr and long training (lr 1e-3 for 10 epochs: 85.9 %).
    "seed004": {"epochs": 40, "batch_size": 64, "lr": 3e-4, "optimizer": "adam", "augment": "flip"},
    "cnn-fc": {"epochs": 15, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "augment": "flip"},
}


def build(name, *, backend="numpy", dtype="float32", device=None, seed=0) -> nn.Sequential:
    """A built-in model with torch-default initialization drawn from ``seed``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    counter = iter(range(1000))

    def layer(cls, *args, **kwargs):
        return cls(*args, **kwargs, backend=backend, dtype=dtype, device=device, seed=seed * 1000 + next(counter))

    if name == "cnn-fc":
        return nn.Sequential(*_cnn_fc(layer, seed))
    return nn.Sequential(*(_seed_cnn(layer) if name == "seed-cnn" else _seed004(layer)))
