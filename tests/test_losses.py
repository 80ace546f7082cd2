"""The losses' torch features: class weights, class-probability targets, mse_loss,
binary_cross_entropy_with_logits; softmax on 0-d and zero-size inputs; one-element tuples and
NumPy scalars as parameters. Against torch on every backend (float64 tight, float32 within the
float32 tolerance), by finite differences, under ``jax.jit``, and the error messages."""

import re

import numpy as np
import pytest

import portaconv.functional as F
from portaconv import to_numpy
from portaconv.testing import Backend, assert_close, to_backend

torch = pytest.importorskip("torch")
tf = torch.nn.functional

# ---- the comparison ------------------------------------------------------------------------------


def _torch(op, args, kwargs, differentiated, grad_output=None, rng=None):
    """torch's float64 output and the gradients of the positional inputs in ``differentiated``."""
    tensors = [
        torch.tensor(a, requires_grad=i in differentiated and a.dtype.kind == "f") if isinstance(a, np.ndarray) else a
        for i, a in enumerate(args)
    ]
    tkwargs = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    out = getattr(tf, op)(*tensors, **tkwargs)
    if grad_output is None:
        grad_output = rng.standard_normal(tuple(out.shape))
    out.backward(torch.tensor(grad_output))
    grads = [t.grad.numpy() if isinstance(t, torch.Tensor) and t.requires_grad else None for t in tensors]
    return out.detach().numpy(), grads, grad_output


def _ours(op, args, kwargs, grad_output, backend, dtype):
    convert = lambda a: to_backend(a, backend, dtype) if isinstance(a, np.ndarray) else a  # noqa: E731
    arrays = [convert(a) for a in args]
    params = {k: convert(v) for k, v in kwargs.items()}
    out = getattr(F, op)(*arrays, **params)
    grads = getattr(F, op + "_backward")(convert(np.asarray(grad_output)), *arrays, **params)
    return out, grads


def _compare(op, args, kwargs, differentiated, backend, dtype, rng, *, slots):
    """Forward and backward of ``op`` on ``backend`` against torch; ``slots`` is the number of
    gradients the backward returns (one per positional array input of the op)."""
    ref_out, ref_grads, grad_output = _torch(op, args, kwargs, differentiated, rng=rng)
    out, grads = _ours(op, args, kwargs, grad_output, backend, dtype)
    expected_type = type(backend.xp.asarray(0.0, device=backend.device))
    assert type(out) is expected_type, f"{op}: the output keeps the input's namespace (0-d included)"
    assert out.dtype == getattr(backend.xp, dtype)
    assert_close(out, ref_out, dtype=dtype, what=f"{op} forward")
    assert len(grads) == slots
    for position in range(slots):
        ref = ref_grads[position] if position < len(ref_grads) else None
        if ref is None:
            assert grads[position] is None, f"{op}: gradient {position} should be None"
            continue
        assert type(grads[position]) is expected_type and grads[position].dtype == getattr(backend.xp, dtype)
        assert_close(grads[position], ref, dtype=dtype, what=f"{op} grad {position}")
    return out, grads


def _indices(rng, shape, classes, ignore_every=0, ignore_index=-100):
    target = rng.integers(0, classes, size=shape).astype(np.int64)
    if ignore_every:
        target.reshape(-1)[::ignore_every] = ignore_index
    return target


def _probabilities(rng, shape, axis):
    p = rng.random(shape)
    return p / np.sum(p, axis=axis, keepdims=True)


# ---- class weights -------------------------------------------------------------------------------

INDEX_SHAPES = [((6, 5), (6,)), ((3, 4, 2, 3), (3, 2, 3)), ((5,), ())]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shapes", INDEX_SHAPES, ids=str)
@pytest.mark.parametrize("op, smoothing", [("nll_loss", 0.0), ("cross_entropy", 0.0), ("cross_entropy", 0.3)])
def test_class_weights_match_torch(op, smoothing, shapes, reduction, backend, dtype, rng):
    """weight=(C,): "mean" divides by the kept targets' summed weights; with label smoothing the
    smoothing term is weighted per class (torch's formula)."""
    x_shape, t_shape = shapes
    classes = x_shape[0] if len(x_shape) == 1 else x_shape[1]
    x = rng.standard_normal(x_shape)
    weight = rng.uniform(0.2, 2.0, classes)
    ignore_index = 1
    target = _indices(rng, t_shape, classes, ignore_every=3 if t_shape else 0, ignore_index=ignore_index)
    kwargs = {"reduction": reduction, "ignore_index": ignore_index}
    if smoothing:
        kwargs["label_smoothing"] = smoothing
    _compare(op, [x, target, weight], kwargs, {0}, backend, dtype, rng, slots=3)


@pytest.mark.parametrize("op", ["nll_loss", "cross_entropy"])
def test_weighted_mean_with_every_target_ignored(op, backend):
    """All ignored: torch's weighted mean is 0/0 = NaN, its gradient zero."""
    x = np.random.default_rng(0).standard_normal((2, 3))
    args = [x, np.array([-100, -100]), np.array([1.0, 2.0, 3.0])]
    ref_out, ref_grads, grad_output = _torch(op, args, {}, {0}, grad_output=np.asarray(1.0))
    out, grads = _ours(op, args, {}, grad_output, backend, "float64")
    assert np.isnan(to_numpy(out)) and np.isnan(ref_out)
    np.testing.assert_array_equal(to_numpy(grads[0]), ref_grads[0])


def test_weight_positional_and_keyword_agree():
    rng = np.random.default_rng(1)
    x, target, weight = rng.standard_normal((4, 3)), np.array([0, 2, 1, 1]), np.array([0.5, 1.0, 2.0])
    for op in (F.nll_loss, F.cross_entropy):
        assert np.array_equal(op(x, target, weight, "sum"), op(x, target, weight=weight, reduction="sum"))
    assert np.array_equal(F.nll_loss(x, target, reduction="sum"), F.nll_loss(x, target, None, "sum"))


# ---- class-probability targets -------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 2, 3), (5,)], ids=str)
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_probability_targets_match_torch(weighted, smoothing, shape, reduction, backend, dtype, rng):
    """A floating target of the input's shape: soft labels; "mean" divides by the sample count
    (never by the weights); the target's gradient is torch's too."""
    axis = 0 if len(shape) == 1 else 1
    x = rng.standard_normal(shape)
    target = _probabilities(rng, shape, axis)
    weight = rng.uniform(0.2, 2.0, shape[axis]) if weighted else None
    kwargs = {"reduction": reduction, "label_smoothing": smoothing}
    _compare("cross_entropy", [x, target, weight], kwargs, {0, 1}, backend, dtype, rng, slots=3)


def test_probability_targets_zero_samples_mean_is_nan():
    assert np.isnan(F.cross_entropy(np.zeros((0, 3)), np.zeros((0, 3))))
    assert np.isnan(tf.cross_entropy(torch.zeros(0, 3), torch.zeros(0, 3)).item())
    grad = F.cross_entropy_backward(np.asarray(1.0), np.zeros((0, 3)), np.zeros((0, 3)))
    assert grad[0].shape == grad[1].shape == (0, 3)


def test_one_hot_probabilities_equal_class_indices(backend):
    rng = np.random.default_rng(2)
    x, target = rng.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2])
    weight = rng.uniform(0.5, 2.0, 4)
    one_hot = np.eye(4)[target]
    soft = F.cross_entropy(*[to_backend(a, backend, "float64") for a in (x, one_hot, weight)], reduction="sum")
    hard = F.cross_entropy(to_backend(x, backend, "float64"), to_backend(target, backend), to_backend(weight, backend, "float64"), reduction="sum")
    assert_close(soft, to_numpy(hard), what="one-hot probabilities vs indices")


# ---- mse_loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(3, 4, 5), (7,), ()], ids=str)
def test_mse_loss_matches_torch(shape, reduction, backend, dtype, rng):
    args = [rng.standard_normal(shape), rng.standard_normal(shape)]
    _compare("mse_loss", args, {"reduction": reduction}, {0, 1}, backend, dtype, rng, slots=2)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_broadcasts_with_torchs_warning(reduction, backend, rng):
    """A target of another shape is broadcast, with a warning, as torch does; each gradient is
    summed back to its array's shape."""
    args = [rng.standard_normal((3, 4)), rng.standard_normal((4,))]
    with pytest.warns(UserWarning) as record:  # torch's warning and ours
        _compare("mse_loss", args, {"reduction": reduction}, {0, 1}, backend, "float64", rng, slots=2)
    ours = "mse_loss: target shape (4,) differs from input shape (3, 4); they are broadcast to (3, 4)"
    assert any(str(w.message).startswith(ours) for w in record), [str(w.message) for w in record]


def test_mse_loss_zero_size_mean_is_nan_like_torch():
    assert np.isnan(F.mse_loss(np.zeros((0, 2)), np.zeros((0, 2))))
    assert np.isnan(tf.mse_loss(torch.zeros(0, 2), torch.zeros(0, 2)).item())
    assert F.mse_loss(np.zeros((0, 2)), np.zeros((0, 2)), reduction="sum") == 0.0


# ---- binary_cross_entropy_with_logits -------------------------------------------------------------

BCE_WEIGHTS = [None, (1,), (5,), (1, 5), (4, 5)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight_shape", BCE_WEIGHTS, ids=str)
@pytest.mark.parametrize("pos_weight", [False, True], ids=["no_pos_weight", "pos_weight"])
def test_bce_with_logits_matches_torch(pos_weight, weight_shape, reduction, backend, dtype, rng):
    x = rng.standard_normal((4, 5)) * 3
    target = rng.random((4, 5))
    weight = None if weight_shape is None else rng.uniform(0.2, 2.0, weight_shape)
    kwargs = {"reduction": reduction}
    if pos_weight:
        kwargs["pos_weight"] = rng.uniform(0.5, 3.0, (5,))
    _compare("binary_cross_entropy_with_logits", [x, target, weight], kwargs, {0, 1}, backend, dtype, rng, slots=3)


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4)], ids=str)
def test_bce_with_logits_shapes(shape, backend, dtype, rng):
    args = [rng.standard_normal(shape), rng.random(shape)]
    _compare("binary_cross_entropy_with_logits", args + [None], {"reduction": "none"}, {0, 1}, backend, dtype, rng, slots=3)


def test_bce_with_logits_extreme_logits_stay_finite(backend, dtype):
    x = np.array([[1e4, -1e4, 0.0, 50.0], [-50.0, 1e4, -1e4, 3.0]])
    target = np.array([[0.0, 1.0, 0.5, 1.0], [0.0, 1.0, 0.0, 0.3]])
    pos_weight = np.array([2.0, 0.5, 1.0, 3.0])
    for kwargs in ({}, {"pos_weight": pos_weight}):
        out, grads = _compare(
            "binary_cross_entropy_with_logits", [x, target, None], {"reduction": "none", **kwargs}, {0, 1}, backend, dtype, np.random.default_rng(0), slots=3
        )
        assert np.all(np.isfinite(to_numpy(out))) and np.all(np.isfinite(to_numpy(grads[0])))


# ---- finite differences (float64, NumPy) ----------------------------------------------------------


def _finite_difference(op, args, kwargs, position, grad_output, eps=1e-6):
    x = args[position]
    numeric = np.zeros_like(x)
    for flat in range(x.size):
        values = []
        for step in (eps, -eps):
            bumped = x.copy()
            bumped.reshape(-1)[flat] += step
            moved = list(args)
            moved[position] = bumped
            values.append(np.sum(getattr(F, op)(*moved, **kwargs) * grad_output))
        numeric.reshape(-1)[flat] = (values[0] - values[1]) / (2 * eps)
    return numeric


_RNG = np.random.default_rng(11)
FD_CASES = [
    ("nll_loss", [_RNG.standard_normal((4, 3)), np.array([0, 2, -100, 1]), np.array([0.5, 1.5, 2.0])], {}, (0,)),
    ("cross_entropy", [_RNG.standard_normal((4, 3, 2)), np.array([[0, 2], [1, 1], [-100, 0], [2, 2]]), np.array([0.5, 1.5, 2.0])], {"label_smoothing": 0.2}, (0,)),
    ("cross_entropy", [_RNG.standard_normal((3, 4)), _RNG.random((3, 4)), np.array([0.5, 1.0, 1.5, 2.0])], {"label_smoothing": 0.1, "reduction": "sum"}, (0, 1)),
    ("cross_entropy", [_RNG.standard_normal(4), _RNG.random(4), None], {"reduction": "none"}, (0, 1)),
    ("mse_loss", [_RNG.standard_normal((2, 3)), _RNG.standard_normal((2, 3))], {}, (0, 1)),
    ("binary_cross_entropy_with_logits", [_RNG.standard_normal((3, 4)), _RNG.random((3, 4)), _RNG.random((4,))], {"pos_weight": _RNG.uniform(0.5, 2, (4,))}, (0, 1)),
    ("binary_cross_entropy_with_logits", [_RNG.standard_normal((2, 3)) * 4, _RNG.random((2, 3)), None], {"reduction": "none"}, (0, 1)),
]


@pytest.mark.parametrize("op, args, kwargs, positions", FD_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FD_CASES)])
def test_finite_differences(op, args, kwargs, positions):
    out = getattr(F, op)(*args, **kwargs)
    grad_output = np.random.default_rng(5).standard_normal(np.shape(out))
    grads = getattr(F, op + "_backward")(grad_output, *args, **kwargs)
    for position in range(len(args)):
        if position not in positions:
            assert grads[position] is None
            continue
        numeric = _finite_difference(op, args, kwargs, position, grad_output)
        np.testing.assert_allclose(grads[position], numeric, rtol=1e-6, atol=1e-7, err_msg=f"{op} input {position}")


# ---- jax.jit ---------------------------------------------------------------------------------------

JIT_CASES = [
    ("nll_loss", lambda r: [r.standard_normal((4, 3)), np.array([0, 2, -100, 1]), r.uniform(0.5, 2, 3)], {}, {0}, {}),
    ("cross_entropy", lambda r: [r.standard_normal((3, 4, 2)), np.array([[0, 3], [1, -100], [2, 2]]), r.uniform(0.5, 2, 4)], {"label_smoothing": 0.2}, {0}, {}),
    ("cross_entropy", lambda r: [r.standard_normal((3, 4)), r.random((3, 4)), r.uniform(0.5, 2, 4)], {"label_smoothing": 0.1, "reduction": "none"}, {0, 1}, {}),
    ("mse_loss", lambda r: [r.standard_normal((3, 4)), r.standard_normal((3, 4))], {"reduction": "sum"}, {0, 1}, {}),
    ("binary_cross_entropy_with_logits", lambda r: [r.standard_normal((3, 4)), r.random((3, 4)), r.random((1, 4))], {}, {0, 1}, {"pos_weight": (4,)}),
]


@pytest.mark.parametrize("op, make, params, differentiated, array_kwargs", JIT_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(JIT_CASES)])
def test_jit_forward_backward(op, make, params, differentiated, array_kwargs, dtype):
    """Every array (targets, weights, pos_weight) a jit argument: the losses trace sync-free."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    rng = np.random.default_rng(3)
    args = make(rng)
    extra = {k: rng.uniform(0.5, 2, shape) for k, shape in array_kwargs.items()}
    ref_out, ref_grads, grad_output = _torch(op, args, {**params, **extra}, differentiated, rng=rng)
    names = list(extra)

    def run(grad, *arrays):
        inputs = list(arrays[: len(args)])
        kwargs = {**params, **dict(zip(names, arrays[len(args) :]))}
        return getattr(F, op)(*inputs, **kwargs), getattr(F, op + "_backward")(grad, *inputs, **kwargs)

    jax_backend = Backend("jax", jnp)
    with jax.enable_x64(True):
        arrays = [to_backend(a, jax_backend, dtype) for a in args] + [to_backend(extra[k], jax_backend, dtype) for k in names]
        out, grads = jax.jit(run)(to_backend(np.asarray(grad_output), jax_backend, dtype), *arrays)
        assert out.dtype == getattr(jnp, dtype)
        assert_close(out, ref_out, dtype=dtype, what=f"{op} jit forward")
        for position, ref in enumerate(ref_grads):
            if ref is None:
                assert grads[position] is None
            else:
                assert_close(grads[position], ref, dtype=dtype, what=f"{op} jit grad {position}")


# ---- softmax / log_softmax edge shapes, 0-d losses ----------------------------------------------


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim", [((), 0), ((), -1), ((5, 0, 0), -1), ((0, 3), 1), ((2, 0), 0)], ids=str)
def test_softmax_zero_d_and_zero_size_like_torch(op, shape, dim, backend, dtype, rng):
    """torch: a 0-d input is one class (softmax 1, log_softmax 0); a zero-size input gives an
    empty result. Both as 0-d / empty arrays of the input's namespace."""
    x = rng.standard_normal(shape)
    ref_out, ref_grads, grad_output = _torch(op, [x, dim], {}, {0}, rng=rng)
    out, grads = _ours(op, [x, dim], {}, grad_output, backend, dtype)
    expected_type = type(backend.xp.asarray(0.0, device=backend.device))
    assert type(out) is expected_type and type(grads[0]) is expected_type
    assert tuple(out.shape) == shape and tuple(grads[0].shape) == shape
    assert_close(out, ref_out, dtype=dtype, what=f"{op} forward")
    assert_close(grads[0], ref_grads[0], dtype=dtype, what=f"{op} grad")


@pytest.mark.parametrize(
    "op, args, kwargs",
    [
        ("nll_loss", [np.zeros(3), np.array(1)], {"reduction": "none"}),
        ("cross_entropy", [np.zeros(3), np.array(1)], {"reduction": "none"}),
        ("cross_entropy", [np.zeros(3), np.full(3, 1 / 3)], {"reduction": "none"}),
        ("mse_loss", [np.zeros(()), np.ones(())], {"reduction": "none"}),
        ("binary_cross_entropy_with_logits", [np.zeros(()), np.ones(())], {"reduction": "none"}),
        ("mse_loss", [np.zeros((2, 3)), np.ones((2, 3))], {"reduction": "mean"}),
        ("binary_cross_entropy_with_logits", [np.zeros((2, 3)), np.ones((2, 3))], {"reduction": "sum"}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_zero_d_results_are_arrays(op, args, kwargs):
    """NumPy's 0-d arithmetic gives NumPy scalars: every 0-d result and gradient is an ndarray."""
    out = getattr(F, op)(*args, **kwargs)
    assert type(out) is np.ndarray and out.shape == ()
    grads = getattr(F, op + "_backward")(np.asarray(1.0), *args, **kwargs)
    assert all(g is None or type(g) is np.ndarray for g in grads)


# ---- parameters: one-element tuples, NumPy scalars ---------------------------------------------


@pytest.mark.parametrize(
    "op, shapes, params",
    [
        ("conv2d", ((2, 3, 7, 6), (4, 3, 3, 2)), {"stride": (2,), "padding": (1,), "dilation": (2,)}),
        ("conv2d", ((2, 3, 7, 6), (4, 3, 3, 2)), {"stride": np.int64(2), "padding": [np.int64(1), 2], "groups": np.int64(1)}),
        ("conv_transpose2d", ((2, 3, 4, 5), (3, 2, 3, 3)), {"stride": (2,), "padding": (1,), "output_padding": (1,), "dilation": (1,)}),
        ("max_pool2d", ((2, 3, 7, 6),), {"kernel_size": (3,), "stride": (2,), "padding": (1,), "dilation": (1,)}),
        ("max_pool2d", ((2, 3, 7, 6),), {"kernel_size": np.int64(3), "padding": np.int64(1)}),
        ("max_pool2d", ((2, 3, 7, 6),), {"kernel_size": 3, "stride": np.int32(2)}),
        ("avg_pool2d", ((2, 3, 7, 6),), {"kernel_size": (3,), "stride": (2,), "padding": (1,)}),
        ("local_response_norm", ((2, 5, 3, 3),), {"size": np.int64(3), "alpha": np.float32(0.3), "beta": np.float32(0.5), "k": np.float64(2.0)}),
        ("cross_entropy", ((4, 5), "target"), {"label_smoothing": np.float32(0.25), "ignore_index": np.int64(2)}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_torch_parameter_forms(op, shapes, params, rng):
    """``(k,)`` means ``k`` on both axes and NumPy integer / float scalars count as ints / floats,
    wherever torch accepts them; the results are torch's."""
    args = [rng.integers(0, 5, size=4) if s == "target" else rng.standard_normal(s) for s in shapes]
    differentiated = {i for i, s in enumerate(shapes) if s != "target"}
    torch_params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
    torch_params = {k: [x.item() if isinstance(x, np.generic) else x for x in v] if isinstance(v, list) else v for k, v in torch_params.items()}
    ref_out, ref_grads, grad_output = _torch(op, args, torch_params, differentiated, rng=rng)
    out, grads = _ours(op, args, params, grad_output, Backend("numpy", np), "float64")
    assert_close(out, ref_out, what=f"{op} forward")
    for grad, ref in zip(grads, ref_grads):
        if ref is not None:
            assert_close(grad, ref, what=f"{op} grad")


# ---- errors ----------------------------------------------------------------------------------------

X = np.zeros((3, 4))
T = np.array([0, 1, 2])


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: F.nll_loss(X, T, np.ones(3)), ValueError, "nll_loss: weight has shape (3,), expected (4,): one weight per class of the input of shape (3, 4)"),
        (lambda: F.cross_entropy(X, T, np.ones((1, 4))), ValueError, "cross_entropy: weight has shape (1, 4), expected (4,)"),
        (lambda: F.cross_entropy(X, T, np.ones(4, np.float32)), TypeError, "cross_entropy: weight has dtype float32 but input has dtype float64"),
        (lambda: F.cross_entropy_backward(np.asarray(1.0), X, T, np.ones(5)), ValueError, "cross_entropy_backward: weight has shape (5,), expected (4,)"),
        (lambda: F.cross_entropy(X, np.zeros(3)), TypeError, "cross_entropy: target must hold integer class indices, got dtype float64; a floating target holds class probabilities and must have the input's shape (3, 4), got (3,)"),
        (lambda: F.nll_loss(X, np.zeros((3, 4))), TypeError, "nll_loss: target must hold integer class indices, got dtype float64"),
        (lambda: F.cross_entropy(X, np.zeros((3, 4)), ignore_index=1), ValueError, "cross_entropy: ignore_index=1 is not supported with class-probability targets"),
        (lambda: F.cross_entropy(X, np.zeros((3, 4), np.float32)), TypeError, "cross_entropy: target has dtype float32 but input has dtype float64"),
        (lambda: F.cross_entropy(X, T, label_smoothing=True), ValueError, "cross_entropy: label_smoothing must be in [0, 1], got True"),
        (lambda: F.cross_entropy(X, T, label_smoothing=np.float32(-0.5)), ValueError, "cross_entropy: label_smoothing must be in [0, 1], got np.float32(-0.5)"),
        (lambda: F.mse_loss(X, np.zeros(5)), ValueError, "mse_loss: target has shape (5,), which does not broadcast to input of shape (3, 4)"),
        (lambda: F.mse_loss(X, X, reduction="avg"), ValueError, "mse_loss: reduction must be one of ('mean', 'sum', 'none'), got 'avg'"),
        (lambda: F.mse_loss(X, X.astype(np.float32)), TypeError, "mse_loss: target has dtype float32 but input has dtype float64"),
        (lambda: F.mse_loss_backward(np.zeros(4), X, X, reduction="none"), ValueError, "mse_loss_backward: grad_output has shape (4,), expected (3, 4)"),
        (lambda: F.mse_loss_backward(np.zeros(4), X, X), ValueError, "mse_loss_backward: grad_output has shape (4,), expected ()"),
        (lambda: F.binary_cross_entropy_with_logits(X, np.zeros(4)), ValueError, "binary_cross_entropy_with_logits: target has shape (4,), expected (3, 4)"),
        (lambda: F.binary_cross_entropy_with_logits(X, X, np.ones(3)), ValueError, "binary_cross_entropy_with_logits: weight has shape (3,), which does not broadcast to the input's shape (3, 4)"),
        (lambda: F.binary_cross_entropy_with_logits(X, X, pos_weight=np.ones((2, 1, 4))), ValueError, "binary_cross_entropy_with_logits: pos_weight has shape (2, 1, 4), which does not broadcast to the input's shape (3, 4)"),
        (lambda: F.binary_cross_entropy_with_logits(X, X, pos_weight=np.ones(4, np.float32)), TypeError, "binary_cross_entropy_with_logits: pos_weight has dtype float32 but input has dtype float64"),
        (lambda: F.binary_cross_entropy_with_logits(X, X.astype(np.int64)), TypeError, "binary_cross_entropy_with_logits: target must have a real floating dtype (float32 or float64), got int64"),
        (lambda: F.binary_cross_entropy_with_logits_backward(np.zeros(3), X, X), ValueError, "binary_cross_entropy_with_logits_backward: grad_output has shape (3,), expected ()"),
        (lambda: F.softmax(np.zeros(()), 1), ValueError, "softmax: dim=1 is out of range for an input of shape ()"),
        (lambda: F.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)), stride=(1, 2, 3)), TypeError, "stride must be an int or a pair of ints, got (1, 2, 3)"),
        (lambda: F.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)), padding=()), TypeError, "padding must be an int or a pair of ints, got ()"),
        (lambda: F.max_pool2d(np.zeros((1, 2, 5, 5)), (0,)), ValueError, "kernel_size must be positive, got (0,)"),
        (lambda: F.max_pool2d(np.zeros((1, 2, 5, 5)), (np.float64(2.0),)), TypeError, "kernel_size must be an int or a pair of ints, got (np.float64(2.0),)"),
    ],
)
def test_error_messages(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_pos_weight_is_keyword_only():
    with pytest.raises(TypeError):
        F.binary_cross_entropy_with_logits(X, X, None, "mean", np.ones(4))


# ---- the Tensor graph ------------------------------------------------------------------------------


def test_tensor_graph_with_weights():
    """Class weights and pos_weight ride along as plain arrays; the graph differentiates the input
    and a probability target."""
    from portaconv.autograd.tensor import Tensor

    rng = np.random.default_rng(4)
    x_np, q_np, w_np = rng.standard_normal((3, 4)), _probabilities(rng, (3, 4), 1), rng.uniform(0.5, 2, 4)
    x, q = Tensor(x_np, requires_grad=True), Tensor(q_np, requires_grad=True)
    F.cross_entropy(x, q, w_np, label_smoothing=0.1).backward()
    tx, tq = torch.tensor(x_np, requires_grad=True), torch.tensor(q_np, requires_grad=True)
    tf.cross_entropy(tx, tq, torch.tensor(w_np), label_smoothing=0.1).backward()
    assert_close(x.grad, tx.grad.numpy(), what="input grad")
    assert_close(q.grad, tq.grad.numpy(), what="target grad")
    x = Tensor(x_np, requires_grad=True)
    F.binary_cross_entropy_with_logits(x, q_np, w_np, pos_weight=w_np[::-1].copy()).backward()
    tx = torch.tensor(x_np, requires_grad=True)
    tf.binary_cross_entropy_with_logits(tx, torch.tensor(q_np), torch.tensor(w_np), pos_weight=torch.tensor(w_np[::-1].copy())).backward()
    assert_close(x.grad, tx.grad.numpy(), what="bce input grad")
