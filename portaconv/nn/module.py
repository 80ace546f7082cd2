"""Module and Parameter, torch-style: subclass, register parts in ``__init__``, write ``forward``.

Modules hold parameters, buffers and submodules, never per-call state: a module may be called
any number of times in one forward (a shared ReLU, a block applied twice); the autograd graph,
not the layer, keeps what each call's backward needs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import array_api_compat

from .._backend import asarray, namespace_of, to_numpy
from ..autograd import Tensor

__all__ = ["Parameter", "Module", "IncompatibleKeys"]


class Parameter(Tensor):
    """A Tensor that is a module's trainable weight: it requires grad unless told otherwise."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` with ``strict=False`` could not match."""

    missing_keys: list
    unexpected_keys: list


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


class Module:
    """Base class of layers and models (``torch.nn.Module``).

    Examples
    --------
    >>> import portaconv.nn as nn, portaconv.functional as F
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = nn.Conv2d(1, 4, 3)
    ...         self.fc = nn.Linear(4, 10)
    ...     def forward(self, x):
    ...         x = F.relu(self.conv(x))
    ...         return self.fc(x.mean(dim=(2, 3)))
    >>> sorted(Net().state_dict())
    ['conv.bias', 'conv.weight', 'fc.bias', 'fc.weight']
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration -----------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning {name!r}")
        if isinstance(value, (Parameter, Module)):
            for table in (self._parameters, self._buffers, self._modules):
                table.pop(name, None)
            self.__dict__.pop(name, None)
            (self._parameters if isinstance(value, Parameter) else self._modules)[name] = value
        elif name in self._buffers:
            self._buffers[name] = value.data if isinstance(value, Tensor) else value
        elif name in self._parameters or name in self._modules:
            if value is not None:
                kind = "parameter" if name in self._parameters else "module"
                raise TypeError(f"{type(self).__name__}: cannot assign a {type(value).__name__} to {kind} {name!r} (an nn.{kind.title()} or None expected)")
            (self._parameters if name in self._parameters else self._modules)[name] = None
        else:
            if isinstance(value, (list, tuple)) and any(isinstance(v, Module) for v in value):
                raise TypeError(
                    f"{type(self).__name__}.{name}: a plain {type(value).__name__} of modules is not registered "
                    "(its parameters would be missing from parameters() and state_dict()); use nn.ModuleList or nn.Sequential"
                )
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: parameters, buffers and submodules live in tables.
        # Parameters first, without a loop: layers read theirs on every call.
        tables = self.__dict__
        try:
            return tables["_parameters"][name]
        except KeyError:  # (also before __init__ made the tables)
            pass
        for table in ("_buffers", "_modules"):
            entries = tables.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param):
        """Add a parameter (None keeps the name, with no value, as torch's ``bias=False``)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be an nn.Parameter or None, got {type(param).__name__}")
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name: str, array, persistent: bool = True):
        """Add an array that is state but not trained (BatchNorm's running statistics)."""
        if persistent is not True:
            raise NotImplementedError("register_buffer: persistent=False is not supported")
        self.__dict__.pop(name, None)
        self._buffers[name] = array.data if isinstance(array, Tensor) else array

    def register_module(self, name: str, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"register_module: {name!r} must be an nn.Module, got {type(module).__name__}")
        self._modules[name] = module

    add_module = register_module

    # -- calling ----------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- traversal --------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = ""):
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named(self, table, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, table).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))  # a shared parameter is listed once, as torch does
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        yield from self._named("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True):
        """The parameters, each once (a list, so ``len`` and indexing work)."""
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        yield from self._named("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True):
        return [b for _, b in self.named_buffers(recurse=recurse)]

    def apply(self, function):
        """Call ``function`` on every submodule, then on this module (torch's order)."""
        for module in self.children():
            module.apply(function)
        function(self)
        return self

    # -- modes and gradients ----------------------------------------------------------------
    def train(self, mode: bool = True):
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True):
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    # -- state ------------------------------------------------------------------------------
    def state_dict(self):
        """Parameters and buffers by torch's dotted names, as the arrays themselves (any
        backend); :func:`portaconv.to_numpy` them for a host copy. A shared parameter appears
        under each name that reaches it, as in torch."""
        state = OrderedDict()
        for prefix, module in self.named_modules():
            dot = f"{prefix}." if prefix else ""
            for name, p in module._parameters.items():
                if p is not None:
                    state[dot + name] = p.data
            for name, b in module._buffers.items():
                if b is not None:
                    state[dot + name] = b
        return state

    def load_state_dict(self, state, strict: bool = True):
        """Copy arrays of any backend (NumPy, torch tensors, ...) into the parameters and
        buffers, keeping each one's backend, dtype and device.

        ``strict=True`` raises on missing or unexpected keys; ``strict=False`` loads the matching
        ones and returns ``(missing_keys, unexpected_keys)``. Shapes must match either way.
        """
        targets = {}
        for prefix, module in self.named_modules():
            dot = f"{prefix}." if prefix else ""
            for table in ("_parameters", "_buffers"):
                for name, value in getattr(module, table).items():
                    if value is not None:
                        targets[dot + name] = (module, table, name)
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for key, (module, table, name) in targets.items():
            if key not in state:
                continue
            current = getattr(module, table)[name]
            array = current.data if isinstance(current, Tensor) else current
            value = to_numpy(state[key].data if isinstance(state[key], Tensor) else state[key])
            if tuple(value.shape) != tuple(array.shape):
                raise ValueError(f"load_state_dict: {key} has shape {tuple(value.shape)} in the state, expected {tuple(array.shape)}")
            new = namespace_of(array).asarray(value, dtype=array.dtype, device=array_api_compat.device(array))
            if isinstance(current, Tensor):
                current.data = new
            else:
                module._buffers[name] = new
        return IncompatibleKeys(missing, unexpected)

    def to(self, backend=None, *, dtype=None, device=None):
        """Move parameters and buffers to ``backend`` (a name or module), ``dtype`` (floating
        arrays only: integer buffers such as ``num_batches_tracked`` keep theirs) and ``device``.
        Gradients are dropped."""
        for module in self.modules():
            for name, p in module._parameters.items():
                if p is not None:
                    p.data = _moved(p.data, backend, dtype, device)
                    p.grad = None
            for name, b in module._buffers.items():
                if b is not None:
                    module._buffers[name] = _moved(b, backend, dtype, device)
        return self

    # -- printing ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        body = "\n".join(f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in children)
        return f"{type(self).__name__}(\n{body}\n)"


def _moved(array, backend, dtype, device):
    floating = namespace_of(array).isdtype(array.dtype, "real floating")
    target_dtype = dtype if (dtype is not None and floating) else _dtype_name(array.dtype)
    if backend is None:
        from .._backend import backend_name

        backend = backend_name(array)
    return asarray(to_numpy(array), backend=backend, dtype=target_dtype, device=device)
