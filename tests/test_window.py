"""The public building blocks: pad, stride0, rot180, im2col, col2im."""

import numpy as np
import pytest

from portaconv import to_numpy
from portaconv.primitives import dispatch
from portaconv.testing import to_backend
from portaconv.window import col2im, im2col, pad, rot180, stride0


def test_pad_and_crop(backend):
    x = np.arange(12.0).reshape(1, 3, 4)
    xb = to_backend(x, backend, "float64")
    np.testing.assert_array_equal(to_numpy(pad(xb, (1, 0, 2, 1))), np.pad(x, ((0, 0), (1, 0), (2, 1))))
    np.testing.assert_array_equal(to_numpy(pad(xb, 1, value=-np.inf)), np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf))
    np.testing.assert_array_equal(to_numpy(pad(xb, (-1, 0, 1, -2))), np.pad(x[:, 1:, :2], ((0, 0), (0, 0), (1, 0))))
    with pytest.raises(ValueError, match="crops more than the shape"):
        pad(xb, (-2, -2, 0, 0))


def test_stride0(backend):
    x = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)
    out = to_numpy(stride0(to_backend(x, backend, "float64"), (2, 3)))
    expected = np.zeros((1, 1, 3, 7))
    expected[..., ::2, ::3] = x
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="stride must be positive"):
        stride0(to_backend(x, backend, "float64"), 0)


def test_rot180(backend):
    x = np.arange(24.0).reshape(2, 1, 3, 4)
    np.testing.assert_array_equal(to_numpy(rot180(to_backend(x, backend, "float64"))), x[..., ::-1, ::-1])


@pytest.mark.parametrize("kernel, stride, padding, dilation", [(3, 1, 0, 1), ((2, 3), (2, 1), (1, 2), (1, 2)), (4, 3, 2, 1)])
def test_im2col_col2im_match_torch_unfold_fold(torch, backend, kernels, kernel, stride, padding, dilation):
    """As torch's unfold and fold, with the backend's kernels and with the Array API reference."""
    if kernels == "reference" and dispatch.family(backend.xp) is None:
        pytest.skip("no kernels on this backend: the same run as kernels='auto'")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 8))
    cols = to_numpy(im2col(to_backend(x, backend, "float64"), kernel, stride=stride, padding=padding, dilation=dilation))
    unfolded = torch.nn.functional.unfold(torch.tensor(x), kernel, dilation, padding, stride).numpy()  # (N, C*k, L)
    np.testing.assert_allclose(cols, unfolded.transpose(1, 0, 2).reshape(cols.shape))
    c = rng.standard_normal(cols.shape)
    folded = torch.nn.functional.fold(
        torch.tensor(c.reshape(cols.shape[0], 2, -1).transpose(1, 0, 2).copy()), x.shape[2:], kernel, dilation, padding, stride
    ).numpy()
    back = to_numpy(col2im(to_backend(c, backend, "float64"), x.shape, kernel, stride=stride, padding=padding, dilation=dilation))
    np.testing.assert_allclose(back, folded, atol=1e-12)


def test_im2col_errors():
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\), got shape \(3, 4\)"):
        im2col(np.zeros((3, 4)), 2)
    with pytest.raises(ValueError, match=r"larger than the padded input \(4, 4\)"):
        im2col(np.zeros((1, 1, 4, 4)), 5)
    with pytest.raises(ValueError, match=r"cols has shape \(4, 9\), expected \(4, 4\)"):
        col2im(np.zeros((4, 9)), (1, 1, 3, 3), 2)
