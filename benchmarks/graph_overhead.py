"""The autograd graph's cost per op, apart from the op's own math.

A chain of ``length`` relu calls on a one-element float32 array (the op itself is ~1 µs), timed
three ways: plain arrays (the explicit API, no graph), Tensors requiring grad (forward records a
node per op), and that forward plus ``backward()`` (each node calls relu_backward). The per-op
differences are the graph's overhead; docs/performance.md quotes them.

    python benchmarks/graph_overhead.py [--length 100] [--repeat 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import portaconv.functional as F
from portaconv import Tensor


def _median_seconds(function, repeat):
    for _ in range(10):
        function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    x = np.ones(1, dtype=np.float32)

    def plain():
        y = x
        for _ in range(args.length):
            y = F.relu(y)
        return y

    def recorded():
        y = Tensor(x, requires_grad=True)
        for _ in range(args.length):
            y = F.relu(y)
        return y

    def explicit_backward():
        inputs, y = [], x
        for _ in range(args.length):
            inputs.append(y)
            y = F.relu(y)
        g = np.ones_like(y)
        for value in reversed(inputs):
            g = F.relu_backward(g, value)[0]
        return g

    def graph_backward():
        leaf = Tensor(x, requires_grad=True)
        y = leaf
        for _ in range(args.length):
            y = F.relu(y)
        y.sum().backward()
        return leaf.grad

    per_op = {name: _median_seconds(f, args.repeat) / args.length * 1e6 for name, f in
              [("plain forward", plain), ("graph forward", recorded), ("explicit forward+backward", explicit_backward),
               ("graph forward+backward", graph_backward)]}
    for name, micro in per_op.items():
        print(f"{name:28s} {micro:6.2f} µs per op")
    print(f"{'graph overhead, forward':28s} {per_op['graph forward'] - per_op['plain forward']:6.2f} µs per op")
    print(f"{'graph overhead, both':28s} {per_op['graph forward+backward'] - per_op['explicit forward+backward']:6.2f} µs per op")


if __name__ == "__main__":
    main()
