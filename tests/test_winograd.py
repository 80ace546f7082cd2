"""Winograd F(2×2, 3×3): the numba transforms against the Array API reference (same bits), the
reference's adjoints, and forward/backward against torch's conv2d and autograd."""

import numpy as np
import pytest

import portaconv
from portaconv._options import options
from portaconv.functional import _winograd as winograd
from portaconv.primitives import dispatch
from portaconv.primitives import winograd_reference as ref
from portaconv.primitives.window import Window

nw = pytest.importorskip("portaconv.primitives.numba_winograd")


def _window(height, width, top, left, bottom, right):
    return Window(3, 3, 1, 1, 1, 1, top, left, height + top + bottom - 2, width + left + right - 2)


def _geometries(count, seed):
    """Random (N, C, K, H, W, top, left, bottom, right) with at least one output row and column."""
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        n, c, k = int(rng.integers(0, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
        height, width = (int(v) for v in rng.integers(1, 10, size=2))
        top, left, bottom, right = (int(v) for v in rng.integers(0, 3, size=4))
        if height + top + bottom - 2 >= 1 and width + left + right - 2 >= 1:
            found.append((n, c, k, height, width, top, left, bottom, right))
    return found


def _random(rng, shape, dtype, special=False):
    """Normal values; with ``special`` about 5% of them NaN, +inf or −inf (and some −0.0)."""
    a = rng.standard_normal(shape).astype(dtype)
    if special and a.size:
        pick = rng.random(shape)
        a[pick < 0.02] = np.nan
        a[(pick >= 0.02) & (pick < 0.035)] = np.inf
        a[(pick >= 0.035) & (pick < 0.05)] = -np.inf
        a[(pick >= 0.05) & (pick < 0.08)] = -0.0
    return a


def assert_same_bits(actual, expected):
    """Same shape and dtype, NaN in the same places, every other value bit for bit (signed zeros too)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan)
    ints = np.uint32 if actual.dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(actual[~nan].view(ints), expected[~nan].view(ints))


GEOMETRIES = _geometries(40, 7)


@pytest.mark.parametrize("special", [False, True], ids=["finite", "nonfinite"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_transforms_match_reference_bitwise(dtype, special):
    xp = portaconv.get_namespace("numpy")
    rng = np.random.default_rng(1 + special)
    with np.errstate(invalid="ignore"):  # inf − inf in both
        _compare_on(GEOMETRIES, rng, dtype, special, xp)


def _compare_on(geometries, rng, dtype, special, xp):
    for n, c, k, height, width, top, left, bottom, right in geometries:
        w = _window(height, width, top, left, bottom, right)
        th, tw = ref.winograd_tiles(w)
        x = _random(rng, (n, c, height, width), dtype, special)
        assert_same_bits(nw.winograd_input(x, w, xp), ref.winograd_input(x, w, xp))
        grad_v = _random(rng, (16, c, n * th * tw), dtype, special)
        shape = (n, c, height, width)
        assert_same_bits(nw.winograd_input_adjoint(grad_v, shape, w, xp), ref.winograd_input_adjoint(grad_v, shape, w, xp))
        m = _random(rng, (16, k, n * th * tw), dtype, special)
        out_shape = (n, k, w.oh, w.ow)
        for bias in (None, _random(rng, (k,), dtype, special)):
            assert_same_bits(nw.winograd_output(m, bias, out_shape, w, xp), ref.winograd_output(m, bias, out_shape, w, xp))
        grad = _random(rng, out_shape, dtype, special)
        assert_same_bits(nw.winograd_output_adjoint(grad, w, xp), ref.winograd_output_adjoint(grad, w, xp))


def test_numba_transforms_accept_noncontiguous_input():
    xp = portaconv.get_namespace("numpy")
    rng = np.random.default_rng(3)
    w = _window(7, 8, 1, 2, 0, 1)
    x = np.asfortranarray(rng.standard_normal((2, 3, 7, 8)))
    assert_same_bits(nw.winograd_input(x, w, xp), ref.winograd_input(np.ascontiguousarray(x), w, xp))
    grad = rng.standard_normal((2, 4, w.ow, w.oh)).transpose(0, 1, 3, 2)
    assert_same_bits(nw.winograd_output_adjoint(grad, w, xp), ref.winograd_output_adjoint(np.ascontiguousarray(grad), w, xp))


def test_numba_transforms_are_registered():
    xp = portaconv.get_namespace("numpy")
    for name in ("winograd_input", "winograd_input_adjoint", "winograd_output", "winograd_output_adjoint"):
        for dtype in ("float32", "float64"):
            assert dispatch.implementation(name, xp, np.dtype(dtype)) is getattr(nw, name)
        with options(kernels="reference"):
            assert dispatch.implementation(name, xp, np.dtype("float32")) is getattr(ref, name)


@pytest.mark.parametrize("geometry", GEOMETRIES[:12])
def test_reference_transforms_are_adjoints(geometry):
    """<T x, y> = <x, Tᵀ y> for the four data transforms and the kernel transform (float64)."""
    xp = portaconv.get_namespace("numpy")
    n, c, k, height, width, top, left, bottom, right = geometry
    w = _window(height, width, top, left, bottom, right)
    th, tw = ref.winograd_tiles(w)
    rng = np.random.default_rng(5)
    x, grad_v = rng.standard_normal((n, c, height, width)), rng.standard_normal((16, c, n * th * tw))
    np.testing.assert_allclose(
        np.vdot(ref.winograd_input(x, w, xp), grad_v), np.vdot(x, ref.winograd_input_adjoint(grad_v, x.shape, w, xp)), rtol=1e-12, atol=1e-12
    )
    m, grad = rng.standard_normal((16, k, n * th * tw)), rng.standard_normal((n, k, w.oh, w.ow))
    np.testing.assert_allclose(
        np.vdot(ref.winograd_output(m, None, grad.shape, w, xp), grad), np.vdot(m, ref.winograd_output_adjoint(grad, w, xp)), rtol=1e-12, atol=1e-12
    )
    g, grad_u = rng.standard_normal((k, c, 3, 3)), rng.standard_normal((16, k, c))
    np.testing.assert_allclose(np.vdot(ref.winograd_kernel(g, xp), grad_u), np.vdot(g, ref.winograd_kernel_adjoint(grad_u, xp)), rtol=1e-12)


def test_reference_runs_under_jax_jit():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    np_xp = portaconv.get_namespace("numpy")
    w = _window(7, 6, 2, 1, 1, 0)
    th, tw = ref.winograd_tiles(w)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    m = rng.standard_normal((16, 4, 2 * th * tw)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    grad = rng.standard_normal((2, 4, w.oh, w.ow)).astype(np.float32)
    calls = {
        "input": (lambda a: ref.winograd_input(a, w, jnp), x, ref.winograd_input(x, w, np_xp)),
        "input_adjoint": (
            lambda a: ref.winograd_input_adjoint(a, x.shape, w, jnp),
            ref.winograd_input(x, w, np_xp),
            ref.winograd_input_adjoint(ref.winograd_input(x, w, np_xp), x.shape, w, np_xp),
        ),
        "output": (lambda a: ref.winograd_output(a, jnp.asarray(bias), grad.shape, w, jnp), m, ref.winograd_output(m, bias, grad.shape, w, np_xp)),
        "output_adjoint": (lambda a: ref.winograd_output_adjoint(a, w, jnp), grad, ref.winograd_output_adjoint(grad, w, np_xp)),
    }
    for name, (fn, arg, expected) in calls.items():
        out = np.asarray(jax.jit(fn)(jnp.asarray(arg)))
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6, err_msg=name)


# ---- forward / backward against torch ----------------------------------------------------------

CASES = [
    # N, C, K, H, W, top, left, bottom, right, bias
    (2, 3, 4, 8, 8, 1, 1, 1, 1, True),
    (3, 2, 3, 9, 7, 0, 2, 1, 0, False),
    (1, 4, 2, 5, 6, 2, 0, 2, 1, True),
    (2, 1, 1, 3, 3, 0, 0, 0, 0, True),
    (1, 2, 3, 1, 2, 2, 1, 1, 2, False),
    (0, 2, 3, 6, 6, 1, 1, 1, 1, True),
]


def _torch_reference(torch, x, weight, bias, grad, pads):
    top, left, bottom, right = pads
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True)
    out = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (left, right, top, bottom)), wt, None if bias is None else torch.tensor(bias))
    out.backward(torch.tensor(grad))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def _close(actual, expected, rtol):
    actual = portaconv.to_numpy(actual)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-p{c[5:9]}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "torch"])
def test_forward_backward_match_torch(torch, backend, dtype, case):
    xp = portaconv.get_namespace(backend)
    n, c, k, height, width, top, left, bottom, right, with_bias = case
    w = _window(height, width, top, left, bottom, right)
    rng = np.random.default_rng(sum(case) + len(dtype))
    x = rng.standard_normal((n, c, height, width))
    weight = rng.standard_normal((k, c, 3, 3))
    bias = rng.standard_normal(k) if with_bias else None
    grad = rng.standard_normal((n, k, w.oh, w.ow))
    y, grad_x, grad_w = _torch_reference(torch, x, weight, bias, grad, (top, left, bottom, right))
    tol = 1e-11 if dtype == "float64" else 5e-5

    def arr(a):
        return None if a is None else xp.asarray(a.astype(dtype))

    out = winograd.forward(arr(x), arr(weight), arr(bias), w, xp)
    _close(out, y, tol)
    gi, gw = winograd.backward(arr(grad), arr(x), arr(weight), w, xp)
    _close(gi, grad_x, tol)
    _close(gw, grad_w, tol)
    # One gradient only; the missing operand's sizes from ``shape``.
    shape = (n, c, height, width, k, c, 3, 3)
    gi_only, none = winograd.backward(arr(grad), None, arr(weight), w, xp, weight_grad=False, shape=shape)
    assert none is None
    _close(gi_only, grad_x, tol)
    none, gw_only = winograd.backward(arr(grad), arr(x), None, w, xp, input_grad=False, shape=shape)
    assert none is None
    _close(gw_only, grad_w, tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_chunks_give_the_one_chunk_result(backend, dtype):
    xp = portaconv.get_namespace(backend)
    n, c, k, height, width = 5, 3, 4, 7, 9
    w = _window(height, width, 1, 0, 2, 1)
    th, tw = ref.winograd_tiles(w)
    rng = np.random.default_rng(2)
    x, weight, bias = (xp.asarray(rng.standard_normal(s).astype(dtype)) for s in ((n, c, height, width), (k, c, 3, 3), (k,)))
    grad = xp.asarray(rng.standard_normal((n, k, w.oh, w.ow)).astype(dtype))
    itemsize = np.dtype(dtype).itemsize
    per_image = 16 * max(c, k) * th * tw * itemsize
    assert winograd.chunk_images(n, c, k, w, itemsize) == n
    y = portaconv.to_numpy(winograd.forward(x, weight, bias, w, xp))
    gi, gw = (portaconv.to_numpy(a) for a in winograd.backward(grad, x, weight, w, xp))
    tol = 1e-13 if dtype == "float64" else 1e-5
    for limit in (1, 2 * per_image + 1):  # 1 image per chunk (the floor), then 2, 2 and 1
        with options(workspace_limit=limit):
            assert winograd.chunk_images(n, c, k, w, itemsize) == max(1, limit // per_image)
            np.testing.assert_allclose(portaconv.to_numpy(winograd.forward(x, weight, bias, w, xp)), y, rtol=0, atol=tol * np.abs(y).max())
            chunked_gi, chunked_gw = winograd.backward(grad, x, weight, w, xp)
            # Each image's input gradient is computed alone: the same bits; the weight gradient sums
            # the chunks' products in another order.
            np.testing.assert_array_equal(portaconv.to_numpy(chunked_gi), gi)
            np.testing.assert_allclose(portaconv.to_numpy(chunked_gw), gw, rtol=0, atol=tol * np.abs(gw).max())
