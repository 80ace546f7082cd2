"""The one window description shared by convolution, transposed convolution and pooling.

Pure ints, no arrays. Output position ``(a, b)`` and kernel tap ``(i, j)`` read the input at the
*virtual* coordinates ``v = a·sh + i·dh − top``, ``u = b·sw + j·dw − left`` of the input dilated
by ``(lh, lw)`` (``lh − 1`` zeros between rows: the "stride0" of a gradient). The virtual row
``v`` is input row ``v / lh`` when ``lh`` divides it and ``0 ≤ v / lh < H``; anything else is
padding. ``top`` and ``left`` may be negative (rows cropped off the front).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["Window", "extent"]


def extent(out: int, stride: int, kernel: int, dilation: int) -> int:
    """Rows (or columns) the windows of ``out`` outputs span: ``(out − 1)·stride + (kernel − 1)·dilation + 1``."""
    return (out - 1) * stride + (kernel - 1) * dilation + 1


@dataclass(frozen=True)
class Window:
    """Geometry of a windowed op along both spatial axes (see the module docstring)."""

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    top: int
    left: int
    oh: int
    ow: int
    lh: int = 1
    lw: int = 1

    def __post_init__(self):
        # The geometry is a key of several per-call caches: hash its fields once.
        object.__setattr__(self, "_hash", hash(tuple(vars(self).values())))  # (the fields, in order)

    def __hash__(self) -> int:
        return self._hash

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    def frame(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding, each ≥ 0, of the *frame*: the dilated input padded
        just enough that every window lies inside it. Tap ``(i, j)`` of output ``(a, b)`` is frame
        pixel ``(a·sh + i·dh + row0, b·sw + j·dw + col0)`` with ``(row0, col0) = self.origin(...)``."""
        rows = extent(self.oh, self.sh, self.kh, self.dh)
        cols = extent(self.ow, self.sw, self.kw, self.dw)
        top, left = max(self.top, 0), max(self.left, 0)
        bottom = max(rows - self.top - ((height - 1) * self.lh + 1), 0)
        right = max(cols - self.left - ((width - 1) * self.lw + 1), 0)
        return top, bottom, left, right

    def origin(self) -> tuple[int, int]:
        """Frame row and column of output (0, 0)'s first tap."""
        return max(self.top, 0) - self.top, max(self.left, 0) - self.left

    def output_rows(self, start: int, stop: int) -> "Window":
        """The window of output rows ``start:stop`` only (a tile of the output)."""
        if (start, stop) == (0, self.oh):
            return self
        return replace(self, top=self.top - start * self.sh, oh=stop - start)

    def kernel_rows(self, start: int, stop: int) -> "Window":
        """The window of kernel rows ``start:stop`` only (a slice of the reduction)."""
        if (start, stop) == (0, self.kh):
            return self
        return replace(self, top=self.top - start * self.dh, kh=stop - start)
