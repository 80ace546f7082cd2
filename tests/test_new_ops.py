"""batch_norm, dropout/dropout2d, adaptive_avg_pool2d, leaky_relu and silu: against torch on every
backend, finite differences, batch_norm's running statistics over several steps, the dropout
masks (statistics, seeds, generators, the graph's residual route), ``jax.jit`` against eager, and
the bad-input messages. (adaptive_avg_pool2d, leaky_relu and silu are also in the parity registry,
``portaconv.testing.CASES``.)"""

import numpy as np
import pytest

import portaconv
import portaconv.functional as F
from portaconv import Tensor, _random, to_numpy
from portaconv.testing import Backend, assert_close, to_backend

torch = pytest.importorskip("torch")
tf = torch.nn.functional


def _np(a):
    return None if a is None else np.asarray(to_numpy(a), dtype=np.float64)


@pytest.fixture
def global_generator():
    """Restore portaconv's global generator after a test that reseeds it."""
    saved = _random.default_generator()
    yield
    _random._generator = saved


# ---- batch_norm ---------------------------------------------------------------------------------

BN_SHAPES = [(6, 3), (4, 3, 7), (2, 3, 4, 5)]


def _bn_inputs(rng, shape):
    c = shape[1]
    return {
        "input": rng.standard_normal(shape) * 2.0 + 0.5,
        "running_mean": rng.standard_normal(c),
        "running_var": rng.random(c) + 0.5,
        "weight": rng.standard_normal(c),
        "bias": rng.standard_normal(c),
    }


def _torch_bn(values, training, affine, grad_output, eps=1e-5):
    x = torch.tensor(values["input"], requires_grad=True)
    weight = torch.tensor(values["weight"], requires_grad=True) if affine else None
    bias = torch.tensor(values["bias"], requires_grad=True) if affine else None
    stats = [torch.tensor(values[k]) for k in ("running_mean", "running_var")]
    out = tf.batch_norm(x, *stats, weight, bias, training=training, eps=eps)
    out.backward(torch.tensor(grad_output))
    grads = [x.grad.numpy(), None, None, None if weight is None else weight.grad.numpy(), None if bias is None else bias.grad.numpy()]
    return out.detach().numpy(), grads


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_matches_torch(shape, training, affine, backend, dtype, rng):
    values = _bn_inputs(rng, shape)
    grad_output = rng.standard_normal(shape)
    ref_out, ref_grads = _torch_bn(values, training, affine, grad_output, eps=1e-3)
    arrays = {k: to_backend(v, backend, dtype) for k, v in values.items()}
    if not affine:
        arrays["weight"] = arrays["bias"] = None
    out = F.batch_norm(**arrays, training=training, eps=1e-3)
    assert out.dtype == getattr(backend.xp, dtype) and tuple(out.shape) == shape
    assert_close(out, ref_out, dtype=dtype, what="batch_norm forward")
    grads = F.batch_norm_backward(to_backend(grad_output, backend, dtype), **arrays, training=training, eps=1e-3)
    assert len(grads) == 5
    for position, (grad, ref) in enumerate(zip(grads, ref_grads)):
        if ref is None:
            assert grad is None, f"gradient {position} should be None"
        else:
            assert_close(grad, ref, dtype=dtype, what=f"batch_norm grad {position}")


def test_batch_norm_training_without_running_stats(backend, dtype, rng):
    values = _bn_inputs(rng, (5, 4, 3))
    x = torch.tensor(values["input"], requires_grad=True)
    w = torch.tensor(values["weight"], requires_grad=True)
    ref = tf.batch_norm(x, None, None, w, None, training=True)
    g = rng.standard_normal(ref.shape)
    ref.backward(torch.tensor(g))
    xb, wb = to_backend(values["input"], backend, dtype), to_backend(values["weight"], backend, dtype)
    assert_close(F.batch_norm(xb, None, None, wb, training=True), ref.detach().numpy(), dtype=dtype)
    gi, gm, gv, gw, gb = F.batch_norm_backward(to_backend(g, backend, dtype), xb, None, None, wb, training=True)
    assert gm is None and gv is None and gb is None
    assert_close(gi, x.grad.numpy(), dtype=dtype)
    assert_close(gw, w.grad.numpy(), dtype=dtype)


@pytest.mark.parametrize("momentum", [0.1, None, np.float32(0.25)], ids=["0.1", "None", "np.float32(0.25)"])
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 6)], ids=str)
def test_batch_norm_running_stats_follow_torch(shape, momentum, backend, dtype, rng):
    """Several training steps then evaluation: the running statistics (unbiased variance; the
    cumulative average for momentum=None) and the eval output equal nn.BatchNorm's."""
    c = shape[1]
    module = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(c, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(rng.standard_normal(c)))
        module.bias.copy_(torch.tensor(rng.standard_normal(c)))
    weight = to_backend(module.weight.detach().numpy(), backend, dtype)
    bias = to_backend(module.bias.detach().numpy(), backend, dtype)
    mean = to_backend(np.zeros(c), backend, dtype)
    var = to_backend(np.ones(c), backend, dtype)
    module.train()
    for step in range(4):
        batch = rng.standard_normal(shape) * (step + 1) + step
        expected = module(torch.tensor(batch)).detach().numpy()
        xb = to_backend(batch, backend, dtype)
        assert_close(F.batch_norm(xb, mean, var, weight, bias, training=True, momentum=momentum), expected, dtype=dtype)
        mean, var = F.batch_norm_running_stats(xb, mean, var, momentum=momentum, num_batches_tracked=step)
        assert_close(mean, module.running_mean.numpy(), dtype=dtype, what=f"running_mean after step {step}")
        assert_close(var, module.running_var.numpy(), dtype=dtype, what=f"running_var after step {step}")
    assert int(module.num_batches_tracked) == 4
    module.eval()
    batch = rng.standard_normal(shape)
    expected = module(torch.tensor(batch)).detach().numpy()
    assert_close(F.batch_norm(to_backend(batch, backend, dtype), mean, var, weight, bias), expected, dtype=dtype, what="eval")


def test_batch_norm_running_stats_count_as_array(backend):
    """num_batches_tracked may be a 0-D integer array (kept on the device, no host read)."""
    rng = np.random.default_rng(3)
    x = to_backend(rng.standard_normal((4, 2, 3)), backend, "float64")
    mean, var = to_backend(np.zeros(2), backend, "float64"), to_backend(np.ones(2), backend, "float64")
    count = backend.xp.asarray(3, dtype=backend.xp.int64, device=backend.device)
    from_array = F.batch_norm_running_stats(x, mean, var, momentum=None, num_batches_tracked=count)
    from_int = F.batch_norm_running_stats(x, mean, var, momentum=None, num_batches_tracked=3)
    for a, b in zip(from_array, from_int):
        assert_close(a, b)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_finite_differences(training):
    """Every entry of the input, weight and bias gradients by central differences (float64)."""
    rng = np.random.default_rng(11)
    values = _bn_inputs(rng, (3, 2, 2, 3))
    g = rng.standard_normal(values["input"].shape)
    analytic = F.batch_norm_backward(g, **values, training=training)
    for position, name in ((0, "input"), (3, "weight"), (4, "bias")):
        numeric = np.zeros_like(values[name])
        for flat in range(numeric.size):
            losses = []
            for step in (1e-6, -1e-6):
                bumped = {**values, name: values[name].copy()}
                bumped[name].reshape(-1)[flat] += step
                losses.append(np.sum(F.batch_norm(**bumped, training=training) * g))
            numeric.reshape(-1)[flat] = (losses[0] - losses[1]) / 2e-6
        np.testing.assert_allclose(analytic[position], numeric, rtol=1e-6, atol=1e-7, err_msg=name)


def test_batch_norm_does_not_mutate():
    rng = np.random.default_rng(1)
    values = _bn_inputs(rng, (4, 3, 2))
    before = {k: v.copy() for k, v in values.items()}
    F.batch_norm(**values, training=True)
    F.batch_norm_running_stats(values["input"], values["running_mean"], values["running_var"])
    for k in values:
        np.testing.assert_array_equal(values[k], before[k])


def test_batch_norm_through_the_graph(backend, dtype):
    """Tensors route batch_norm through its explicit backward; running stats get no gradient."""
    rng = np.random.default_rng(2)
    values = _bn_inputs(rng, (4, 3, 2, 2))
    g = rng.standard_normal((4, 3, 2, 2))
    leaves = {k: Tensor(to_backend(v, backend, dtype), requires_grad=k in ("input", "weight", "bias")) for k, v in values.items()}
    out = F.batch_norm(leaves["input"], leaves["running_mean"], leaves["running_var"], leaves["weight"], leaves["bias"], training=True)
    out.backward(to_backend(g, backend, dtype))
    _, ref_grads = _torch_bn(values, True, True, g)
    assert_close(leaves["input"].grad, ref_grads[0], dtype=dtype)
    assert_close(leaves["weight"].grad, ref_grads[3], dtype=dtype)
    assert_close(leaves["bias"].grad, ref_grads[4], dtype=dtype)
    assert leaves["running_mean"].grad is None


# ---- dropout / dropout2d ------------------------------------------------------------------------


def _dropped(out):
    return _np(out) == 0.0


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_mask_statistics(p, backend, dtype):
    """The dropped fraction is p within 5 standard deviations; kept values scale by 1/(1-p)."""
    shape = (100, 200)
    x = to_backend(np.full(shape, 2.0), backend, dtype)
    out = _np(F.dropout(x, p, seed=123))
    n = out.size
    assert abs(np.mean(out == 0.0) - p) <= 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out[out != 0.0], 2.0 / (1.0 - p), rtol=1e-6)


@pytest.mark.parametrize("shape", [(40, 50, 2, 3), (400, 3, 2)], ids=["NCHW", "CHW"])
def test_dropout2d_zeroes_whole_channels(shape, backend, dtype):
    p = 0.3
    x = to_backend(np.ones(shape), backend, dtype)
    out = _np(F.dropout2d(x, p, seed=7))
    per_channel = out.reshape(*shape[:-2], -1)
    dropped = np.all(per_channel == 0.0, axis=-1)
    assert np.all(dropped | np.all(per_channel == np.float64(np.asarray(1.0 / (1.0 - p), dtype=dtype)), axis=-1)), "a channel is all kept or all dropped"
    assert abs(dropped.mean() - p) <= 5 * np.sqrt(p * (1 - p) / dropped.size)


@pytest.mark.parametrize("op", ["dropout", "dropout2d"])
def test_dropout_seed_determinism_and_backward(op, backend, dtype, rng):
    """Same seed, same mask; another seed, another mask; f_backward regenerates the mask:
    grad * mask / (1 - p), equal to torch's gradient of x * mask / (1 - p) given our mask."""
    forward, backward = getattr(F, op), getattr(F, op + "_backward")
    p, shape = 0.4, (4, 6, 3, 5)
    x0 = rng.standard_normal(shape) + 10.0  # no zeros: out == 0 marks the dropped elements
    g0 = rng.standard_normal(shape)
    x, g = to_backend(x0, backend, dtype), to_backend(g0, backend, dtype)
    out = forward(x, p, seed=42)
    np.testing.assert_array_equal(_np(out), _np(forward(x, p, seed=42)))
    assert not np.array_equal(_dropped(out), _dropped(forward(x, p, seed=43)))
    mask = (~_dropped(out)).astype(np.float64)
    (grad,) = backward(g, x, p, seed=42)
    t = torch.tensor(x0, requires_grad=True)
    reference = t * torch.tensor(mask) / (1.0 - p)
    reference.backward(torch.tensor(g0))
    assert_close(out, reference.detach().numpy(), dtype=dtype, what=f"{op} forward")
    assert_close(grad, t.grad.numpy(), dtype=dtype, what=f"{op} backward")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN and inf on purpose
@pytest.mark.parametrize("op", ["dropout", "dropout2d"])
def test_dropout_identities(op, backend):
    forward, backward = getattr(F, op), getattr(F, op + "_backward")
    x0 = np.array([[[[1.0, np.nan], [np.inf, -2.0]]]])
    x = to_backend(x0, backend, "float64")
    assert forward(x, 0.5, training=False) is x
    assert forward(x, 0.0) is x
    assert backward(x, x, 0.5, training=False)[0] is x  # no seed needed: no mask
    zeros = _np(forward(x, 1.0))
    np.testing.assert_array_equal(zeros, [[[[0.0, np.nan], [np.nan, -0.0]]]])  # torch: input * 0
    np.testing.assert_array_equal(zeros, tf.dropout(torch.tensor(x0), 1.0).numpy())
    np.testing.assert_array_equal(_np(backward(x, x, 1.0)[0]), zeros)


def test_dropout_numpy_scalars(backend):
    x = to_backend(np.ones((50, 40)), backend, "float32")
    a, b = F.dropout(x, np.float32(0.25), seed=np.int64(3)), F.dropout(x, 0.25, seed=3)
    np.testing.assert_array_equal(_np(a), _np(b))


@pytest.mark.parametrize("op", ["dropout", "dropout2d"])
def test_dropout_generators(op, backend, global_generator):
    """A numpy.random.Generator works on every backend (and torch.Generator on torch): equal
    generators give equal masks; with neither seed nor generator the global generator's seed is
    used (portaconv.manual_seed repeats it)."""
    forward = getattr(F, op)
    x = to_backend(np.ones((8, 16, 2, 2)), backend, "float64")
    a = forward(x, 0.5, generator=np.random.default_rng(5))
    b = forward(x, 0.5, generator=np.random.default_rng(5))
    np.testing.assert_array_equal(_np(a), _np(b))
    if backend.name.startswith("torch"):
        made = [torch.Generator(device=x.device).manual_seed(9) for _ in range(2)]
        np.testing.assert_array_equal(_np(forward(x, 0.5, generator=made[0])), _np(forward(x, 0.5, generator=made[1])))
    portaconv.manual_seed(17)
    first = _np(forward(x, 0.5))
    second = _np(forward(x, 0.5))
    portaconv.manual_seed(17)
    np.testing.assert_array_equal(_np(forward(x, 0.5)), first)
    assert not np.array_equal(first, second), "the global generator moves on"


@pytest.mark.parametrize("op", ["dropout", "dropout2d"])
def test_dropout_graph_keeps_the_mask(op, backend, dtype):
    """Through Tensors the graph keeps the forward's mask (defvjp), so generator= and no seed
    differentiate: the gradient is grad_output * out / x."""
    forward = getattr(F, op)
    rng = np.random.default_rng(4)
    x0 = rng.standard_normal((3, 5, 4, 4)) + 10.0
    g0 = rng.standard_normal(x0.shape)
    for kwargs in ({"generator": np.random.default_rng(1)}, {}, {"seed": 3}):
        leaf = Tensor(to_backend(x0, backend, dtype), requires_grad=True)
        out = forward(leaf, 0.5, **kwargs)
        out.backward(to_backend(g0, backend, dtype))
        expected = g0 * _np(out.data) / x0
        assert_close(leaf.grad, expected, dtype=dtype, what=f"{op} {kwargs}")


# ---- adaptive_avg_pool2d, leaky_relu, silu (beyond the registry) --------------------------------


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN and inf on purpose
def test_adaptive_avg_pool2d_non_finite_stays_in_its_windows(backend, dtype):
    """A NaN or inf reaches only the windows holding it, forward and backward, as in torch."""
    x0 = np.random.default_rng(0).standard_normal((1, 2, 7, 5))
    x0[0, 0, 1, 1], x0[0, 1, 5, 3] = np.nan, np.inf
    g0 = np.random.default_rng(1).standard_normal((1, 2, 3, 2))
    g0[0, 1, 0, 0] = np.nan
    t = torch.tensor(x0, requires_grad=True)
    ref = tf.adaptive_avg_pool2d(t, (3, 2))
    ref.backward(torch.tensor(g0))
    x, g = to_backend(x0, backend, dtype), to_backend(g0, backend, dtype)
    assert_close(F.adaptive_avg_pool2d(x, (3, 2)), ref.detach().numpy(), dtype=dtype)
    assert_close(F.adaptive_avg_pool2d_backward(g, x, (3, 2))[0], t.grad.numpy(), dtype=dtype)


@pytest.mark.parametrize("shape, output_size", [((1, 2, 5, 7), (3, 4)), ((2, 4, 3), (5, None))])
def test_adaptive_avg_pool2d_finite_differences(shape, output_size):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    g = rng.standard_normal(F.adaptive_avg_pool2d(x, output_size).shape)
    (analytic,) = F.adaptive_avg_pool2d_backward(g, x, output_size)
    numeric = np.zeros_like(x)
    for flat in range(x.size):
        bumped = x.copy().reshape(-1)
        bumped[flat] += 1e-6
        up = np.sum(F.adaptive_avg_pool2d(bumped.reshape(shape), output_size) * g)
        bumped[flat] -= 2e-6
        down = np.sum(F.adaptive_avg_pool2d(bumped.reshape(shape), output_size) * g)
        numeric.reshape(-1)[flat] = (up - down) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


SPECIAL = np.array([-np.inf, -1e4, -30.0, -1.0, -0.0, 0.0, 1e-3, 1.0, 30.0, 1e4, np.inf, np.nan])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN and inf on purpose
@pytest.mark.parametrize("op, params", [("leaky_relu", {}), ("leaky_relu", {"negative_slope": np.float32(0.1)}), ("silu", {})], ids=["leaky_relu", "leaky_relu-np.float32", "silu"])
def test_activation_special_values(op, params, backend, dtype):
    """±0 (leaky_relu's slope at 0 is negative_slope, torch's rule), ±inf, NaN and the overflow
    range, forward and backward, against torch."""
    t = torch.tensor(SPECIAL, requires_grad=True)
    torch_params = {k: float(v) for k, v in params.items()}
    ref = getattr(tf, op)(t, **torch_params)
    ref.backward(torch.ones_like(ref))
    x = to_backend(SPECIAL, backend, dtype)
    assert_close(getattr(F, op)(x, **params), ref.detach().numpy(), dtype=dtype, what=f"{op} forward")
    grad = getattr(F, op + "_backward")(to_backend(np.ones_like(SPECIAL), backend, dtype), x, **params)[0]
    assert_close(grad, t.grad.numpy(), dtype=dtype, what=f"{op} backward")


# ---- jax.jit ------------------------------------------------------------------------------------

JIT_CALLS = [
    ("batch_norm-train", "batch_norm", [(4, 3, 5, 2), (3,), (3,), (3,), (3,)], {"training": True}),
    ("batch_norm-eval", "batch_norm", [(4, 3, 5), (3,), (3,), (3,), (3,)], {"training": False}),
    ("dropout", "dropout", [(6, 7)], {"p": 0.3, "seed": 5}),
    ("dropout2d", "dropout2d", [(3, 8, 2, 2)], {"p": 0.6, "seed": 8}),
    ("adaptive_avg_pool2d", "adaptive_avg_pool2d", [(2, 3, 7, 9)], {"output_size": (3, None)}),
    ("leaky_relu", "leaky_relu", [(3, 4)], {"negative_slope": 0.3}),
    ("silu", "silu", [(3, 4)], {}),
]


@pytest.mark.parametrize("name, op, shapes, params", JIT_CALLS, ids=[c[0] for c in JIT_CALLS])
def test_jit_matches_eager(name, op, shapes, params, dtype):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    backend = Backend("jax", jnp)
    rng = np.random.default_rng(6)
    inputs = [rng.standard_normal(s) + (1.0 if i == 2 else 0.0) for i, s in enumerate(shapes)]
    inputs = [np.abs(a) if i == 2 else a for i, a in enumerate(inputs)]  # a positive running_var
    arrays = [to_backend(a, backend, dtype) for a in inputs]
    forward, backward = getattr(F, op), getattr(F, op + "_backward")
    g = to_backend(rng.standard_normal(np.shape(forward(*inputs, **params))), backend, dtype)

    def run(grad, *xs):
        return forward(*xs, **params), backward(grad, *xs, **params)

    with jax.enable_x64(True):
        out, grads = jax.jit(run)(g, *arrays)
        eager_out, eager_grads = run(g, *arrays)
    assert_close(out, eager_out, dtype=dtype, what=f"{name} forward")
    for grad, eager in zip(grads, eager_grads):
        assert (grad is None) == (eager is None)
        if grad is not None:
            assert_close(grad, eager, dtype=dtype, what=f"{name} backward")


def test_jit_dropout_seed_as_argument():
    """A traced JAX seed: each call of one jitted function draws the mask of its seed, and the
    backward regenerates it; batch_norm_running_stats jits with an array count."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).standard_normal((20, 30)) + 5.0)

        @jax.jit
        def step(seed, grad):
            return F.dropout(x, 0.5, seed=seed), F.dropout_backward(grad, x, 0.5, seed=seed)[0]

        ones = jnp.ones_like(x)
        out1, grad1 = step(jnp.asarray(1), ones)
        out2, _ = step(jnp.asarray(2), ones)
        np.testing.assert_array_equal(np.asarray(out1), np.asarray(F.dropout(x, 0.5, seed=1)))
        np.testing.assert_array_equal(np.asarray(out1) == 0, np.asarray(grad1) == 0)
        assert not np.array_equal(np.asarray(out1) == 0, np.asarray(out2) == 0)
        stats = jax.jit(lambda a, m, v, n: F.batch_norm_running_stats(a, m, v, momentum=None, num_batches_tracked=n))
        mean, var = stats(x[:, :4], jnp.zeros(4), jnp.ones(4), jnp.asarray(2))
        expected = F.batch_norm_running_stats(np.asarray(x[:, :4]), np.zeros(4), np.ones(4), momentum=None, num_batches_tracked=2)
        assert_close(mean, expected[0])
        assert_close(var, expected[1])


# ---- bad input ----------------------------------------------------------------------------------

_x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
_c = np.ones(3)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: F.batch_norm(_x, _c, np.ones(4)), ValueError, r"batch_norm: running_var must have shape \(3,\), one entry per channel of input \(2, 3, 4, 4\), got \(4,\)"),
        (lambda: F.batch_norm(_x, _c, _c, weight=np.ones((3, 1))), ValueError, r"batch_norm: weight must have shape \(3,\).*got \(3, 1\)"),
        (lambda: F.batch_norm(_x, _c, _c, bias=np.ones(2)), ValueError, r"batch_norm: bias must have shape \(3,\)"),
        (lambda: F.batch_norm(_x[0, 0, 0], _c, _c), ValueError, r"batch_norm: input must have at least 2 dims \(N, C, \*\), got shape \(4,\)"),
        (lambda: F.batch_norm(_x, None, None), ValueError, r"batch_norm: running_mean and running_var are required when training=False .*got None"),
        (lambda: F.batch_norm(_x, _c, None, training=True), ValueError, r"running_mean and running_var must both be given or both be None, got running_var=None"),
        (lambda: F.batch_norm(_x, _c, _c, eps=0.0), ValueError, r"batch_norm: eps must be positive, got 0.0"),
        (lambda: F.batch_norm(_x, _c, _c, eps=-1e-5), ValueError, r"batch_norm: eps must be positive, got -1e-05"),
        (lambda: F.batch_norm(_x, _c, _c, eps="1e-5"), TypeError, r"batch_norm: eps must be a real number, got '1e-5'"),
        (lambda: F.batch_norm(_x, _c, _c, momentum="fast"), TypeError, r"batch_norm: momentum must be a real number, got 'fast'"),
        (lambda: F.batch_norm(_x, _c, _c, training=1), TypeError, r"batch_norm: training must be a bool, got 1"),
        (lambda: F.batch_norm(_x[:1, :, :1, :1], _c, _c, training=True), ValueError, r"batch_norm: expected more than 1 value per channel when training, got input shape \(1, 3, 1, 1\)"),
        (lambda: F.batch_norm(_x, _c.astype(np.float32), _c), TypeError, r"batch_norm: running_mean has dtype float32 but input has dtype float64"),
        (lambda: F.batch_norm_backward(np.ones((2, 3, 4)), _x, _c, _c), ValueError, r"batch_norm_backward: grad_output has shape \(2, 3, 4\), expected \(2, 3, 4, 4\)"),
        (lambda: F.batch_norm_running_stats(_x, _c, np.ones(5)), ValueError, r"batch_norm_running_stats: running_var must have shape \(3,\)"),
        (lambda: F.batch_norm_running_stats(_x[:1, :, :1, :1], _c, _c), ValueError, r"batch_norm_running_stats: expected more than 1 value per channel"),
        (lambda: F.batch_norm_running_stats(_x, None, _c), ValueError, r"batch_norm_running_stats: running_mean and running_var are required, got None"),
        (lambda: F.batch_norm_running_stats(_x, _c, _c, momentum=None, num_batches_tracked=-1), ValueError, r"num_batches_tracked must be >= 0, got -1"),
        (lambda: F.batch_norm_running_stats(_x, _c, _c, momentum=None, num_batches_tracked=1.5), TypeError, r"num_batches_tracked must be an int or a 0-D integer array, got 1.5"),
        (lambda: F.batch_norm_running_stats(_x, _c, _c, momentum=None, num_batches_tracked=np.zeros(2, dtype=np.int64)), TypeError, r"num_batches_tracked must be an int or a 0-D integer array, got an array of shape \(2,\)"),
        (lambda: F.dropout(_x, 1.5), ValueError, r"dropout: p must be a probability in \[0, 1\], got 1.5"),
        (lambda: F.dropout(_x, -0.1), ValueError, r"dropout: p must be a probability in \[0, 1\], got -0.1"),
        (lambda: F.dropout(_x, "half"), TypeError, r"dropout: p must be a real number \(a probability in \[0, 1\]\), got 'half'"),
        (lambda: F.dropout(_x, 0.5, training="yes"), TypeError, r"dropout: training must be a bool, got 'yes'"),
        (lambda: F.dropout(_x, 0.5, seed=1, generator=np.random.default_rng()), ValueError, r"dropout: pass seed= or generator=, not both"),
        (lambda: F.dropout(_x, 0.5, seed=-3), ValueError, r"dropout: seed must be a non-negative int, got -3"),
        (lambda: F.dropout(_x, 0.5, seed=1.5), TypeError, r"dropout: seed must be a non-negative int .*got 1.5"),
        (lambda: F.dropout(_x, 0.5, generator=np.random.RandomState(0)), TypeError, r"dropout: generator must be a numpy.random.Generator for numpy input, got RandomState"),
        (lambda: F.dropout(_x.astype(np.int64)), TypeError, r"dropout: input must have a real floating dtype"),
        (lambda: F.dropout2d(_x[0, 0]), ValueError, r"dropout2d: input must be 3-D or 4-D \(N, C, H, W\) or unbatched \(C, H, W\), got shape \(4, 4\)"),
        (lambda: F.dropout_backward(_x, _x, 0.5), ValueError, r"dropout_backward: seed= is needed to regenerate the mask"),
        (lambda: F.dropout_backward(_x, _x, 0.5, generator=np.random.default_rng(0)), ValueError, r"dropout_backward: the mask drawn from generator= cannot be regenerated .*pass the same seed="),
        (lambda: F.dropout2d_backward(_x, _x, 0.5, generator=np.random.default_rng(0)), ValueError, r"dropout2d_backward: the mask drawn from generator= cannot be regenerated"),
        (lambda: F.dropout_backward(_x[0], _x, 0.5, seed=1), ValueError, r"dropout_backward: grad_output has shape \(3, 4, 4\), expected \(2, 3, 4, 4\)"),
        (lambda: F.adaptive_avg_pool2d(_x, 0), ValueError, r"adaptive_avg_pool2d: output_size must be positive, got 0"),
        (lambda: F.adaptive_avg_pool2d(_x, (2, -1)), ValueError, r"adaptive_avg_pool2d: output_size must be positive, got \(2, -1\)"),
        (lambda: F.adaptive_avg_pool2d(_x, (2, 2, 2)), TypeError, r"adaptive_avg_pool2d: output_size must be an int or a pair of ints \(or None entries\), got \(2, 2, 2\)"),
        (lambda: F.adaptive_avg_pool2d(_x, 2.0), TypeError, r"adaptive_avg_pool2d: output_size must be an int or a pair"),
        (lambda: F.adaptive_avg_pool2d(_x[0, 0], 2), ValueError, r"adaptive_avg_pool2d: input must be 3-D or 4-D .*got shape \(4, 4\)"),
        (lambda: F.adaptive_avg_pool2d(np.ones((1, 2, 0, 3)), 2), ValueError, r"adaptive_avg_pool2d: input must have a non-zero height and width, got shape \(1, 2, 0, 3\)"),
        (lambda: F.adaptive_avg_pool2d_backward(np.ones((2, 3, 3, 3)), _x, 2), ValueError, r"adaptive_avg_pool2d_backward: grad_output has shape \(2, 3, 3, 3\), expected \(2, 3, 2, 2\)"),
        (lambda: F.leaky_relu(_x, "0.1"), TypeError, r"leaky_relu: negative_slope must be a real number, got '0.1'"),
        (lambda: F.leaky_relu(_x, np.ones(1)), TypeError, r"leaky_relu: negative_slope must be a real number"),
        (lambda: F.leaky_relu_backward(_x[0], _x), ValueError, r"leaky_relu_backward: grad_output has shape \(3, 4, 4\), expected \(2, 3, 4, 4\)"),
        (lambda: F.silu(_x.astype(np.float16)), TypeError, r"silu: input must have a real floating dtype \(float32 or float64\), got float16"),
        (lambda: F.silu_backward(_x.astype(np.float32), _x), TypeError, r"silu_backward: grad_output has dtype float32 but input has dtype float64"),
        (lambda: portaconv.manual_seed(-1), ValueError, r"manual_seed: seed must be a non-negative int, got -1"),
        (lambda: portaconv.manual_seed("1"), TypeError, r"manual_seed: seed must be a non-negative int, got '1'"),
    ],
)
def test_bad_input_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backend_generator_errors(backend):
    x = to_backend(np.ones((2, 3, 2, 2)), backend, "float64")
    if backend.name.startswith("torch"):
        if torch.cuda.is_available():  # a generator of the other device type
            other = "cpu" if x.device.type == "cuda" else "cuda"
            with pytest.raises(ValueError, match=r"dropout: generator is on device .* but input is on"):
                F.dropout(x, 0.5, generator=torch.Generator(device=other))
        with pytest.raises(TypeError, match=r"dropout: generator must be a torch.Generator or a numpy.random.Generator for torch input, got int"):
            F.dropout(x, 0.5, generator=3)
    elif backend.name == "jax":
        with pytest.raises(TypeError, match=r"dropout2d: generator must be a numpy.random.Generator for JAX input \(JAX has no stateful generator; pass seed=\), got int"):
            F.dropout2d(x, 0.5, generator=3)
    else:
        with pytest.raises(TypeError, match=rf"dropout: generator must be a numpy.random.Generator for {backend.xp.__name__.split('.')[-1]} input"):
            F.dropout(x, 0.5, generator=torch.Generator())
