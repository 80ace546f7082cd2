"""Adam and AdamW (``torch.optim.Adam``, ``torch.optim.AdamW``)."""

from __future__ import annotations

from .._backend import namespace_of
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""Adam, with L2 weight decay (or decoupled weight decay: :class:`AdamW`) and AMSGrad.

    With ``g`` the gradient (negated when ``maximize``), ``t`` the step count, ``γ`` the learning
    rate and ``λ`` the weight decay, each step is (as ``torch.optim.Adam``)::

        θ ← θ (1 - γ λ)                 if decoupled_weight_decay, else  g ← g + λ θ
        m ← m + (1 - β1) (g - m)
        v ← β2 v + (1 - β2) g²
        v̂ ← max(v̂, v) if amsgrad, else v
        θ ← θ - (γ / (1 - β1^t)) m / (√v̂ / √(1 - β2^t) + ε)

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float, default 1e-3
        ``γ >= 0``.
    betas : (float, float), default (0.9, 0.999)
        ``(β1, β2)``, each in ``[0, 1)``.
    eps : float, default 1e-8
        ``ε >= 0``.
    weight_decay : float, default 0
        ``λ >= 0``.
    amsgrad : bool, default False
        Use the running maximum of ``v``.
    maximize : bool, default False, keyword-only
        Maximize the objective.
    decoupled_weight_decay : bool, default False, keyword-only
        AdamW's weight decay.

    Notes
    -----
    State per parameter (torch's names): ``"step"`` (a Python float), ``"exp_avg"`` (``m``),
    ``"exp_avg_sq"`` (``v``) and, with AMSGrad, ``"max_exp_avg_sq"`` (``v̂``).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *, maximize=False,
                 decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _validate(self, options, where):
        super()._validate(options, where)
        name = self._name
        eps = options.get("eps")
        if eps is not None and not eps >= 0.0:
            raise ValueError(f"{name}: invalid eps={eps!r}{where} (must be >= 0)")
        betas = options.get("betas")
        if betas is not None:
            if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
                raise ValueError(f"{name}: invalid betas={betas!r}{where} (must be a pair (beta1, beta2))")
            for i, beta in enumerate(betas):
                if not 0.0 <= beta < 1.0:
                    raise ValueError(f"{name}: invalid betas[{i}]={beta!r}{where} (must be in [0, 1))")

    def _update(self, group, p, grad):
        data = p.data
        xp = namespace_of(data)
        if group["maximize"]:
            grad = -grad
        lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0.0
            state["exp_avg"] = xp.zeros_like(data)
            state["exp_avg_sq"] = xp.zeros_like(data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(data)
        step = state["step"] + 1.0
        if weight_decay != 0:
            if group.get("decoupled_weight_decay", False):
                data = data * (1.0 - lr * weight_decay)
            else:
                grad = grad + weight_decay * data
        exp_avg = state["exp_avg"]
        weight = 1.0 - beta1
        # torch's lerp: start + w (end - start) for |w| < 0.5, else end - (end - start) (1 - w)
        if abs(weight) < 0.5:
            exp_avg = exp_avg + weight * (grad - exp_avg)
        else:
            exp_avg = grad - (grad - exp_avg) * (1.0 - weight)
        exp_avg_sq = state["exp_avg_sq"] * beta2 + (1.0 - beta2) * grad * grad
        state.update(step=step, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
        bias_correction1 = 1.0 - beta1**step
        bias_correction2_sqrt = (1.0 - beta2**step) ** 0.5
        step_size = lr / bias_correction1
        if group["amsgrad"]:
            previous = state.get("max_exp_avg_sq")
            maximum = exp_avg_sq if previous is None else xp.maximum(previous, exp_avg_sq)
            state["max_exp_avg_sq"] = maximum
            denominator = xp.sqrt(maximum) / bias_correction2_sqrt + eps
        else:
            denominator = xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
        return data - step_size * exp_avg / denominator


class AdamW(Adam):
    r"""Adam with decoupled weight decay (``torch.optim.AdamW``): ``θ ← θ (1 - γ λ)`` before the
    Adam update, instead of adding ``λ θ`` to the gradient.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups (see :class:`Optimizer`).
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 1e-2
    amsgrad : bool, default False
    maximize : bool, default False, keyword-only

    See :class:`Adam` for the update and the state.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
