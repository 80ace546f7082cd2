"""portaconv.Tensor: one array of any supported namespace, its gradient, and the node that made it.

``backward()`` walks the recorded nodes in reverse topological order, calling each op's backward
once with the sum of the gradients that reached its output, and adds the gradients of leaves
(Tensors created by the user with ``requires_grad=True``, parameters) into their ``.grad``, as
torch does. The graph is freed as it is walked: a second backward through it raises, unless the
first passed ``retain_graph=True``.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as _np

from .._backend import namespace_of

__all__ = ["Tensor"]


class Tensor:
    """An array with autograd, torch-style.

    Parameters
    ----------
    data : array
        A NumPy, CuPy, torch, array-api-strict or JAX array (not copied).
    requires_grad : bool
        Record the ops applied to it, and accumulate its gradient into ``.grad`` on ``backward``.

    Examples
    --------
    >>> import numpy as np, portaconv
    >>> x = portaconv.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4.])
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "__weakref__")
    __array_priority__ = 1000  # NumPy defers ``array + tensor`` to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        elif isinstance(data, _np.generic):
            data = _np.asarray(data)
        if requires_grad and not _is_float(data):
            raise TypeError(f"Tensor: only floating-point arrays can require gradients, got dtype {data.dtype}")
        self.data, self.grad, self.requires_grad, self._node = data, None, bool(requires_grad), None

    @classmethod
    def _from_op(cls, data, node):
        if isinstance(data, _np.generic):  # NumPy gives scalars for 0-d results; keep 0-d arrays
            data = _np.asarray(data)
        t = cls.__new__(cls)
        t.data, t.grad, t.requires_grad, t._node = data, None, node is not None, node
        return t

    # -- what the array is ------------------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return array_api_compat.device(self.data)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def T(self):
        return self.permute(*range(self.ndim - 1, -1, -1))

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        grad = f", grad_fn={self._node.name}" if self._node is not None else (", requires_grad=True" if self.requires_grad else "")
        return f"Tensor({self.data!r}{grad})"

    def item(self):
        """The value of a one-element Tensor as a Python number (a host synchronization)."""
        if math.prod(self.shape) != 1:
            raise ValueError(f"Tensor.item: only one-element tensors can be converted to a number, got shape {self.shape}")
        value = self.data.reshape(()) if self.ndim else self.data
        return float(value) if _is_float(self.data) else int(value)

    def __float__(self):
        return float(self.item())

    def detach(self) -> Tensor:
        """The same array, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, mode: bool = True) -> Tensor:
        if not self.is_leaf:
            raise RuntimeError("requires_grad_: only leaf tensors can change requires_grad; use detach() first")
        if mode and not _is_float(self.data):
            raise TypeError(f"requires_grad_: only floating-point arrays can require gradients, got dtype {self.data.dtype}")
        self.requires_grad = bool(mode)
        return self

    # -- backward ---------------------------------------------------------------------------
    def backward(self, grad=None, *, retain_graph: bool = False):
        """Add d(self)/d(leaf) · ``grad`` into every leaf's ``.grad``.

        ``grad`` defaults to 1 for a one-element Tensor (a loss); any other shape needs it.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this Tensor does not require grad and has no graph (no input required grad, or it was made under no_grad)")
        xp = namespace_of(self.data)
        if grad is None:
            if math.prod(self.shape) != 1:
                raise RuntimeError(f"backward: grad can be implicit only for a one-element output, got shape {self.shape}; pass grad=")
            grad = xp.ones(self.data.shape, dtype=self.data.dtype, device=self.device)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward: grad has shape {tuple(grad.shape)}, expected {self.shape}")
        _run_backward(self, grad, retain_graph)

    # -- differentiable methods (defined in arith.py) ------------------------------------
    def __add__(self, other):
        return _arith.add(self, other)

    def __radd__(self, other):
        return _arith.add(other, self)

    def __sub__(self, other):
        return _arith.subtract(self, other)

    def __rsub__(self, other):
        return _arith.subtract(other, self)

    def __mul__(self, other):
        return _arith.multiply(self, other)

    def __rmul__(self, other):
        return _arith.multiply(other, self)

    def __truediv__(self, other):
        return _arith.divide(self, other)

    def __rtruediv__(self, other):
        return _arith.divide(other, self)

    def __matmul__(self, other):
        return _arith.matmul(self, other)

    def __rmatmul__(self, other):
        return _arith.matmul(other, self)

    def __neg__(self):
        return _arith.negative(self)

    def __pos__(self):
        return self

    def __pow__(self, exponent):
        if not isinstance(exponent, (int, float)) or isinstance(exponent, bool):
            raise TypeError(f"Tensor.__pow__: the exponent must be a Python number, got {type(exponent).__name__}")
        return _arith.power(self, exponent=exponent)

    def __getitem__(self, index):
        # NumPy's implicit trailing axes, spelled out: the standard (array-api-strict) wants them.
        entries = index if isinstance(index, tuple) else (index,)
        if Ellipsis not in entries and len(entries) < self.ndim and not any(e is None for e in entries):
            index = (*entries, Ellipsis)
        return _arith.getitem(self, index=index)

    def sum(self, dim=None, keepdim: bool = False):
        return _arith.sum(self, dim=dim, keepdim=keepdim)

    def mean(self, dim=None, keepdim: bool = False):
        return _arith.mean(self, dim=dim, keepdim=keepdim)

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _arith.reshape(self, shape=shape)

    def view(self, *shape):
        return self.reshape(*shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        from .. import functional as F

        return F.flatten(self, start_dim, end_dim)

    def permute(self, *dims):
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return _arith.permute(self, dims=dims)

    def transpose(self, dim0: int, dim1: int):
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(*dims)

    # -- comparisons give plain arrays (no gradient) -----------------------------------
    def __lt__(self, other):
        return self.data < _raw(other)

    def __le__(self, other):
        return self.data <= _raw(other)

    def __gt__(self, other):
        return self.data > _raw(other)

    def __ge__(self, other):
        return self.data >= _raw(other)

    def argmax(self, dim=None, keepdim: bool = False):
        """Indices of the maxima (a plain array: not differentiable)."""
        return namespace_of(self.data).argmax(self.data, axis=dim, keepdims=keepdim)


def _raw(value):
    return value.data if isinstance(value, Tensor) else value


def _is_float(data) -> bool:
    try:
        return namespace_of(data).isdtype(data.dtype, "real floating")
    except Exception:  # not an array of a supported namespace
        return False


def _consumers(root):
    """For each Tensor with a node reachable from ``root``: how many recorded uses it has."""
    counts, stack = {id(root): 0}, [root]
    while stack:
        tensor = stack.pop()
        for parent in tensor._node.inputs:
            if parent is not None and parent._node is not None:
                if id(parent) not in counts:
                    counts[id(parent)] = 0
                    stack.append(parent)
                counts[id(parent)] += 1
    return counts


def _run_backward(root, grad, retain_graph):
    """Kahn's order: a node runs once every use of its output has sent its gradient."""
    if root._node is None:  # a leaf: d(root)/d(root) = 1
        _accumulate(root, grad)
        return
    waiting = _consumers(root)
    pending = {id(root): grad}
    ready = [root]
    while ready:
        tensor = ready.pop()
        node = tensor._node
        grad_output = pending.pop(id(tensor))
        if node.backward is None:
            raise RuntimeError(
                f"backward: trying to backward through the graph a second time ({node.name}); its saved values were "
                "freed by the first backward. Pass retain_graph=True to the first backward if you need two."
            )
        grads = node.backward(grad_output)
        if not isinstance(grads, tuple):
            grads = (grads,)
        if not retain_graph:
            node.backward = None
        for parent, g in zip(node.inputs, grads):
            if parent is None:
                continue
            if parent._node is None:
                if g is not None:
                    _accumulate(parent, g)
                continue
            if g is not None:
                previous = pending.get(id(parent))
                pending[id(parent)] = g if previous is None else previous + g
            waiting[id(parent)] -= 1
            if waiting[id(parent)] == 0:
                if id(parent) in pending:
                    ready.append(parent)
                else:  # every use sent None (a non-differentiable slot): nothing flows further
                    _skip(parent, waiting, pending, ready)


def _skip(tensor, waiting, pending, ready):
    """A node no gradient reached: release its uses of its inputs so they are not waited for."""
    stack = [tensor]
    while stack:
        for parent in stack.pop()._node.inputs:
            if parent is None or parent._node is None:
                continue
            waiting[id(parent)] -= 1
            if waiting[id(parent)] == 0:
                (ready.append(parent) if id(parent) in pending else stack.append(parent))


def _accumulate(leaf, grad):
    """torch's rule: gradients add up in ``.grad`` until it is zeroed."""
    if not leaf.requires_grad:
        return
    leaf.grad = grad if leaf.grad is None else leaf.grad + grad


from . import arith as _arith  # noqa: E402  (the methods above call it; it needs Tensor defined)

