"""The benchmark harness: rows, the isolated mode, the table."""

import numpy as np
import pytest

from portaconv.app import bench

pytest.importorskip("torch")


@pytest.mark.parametrize("isolate", [False, True])
def test_run_suite_rows(isolate):
    lines = []
    rows = bench.run_suite("seed", only=["seed 002"], repeat=2, warmup=1, budget=0.01, isolate=isolate, out=lines.append)
    assert [(r["workload"], r["mode"]) for r in rows] == [("conv2d seed 002: 1×1×28², 6@3×3", "forward+backward")]
    row = rows[0]
    assert row["seconds"] > 0 and row["torch_seconds"] > 0
    assert row["ratio"] == pytest.approx(row["torch_seconds"] / row["seconds"])
    assert row["max_error"] < 1e-5 and row["torch_max_error"] < 1e-5
    assert len(lines) == 1 and "ratio" in lines[0]
    settings = {"machine": "m", "processor": "p", "cores": 2, "date": "d", "versions": {"numpy": np.__version__},
                "backend": "numpy", "dtype": "float32", "repeat": 2, "warmup": 1, "command": "c", "isolated": isolate}
    table = bench.markdown(rows, settings)
    assert ("each workload in a fresh process" in table) == isolate
    assert "| conv2d seed 002: 1×1×28², 6@3×3 | forward+backward |" in table


def test_isolated_run_needs_a_backend_name():
    import array_api_compat.numpy as xp

    with pytest.raises(ValueError, match="isolate needs the backend's name"):
        bench.run_suite("seed", backend=xp, only=["seed 002"], isolate=True)


def test_gpu_runs_state_the_gpu_and_cuda_versions():
    """A GPU run's table names the device, CUDA's driver and runtime (from CUDA's 1000·major + 10·minor
    numbers) and TF32 on both sides; a CPU run's has no GPU line."""
    settings = {"machine": "m", "processor": "p", "cores": 16, "date": "d", "backend": "cupy", "dtype": "float32",
                "repeat": 2, "warmup": 1, "command": "c", "versions": {"cupy": "14.2.0"},
                "cuda": {"driver": 13000, "runtime": 13020, "device": "NVIDIA H100 80GB HBM3"},
                "tf32": {"cupy CUPY_TF32": "0", "torch cudnn.allow_tf32": False}}
    table = bench.markdown([], settings)
    assert "GPU: NVIDIA H100 80GB HBM3, CUDA driver 13.0, runtime 13.2." in table
    assert "cupy 14.2.0" in table and "'torch cudnn.allow_tf32': False" in table
    del settings["cuda"]
    assert "GPU:" not in bench.markdown([], settings)
