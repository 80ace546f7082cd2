"""seed-cnn op by op against torch, in one process: where a step's (or a forward's) time goes.

A diagnosis beside the harness (`portaconv bench`), not a replacement: each op is called on
fixed arrays, portaconv and torch alternating, ``ROUNDS`` rounds of ``SECONDS`` each, and the
best round's median is printed. torch's side is the op its autograd runs.

    python3 benchmarks/seed_ops.py step      # batch 64: every forward and backward op of a step
    python3 benchmarks/seed_ops.py batch1    # batch 1: the forward's layers
"""

import sys
import time

import numpy as np
import torch
import torch.nn.functional as tf

import portaconv.functional as F
from portaconv.functional import pooling

ROUNDS, SECONDS = 3, 0.6


def _median_ms(function):
    for _ in range(3):
        function()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < SECONDS or len(times) < 5:
        t = time.perf_counter()
        function()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def _compare(rows):
    total_ours = total_torch = 0.0
    with torch.no_grad():
        for name, ours, theirs in rows:
            rounds = [(_median_ms(ours), _median_ms(theirs)) for _ in range(ROUNDS)]  # alternating
            a, b = min(r[0] for r in rounds), min(r[1] for r in rounds)
            total_ours, total_torch = total_ours + a, total_torch + b
            print(f"{name:34s} portaconv {a:8.3f} ms   torch {b:8.3f} ms   ratio {b / a:5.2f}")
    print(f"{'sum':34s} portaconv {total_ours:8.3f} ms   torch {total_torch:8.3f} ms")


def _arrays(batch):
    rng = np.random.default_rng(0)
    f32 = np.float32
    x = rng.standard_normal((batch, 1, 28, 28)).astype(f32)
    w1, b1 = (rng.standard_normal((32, 1, 3, 3)) * 0.3).astype(f32), np.zeros(32, f32)
    w2, b2 = (rng.standard_normal((64, 32, 3, 3)) * 0.1).astype(f32), np.zeros(64, f32)
    w3, b3 = (rng.standard_normal((10, 1600)) * 0.03).astype(f32), np.zeros(10, f32)
    return x, w1, b1, w2, b2, w3, b3, rng.integers(0, 10, batch)


_TENSORS = {}


def _t(a):
    """The torch tensor sharing ``a``'s memory, made once (its conversion is not torch's time)."""
    key = id(a)
    if key not in _TENSORS:
        _TENSORS[key] = (a, torch.from_numpy(np.ascontiguousarray(a)))  # a kept: its id stays unique
    return _TENSORS[key][1]


def _activations(x, w1, b1, w2, b2, w3, b3):
    """seed-cnn's forward on plain arrays: every op's input, the ops then timed one by one."""
    h1 = F.conv2d(x, w1, b1)
    p1 = F.max_pool2d(h1, 2)
    r1 = F.relu(p1)
    h2 = F.conv2d(r1, w2, b2)
    p2 = F.max_pool2d(h2, 2)
    r2 = F.relu(p2)
    flat = F.flatten(r2)
    return h1, p1, r1, h2, p2, r2, flat, F.linear(flat, w3, b3)


def batch1():
    x, w1, b1, w2, b2, w3, b3, _ = _arrays(1)
    h1, p1, r1, h2, p2, r2, flat, z = _activations(x, w1, b1, w2, b2, w3, b3)
    _compare([
        ("conv1", lambda: F.conv2d(x, w1, b1), lambda: tf.conv2d(_t(x), _t(w1), _t(b1))),
        ("max_pool 2 (26²)", lambda: F.max_pool2d(h1, 2), lambda: tf.max_pool2d(_t(h1), 2)),
        ("relu", lambda: F.relu(p1), lambda: tf.relu(_t(p1))),
        ("conv2", lambda: F.conv2d(r1, w2, b2), lambda: tf.conv2d(_t(r1), _t(w2), _t(b2))),
        ("max_pool 2 (11²)", lambda: F.max_pool2d(h2, 2), lambda: tf.max_pool2d(_t(h2), 2)),
        ("relu", lambda: F.relu(p2), lambda: tf.relu(_t(p2))),
        ("flatten", lambda: F.flatten(r2), lambda: torch.flatten(_t(r2), 1)),
        ("linear", lambda: F.linear(flat, w3, b3), lambda: tf.linear(_t(flat), _t(w3), _t(b3))),
        ("log_softmax", lambda: F.log_softmax(z, 1), lambda: tf.log_softmax(_t(z), 1)),
    ])


def step():
    x, w1, b1, w2, b2, w3, b3, y = _arrays(64)
    h1, p1, r1, h2, p2, r2, flat, z = _activations(x, w1, b1, w2, b2, w3, b3)
    out = F.log_softmax(z, 1)
    g_out = F.nll_loss_backward(np.float32(1), out, y)[0]
    gz = F.log_softmax_backward(g_out, z, 1)[0]
    gp2 = F.relu_backward(F.flatten_backward(F.linear_backward(gz, flat, w3, b3)[0], r2)[0], p2)[0]
    gh2 = F.max_pool2d_backward(gp2, h2, 2)[0]
    gr1 = F.conv2d_backward(gh2, r1, w2, b2)[0]
    gp1 = F.relu_backward(gr1, p1)[0]
    gh1 = F.max_pool2d_backward(gp1, h1, 2)[0]

    def torch_pool(h, g):
        # The step's max pool: forward with indices, backward through them (as torch's autograd).
        th, tg = _t(h), _t(g)
        indices = tf.max_pool2d(th, 2, return_indices=True)[1]
        forward = lambda: tf.max_pool2d(th, 2, return_indices=True)  # noqa: E731
        backward = lambda: torch.ops.aten.max_pool2d_with_indices_backward(tg, th, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)  # noqa: E731
        return forward, backward

    def our_pool(h, g):
        # The graph's max pool: forward keeping each window's first-max tap, backward scattering to it.
        residuals = pooling._max_pool2d_vjp_forward((True,), h, 2)[1]
        return (lambda: pooling._max_pool2d_vjp_forward((True,), h, 2),
                lambda: pooling._max_pool2d_vjp_backward(residuals, g, (True,)))

    (pool1_f, pool1_b), (tpool1_f, tpool1_b) = our_pool(h1, gp1), torch_pool(h1, gp1)
    (pool2_f, pool2_b), (tpool2_f, tpool2_b) = our_pool(h2, gp2), torch_pool(h2, gp2)
    conv_backward = torch.ops.aten.convolution_backward
    _compare([
        ("conv1 forward", lambda: F.conv2d(x, w1, b1), lambda: tf.conv2d(_t(x), _t(w1), _t(b1))),
        ("max_pool 2 (26²) forward", pool1_f, tpool1_f),
        ("relu forward", lambda: F.relu(p1), lambda: tf.relu(_t(p1))),
        ("conv2 forward", lambda: F.conv2d(r1, w2, b2), lambda: tf.conv2d(_t(r1), _t(w2), _t(b2))),
        ("max_pool 2 (11²) forward", pool2_f, tpool2_f),
        ("linear forward", lambda: F.linear(flat, w3, b3), lambda: tf.linear(_t(flat), _t(w3), _t(b3))),
        ("log_softmax forward", lambda: F.log_softmax(z, 1), lambda: tf.log_softmax(_t(z), 1)),
        ("log_softmax backward", lambda: F.log_softmax_backward(g_out, z, 1),
         lambda: torch.ops.aten._log_softmax_backward_data(_t(g_out), _t(out), 1, torch.float32)),
        ("linear backward", lambda: F.linear_backward(gz, flat, w3, b3),
         lambda: (_t(gz) @ _t(w3), _t(gz).T @ _t(flat), _t(gz).sum(0))),
        ("max_pool 2 (11²) backward", pool2_b, tpool2_b),
        ("conv2 backward (input, weight, bias)", lambda: F.conv2d_backward(gh2, r1, w2, b2),
         lambda: conv_backward(_t(gh2), _t(r1), _t(w2), [64], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, True])),
        ("relu backward", lambda: F.relu_backward(gr1, p1), lambda: torch.ops.aten.threshold_backward(_t(gr1), _t(p1), 0)),
        ("max_pool 2 (26²) backward", pool1_b, tpool1_b),
        ("conv1 backward (weight, bias)", lambda: (F.conv2d_grad_weight(gh1, x, weight_shape=(32, 1, 3, 3)), np.sum(gh1, axis=(0, 2, 3))),
         lambda: conv_backward(_t(gh1), _t(x), _t(w1), [32], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, True])),
    ])


if __name__ == "__main__":
    {"step": step, "batch1": batch1}[sys.argv[1] if len(sys.argv) > 1 else "step"]()
