"""Stateless modules over autograd: layers against torch.nn, registration and state_dict with
torch's keys, containers, seeding, and the built-in models."""

from collections import OrderedDict

import numpy as np
import pytest

import portaconv
import portaconv.functional as F
import portaconv.nn as nn
from portaconv import Tensor, to_numpy
from portaconv.testing import assert_close, to_backend

torch = pytest.importorskip("torch")


def _where(backend, dtype):
    return dict(backend=backend.xp, dtype=dtype, device=backend.device)


def _load_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


@pytest.mark.parametrize(
    "ours, theirs, shape",
    [
        (lambda **w: nn.Conv2d(3, 4, 3, stride=2, padding=1, **w), lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 9, 9)),
        (lambda **w: nn.Conv2d(4, 4, 3, groups=2, bias=False, **w), lambda: torch.nn.Conv2d(4, 4, 3, groups=2, bias=False), (2, 4, 6, 7)),
        (lambda **w: nn.ConvTranspose2d(3, 2, 3, stride=2, **w), lambda: torch.nn.ConvTranspose2d(3, 2, 3, stride=2), (2, 3, 4, 5)),
        (lambda **w: nn.Linear(5, 3, **w), lambda: torch.nn.Linear(5, 3), (4, 5)),
        (lambda **w: nn.BatchNorm2d(3, **w), lambda: torch.nn.BatchNorm2d(3), (4, 3, 5, 5)),
        (lambda **w: nn.BatchNorm2d(3, momentum=None, affine=False, **w), lambda: torch.nn.BatchNorm2d(3, momentum=None, affine=False), (4, 3, 2, 2)),
    ],
)
def test_parametrized_layers_match_torch(backend, dtype, ours, theirs, shape):
    """Two training calls and one eval call: outputs, input and parameter gradients, buffers."""
    rng = np.random.default_rng(0)
    reference = theirs().double()
    layer = ours(**_where(backend, dtype))
    _load_from_torch(layer, reference)
    for call in range(3):
        if call == 2:
            layer.eval()
            reference.eval()
        x0 = rng.standard_normal(shape)
        x = Tensor(to_backend(x0, backend, dtype), requires_grad=True)
        tx = torch.tensor(x0, requires_grad=True)
        out, expected = layer(x), reference(tx)
        g = rng.standard_normal(tuple(expected.shape))
        out.backward(to_backend(g, backend, dtype))
        expected.backward(torch.tensor(g))
        assert_close(out.data, expected.detach().numpy(), dtype=dtype, what="output")
        assert_close(x.grad, tx.grad.numpy(), dtype=dtype, what="input gradient")
    for name, p in layer.named_parameters():
        assert_close(p.grad, dict(reference.named_parameters())[name].grad.numpy(), dtype=dtype, what=name)
    for name, value in reference.state_dict().items():
        assert_close(layer.state_dict()[name], value.numpy(), dtype=dtype, what=name)


def test_module_used_twice_gives_torchs_gradients():
    """One ReLU and one Conv2d instance applied twice in a forward (the 0.1 layers kept their last
    input on self and gave wrong gradients here)."""

    class Twice(nn.Module):
        def __init__(self, **where):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1, **where)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(self.relu(self.conv(x))) + x)

    class TorchTwice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu = torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(self.relu(self.conv(x))) + x)

    reference = TorchTwice().double()
    net = Twice(dtype="float64")
    _load_from_torch(net, reference)
    x0 = np.random.default_rng(1).standard_normal((2, 2, 5, 5))
    net(x0).sum().backward()
    reference(torch.tensor(x0)).sum().backward()
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, dict(reference.named_parameters())[name].grad.numpy(), atol=1e-12)


def test_registration_and_torch_key_names():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
            self.heads = nn.ModuleList([nn.Linear(2, 3), nn.Linear(2, 3)])
            self.tails = nn.ModuleList([nn.Linear(3, 1)])
            self.register_buffer("scale", np.ones(1))

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU())
            self.heads = torch.nn.ModuleList([torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)])
            self.tails = torch.nn.ModuleList([torch.nn.Linear(3, 1)])
            self.register_buffer("scale", torch.ones(1))

    net = Net()
    assert list(net.state_dict()) == list(TorchNet().state_dict())
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in TorchNet().named_parameters()]
    assert [n for n, _ in net.named_buffers()] == [n for n, _ in TorchNet().named_buffers()]
    assert [n for n, _ in net.named_modules()] == [n for n, _ in TorchNet().named_modules()]
    assert len(list(net.children())) == 3
    visited = []
    net.apply(lambda m: visited.append(type(m).__name__))
    assert visited[-1] == "Net" and visited.count("Linear") == 3
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_plain_list_of_modules_is_an_error():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(2, 2), nn.Linear(2, 2)]

    with pytest.raises(TypeError, match=r"Bad.layers: a plain list of modules is not registered.*nn.ModuleList"):
        Bad()


def test_forgetting_super_init_is_named():
    class Forgot(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"Forgot: call super\(\).__init__\(\) before assigning 'fc'"):
        Forgot()


def test_load_state_dict_strict_and_not():
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    reference = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    reference[1].running_mean.fill_(0.5)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    net.load_state_dict(state)
    np.testing.assert_array_equal(net[1].running_mean, np.full(3, 0.5, dtype=np.float32))
    assert net[1].num_batches_tracked.dtype == np.int64
    partial = {k: v for k, v in state.items() if k != "1.running_var"}
    with pytest.raises(KeyError, match=r"missing keys \['1.running_var'\], unexpected keys \[\]"):
        net.load_state_dict(partial)
    result = net.load_state_dict(dict(partial, extra=np.ones(1)), strict=False)
    assert result.missing_keys == ["1.running_var"] and result.unexpected_keys == ["extra"]
    with pytest.raises(ValueError, match=r"0.bias has shape \(4,\) in the state, expected \(3,\)"):
        net.load_state_dict(dict(state, **{"0.bias": np.zeros(4)}))
    # torch tensors load as they are
    net.load_state_dict(reference.state_dict())
    np.testing.assert_array_equal(net[0].weight.data, reference[0].weight.detach().numpy())


def test_to_moves_parameters_and_buffers():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    before = {k: np.array(v) for k, v in net.state_dict().items()}
    net.to("torch", dtype="float64")
    state = net.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["1.running_mean"].dtype == torch.float64 and state["1.num_batches_tracked"].dtype == torch.int64
    for name, value in before.items():
        np.testing.assert_array_equal(state[name].numpy(), value)
    out = net(torch.ones((1, 1, 4, 4), dtype=torch.float64))
    assert isinstance(out.data, torch.Tensor)


def test_manual_seed_repeats_initialization_and_dropout():
    def run():
        portaconv.manual_seed(7)
        layer, drop = nn.Linear(4, 4), nn.Dropout(0.5)
        return layer.weight.data.copy(), to_numpy(drop(np.ones((4, 4))))

    (w1, d1), (w2, d2) = run(), run()
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(d1, d2)
    portaconv.manual_seed(8)
    assert not np.array_equal(nn.Linear(4, 4).weight.data, w1)
    with pytest.raises(ValueError, match="manual_seed: seed must be a non-negative int, got -1"):
        portaconv.manual_seed(-1)


def test_dropout_layers_train_and_eval():
    x = np.ones((200, 10))
    drop = nn.Dropout(0.3, seed=5)
    out = drop(x)
    assert set(np.unique(to_numpy(out))) <= {0.0, 1 / 0.7}
    assert 0.25 < np.mean(to_numpy(out) == 0) < 0.35
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match=r"Dropout: p must be a probability in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)


def test_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    seq.append(nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and isinstance(seq[1:], nn.Sequential)
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    named = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2), act=nn.Tanh()))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    items = nn.ModuleList([nn.Identity(), nn.Linear(2, 2)])
    items.append(nn.Linear(2, 2))
    assert len(items) == 3 and [type(m).__name__ for m in items] == ["Identity", "Linear", "Linear"]
    with pytest.raises(NotImplementedError, match="ModuleList has no forward"):
        items(np.ones(2))


def test_shared_parameter_is_listed_once():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    net[1].weight = net[0].weight
    assert len(net.parameters()) == 3
    assert "1.weight" in net.state_dict()


def test_conv_layer_rejects_bad_geometry_when_built():
    """As torch.nn.Conv2d: at construction, not at the first forward."""
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1, got stride=\(2, 2\)"):
        nn.Conv2d(3, 4, 3, padding="same", stride=2)
    with pytest.raises(ValueError, match=r"dilation must be positive, got 0"):
        nn.Conv2d(3, 4, 3, dilation=0)
    assert nn.Conv2d(3, 4, 3, padding="same").padding == "same"


@pytest.mark.parametrize("cls, args, fan_in", [(nn.Conv2d, (4, 8, 3), 36), (nn.ConvTranspose2d, (4, 8, 3), 72), (nn.Linear, (50, 20), 50)])
def test_torch_default_init_bounds(cls, args, fan_in):
    layer = cls(*args, dtype="float64", seed=0)
    bound = 1 / np.sqrt(fan_in)
    for p in (layer.weight.data, layer.bias.data):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.8 * bound  # the draws fill the interval
    np.testing.assert_array_equal(layer.weight.data, cls(*args, dtype="float64", seed=0).weight.data)


def test_loss_modules_match_torch():
    rng = np.random.default_rng(0)
    x0, y = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    weight = np.array([1.0, 2.0, 0.5, 1.0])
    x = Tensor(x0, requires_grad=True)
    loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1)(x, y)
    loss.backward()
    tx = torch.tensor(x0, requires_grad=True)
    expected = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight), label_smoothing=0.1)(tx, torch.tensor(y))
    expected.backward()
    assert abs(loss.item() - expected.item()) < 1e-12
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), atol=1e-12)
    assert list(nn.CrossEntropyLoss(weight=weight).state_dict()) == list(torch.nn.CrossEntropyLoss(weight=torch.tensor(weight)).state_dict())


def _seed_cnn_curve(backend):
    """Eight SGD steps of seed-cnn (seed 3, float64) on one fixed batch: the losses."""
    from portaconv import optim
    from portaconv.app import models

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 1, 28, 28)), rng.integers(0, 10, 16)
    net = models.build("seed-cnn", backend=backend.xp, dtype="float64", device=backend.device, seed=3)
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(8):
        loss = F.nll_loss(net(to_backend(x, backend, "float64")), to_backend(y, backend))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_training_curves_match_numpy_on_every_backend(backend):
    """The same model from the same seed trained on NumPy arrays and on this backend's arrays:
    the same losses."""
    from portaconv.testing import available_backends

    (numpy_backend,) = available_backends("numpy")
    expected = _seed_cnn_curve(numpy_backend)
    assert expected[-1] < expected[0] - 0.1, "the curve moves, so equal curves mean equal training"
    np.testing.assert_allclose(_seed_cnn_curve(backend), expected, rtol=1e-10)


def test_seed_cnn_pools_before_relu_like_seed_000_order():
    """The built-in seed-cnn (maxpool, then relu) equals seed 000's relu-then-maxpool order in
    torch: outputs and every parameter gradient."""
    from portaconv.app import models

    net = models.build("seed-cnn", dtype="float64", seed=0)
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(1600, 10), torch.nn.LogSoftmax(dim=1),
    ).double()
    reference.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in net.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((4, 1, 28, 28))
    y = np.array([0, 3, 9, 3])
    F.nll_loss(net(x), y).backward()
    torch.nn.functional.nll_loss(reference(torch.tensor(x)), torch.tensor(y)).backward()
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, dict(reference.named_parameters())[name].grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("name", ["seed-cnn", "seed004", "cnn-fc", "resnet"])
def test_built_in_models(name):
    from portaconv.app import models

    net = models.build(name, seed=0)
    net.eval()
    with portaconv.no_grad():
        out = net(np.zeros((2, 1, 28, 28), dtype=np.float32))
    assert out.shape == (2, 10) and out.dtype == np.float32
    assert set(models.DEFAULTS[name]) <= {"epochs", "batch_size", "lr", "optimizer", "augment", "weight_decay", "label_smoothing"}
    np.testing.assert_array_equal(models.build(name, seed=0).state_dict()[next(iter(net.state_dict()))], next(iter(net.state_dict().values())))
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        models.build("resnet50")


def test_layer_arguments_are_attributes():
    # torch's layers keep their arguments as attributes; a changed one is used by the next call.
    pool = nn.MaxPool2d(2)
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (2, None, 0, False)
    assert repr(pool) == "MaxPool2d(kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)"
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    assert pool(x).shape == (1, 1, 2, 2)
    pool.kernel_size = 4
    np.testing.assert_array_equal(pool(x), [[[[15.0]]]])
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert nn.LogSoftmax(dim=1).dim == 1 and repr(nn.ReLU()) == "ReLU()"
    lrn = nn.LocalResponseNorm(3, k=2.0)
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (3, 1e-4, 0.75, 2.0)
    np.testing.assert_allclose(lrn(x), F.local_response_norm(x, 3, 1e-4, 0.75, 2.0))


def test_parameter_attribute_after_delete_and_reassign():
    # Parameters are looked up in the table, first; a deleted one is gone, a plain value may
    # take its name (as torch's parametrizations do).
    conv = nn.Conv2d(1, 2, 3)
    weight = conv.weight
    assert conv.weight is weight and conv._parameters["weight"] is weight
    del conv.weight
    with pytest.raises(AttributeError, match="weight"):
        conv.weight
    conv.weight = weight.data * 2  # a plain array under the name
    assert "weight" not in dict(conv.named_parameters()) and conv.weight is not None
    x = np.ones((1, 1, 3, 3), np.float32)
    np.testing.assert_array_equal(conv(x).data, F.conv2d(x, weight.data * 2, conv.bias.data))
