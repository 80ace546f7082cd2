"""A torch model written the usual way, ported by changing its imports: the same losses,
gradients, parameters, running statistics and eval outputs as torch, step by step, in float64.

The model code below is written once and run twice: with ``torch.nn``/``torch.nn.functional``
and with ``portaconv.nn``/``portaconv.functional``. It has a residual add, a module used twice
(one ReLU per block, as torchvision's BasicBlock), ``nn.Sequential``, ``nn.ModuleList``,
``BatchNorm2d``, ``AdaptiveAvgPool2d``, ``Dropout`` (p = 0 here: its mask is random), and trains
with cross_entropy (``weight=`` and label smoothing), ``loss.backward()``, ``clip_grad_norm_``,
AdamW with CosineAnnealingLR and SGD (Nesterov) with StepLR over two parameter groups, then
evaluates under ``no_grad``. No convolution before a BatchNorm has a bias: that bias's gradient is
zero up to rounding, and Adam would turn the rounding into full-size steps.
"""

import numpy as np
import pytest

import portaconv
from portaconv.testing import available_backends, to_backend

torch = pytest.importorskip("torch")


def _model_classes(nn, F):
    class Block(nn.Module):
        def __init__(self, channels, stride, where):
            super().__init__()
            self.conv1 = nn.Conv2d(channels[0], channels[1], 3, stride=stride, padding=1, bias=False, **where)
            self.bn1 = nn.BatchNorm2d(channels[1], **where)
            self.conv2 = nn.Conv2d(channels[1], channels[1], 3, padding=1, bias=False, **where)
            self.bn2 = nn.BatchNorm2d(channels[1], **where)
            self.relu = nn.ReLU()
            self.shortcut = nn.Identity() if stride == 1 else nn.Sequential(
                nn.Conv2d(channels[0], channels[1], 1, stride=stride, bias=False, **where), nn.BatchNorm2d(channels[1], **where)
            )

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class Net(nn.Module):
        def __init__(self, where):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False, **where), nn.BatchNorm2d(4, **where), nn.ReLU())
            self.blocks = nn.ModuleList([Block((4, 4), 1, where), Block((4, 8), 2, where)])
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.drop = nn.Dropout(0.0)
            self.fc = nn.Linear(8, 5, **where)

        def forward(self, x):
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            return self.fc(self.drop(self.pool(x).flatten(1)))

    return Net


def _train(lib, optimizer_kind, steps, data):
    """Train ``steps`` steps; return per-step losses, then final state, gradients, eval outputs."""
    x_all, y_all, class_weight = data
    if lib == "torch-reference":
        import torch.nn as nn
        import torch.nn.functional as F
        from torch import optim

        where, backend = {"dtype": torch.float64}, None
        as_array = torch.tensor
        no_grad = torch.no_grad
        clip = torch.nn.utils.clip_grad_norm_
    else:
        import portaconv.functional as F
        import portaconv.nn as nn
        from portaconv import optim

        (backend,) = available_backends(lib)
        where = {"backend": backend.xp, "dtype": "float64", "device": backend.device}
        as_array = lambda a: to_backend(a, backend, "float64")  # noqa: E731
        no_grad = portaconv.no_grad
        clip = nn.utils.clip_grad_norm_
    torch.manual_seed(0)
    reference_init = _model_classes(torch.nn, torch.nn.functional)({"dtype": torch.float64})
    net = _model_classes(nn, F)(where)
    if lib != "torch-reference":
        net.load_state_dict({k: v.numpy() for k, v in reference_init.state_dict().items()})
    else:
        net = reference_init
    head = list(net.fc.parameters())
    body = [p for name, p in net.named_parameters() if not name.startswith("fc.")]
    if optimizer_kind == "adamw":
        opt = optim.AdamW([{"params": body}, {"params": head, "lr": 3e-3}], lr=1e-2, weight_decay=0.05)
        schedule = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    else:
        opt = optim.SGD([{"params": body}, {"params": head, "lr": 0.05}], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        schedule = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    weight = as_array(class_weight)
    losses, norms = [], []
    for step in range(steps):
        batch = slice(6 * step, 6 * step + 6)
        x, y = as_array(x_all[batch]), (torch.tensor(y_all[batch]) if backend is None else to_backend(y_all[batch], backend))
        loss = F.cross_entropy(net(x), y, weight=weight, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        norms.append(float(clip(net.parameters(), max_norm=1.0)))
        opt.step()
        schedule.step()
        losses.append(loss.item())
    grads = {name: portaconv.to_numpy(p.grad) for name, p in net.named_parameters()}
    state = {name: portaconv.to_numpy(v) for name, v in net.state_dict().items()}
    net.eval()
    with no_grad():
        evaluation = portaconv.to_numpy(net(as_array(x_all[:8])).data if backend is not None else net(as_array(x_all[:8])))
    return losses, norms, grads, state, evaluation


@pytest.mark.parametrize("optimizer_kind", ["adamw", "sgd"])
@pytest.mark.parametrize("lib", ["numpy", "torch", "array_api_strict", "jax"])
def test_ported_model_trains_like_torch(lib, optimizer_kind):
    if lib not in [b.name for b in available_backends()]:
        pytest.skip(f"{lib} is not installed")
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((36, 1, 8, 8)), rng.integers(0, 5, 36), np.array([1.0, 2.0, 0.5, 1.5, 1.0]))
    steps = 6
    expected = _train("torch-reference", optimizer_kind, steps, data)
    actual = _train(lib, optimizer_kind, steps, data)
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-10, err_msg="losses")
    np.testing.assert_allclose(actual[1], expected[1], rtol=1e-10, err_msg="gradient norms before clipping")
    for name in expected[2]:
        np.testing.assert_allclose(actual[2][name], expected[2][name], rtol=1e-8, atol=1e-12, err_msg=f"gradient {name}")
    assert list(actual[3]) == list(expected[3]), "state_dict keys"
    for name in expected[3]:
        np.testing.assert_allclose(actual[3][name], expected[3][name], rtol=1e-8, atol=1e-12, err_msg=f"state {name}")
    np.testing.assert_allclose(actual[4], expected[4], rtol=1e-8, atol=1e-12, err_msg="eval outputs")
    assert expected[0][-1] != expected[0][0]
