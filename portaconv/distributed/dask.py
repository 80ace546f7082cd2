"""Batch inference and evaluation over a Dask cluster (``dask.array`` of NumPy or CuPy chunks).

The model goes to the cluster once per call: pickled whole (any picklable portaconv model), or
as a NumPy state dict with a picklable factory that rebuilds it (a built-in model's name, or a
callable). With a ``distributed.Client`` active (or passed) the payload is ``client.scatter``-ed
to every worker once; otherwise it is one task of the graph (a ``dask.delayed``), shared by all
blocks. Each worker process builds the model once per call, in eval mode, and reuses it for
every block; the caller's model is never touched (not even its train/eval mode).
"""

from __future__ import annotations

import pickle
import threading
import uuid
from collections import OrderedDict

import numpy as np

from .._backend import backend_name, get_namespace, namespace_of, to_numpy
from ..autograd import Tensor

__all__ = ["predict", "evaluate"]

INSTALL_HINT = "pip install 'portaconv[dask]'"

_models = OrderedDict()  # (token, backend) -> model, on each worker process
_models_lock = threading.Lock()
_KEEP = 4


def _dask_array():
    try:
        import dask.array as da
    except ImportError as error:
        raise ImportError(f"portaconv.distributed.predict needs dask[array] ({error}); install it with {INSTALL_HINT}") from error
    return da


def _current_client(client):
    """``client``, else the active ``distributed.Client``, else None (dask's local scheduler)."""
    if client is not None:
        return client
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:  # no client
        return None


# -- the model's payload ---------------------------------------------------------------------------
def _model_dtype(model) -> str:
    parameters = model.parameters()
    if not parameters:
        raise ValueError("predict: the model has no parameters to take a dtype from")
    return str(parameters[0].data.dtype).rsplit(".", 1)[-1]


def _payload(model, factory):
    """What the workers get: ``("pickle", bytes)`` or ``("factory", factory, dtype, state)``."""
    if factory is None:
        return ("pickle", pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    if isinstance(factory, str):
        from ..app import models

        if factory not in models.MODELS:
            raise ValueError(f"predict: factory {factory!r} is not a built-in model; available: {sorted(models.MODELS)}")
    elif not callable(factory):
        raise TypeError(f"predict: factory must be a built-in model's name or a picklable callable, got {type(factory).__name__}")
    state = {key: to_numpy(value) for key, value in model.state_dict().items()}
    return ("factory", factory, _model_dtype(model), state)


def _build(payload):
    if payload[0] == "pickle":
        return pickle.loads(payload[1])
    _, factory, dtype, state = payload
    if isinstance(factory, str):
        from ..app import models

        model = models.build(factory, dtype=dtype)
    else:
        model = factory()
    model.load_state_dict(state)
    return model


def _worker_model(payload, token, backend):
    """The model of call ``token`` on ``backend``, built once per worker process, in eval mode."""
    key = (token, backend)
    with _models_lock:
        if key not in _models:
            model = _build(payload)
            if backend_name(model.parameters()[0].data) != backend:
                model.to(backend)
            _models[key] = model.eval()
            while len(_models) > _KEEP:
                _models.popitem(last=False)
        return _models[key]


def _predict_block(block, payload, token, dtype):
    from ..autograd import no_grad

    model = _worker_model(payload, token, backend_name(block))
    xp = namespace_of(block)
    x = xp.asarray(block, dtype=getattr(xp, dtype))
    with no_grad():
        out = model(x)
    return out.data if isinstance(out, Tensor) else out


# -- the graph -------------------------------------------------------------------------------------
def _as_dask(array, batch_size):
    da = _dask_array()
    if isinstance(array, da.Array):
        return array
    return da.from_array(array, chunks=(batch_size,) + tuple(array.shape[1:]), asarray=False)


def _probe(model, images, dtype):
    """The model's output shape after the batch axis and dtype, from one zero sample on the caller."""
    from ..autograd import no_grad

    data = model.parameters()[0].data
    xp = namespace_of(data)
    import array_api_compat

    sample = xp.zeros((1,) + tuple(images.shape[1:]), dtype=data.dtype, device=array_api_compat.device(data))
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            out = model(sample)
    finally:
        model.train(was_training)
    out = out.data if isinstance(out, Tensor) else out
    return tuple(out.shape[1:]), np.dtype(str(out.dtype).rsplit(".", 1)[-1])


def _axes(tail, ndim):
    """``drop_axis`` / ``new_axis`` taking blocks of ``ndim`` axes to ``1 + len(tail)`` axes."""
    out_ndim = 1 + len(tail)
    return list(range(out_ndim, ndim)), list(range(ndim, out_ndim))


def predict(model, images, batch_size=256, *, factory=None, client=None):
    """Run ``model`` over a Dask array of inputs, in eval mode without a graph; a lazy Dask array.

    Parameters
    ----------
    model : portaconv.nn.Module
        Any backend; on the workers it runs on the chunks' backend (NumPy or CuPy), converted
        there when it differs.
    images : dask.array.Array
        ``(N, ...)`` inputs (NumPy or CuPy chunks; a NumPy or CuPy array is wrapped). Rechunked
        to ``batch_size`` along the batch axis and to one chunk along the others; cast to the
        model's dtype.
    batch_size : int
        Samples per block: one forward call each.
    factory : str or callable, optional
        Ship the state dict and rebuild the model with this: a built-in model's name
        (:func:`portaconv.app.models.build`) or a picklable zero-argument callable returning the
        architecture. ``None``: ship the pickled model.
    client : distributed.Client, optional
        Where to scatter the model; the active client by default, or dask's local scheduler
        when none is active.

    Returns
    -------
    dask.array.Array
        ``(N, *out)`` outputs, chunked as the batch axis of the inputs, of the chunks' backend.

    Examples
    --------
    >>> import dask.array as da, numpy as np                       # doctest: +SKIP
    >>> from portaconv.app import models                           # doctest: +SKIP
    >>> net = models.build("seed-cnn")                             # doctest: +SKIP
    >>> x = da.from_array(np.zeros((1000, 1, 28, 28), np.float32)) # doctest: +SKIP
    >>> predict(net, x, batch_size=250).compute().shape            # doctest: +SKIP
    (1000, 10)
    """
    if int(batch_size) < 1:
        raise ValueError(f"predict: batch_size must be positive, got {batch_size!r}")
    da = _dask_array()
    images = _as_dask(images, int(batch_size))
    images = images.rechunk({0: int(batch_size), **{axis: -1 for axis in range(1, images.ndim)}})
    dtype = _model_dtype(model)
    tail, out_dtype = _probe(model, images, dtype)
    shipped = _ship(_payload(model, factory), _current_client(client))
    drop_axis, new_axis = _axes(tail, images.ndim)
    meta = _meta(images, len(tail) + 1, out_dtype)
    return da.map_blocks(_predict_block, images, shipped, uuid.uuid4().hex, dtype, dtype=out_dtype, meta=meta,
                         chunks=(images.chunks[0],) + tuple((size,) for size in tail), drop_axis=drop_axis, new_axis=new_axis)


def _ship(payload, client):
    """One reference to the payload for every block: a scattered future, else a delayed object."""
    if client is not None:
        (future,) = client.scatter([payload], broadcast=True, hash=False)  # a list: scatter the tuple as one object
        return future
    import dask

    return dask.delayed(payload, pure=True, traverse=False)


def _meta(images, ndim, dtype):
    """An empty array of the chunks' library, for dask's bookkeeping (CuPy chunks give CuPy outputs)."""
    meta = getattr(images, "_meta", None)
    if meta is not None and backend_name(meta) == "cupy":
        import cupy

        return cupy.empty((0,) * ndim, dtype=dtype)
    return np.empty((0,) * ndim, dtype=dtype)


# -- evaluation ------------------------------------------------------------------------------------
def _loss_and_correct(out, labels, label_smoothing):
    from .. import functional as F

    xp = namespace_of(out)
    y = xp.asarray(labels, dtype=xp.int64) if backend_name(labels) == backend_name(out) else \
        get_namespace(backend_name(out)).asarray(to_numpy(labels).astype(np.int64))
    loss = float(F.cross_entropy(out, y, reduction="sum", label_smoothing=label_smoothing))
    correct = int(xp.sum(xp.astype(xp.argmax(out, axis=1) == y, xp.int64)))
    return loss, correct


def evaluate(model, images, labels, batch_size=256, *, factory=None, client=None, label_smoothing=0.0):
    """Mean cross-entropy loss and accuracy of a classifier over Dask arrays.

    As :func:`portaconv.app.train.evaluate` (the cross entropy of log-probabilities is their NLL,
    so models ending in logits or in log_softmax both work), on :func:`predict`'s outputs; each
    block's sums are computed where the block is, and only two numbers per block come back.

    Parameters
    ----------
    model, images, batch_size, factory, client
        As :func:`predict`.
    labels : dask.array.Array or array
        ``(N,)`` class indices.
    label_smoothing : float

    Returns
    -------
    (float, float)
        Loss and accuracy.
    """
    import dask

    outputs = predict(model, images, batch_size, factory=factory, client=client)
    if outputs.shape[0] != labels.shape[0]:
        raise ValueError(f"evaluate: {outputs.shape[0]} images but {labels.shape[0]} labels")
    labels = _as_dask(labels, int(batch_size)).rechunk((outputs.chunks[0],))
    blocks = outputs.to_delayed().reshape(-1)
    parts = [dask.delayed(_loss_and_correct, pure=True)(o, y, label_smoothing) for o, y in zip(blocks, labels.to_delayed().reshape(-1))]
    client = _current_client(client)
    sums = dask.compute(*parts, scheduler=client) if client is not None else dask.compute(*parts)
    count = outputs.shape[0]
    return sum(s[0] for s in sums) / count, sum(s[1] for s in sums) / count
