"""Shape arithmetic: pure-int helpers, no arrays. Every formula follows torch.nn.functional."""

from __future__ import annotations

import numbers

__all__ = [
    "conv_output_size",
    "conv_transpose_output_size",
    "pool_output_size",
    "same_padding",
    "grad_input_padding",
]


def _is_int(value) -> bool:
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _pair(value, name: str, *, minimum: int | None = None) -> tuple[int, int]:
    """Normalize an int, a one-element or a two-element tuple/list of ints to a 2-tuple, checking
    the lower bound. ``(k,)`` means ``k`` on both axes, as torch's ``_pair``-style arguments
    accept. Ints include NumPy integer scalars (``numbers.Integral``), never bools."""
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) in (1, 2) and all(_is_int(v) for v in value):
        pair = (int(value[0]), int(value[-1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if minimum is not None and min(pair) < minimum:
        bound = "positive" if minimum == 1 else f"at least {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return pair


def same_padding(kernel_size: int, dilation: int = 1) -> tuple[int, int]:
    """(low, high) padding that keeps a stride-1 output the size of the input.

    torch puts the odd pixel of an even total padding ``dilation * (kernel_size - 1)`` at the end.
    """
    total = dilation * (kernel_size - 1)
    return total // 2, total - total // 2


def _padding4(padding, kernel_size, dilation, stride) -> tuple[int, int, int, int]:
    """Normalize conv padding to (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
            return same_padding(kernel_size[0], dilation[0]) + same_padding(kernel_size[1], dilation[1])
        raise ValueError(f"padding must be an int, a pair of ints, 'valid' or 'same', got {padding!r}")
    ph, pw = _pair(padding, "padding", minimum=0)
    return (ph, ph, pw, pw)


def conv_output_size(size: int, kernel_size: int, *, stride: int = 1, padding=0, dilation: int = 1) -> int:
    """Output length of a convolution along one axis.

    ``floor((size + low + high - dilation * (kernel_size - 1) - 1) / stride) + 1``, where
    ``padding`` is an int (both sides) or a ``(low, high)`` pair. Returns a value < 1 when the
    kernel does not fit.
    """
    low, high = (padding, padding) if _is_int(padding) else padding
    return (size + low + high - dilation * (kernel_size - 1) - 1) // stride + 1


def conv_transpose_output_size(
    size: int, kernel_size: int, *, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a transposed convolution along one axis.

    ``(size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1``.
    """
    return (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1


def pool_output_size(
    size: int, kernel_size: int, *, stride: int, padding: int = 0, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Output length of max/avg pooling along one axis (torch's ``pooling_output_shape``).

    With ``ceil_mode`` the division rounds up, but a last window that would start in the right
    padding (past ``size + padding``) is dropped.
    """
    span = size + 2 * padding - dilation * (kernel_size - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def grad_input_padding(
    size: int, out_size: int, kernel_size: int, *, stride: int = 1, padding_low: int = 0, dilation: int = 1
) -> tuple[int, int]:
    """(low, high) padding of the stride0'd gradient in the input-gradient convolution.

    The forward reads ``x_padded[o * stride + i * dilation]``; with the kernel rotated by 180° the
    input gradient is a stride-1 convolution of ``stride0(grad_output)`` (length
    ``(out_size - 1) * stride + 1``) padded by ``dilation * (kernel_size - 1) - padding_low`` in
    front and, at the back, by whatever fills it to ``size + dilation * (kernel_size - 1)``: that
    includes the rows a stride skipped at the far edge. Negative values mean cropping.
    """
    low = dilation * (kernel_size - 1) - padding_low
    high = size + padding_low - (out_size - 1) * stride - 1
    return low, high
