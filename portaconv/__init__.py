"""portaconv: CNN layer math written once against the Python Array API standard."""

from . import functional, window
from ._backend import BACKENDS, asarray, get_namespace, to_numpy
from ._config import get_workspace_limit, set_workspace_limit, tune_allocator
from ._threads import get_num_threads, set_num_threads
from ._shapes import conv_output_size, conv_transpose_output_size, grad_input_padding, pool_output_size, same_padding

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "asarray",
    "conv_output_size",
    "conv_transpose_output_size",
    "grad_input_padding",
    "pool_output_size",
    "same_padding",
    "functional",
    "window",
    "get_namespace",
    "get_num_threads",
    "set_num_threads",
    "get_workspace_limit",
    "set_workspace_limit",
    "to_numpy",
    "tune_allocator",
    "__version__",
]
