"""portaconv: CNN layer math written once against the Python Array API standard."""

from . import functional, window
from ._backend import BACKENDS, asarray, get_namespace, to_numpy
from ._options import Options, get_options, options, set_options
from ._shapes import conv_output_size, conv_transpose_output_size, grad_input_padding, pool_output_size, same_padding

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "Options",
    "asarray",
    "conv_output_size",
    "conv_transpose_output_size",
    "functional",
    "get_namespace",
    "get_options",
    "grad_input_padding",
    "options",
    "pool_output_size",
    "same_padding",
    "set_options",
    "to_numpy",
    "window",
    "__version__",
]
