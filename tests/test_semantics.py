"""torch's exact semantics where libraries differ: ties, NaN, -inf, indices, extreme logits."""

import numpy as np
import pytest

import portaconv
import portaconv.functional as F
from portaconv import to_numpy
from portaconv.primitives import dispatch
from portaconv.testing import assert_close, to_backend

nan, inf = np.nan, np.inf


def _torch_pool(torch, x, g, **params):
    t = torch.tensor(x, requires_grad=True)
    out, indices = torch.nn.functional.max_pool2d(t, return_indices=True, **params)
    out.backward(torch.tensor(g))
    return out.detach().numpy(), indices.numpy(), t.grad.numpy()


@pytest.mark.parametrize(
    "rows, params",
    [
        ([[1.0, 1.0, 1.0, 1.0]], {"kernel_size": (1, 4)}),  # all equal: the first wins
        ([[2.0, 5.0, 5.0, 1.0], [5.0, 0.0, 5.0, 5.0]], {"kernel_size": 2, "stride": 1}),
        ([[nan, 1.0, nan, 0.0]], {"kernel_size": (1, 4)}),  # NaN propagates; torch's index: the last NaN
        ([[1.0, nan, 3.0, 2.0], [0.0, 4.0, nan, 1.0]], {"kernel_size": 2, "stride": 1, "padding": 1}),
        ([[-inf, -inf, -inf], [-inf, -inf, -inf]], {"kernel_size": 2, "stride": 1, "padding": 1}),  # padding never wins
        ([[-inf, 1.0, -inf], [inf, -inf, inf]], {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
    ],
)
def test_max_pool_ties_nan_inf(torch, backend, rows, params):
    x = np.array(rows)[None, None]
    out, indices = F.max_pool2d(to_backend(x, backend, "float64"), return_indices=True, **params)
    g = np.arange(1.0, 1.0 + np.prod(out.shape)).reshape(out.shape)
    ref_out, ref_indices, ref_grad = _torch_pool(torch, x, g, **params)
    np.testing.assert_array_equal(to_numpy(out), ref_out)
    np.testing.assert_array_equal(to_numpy(indices), ref_indices)
    xb, gb = to_backend(x, backend, "float64"), to_backend(g, backend, "float64")
    (grad,) = F.max_pool2d_backward(gb, xb, **params)
    np.testing.assert_array_equal(to_numpy(grad), ref_grad)
    (from_indices,) = F.max_pool2d_backward(gb, xb, **params, indices=indices)
    np.testing.assert_array_equal(to_numpy(from_indices), ref_grad)


def test_max_pool_indices_random(torch, backend, dtype):
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 3, size=(2, 3, 9, 10)).astype(np.float64)
    params = {"kernel_size": (3, 2), "stride": (2, 3), "padding": (1, 1), "dilation": (2, 1), "ceil_mode": True}
    out, indices = F.max_pool2d(to_backend(x, backend, dtype), return_indices=True, **params)
    _, ref_indices, _ = _torch_pool(torch, x, np.zeros(out.shape), **params)
    np.testing.assert_array_equal(to_numpy(indices), ref_indices)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_extreme_logits(torch, backend, dtype, op):
    x = np.array([[1e4, -1e4, 0.0, 1e4], [-1e4, -1e4, -1e4, -1e4]])
    out = to_numpy(getattr(F, op)(to_backend(x, backend, dtype), 1))
    assert np.all(np.isfinite(out))
    assert_close(out, getattr(torch, op)(torch.tensor(x), 1).numpy(), dtype=dtype, what=op)
    (grad,) = getattr(F, op + "_backward")(to_backend(np.ones_like(x), backend, dtype), to_backend(x, backend, dtype), 1)
    assert np.all(np.isfinite(to_numpy(grad)))


def test_cross_entropy_extreme_logits(torch, backend, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    target = np.array([1, 2])
    loss = to_numpy(F.cross_entropy(to_backend(x, backend, dtype), to_backend(target, backend)))
    assert np.isfinite(loss)
    assert_close(loss, torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(target)).numpy(), dtype=dtype)


def test_all_targets_ignored_gives_nan_like_torch(torch, backend):
    """The mean over no kept targets is NaN, as torch's, and (like torch) without a warning."""
    import warnings

    x = np.zeros((2, 3))
    target = np.array([-100, -100])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = float(to_numpy(F.nll_loss(to_backend(x, backend, "float64"), to_backend(target, backend))))
    assert np.isnan(loss) and np.isnan(torch.nn.functional.nll_loss(torch.tensor(x), torch.tensor(target)).item())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_all_targets_ignored_gives_zero_gradient_like_torch(torch, backend, label_smoothing):
    """torch's mean loss over no kept targets is NaN, yet its gradient is zero, not NaN."""
    import warnings

    x = np.random.default_rng(0).standard_normal((2, 3))
    target = np.array([-100, -100])
    inputs = to_backend(x, backend, "float64"), to_backend(target, backend)
    grad_output = to_backend(np.asarray(1.0), backend, "float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grads = {
            "nll_loss": F.nll_loss_backward(grad_output, *inputs)[0],
            "cross_entropy": F.cross_entropy_backward(grad_output, *inputs, label_smoothing=label_smoothing)[0],
        }
    for name, grad in grads.items():
        tx = torch.tensor(x, requires_grad=True)
        kwargs = {"label_smoothing": label_smoothing} if name == "cross_entropy" else {}
        getattr(torch.nn.functional, name)(tx, torch.tensor(target), **kwargs).backward()
        np.testing.assert_array_equal(to_numpy(grad), tx.grad.numpy(), err_msg=name)
        assert not np.any(tx.grad.numpy()), "torch's gradient is zero here"


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("op, label_smoothing", [("nll_loss", 0.0), ("cross_entropy", 0.0), ("cross_entropy", 0.1)])
def test_minus_inf_scores_like_torch(torch, backend, op, label_smoothing, reduction):
    """A -inf logit or log-probability (a masked-out class) in a class that is not the target, and in
    an ignored sample, leaves the loss finite as torch's; smoothing over a -inf logit gives inf."""
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, 0.5], [2.0, 0.0, -1.0]])
    target = np.array([0, -100, 2])
    kwargs = {"label_smoothing": label_smoothing} if op == "cross_entropy" else {}
    inputs = to_backend(x, backend, "float64"), to_backend(target, backend)
    loss = getattr(F, op)(*inputs, reduction=reduction, **kwargs)
    grad_output = np.ones(tuple(loss.shape))
    grad = getattr(F, f"{op}_backward")(to_backend(grad_output, backend, "float64"), *inputs, reduction=reduction, **kwargs)[0]
    tx = torch.tensor(x, requires_grad=True)
    expected = getattr(torch.nn.functional, op)(tx, torch.tensor(target), reduction=reduction, **kwargs)
    expected.backward(torch.tensor(grad_output))
    np.testing.assert_allclose(to_numpy(loss), expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(grad), tx.grad.numpy(), rtol=1e-12, atol=1e-15)
    if label_smoothing == 0.0:
        assert np.all(np.isfinite(expected.detach().numpy())), "the case has finite torch losses"


def test_relu_nan_and_signed_zero_like_torch(torch, backend):
    # NaN stays NaN and −0.0 stays −0.0 (torch's relu is 0 where x < 0, else x).
    x = np.array([nan, -0.0, 0.0, -1.0, 2.0, -np.inf, np.inf])
    expected = torch.relu(torch.tensor(x)).numpy()
    for dtype in ("float64", "float32"):
        out = to_numpy(F.relu(to_backend(x, backend, dtype)))
        np.testing.assert_array_equal(out, expected.astype(dtype))
        np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))
    assert np.signbit(expected[1]), "torch keeps −0.0"


def test_relu_backward_at_nan_inf_and_zero_like_torch(torch, backend):
    """torch zeroes the gradient where input <= 0, so a NaN input passes its gradient."""
    x = np.array([nan, -np.inf, -0.0, 0.0, -1.0, 2.0, np.inf])
    grad_output = np.arange(1.0, 8.0)
    (grad,) = F.relu_backward(to_backend(grad_output, backend, "float64"), to_backend(x, backend, "float64"))
    tx = torch.tensor(x, requires_grad=True)
    torch.relu(tx).backward(torch.tensor(grad_output))
    np.testing.assert_array_equal(to_numpy(grad), tx.grad.numpy())
    assert tx.grad.numpy()[0] == 1.0, "torch passes the NaN input's gradient"


def test_sigmoid_no_overflow(backend):
    x = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    out = to_numpy(F.sigmoid(to_backend(x, backend, "float64")))
    np.testing.assert_allclose(out, [0.0, 4.248354255291589e-18, 0.5, 1.0, 1.0], rtol=1e-12)


def test_max_pool_window_of_padding_only(torch, backend):
    """A dilated window can hold only padding: its output is -inf and its index torch's (pointing
    outside the input); torch's backward then adds that window's gradient to the next channel, ours
    gives it to no input element."""
    x = np.arange(1.0, 5.0).reshape(1, 4, 1, 1)
    params = {"kernel_size": (4, 2), "stride": 1, "padding": (2, 1), "dilation": (1, 2)}
    out, indices = F.max_pool2d(to_backend(x, backend, "float64"), return_indices=True, **params)
    ref_out, ref_indices, _ = _torch_pool(torch, x, np.ones((1, 4, 2, 1)), **params)
    np.testing.assert_array_equal(to_numpy(out), ref_out)
    np.testing.assert_array_equal(to_numpy(indices), ref_indices)
    (grad,) = F.max_pool2d_backward(to_backend(np.ones((1, 4, 2, 1)), backend, "float64"), to_backend(x, backend, "float64"), **params)
    np.testing.assert_array_equal(to_numpy(grad), np.zeros_like(x))


def test_empty_batch_matches_torch(torch, backend, conv_algorithm, grad_input_method):
    """A batch of 0 images: outputs and gradients of torch's shapes, zero weight gradient."""
    x, w = np.zeros((0, 3, 6, 6)), np.ones((4, 3, 3, 3))
    grad = np.zeros((0, 4, 6, 6))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    out_t = torch.nn.functional.conv2d(xt, wt, padding=1)
    out_t.backward(torch.tensor(grad))
    xb, wb, gb = (to_backend(a, backend, "float64") for a in (x, w, grad))
    out = F.conv2d(xb, wb, padding=1)
    grad_input, grad_weight, _ = F.conv2d_backward(gb, xb, wb, padding=1)
    assert tuple(out.shape) == tuple(out_t.shape)
    assert tuple(grad_input.shape) == tuple(xt.grad.shape)
    np.testing.assert_array_equal(to_numpy(grad_weight), wt.grad.numpy())
    transposed = F.conv_transpose2d(gb, wb, padding=1)
    assert tuple(transposed.shape) == tuple(torch.nn.functional.conv_transpose2d(torch.tensor(grad), wt, padding=1).shape)
    back = F.conv_transpose2d_backward(to_backend(np.zeros(tuple(transposed.shape)), backend, "float64"), gb, wb, padding=1)
    assert tuple(back[0].shape) == (0, 4, 6, 6) and not np.any(to_numpy(back[1]))


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_input_pixel_stays_in_its_channel(torch, backend, conv_algorithm, bad):
    """A non-finite input pixel makes torch's weight gradient non-finite only in its own input
    channel. im2col gives torch's exact pattern; Winograd mixes the 9 taps of a (k, c) kernel in its
    transforms, so that whole channel goes non-finite, but no other (its dropped extra tiles read the
    neighbouring image and channel: they must not carry the pixel over)."""
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3))
    x[0, 1, 0, 0] = bad  # channel 1's first pixel: read by channel 0's last extra tiles
    grad = rng.standard_normal((2, 4, 7, 6))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    torch.nn.functional.conv2d(xt, wt, padding=1).backward(torch.tensor(grad))
    xb, wb, gb = (to_backend(a, backend, "float64") for a in (x, w, grad))
    with np.errstate(invalid="ignore"):  # inf · 0 in the products is the point of the test
        grad_input, grad_weight, _ = F.conv2d_backward(gb, xb, wb, padding=1)
    expected, got = wt.grad.numpy(), to_numpy(grad_weight)
    if conv_algorithm == "im2col":
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
    clean = np.isfinite(expected).all(axis=(0, 2, 3))
    assert clean.tolist() == [True, False, True]
    np.testing.assert_array_equal(np.isfinite(got).all(axis=(0, 2, 3)), clean)
    np.testing.assert_allclose(got[:, clean], expected[:, clean], rtol=1e-10, atol=1e-10)
    assert np.isfinite(to_numpy(grad_input)).all(), "the input gradient does not read the input"


@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("padding", [0, 1])
def test_non_finite_weight_gives_torchs_input_gradient_pattern(torch, backend, kernels, bad, padding):
    """A non-finite weight tap spreads to exactly the input pixels torch's does through the col2im
    input gradient, with the backend's col2im kernel and with the Array API reference. (The stride0
    path multiplies the weight by its zero padding too: NaN at the borders where torch has inf; see
    the README.)"""
    if kernels == "reference" and dispatch.family(backend.xp) is None:
        pytest.skip("no kernels on this backend: the same run as kernels='auto'")
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((4, 3, 3, 3))
    w[1, 2, 0, 2] = bad
    grad = rng.standard_normal((2, 4, 4 + 2 * padding, 5 + 2 * padding))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    torch.nn.functional.conv2d(xt, wt, padding=padding).backward(torch.tensor(grad))
    xb, wb, gb = (to_backend(a, backend, "float64") for a in (x, w, grad))
    with np.errstate(invalid="ignore"), portaconv.options(grad_input="col2im", algorithm="im2col"):
        grad_input = to_numpy(F.conv2d_backward(gb, xb, wb, padding=padding)[0])
    expected = xt.grad.numpy()
    assert not np.isfinite(expected).all() and np.isfinite(expected).any()
    np.testing.assert_array_equal(np.isnan(grad_input), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(grad_input), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(grad_input[finite], expected[finite], rtol=1e-10, atol=1e-10)
