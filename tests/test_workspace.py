"""The im2col workspace limit: chunked results equal unchunked ones, and the peak stays bounded."""

import numpy as np
import pytest

import portaconv
import portaconv.functional as F
import portaconv.functional.conv as conv
from portaconv import to_numpy, window
from portaconv.testing import to_backend


@pytest.mark.parametrize("params", [{"padding": 1}, {"stride": 2, "padding": 1, "groups": 2}, {"dilation": 2, "stride": (1, 2)}])
def test_chunked_equals_unchunked(backend, params, conv_algorithm):
    rng = np.random.default_rng(0)
    x = to_backend(rng.standard_normal((9, 4, 10, 11)), backend, "float64")
    w = to_backend(rng.standard_normal((6, 4 // params.get("groups", 1), 3, 3)), backend, "float64")
    out = F.conv2d(x, w, **params)
    g = to_backend(rng.standard_normal(tuple(out.shape)), backend, "float64")
    whole = [out, *F.conv2d_backward(g, x, w, **params)[:2]]
    tiny = 4 * 9 * 4 * 11 * 8  # about one image's column buffer: forces many chunks
    chunked = [F.conv2d(x, w, **params, workspace_limit=tiny), *F.conv2d_backward(g, x, w, **params, workspace_limit=tiny)[:2]]
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-13, atol=1e-13)


def test_global_setting_and_errors():
    previous = portaconv.set_workspace_limit(1 << 20)
    try:
        assert portaconv.get_workspace_limit() == 1 << 20
    finally:
        portaconv.set_workspace_limit(previous)
    with pytest.raises(ValueError, match="workspace_limit must be a positive number of bytes, got 0"):
        portaconv.set_workspace_limit(0)
    with pytest.raises(ValueError, match="workspace_limit must be a positive number of bytes, got -5"):
        F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)), workspace_limit=-5)


def _peak(function):
    from portaconv.bench import _peak_numpy

    window._scratch.buffers.clear()  # the reused NumPy column buffer must be counted too
    return _peak_numpy(function)


def test_peak_memory_is_bounded(monkeypatch, conv_algorithm):
    """A batch whose whole column buffer is 8x the limit stays near the limit (NumPy, tracemalloc);
    Winograd's transform buffers obey the same limit."""
    monkeypatch.setattr(conv, "_NUMPY_CHUNK_BYTES", 1 << 40)  # measure the workspace limit alone
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 16, 16)).astype(np.float32)  # 0.5 MiB
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    g = rng.standard_normal((64, 8, 16, 16)).astype(np.float32)
    columns = 8 * 9 * 64 * 16 * 16 * 4  # 4.5 MiB for the whole batch
    limit = columns // 8
    arrays = x.nbytes + g.nbytes  # inputs, outputs and padded copies are each about this size

    def run(workspace_limit):
        F.conv2d(x, w, padding=1, workspace_limit=workspace_limit)
        F.conv2d_backward(g, x, w, padding=1, workspace_limit=workspace_limit)

    run(limit)  # first calls allocate once (lazy imports, caches): keep them out of the measurement
    bounded = _peak(lambda: run(limit))
    unbounded = _peak(lambda: run(1 << 40))
    assert unbounded > columns, "the test shape really needs more than the limit"
    assert bounded <= limit + 3 * arrays, f"peak {bounded} bytes with a {limit}-byte limit"


def test_tune_allocator_is_idempotent():
    import platform

    applied = portaconv.tune_allocator()
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert portaconv.tune_allocator() == applied


def test_num_threads_setting():
    previous = portaconv.set_num_threads(3)
    try:
        assert portaconv.get_num_threads() == 3
        portaconv.set_num_threads(None)
        assert portaconv.get_num_threads() >= 1
    finally:
        portaconv.set_num_threads(previous)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"threads must be a positive int or None, got {bad!r}"):
            portaconv.set_num_threads(bad)


def test_threaded_workspace_is_shared(monkeypatch):
    """Split across threads, the parts share the workspace limit: the peak stays bounded."""
    pytest.importorskip("threadpoolctl")
    from portaconv import _threads

    monkeypatch.setattr(_threads, "_MIN_WORK", 0)
    monkeypatch.setattr(conv, "_NUMPY_CHUNK_BYTES", 1 << 40)
    previous = portaconv.set_num_threads(2)
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, 8, 16, 16)).astype(np.float32)
        w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
        limit = 8 * 9 * 64 * 16 * 16 * 4 // 8
        F.conv2d(x, w, padding=1, workspace_limit=limit)
        peak = _peak(lambda: F.conv2d(x, w, padding=1, workspace_limit=limit))
        assert peak <= limit + 3 * 2 * x.nbytes, f"peak {peak} bytes with a {limit}-byte limit"
    finally:
        portaconv.set_num_threads(previous)


def test_single_threaded_blas(monkeypatch):
    """Inside a matrix-multiplying call on large NumPy arrays BLAS runs on one thread (its idle
    workers would spin on the cores portaconv's threads use); the setting is restored after, and
    small calls, other backends and threads=1 leave BLAS alone."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from portaconv import _threads

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]

    @_threads.single_threaded_blas
    def probe(*arrays):
        return blas_threads()

    before = blas_threads()
    big, small = np.zeros(_threads._SMALL_CALL), np.zeros(10)
    monkeypatch.setattr(_threads, "_num_threads", 2)
    assert set(probe(big)) <= {1}
    assert probe(small, big) == [1] * len(before), "any large array counts"
    assert probe(small) == before
    assert probe([1.0] * 20_000) == before, "not a NumPy call"
    assert blas_threads() == before, "restored"
    monkeypatch.setattr(_threads, "_num_threads", 1)
    assert probe(big) == before


def _threaded_conv_sum(queue):
    from portaconv import _threads

    _threads._MIN_WORK = 0
    x = np.ones((4, 2, 6, 6))
    queue.put(float(np.sum(F.conv2d(x, np.ones((3, 2, 3, 3))))))


def test_threads_survive_fork(monkeypatch):
    """A process forked after the thread pool started still runs threaded convolutions (the child
    inherits no worker threads; portaconv also resets its pool and lock there)."""
    pytest.importorskip("threadpoolctl")
    import multiprocessing

    from portaconv import _threads

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(_threads, "_MIN_WORK", 0)
    previous = portaconv.set_num_threads(2)
    try:
        expected = float(np.sum(F.conv2d(np.ones((4, 2, 6, 6)), np.ones((3, 2, 3, 3)))))  # starts the pool
        assert _threads._pool is not None
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_threaded_conv_sum, args=(queue,))
        child.start()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
            pytest.fail("the forked child hung on the inherited thread pool")
        assert queue.get(timeout=5) == expected
    finally:
        portaconv.set_num_threads(previous)
