"""Optimizers with torch.optim's update rules, on any backend (parameters are reassigned, never
written in place, so immutable arrays work too)."""

from __future__ import annotations

import math

__all__ = ["SGD", "Adam"]


class _Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {lr!r}")
        self.lr = lr
        self.state = [dict() for _ in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                p.data = self._update(p.data, p.grad, state)

    def _update(self, data, grad, state):
        raise NotImplementedError


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay
    (``torch.optim.SGD``): ``b = m b + (1 - dampening) g`` (``b = g`` at the first step)."""

    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: momentum and weight_decay must be >= 0, got {momentum!r}, {weight_decay!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")
        self.momentum, self.dampening, self.weight_decay, self.nesterov = momentum, dampening, weight_decay, nesterov

    def _update(self, data, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * data
        if self.momentum:
            buffer = state.get("momentum")
            buffer = grad if buffer is None else self.momentum * buffer + (1.0 - self.dampening) * grad
            state["momentum"] = buffer
            grad = grad + self.momentum * buffer if self.nesterov else buffer
        return data - self.lr * grad


class Adam(_Optimizer):
    """Adam (``torch.optim.Adam``, L2 weight decay added to the gradient)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas!r}")
        if not (eps >= 0 and weight_decay >= 0):
            raise ValueError(f"Adam: eps and weight_decay must be >= 0, got {eps!r}, {weight_decay!r}")
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def _update(self, data, grad, state):
        beta1, beta2 = self.betas
        if self.weight_decay:
            grad = grad + self.weight_decay * data
        step = state.get("step", 0) + 1
        mean = grad * (1.0 - beta1) if step == 1 else beta1 * state["mean"] + (1.0 - beta1) * grad
        square = grad * grad * (1.0 - beta2) if step == 1 else beta2 * state["square"] + (1.0 - beta2) * (grad * grad)
        state.update(step=step, mean=mean, square=square)
        bias1, bias2 = 1.0 - beta1**step, 1.0 - beta2**step
        denominator = (square ** 0.5) / math.sqrt(bias2) + self.eps
        return data - (self.lr / bias1) * mean / denominator
