"""Optimizers against torch.optim on the same gradients."""

import numpy as np
import pytest

from portaconv import optim, to_numpy
from portaconv.nn import Parameter
from portaconv.testing import to_backend

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01),
         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
        (lambda p: optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
        (lambda p: optim.Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
        (lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1),
         lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)),
    ],
    ids=["sgd", "sgd-momentum-dampening-wd", "sgd-nesterov", "adam", "adam-options"],
)
def test_steps_match_torch(backend, ours, theirs):
    rng = np.random.default_rng(0)
    start = rng.standard_normal((3, 4))
    ours_p = Parameter(to_backend(start, backend, "float64"))
    theirs_p = torch.nn.Parameter(torch.tensor(start))
    ours_opt, theirs_opt = ours([ours_p]), theirs([theirs_p])
    for _ in range(6):
        grad = rng.standard_normal((3, 4))
        ours_p.grad = to_backend(grad, backend, "float64")
        theirs_p.grad = torch.tensor(grad)
        ours_opt.step()
        theirs_opt.step()
        np.testing.assert_allclose(to_numpy(ours_p.data), theirs_p.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_optimizer_errors():
    p = [Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match="lr must be positive, got 0"):
        optim.SGD(p, lr=0)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="nesterov needs momentum > 0"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"betas must be in \[0, 1\)"):
        optim.Adam(p, betas=(1.0, 0.9))
    # torch rejects these too ("Invalid epsilon value", "Invalid weight_decay value").
    with pytest.raises(ValueError, match=r"Adam: eps and weight_decay must be >= 0, got -1e-08, 0.0"):
        optim.Adam(p, eps=-1e-8)
    with pytest.raises(ValueError, match=r"Adam: eps and weight_decay must be >= 0, got 1e-08, -0.1"):
        optim.Adam(p, weight_decay=-0.1)
