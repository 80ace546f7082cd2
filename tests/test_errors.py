"""Bad input raises ValueError/TypeError naming the argument, the shapes and what was expected."""

import numpy as np
import pytest

import portaconv.functional as F

rng = np.random.default_rng(0)
x = rng.standard_normal((2, 4, 8, 8))
w = rng.standard_normal((6, 4, 3, 3))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: F.conv2d(x[0, 0], w), ValueError, r"input must be 3-D or 4-D .*got shape \(8, 8\)"),
        (lambda: F.conv2d(x, w[0]), ValueError, r"weight must be 4-D .*got shape \(4, 3, 3\)"),
        (lambda: F.conv2d(x, w[:, :3]), ValueError, r"expects 3 input channels .*has 4"),
        (lambda: F.conv2d(x, w[:, :2], groups=3), ValueError, r"groups=3 must divide .*input channels \(4\)"),
        (lambda: F.conv2d(x, w[:, :2], groups=2, bias=np.zeros(5)), ValueError, r"bias must have shape \(6,\), got \(5,\)"),
        (lambda: F.conv2d(x, w, groups=0), ValueError, r"groups must be a positive int, got 0"),
        (lambda: F.conv2d(x, rng.standard_normal((2, 4, 11, 3))), ValueError, r"kernel size \(11, 3\).*larger than the padded input \(8, 8\)"),
        (lambda: F.conv2d(x, w, dilation=5), ValueError, r"spans \(11, 11\), larger than the padded input"),
        (lambda: F.conv2d(x, w, stride=0), ValueError, r"stride must be positive, got 0"),
        (lambda: F.conv2d(x, w, stride=(1, -2)), ValueError, r"stride must be positive"),
        (lambda: F.conv2d(x, w, dilation=(0, 1)), ValueError, r"dilation must be positive"),
        (lambda: F.conv2d(x, w, padding=-1), ValueError, r"padding must be at least 0, got -1"),
        (lambda: F.conv2d(x, w, padding="full"), ValueError, r"padding must be an int, a pair of ints, 'valid' or 'same', got 'full'"),
        (lambda: F.conv2d(x, w, padding="same", stride=2), ValueError, r"padding='same' needs stride 1"),
        (lambda: F.conv2d(x, w, stride=1.5), TypeError, r"stride must be an int or a pair of ints, got 1.5"),
        (lambda: F.conv2d(x, w, stride=True), TypeError, r"stride must be an int or a pair of ints"),
        (lambda: F.conv2d(x.astype(np.int64), w.astype(np.int64)), TypeError, r"input must have a real floating dtype.*int64"),
        (lambda: F.conv2d(x > 0, w), TypeError, r"input must have a real floating dtype.*bool"),
        (lambda: F.conv2d(x.astype(np.float16), w.astype(np.float16)), TypeError, r"conv2d: input must have a real floating dtype \(float32 or float64\), got float16"),
        (lambda: F.relu(x.astype(np.float16)), TypeError, r"relu: input must have a real floating dtype \(float32 or float64\), got float16"),
        (lambda: F.conv2d(x, w.astype(np.float32)), TypeError, r"weight has dtype float32 but input has dtype float64"),
        (lambda: F.conv2d(x.tolist(), w), TypeError, r"expected an array, got list"),
        (lambda: F.conv2d_backward(np.zeros((2, 6, 5, 5)), x, w), ValueError, r"grad_output has shape \(2, 6, 5, 5\), expected \(2, 6, 6, 6\)"),
        (lambda: F.conv2d_grad_input(np.zeros((2, 6, 6, 6)), w, input_shape=(2, 4, 8)), ValueError, r"input_shape must be \(N, C, H, W\)"),
        (lambda: F.conv2d_grad_weight(np.zeros((2, 6, 6, 6)), x, weight_shape=(6, 4, 3, 3), stride=2), ValueError, r"grad_output has shape \(2, 6, 6, 6\), expected \(2, 6, 3, 3\)"),
        (lambda: F.conv_transpose2d(x, w, stride=2, output_padding=2), ValueError, r"output_padding \(2, 2\) must be smaller than stride \(2, 2\) or dilation \(1, 1\)"),
        (lambda: F.conv_transpose2d(x, w, output_padding=-1), ValueError, r"output_padding must be at least 0"),
        (lambda: F.conv_transpose2d(x, w[:3]), ValueError, r"expects 3 input channels"),
        (lambda: F.conv_transpose2d(x, rng.standard_normal((6, 3, 3, 3))), ValueError, r"expects 6 input channels .*weight.shape\[0\].*has 4"),
        (lambda: F.conv_transpose2d(x, w[:4], padding="same"), ValueError, r"padding must be an int or a pair of ints, got 'same'"),
        (lambda: F.conv_transpose2d(x[:, :, :1, :1], w[:4], padding=2), ValueError, r"output size \(-1, -1\) is not positive"),
        (lambda: F.conv_transpose2d(x, w[:4], groups=3), ValueError, r"groups=3 must divide"),
        (lambda: F.max_pool2d(x, 3, padding=2), ValueError, r"padding \(2, 2\) must be at most half the kernel size \(3, 3\)"),
        (lambda: F.max_pool2d(x, 0), ValueError, r"kernel_size must be positive, got 0"),
        (lambda: F.max_pool2d(x, 3, stride=0), ValueError, r"stride must be positive"),
        (lambda: F.max_pool2d(x, 9), ValueError, r"kernel size \(9, 9\).*larger than the padded input \(8, 8\)"),
        (lambda: F.max_pool2d(x, 2, dilation=0), ValueError, r"dilation must be positive"),
        (lambda: F.max_pool2d(x[0, 0], 2), ValueError, r"input must be 3-D or 4-D.*got shape \(8, 8\)"),
        (lambda: F.max_pool2d_backward(np.zeros((2, 4, 3, 3)), x, 2), ValueError, r"grad_output has shape \(2, 4, 3, 3\), expected \(2, 4, 4, 4\)"),
        (lambda: F.max_pool2d_backward(np.zeros((2, 4, 4, 4)), x, 2, indices=np.zeros((2, 4, 4, 4))), TypeError, r"indices must have an integer dtype"),
        (lambda: F.avg_pool2d(x, 2, padding=2), ValueError, r"at most half the kernel size"),
        (lambda: F.avg_pool2d(x, 2, divisor_override=0), ValueError, r"divisor_override must be a non-zero int"),
        (lambda: F.local_response_norm(x, 0), ValueError, r"size must be an int >= 1, got 0"),
        (lambda: F.local_response_norm(x[0, 0], 2), ValueError, r"at least 3 dims .*\(8, 8\)"),
        (lambda: F.linear(np.zeros((2, 5)), np.zeros((3, 4))), ValueError, r"must end in in_features=4"),
        (lambda: F.linear(np.zeros((2, 4)), np.zeros((3, 4)), np.zeros(4)), ValueError, r"bias must have shape \(3,\)"),
        (lambda: F.softmax(np.zeros((2, 4)), 2), ValueError, r"dim=2 is out of range"),
        (lambda: F.flatten(x, 3, 1), ValueError, r"start_dim=3 comes after end_dim=1"),
        (lambda: F.nll_loss(np.zeros((3, 4)), np.array([0, 4, 1])), ValueError, r"target value 4 is out of range for 4 classes"),
        (lambda: F.nll_loss(np.zeros((3, 4)), np.array([0, -3, 1])), ValueError, r"target value -3 is out of range"),
        (lambda: F.cross_entropy(np.zeros((3, 4)), np.array([0.0, 1.0, 1.0])), TypeError, r"target must hold integer class indices, got dtype float64"),
        (lambda: F.cross_entropy(np.zeros((3, 4)), np.array([0, 1])), ValueError, r"target has shape \(2,\), expected \(3,\)"),
        (lambda: F.cross_entropy(np.zeros((3, 4)), np.array([0, 1, 2]), reduction="avg"), ValueError, r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"),
        (lambda: F.cross_entropy(np.zeros((3, 4)), np.array([0, 1, 2]), label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0, 1\]"),
        (lambda: F.nll_loss_backward(np.zeros(3), np.zeros((3, 4)), np.array([0, 1, 2])), ValueError, r"grad_output has shape \(3,\), expected \(\)"),
    ],
)
def test_bad_input_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_mixed_libraries_named(torch):
    with pytest.raises(TypeError, match="numpy and torch"):
        F.conv2d(x, torch.tensor(w))


def test_mixed_devices():
    """Devices are compared: a fake second device is rejected before any computation."""
    import array_api_strict as xs

    a = xs.asarray(x)
    b = xs.asarray(w, device=xs.Device("device1"))
    with pytest.raises(ValueError, match="weight is on device .*device1.* but input is on"):
        F.conv2d(a, b)


_SETTINGS = "['algorithm', 'grad_input', 'kernels', 'reference', 'workspace_limit', 'num_threads']"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"algorithm": "fft"}, "portaconv.options: algorithm must be one of ('auto', 'im2col', 'winograd'), got 'fft'"),
        ({"grad_input": "direct"}, "portaconv.options: grad_input must be one of ('auto', 'col2im', 'stride0'), got 'direct'"),
        ({"kernels": "fast"}, "portaconv.options: kernels must be one of ('auto', 'reference'), got 'fast'"),
        ({"bogus": 1}, f"portaconv.options: unknown setting(s) ['bogus']; the settings are {_SETTINGS}"),
        ({"workspace_limit": 0}, "portaconv.options: workspace_limit must be a positive number of bytes, got 0"),
        ({"workspace_limit": -5}, "portaconv.options: workspace_limit must be a positive number of bytes, got -5"),
        ({"workspace_limit": 1.5}, "portaconv.options: workspace_limit must be a positive number of bytes, got 1.5"),
        ({"workspace_limit": True}, "portaconv.options: workspace_limit must be a positive number of bytes, got True"),
        ({"num_threads": 0}, "portaconv.options: num_threads must be a positive int or None, got 0"),
        ({"num_threads": True}, "portaconv.options: num_threads must be a positive int or None, got True"),
        ({"reference": "yes"}, "portaconv.options: reference must be True or False, got 'yes'"),
        ({"reference": 1}, "portaconv.options: reference must be True or False, got 1"),
    ],
    ids=lambda v: ",".join(f"{k}={value!r}" for k, value in v.items()) if isinstance(v, dict) else "message",
)
def test_unknown_algorithm_settings(changes, message):
    """Unknown settings and values are rejected with their exact message, by ``options`` when the
    block is entered and by ``set_options``, and neither leaves anything changed."""
    import re

    import portaconv

    before = portaconv.get_options()
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        with portaconv.options(**changes):
            pytest.fail("the block must not run")  # pragma: no cover
    assert portaconv.get_options() == before
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        portaconv.set_options(**changes)
    assert portaconv.get_options() == before
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))
    assert F.conv2d_backward(np.zeros((1, 3, 3, 3)), x, w)[0].shape == x.shape, "the defaults still run"
