"""portaconv.Tensor and the graph builder: Tensor ops against torch, the registry's ops through
the graph against their explicit backward, grad mode, accumulation and the error messages."""

import numpy as np
import pytest

import portaconv
import portaconv.functional as F
from portaconv import Tensor, no_grad
from portaconv.testing import CASES, assert_close, make_inputs, run_case, to_backend


def _tensor(array, backend, dtype, requires_grad=True):
    return Tensor(to_backend(array, backend, dtype), requires_grad=requires_grad)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[str(c) for c in CASES])
def test_graph_gives_the_explicit_backward(index, backend, dtype, rng):
    """Every registered case: the Tensor path's output and leaf gradients equal the plain op and
    its f_backward (the one contract both routes follow). The graph code has no backend branch:
    NumPy (kernels) and array-api-strict (the reference) cover it; test_parity runs every backend."""
    if backend.name not in ("numpy", "array_api_strict"):
        pytest.skip("the graph builder is backend-agnostic; see the docstring")
    case = CASES[index]
    inputs = make_inputs(case, rng)
    grad_output = rng.standard_normal(np.shape(portaconv.to_numpy(getattr(F, case.op)(*inputs, **case.params))))
    out, grads = run_case(case, inputs, grad_output, backend, dtype)
    leaves = [None if a is None else Tensor(to_backend(a, backend, dtype), requires_grad=a.dtype.kind == "f") for a in inputs]
    result = getattr(F, case.op)(*leaves, **case.params)
    assert isinstance(result, Tensor)
    result.backward(to_backend(grad_output, backend, dtype))
    assert_close(result.data, out, dtype=dtype, what=f"{case} forward")
    for leaf, grad in zip(leaves, grads):
        if leaf is None or not leaf.requires_grad:
            continue
        assert_close(leaf.grad, grad, dtype=dtype, what=f"{case} gradient")


def test_plain_arrays_in_plain_arrays_out():
    x = np.ones((1, 1, 4, 4))
    w = np.ones((2, 1, 3, 3))
    assert type(F.conv2d(x, w)) is np.ndarray
    assert type(F.relu(x)) is np.ndarray
    assert isinstance(F.conv2d(Tensor(x), w), Tensor)
    assert not F.conv2d(Tensor(x), w).requires_grad  # no input requires grad: no graph


@pytest.mark.parametrize(
    "expression",
    [
        lambda a, b: (a * b + a / (b * b + 1.0) - 3.0 * a).sum(),
        lambda a, b: ((a - b) ** 2).mean(),
        lambda a, b: (a @ b.T).sum(dim=1).mean(),
        lambda a, b: (-a[1:, ::2] * 2.0).sum() + (1.0 - b).mean(),
        lambda a, b: (a.reshape(6, 2).permute(1, 0) @ b.reshape(6, 2)).sum(),
        lambda a, b: (a.transpose(0, 1).flatten() * b.T.flatten()).sum(),
        lambda a, b: (2.0 / (a * a + 1.0)).sum() + (a + b[0]).sum(dim=0, keepdim=True).sum(),
        lambda a, b: (a**0 + a**3).mean(),
    ],
)
def test_tensor_ops_match_torch(expression, backend, dtype, torch):
    rng = np.random.default_rng(0)
    a0, b0 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    a, b = _tensor(a0, backend, dtype), _tensor(b0, backend, dtype)
    out = expression(a, b)
    out.backward()
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a0, b0))
    expected = expression(ta, tb)
    expected.backward()
    assert out.shape == ()
    assert_close(out.data, expected.detach().numpy(), dtype=dtype)
    for ours, theirs in ((a, ta), (b, tb)):
        if theirs.grad is None:
            assert ours.grad is None
        else:
            assert_close(ours.grad, theirs.grad.numpy(), dtype=dtype)


def test_numpy_operand_on_the_left():
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    out = (np.array([3.0, 4.0]) * a + np.array([1.0, 1.0])).sum()
    out.backward()
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])


def test_gradients_accumulate_and_a_shared_input_sums():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, 4 * x.data)
    x.grad = None
    y = F.relu(x)
    (y + y * y).sum().backward()  # y used twice: its gradient is 1 + 2y
    np.testing.assert_array_equal(x.grad, 1 + 2 * x.data)


def test_no_grad_records_nothing():
    w = Tensor(np.ones((2, 1, 3, 3)), requires_grad=True)
    with no_grad():
        out = F.conv2d(np.ones((1, 1, 4, 4)), w)
        assert not portaconv.is_grad_enabled()
        with portaconv.enable_grad():
            assert portaconv.is_grad_enabled()
    assert portaconv.is_grad_enabled()
    assert isinstance(out, Tensor) and not out.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        out.sum().backward()


def test_second_backward_raises_unless_retained():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = F.tanh(x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * (1 - np.tanh(x.data) ** 2))
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


def test_backward_of_a_non_scalar_needs_grad():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"one-element output, got shape \(2,\); pass grad="):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(2,\)"):
        (x * 2.0).backward(np.ones(3))
    (x * 2.0).backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 20.0])


def test_detach_item_and_errors():
    x = Tensor(np.array([[3.0]]), requires_grad=True)
    assert x.item() == 3.0 and isinstance(x.item(), float)
    assert not x.detach().requires_grad
    with pytest.raises(ValueError, match=r"only one-element tensors.*shape \(2,\)"):
        Tensor(np.ones(2)).item()
    with pytest.raises(TypeError, match="only floating-point arrays can require gradients"):
        Tensor(np.ones(2, dtype=np.int64), requires_grad=True)
    with pytest.raises(TypeError, match="exponent must be a Python number"):
        x ** Tensor(np.ones(1))


def test_max_pool_indices_come_back_without_a_gradient():
    x = Tensor(np.arange(16.0).reshape(1, 1, 4, 4), requires_grad=True)
    out, indices = F.max_pool2d(x, 2, return_indices=True)
    assert isinstance(indices, Tensor) and not indices.requires_grad
    np.testing.assert_array_equal(indices.data, [[[[5, 7], [13, 15]]]])
    out.sum().backward()
    assert x.grad.sum() == 4.0 and x.grad[0, 0, 3, 3] == 1.0


def test_first_layer_input_gradient_is_not_computed(monkeypatch):
    """The graph asks conv2d only for the gradients its inputs need (no col2im for the data)."""
    from portaconv.functional import conv

    calls = []
    original = conv._conv2d_backward

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(conv, "_conv2d_backward", spy)
    w = Tensor(np.ones((2, 1, 3, 3)), requires_grad=True)
    F.conv2d(np.ones((1, 1, 5, 5)), w).sum().backward()
    assert [(c["input_grad"], c["weight_grad"]) for c in calls] == [(False, True)]
    assert w.grad.shape == (2, 1, 3, 3)


def test_a_frozen_weight_keeps_no_columns():
    """The graph keeps conv2d's column matrix (on the composed im2col route: the NumPy kernels fuse
    im2col into the products and keep none) only when the weight's gradient is wanted: a frozen
    layer (transfer learning) holds no im2col buffer until the backward; its input gradient is
    the explicit backward's."""
    rng = np.random.default_rng(1)
    x0, w0, g0 = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 9, 9))
    forward = F.conv2d.rule.vjp_forward
    with portaconv.options(algorithm="im2col"):
        _, (_, fused) = forward((True, True, False), x0, w0, None, 1, 1)
        assert fused == {}  # the NumPy kernel computes the columns block by block, in the cache
    with portaconv.options(algorithm="im2col", kernels="reference"):
        _, (_, frozen) = forward((True, False, False), x0, w0, None, 1, 1)
        _, (_, trained) = forward((True, True, False), x0, w0, None, 1, 1)
        assert frozen is None and len(trained) == 1  # the one column buffer, for the weight gradient
        x = Tensor(x0, requires_grad=True)
        F.conv2d(x, w0, padding=1).backward(g0)
        expected = F.conv2d_backward(g0, x0, w0, None, padding=1)[0]
    np.testing.assert_allclose(x.grad, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("limit", [1 << 28, 2048])
def test_forward_columns_serve_the_weight_gradient(monkeypatch, limit):
    """Training keeps conv2d's im2col matrix for the weight gradient (one im2col per layer per
    step) when it is one buffer under the workspace limit; a tiled convolution recomputes its
    tiles. Either way the gradients are the explicit backward's. (The composed im2col route: the
    NumPy kernels fuse im2col into the products.)"""
    from portaconv.primitives import dispatch, reference

    calls = []
    original = reference.im2col

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(reference, "im2col", counting)
    monkeypatch.setattr(dispatch, "_CHOSEN", {})  # the dispatch memoizes the functions it found
    rng = np.random.default_rng(0)
    x0, w0, g0 = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 9, 9))
    with portaconv.options(workspace_limit=limit, algorithm="im2col", kernels="reference"):
        w = Tensor(w0, requires_grad=True)
        F.conv2d(x0, w, padding=1).backward(g0)
        forward_and_backward = len(calls)
        expected = F.conv2d_backward(g0, x0, w0, None, padding=1)[1]
    np.testing.assert_allclose(w.grad, expected, rtol=1e-13, atol=1e-13)
    if limit == 1 << 28:
        assert forward_and_backward == 1
    else:
        assert forward_and_backward > 2  # tiled: each tile's columns computed in both passes


def test_tensors_on_jax(backend):
    if backend.name != "jax":
        pytest.skip("JAX only")
    x = _tensor(np.linspace(-1, 1, 6).reshape(2, 3), backend, "float64")
    loss = (F.relu(x) * 2.0)[1].sum()
    loss.backward()
    np.testing.assert_array_equal(np.asarray(x.grad), [[0, 0, 0], [2, 2, 2]])


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_graph_reuses_the_forward_statistics(training):
    """The graph keeps batch_norm's per-channel mean and inverse deviation for the backward (no
    second pass for the statistics); the gradients are the explicit backward's, bit for bit."""
    rng = np.random.default_rng(2)
    x0 = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    mean0, var0 = rng.standard_normal(3).astype(np.float32), rng.random(3).astype(np.float32) + 0.5
    w0, b0 = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    g0 = rng.standard_normal(x0.shape).astype(np.float32)
    _, (_, statistics) = F.batch_norm.rule.vjp_forward((True, False, False, True, True), x0, mean0, var0, w0, b0, training)
    assert [s.shape for s in statistics] == [(1, 3, 1, 1)] * 2
    x, w, b = (Tensor(a, requires_grad=True) for a in (x0, w0, b0))
    F.batch_norm(x, mean0, var0, w, b, training).backward(g0)
    expected = F.batch_norm_backward(g0, x0, mean0, var0, w0, b0, training)
    for got, want in zip((x.grad, w.grad, b.grad), (expected[0], expected[3], expected[4])):
        np.testing.assert_array_equal(got, want)
