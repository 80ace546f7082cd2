"""portaconv.options / set_options / get_options: scoping (blocks, threads, tasks), the
implementations they select, and that the reference path computes what the kernels compute."""

import asyncio
import contextvars
import dataclasses
import os
import subprocess
import sys
import threading

import array_api_compat.numpy as numpy_namespace
import numpy as np
import pytest

import portaconv.functional as F
from portaconv import Options, get_options, options, set_options
from portaconv.primitives import dispatch, reference
from portaconv.testing import assert_close

DEFAULTS = Options()

#: The primitives with a registered NumPy kernel (every one dispatched through ``dispatch``).
KERNEL_PRIMITIVES = [
    "im2col", "col2im", "max_pool", "max_pool_backward", "max_pool_scatter", "window_sum", "window_spread", "to_nchw", "relu", "relu_grad",
    "log_softmax", "log_softmax_backward", "channel_sum", "winograd_input", "winograd_input_adjoint", "winograd_output", "winograd_output_adjoint",
]


def test_defaults():
    assert get_options() == DEFAULTS
    assert dataclasses.asdict(DEFAULTS) == {
        "algorithm": "auto", "grad_input": "auto", "kernels": "auto", "reference": False,
        "workspace_limit": 256 * 2**20, "num_threads": None,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_options().algorithm = "winograd"


def test_options_nest_and_restore():
    with options(algorithm="winograd", workspace_limit=4096) as outer:
        assert outer is get_options()
        assert (outer.algorithm, outer.workspace_limit, outer.grad_input) == ("winograd", 4096, "auto")
        with options(grad_input="stride0", workspace_limit=1 << 20) as inner:
            assert (inner.algorithm, inner.grad_input, inner.workspace_limit) == ("winograd", "stride0", 1 << 20)
            with options() as same:
                assert same == inner, "no changes: the settings in force"
        assert get_options() == outer
    assert get_options() == DEFAULTS


def test_options_restore_after_an_exception():
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with options(reference=True, kernels="reference"):
            with options(num_threads=1):
                raise Boom
    assert get_options() == DEFAULTS
    with options(algorithm="im2col"):
        with pytest.raises(Boom):
            with options(algorithm="winograd"):
                raise Boom
        assert get_options().algorithm == "im2col"
    assert get_options() == DEFAULTS


def test_rejected_options_change_nothing():
    with options(algorithm="winograd"):
        with pytest.raises(ValueError, match="algorithm must be one of"):
            with options(grad_input="stride0", algorithm="fft"):
                pass  # pragma: no cover
        assert get_options() == dataclasses.replace(DEFAULTS, algorithm="winograd")


def test_set_options_returns_the_previous_and_restores():
    previous = set_options(algorithm="winograd", workspace_limit=1 << 20)
    try:
        assert previous == DEFAULTS
        assert (get_options().algorithm, get_options().workspace_limit) == ("winograd", 1 << 20)
        again = set_options(reference=True)
        assert again == dataclasses.replace(DEFAULTS, algorithm="winograd", workspace_limit=1 << 20)
        with options(reference=False):
            assert not get_options().reference
        assert get_options().reference, "a block inside restores what set_options set"
    finally:
        set_options(**dataclasses.asdict(previous))
    assert get_options() == DEFAULTS


def test_a_new_thread_starts_from_the_defaults():
    """Settings are context-local: a thread started inside a block runs with the defaults (new
    threads start from an empty context), unless it runs in a copy of the block's context."""
    seen = {}
    with options(algorithm="winograd", workspace_limit=4096):
        plain = threading.Thread(target=lambda: seen.update(plain=get_options()))
        plain.start()
        plain.join()
        copied = threading.Thread(target=contextvars.copy_context().run, args=(lambda: seen.update(copied=get_options()),))
        copied.start()
        copied.join()

        def change_in_thread():
            with options(reference=True):
                seen["changed"] = get_options()

        changer = threading.Thread(target=change_in_thread)
        changer.start()
        changer.join()
        assert get_options().reference is False, "another thread's block does not reach this one"
    if getattr(sys.flags, "thread_inherit_context", False):  # Python 3.14 free-threaded builds
        assert seen["plain"].algorithm == "winograd"
    else:
        assert seen["plain"] == DEFAULTS
    assert (seen["copied"].algorithm, seen["copied"].workspace_limit) == ("winograd", 4096)
    assert seen["changed"].reference is True
    assert get_options() == DEFAULTS


def test_asyncio_tasks_keep_their_own_settings():
    """Each task runs in a copy of its creator's context: blocks in interleaved tasks stay apart."""

    async def task(limit, seen):
        with options(workspace_limit=limit):
            for _ in range(3):
                await asyncio.sleep(0)  # let the other task run inside its own block
                seen.append((limit, get_options().workspace_limit))

    async def main():
        seen = []
        with options(algorithm="im2col"):
            await asyncio.gather(task(1024, seen), task(2048, seen))
            assert get_options().workspace_limit == DEFAULTS.workspace_limit
        return seen

    seen = asyncio.run(main())
    assert len(seen) == 6 and all(limit == got for limit, got in seen)
    assert get_options() == DEFAULTS


# ---- what the options select ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reference_option_selects_the_reference_of_every_primitive(dtype):
    for changes in ({"reference": True}, {"kernels": "reference"}, {"reference": True, "kernels": "auto"}):
        with options(**changes):
            for name in KERNEL_PRIMITIVES:
                assert dispatch.implementation(name, numpy_namespace, dtype) is getattr(reference, name), (changes, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_kernels_are_numba_on_numpy(dtype):
    pytest.importorskip("numba")
    from portaconv.primitives import numba_kernels, numba_winograd

    for changes in ({}, {"kernels": "auto"}):
        with options(**changes):
            for name in KERNEL_PRIMITIVES:
                module = numba_winograd if name.startswith("winograd") else numba_kernels
                assert dispatch.implementation(name, numpy_namespace, dtype) is getattr(module, name), (changes, name)
    for name in KERNEL_PRIMITIVES:  # no kernel for other dtypes or namespaces
        assert dispatch.implementation(name, numpy_namespace, np.float16) is getattr(reference, name)
    strict = pytest.importorskip("array_api_strict")
    assert dispatch.implementation("im2col", strict, strict.float32) is reference.im2col


def test_reference_option_sets_the_algorithms():
    """``reference=True`` overrides the algorithm and input-gradient settings and the kernels."""
    with options(reference=True, algorithm="winograd", grad_input="stride0", kernels="auto"):
        o = get_options()
        assert (o.effective_algorithm, o.effective_grad_input, o.use_kernels) == ("im2col", "col2im", False)
    with options(algorithm="winograd", grad_input="stride0", kernels="reference"):
        o = get_options()
        assert (o.effective_algorithm, o.effective_grad_input, o.use_kernels) == ("winograd", "stride0", False)
    o = get_options()
    assert (o.effective_algorithm, o.effective_grad_input, o.use_kernels) == ("auto", "auto", True)


def test_num_threads_applies_to_the_kernels():
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    x, w = np.ones((2, 3, 100, 100)), np.ones((4, 3, 3, 3))  # large enough for the parallel kernels
    try:
        with options(num_threads=1):
            F.conv2d(x, w)
            assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)


def test_num_threads_is_restored_after_the_block():
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    if before < 2:
        pytest.skip("numba runs one thread here: nothing to restore")  # pragma: no cover
    x, w = np.ones((2, 3, 100, 100)), np.ones((4, 3, 3, 3))  # large enough for the parallel kernels
    try:
        with options(num_threads=1):
            F.conv2d(x, w)
        F.conv2d(x, w)
        assert numba.get_num_threads() == before
    finally:
        numba.set_num_threads(before)


# ---- the reference path computes what the default path computes ----------------------------------


def _conv_results(x, w, b, g, params):
    return [F.conv2d(x, w, b, **params), *F.conv2d_backward(g, x, w, b, **params)]


CONV_CASES = [
    # 32 channels and 10×10 tiles: auto picks Winograd on NumPy, the reference im2col
    ((2, 32, 20, 20), (32, 32, 3, 3), {"padding": 1}),
    ((3, 4, 11, 9), (6, 2, 3, 2), {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 1), "groups": 2}),
    ((2, 3, 7, 8), (5, 3, 5, 5), {"padding": "same"}),
]
POOL_CASES = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)},
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CONV_CASES, ids=["winograd-auto", "strided-grouped", "same"])
def test_reference_and_default_paths_agree_conv(dtype, case):
    x_shape, w_shape, params = case
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    g = rng.standard_normal(tuple(F.conv2d(x, w, b, **params).shape)).astype(dtype)
    if case is CONV_CASES[0]:  # the two paths really run different code
        from portaconv.primitives import reference

        assert dispatch.implementation("im2col", numpy_namespace, x.dtype) is not reference.im2col
        with options(reference=True):
            assert dispatch.implementation("im2col", numpy_namespace, x.dtype) is reference.im2col
    default = _conv_results(x, w, b, g, params)
    with options(reference=True):
        ref = _conv_results(x, w, b, g, params)
    for what, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), default, ref):
        assert a.dtype == e.dtype == np.dtype(dtype)
        assert_close(a, e, dtype=dtype, what=what)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("params", POOL_CASES, ids=["2x2", "3x3-s2-p1-ceil", "3x2-padded"])
def test_reference_and_default_paths_agree_pooling(dtype, params):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    results = {}
    for path in ("default", "reference"):
        with options(reference=path == "reference"):
            out = F.max_pool2d(x, **params)
            g = np.asarray(np.random.default_rng(5).standard_normal(out.shape), dtype=dtype)
            (grad,) = F.max_pool2d_backward(g, x, **params)
            avg = F.avg_pool2d(x, **params, count_include_pad=False)
            g = np.asarray(np.random.default_rng(6).standard_normal(avg.shape), dtype=dtype)
            (avg_grad,) = F.avg_pool2d_backward(g, x, **params, count_include_pad=False)
            results[path] = [out, grad, avg, avg_grad]
    for what, a, e in zip(("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"), results["default"], results["reference"]):
        assert a.dtype == e.dtype == np.dtype(dtype)
        assert_close(a, e, dtype=dtype, what=what)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts the process's threads in /proc")
def test_num_threads_one_keeps_the_products_on_one_thread():
    """options(num_threads=1) (what distributed.init gives each of 2 ranks on 2 cores): a large
    NumPy product runs whole on the calling thread and starts no thread; by default it is split
    over numba's threads where two cores are usable, and gives the same bits. In a fresh process,
    so no earlier call has started numba's threads."""
    script = """
import os, numpy as np, portaconv
from portaconv.primitives.numpy_products import matmul, usable_cores, _gemms
threads = lambda: len(os.listdir("/proc/self/task"))
a = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)
before = threads()
with portaconv.options(num_threads=1):
    one = matmul(a, b, np)
after_one = threads()
two = matmul(a, b, np)
print(after_one - before, threads() - before, usable_cores(), bool(_gemms()), bool((one == two).all()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with_one, by_default, cores, split, equal = done.stdout.split()
    assert with_one == "0" and equal == "True"
    if int(cores) >= 2 and split == "True":
        assert int(by_default) >= 1  # numba's workers started
