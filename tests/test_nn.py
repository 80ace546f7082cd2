"""Layers against torch.nn, Module machinery, initialization, Dropout."""

import numpy as np
import pytest

from portaconv import nn, to_numpy
from portaconv.primitives import dispatch
from portaconv.testing import to_backend

torch = pytest.importorskip("torch")


def _copy_into_torch(ours, theirs):
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(to_numpy(ours.weight.data), dtype=torch.float64))
        if ours.bias is not None:
            theirs.bias.copy_(torch.tensor(to_numpy(ours.bias.data), dtype=torch.float64))


@pytest.mark.parametrize(
    "ours, theirs, shape",
    [
        (lambda b: nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, groups=1, backend=b.xp, dtype="float64", device=b.device, seed=1),
         lambda: torch.nn.Conv2d(3, 4, (3, 2), stride=2, padding=1), (2, 3, 7, 6)),
        (lambda b: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, backend=b.xp, dtype="float64", device=b.device, seed=2),
         lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (2, 4, 5, 5)),
        (lambda b: nn.Linear(5, 3, backend=b.xp, dtype="float64", device=b.device, seed=3), lambda: torch.nn.Linear(5, 3), (4, 5)),
        (lambda b: nn.Linear(5, 3, bias=False, backend=b.xp, dtype="float64", device=b.device), lambda: torch.nn.Linear(5, 3, bias=False), (4, 5)),
    ],
    ids=["Conv2d", "ConvTranspose2d", "Linear", "Linear-nobias"],
)
def test_parametrized_layers_match_torch(backend, ours, theirs, shape):
    layer, reference = ours(backend), theirs().double()
    _copy_into_torch(layer, reference)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    out = layer(to_backend(x, backend, "float64"))
    tx = torch.tensor(x, requires_grad=True)
    ref = reference(tx)
    g = rng.standard_normal(tuple(ref.shape))
    ref.backward(torch.tensor(g))
    grad_input = layer.backward(to_backend(g, backend, "float64"))
    np.testing.assert_allclose(to_numpy(out), ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(grad_input), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.weight.grad), reference.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    if layer.bias is not None:
        np.testing.assert_allclose(to_numpy(layer.bias.grad), reference.bias.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("input_grad", [True, False])
def test_conv_layer_takes_unbatched_input(backend, input_grad):
    layer = nn.Conv2d(3, 4, 3, padding=1, backend=backend.xp, dtype="float64", device=backend.device, seed=4)
    reference = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    _copy_into_torch(layer, reference)
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((3, 5, 6)), rng.standard_normal((4, 5, 6))
    out = layer(to_backend(x, backend, "float64"))
    grad_input = layer.backward(to_backend(g, backend, "float64"), input_grad=input_grad)
    tx = torch.tensor(x, requires_grad=True)
    reference(tx).backward(torch.tensor(g))
    assert tuple(out.shape) == (4, 5, 6)
    assert (grad_input is None) != input_grad
    if input_grad:
        np.testing.assert_allclose(to_numpy(grad_input), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.weight.grad), reference.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.bias.grad), reference.bias.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_training_conv_layer_matches_torch_step_after_step(backend, dtype, kernels):
    """A training Conv2d's forward and backward match torch's and the functional ops' step after
    step: through batch-size changes, a step under a workspace limit that tiles its column buffers,
    a step without the input gradient, and in eval mode."""
    if kernels == "reference" and dispatch.family(backend.xp) is None:
        pytest.skip("no kernels on this backend: the same run as kernels='auto'")
    import contextlib

    import portaconv
    import portaconv.functional as F
    from portaconv.testing import assert_close

    layer = nn.Conv2d(3, 4, 3, stride=(1, 2), padding=1, backend=backend.xp, dtype=dtype, device=backend.device, seed=0)
    reference = torch.nn.Conv2d(3, 4, 3, stride=(1, 2), padding=1).double()
    _copy_into_torch(layer, reference)
    rng = np.random.default_rng(2)
    for batch, limit, input_grad in [(4, None, True), (4, None, True), (3, None, True), (5, 1024, True), (2, None, False), (4, None, True)]:
        x, g = rng.standard_normal((batch, 3, 6, 5)), rng.standard_normal((batch, 4, 6, 3))
        xb, gb = to_backend(x, backend, dtype), to_backend(g, backend, dtype)
        with portaconv.options(workspace_limit=limit) if limit else contextlib.nullcontext():
            out = layer(xb)
            layer.zero_grad()
            grad_input = layer.backward(gb, input_grad=input_grad)
            expected = F.conv2d_backward(gb, xb, layer.weight.data, layer.bias.data, stride=(1, 2), padding=1)
            expected_out = F.conv2d(xb, layer.weight.data, layer.bias.data, stride=(1, 2), padding=1)
        np.testing.assert_array_equal(to_numpy(out), to_numpy(expected_out))
        if input_grad:
            np.testing.assert_array_equal(to_numpy(grad_input), to_numpy(expected[0]))
        np.testing.assert_array_equal(to_numpy(layer.weight.grad), to_numpy(expected[1]))
        np.testing.assert_array_equal(to_numpy(layer.bias.grad), to_numpy(expected[2]))
        reference.zero_grad()
        tx = torch.tensor(to_numpy(xb).astype(np.float64), requires_grad=True)
        ref = reference(tx)
        ref.backward(torch.tensor(to_numpy(gb).astype(np.float64)))
        what = f"batch {batch}, workspace_limit {limit}"
        assert_close(out, ref.detach().numpy(), dtype=dtype, what=what)
        assert_close(layer.weight.grad, reference.weight.grad.numpy(), dtype=dtype, what=what)
        assert_close(layer.bias.grad, reference.bias.grad.numpy(), dtype=dtype, what=what)
        if input_grad:
            assert_close(grad_input, tx.grad.numpy(), dtype=dtype, what=what)
        else:
            assert grad_input is None
    layer.eval()
    assert_close(layer(xb), reference(torch.tensor(to_numpy(xb).astype(np.float64))).detach().numpy(), dtype=dtype, what="eval")


def test_gradients_accumulate_until_zero_grad():
    layer = nn.Linear(3, 2, dtype="float64", seed=0)
    x, g = np.ones((1, 3)), np.ones((1, 2))
    layer(x)
    layer.backward(g)
    first = layer.weight.grad.copy()
    layer.backward(g)
    np.testing.assert_array_equal(layer.weight.grad, 2 * first)
    layer.zero_grad()
    assert layer.weight.grad is None


def test_first_layer_skips_input_gradient():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, dtype="float64", seed=0), nn.ReLU())
    out = net(np.random.default_rng(0).standard_normal((2, 1, 5, 5)))
    assert net.backward(np.ones(out.shape), input_grad=False) is None
    assert net[0].weight.grad is not None


def _tied_network(backend, pool):
    """conv → relu → ``pool`` → conv → relu → maxpool 2 → flatten with integer weights: ties and
    zeros in every window (exact in float64, so both libraries see the same ties)."""
    layers = [
        nn.Conv2d(1, 3, 3, padding=1, backend=backend.xp, dtype="float64", device=backend.device, seed=1), nn.ReLU(), pool,
        nn.Conv2d(3, 2, 3, backend=backend.xp, dtype="float64", device=backend.device, seed=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    ]
    rng = np.random.default_rng(5)
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            layer.weight.data = to_backend(rng.integers(-1, 2, tuple(layer.weight.data.shape)).astype(np.float64), backend, "float64")
            layer.bias.data = to_backend(rng.integers(-1, 2, tuple(layer.bias.data.shape)).astype(np.float64), backend, "float64")
    return nn.Sequential(*layers)


@pytest.mark.parametrize(
    "pool",
    [lambda: nn.MaxPool2d(2), lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), lambda: nn.MaxPool2d(3, stride=1, dilation=2)],
    ids=["2x2", "3x3-s2-p1-ceil", "3x3-dilated"],
)
def test_relu_then_max_pool_matches_torch_and_the_unfused_order(backend, pool):
    """Sequential runs an undilated ReLU → MaxPool2d pair as MaxPool2d → ReLU: torch's values
    and gradients (ties and zeros everywhere), and exactly those of the layers run one by one."""
    from portaconv.nn.layers import _running_order

    net = _tied_network(backend, pool())
    dilated = net[2].params["dilation"] != 1
    assert _running_order(net.layers)[:3] == ([0, 1, 2] if dilated else [0, 2, 1])
    rng = np.random.default_rng(6)
    x = rng.integers(-2, 3, (3, 1, 10, 10)).astype(np.float64)
    out = net(to_backend(x, backend, "float64"))
    g = rng.integers(-2, 3, tuple(out.shape)).astype(np.float64)
    grad_input = net.backward(to_backend(g, backend, "float64"))
    grads = [to_numpy(p.grad) for p in net.parameters()]

    reference = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(**net[2].params),
        torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
    ).double()
    _copy_into_torch(net[0], reference[0])
    _copy_into_torch(net[3], reference[3])
    tx = torch.tensor(x, requires_grad=True)
    ref = reference(tx)
    ref.backward(torch.tensor(g))
    np.testing.assert_array_equal(to_numpy(out), ref.detach().numpy())
    np.testing.assert_array_equal(to_numpy(grad_input), tx.grad.numpy())
    for grad, p in zip(grads, reference.parameters()):
        np.testing.assert_array_equal(grad, p.grad.numpy())

    unfused = to_backend(x, backend, "float64")
    for layer in net.layers:
        unfused = layer(unfused)
    grad = to_backend(g, backend, "float64")
    for layer in reversed(net.layers):
        grad = layer.backward(grad)
    np.testing.assert_array_equal(to_numpy(unfused), to_numpy(out))
    np.testing.assert_array_equal(to_numpy(grad), to_numpy(grad_input))


@pytest.mark.parametrize(
    "params, size",
    [(dict(kernel_size=2), 11), (dict(kernel_size=2), 10), (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), 9),
     (dict(kernel_size=3, stride=1, dilation=2), 8), (dict(kernel_size=2, stride=3), 8)],
    ids=["2x2-odd", "2x2-even", "3x3-s2-p1-ceil", "3x3-dilated", "2x2-s3"],
)
def test_training_max_pool_matches_torch(backend, dtype, kernels, params, size):
    """A training MaxPool2d's forward and backward give torch's values and gradient exactly,
    float32 and float64, step after step: ties everywhere, a NaN window, windows that leave the
    last row and column unread (their gradient must be zero), and in eval mode."""
    if kernels == "reference" and dispatch.family(backend.xp) is None:
        pytest.skip("no kernels on this backend: the same run as kernels='auto'")
    rng = np.random.default_rng(7)
    x = rng.integers(-2, 3, (4, 3, size, size)).astype(np.float64)
    with_nan = x.copy()
    with_nan[1, 2, 3, 4] = np.nan  # a non-finite maximum
    layer = nn.MaxPool2d(**params)
    for values in (x, with_nan, x[:3]):
        out = layer(to_backend(values, backend, dtype))
        g = rng.integers(-2, 3, tuple(out.shape)).astype(np.float64)
        grad_input = layer.backward(to_backend(g, backend, dtype))

        tx = torch.tensor(values, requires_grad=True)
        ref = torch.nn.functional.max_pool2d(tx, **params)
        ref.backward(torch.tensor(g))
        np.testing.assert_array_equal(to_numpy(out), ref.detach().numpy())
        np.testing.assert_array_equal(to_numpy(grad_input), tx.grad.numpy())
    layer.eval()
    expected = torch.nn.functional.max_pool2d(torch.tensor(with_nan), **params).numpy()
    np.testing.assert_array_equal(to_numpy(layer(to_backend(with_nan, backend, dtype))), expected)


@pytest.mark.parametrize("cls, args, fan_in", [(nn.Conv2d, (4, 8, 3), 36), (nn.ConvTranspose2d, (4, 8, 3), 72), (nn.Linear, (50, 20), 50)])
def test_torch_default_init_bounds(cls, args, fan_in):
    layer = cls(*args, dtype="float64", seed=0)
    bound = 1 / np.sqrt(fan_in)
    for p in (layer.weight.data, layer.bias.data):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.8 * bound  # the draws fill the interval
    again = cls(*args, dtype="float64", seed=0)
    np.testing.assert_array_equal(layer.weight.data, again.weight.data)


def test_state_dict_round_trip_and_errors(backend):
    from portaconv.app import models

    net = models.build("seed-cnn", backend=backend.xp, device=backend.device, seed=1)
    other = models.build("seed-cnn", backend=backend.xp, device=backend.device, seed=2)
    state = net.state_dict()
    assert list(state) == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"]
    other.load_state_dict(state)
    for (name, a), b in zip(other.named_parameters(), state.values()):
        np.testing.assert_array_equal(to_numpy(a.data), b)
    with pytest.raises(ValueError, match=r"missing keys \['7.bias'\]"):
        other.load_state_dict({k: v for k, v in state.items() if k != "7.bias"})
    bad = dict(state, **{"7.bias": np.zeros(3)})
    with pytest.raises(ValueError, match=r"7.bias has shape \(3,\), expected \(10,\)"):
        other.load_state_dict(bad)


def test_to_moves_parameters(torch):
    from portaconv.app import models

    net = models.build("seed-cnn", seed=0)
    before = net.state_dict()
    net.to("torch")
    assert all(isinstance(p.data, torch.Tensor) for p in net.parameters())
    for (name, p) in net.named_parameters():
        np.testing.assert_array_equal(p.data.numpy(), before[name])
    net.to("numpy", dtype="float64")
    assert all(p.data.dtype == np.float64 for p in net.parameters())


def test_repr_is_readable():
    from portaconv.app import models

    text = repr(models.build("seed-cnn"))
    assert text.startswith("Sequential(\n  (0): Conv2d(1, 32, kernel_size=(3, 3)")
    assert "(7): Linear(in_features=1600, out_features=10)" in text


def test_dropout_seeded_and_eval():
    x = np.ones((1000,))
    a, b = nn.Dropout(0.3, seed=5), nn.Dropout(0.3, seed=5)
    out = a(x)
    np.testing.assert_array_equal(out, b(x))
    assert set(np.unique(out)) == {0.0, 1 / 0.7}
    assert 0.25 < np.mean(out == 0) < 0.35
    np.testing.assert_array_equal(a.backward(np.ones(1000)), out)
    a.eval()
    np.testing.assert_array_equal(a(x), x)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1.0"):
        nn.Dropout(1.0)


def test_conv_layer_rejects_bad_geometry_when_built():
    """As torch.nn.Conv2d: at construction, not at the first forward."""
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1, got stride=\(2, 2\)"):
        nn.Conv2d(3, 4, 3, padding="same", stride=2)
    with pytest.raises(ValueError, match=r"dilation must be positive, got 0"):
        nn.Conv2d(3, 4, 3, dilation=0)
    with pytest.raises(ValueError, match=r"padding must be at least 0, got -1"):
        nn.Conv2d(3, 4, 3, padding=-1)
    with pytest.raises(TypeError, match=r"stride must be an int or a pair of ints, got 1.5"):
        nn.Conv2d(3, 4, 3, stride=1.5)
    assert nn.Conv2d(3, 4, 3, padding="same").padding == "same"


def test_loss_modules_match_torch():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    loss = criterion(x, y)
    tx = torch.tensor(x, requires_grad=True)
    ref = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(tx, torch.tensor(y))
    ref.backward()
    assert abs(float(loss) - ref.item()) < 1e-12
    np.testing.assert_allclose(criterion.backward(), tx.grad.numpy(), atol=1e-12)


def _training_curve(backend):
    """Eight SGD steps of seed-cnn (seed 3, float64) on fixed batches: the losses."""
    from portaconv import optim
    from portaconv.app import models

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 28, 28))
    y = rng.integers(0, 10, 64)
    net = models.build("seed-cnn", backend=backend.xp, dtype="float64", device=backend.device, seed=3)
    opt, criterion = optim.SGD(net.parameters(), lr=0.05, momentum=0.9), nn.NLLLoss()
    losses = []
    for step in range(8):
        batch = slice(8 * step, 8 * step + 8)
        xb, yb = to_backend(x[batch], backend, "float64"), to_backend(y[batch], backend)
        losses.append(float(criterion(net(xb), yb)))
        net.backward(criterion.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()
    return losses


def test_training_curves_match_numpy_on_every_backend(backend):
    """The same model from the same seed trained on numpy arrays and on this backend's arrays
    (torch tensors, CuPy arrays, ...): the same losses."""
    from portaconv.testing import available_backends

    (numpy_backend,) = available_backends("numpy")
    expected = _training_curve(numpy_backend)
    assert expected[-1] != expected[0], "the curve moves, so equal curves mean equal training"
    np.testing.assert_allclose(_training_curve(backend), expected, rtol=1e-10)


@pytest.mark.parametrize("name", ["seed-cnn", "seed004", "cnn-fc"])
def test_built_in_models(name):
    from portaconv.app import models

    net = models.build(name, seed=0)
    out = net(np.zeros((2, 1, 28, 28), dtype=np.float32))
    assert out.shape == (2, 10) and out.dtype == np.float32
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, rtol=1e-5)
    assert set(models.DEFAULTS[name]) <= {"epochs", "batch_size", "lr", "optimizer", "augment", "weight_decay", "label_smoothing"}
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.build("resnet")
