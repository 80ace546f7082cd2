"""``portaconv check``: every functional op, forward and backward, on one backend (its kernels and
``"auto"`` choices, as a user runs it) against float64 NumPy on the Array API reference path
(``portaconv.options(reference=True)``: reference primitives, im2col, col2im gradients), with no
torch needed."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import options
from ..testing import CASES, TOLERANCES, Backend, available_backends, make_inputs, max_error, run_case

__all__ = ["run_check"]


def run_check(backend_name, *, device=None, cases=CASES, out=print) -> int:
    """Print a pass/fail table per op and dtype; return 0 when everything is within tolerance.

    The backend runs under the settings in force; the float64 NumPy reference runs under
    ``portaconv.options(reference=True)``, so no compiled kernel checks itself."""
    from .._backend import get_namespace

    if backend_name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)  # the float64 half of the check needs it
    if backend_name == "torch-cuda":
        backend = next(b for b in available_backends([backend_name]))
    else:
        backend = Backend(backend_name, get_namespace(backend_name), device)
    reference = Backend("numpy", get_namespace("numpy"))
    rows = {}
    for index, case in enumerate(cases):
        rng = np.random.default_rng(index)
        inputs = make_inputs(case, rng)
        ref_out, ref_grads = None, None
        for dtype in ("float32", "float64"):
            key = (case.op, dtype)
            row = rows.setdefault(key, {"cases": 0, "forward": 0.0, "backward": 0.0, "errors": []})
            row["cases"] += 1
            try:
                if ref_out is None:
                    with options(reference=True):
                        shape = np.shape(getattr(F, case.op)(*inputs, **case.params))
                        grad_output = rng.standard_normal(shape)
                        ref_out, ref_grads = run_case(case, inputs, grad_output, reference, "float64")
                out_b, grads_b = run_case(case, inputs, grad_output, backend, dtype)
                row["forward"] = max(row["forward"], max_error(out_b, ref_out))
                for grad, ref in zip(grads_b, ref_grads):
                    if ref is not None:
                        row["backward"] = max(row["backward"], max_error(grad, ref))
            except Exception as error:  # a crash is a failure of that op, reported in the table
                row["errors"].append(f"{case}: {type(error).__name__}: {error}")
    failures = 0
    out(f"portaconv check --backend {backend.name}: {len(cases)} cases per dtype against float64 NumPy (Array API reference path)")
    out(f"{'op':24s} {'dtype':8s} {'cases':>5s} {'forward err':>12s} {'backward err':>12s}  result")
    for (op, dtype), row in rows.items():
        tolerance = TOLERANCES[dtype]
        ok = not row["errors"] and row["forward"] <= tolerance and row["backward"] <= tolerance
        failures += not ok
        out(f"{op:24s} {dtype:8s} {row['cases']:5d} {row['forward']:12.2e} {row['backward']:12.2e}  {'PASS' if ok else 'FAIL'}")
        for message in row["errors"][:3]:
            out(f"    {message}")
    out(f"{len(rows) - failures} passed, {failures} failed")
    return 1 if failures else 0
