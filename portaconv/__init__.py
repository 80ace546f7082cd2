"""portaconv: CNN layer math written once against the Python Array API standard."""

from . import functional
from ._backend import BACKENDS, asarray, get_namespace, to_numpy
from ._config import get_workspace_limit, set_workspace_limit, tune_allocator

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "asarray",
    "functional",
    "get_namespace",
    "get_workspace_limit",
    "set_workspace_limit",
    "to_numpy",
    "tune_allocator",
    "__version__",
]
