"""Layers over portaconv.functional, torch.nn's names and defaults. Each ``forward`` is one call of
its op; the autograd graph records the backward, so no layer keeps anything between calls."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from .. import _random
from .. import functional as F
from .._backend import get_namespace
from .._shapes import _padding4, _pair
from .module import Module, Parameter

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "Linear",
    "BatchNorm1d",
    "BatchNorm2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "LocalResponseNorm",
    "ReLU",
    "LeakyReLU",
    "SiLU",
    "Tanh",
    "Sigmoid",
    "Softmax",
    "LogSoftmax",
    "Flatten",
    "Dropout",
    "Dropout2d",
    "Identity",
    "Sequential",
    "ModuleList",
]


def _generator(seed):
    """A layer's own generator when it was given ``seed=``, else the global one
    (:func:`portaconv.manual_seed`)."""
    return _random.default_generator() if seed is None else np.random.default_rng(seed)


def _array(values, backend, dtype, device):
    xp = get_namespace(backend)
    return xp.asarray(values, dtype=getattr(xp, dtype) if isinstance(dtype, str) else dtype, device=device)


class _Parametrized(Module):
    def _init_params(self, weight_shape, bias_size, fan_in, backend, dtype, device, seed):
        """torch's defaults: kaiming_uniform_(a=sqrt(5)) gives the weight bound 1/sqrt(fan_in),
        and the bias (``bias_size`` None: none) uses the same bound; both drawn U(-bound, bound)."""
        rng = _generator(seed)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        self.weight = Parameter(_array(rng.uniform(-bound, bound, size=weight_shape), backend, dtype, device))
        if bias_size is not None:
            self.bias = Parameter(_array(rng.uniform(-bound, bound, size=(bias_size,)), backend, dtype, device))
        else:
            self.register_parameter("bias", None)


class Conv2d(_Parametrized):
    """2-D convolution layer (``torch.nn.Conv2d``); weight (out, in/groups, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 *, backend="numpy", dtype="float32", device=None, seed=None):
        super().__init__()
        kh, kw = _pair(kernel_size, "kernel_size", minimum=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        # Bad stride, dilation or padding (padding='same' with a stride) fail here, as in torch.
        _padding4(padding, (kh, kw), _pair(dilation, "dilation", minimum=1), _pair(stride, "stride", minimum=1))
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self._init_params((out_channels, in_channels // groups, kh, kw), out_channels if bias else None, in_channels // groups * kh * kw, backend, dtype, device, seed)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class ConvTranspose2d(_Parametrized):
    """2-D transposed convolution layer (``torch.nn.ConvTranspose2d``); weight (in, out/groups, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
                 dilation=1, *, backend="numpy", dtype="float32", device=None, seed=None):
        super().__init__()
        kh, kw = _pair(kernel_size, "kernel_size", minimum=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.dilation, self.groups = dilation, groups
        # torch's fan_in for a (C_in, C_out/groups, kh, kw) weight is C_out/groups · kh · kw.
        fan_in = out_channels // groups * kh * kw
        self._init_params((in_channels, out_channels // groups, kh, kw), out_channels if bias else None, fan_in, backend, dtype, device, seed)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


class Linear(_Parametrized):
    """Affine layer (``torch.nn.Linear``); weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, *, backend="numpy", dtype="float32", device=None, seed=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_params((out_features, in_features), out_features if bias else None, in_features, backend, dtype, device, seed)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _BatchNorm(Module):
    """Batch normalization: batch statistics while training (and running statistics updated),
    running statistics in eval mode (``torch.nn.BatchNorm2d``'s semantics and state_dict keys).

    The running statistics are buffers reassigned at each training call (never written in
    place), so immutable arrays (JAX) work as well.
    """

    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 *, backend="numpy", dtype="float32", device=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(_array(np.ones(num_features), backend, dtype, device))
            self.bias = Parameter(_array(np.zeros(num_features), backend, dtype, device))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", _array(np.zeros(num_features), backend, dtype, device))
            self.register_buffer("running_var", _array(np.ones(num_features), backend, dtype, device))
            self.register_buffer("num_batches_tracked", _array(np.array(0), backend, "int64", device))
        else:
            self._buffers.update(running_mean=None, running_var=None, num_batches_tracked=None)

    def forward(self, x):
        if x.ndim not in self._ndims:
            raise ValueError(f"{type(self).__name__}: expected a {' or '.join(f'{n}-D' for n in self._ndims)} input, got shape {tuple(x.shape)}")
        batch_stats = self.training or not self.track_running_stats
        if self.training and self.track_running_stats:
            count = 0
            if self.momentum is None:  # the cumulative average needs the count: a host read
                count = int(self.num_batches_tracked)
            raw = x.data if hasattr(x, "_node") else x
            self.running_mean, self.running_var = F.batch_norm_running_stats(
                raw, self.running_mean, self.running_var, self.momentum, count
            )
            self.num_batches_tracked = self.num_batches_tracked + 1
        return F.batch_norm(
            x,
            None if batch_stats else self.running_mean,
            None if batch_stats else self.running_var,
            self.weight, self.bias, batch_stats, 0.0 if self.momentum is None else self.momentum, self.eps,
        )

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, track_running_stats={self.track_running_stats}"


class BatchNorm1d(_BatchNorm):
    """Batch normalization over (N, C) or (N, C, L) input (``torch.nn.BatchNorm1d``)."""

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization over (N, C, H, W) input, per channel (``torch.nn.BatchNorm2d``)."""

    _ndims = (4,)


class _Op(Module):
    """A parameter-free layer: its arguments are attributes, as torch's (``pool.kernel_size``), and
    ``forward`` is one call of its op with them, positionally."""

    def __init__(self, **arguments):
        super().__init__()
        for name, value in arguments.items():
            setattr(self, name, value)
        self._arguments = tuple(arguments)

    def extra_repr(self):
        return ", ".join(f"{name}={getattr(self, name)}" for name in self._arguments)


class MaxPool2d(_Op):
    """Max pooling (``torch.nn.MaxPool2d``)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                         ceil_mode=ceil_mode, return_indices=return_indices)

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)


class AvgPool2d(_Op):
    """Average pooling (``torch.nn.AvgPool2d``)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         count_include_pad=count_include_pad, divisor_override=divisor_override)

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                            self.divisor_override)


class AdaptiveAvgPool2d(_Op):
    """Average pooling to a fixed output size (``torch.nn.AdaptiveAvgPool2d``)."""

    def __init__(self, output_size):
        super().__init__(output_size=output_size)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)


class LocalResponseNorm(_Op):
    """Local response normalization across channels (``torch.nn.LocalResponseNorm``)."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__(size=size, alpha=alpha, beta=beta, k=k)

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)


class ReLU(_Op):
    """``max(x, 0)``. ``inplace`` is accepted for torch compatibility and has no effect (arrays
    may be immutable; the result is the same)."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return F.relu(x)


class LeakyReLU(_Op):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__(negative_slope=negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)


class SiLU(_Op):
    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return F.silu(x)


class Tanh(_Op):
    def forward(self, x):
        return F.tanh(x)


class Sigmoid(_Op):
    def forward(self, x):
        return F.sigmoid(x)


class Softmax(_Op):
    def __init__(self, dim=None):
        if dim is None:
            raise ValueError("Softmax: give dim (torch's implicit choice of dim is deprecated)")
        super().__init__(dim=dim)

    def forward(self, x):
        return F.softmax(x, self.dim)


class LogSoftmax(_Op):
    def __init__(self, dim=None):
        if dim is None:
            raise ValueError("LogSoftmax: give dim (torch's implicit choice of dim is deprecated)")
        super().__init__(dim=dim)

    def forward(self, x):
        return F.log_softmax(x, self.dim)


class Flatten(_Op):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__(start_dim=start_dim, end_dim=end_dim)

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)


class _Dropout(Module):
    """Zero elements (channels for Dropout2d) with probability ``p`` while training, scaling the
    rest by 1/(1-p). Each call draws its mask's seed from the layer's generator (``seed=``) or the
    global one (:func:`portaconv.manual_seed`), so runs repeat on every backend."""

    op = ""

    def __init__(self, p=0.5, inplace=False, *, seed=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be a probability in [0, 1], got {p!r}")
        self.p, self.seed = float(p), seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        rng = self._rng if self._rng is not None else _random.default_generator()
        return getattr(F, self.op)(x, self.p, True, seed=int(rng.integers(2**63 - 1)))

    def extra_repr(self):
        return f"p={self.p}"


class Dropout(_Dropout):
    op = "dropout"


class Dropout2d(_Dropout):
    op = "dropout2d"


class Identity(Module):
    """Returns its input; takes (and ignores) any arguments, as torch's."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Sequential(Module):
    """Modules applied in order; children named "0", "1", ... (or by an OrderedDict's keys)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.register_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.register_module(str(index), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def append(self, module):
        self.register_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return modules[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleList(Module):
    """A list of registered modules (``torch.nn.ModuleList``): indexing, len, iteration, append."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, module):
        self.register_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index):
        modules = list(self._modules.values())
        return ModuleList(modules[index]) if isinstance(index, slice) else modules[index]

    def __setitem__(self, index, module):
        key = list(self._modules)[index]
        self.register_module(key, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, *args):
        raise NotImplementedError("ModuleList has no forward: iterate over it in your module's forward")
