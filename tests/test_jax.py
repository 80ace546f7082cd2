"""JAX: every op's forward and backward under ``jax.jit`` against torch's float64 results.

Every array (integer targets and max-pool indices included) is a jit argument; the static
parameters are closed over. A library function that reads an array value on the host (``bool``,
``int``, ``float``, ``.item()``, ``np.asarray``) fails to trace here, so a pass is also the check
that the compute path is sync-free. Also: ``max_pool2d``'s indices, ``portaconv.options`` under
jit, the JAX entries of ``get_namespace`` / ``asarray`` (float64 without ``jax_enable_x64``), and
the bad-input errors on eager JAX arrays.

Runtime: XLA compiles once per (op, parameters, shapes, dtype). The suite compiles with cheaper
XLA flags (``XLA_TEST_FLAGS`` in tests/conftest.py; :func:`test_xla_default_flags` runs a sample
with XLA's defaults) and the jitted functions with LLVM's optimization level 0
(``portaconv.testing.jit_function``). ``PORTACONV_JAX_CASES=representative`` runs one case per
(op, parameter set, absent optional inputs) of ``CASES`` instead of every case.
"""

import functools
import importlib
import os
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")

import jax.numpy as jnp  # noqa: E402

import portaconv  # noqa: E402
import portaconv.functional as F  # noqa: E402
from portaconv.testing import CASES, Backend, assert_close, jit_function, make_inputs, to_backend, torch_reference  # noqa: E402

JAX = Backend("jax", jnp)
JAX_ARRAY = type(jnp.asarray(0.0))  # a concrete array's class (jit returns these)
conv_module = importlib.import_module("portaconv.functional.conv")
winograd_module = importlib.import_module("portaconv.functional._winograd")


@pytest.fixture(autouse=True)
def _x64():
    """float64 needs jax_enable_x64 (tests/conftest.py sets it; this keeps the module self-contained)."""
    with jax.enable_x64(True):
        yield


@functools.lru_cache(maxsize=None)
def _reference(index):
    """Inputs, gradient and torch's float64 results for one case: the same numbers as
    test_parity's (same seed, same draws)."""
    case = CASES[index]
    rng = np.random.default_rng(index)
    inputs = make_inputs(case, rng)
    with portaconv.options(kernels="reference"):  # the shape only: no numba compilation
        shape = np.shape(getattr(F, case.op)(*inputs, **case.params))
    grad_output = rng.standard_normal(shape)
    ref_out, ref_grads = torch_reference(case, inputs, grad_output)
    return inputs, grad_output, ref_out, ref_grads


def _representatives():
    """The first case of each (op, parameters, absent optional inputs) of ``CASES``."""
    first = {}
    for index, case in enumerate(CASES):
        key = (case.op, repr(sorted(case.params.items())), tuple(spec is None for spec in case.inputs))
        first.setdefault(key, index)
    return sorted(first.values())


JIT_INDICES = _representatives() if os.environ.get("PORTACONV_JAX_CASES") == "representative" else list(range(len(CASES)))


def _jitted(op, params, absent):
    """``jit(grad_output, *present_inputs) -> (forward(...), backward(grad_output, ...))`` with the
    op's parameters closed over; ``absent`` marks the ``None`` positional inputs (not jit args)."""
    forward, backward = getattr(F, op), getattr(F, op + "_backward")
    params = dict(params)

    def full(arrays):
        arrays = iter(arrays)
        return [None if missing else next(arrays) for missing in absent]

    def run(grad_output, *arrays):
        inputs = full(arrays)
        return forward(*inputs, **params), backward(grad_output, *inputs, **params)

    return jit_function(run)


@functools.lru_cache(maxsize=None)
def _case_function(op, params, absent):
    # One jitted function per (op, parameters): cases that differ only in values share its
    # compilation (jit caches per argument shape and dtype).
    return _jitted(op, params, absent)


def _run_jit(index, dtype, function=None):
    case = CASES[index]
    inputs, grad_output, _, _ = _reference(index)
    absent = tuple(a is None for a in inputs)
    function = function or _case_function(case.op, tuple(sorted(case.params.items())), absent)
    arrays = [to_backend(a, JAX, dtype) for a in inputs if a is not None]
    return function(to_backend(grad_output, JAX, dtype), *arrays)


def _check_against_torch(index, dtype, out, grads, what):
    """test_parity.test_matches_torch's comparisons."""
    inputs, _, ref_out, ref_grads = _reference(index)
    assert type(out) is JAX_ARRAY, "output keeps the input's namespace"
    assert out.dtype == getattr(jnp, dtype)
    assert len(grads) == len(inputs), "one gradient per positional input"
    assert_close(out, ref_out, dtype=dtype, what=f"{what} forward")
    for position, (grad, ref) in enumerate(zip(grads, ref_grads)):
        if ref is None:
            assert grad is None, f"{what}: gradient {position} should be None"
            continue
        assert type(grad) is JAX_ARRAY and grad.dtype == getattr(jnp, dtype)
        assert_close(grad, ref, dtype=dtype, what=f"{what} grad {position}")


@pytest.mark.parametrize("index", JIT_INDICES, ids=[str(CASES[i]) for i in JIT_INDICES])
def test_jit_matches_torch(index, dtype):
    out, grads = _run_jit(index, dtype)
    _check_against_torch(index, dtype, out, grads, f"{CASES[index]} (jax.jit)")


# ---- max_pool2d's indices ----------------------------------------------------------------------

# Ties (the first maximum wins), overlapping unbatched windows, dilated windows over the padding,
# a ceil_mode overhang with padding.
INDEX_CASES = [
    i
    for i, c in enumerate(CASES)
    if c.op == "max_pool2d" and c.values == "ties" and (len(c.inputs[0]) == 3 or c.params.get("dilation") == 2 or c.params.get("kernel_size") == (2, 3) and "padding" in c.params)
]


@functools.lru_cache(maxsize=None)
def _torch_indices(index):
    case = CASES[index]
    inputs, _, _, _ = _reference(index)
    _, indices = torch.nn.functional.max_pool2d(torch.tensor(inputs[0]), **case.params, return_indices=True)
    return indices.numpy()


@pytest.mark.parametrize("index", INDEX_CASES, ids=[str(CASES[i]) for i in INDEX_CASES])
def test_jit_max_pool_indices(index, dtype):
    """return_indices=True and the backward through ``indices=`` under jit give torch's indices
    (ties: the first maximum) and torch's gradient."""
    case = CASES[index]
    inputs, grad_output, ref_out, ref_grads = _reference(index)
    params = dict(case.params)

    def run(grad, x, given_indices):
        out, indices = F.max_pool2d(x, **params, return_indices=True)
        (grad_input,) = F.max_pool2d_backward(grad, x, **params, indices=indices)
        (grad_given,) = F.max_pool2d_backward(grad, x, **params, indices=given_indices)  # a jit argument
        return out, indices, grad_input, grad_given

    x, grad = to_backend(inputs[0], JAX, dtype), to_backend(grad_output, JAX, dtype)
    torch_indices = _torch_indices(index)
    out, indices, grad_input, grad_given = jit_function(run)(grad, x, jnp.asarray(torch_indices))
    assert indices.dtype == jnp.int64
    np.testing.assert_array_equal(np.asarray(indices), torch_indices)
    assert_close(out, ref_out, dtype=dtype, what=f"{case} forward")
    assert_close(grad_input, ref_grads[0], dtype=dtype, what=f"{case} grad through indices")
    assert_close(grad_given, ref_grads[0], dtype=dtype, what=f"{case} grad from torch's indices")


# ---- portaconv.options under jit ---------------------------------------------------------------


def _conv_case(weight, params, bias=True):
    for index, case in enumerate(CASES):
        if case.op == "conv2d" and case.inputs[1] == weight and case.params == params and (case.inputs[2] is not None) == bias:
            return index
    raise LookupError(f"no conv2d case with weight {weight} and {params}")


WINOGRAD_CASE = _conv_case((4, 5, 3, 3), {"padding": 1})  # 3×3, stride 1: Winograd applies
STRIDED_CASE = _conv_case((4, 3, 3, 3), {"stride": 2, "padding": 1}, bias=False)  # 3×3, stride 2


@pytest.mark.parametrize(
    "settings, index, expected",
    [
        ({"algorithm": "winograd"}, WINOGRAD_CASE, {"winograd.forward", "winograd.backward"}),
        ({"grad_input": "stride0"}, STRIDED_CASE, {"stride0"}),
        # Both: Winograd where it applies (its own input gradient), stride0 elsewhere.
        ({"algorithm": "winograd", "grad_input": "stride0"}, WINOGRAD_CASE, {"winograd.forward", "winograd.backward"}),
    ],
    ids=["winograd", "stride0", "both"],
)
def test_options_under_jit(settings, index, expected, dtype, monkeypatch):
    """The options are read while tracing: a function traced inside ``portaconv.options(...)``
    runs the path they pick (Winograd where it applies, the stride0 input gradient) and matches
    torch. (A function jitted and traced before keeps the path of its first trace.)"""
    calls = set()

    def spy(module, name, label):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls.add(label)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    spy(winograd_module, "forward", "winograd.forward")
    spy(winograd_module, "backward", "winograd.backward")
    spy(conv_module, "_stride0_grad_input", "stride0")
    case = CASES[index]
    absent = tuple(s is None for s in case.inputs)
    with portaconv.options(**settings):
        out, grads = _run_jit(index, dtype, _jitted(case.op, tuple(sorted(case.params.items())), absent))
    assert calls == expected
    _check_against_torch(index, dtype, out, grads, f"{case} ({settings}, jax.jit)")


# ---- get_namespace / asarray -------------------------------------------------------------------


def test_get_namespace():
    assert portaconv.get_namespace("jax") is jnp
    assert portaconv.get_namespace(jax) is jnp
    assert portaconv.get_namespace(jnp) is jnp
    assert "jax" in portaconv.BACKENDS
    from portaconv._backend import namespace_of

    assert namespace_of(jnp.ones(2), None, jnp.zeros(3)) is jnp


def test_asarray():
    data = [[1.0, 2.0], [3.0, 4.5]]
    x = portaconv.asarray(data, backend="jax", dtype="float64")
    assert type(x) is JAX_ARRAY and x.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(x), np.asarray(data))
    y = portaconv.asarray(np.asarray(data), backend="jax", dtype="float32")
    assert type(y) is JAX_ARRAY and y.dtype == jnp.float32
    z = portaconv.asarray(x, backend="numpy")  # through the host
    assert type(z) is np.ndarray and z.dtype == np.float64
    t = portaconv.asarray(torch.tensor(data), backend="jax", dtype="float64")
    np.testing.assert_array_equal(np.asarray(t), np.asarray(data))
    assert portaconv.asarray(x, backend="jax").dtype == jnp.float64
    # A traced array of the backend's own library goes to jnp.asarray, never through the host.
    doubled = jax.jit(lambda a: 2.0 * portaconv.asarray(a, backend="jax", dtype="float64"))(x)
    np.testing.assert_array_equal(np.asarray(doubled), 2.0 * np.asarray(data))


def test_asarray_float64_without_x64():
    with jax.enable_x64(False):
        assert portaconv.asarray([1.0], backend="jax", dtype="float32").dtype == jnp.float32
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Explicitly requested dtype", UserWarning)  # JAX's own
            with pytest.raises(ValueError, match=r"made float32 where .*float64.* was asked for; enable 64-bit floats with jax\.config\.update\('jax_enable_x64', True\)"):
                portaconv.asarray([1.0, 2.0], backend="jax", dtype="float64")
    assert portaconv.asarray([1.0], backend="jax", dtype="float64").dtype == jnp.float64  # restored


# ---- bad input on eager JAX arrays -------------------------------------------------------------

rng = np.random.default_rng(0)
x_np = rng.standard_normal((2, 4, 8, 8))
w_np = rng.standard_normal((6, 4, 3, 3))


def _jx(a, dtype=None):
    return jnp.asarray(a, dtype=dtype)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: F.conv2d(_jx(x_np), w_np), TypeError, r"arrays from different libraries: jax and numpy; move them to one backend first"),
        (lambda: F.conv2d(x_np, _jx(w_np)), TypeError, r"arrays from different libraries: jax and numpy"),
        (lambda: F.relu_backward(torch.ones(3, dtype=torch.float64), _jx(np.ones(3))), TypeError, r"arrays from different libraries: jax and torch"),
        (lambda: F.linear(_jx(np.ones((2, 3))), _jx(np.ones((4, 3))), np.ones(4)), TypeError, r"jax and numpy"),
        (lambda: F.relu_backward(1.0, _jx(np.ones(3))), TypeError, r"expected an array, got float"),
        (lambda: F.conv2d(_jx(x_np, jnp.float16), _jx(w_np, jnp.float16)), TypeError, r"conv2d: input must have a real floating dtype \(float32 or float64\), got float16"),
        (lambda: F.conv2d(_jx(x_np), _jx(w_np, jnp.float32)), TypeError, r"weight has dtype float32 but input has dtype float64"),
        (lambda: F.conv2d(_jx(x_np), _jx(w_np[:, :3])), ValueError, r"expects 3 input channels .*has 4"),
        (lambda: F.conv2d_backward(_jx(np.zeros((2, 6, 5, 5))), _jx(x_np), _jx(w_np)), ValueError, r"grad_output has shape \(2, 6, 5, 5\), expected \(2, 6, 6, 6\)"),
        (lambda: F.max_pool2d_backward(_jx(np.zeros((2, 4, 4, 4))), _jx(x_np), 2, indices=_jx(np.zeros((2, 4, 4, 4)))), TypeError, r"indices must have an integer dtype"),
        (lambda: F.nll_loss(_jx(np.zeros((3, 4))), _jx(np.zeros(3))), TypeError, r"nll_loss: target must hold integer class indices, got dtype float64"),
        (lambda: F.nll_loss(_jx(np.zeros((3, 4))), _jx([0, 5, 1])), ValueError, r"nll_loss: target value 5 is out of range for 4 classes \(expected 0\.\.3 or ignore_index=-100\)"),
        (lambda: F.cross_entropy(_jx(np.zeros((3, 4))), _jx([0, -2, 1])), ValueError, r"cross_entropy: target value -2 is out of range for 4 classes"),
        (lambda: F.nll_loss_backward(_jx(1.0), _jx(np.zeros((3, 4))), _jx([0, 4, 1])), ValueError, r"nll_loss_backward: target value 4 is out of range"),
        (lambda: F.cross_entropy_backward(_jx(1.0), _jx(np.zeros((3, 4))), _jx([9, 1, 1]), ignore_index=1), ValueError, r"target value 9 is out of range for 4 classes \(expected 0\.\.3 or ignore_index=1\)"),
        (lambda: F.cross_entropy(_jx(np.zeros((3, 4))), _jx([0, 1, 2]), label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0, 1\]"),
        (lambda: F.softmax(_jx(np.zeros((3, 4))), dim=2), ValueError, r"softmax: dim=2 is out of range"),
        (lambda: F.local_response_norm(_jx(np.zeros((3, 4))), 2), ValueError, r"at least 3 dims"),
        (lambda: F.linear(_jx(np.zeros((2, 5))), _jx(np.zeros((3, 4)))), ValueError, r"must end in in_features=4"),
    ],
)
def test_eager_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_shape_errors_raise_while_tracing():
    """Shape and dtype checks are static: the same errors come out of jax.jit's trace."""
    with pytest.raises(ValueError, match=r"conv2d_backward: grad_output has shape \(2, 6, 5, 5\), expected \(2, 6, 6, 6\)"):
        jax.jit(F.conv2d_backward)(_jx(np.zeros((2, 6, 5, 5))), _jx(x_np), _jx(w_np))
    with pytest.raises(TypeError, match=r"weight has dtype float32 but input has dtype float64"):
        jax.jit(F.linear)(_jx(np.ones((2, 3))), _jx(np.ones((4, 3)), jnp.float32))


def test_out_of_range_target_under_jit_selects_no_class():
    """Under jit the target values are not read (no host synchronization): an out-of-range target
    raises nothing and its sample's loss is 0."""
    losses = jax.jit(lambda x, t: F.nll_loss(x, t, reduction="none"))(_jx(np.ones((3, 4))), _jx([0, 5, 1]))
    np.testing.assert_array_equal(np.asarray(losses), [-1.0, 0.0, -1.0])


def test_jit_mixes_traced_and_closed_over_arrays():
    """A jitted function may close over concrete arrays (weights) and trace its arguments; jax.grad
    through conv2d agrees with conv2d_backward."""
    x, w, b = _jx(x_np), _jx(w_np), _jx(rng.standard_normal(6))
    g = _jx(rng.standard_normal((2, 6, 6, 6)))
    out = jax.jit(lambda a: F.conv2d(a, w, b))(x)
    assert_close(out, F.conv2d(x_np, w_np, np.asarray(b)), what="conv2d with closed-over weight")
    grad_x = jax.jit(jax.grad(lambda a: jnp.sum(F.conv2d(a, w, b) * g)))(x)
    assert_close(grad_x, F.conv2d_backward(g, x, w, b)[0], what="jax.grad of conv2d")
    target = _jx([1, 0])
    loss = jax.jit(lambda logits: F.cross_entropy(logits, target))(_jx(np.zeros((2, 3))))
    assert_close(loss, np.log(3.0), what="cross_entropy with closed-over target")


_DEFAULT_FLAGS_SCRIPT = """
import os, sys
import jax
import numpy as np
import portaconv
import portaconv.functional as F
from portaconv.testing import CASES, Backend, assert_close, make_inputs, run_case, torch_reference

assert "XLA_FLAGS" not in os.environ
jax.config.update("jax_enable_x64", True)
JAX = Backend("jax", jax.numpy)
for index in map(int, sys.argv[1:]):
    case = CASES[index]
    rng = np.random.default_rng(index)
    inputs = make_inputs(case, rng)
    with portaconv.options(kernels="reference"):
        grad_output = rng.standard_normal(np.shape(getattr(F, case.op)(*inputs, **case.params)))
    ref_out, ref_grads = torch_reference(case, inputs, grad_output)
    for dtype in ("float32", "float64"):
        for jit in (False, True):
            out, grads = run_case(case, inputs, grad_output, JAX, dtype, jit=jit)
            what = f"{case} {dtype} jit={jit}"
            assert_close(out, ref_out, dtype=dtype, what=what)
            for grad, ref in zip(grads, ref_grads):
                if ref is not None:
                    assert_close(grad, ref, dtype=dtype, what=what)
print("checked", len(sys.argv) - 1)
"""


def test_xla_default_flags():
    """The suite compiles JAX with cheaper XLA flags (tests/conftest.py); a convolution, a max pool
    and a loss, eagerly and under jit in both dtypes, with XLA's defaults as users run them."""
    import subprocess
    import sys

    picks = [next(i for i, c in enumerate(CASES) if c.op == op) for op in ("conv2d", "max_pool2d", "cross_entropy")]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", _DEFAULT_FLAGS_SCRIPT, *map(str, picks)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "checked 3"
