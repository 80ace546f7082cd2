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


@pytest.mark.parametrize(
    "kh, sh, dh, top, oh, height, lh",
    [(3, 1, 1, 1, 6, 6, 1), (4, 2, 1, 0, 3, 8, 1), (3, 2, 3, 2, 4, 9, 1), (2, 3, 2, -2, 3, 12, 1), (3, 1, 1, 2, 7, 3, 2)],
)
def test_window_tiles_read_the_same_pixels(kh, sh, dh, top, oh, height, lh):
    """Window geometry (pure ints): tap i of output a reads virtual row a·sh + i·dh − top, inside the
    frame, and a tile of output rows or a block of kernel rows reads exactly the rows the whole
    window reads there (the workspace tiling relies on it). Columns use the same arithmetic."""
    from portaconv.primitives.window import Window, extent

    w = Window(kh, 1, sh, 1, dh, 1, top, 0, oh, 1, lh, 1)

    def virtual(window, a, i):
        return a * window.sh + i * window.dh - window.top

    frame_top, frame_bottom, _, _ = w.frame(height, 1)
    row0, _ = w.origin()
    dilated = (height - 1) * lh + 1
    assert frame_top >= 0 and frame_bottom >= 0
    assert extent(oh, sh, kh, dh) == (oh - 1) * sh + (kh - 1) * dh + 1
    for a in range(oh):
        for i in range(kh):
            frame_row = a * sh + i * dh + row0
            assert 0 <= frame_row < frame_top + dilated + frame_bottom, "every tap lies inside the frame"
            assert frame_row - frame_top == virtual(w, a, i), "frame row = virtual row + the frame's top padding"
    last = (oh - 1) * sh + (kh - 1) * dh + row0
    assert frame_bottom == 0 or last == frame_top + dilated + frame_bottom - 1, "the frame is just large enough"
    for start, stop in itertools.combinations(range(oh + 1), 2):
        tile = w.output_rows(start, stop)
        assert tile.oh == stop - start
        assert all(virtual(tile, a - start, i) == virtual(w, a, i) for a in range(start, stop) for i in range(kh))
    for start, stop in itertools.combinations(range(kh + 1), 2):
        block = w.kernel_rows(start, stop)
        assert block.kh == stop - start and block.taps == (stop - start) * w.kw
        assert all(virtual(block, a, i - start) == virtual(w, a, i) for a in range(oh) for i in range(start, stop))
    nested = w.output_rows(1, oh).kernel_rows(1, kh) if oh > 1 and kh > 1 else w
    if nested is not w:
        assert all(virtual(nested, a - 1, i - 1) == virtual(w, a, i) for a in range(1, oh) for i in range(1, kh))
