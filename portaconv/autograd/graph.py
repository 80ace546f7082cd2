"""The one graph builder: an op with an explicit backward becomes differentiable for Tensors.

Every public op ``f`` of :mod:`portaconv.functional` is declared once with the names of its
positional array inputs, and its backward is attached to it::

    @differentiable("input", "weight", "bias")
    def conv2d(input, weight, bias=None, stride=1, ...): ...

    @conv2d.defbackward
    def conv2d_backward(grad_output, input, weight, bias=None, stride=1, ...): ...

Called with plain arrays, ``f`` is the plain function (one scan of the arguments for Tensors, then
the call). Called with a :class:`~portaconv.Tensor` among its arguments, ``f`` runs on the
Tensors' arrays and, when grad mode is on and an input requires grad, returns a Tensor whose node
calls ``f_backward(grad_output, *inputs, **same_params)``: the public contract, one gradient per
positional array input.

An op may also register a pair as JAX's ``custom_vjp`` does, ``f.defvjp(forward, backward)``:
``forward(needs, *args, **kwargs) -> (output, residuals)`` and
``backward(residuals, grad_output, needs) -> gradients``, where ``needs`` holds one bool per
array input (False: that gradient is not wanted and may be None). The graph then keeps what the
forward computed (a dropout mask, a pooling's argmax) instead of recomputing it, keeps nothing
for gradients nobody asked for (a frozen weight's), and skips computing them (a first layer's
input gradient).
"""

from __future__ import annotations

import contextvars
import functools

__all__ = ["differentiable", "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled"]

_GRAD_ENABLED = contextvars.ContextVar("portaconv_grad_enabled", default=True)


def is_grad_enabled() -> bool:
    """Whether ops on Tensors record a graph (False inside :class:`no_grad`)."""
    return _GRAD_ENABLED.get()


class set_grad_enabled:
    """Context manager (and decorator) that turns graph recording on or off, as torch's."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self._tokens = []

    def __enter__(self):
        self._tokens.append(_GRAD_ENABLED.set(self.mode))
        return self

    def __exit__(self, *exc):
        _GRAD_ENABLED.reset(self._tokens.pop())
        return False

    def __call__(self, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with type(self)(self.mode) if type(self) is set_grad_enabled else type(self)():
                return function(*args, **kwargs)

        return wrapper


class no_grad(set_grad_enabled):
    """``with portaconv.no_grad():`` ops on Tensors return Tensors without a graph (evaluation)."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Graph recording back on inside a :class:`no_grad` block."""

    def __init__(self):
        super().__init__(True)


class Node:
    """One recorded call: ``backward(grad_output)`` gives one gradient per entry of ``inputs``
    (the op's positional array inputs; None where that input is not a Tensor requiring grad)."""

    __slots__ = ("backward", "inputs", "name")

    def __init__(self, backward, inputs, name):
        self.backward, self.inputs, self.name = backward, inputs, name


class _Rule:
    """What :func:`differentiable` knows of one op: its array inputs and how to differentiate it."""

    def __init__(self, forward, inputs):
        self.forward, self.inputs, self.name = forward, tuple(inputs), forward.__name__
        self.backward = self.vjp_forward = self.vjp_backward = None

    def apply(self, args, kwargs):
        tensor = _TENSOR[0]
        raw_args = [a.data if isinstance(a, tensor) else a for a in args]
        raw_kwargs = {k: (v.data if isinstance(v, tensor) else v) for k, v in kwargs.items()} if kwargs else kwargs
        if _GRAD_ENABLED.get():
            sources = [args[i] if i < len(args) else kwargs.get(name) for i, name in enumerate(self.inputs)]
            tensors = tuple(s if isinstance(s, tensor) and s.requires_grad else None for s in sources)
            needs = tuple(t is not None for t in tensors)
            if any(needs):
                return self._record(raw_args, raw_kwargs, tensors, needs)
        return _wrap(self.forward(*raw_args, **raw_kwargs), None)

    def _record(self, raw_args, raw_kwargs, tensors, needs):
        if self.vjp_forward is not None:
            out, residuals = self.vjp_forward(needs, *raw_args, **raw_kwargs)
            vjp_backward = self.vjp_backward

            def backward(grad_output):
                return vjp_backward(residuals, grad_output, needs)

        elif self.backward is not None:
            out, f_backward = self.forward(*raw_args, **raw_kwargs), self.backward

            def backward(grad_output):
                return f_backward(grad_output, *raw_args, **raw_kwargs)

        else:
            raise NotImplementedError(f"{self.name}: no backward is registered, so it cannot be differentiated")
        return _wrap(out, Node(backward, tensors, self.name))


_TENSOR = []


def _tensor_type():
    """portaconv.Tensor (imported on first use: tensor.py imports this module)."""
    if not _TENSOR:
        from .tensor import Tensor

        _TENSOR.append(Tensor)
    return _TENSOR[0]


def _wrap(out, node):
    """The op's output as a Tensor carrying ``node``; for a tuple (an output and integer indices,
    as max_pool2d's ``return_indices``) only the first entry is differentiable."""
    tensor = _TENSOR[0]
    if type(out) is tuple:
        return (tensor._from_op(out[0], node), *[tensor(o) for o in out[1:]])
    return tensor._from_op(out, node)


def differentiable(*inputs: str):
    """Declare an op differentiable; ``inputs`` names its positional array arguments in order.

    The returned function is ``forward`` for plain arrays. It gains ``defbackward(f_backward)``
    and ``defvjp(forward_with_residuals, backward_from_residuals)`` (see the module docstring),
    each returning its argument unchanged, so the backward stays a plain public function.
    """

    def decorate(forward):
        rule = _Rule(forward, inputs)

        @functools.wraps(forward)
        def op(*args, **kwargs):
            tensor = _TENSOR[0] if _TENSOR else _tensor_type()
            for a in (*args, *kwargs.values()) if kwargs else args:  # (inline: called on every op)
                if isinstance(a, tensor):
                    return rule.apply(args, kwargs)
            return forward(*args, **kwargs)

        def defbackward(backward):
            rule.backward = backward
            return backward

        def defvjp(vjp_forward, vjp_backward):
            rule.vjp_forward, rule.vjp_backward = vjp_forward, vjp_backward
            return vjp_forward, vjp_backward

        op.defbackward, op.defvjp, op.rule = defbackward, defvjp, rule
        return op

    return decorate
