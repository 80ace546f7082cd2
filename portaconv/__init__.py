"""portaconv: CNN layer math written once against the Python Array API standard."""

from . import functional, window
from ._backend import BACKENDS, asarray, get_namespace, to_numpy
from ._options import Options, get_options, options, set_options
from ._random import manual_seed
from .autograd import Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from ._shapes import conv_output_size, conv_transpose_output_size, grad_input_padding, pool_output_size, same_padding

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "Options",
    "Tensor",
    "asarray",
    "conv_output_size",
    "conv_transpose_output_size",
    "enable_grad",
    "functional",
    "get_namespace",
    "get_options",
    "grad_input_padding",
    "is_grad_enabled",
    "manual_seed",
    "no_grad",
    "options",
    "pool_output_size",
    "same_padding",
    "set_grad_enabled",
    "set_options",
    "to_numpy",
    "window",
    "__version__",
]
