"""PyTorch's own OpInfo samples through portaconv's mirrored ops: forward and gradients vs torch.

``torch.testing._internal.common_methods_invocations.op_db`` holds, per torch op, the sample
inputs torch tests itself with (edge shapes, zero-size and 0-d inputs, one-element tuples, every
keyword). Each float64 CPU sample of an op portaconv mirrors runs through portaconv with its
arrays as NumPy arrays; the output must match torch's and, for every input torch differentiates,
``f_backward`` must match torch's autograd (same random ``grad_output``).

Outcomes per sample: *passed*; *failed* (wrong values, a missing gradient, or a backward that
raised); *rejected* (our forward raised on an input torch accepts). The goal is no failure and no
rejection. Run ``python tests/test_opinfo.py`` for the table.

The harness runs in a subprocess: importing ``torch.testing._internal`` has global side effects
(it loads its own Hypothesis profile over tests/conftest.py's, seeds the global RNGs, parses
``sys.argv`` and calls ``torch.backends.disable_global_flags()``) that must not leak into the rest
of the session. It needs the ``expecttest`` package (imported by torch's test utilities); without
it the tests skip.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys

import pytest

#: OpInfo name → portaconv.functional name. Ops another module adds are tested once they exist.
OPS = {
    "nn.functional.conv2d": "conv2d",
    "nn.functional.conv_transpose2d": "conv_transpose2d",
    "nn.functional.max_pool2d": "max_pool2d",
    "nn.functional.avg_pool2d": "avg_pool2d",
    "nn.functional.adaptive_avg_pool2d": "adaptive_avg_pool2d",
    "nn.functional.relu": "relu",
    "nn.functional.leaky_relu": "leaky_relu",
    "nn.functional.silu": "silu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "softmax": "softmax",
    "log_softmax": "log_softmax",
    "nn.functional.nll_loss": "nll_loss",
    "nn.functional.cross_entropy": "cross_entropy",
    "nn.functional.mse_loss": "mse_loss",
    "nn.functional.binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits",
    "nn.functional.linear": "linear",
    "flatten": "flatten",
    "nn.functional.local_response_norm": "local_response_norm",
    "nn.functional.batch_norm": "batch_norm",
}

#: What is not run, and why (per kind).
SKIPPED = {
    "nn.functional.dropout": "random: torch's mask cannot be reproduced (the dropout tests check statistics instead)",
    "variant 'with_dtype'": "softmax/log_softmax(dtype=...) computing in another dtype is not part of portaconv's API",
    "variant 'complex'": "complex inputs: portaconv ops take float32/float64 only",
    "variant 'without_cudnn'": "the same samples as the default variant; cuDNN only matters on CUDA",
    "dtypes": "only float64 samples run: float16/bfloat16/complex are documented as unsupported, and "
    "float32 adds nothing to the semantics checked here (tests/test_parity.py covers it)",
    "batch_norm running stats": "torch updates running_mean/running_var in place; portaconv's batch_norm is "
    "pure (batch_norm_running_stats returns them): only the output and the gradients are compared",
}

TOLERANCE = 1e-10  # float64, relative to max(1, max |torch|): testing.max_error


# ---- the harness (runs in the subprocess) -------------------------------------------------------


def _to_numpy(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone().numpy()
    if isinstance(value, (tuple, list)):
        return type(value)(_to_numpy(v) for v in value)
    return value


def _ours_kwargs(opinfo_name, kwargs):
    kwargs = dict(kwargs)
    if opinfo_name == "flatten":
        kwargs.setdefault("start_dim", 0)  # torch.flatten starts at 0; portaconv's, like nn.Flatten, at 1
    return kwargs


def _describe(sample) -> str:
    import torch

    def d(v):
        if isinstance(v, torch.Tensor):
            return f"{tuple(v.shape)}{str(v.dtype)[6:]}"
        if isinstance(v, (tuple, list)):
            return "(" + ",".join(d(x) for x in v) + ")"
        return repr(v)

    parts = [d(sample.input)] + [d(a) for a in sample.args] + [f"{k}={d(v)}" for k, v in sample.kwargs.items()]
    return ", ".join(parts)


def _run_sample(opinfo, ours_name, sample, rng):
    """'passed', or ('failed' | 'rejected', message)."""
    import numpy as np
    import torch

    import portaconv.functional as F
    from portaconv.testing import max_error

    forward = getattr(F, ours_name)
    backward = getattr(F, ours_name + "_backward")
    positional = [sample.input, *sample.args]
    np_args = [_to_numpy(a) for a in positional]
    np_kwargs = _ours_kwargs(opinfo.name, {k: _to_numpy(v) for k, v in sample.kwargs.items()})
    # torch after the copies: batch_norm updates its running statistics in place.
    expected = opinfo.op(*positional, **sample.kwargs)
    try:
        out = forward(*np_args, **np_kwargs)
    except Exception as error:  # noqa: BLE001 - every raise on a valid torch input is a rejection
        return "rejected", f"{type(error).__name__}: {error}"
    outs = out if isinstance(out, tuple) else (out,)
    torch_outs = expected if isinstance(expected, tuple) else (expected,)
    if len(outs) != len(torch_outs):
        return "failed", f"{len(outs)} outputs, torch gives {len(torch_outs)}"
    for position, (ours, theirs) in enumerate(zip(outs, torch_outs)):
        theirs = theirs.detach().numpy()
        ours = np.asarray(ours)
        if theirs.dtype.kind in "iub":
            if not np.array_equal(ours, theirs):
                return "failed", f"output {position} (integer) differs from torch's"
            continue
        if type(outs[position]) is not np.ndarray or ours.dtype != theirs.dtype:
            kind = type(outs[position])
            return "failed", f"output {position} is a {kind.__module__}.{kind.__name__} of {ours.dtype}, expected a numpy.ndarray of {theirs.dtype}"
        error = max_error(ours, theirs)
        if not error <= TOLERANCE:
            return "failed", f"output {position}: error {error:.3g} (shapes {ours.shape} vs {theirs.shape})"
    # Gradients: every tensor torch differentiates, found by the names of our positional array inputs.
    names = forward.rule.inputs
    sources = {name: positional[i] if i < len(positional) else sample.kwargs.get(name) for i, name in enumerate(names)}
    wanted = {name: t for name, t in sources.items() if isinstance(t, torch.Tensor) and t.requires_grad}
    stray = [
        k for k, v in sample.kwargs.items() if isinstance(v, torch.Tensor) and v.requires_grad and k not in names
    ]
    if stray:
        return "failed", f"torch differentiates {stray}, which have no gradient slot"
    if not wanted:
        return "passed"
    first = torch_outs[0]
    grad_output = rng.standard_normal(tuple(first.shape))
    torch_grads = torch.autograd.grad(first, list(wanted.values()), torch.from_numpy(grad_output), allow_unused=True)
    try:
        grads = backward(grad_output, *np_args, **np_kwargs)
    except Exception as error:  # noqa: BLE001
        return "failed", f"backward raised {type(error).__name__}: {error}"
    if len(grads) != len(names):
        return "failed", f"backward gave {len(grads)} gradients for the inputs {names}"
    for (name, _), theirs in zip(wanted.items(), torch_grads):
        ours = grads[names.index(name)]
        if theirs is None:
            theirs = torch.zeros_like(wanted[name])
        if ours is None:
            return "failed", f"no gradient for {name}, torch has one"
        if type(ours) is not np.ndarray:
            return "failed", f"gradient of {name} is a {type(ours).__module__}.{type(ours).__name__}, expected a numpy.ndarray"
        error = max_error(ours, theirs.numpy())
        if not error <= TOLERANCE:
            return "failed", f"gradient of {name}: error {error:.3g} (shapes {np.shape(ours)} vs {tuple(theirs.shape)})"
    return "passed"


def run_harness(opinfo_names=None) -> dict:
    """{opinfo name: {"passed": n, "failed": [...], "rejected": [...], "missing": bool}}."""
    import numpy as np
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    import portaconv.functional as F

    names = list(OPS) if opinfo_names is None else list(opinfo_names)
    results = {}
    for name in names:
        ours = OPS[name]
        row = results[name] = {"passed": 0, "failed": [], "rejected": [], "missing": not hasattr(F, ours)}
        if row["missing"]:
            continue
        (opinfo,) = [o for o in op_db if o.name == name and o.variant_test_name == ""]
        rng = np.random.default_rng(0)
        for sample in opinfo.sample_inputs("cpu", torch.float64, requires_grad=opinfo.supports_autograd):
            outcome = _run_sample(opinfo, ours, sample, rng)
            if outcome == "passed":
                row["passed"] += 1
            else:
                row[outcome[0]].append(f"{_describe(sample)}: {outcome[1]}")
    return results


# ---- the tests (this process) -------------------------------------------------------------------

pytest.importorskip("torch")
if importlib.util.find_spec("expecttest") is None:
    pytest.skip(
        "torch.testing._internal (the OpInfo database) imports expecttest, which is not installed: pip install expecttest",
        allow_module_level=True,
    )


@functools.lru_cache(maxsize=None)
def _results():
    completed = subprocess.run(
        [sys.executable, __file__, "--json"], capture_output=True, text=True, timeout=900, env={**os.environ}
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the OpInfo harness failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("opinfo_name", list(OPS))
def test_opinfo_samples(opinfo_name):
    row = _results()[opinfo_name]
    if row["missing"]:
        pytest.skip(f"portaconv.functional has no {OPS[opinfo_name]} yet")
    problems = [f"rejected: {m}" for m in row["rejected"]] + [f"failed: {m}" for m in row["failed"]]
    assert not problems, f"{opinfo_name}: {row['passed']} passed, {len(problems)} not:\n" + "\n".join(problems[:20])
    assert row["passed"] > 0


def _table(results) -> str:
    lines = [f"{'OpInfo':50s} {'passed':>6s} {'failed':>6s} {'rejected':>8s}"]
    for name, row in results.items():
        if row["missing"]:
            lines.append(f"{name:50s} {'(not in portaconv.functional)':>22s}")
            continue
        lines.append(f"{name:50s} {row['passed']:6d} {len(row['failed']):6d} {len(row['rejected']):8d}")
        for message in (row["rejected"] + row["failed"])[:5]:
            lines.append(f"    {message}")
    return "\n".join(lines)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    as_json = "--json" in arguments
    results = run_harness([a for a in arguments if a != "--json"] or None)
    if as_json:
        print(json.dumps(results))
    else:
        print(_table(results))
        for kind, reason in SKIPPED.items():
            print(f"skipped {kind}: {reason}")
