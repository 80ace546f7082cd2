"""Pure-int shape helpers, checked by hand values and against torch's output shapes."""

import itertools

import pytest

from portaconv import conv_output_size, conv_transpose_output_size, grad_input_padding, pool_output_size, same_padding
from portaconv._shapes import _pair, _padding4


def test_hand_values():
    assert conv_output_size(28, 3) == 26
    assert conv_output_size(17, 5, stride=3) == 5
    assert conv_output_size(19, 5, stride=3, padding=7) == 10
    assert conv_output_size(10, 3, padding=(0, 2)) == 10
    assert conv_output_size(5, 7) == -1
    assert conv_transpose_output_size(5, 3, stride=2, padding=1, output_padding=1) == 10
    assert pool_output_size(8, 3, stride=2) == 3
    assert pool_output_size(8, 3, stride=2, ceil_mode=True) == 4
    # ceil_mode drops a last window that would start in the right padding
    assert pool_output_size(5, 2, stride=2, padding=1, ceil_mode=True) == 3
    assert same_padding(3) == (1, 1)
    assert same_padding(4) == (1, 2)
    assert same_padding(4, dilation=2) == (3, 3)
    assert grad_input_padding(7, 3, 3, stride=2, padding_low=0) == (2, 2)
    assert grad_input_padding(8, 3, 3, stride=2, padding_low=0) == (2, 3)  # one row skipped at the end
    assert grad_input_padding(5, 9, 3, stride=1, padding_low=3) == (-1, -1)  # crop: padding > kernel span


def test_pair_and_padding_errors():
    assert _pair(3, "k") == (3, 3)
    assert _pair((2, 5), "k") == (2, 5)
    with pytest.raises(TypeError, match=r"k must be an int or a pair of ints, got \(1, 2, 3\)"):
        _pair((1, 2, 3), "k")
    with pytest.raises(ValueError, match="k must be positive, got 0"):
        _pair(0, "k", minimum=1)
    assert _padding4("same", (4, 3), (1, 2), (1, 1)) == (1, 2, 2, 2)
    assert _padding4((1, 2), (3, 3), (1, 1), (2, 2)) == (1, 1, 2, 2)


def test_against_torch(torch):
    for size, kernel, stride, padding, dilation in itertools.product(range(1, 12), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        inp = torch.zeros(1, 1, size, 1)
        w = torch.zeros(1, 1, kernel, 1)
        expected = conv_output_size(size, kernel, stride=stride, padding=padding, dilation=dilation)
        if expected < 1:
            with pytest.raises(RuntimeError):
                torch.nn.functional.conv2d(inp, w, stride=stride, padding=padding, dilation=dilation)
            continue
        assert torch.nn.functional.conv2d(inp, w, stride=stride, padding=padding, dilation=dilation).shape[2] == expected
        for output_padding in range(max(stride, dilation)):
            out = conv_transpose_output_size(size, kernel, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
            if out < 1:
                continue
            transposed = torch.nn.functional.conv_transpose2d(
                inp, w, stride=(stride, 1), padding=(padding, 0), output_padding=(output_padding, 0), dilation=(dilation, 1)
            )
            assert transposed.shape[2] == out
        if padding <= kernel // 2:
            for ceil_mode in (False, True):
                pooled = pool_output_size(size, kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
                if pooled < 1:
                    continue
                got = torch.nn.functional.max_pool2d(inp, (kernel, 1), (stride, 1), (padding, 0), (dilation, 1), ceil_mode)
                assert got.shape[2] == pooled


def test_batch_ranges(monkeypatch):
    """Batch parts for the NumPy threads: contiguous, covering, balanced; None when not worth it."""
    pytest.importorskip("threadpoolctl")
    from portaconv import _threads

    monkeypatch.setattr(_threads, "_num_threads", 3)
    assert _threads.batch_ranges(10, 10**9) == [(0, 3), (3, 6), (6, 10)]
    assert _threads.batch_ranges(2, 10**9) == [(0, 1), (1, 2)], "never more parts than images"
    assert _threads.batch_ranges(1, 10**9) is None
    assert _threads.batch_ranges(10, _threads._MIN_WORK - 1) is None, "too small to hand off"
    monkeypatch.setattr(_threads, "_num_threads", 1)
    assert _threads.batch_ranges(10, 10**9) is None


@pytest.mark.parametrize("height, width, top, left", [(5, 6, 0, 0), (6, 5, 1, 2), (1, 1, 1, 1), (7, 4, 2, 1)])
def test_winograd_parity_slices(height, width, top, left):
    """Every input pixel lands in exactly one parity plane, at cell (y // 2, x // 2) of its padded
    position (y, x) = (h + top, w + left)."""
    import numpy as np

    from portaconv.functional._winograd import _parity_slices

    seen = np.zeros((height, width), dtype=int)
    for rp, cp, (rows, cols), (cell_rows, cell_cols) in _parity_slices(height, width, top, left):
        hs, ws = range(height)[rows], range(width)[cols]
        assert len(hs) == cell_rows.stop - cell_rows.start and len(ws) == cell_cols.stop - cell_cols.start
        for i, h in enumerate(hs):
            assert (h + top) % 2 == rp and (h + top) // 2 == cell_rows.start + i
        for j, w in enumerate(ws):
            assert (w + left) % 2 == cp and (w + left) // 2 == cell_cols.start + j
        seen[rows, cols] += 1
    assert (seen == 1).all()
