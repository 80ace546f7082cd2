"""Loss modules: ``loss = criterion(input, target)``, then ``criterion.backward()``."""

from __future__ import annotations

from array_api_compat import device

from .. import functional as F
from .._backend import namespace_of
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss"]


class _Loss(Module):
    op = None

    def __init__(self, reduction="mean", ignore_index=-100, **params):
        self.params = dict(reduction=reduction, ignore_index=ignore_index, **params)

    def __call__(self, input, target):
        self.input, self.target = input, target
        return getattr(F, self.op)(input, target, **self.params)

    def backward(self, grad_output=None):
        """Gradient with respect to ``input``; ``grad_output`` defaults to 1 for reduced losses."""
        if grad_output is None:
            xp = namespace_of(self.input)
            grad_output = xp.ones((), dtype=self.input.dtype, device=device(self.input))
        return getattr(F, self.op + "_backward")(grad_output, self.input, self.target, **self.params)[0]

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items())


class CrossEntropyLoss(_Loss):
    """Cross entropy of logits and class indices (``torch.nn.CrossEntropyLoss``)."""

    op = "cross_entropy"

    def __init__(self, reduction="mean", ignore_index=-100, label_smoothing=0.0):
        super().__init__(reduction, ignore_index, label_smoothing=label_smoothing)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (``torch.nn.NLLLoss``)."""

    op = "nll_loss"
