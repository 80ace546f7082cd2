"""Shared by the scripts that tests/test_distributed.py runs under ``mpiexec``."""

import numpy as np

from portaconv import functional as F
from portaconv.app import datasets


def synthetic(n, seed=0):
    """``n`` random 28×28 uint8 images with random labels 0..9: no download."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    return datasets.Dataset(images, labels, 0.2860, 0.3530)


def forward_backward(net, opt, x, y):
    """The mean cross-entropy loss of a batch, with its gradients in the parameters' ``.grad``."""
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    return loss


def flat_parameters(net):
    return np.concatenate([np.asarray(p.data, dtype=np.float64).ravel() for p in net.parameters()])
