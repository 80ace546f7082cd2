"""Layers over portaconv.functional: each keeps its input and calls the op's ``_backward``."""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import device

from .. import functional as F
from .._backend import get_namespace, namespace_of
from .._shapes import _padding4, _pair
from ..functional import conv as _conv
from .module import Module, Parameter

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "Linear",
    "MaxPool2d",
    "AvgPool2d",
    "LocalResponseNorm",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "Flatten",
    "LogSoftmax",
    "Dropout",
    "Sequential",
]


def _uniform(shape, bound, rng, backend, dtype, device):
    """torch's default init draws U(-bound, bound); here from a seeded NumPy generator."""
    xp = get_namespace(backend)
    values = rng.uniform(-bound, bound, size=shape)
    return Parameter(xp.asarray(values, dtype=getattr(xp, dtype) if isinstance(dtype, str) else dtype, device=device))


class _Parametrized(Module):
    def _init_params(self, weight_shape, bias_size, fan_in, backend, dtype, device, seed):
        """torch's defaults: kaiming_uniform_(a=sqrt(5)) gives the weight bound 1/sqrt(fan_in),
        and the bias uses the same bound. ``bias_size`` None means no bias."""
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        self.weight = _uniform(weight_shape, bound, rng, backend, dtype, device)
        self.bias = None if bias_size is None else _uniform((bias_size,), bound, rng, backend, dtype, device)

    def _accumulate(self, grad_weight, grad_bias):
        self.weight.accumulate(grad_weight)
        if self.bias is not None:
            self.bias.accumulate(grad_bias)


class Conv2d(_Parametrized):
    """2-D convolution layer (``torch.nn.Conv2d``)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 *, backend="numpy", dtype="float32", device=None, seed=None):
        kh, kw = _pair(kernel_size, "kernel_size", minimum=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        # Bad stride, dilation or padding (padding='same' with a stride) fail here, as in torch,
        # not at the first forward.
        _padding4(padding, (kh, kw), _pair(dilation, "dilation", minimum=1), _pair(stride, "stride", minimum=1))
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        fan_in = in_channels // groups * kh * kw
        self._init_params((out_channels, in_channels // groups, kh, kw), out_channels if bias else None, fan_in, backend, dtype, device, seed)

    def _params(self):
        return self.stride, self.padding, self.dilation, self.groups

    def forward(self, x):
        self.input = x
        return F.conv2d(x, self.weight.data, None if self.bias is None else self.bias.data, *self._params())

    def backward(self, grad_output, *, input_grad=True):
        bias = None if self.bias is None else self.bias.data
        grad_input, grad_weight, grad_bias = _conv._conv2d_backward(
            grad_output, self.input, self.weight.data, bias, *self._params(), input_grad=input_grad
        )
        self._accumulate(grad_weight, grad_bias)
        return grad_input

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class ConvTranspose2d(_Parametrized):
    """2-D transposed convolution layer (``torch.nn.ConvTranspose2d``)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
                 dilation=1, *, backend="numpy", dtype="float32", device=None, seed=None):
        kh, kw = _pair(kernel_size, "kernel_size", minimum=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.dilation, self.groups = dilation, groups
        # torch's fan_in for a (C_in, C_out/groups, kh, kw) weight is C_out/groups * kh * kw
        fan_in = out_channels // groups * kh * kw
        self._init_params((in_channels, out_channels // groups, kh, kw), out_channels if bias else None, fan_in, backend, dtype, device, seed)

    def _params(self):
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding, groups=self.groups, dilation=self.dilation)

    def forward(self, x):
        self.input = x
        return F.conv_transpose2d(x, self.weight.data, None if self.bias is None else self.bias.data, **self._params())

    def backward(self, grad_output, *, input_grad=True):
        bias = None if self.bias is None else self.bias.data
        grad_input, grad_weight, grad_bias = F.conv_transpose2d_backward(grad_output, self.input, self.weight.data, bias, **self._params())
        self._accumulate(grad_weight, grad_bias)
        return grad_input

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


class Linear(_Parametrized):
    """Affine layer (``torch.nn.Linear``)."""

    def __init__(self, in_features, out_features, bias=True, *, backend="numpy", dtype="float32", device=None, seed=None):
        self.in_features, self.out_features = in_features, out_features
        self._init_params((out_features, in_features), out_features if bias else None, in_features, backend, dtype, device, seed)

    def forward(self, x):
        self.input = x
        return F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)

    def backward(self, grad_output, *, input_grad=True):
        bias = None if self.bias is None else self.bias.data
        grad_input, grad_weight, grad_bias = F.linear_backward(grad_output, self.input, self.weight.data, bias)
        self._accumulate(grad_weight, grad_bias)
        return grad_input

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class MaxPool2d(Module):
    """Max pooling (``torch.nn.MaxPool2d``)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        self.params = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)

    def forward(self, x):
        self.input = x
        return F.max_pool2d(x, **self.params)

    def backward(self, grad_output, *, input_grad=True):
        return F.max_pool2d_backward(grad_output, self.input, **self.params)[0]

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


class _Stateless(Module):
    """A layer whose op has the same keyword parameters forward and backward."""

    op = None

    def __init__(self, **params):
        self.params = params

    def forward(self, x):
        self.input = x
        return getattr(F, self.op)(x, **self.params)

    def backward(self, grad_output, *, input_grad=True):
        return getattr(F, self.op + "_backward")(grad_output, self.input, **self.params)[0]

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


class AvgPool2d(_Stateless):
    """Average pooling (``torch.nn.AvgPool2d``)."""

    op = "avg_pool2d"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         count_include_pad=count_include_pad, divisor_override=divisor_override)


class LocalResponseNorm(_Stateless):
    """Local response normalization across channels (``torch.nn.LocalResponseNorm``)."""

    op = "local_response_norm"

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__(size=size, alpha=alpha, beta=beta, k=k)


class ReLU(_Stateless):
    op = "relu"


class Tanh(_Stateless):
    op = "tanh"


class Sigmoid(_Stateless):
    op = "sigmoid"


class Flatten(_Stateless):
    op = "flatten"

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__(start_dim=start_dim, end_dim=end_dim)


class LogSoftmax(_Stateless):
    op = "log_softmax"

    def __init__(self, dim=1):
        super().__init__(dim=dim)


class Dropout(Module):
    """Zero each element with probability ``p`` while training, scaling the rest by 1/(1-p).

    The mask comes from a seeded NumPy generator, so runs repeat on every backend.
    """

    def __init__(self, p=0.5, *, seed=None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = p
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self.mask = None
            return x
        xp = namespace_of(x)
        keep = self.rng.random(tuple(x.shape)) >= self.p
        self.mask = xp.asarray(keep / (1.0 - self.p), dtype=x.dtype, device=device(x))
        return x * self.mask

    def backward(self, grad_output, *, input_grad=True):
        return grad_output if self.mask is None else grad_output * self.mask

    def extra_repr(self):
        return f"p={self.p}"


class Sequential(Module):
    """Layers applied in order; ``backward`` runs them in reverse.

    A ReLU directly followed by a MaxPool2d without dilation runs after the pooling instead, on
    kernel-area times fewer elements.
    Values and gradients are the same: relu is monotone, so the maximum of relu(x) is relu of the
    maximum (every undilated window holds an input pixel); where that maximum is positive both
    orders pick the same first maximum, and elsewhere both gradients are zero.
    """

    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        self._order = _running_order(self.layers)
        for index in self._order:
            x = self.layers[index](x)
        return x

    def backward(self, grad_output, *, input_grad=True):
        order = getattr(self, "_order", None) or _running_order(self.layers)
        for position in range(len(order) - 1, -1, -1):
            grad_output = self.layers[order[position]].backward(grad_output, input_grad=input_grad or position > 0)
        return grad_output

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)


def _running_order(layers):
    """Indices of ``layers`` in the order Sequential runs them: each ReLU directly followed by an
    undilated MaxPool2d swapped with it (see :class:`Sequential`)."""
    order = list(range(len(layers)))
    for i in range(len(layers) - 1):
        pool = layers[i + 1]
        if type(layers[i]) is ReLU and type(pool) is MaxPool2d and _pair(pool.params["dilation"], "dilation") == (1, 1):
            order[i], order[i + 1] = i + 1, i
    return order
