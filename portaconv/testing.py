"""Testing helpers: tolerances, the op-case registry, the torch oracle and finite differences.

Used by the test suite and by ``portaconv check``. A case names a functional op, the shapes of its
positional inputs and its keyword parameters; :func:`run_case` evaluates the op and its backward on
any backend, :func:`torch_reference` evaluates torch.nn.functional with autograd in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import functional as F
from ._backend import to_numpy

__all__ = [
    "Backend",
    "available_backends",
    "TOLERANCES",
    "Target",
    "Case",
    "CASES",
    "assert_close",
    "max_error",
    "make_inputs",
    "to_backend",
    "run_case",
    "jit_function",
    "torch_reference",
]

@dataclass(frozen=True)
class Backend:
    """A namespace and the device its test arrays live on."""

    name: str
    xp: object
    device: object = None

    def __str__(self):
        return self.name


def available_backends(selection=None) -> list:
    """Backends usable here: numpy, array_api_strict, torch (CPU), jax, cupy and torch-cuda with a GPU.

    ``selection`` (default: the ``PORTACONV_BACKENDS`` variable, comma-separated) picks a subset;
    naming a backend that is not usable raises ``ValueError``.
    """
    import os

    from ._backend import get_namespace

    found = {}
    for name in ("numpy", "array_api_strict", "torch", "cupy", "jax"):
        try:
            found[name] = Backend(name, get_namespace(name))
        except (ImportError, RuntimeError):
            continue
    if "torch" in found:
        import torch

        if torch.cuda.is_available():
            found["torch-cuda"] = Backend("torch-cuda", found["torch"].xp, "cuda")
    selection = os.environ.get("PORTACONV_BACKENDS", "") if selection is None else selection
    names = [n.strip() for n in selection.split(",") if n.strip()] if isinstance(selection, str) else list(selection)
    if not names:
        return list(found.values())
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"PORTACONV_BACKENDS names {missing}, not usable here; usable: {sorted(found)}")
    return [found[n] for n in names]


#: Allowed error, relative to ``max(1, max |reference|)``, per dtype: the one place tolerances live.
TOLERANCES = {"float32": 5e-5, "float64": 1e-11}


@dataclass(frozen=True)
class Target:
    """An integer class-index input: its shape, the class count, and how many to mark ignored."""

    shape: tuple
    classes: int
    ignore_every: int = 0  # every k-th target becomes ignore_index (0: none)


@dataclass(frozen=True)
class Case:
    """One configuration of one op: positional input shapes (``None`` for an absent optional
    array, :class:`Target` for class indices) and keyword parameters."""

    op: str
    inputs: tuple
    params: dict = field(default_factory=dict)
    values: str = "normal"  # "normal", "ties" (small integers: many equal values), "large" (±1e4)

    def __str__(self):
        shapes = ",".join("None" if s is None else ("T" + str(s.shape) if isinstance(s, Target) else str(s)) for s in self.inputs)
        params = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.op}[{shapes}|{params}|{self.values}]".replace(" ", "")


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1].replace("torch.", "")


def max_error(actual, expected) -> float:
    """max |actual - expected| / max(1, max |expected|), NaN-aware (NaN must match NaN)."""
    actual = np.asarray(to_numpy(actual), dtype=np.float64)
    expected = np.asarray(to_numpy(expected), dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    if actual.size == 0:
        return 0.0
    nan = np.isnan(expected)
    if not np.array_equal(nan, np.isnan(actual)):
        return float("inf")
    same_inf = np.isinf(expected) & (actual == expected)
    keep = ~(nan | same_inf)
    if not keep.any():
        return 0.0
    scale = max(1.0, float(np.max(np.abs(expected[keep]))))
    return float(np.max(np.abs(actual[keep] - expected[keep]))) / scale


def assert_close(actual, expected, *, dtype="float64", what=""):
    """Assert :func:`max_error` is within ``TOLERANCES[dtype]``."""
    name = _dtype_name(dtype)
    error = max_error(actual, expected)
    tolerance = TOLERANCES[name]
    shape_a = np.shape(to_numpy(actual))
    shape_e = np.shape(to_numpy(expected))
    assert error <= tolerance, f"{what}: error {error:.3g} > {tolerance:g} ({name}); shapes {shape_a} vs {shape_e}"


def make_inputs(case: Case, rng) -> list:
    """Float64 NumPy inputs (int64 for targets) for a case."""
    inputs = []
    for spec in case.inputs:
        if spec is None:
            inputs.append(None)
        elif isinstance(spec, Target):
            target = rng.integers(0, spec.classes, size=spec.shape).astype(np.int64)
            if spec.ignore_every:
                flat = target.reshape(-1)
                flat[:: spec.ignore_every] = case.params.get("ignore_index", -100)
            inputs.append(target)
        elif case.values == "ties":
            inputs.append(rng.integers(-2, 3, size=spec).astype(np.float64))
        elif case.values == "large":
            inputs.append(rng.choice([-1e4, 1e4, 0.0, 3.0], size=spec))
        else:
            inputs.append(rng.standard_normal(spec))
    return inputs


def to_backend(array, backend: Backend, dtype=None):
    """A NumPy array on ``backend``: floats in ``dtype`` (a name or dtype), integers as int64."""
    if array is None:
        return None
    xp = backend.xp
    if array.dtype.kind == "f":
        dtype = getattr(xp, dtype) if isinstance(dtype, str) else dtype
        return xp.asarray(array, dtype=dtype, device=backend.device)
    return xp.asarray(array, dtype=xp.int64, device=backend.device)


def run_case(case: Case, inputs, grad_output, backend: Backend, dtype, *, jit: bool = False):
    """Forward and backward of a case on ``backend`` in ``dtype`` (given NumPy inputs).

    Returns ``(output, grads)`` as backend arrays; ``grads`` holds one entry per positional input.
    ``jit=True`` (JAX only) runs both in one ``jax.jit`` with the parameters closed over and every
    array an argument: traced under the ``portaconv.options`` in force at the call, compiled anew
    for each call.
    """
    forward = getattr(F, case.op)
    backward = getattr(F, case.op + "_backward")
    arrays = [to_backend(a, backend, dtype) for a in inputs]
    grad_output = to_backend(grad_output, backend, dtype)
    if jit:
        return jit_function(lambda g, *a: (forward(*a, **case.params), backward(g, *a, **case.params)))(grad_output, *arrays)
    return forward(*arrays, **case.params), backward(grad_output, *arrays, **case.params)


# XLA's HLO passes run as usual; only LLVM's code generation is unoptimized: the same graph, about
# a third less compile time for the tests' many small one-off functions.
JIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def jit_function(function):
    """``jax.jit(function)`` compiled as the tests compile (:data:`JIT_COMPILER_OPTIONS`); ``None``
    arguments (absent optional inputs) are empty pytrees, not traced."""
    import jax

    return jax.jit(function, compiler_options=JIT_COMPILER_OPTIONS)


_TORCH_NAMES = {"tanh": "tanh", "sigmoid": "sigmoid", "flatten": "flatten"}


def torch_reference(case: Case, inputs, grad_output):
    """torch.nn.functional forward and autograd gradients in float64 (``None`` for non-float inputs)."""
    import torch
    import torch.nn.functional as tf

    tensors = [None if a is None else torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in inputs]
    function = getattr(torch, case.op) if case.op in _TORCH_NAMES else getattr(tf, case.op)
    params = dict(case.params)
    if case.op == "flatten":
        params.setdefault("start_dim", 1)  # torch.flatten starts at 0; portaconv's, like nn.Flatten, at 1
    out = function(*tensors, **params)
    out.backward(torch.tensor(grad_output))
    grads = [None if t is None or not t.requires_grad else t.grad.numpy() for t in tensors]
    return out.detach().numpy(), grads


def _conv_cases():
    cases = []
    for x, w, params in [
        # seed 003: plain, strided complete/partial, padded, and the backward configuration
        ((2, 3, 17, 23), (4, 3, 5, 8), {}),
        ((2, 3, 17, 24), (4, 3, 5, 8), {"stride": (3, 4)}),
        ((2, 3, 19, 26), (4, 3, 5, 8), {"stride": (3, 4)}),
        ((2, 3, 19, 26), (4, 3, 5, 8), {"stride": (3, 4), "padding": (7, 10)}),
        ((2, 3, 17, 24), (4, 3, 5, 8), {"stride": (3, 4), "padding": (6, 8)}),
        ((1, 1, 28, 28), (6, 1, 3, 3), {}),  # seed 002
        ((2, 4, 9, 11), (6, 2, 3, 3), {"padding": 1, "groups": 2}),
        ((2, 4, 9, 11), (4, 1, 3, 2), {"stride": (2, 3), "padding": (1, 0), "dilation": (2, 1), "groups": 4}),
        ((2, 3, 10, 10), (4, 3, 4, 4), {"padding": "same", "dilation": (1, 2)}),
        ((2, 3, 10, 9), (4, 3, 3, 2), {"padding": "same"}),
        ((2, 3, 8, 8), (5, 3, 3, 3), {"padding": "valid", "stride": 2}),
        ((1, 2, 7, 7), (3, 2, 2, 2), {"stride": 5}),  # stride larger than the kernel
        ((2, 4, 8, 9), (6, 2, 3, 3), {"stride": 2, "padding": 3, "groups": 2}),  # padding >= kernel
        ((3, 2, 6, 5), (2, 2, 1, 1), {"stride": (2, 1)}),
        ((2, 3, 7, 7), (2, 3, 7, 7), {}),  # kernel = input
        ((2, 3, 12, 13), (4, 3, 3, 3), {"dilation": 3, "padding": 2, "stride": 2}),
        ((8, 9, 9), (4, 8, 3, 3), {"padding": 1}),  # unbatched
        # 3×3 stride 1 (Winograd where forced): odd/even sizes, one-tile outputs, uneven padding
        ((3, 5, 6, 7), (4, 5, 3, 3), {"padding": 1}),
        ((2, 3, 3, 4), (2, 3, 3, 3), {}),
        ((2, 3, 8, 5), (4, 3, 3, 3), {"padding": (2, 0)}),
        ((2, 3, 6, 6), (3, 3, 3, 3), {"padding": "same"}),
    ]:
        cases.append(Case("conv2d", (x, w, (w[0],)), params))
    cases.append(Case("conv2d", ((2, 3, 9, 9), (4, 3, 3, 3), None), {"stride": 2, "padding": 1}))
    for x, w, params in [
        ((2, 4, 5, 6), (4, 3, 3, 2), {"stride": (2, 3), "padding": (1, 2), "output_padding": (1, 0), "groups": 2}),
        ((1, 2, 3, 3), (2, 2, 3, 3), {"dilation": 3, "output_padding": 2}),  # output_padding >= stride
        ((2, 3, 4, 4), (3, 1, 5, 5), {"stride": 2, "padding": 3, "dilation": 2, "groups": 3}),
        ((2, 3, 5, 5), (3, 4, 3, 3), {"stride": 1, "padding": 1}),
        ((2, 4, 6, 5), (4, 2, 4, 4), {"stride": 2, "padding": 1}),
        ((2, 3, 4, 5), (3, 2, 3, 3), {"stride": (3, 2), "output_padding": (2, 1)}),
        ((3, 4, 4), (3, 2, 2, 2), {"stride": 2}),  # unbatched
        ((2, 3, 4, 7), (3, 2, 3, 3), {}),
        ((2, 3, 6, 5), (3, 4, 3, 3), {"padding": 2}),
    ]:
        cases.append(Case("conv_transpose2d", (x, w, (w[1] * params.get("groups", 1),)), params))
    cases.append(Case("conv_transpose2d", ((2, 3, 5, 5), (3, 2, 3, 3), None), {"stride": 2}))
    return cases


def _pool_cases():
    cases = []
    for shape, params in [
        ((2, 3, 6, 6), {"kernel_size": 2}),
        ((2, 3, 18, 17), {"kernel_size": (2, 3), "stride": (4, 5)}),  # seed 003
        ((2, 3, 9, 7), {"kernel_size": (3, 2), "stride": (2, 1)}),
        ((2, 2, 7, 8), {"kernel_size": 3, "stride": 2, "padding": 1}),
        ((2, 2, 8, 7), {"kernel_size": 3, "stride": 2, "ceil_mode": True}),
        ((2, 2, 9, 9), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
        ((2, 2, 10, 9), {"kernel_size": (2, 3), "stride": (3, 2), "padding": (1, 1), "ceil_mode": True}),
        ((1, 2, 5, 5), {"kernel_size": 4, "stride": 3, "padding": 2, "ceil_mode": True}),
        ((3, 7, 7), {"kernel_size": 2, "stride": 1}),  # unbatched, overlapping windows
    ]:
        for values in ("normal", "ties"):
            cases.append(Case("max_pool2d", (shape,), params, values))
            cases.append(Case("avg_pool2d", (shape,), params, values) if values == "normal" else None)
    for shape, params in [
        ((2, 2, 9, 9), {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2}),
        ((1, 2, 9, 10), {"kernel_size": (2, 3), "dilation": (3, 2), "ceil_mode": True, "stride": 2}),
    ]:
        cases.append(Case("max_pool2d", (shape,), params, "ties"))
        cases.append(Case("max_pool2d", (shape,), params))
    for params in [
        {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
        {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
        {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
        {"kernel_size": (3, 2), "stride": (2, 2), "padding": (1, 0), "divisor_override": 5},
    ]:
        cases.append(Case("avg_pool2d", ((2, 2, 8, 9),), params))
    for shape, output_size in [
        ((2, 3, 7, 9), 3),  # uneven, overlapping windows
        ((2, 3, 10, 10), (4, 3)),
        ((2, 2, 5, 6), (None, 4)),  # None keeps the height
        ((3, 5, 7), (2, 3)),  # unbatched
        ((1, 2, 3, 4), (5, 7)),  # output larger than the input: windows of one, repeated
        ((2, 3, 8, 8), 1),  # global average
    ]:
        cases.append(Case("adaptive_avg_pool2d", (shape,), {"output_size": output_size}))
    return [c for c in cases if c is not None]


def _other_cases():
    cases = [Case("local_response_norm", ((2, 7, 5, 4),), {"size": size, "alpha": 0.3, "beta": 0.75, "k": 1.5}) for size in range(1, 7)]
    cases += [
        Case("local_response_norm", ((2, 14, 9, 7),), {"size": 6}),  # seed 003
        Case("local_response_norm", ((3, 5, 6),), {"size": 4, "alpha": 0.5}),
        Case("local_response_norm", ((2, 6, 3, 4, 2),), {"size": 3, "alpha": 0.2, "beta": 0.5, "k": 2.0}),
        Case("local_response_norm", ((2, 3, 4, 4),), {"size": 8, "alpha": 0.4}),  # window wider than C
    ]
    for op in ("relu", "tanh", "sigmoid"):
        cases += [Case(op, ((3, 4, 5),)), Case(op, ((2, 3),), values="large")]
    cases += [
        Case("leaky_relu", ((3, 4, 5),), {"negative_slope": 0.2}),
        Case("leaky_relu", ((2, 3),), values="large"),
        Case("leaky_relu", ((4, 5),), {"negative_slope": -0.5}, "ties"),  # exact zeros: the slope at 0
        Case("silu", ((3, 4, 5),)),
        Case("silu", ((2, 3),), values="large"),
    ]
    cases += [
        Case("linear", ((5, 7), (3, 7), (3,))),
        Case("linear", ((2, 4, 7), (3, 7), None)),
        Case("linear", ((7,), (3, 7), (3,))),
        Case("flatten", ((2, 3, 4, 5),)),
        Case("flatten", ((2, 3, 4, 5),), {"start_dim": 0, "end_dim": 2}),
        Case("flatten", ((2, 3, 4, 5),), {"start_dim": 2}),
    ]
    for op in ("softmax", "log_softmax"):
        cases += [
            Case(op, ((4, 6),), {"dim": 1}),
            Case(op, ((2, 3, 4),), {"dim": 0}),
            Case(op, ((2, 3, 4),), {"dim": -1}),
            Case(op, ((5, 6),), {"dim": 1}, "large"),
        ]
    for op in ("nll_loss", "cross_entropy"):
        for reduction in ("mean", "sum", "none"):
            cases += [
                Case(op, ((6, 5), Target((6,), 5), None), {"reduction": reduction}),
                Case(op, ((6, 5), Target((6,), 5, ignore_every=3), None), {"reduction": reduction}),
                Case(op, ((3, 4, 2, 3), Target((3, 2, 3), 4, ignore_every=4), None), {"reduction": reduction, "ignore_index": 1}),
                Case(op, ((5,), Target((), 5), None), {"reduction": reduction}),
            ]
        cases.append(Case(op, ((6, 5), Target((6,), 5), None), {}, "large"))
    for smoothing in (0.1, 0.5):
        cases += [
            Case("cross_entropy", ((6, 5), Target((6,), 5, ignore_every=2), None), {"label_smoothing": smoothing, "reduction": r})
            for r in ("mean", "sum", "none")
        ]
    # Class-probability targets (a float target of the input's shape, differentiated), mse_loss and
    # binary_cross_entropy_with_logits (target differentiated too). The losses' ``weight`` slot is
    # None here: torch does not differentiate class weights nor pos_weight, and the finite-difference
    # test perturbs every float input; tests/test_losses.py covers them.
    for reduction in ("mean", "sum", "none"):
        cases += [
            Case("cross_entropy", ((4, 5), (4, 5), None), {"reduction": reduction}),
            Case("cross_entropy", ((2, 3, 2, 3), (2, 3, 2, 3), None), {"reduction": reduction, "label_smoothing": 0.2}),
            Case("mse_loss", ((3, 4, 5), (3, 4, 5)), {"reduction": reduction}),
            Case("binary_cross_entropy_with_logits", ((3, 4, 5), (3, 4, 5), None), {"reduction": reduction}),
        ]
    cases += [
        Case("cross_entropy", ((5,), (5,), None), {"label_smoothing": 0.1}),  # unbatched
        Case("mse_loss", ((), ())),
        Case("binary_cross_entropy_with_logits", ((), (), None), {"reduction": "none"}),
        Case("binary_cross_entropy_with_logits", ((6, 4), (6, 4), None), {}, "large"),
    ]
    return cases


#: Every op configuration of the parity matrix.
CASES = _conv_cases() + _pool_cases() + _other_cases()
