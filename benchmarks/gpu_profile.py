"""Where a CuPy convolution's time goes, next to torch cuDNN (strict fp32), on gpu-suite shapes.

Usage on a CUDA machine (CuPy and torch with CUDA): ``python benchmarks/gpu_profile.py``.

For each shape it prints, per call, GPU time (CUDA events, median) and host time: the forward,
each gradient and the whole backward with the raw CUDA kernels (``portaconv.options(kernels="auto")``)
and with the Array API reference's slice copies (``kernels="reference"``), then the parts of the
kernel path: im2col, the three matrix products and col2im (``portaconv.primitives``), each primitive
also on the reference path. The README's "GPU" section quotes its output on an H100.

Nothing here imports CuPy or torch until :func:`profile` runs.
"""

import numpy as np

import portaconv
import portaconv.functional as F
from portaconv import primitives
from portaconv._backend import get_namespace
from portaconv.primitives.window import Window

KERNELS = {"reference": "reference", "kernel": "auto"}  # label: portaconv.options(kernels=...)

SHAPES = [  # (N, C, H=W, K, kernel, padding, stride)
    (32, 64, 56, 64, 3, 1, 1),
    (32, 128, 28, 128, 3, 1, 1),
    (32, 512, 7, 512, 3, 1, 1),
    (128, 64, 56, 64, 3, 1, 1),
    (32, 3, 224, 64, 7, 3, 2),
]


def _cupy_ms(function, repeat=20):
    """(GPU ms, host ms), medians over ``repeat`` calls after 3 warm-up calls."""
    from cupyx.profiler import benchmark

    result = benchmark(function, n_repeat=repeat, n_warmup=3)
    return float(np.median(result.gpu_times[0])) * 1e3, float(np.median(result.cpu_times)) * 1e3


def _torch_ms(function, repeat=20):
    import torch

    for _ in range(3):
        function()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeat):
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def profile(n, c, size, k, kernel, padding, stride):
    import cupy
    import torch

    xp = get_namespace("cupy")
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((n, c, size, size)).astype(np.float32)
    weight_host = (rng.standard_normal((k, c, kernel, kernel)) * 0.1).astype(np.float32)
    x, weight = cupy.asarray(x_host), cupy.asarray(weight_host)
    conv = dict(stride=stride, padding=padding)
    out = F.conv2d(x, weight, None, **conv)
    grad = cupy.ones(out.shape, dtype=cupy.float32)
    oh, ow = out.shape[2], out.shape[3]
    rows = {}
    # The options are read when each call runs, so every timed call sits inside its block.
    for label, kernels in KERNELS.items():
        with portaconv.options(kernels=kernels):
            rows[f"forward {label}"] = _cupy_ms(lambda: F.conv2d(x, weight, None, **conv))
            rows[f"grad_input {label}"] = _cupy_ms(lambda: F.conv2d_grad_input(grad, weight, input_shape=x.shape, **conv))
            rows[f"grad_weight {label}"] = _cupy_ms(lambda: F.conv2d_grad_weight(grad, x, weight_shape=weight.shape, **conv))
            rows[f"backward {label}"] = _cupy_ms(lambda: F.conv2d_backward(grad, x, weight, None, **conv))
    # The whole batch in one column matrix (the convolutions split it by portaconv's workspace_limit).
    geometry = Window(kernel, kernel, stride, stride, 1, 1, padding, padding, oh, ow)
    with portaconv.options(kernels="auto"):
        cols = primitives.im2col(x, geometry, xp)  # (C·kh·kw, N·oh·ow), columns in (n, a, b) order
    weight_matrix = weight.reshape(k, -1)
    grad_matrix = cupy.ascontiguousarray(grad.transpose(1, 0, 2, 3)).reshape(k, -1)  # (K, N·oh·ow)
    grad_cols = cupy.matmul(weight_matrix.T, grad_matrix)
    for label, kernels in KERNELS.items():
        with portaconv.options(kernels=kernels):
            rows[f"im2col {label}"] = _cupy_ms(lambda: primitives.im2col(x, geometry, xp))
    rows["product: forward"] = _cupy_ms(lambda: cupy.matmul(weight_matrix, cols))
    rows["product: weight gradient"] = _cupy_ms(lambda: cupy.matmul(cols, grad_matrix.T))
    rows["product: input columns"] = _cupy_ms(lambda: cupy.matmul(weight_matrix.T, grad_matrix))
    for label, kernels in KERNELS.items():
        with portaconv.options(kernels=kernels):
            rows[f"col2im {label}"] = _cupy_ms(lambda: primitives.col2im(grad_cols, x.shape, geometry, xp))

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    tx = torch.tensor(x_host, device="cuda", requires_grad=True)
    tw = torch.tensor(weight_host, device="cuda", requires_grad=True)
    tg = torch.ones(out.shape, device="cuda")

    def torch_forward_backward():
        result = torch.nn.functional.conv2d(tx, tw, None, stride, padding)
        torch.autograd.grad(result, (tx, tw), tg)

    torch_forward = _torch_ms(lambda: torch.nn.functional.conv2d(tx, tw, None, stride, padding))
    torch_both = _torch_ms(torch_forward_backward)
    ours = rows["forward kernel"][0] + rows["backward kernel"][0]
    flops = 2 * n * k * c * kernel * kernel * oh * oh
    print(f"\nN{n} C{c} {size}² K{k} {kernel}×{kernel}/{stride}: {flops / 1e9:.2f} GFLOP per pass; torch forward "
          f"{torch_forward:.3f} ms, forward+backward {torch_both:.3f} ms; portaconv {ours:.3f} ms (ratio {torch_both / ours:.2f})")
    for name, (gpu, host) in rows.items():
        print(f"  {name:26s} GPU {gpu:8.3f} ms  host {host:8.3f} ms")


if __name__ == "__main__":
    for shape in SHAPES:
        profile(*shape)
