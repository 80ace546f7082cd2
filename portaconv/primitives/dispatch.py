"""Which implementation runs: every kernel registration and every "auto" rule, in one place.

A primitive (im2col, col2im, the pooling windows, ...) has one reference in
:mod:`~portaconv.primitives.reference` and at most one kernel per backend family, registered here
by the family's module when it is imported:

=========  =============================================  ==========================================
family     module                                         when
=========  =============================================  ==========================================
``numpy``  :mod:`~portaconv.primitives.numba_kernels`     numba compiles them (``cache=True``)
``cupy``   :mod:`~portaconv.primitives.cuda_kernels`      CuPy raw kernels, float32 and float64
=========  =============================================  ==========================================

torch, JAX and array-api-strict run the reference. ``portaconv.options(kernels="reference")`` (or
``reference=True``) makes every family run it too.
"""

from __future__ import annotations

import importlib
import warnings

from .._options import get_options
from . import reference
from .window import Window

__all__ = ["register", "implementation", "family", "conv_algorithm", "grad_input_method", "conv_tiles", "conv_blocks",
           "wide_rows"]

_KERNELS: dict = {}
_LOADED: dict = {}
_FAMILY_MODULES = {"numpy": "numba_kernels", "cupy": "cuda_kernels"}
_NAMESPACES = {"array_api_compat.numpy": "numpy", "array_api_compat.cupy": "cupy"}


def register(primitive: str, family_name: str, *, dtypes=("float32", "float64")):
    """Decorator: ``fn`` is ``primitive``'s kernel for ``family_name`` (same signature as the
    reference) for arrays of ``dtypes``."""
    if not hasattr(reference, primitive):
        raise ValueError(f"no reference primitive named {primitive!r}")

    def decorate(fn):
        _KERNELS[primitive, family_name] = (fn, frozenset(dtypes))
        _CHOSEN.clear()
        return fn

    return decorate


def family(xp) -> str | None:
    """The kernel family of a namespace: "numpy", "cupy", or None (runs the reference)."""
    return _NAMESPACES.get(xp.__name__)


def _load(family_name: str) -> bool:
    """Import a family's kernel module once; if it cannot be imported (numba missing or too old
    for this NumPy), warn once and run the reference."""
    loaded = _LOADED.get(family_name)
    if loaded is None:
        try:
            importlib.import_module(f"{__package__}.{_FAMILY_MODULES[family_name]}")
            loaded = True
        except ImportError as error:
            warnings.warn(
                f"portaconv: the compiled {family_name} kernels are unavailable ({error}); "
                "running the Array API reference (slower)",
                RuntimeWarning,
                stacklevel=3,
            )
            loaded = False
        _LOADED[family_name] = loaded
    return loaded


def _dtype_name(dtype) -> str:
    """"float32" from np.float32, np.dtype("float32"), torch.float32, ..."""
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1].strip("'>")


def implementation(primitive: str, xp, dtype):
    """The function that runs ``primitive`` for arrays of namespace ``xp`` and ``dtype``
    (memoized per primitive, namespace, dtype and the ``kernels`` setting: small calls are
    dominated by such host work)."""
    use_kernels = get_options().use_kernels
    key = (primitive, xp, dtype, use_kernels)
    try:
        return _CHOSEN[key]
    except (KeyError, TypeError):  # TypeError: an unhashable dtype; look it up every time
        pass
    chosen = getattr(reference, primitive)
    family_name = _NAMESPACES.get(xp.__name__)
    if family_name is not None and use_kernels and _load(family_name):
        entry = _KERNELS.get((primitive, family_name))
        if entry is not None and _dtype_name(dtype) in entry[1]:
            chosen = entry[0]
    try:
        _CHOSEN[key] = chosen
    except TypeError:
        pass
    return chosen


_CHOSEN: dict = {}


# ---- conv2d's algorithm ------------------------------------------------------------------------

def winograd_applies(window: Window, groups: int) -> bool:
    return (window.kh, window.kw, window.sh, window.sw, window.dh, window.dw, window.lh, window.lw, groups) == (
        3, 3, 1, 1, 1, 1, 1, 1, 1,
    )


def conv_algorithm(window: Window, groups: int) -> str:
    """"im2col" or "winograd" for one convolution (forward or gradient) under the options.

    auto: im2col everywhere. Winograd F(2×2, 3×3) multiplies 2.25 times less, but its transformed
    input is 4 times the input and is read and written by transforms that cost as much as the
    products they save: im2col won on every 3×3 layer measured, with the NumPy kernels and on CuPy,
    whose reference transforms are many small launches (docs/performance.md, "Measurements behind
    the design decisions"). Winograd stays available as ``options(algorithm="winograd")``, tested
    against torch like im2col.
    """
    choice = get_options().effective_algorithm
    if choice == "winograd" and winograd_applies(window, groups):
        return "winograd"
    return "im2col"


def grad_input_method() -> str:
    """"col2im" or "stride0" for conv2d's input gradient under the options. auto: col2im, the
    exact adjoint of the forward (no multiplications by the zeros stride0 inserts)."""
    choice = get_options().effective_grad_input
    return "col2im" if choice == "auto" else choice


# ---- threads -----------------------------------------------------------------------------------

# The NumPy kernels run serially below this many elements in their largest array: starting
# numba's threads costs about as much as a serial pass over this many elements (docs/performance.md).
PARALLEL_MIN_ELEMENTS = 65536

# ---- fused convolutions -----------------------------------------------------------------------

# The NumPy family's fused convolution (numba_conv) fills one block's columns per thread at a time:
# a block's buffer of about this many bytes stays in a core's L2 cache (2 MiB on the machines
# measured), and the BLAS call on it is large enough to run near BLAS's full speed (block sizes
# measured in docs/performance.md).
CONV_BLOCK_BYTES = 1 << 20


def conv_blocks(bytes_per_row: int, oh: int, batch: int, threads: int) -> tuple[int, int]:
    """(images, output rows) per block of the fused convolution, whose columns and products (or
    gathered gradients) take ``bytes_per_row`` per output row: about CONV_BLOCK_BYTES, and the threads' buffers together
    under ``workspace_limit``. Rows of one image where an image is larger, else whole images,
    as many as fit but no fewer blocks than threads."""
    budget = min(CONV_BLOCK_BYTES, get_options().workspace_limit // max(threads, 1))
    rows = max(1, budget // max(bytes_per_row, 1))
    if rows < oh:
        return 1, rows
    images = max(1, min(rows // oh, batch // max(threads, 1)))
    rounds = -(-batch // (images * threads))  # blocks per thread; then the images spread evenly
    return max(1, -(-batch // (rounds * threads))), oh


# The columns of a stride-1 convolution narrower than its input may be laid out in rows as wide as
# the input (numba_conv._runs): each tap's columns are then one contiguous copy of the input plane,
# several times cheaper per value than copying its rows one by one, but the product also computes
# the width − ow entries past each row's outputs, which are dropped (docs/performance.md, "sixth
# session"). Wide rows while those are at most this fraction of ow ("same" padding: none; seed-cnn's
# valid 3×3 layers: 2 of 11 and 2 of 26), row by row beyond (a large kernel's narrow output).
WIDE_ROWS_MAX_EXTRA = 0.25


def wide_rows(ow: int, width: int) -> bool:
    """Whether a stride-1 convolution with output width ``ow`` over an input ``width`` wide lays
    its fused columns out in rows ``width`` wide (needs ``ow <= width``)."""
    return ow <= width and width - ow <= WIDE_ROWS_MAX_EXTRA * ow


# ---- pooling windows ---------------------------------------------------------------------------

# The NumPy max-pool kernels compiled for one window geometry unroll the tap loops and vectorize
# the loop over windows, at the price of a compilation per geometry, kernel and dtype, cached on
# disk (both measured in docs/performance.md, "max_pool2d: kernels compiled for the window").
# The windows networks use get their own; the rest share the kernel that takes the geometry at
# run time.
SPECIALIZED_POOL_WINDOWS = frozenset({(2, 2, 2, 2), (2, 2, 1, 1), (3, 3, 2, 2), (3, 3, 1, 1)})  # (kh, kw, sh, sw)


# The NumPy max-pool forward takes the windows inside the input one position at a time on this many
# planes (channels of all images) together: that loop is long enough for LLVM to vectorize, which
# makes it branch-free, and this many planes' rows under one window stay in L2 (ResNet's 112² planes:
# 64 · 3 rows of 448 B). Fewer planes leave the loop too short to vectorize (the block sizes
# compared: docs/performance.md, "ninth session").
POOL_PLANES = 64


def specialize_pool_window(kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, lh: int, lw: int) -> bool:
    """Whether the NumPy max-pool kernels are compiled for this window's geometry (undilated)."""
    return (kh, kw, sh, sw) in SPECIALIZED_POOL_WINDOWS and dh == dw == lh == lw == 1


# ---- memory ------------------------------------------------------------------------------------


def conv_tiles(batch: int, channels: int, window: Window, itemsize: int) -> tuple[int, int, int]:
    """(images, output rows, kernel rows) per im2col column buffer so that one buffer of
    ``channels·kh'·kw × images·rows·ow`` elements stays under ``workspace_limit``: the batch is
    split first, then (one image too large) the output rows, then (one output row too large) the
    kernel rows, whose partial products are summed. One kernel row of one output row is the floor.
    """
    limit = get_options().workspace_limit
    per_row = channels * window.kw * window.ow * itemsize  # one output row, one kernel row
    per_image = per_row * window.kh * window.oh
    if per_image <= limit:
        return max(1, min(batch, limit // max(per_image, 1))), window.oh, window.kh
    if per_row * window.kh <= limit:
        return 1, max(1, limit // (per_row * window.kh)), window.kh
    return 1, 1, max(1, limit // per_row)
