"""Oracle-free checks: finite differences and adjoint identities."""

import functools

import numpy as np
import pytest

import portaconv.functional as F
from portaconv import to_numpy
from portaconv.primitives import dispatch
from portaconv.testing import CASES, Target, jit_function, make_inputs, run_case, to_backend
from portaconv.window import col2im, im2col

# Max pooling is not differentiable at ties; the "large" cases saturate (gradients ~0).
SMOOTH = [(i, c) for i, c in enumerate(CASES) if c.values == "normal"]


def _loss(forward, inputs, grad_output, backend):
    out = forward(*[to_backend(a, backend, "float64") for a in inputs])
    return float(np.sum(to_numpy(out) * grad_output))


@pytest.mark.parametrize("index", [i for i, _ in SMOOTH], ids=[str(c) for _, c in SMOOTH])
def test_directional_finite_difference(index, backend):
    """(L(x + eps v) - L(x - eps v)) / 2 eps == <grad, v> for L = <f(x), g>, per float input.
    On JAX under ``jax.jit`` (one compilation for all the evaluations, where the eager run compiles
    every operation of each shape: test_parity runs every case eagerly)."""
    case = CASES[index]
    rng = np.random.default_rng(1000 + index)
    inputs = make_inputs(case, rng)
    out = getattr(F, case.op)(*inputs, **case.params)
    grad_output = rng.standard_normal(np.shape(out))
    jit = backend.name == "jax"
    _, grads = run_case(case, inputs, grad_output, backend, "float64", jit=jit)
    forward = functools.partial(getattr(F, case.op), **case.params)
    if jit:
        forward = jit_function(forward)
    eps = 1e-6
    for position, spec in enumerate(case.inputs):
        if spec is None or isinstance(spec, Target):
            assert grads[position] is None
            continue
        direction = rng.standard_normal(spec)
        plus = list(inputs)
        minus = list(inputs)
        plus[position] = inputs[position] + eps * direction
        minus[position] = inputs[position] - eps * direction
        numeric = (_loss(forward, plus, grad_output, backend) - _loss(forward, minus, grad_output, backend)) / (2 * eps)
        analytic = float(np.sum(to_numpy(grads[position]) * direction))
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (case, position, numeric, analytic)


SMALL = [
    ("conv2d", ((1, 2, 5, 6), (3, 2, 3, 2), (3,)), {"stride": (2, 1), "padding": 1}),
    ("conv_transpose2d", ((1, 2, 3, 3), (2, 2, 2, 3), (2,)), {"stride": 2, "padding": (0, 1), "output_padding": 1}),
    ("max_pool2d", ((1, 2, 5, 5),), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("avg_pool2d", ((1, 2, 5, 5),), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}),
    ("local_response_norm", ((1, 5, 2, 2),), {"size": 4, "alpha": 0.5}),
]


@pytest.mark.parametrize("op, shapes, params", SMALL, ids=[s[0] for s in SMALL])
def test_full_finite_difference(op, shapes, params):
    """Every entry of every gradient by central differences (NumPy, float64)."""
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal(s) for s in shapes]
    out = getattr(F, op)(*inputs, **params)
    grad_output = rng.standard_normal(np.shape(out))
    grads = getattr(F, op + "_backward")(grad_output, *inputs, **params)
    eps = 1e-6
    for position, x in enumerate(inputs):
        numeric = np.zeros_like(x)
        for flat in range(x.size):
            bumped = x.copy().reshape(-1)
            bumped[flat] += eps
            up = np.sum(getattr(F, op)(*inputs[:position], bumped.reshape(x.shape), *inputs[position + 1 :], **params) * grad_output)
            bumped[flat] -= 2 * eps
            down = np.sum(getattr(F, op)(*inputs[:position], bumped.reshape(x.shape), *inputs[position + 1 :], **params) * grad_output)
            numeric.reshape(-1)[flat] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[position], numeric, rtol=1e-6, atol=1e-7)


CONV_CASES = [c for c in CASES if c.op in ("conv2d", "conv_transpose2d")]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_adjoint_identity(case, backend):
    """<conv(x), g> == <x, grad_input(g)>: the backward is the forward's exact adjoint."""
    rng = np.random.default_rng(3)
    x, weight = (rng.standard_normal(s) for s in case.inputs[:2])
    xb, wb = to_backend(x, backend, "float64"), to_backend(weight, backend, "float64")
    forward = getattr(F, case.op)
    out = to_numpy(forward(xb, wb, None, **case.params))
    g = rng.standard_normal(out.shape)
    grad_input = getattr(F, case.op + "_backward")(to_backend(g, backend, "float64"), xb, wb, None, **case.params)[0]
    left, right = float(np.sum(out * g)), float(np.sum(x * to_numpy(grad_input)))
    assert abs(left - right) <= 1e-10 * max(1.0, abs(left))


def test_conv_transpose_is_conv_grad_input(backend):
    """conv_transpose2d(x, w) equals conv2d's input gradient at x, with conv2d's geometry."""
    rng = np.random.default_rng(4)
    x = to_backend(rng.standard_normal((2, 4, 5, 6)), backend, "float64")
    weight = to_backend(rng.standard_normal((4, 3, 3, 3)), backend, "float64")
    out = F.conv_transpose2d(x, weight, stride=2, padding=1, output_padding=1)
    grad = F.conv2d_grad_input(x, weight, input_shape=tuple(out.shape), stride=2, padding=1)
    np.testing.assert_array_equal(to_numpy(out), to_numpy(grad))


def test_im2col_col2im_adjoint(backend, kernels):
    if kernels == "reference" and dispatch.family(backend.xp) is None:
        pytest.skip("no kernels on this backend: the same run as kernels='auto'")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 8))
    params = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2)}
    cols = to_numpy(im2col(to_backend(x, backend, "float64"), (3, 2), **params))
    c = rng.standard_normal(cols.shape)
    back = to_numpy(col2im(to_backend(c, backend, "float64"), x.shape, (3, 2), **params))
    assert abs(np.sum(cols * c) - np.sum(x * back)) <= 1e-10 * abs(np.sum(cols * c))


@pytest.mark.parametrize("height, width, top, left", [(6, 6, 1, 1), (5, 8, 0, 2), (3, 4, 2, 0), (7, 5, 1, 0)])
def test_winograd_transform_adjoints(backend, kernels, height, width, top, left):
    """<T x, v> = <x, T* v> for Winograd's input and output transforms as dispatched (the backend's
    kernels or the Array API reference)."""
    if kernels == "reference" and dispatch.family(backend.xp) is None:
        pytest.skip("no kernels on this backend: the same run as kernels='auto'")
    from portaconv import primitives as P
    from portaconv.primitives.window import Window

    xp = backend.xp
    rng = np.random.default_rng(height * 100 + width)
    oh, ow = height + 2 * top - 2, width + 2 * left - 2
    window = Window(3, 3, 1, 1, 1, 1, top, left, oh, ow)
    th, tw = P.winograd_tiles(window)
    assert (th, tw) == ((oh + 1) // 2, (ow + 1) // 2)
    x = rng.standard_normal((3, 2, height, width))
    v = P.winograd_input(to_backend(x, backend, "float64"), window, xp)
    assert tuple(v.shape) == (16, 2, 3 * th * tw)
    dv = rng.standard_normal(tuple(v.shape))
    back = P.winograd_input_adjoint(to_backend(dv, backend, "float64"), x.shape, window, xp)
    lhs, rhs = np.sum(to_numpy(v) * dv), np.sum(x * to_numpy(back))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)

    m = rng.standard_normal((16, 4, 2 * th * tw))
    y = P.winograd_output(to_backend(m, backend, "float64"), None, (2, 4, oh, ow), window, xp)
    dy = rng.standard_normal((2, 4, oh, ow))
    dm = P.winograd_output_adjoint(to_backend(dy, backend, "float64"), window, xp)
    lhs, rhs = np.sum(to_numpy(y) * dy), np.sum(m * to_numpy(dm))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_winograd_only_when_asked():
    """auto: im2col everywhere (measured faster on NumPy and CuPy); ``algorithm="winograd"``
    picks Winograd where it applies (3×3, stride 1, dilation 1, one group); ``reference`` always
    computes by im2col."""
    import array_api_compat.numpy as np_namespace

    import portaconv
    from portaconv import conv_output_size
    from portaconv.primitives.window import Window

    array_api_strict = pytest.importorskip("array_api_strict")

    def choice(channels, size, xp=np_namespace, stride=1, dilation=1, groups=1, kernel=3):
        out = conv_output_size(size, kernel, stride=stride, padding=1, dilation=dilation)
        window = Window(kernel, kernel, stride, stride, dilation, dilation, 1, 1, out, out)
        return dispatch.conv_algorithm(window, groups)

    assert {choice(64, 56), choice(128, 28), choice(64, 13), choice(64, 56, array_api_strict)} == {"im2col"}
    with portaconv.options(algorithm="winograd"):
        assert choice(64, 13) == "winograd" and choice(2, 4, array_api_strict) == "winograd"
        assert choice(64, 56, stride=2) == "im2col" and choice(64, 56, groups=2) == "im2col", "where it applies only"
        with portaconv.options(reference=True):
            assert choice(64, 56) == "im2col", "reference overrides algorithm"
    with portaconv.options(algorithm="im2col"):
        assert choice(64, 56) == "im2col"


def test_grad_input_method_rule():
    """auto: col2im (the forward's exact adjoint); grad_input= forces; reference forces col2im."""
    import portaconv
    from portaconv.primitives.window import Window

    window = Window(3, 3, 2, 2, 1, 1, 1, 1, 4, 4)
    assert dispatch.grad_input_method() == "col2im"
    with portaconv.options(grad_input="stride0"):
        assert dispatch.grad_input_method() == "stride0"
        with portaconv.options(reference=True):
            assert dispatch.grad_input_method() == "col2im"
    with portaconv.options(grad_input="col2im"):
        assert dispatch.grad_input_method() == "col2im"
