"""Loss modules: ``loss = criterion(input, target)``, then ``loss.backward()`` (torch.nn's names)."""

from __future__ import annotations

from .. import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss"]


class _Loss(Module):
    op = ""

    def __init__(self, reduction="mean", **params):
        super().__init__()
        self.reduction, self.params = reduction, params

    def forward(self, input, target):
        return getattr(F, self.op)(input, target, reduction=self.reduction, **self.params)

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in {"reduction": self.reduction, **self.params}.items())


class _WeightedLoss(_Loss):
    """A loss with per-class ``weight``, kept as a buffer (in ``state_dict``, as torch)."""

    def __init__(self, weight=None, reduction="mean", **params):
        super().__init__(reduction, **params)
        self.register_buffer("weight", weight) if weight is not None else self._buffers.update(weight=None)

    def forward(self, input, target):
        return getattr(F, self.op)(input, target, self.weight, reduction=self.reduction, **self.params)


class CrossEntropyLoss(_WeightedLoss):
    """Cross entropy of logits and class indices or probabilities (``torch.nn.CrossEntropyLoss``)."""

    op = "cross_entropy"

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities (``torch.nn.NLLLoss``)."""

    op = "nll_loss"

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(weight, reduction, ignore_index=ignore_index)


class MSELoss(_Loss):
    """Mean squared error (``torch.nn.MSELoss``)."""

    op = "mse_loss"


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy of logits (``torch.nn.BCEWithLogitsLoss``)."""

    op = "binary_cross_entropy_with_logits"

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        for name, value in (("weight", weight), ("pos_weight", pos_weight)):
            self.register_buffer(name, value) if value is not None else self._buffers.update({name: None})

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight)
