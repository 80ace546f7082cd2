"""The benchmark harness behind ``portaconv bench`` (and ``benchmarks/run.py``).

Times portaconv on one backend side by side with torch (torch.nn.functional and autograd) in the
same process, on fixed suites of shapes, calls of the two libraries alternating: median after
warm-up, synchronizing on GPUs. From the command line each workload runs in a fresh process of its
own (``--no-isolate`` keeps one process). Reports
GFLOP/s for convolutions (2·N·K·C/groups·kh·kw·oh·ow per pass; forward+backward counts 3 passes),
the ratio torch time / portaconv time (above 1: portaconv is faster), peak memory, and the max
error of both against float64 NumPy on portaconv's Array API reference path
(``portaconv.options(reference=True)``).
"""

from __future__ import annotations

import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import functional as F
from .. import options
from .._backend import get_namespace, to_numpy
from ..testing import max_error

__all__ = ["SUITES", "Workload", "run_suite", "add_arguments", "main"]


@dataclass(frozen=True)
class Conv:
    """A conv layer: (N, C, H=W, K, k, padding, stride)."""

    batch: int
    channels: int
    size: int
    out_channels: int
    kernel: int
    padding: int
    stride: int = 1

    @property
    def label(self):
        s = f"N{self.batch} C{self.channels} {self.size}² K{self.out_channels} {self.kernel}×{self.kernel}"
        return s + (f"/{self.stride}" if self.stride > 1 else "") + f" p{self.padding}"

    def flops(self):
        out = (self.size + 2 * self.padding - self.kernel) // self.stride + 1
        return 2 * self.batch * self.out_channels * self.channels * self.kernel**2 * out * out


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # conv, conv_transpose, max_pool, lrn, seed_forward, seed_train, seed_train_explicit
    shape: object = None
    modes: tuple = ("forward+backward",)
    params: dict = field(default_factory=dict)


def _conv_workloads(convs, modes=("forward", "grad_input", "grad_weight", "forward+backward")):
    return [Workload(f"conv2d {c.label}", "conv", c, modes) for c in convs]


_CPU = [Conv(64, 32, 13, 64, 3, 1), Conv(32, 64, 56, 64, 3, 1), Conv(16, 128, 28, 128, 3, 1), Conv(16, 3, 224, 64, 7, 3, 2)]
_GPU = [Conv(n, c, s, c, 3, 1) for n in (32, 128) for c, s in ((64, 56), (128, 28), (256, 14), (512, 7))]
_GPU += [Conv(32, 3, 224, 64, 7, 3, 2), Conv(128, 3, 224, 64, 7, 3, 2), Conv(8, 64, 54, 64, 3, 1)]

SUITES = {
    "seed": [
        Workload("conv2d seed 002: 1×1×28², 6@3×3", "conv", Conv(1, 1, 28, 6, 3, 0), ("forward+backward",)),
        Workload("seed-cnn forward, batch 1", "seed_forward", 1, ("forward",)),
        Workload("seed-cnn train step, batch 64", "seed_train", 64),
        Workload("seed-cnn train step, batch 64, explicit backward", "seed_train_explicit", 64),
    ],
    "cpu": _conv_workloads(_CPU)
    + [
        Workload("conv_transpose2d N32 C64 28² K32 4×4/2 p1", "conv_transpose", (32, 64, 28, 32, 4, 1, 2), ("forward", "forward+backward")),
        Workload("max_pool2d N32 C64 56² 2×2/2", "max_pool", (32, 64, 56, 56), ("forward", "forward+backward"), {"kernel_size": 2}),
        Workload("max_pool2d N16 C64 112² 3×3/2 p1", "max_pool", (16, 64, 112, 112), ("forward", "forward+backward"), {"kernel_size": 3, "stride": 2, "padding": 1}),
        Workload("local_response_norm N32 C64 28² size 5", "lrn", (32, 64, 28, 28), ("forward", "forward+backward"), {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}),
        Workload("seed-cnn train step, batch 64", "seed_train", 64),
    ],
    "gpu": _conv_workloads(_GPU, ("forward+backward",))
    + [
        Workload("max_pool2d N128 C64 112² 3×3/2 p1", "max_pool", (128, 64, 112, 112), ("forward+backward",), {"kernel_size": 3, "stride": 2, "padding": 1}),
        Workload("local_response_norm N128 C64 56² size 5", "lrn", (128, 64, 56, 56), ("forward+backward",), {"size": 5}),
        Workload("seed-cnn train step, batch 64", "seed_train", 64),
        Workload("seed-cnn train step, batch 512", "seed_train", 512),
    ],
}


class _Side:
    """One library under test: how to make arrays, synchronize, and run each workload."""

    def __init__(self, name, xp, device, dtype):
        self.name, self.xp, self.device, self.dtype = name, xp, device, dtype

    def array(self, values):
        return self.xp.asarray(values, dtype=getattr(self.xp, self.dtype), device=self.device)

    def sync(self):
        if self.name.startswith("cupy"):
            import cupy

            cupy.cuda.Device().synchronize()
        elif str(self.device).startswith("cuda"):
            import torch

            torch.cuda.synchronize()


def _portaconv_call(side, workload, mode, arrays):
    kind, p = workload.kind, workload.params
    if kind == "conv":
        c = workload.shape
        x, w = arrays
        conv = dict(stride=c.stride, padding=c.padding)
        if mode == "forward":
            return lambda: F.conv2d(x, w, None, **conv)
        grad = side.array(np.ones(tuple(F.conv2d(x, w, None, **conv).shape)))
        if mode == "grad_input":
            return lambda: F.conv2d_grad_input(grad, w, input_shape=tuple(x.shape), **conv)
        if mode == "grad_weight":
            return lambda: F.conv2d_grad_weight(grad, x, weight_shape=tuple(w.shape), **conv)
        return lambda: (F.conv2d(x, w, None, **conv), F.conv2d_backward(grad, x, w, None, **conv))
    if kind == "conv_transpose":
        x, w = arrays
        n, c, s, k, kernel, pad, stride = workload.shape
        conv = dict(stride=stride, padding=pad)
        if mode == "forward":
            return lambda: F.conv_transpose2d(x, w, None, **conv)
        grad = side.array(np.ones(tuple(F.conv_transpose2d(x, w, None, **conv).shape)))
        return lambda: (F.conv_transpose2d(x, w, None, **conv), F.conv_transpose2d_backward(grad, x, w, None, **conv))
    if kind in ("max_pool", "lrn"):
        (x,) = arrays
        op = "max_pool2d" if kind == "max_pool" else "local_response_norm"
        if mode == "forward":
            return lambda: getattr(F, op)(x, **p)
        grad = side.array(np.ones(tuple(getattr(F, op)(x, **p).shape)))
        return lambda: (getattr(F, op)(x, **p), getattr(F, op + "_backward")(grad, x, **p))
    return _portaconv_network(side, workload, arrays)


def _portaconv_network(side, workload, arrays):
    from .. import functional as F
    from .. import optim
    from ..autograd import no_grad
    from . import models

    net = models.build("seed-cnn", backend=side.xp, dtype=side.dtype, device=side.device)
    x, y = arrays
    if workload.kind == "seed_forward":
        net.eval()

        def forward():
            with no_grad():
                return net(x)

        return forward
    opt = optim.Adam(net.parameters())
    if workload.kind == "seed_train_explicit":
        return _explicit_step(net, opt, x, y, side)

    def step():
        loss = F.nll_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _explicit_step(net, opt, x, y, side):
    """seed-cnn's training step on plain arrays through the f / f_backward contract, written out
    by hand (no graph): the baseline for the autograd step's overhead."""
    conv1, conv2, fc = net[0], net[3], net[7]
    xp, one = side.xp, side.array(1.0)

    def step():
        w1, b1, w2, b2, w3, b3 = (p.data for p in (conv1.weight, conv1.bias, conv2.weight, conv2.bias, fc.weight, fc.bias))
        h1 = F.conv2d(x, w1, b1)
        p1 = F.max_pool2d(h1, 2)
        r1 = F.relu(p1)
        h2 = F.conv2d(r1, w2, b2)
        p2 = F.max_pool2d(h2, 2)
        r2 = F.relu(p2)
        flat = F.flatten(r2)
        z = F.linear(flat, w3, b3)
        out = F.log_softmax(z, 1)
        F.nll_loss(out, y)
        g = F.nll_loss_backward(one, out, y)[0]
        g = F.log_softmax_backward(g, z, 1)[0]
        g, fc.weight.grad, fc.bias.grad = F.linear_backward(g, flat, w3, b3)
        g = F.max_pool2d_backward(F.relu_backward(F.flatten_backward(g, r2)[0], p2)[0], h2, 2)[0]
        g, conv2.weight.grad, conv2.bias.grad = F.conv2d_backward(g, r1, w2, b2)
        g = F.max_pool2d_backward(F.relu_backward(g, p1)[0], h1, 2)[0]
        conv1.weight.grad = F.conv2d_grad_weight(g, x, weight_shape=tuple(w1.shape))
        conv1.bias.grad = xp.sum(g, axis=(0, 2, 3))
        opt.step()

    return step


def _torch_call(side, workload, mode, arrays):
    import torch
    import torch.nn.functional as tf

    kind, p = workload.kind, workload.params
    if kind in ("seed_forward", "seed_train", "seed_train_explicit"):
        return _torch_network(side, workload, arrays)
    needs_grad = mode != "forward"
    inputs = [a.detach().requires_grad_(needs_grad) for a in arrays]
    if kind == "conv":
        c = workload.shape
        function = lambda x, w: tf.conv2d(x, w, None, c.stride, c.padding)  # noqa: E731
    elif kind == "conv_transpose":
        n, ch, s, k, kernel, pad, stride = workload.shape
        function = lambda x, w: tf.conv_transpose2d(x, w, None, stride, pad)  # noqa: E731
    elif kind == "max_pool":
        function = lambda x: tf.max_pool2d(x, **p)  # noqa: E731
    else:
        function = lambda x: tf.local_response_norm(x, **p)  # noqa: E731
    if mode == "forward":
        def run():
            with torch.no_grad():
                return function(*inputs)
        return run
    grad = torch.ones_like(function(*inputs))
    if kind == "conv" and mode in ("grad_input", "grad_weight"):
        c = workload.shape
        x, w = inputs
        if mode == "grad_input":
            return lambda: torch.nn.grad.conv2d_input(tuple(x.shape), w.detach(), grad, c.stride, c.padding)
        return lambda: torch.nn.grad.conv2d_weight(x.detach(), tuple(w.shape), grad, c.stride, c.padding)

    def run():
        out = function(*inputs)
        return out, torch.autograd.grad(out, inputs, grad)

    return run


def _torch_network(side, workload, arrays):
    import torch

    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(1600, 10), torch.nn.LogSoftmax(dim=1),
    ).to(device=side.device, dtype=getattr(torch, side.dtype))
    x, y = arrays
    if workload.kind == "seed_forward":
        net.eval()

        def forward():
            with torch.no_grad():
                return net(x)

        return forward
    opt = torch.optim.Adam(net.parameters())

    def step():
        loss = torch.nn.functional.nll_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _inputs(workload, rng):
    """Float64 NumPy inputs of a workload (the reference computes on these)."""
    kind = workload.kind
    if kind == "conv":
        c = workload.shape
        return [rng.standard_normal((c.batch, c.channels, c.size, c.size)), rng.standard_normal((c.out_channels, c.channels, c.kernel, c.kernel)) * 0.1]
    if kind == "conv_transpose":
        n, c, s, k, kernel, pad, stride = workload.shape
        return [rng.standard_normal((n, c, s, s)), rng.standard_normal((c, k, kernel, kernel)) * 0.1]
    if kind in ("max_pool", "lrn"):
        return [rng.standard_normal(workload.shape)]
    batch = workload.shape
    return [rng.standard_normal((batch, 1, 28, 28)), rng.integers(0, 10, batch)]


def _time(sides, repeat, warmup, budget, rounds=4, settle=0.1, block=0.25):
    """Median seconds per call of each ``(function, sync)``.

    The sides run in alternating blocks (A, B, A, B, ...). Each block first runs untimed for
    ``settle`` seconds, so the other library's thread pools stop spinning (OpenBLAS and OpenMP
    workers busy-wait after a call; alternating single calls slowed torch's batch-1 forward
    20-fold here), then times calls for at least ``block`` seconds. Alternating keeps both sides
    on the same CPU clock, which after idle runs up to ~40% faster than under sustained load.
    """
    for function, sync in sides:
        for _ in range(warmup):
            function()
        sync()
    per_block = max(1, -(-repeat // rounds))
    times = [[] for _ in sides]
    start = time.perf_counter()
    for round_ in range(rounds):
        if round_ >= 1 and time.perf_counter() - start > budget:
            break
        for (function, sync), record in zip(sides, times):
            begin = time.perf_counter()
            while True:
                function()
                sync()
                if time.perf_counter() - begin >= settle:
                    break
            begin, count = time.perf_counter(), 0
            while count < per_block or time.perf_counter() - begin < block:
                t = time.perf_counter()
                function()
                sync()
                record.append(time.perf_counter() - t)
                count += 1
    return [statistics.median(t) for t in times], len(times[0])


def _peak_numpy(function):
    tracemalloc.start()
    tracemalloc.reset_peak()
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _peak_gpu(side, function):
    if side.name.startswith("cupy"):
        import cupy

        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        function()
        side.sync()
        return pool.total_bytes()
    if str(side.device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
        function()
        side.sync()
        return torch.cuda.max_memory_allocated()
    return None


def _flatten(result):
    if isinstance(result, (tuple, list)):
        return [r for item in result for r in _flatten(item)]
    return [] if result is None else [result]


def run_suite(suite, *, backend="numpy", device=None, dtype="float32", compare="torch", repeat=20, warmup=3,
              budget=10.0, only=None, isolate=False, process_setup=None, out=print):
    """Run a suite; returns the list of result rows (dicts).

    ``isolate``: each workload in a fresh Python process (``backend`` named by a string), set up
    by ``process_setup`` (keyword arguments of :func:`_setup_process`), so no row inherits an
    earlier row's heap, thread pools or caches. (It does not undo the machine's own slowdown under
    sustained load, which both libraries see.)
    """
    rows = []
    for index, workload in enumerate(SUITES[suite]):
        if only and not any(word in workload.name for word in only):
            continue
        if isolate:
            if not isinstance(backend, str):
                raise ValueError(f"run_suite: isolate needs the backend's name, got {backend!r}")
            spec = dict(suite=suite, index=index, backend=backend, device=device, dtype=dtype, compare=compare,
                        repeat=repeat, warmup=warmup, budget=budget, setup=process_setup or {})
            new = _run_isolated(spec)
        else:
            new = _run_workload(workload, index, backend, device, dtype, compare, repeat, warmup, budget)
        for row in new:
            rows.append(row)
            out(_format_row(row))
    return rows


def _run_isolated(spec):
    """One workload's rows from a fresh Python process (see :func:`_worker`)."""
    code = "import sys; from portaconv.app.bench import _worker; _worker(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark process for workload {spec['index']} of suite {spec['suite']!r} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker(spec):
    """Entry point of an isolated workload's process: prints its rows as one line of JSON."""
    spec = json.loads(spec)
    _setup_process(**spec.pop("setup"))
    suite, index = spec.pop("suite"), spec.pop("index")
    rows = _run_workload(SUITES[suite][index], index, **spec)
    print(json.dumps(rows, default=float))


def _setup_process(*, tf32=False, compare="torch"):
    """What :func:`main` sets before timing, for this process: torch's TF32 switches on CUDA.

    Nothing of portaconv's: the harness measures the library's defaults, what a user gets."""
    if compare == "torch":
        import torch

        if torch.cuda.is_available():
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32


def _run_workload(workload, index, backend, device, dtype, compare, repeat, warmup, budget):
    """Rows (one per pass) of one workload, its inputs drawn from seed ``index``."""
    xp = get_namespace(backend)
    ours = _Side(backend if isinstance(backend, str) else backend.__name__, xp, device, dtype)
    theirs = None
    if compare == "torch":
        torch_device = device if device is not None else ("cuda" if ours.name == "cupy" else "cpu")
        theirs = _Side("torch", get_namespace("torch"), torch_device, dtype)
    rng = np.random.default_rng(index)
    # Rounded through float32, so the float64 reference sees the ties the float32 runs see.
    inputs = [a.astype(np.float32).astype(np.float64) if a.dtype.kind == "f" else a for a in _inputs(workload, rng)]
    ints = [a.dtype.kind == "i" for a in inputs]
    our_arrays = [xp.asarray(a, device=device) if i else ours.array(a) for a, i in zip(inputs, ints)]
    reference = [get_namespace("numpy").asarray(a) for a in inputs]
    rows = []
    for mode in workload.modes:
        row = {"workload": workload.name, "mode": mode}
        function = _portaconv_call(ours, workload, mode, our_arrays)
        sides = [(function, ours.sync)]
        if theirs is not None:
            torch_arrays = [theirs.xp.asarray(a, device=theirs.device) if i else theirs.array(a) for a, i in zip(inputs, ints)]
            torch_function = _torch_call(theirs, workload, mode, torch_arrays)
            sides.append((torch_function, theirs.sync))
        medians, row["runs"] = _time(sides, repeat, warmup, budget)
        row["seconds"] = medians[0]
        if workload.kind == "conv":
            passes = 3 if mode == "forward+backward" else 1
            row["gflops"] = passes * workload.shape.flops() / row["seconds"] / 1e9
        row["peak_bytes"] = _peak_numpy(function) if ours.name == "numpy" else _peak_gpu(ours, function)
        if workload.kind not in ("seed_forward", "seed_train", "seed_train_explicit"):
            with options(reference=True):  # the Array API reference path, not the kernels under test
                ref = _flatten(_portaconv_call(_Side("numpy", get_namespace("numpy"), None, "float64"), workload, mode, reference)())
            row["max_error"] = max(max_error(a, b) for a, b in zip(_flatten(function()), ref))
        if theirs is not None:
            row["torch_seconds"] = medians[1]
            row["ratio"] = row["torch_seconds"] / row["seconds"]
            row["torch_peak_bytes"] = _peak_gpu(theirs, torch_function)
            if "max_error" in row:
                torch_results = [to_numpy(a.detach()) for a in _flatten(torch_function())]
                row["torch_max_error"] = max(max_error(a, b) for a, b in zip(torch_results, ref))
        rows.append(row)
    return rows


def _ms(seconds):
    """Milliseconds to 3 significant digits (0.0968, 12.4, 142)."""
    if seconds is None:
        return ""
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _mib(value):
    return "" if value is None else f"{value / 2**20:.0f}"


def _format_row(row):
    parts = [f"{row['workload']:44s} {row['mode']:16s} {_ms(row['seconds']):>8s} ms"]
    if "gflops" in row:
        parts.append(f"{row['gflops']:6.1f} GF/s")
    if "ratio" in row:
        parts.append(f"torch {_ms(row['torch_seconds']):>8s} ms  ratio {row['ratio']:.2f}")
    return "  ".join(parts)


def markdown(rows, settings):
    lines = [
        f"Machine: {settings['machine']}; {settings['processor']}; {settings['cores']} cores. Date: {settings['date']}.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in settings['versions'].items())}.",
        *([_gpu_line(settings)] if settings.get("cuda") else []),
        f"Backend {settings['backend']}, {settings['dtype']}, median of up to {settings['repeat']} runs after {settings['warmup']} warm-up, the two libraries timed in alternating blocks after a settling period"
        + (", each workload in a fresh process." if settings.get("isolated") else ", all workloads in one process.")
        + (f" TF32: {settings['tf32']}." if settings.get("tf32") else ""),
        f"Command: `{settings['command']}`",
        "",
        "| workload | pass | portaconv ms | GFLOP/s | torch ms | ratio (torch/portaconv) | peak MiB | torch peak MiB | max err | torch max err |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['mode']} | {_ms(r['seconds'])} | {r.get('gflops', 0):.1f} | {_ms(r.get('torch_seconds'))} | "
            f"{r.get('ratio', float('nan')):.2f} | {_mib(r.get('peak_bytes'))} | {_mib(r.get('torch_peak_bytes'))} | "
            f"{r.get('max_error', float('nan')):.1e} | {r.get('torch_max_error', float('nan')):.1e} |"
        )
    return "\n".join(lines).replace("| 0.0 |", "|  |").replace("nan", "")


def _cuda_version(number) -> str:
    """CUDA's version number, 1000·major + 10·minor (13020), as "13.2"."""
    return f"{number // 1000}.{number % 1000 // 10}"


def _gpu_line(settings):
    cuda = settings["cuda"]
    return f"GPU: {cuda['device']}, CUDA driver {_cuda_version(cuda['driver'])}, runtime {_cuda_version(cuda['runtime'])}."


def _settings(args, backend):
    import importlib

    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("portaconv", "array_api_compat", "array_api_extra", "torch", "cupy"):
        if name in sys.modules or name in ("portaconv", "torch") or name == backend:
            try:
                versions[name] = importlib.import_module(name).__version__
            except ImportError:
                pass
    settings = {
        "suite": args.suite, "backend": backend, "dtype": args.dtype, "repeat": args.repeat, "warmup": args.warmup,
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
        "processor": _cpu_name(), "cores": __import__("os").cpu_count(), "versions": versions,
        "command": "portaconv bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else " ".join(sys.argv),
    }
    if backend == "cupy" or (args.device or "").startswith("cuda"):
        import os

        settings["tf32"] = {"cupy CUPY_TF32": os.environ.get("CUPY_TF32", "0")}
        if backend == "cupy":
            import cupy

            runtime = cupy.cuda.runtime
            settings["cuda"] = {"driver": runtime.driverGetVersion(), "runtime": runtime.runtimeGetVersion(),
                                "device": runtime.getDeviceProperties(0)["name"].decode()}
        if "torch" in sys.modules:
            import torch

            settings["tf32"].update({"torch cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                                     "torch matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32})
            settings["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return settings


def _cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def add_arguments(parser):
    parser.add_argument("--suite", default="cpu", choices=sorted(SUITES))
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--compare", default="torch", choices=["torch", "none"])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per row (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per row after 3 timed runs")
    parser.add_argument("--only", nargs="*", help="rows whose name contains one of these words")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 on the GPU on both sides (default: strict fp32)")
    parser.add_argument("--out", default=None, help="directory for <suite>-<backend>.json/.md/.png")
    parser.add_argument("--no-isolate", action="store_true", help="run every workload in this process (default: each in a fresh one)")


def main(args):
    backend = args.backend
    get_namespace(backend)  # a missing backend (or CuPy without a GPU) says what to install, before any work
    setup = dict(tf32=args.tf32, compare=args.compare)
    _setup_process(**setup)
    if backend == "cupy":
        import os

        os.environ.setdefault("CUPY_TF32", "1" if args.tf32 else "0")
    settings = _settings(args, backend)
    settings["isolated"] = not args.no_isolate
    print(f"portaconv bench --suite {args.suite}: {backend} {args.dtype} vs {args.compare} ({settings['processor']})")
    rows = run_suite(args.suite, backend=backend, device=args.device, dtype=args.dtype, compare=args.compare,
                     repeat=args.repeat, warmup=args.warmup, budget=args.budget, only=args.only,
                     isolate=not args.no_isolate, process_setup=setup)
    table = markdown(rows, settings)
    print()
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{args.suite}-{backend}" + ("-tf32" if args.tf32 else "")
        (out / f"{stem}.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2, default=str))
        (out / f"{stem}.md").write_text(table + "\n")
        _chart(rows, out / f"{stem}.png", settings)
        print(f"wrote {out / stem}.json, .md" + (", .png" if (out / f"{stem}.png").exists() else ""))
    return 0


def _chart(rows, path, settings):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart")
        return
    rated = [r for r in rows if "ratio" in r]
    if not rated:
        return
    figure, axis = plt.subplots(figsize=(9, 0.3 * len(rated) + 1.5))
    labels = [f"{r['workload']} [{r['mode']}]" for r in rated]
    axis.barh(range(len(rated)), [r["ratio"] for r in rated], color=["tab:green" if r["ratio"] >= 0.8 else "tab:orange" for r in rated])
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.axvline(0.8, color="gray", linestyle="--", linewidth=0.8)
    axis.set_yticks(range(len(rated)), labels, fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel("speed relative to torch (torch time / portaconv time)")
    axis.set_title(f"portaconv {settings['backend']} vs torch, {settings['suite']} suite, {settings['dtype']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
