"""Stochastic gradient descent (``torch.optim.SGD``)."""

from __future__ import annotations

from .._backend import namespace_of
from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

    With ``g`` the gradient (negated when ``maximize``), ``λ`` the weight decay, ``μ`` the momentum,
    ``τ`` the dampening and ``γ`` the learning rate, each step is (as ``torch.optim.SGD``)::

        g ← g + λ θ
        b ← g at the first step, else μ b + (1 - τ) g     (when μ ≠ 0)
        g ← g + μ b if nesterov else b                     (when μ ≠ 0)
        θ ← θ - γ g

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float, default 1e-3
        Learning rate ``γ`` (torch's default), ``>= 0``.
    momentum : float, default 0
        ``μ >= 0``.
    dampening : float, default 0
        ``τ``.
    weight_decay : float, default 0
        L2 penalty ``λ >= 0``.
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    maximize : bool, default False, keyword-only
        Maximize the objective.

    Notes
    -----
    State per parameter: ``"momentum_buffer"`` (when ``momentum != 0``).
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _validate(self, options, where):
        super()._validate(options, where)
        momentum = options.get("momentum")
        if momentum is not None and not momentum >= 0.0:
            raise ValueError(f"SGD: invalid momentum={momentum!r}{where} (must be >= 0)")
        if options.get("nesterov") and not (options.get("momentum", 0) > 0 and options.get("dampening", 0) == 0):
            raise ValueError(
                f"SGD: nesterov=True{where} requires momentum > 0 and dampening = 0, got momentum="
                f"{options.get('momentum')!r}, dampening={options.get('dampening')!r}"
            )

    def _update(self, group, p, grad):
        data = p.data
        if group["maximize"]:
            grad = -grad
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        if weight_decay != 0:
            grad = grad + weight_decay * data
        if momentum != 0:
            state = self.state[p]
            buffer = state.get("momentum_buffer")
            if buffer is None:
                # A copy: the caller may accumulate into p.grad in place afterwards.
                buffer = grad if grad is not p.grad else namespace_of(grad).asarray(grad, copy=True)
            else:
                buffer = buffer * momentum + (1.0 - group["dampening"]) * grad
            state["momentum_buffer"] = buffer
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        return data - group["lr"] * grad
