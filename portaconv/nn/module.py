"""Module and Parameter: the whole training machinery, small enough to read in a minute."""

from __future__ import annotations

from array_api_compat import device

from .._backend import asarray, namespace_of, to_numpy

__all__ = ["Parameter", "Module"]


class Parameter:
    """A trainable array and the gradient accumulated into it by ``backward``."""

    def __init__(self, data):
        self.data = data
        self.grad = None

    def accumulate(self, grad):
        self.grad = grad if self.grad is None else self.grad + grad

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Module:
    """Base layer: ``__call__`` runs ``forward`` (keeping what ``backward`` needs), ``backward``
    takes the output gradient, accumulates parameter gradients and returns the input gradient."""

    training = True

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_output, *, input_grad=True):
        """Accumulate parameter gradients; return the input gradient (``None`` when
        ``input_grad`` is false: the first layer of a network skips that work)."""
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def named_parameters(self, prefix=""):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(f"{prefix}{name}.")
            elif isinstance(value, (list, tuple)):
                for index, item in enumerate(value):
                    if isinstance(item, Module):
                        yield from item.named_parameters(f"{prefix}{index}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for value in vars(self).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, Module):
                    yield from item.modules()

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        """Parameter arrays by dotted name, as NumPy arrays (host copies)."""
        return {name: to_numpy(p.data) for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays (any backend) into the parameters, keeping their backend, dtype and device."""
        params = dict(self.named_parameters())
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, p in params.items():
            value = to_numpy(state[name])
            if tuple(value.shape) != tuple(p.data.shape):
                raise ValueError(f"load_state_dict: {name} has shape {tuple(value.shape)}, expected {tuple(p.data.shape)}")
            p.data = namespace_of(p.data).asarray(value, dtype=p.data.dtype, device=device(p.data))
        return self

    def to(self, backend, *, dtype=None, device=None):
        """Move every parameter to ``backend`` (and optionally ``dtype``/``device``)."""
        for p in self.parameters():
            target = dtype if dtype is not None else str(p.data.dtype).rsplit(".", 1)[-1].replace("torch.", "")
            p.data = asarray(to_numpy(p.data), backend=backend, dtype=target, device=device)
            p.grad = None
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        children = [(n, v) for n, v in vars(self).items() if isinstance(v, Module)]
        lists = [v for v in vars(self).values() if isinstance(v, (list, tuple)) and v and all(isinstance(i, Module) for i in v)]
        for items in lists:
            children += [(str(i), m) for i, m in enumerate(items)]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        body = "\n".join(f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in children)
        return f"{type(self).__name__}(\n{body}\n)"
