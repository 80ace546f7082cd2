"""Autograd over the explicit backward contract: :class:`Tensor`, grad mode, the graph builder.

The ops stay the functional API (``f`` and ``f_backward`` on plain arrays); :func:`differentiable`
lets each of them take Tensors and record a node that calls its backward. See
``docs/architecture.md`` for the picture.
"""

from .graph import differentiable, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import Tensor

__all__ = ["Tensor", "differentiable", "enable_grad", "is_grad_enabled", "no_grad", "set_grad_enabled"]
