"""Built-in networks and their default training settings, written as a torch user would."""

from __future__ import annotations

from .. import functional as F
from .. import nn

__all__ = ["MODELS", "DEFAULTS", "build", "ResNet", "BasicBlock"]


def _seed_cnn(layer):
    # Seed 000: conv 32@3×3 → relu → maxpool 2 → conv 64@3×3 → relu → maxpool 2 → linear 1600→10.
    # Each maxpool runs before its relu: the same function (relu is monotone, so the maximum of
    # relu(x) is relu of the maximum, and where that maximum is positive both orders route the
    # gradient to the same first maximum; elsewhere both gradients are 0), on 4× fewer elements.
    # The layer indices, hence the state_dict keys, are those of seed 000's order.
    return [
        layer(nn.Conv2d, 1, 32, 3), nn.MaxPool2d(2), nn.ReLU(),
        layer(nn.Conv2d, 32, 64, 3), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), layer(nn.Linear, 1600, 10), nn.LogSoftmax(dim=1),
    ]


def _seed004(layer):
    # Seed 004: conv 16@5×5 pad 2 + tanh → flatten → dense 10.
    return [layer(nn.Conv2d, 1, 16, 5, padding=2), nn.Tanh(), nn.Flatten(), layer(nn.Linear, 16 * 28 * 28, 10), nn.LogSoftmax(dim=1)]


def _cnn_fc(layer, seed):
    # seed-cnn's two conv blocks with padding 1 (7×7×64 left after pooling), dropout, and a hidden
    # fully connected layer: "2 conv + 2 FC" in the published Fashion-MNIST results.
    return [
        layer(nn.Conv2d, 1, 32, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
        layer(nn.Conv2d, 32, 64, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Dropout(0.25, seed=seed + 101),
        nn.Flatten(), layer(nn.Linear, 64 * 7 * 7, 256), nn.ReLU(), nn.Dropout(0.5, seed=seed + 102),
        layer(nn.Linear, 256, 10), nn.LogSoftmax(dim=1),
    ]


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3×3 convolutions with BatchNorm, one ReLU module used twice,
    and the input added back (through a strided 1×1 convolution when the shape changes)."""

    def __init__(self, in_channels, channels, stride=1, **where):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False, **where)
        self.bn1 = nn.BatchNorm2d(channels, **_no_seed(where))
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, **where)
        self.bn2 = nn.BatchNorm2d(channels, **_no_seed(where))
        self.relu = nn.ReLU()
        self.downsample = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False, **where), nn.BatchNorm2d(channels, **_no_seed(where))
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


def _no_seed(where):
    return {k: v for k, v in where.items() if k != "seed"}


class ResNet(nn.Module):
    """A small residual network for 28×28 grey images: a 3×3 stem and a 2×2 max pool (14×14),
    one BasicBlock per stage (``widths`` channels; stages after the first halve the resolution:
    7×7, 4×4), global average pooling, a linear classifier. Returns logits. Pooling right after
    the stem makes it ~4× cheaper than a 28×28 first stage, sized for a 2-core machine."""

    def __init__(self, widths=(32, 64, 128), classes=10, **where):
        super().__init__()
        self.stem = nn.Conv2d(1, widths[0], 3, padding=1, bias=False, **where)
        self.bn = nn.BatchNorm2d(widths[0], **_no_seed(where))
        self.relu = nn.ReLU()
        self.stem_pool = nn.MaxPool2d(2)
        blocks, channels = [], widths[0]
        for index, width in enumerate(widths):
            blocks.append(BasicBlock(channels, width, stride=1 if index == 0 else 2, **where))
            channels = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes, **where)

    def forward(self, x):
        x = self.stem_pool(self.relu(self.bn(self.stem(x))))
        x = self.pool(self.layers(x))
        return self.fc(F.flatten(x, 1))


MODELS = {
    "seed-cnn": "seed 000's network: 2 × (conv 3×3, relu, maxpool 2), linear 1600→10, log_softmax",
    "seed004": "seed 004's network: conv 16@5×5 pad 2, tanh, linear 12544→10, log_softmax",
    "cnn-fc": "2 × (conv 3×3 pad 1, relu, maxpool 2), dropout .25, linear 3136→256 + relu, dropout .5, linear 256→10",
    "resnet": "3×3 stem, maxpool 2, 3 BasicBlocks (32, 64, 128 channels at 14², 7², 4²; BatchNorm, residual adds), "
              "global average pool, linear 128→10",
}

#: Default training flags per model (epochs, batch size, learning rate, optimizer, augmentation).
DEFAULTS = {
    "seed-cnn": {"epochs": 30, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "augment": "flip", "label_smoothing": 0.1},
    # seed004 is a wide linear layer on 12 544 tanh features: Adam's per-weight steps move its logits
    # by ~lr · 12 544 a step, so it needs a small lr and long training (lr 1e-3 for 10 epochs: 85.9 %).
    "seed004": {"epochs": 40, "batch_size": 64, "lr": 3e-4, "optimizer": "adam", "augment": "flip"},
    "cnn-fc": {"epochs": 15, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "augment": "flip"},
    "resnet": {"epochs": 30, "batch_size": 128, "lr": 0.1, "optimizer": "sgd", "weight_decay": 5e-4, "augment": "flip+shift2",
               "label_smoothing": 0.1},
}


def build(name, *, backend="numpy", dtype="float32", device=None, seed=0) -> nn.Module:
    """A built-in model with torch-default initialization drawn from ``seed``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    if name == "resnet":
        from .. import _random

        # Every layer draws from one generator seeded here (the layers' seed= stays unset).
        state = _random.default_generator()
        _random.manual_seed(seed)
        try:
            return ResNet(backend=backend, dtype=dtype, device=device)
        finally:
            _random._generator = state
    counter = iter(range(1000))

    def layer(cls, *args, **kwargs):
        return cls(*args, **kwargs, backend=backend, dtype=dtype, device=device, seed=seed * 1000 + next(counter))

    if name == "cnn-fc":
        return nn.Sequential(*_cnn_fc(layer, seed))
    return nn.Sequential(*(_seed_cnn(layer) if name == "seed-cnn" else _seed004(layer)))
