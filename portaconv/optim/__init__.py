"""Optimizers and learning-rate schedulers with torch.optim's semantics, on any backend.

Parameters are reassigned (``p.data = new``), never written in place, so immutable arrays (JAX)
work. ``step()`` only reads array metadata, never values (no host synchronization).
"""

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
