"""``portaconv evaluate --dask [ADDRESS]``: a checkpoint's test loss and accuracy on a Dask cluster.

The test images are cut into blocks of 1000 (the single-process evaluation's batches), the model
is shipped once as its state dict and rebuilt on the workers by name
(:func:`portaconv.distributed.evaluate`); each worker returns two sums per block. Without an
address a ``LocalCluster`` of 2 worker processes, one thread each, is started for the call.
"""

from __future__ import annotations

import contextlib

from . import datasets, models
from .checkpoint import CheckpointError
from .train import read_trained_checkpoint

__all__ = ["evaluate_checkpoint_dask", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'portaconv[dask]'"
BATCH = 1000


def require():
    """``distributed``, or an ImportError naming the extra to install."""
    try:
        import dask.array  # noqa: F401
        import distributed
    except ImportError:
        raise ImportError(f"evaluate --dask needs dask and distributed: {INSTALL_HINT}") from None
    return distributed


@contextlib.contextmanager
def _client(address):
    distributed = require()
    if address:
        with distributed.Client(address) as client:
            yield client
        return
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def evaluate_checkpoint_dask(path, address=None, *, data_dir=None, model=None, backend="numpy"):
    """As :func:`portaconv.app.train.evaluate_checkpoint`, on a Dask cluster (NumPy or CuPy chunks)."""
    if backend not in ("numpy", "cupy"):
        raise ValueError(f"evaluate --dask: --backend {backend}: the workers take NumPy or CuPy blocks")
    checkpoint, meta = read_trained_checkpoint(path, model)
    net = models.build(meta["model"], dtype=meta["dtype"])
    try:
        net.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: does not fit a {meta['model']} network ({error})") from None
    test_set = datasets.load(meta.get("dataset", "fashion-mnist"), "test", data_dir=data_dir)
    x, y = next(datasets.batches(test_set, len(test_set), shuffle=False, backend=backend, dtype=meta["dtype"]))
    with _client(address) as client:
        import dask.array as da

        from ..distributed import evaluate

        images = da.from_array(x, chunks=(BATCH, 1, 28, 28), asarray=False)
        labels = da.from_array(y, chunks=(BATCH,), asarray=False)
        result = evaluate(net.eval(), images, labels, batch_size=BATCH, factory=meta["model"], client=client)
    return result, {**meta, "data_dir": test_set.directory}
