"""`mpiexec -n 2 portaconv train --distributed` and `portaconv evaluate --dask` as a user runs them
(issue 17), on the tiny synthetic MNIST of tests/test_train_robust.py."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from portaconv.app import cli
from portaconv.app.checkpoint import read_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from test_train_robust import write_data  # noqa: E402

sys.path.remove(str(Path(__file__).parent))

THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"), n_train=640, n_test=200)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("PORTACONV_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def flags(data, *more, epochs=1, augment="none", dtype="float64"):
    return ["train", "--dataset", "mnist", "--data-dir", str(data), "--augment", augment, "--limit", "640",
            "--epochs", str(epochs), "--batch-size", "64", "--dtype", dtype, "--progress", "lines", *map(str, more)]


@pytest.fixture(scope="module")
def mpirun():
    """``mpiexec -n 2 python -m portaconv ARGS``; skip without mpi4py or a working mpiexec."""
    pytest.importorskip("mpi4py")
    local = Path(sys.executable).with_name("mpiexec")
    mpiexec = str(local) if local.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install 'portaconv[mpi]')")
    version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True).stdout
    extra = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) if "Open MPI" in version else []

    def run(*args, env=None, timeout=300, ranks=None):
        ranks = ranks or [list(args)] * 2
        command = [mpiexec, *extra]
        for i, own in enumerate(ranks):
            command += ([":"] if i else []) + ["-n", "1", sys.executable, "-m", "portaconv", *map(str, own)]
        environment = {k: v for k, v in os.environ.items() if k != "PORTACONV_DATA"}
        environment.update(THREADS, **(env or {}))
        start = time.monotonic()
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
        return done, time.monotonic() - start

    return run


def single(capsys, *args):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    return captured.out


def metrics(folder):
    return json.loads((Path(folder) / "metrics.json").read_text())


def test_distributed_without_mpi4py_names_the_extra(capsys, data, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    code = cli.main(flags(data, "--distributed", "--out", "run"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'portaconv[mpi]'" in err and not Path("run").exists()


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-5)])
def test_two_ranks_train_as_one_process(mpirun, capsys, data, dtype, rtol):
    """Global batch 64 = 2 × 32, augmentation off: the per-epoch losses and accuracies of one process."""
    done, _ = mpirun(*flags(data, "--distributed", "--out", "two", dtype=dtype))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("portaconv train --distributed:") == 1 and done.stdout.count("epoch 1:") == 1  # rank 0 only
    assert "2 ranks × batch 32 = global batch 64" in done.stdout
    single(capsys, *flags(data, "--out", "one", dtype=dtype))
    one, two = metrics("one"), metrics("two")
    assert two["world_size"] == 2 and "world_size" not in one and two["status"] == "complete"
    for a, b in zip(one["epochs"], two["epochs"]):
        np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=rtol)
        np.testing.assert_allclose(b["test_loss"], a["test_loss"], rtol=rtol)
        assert (b["train_accuracy"], b["test_accuracy"]) == (a["train_accuracy"], a["test_accuracy"])
    for key, value in read_checkpoint(Path("one") / "checkpoint.npz").model_state.items():
        np.testing.assert_allclose(read_checkpoint(Path("two") / "checkpoint.npz").model_state[key], value,
                                   rtol=100 * rtol, atol=100 * rtol)
    assert sorted(p.name for p in Path("two").iterdir()) == ["checkpoint.npz", "curves.png", "metrics.json"]


def test_a_failing_rank_stops_the_job_and_resume_equals_one_process(mpirun, capsys, data):
    """Rank 1 raises at epoch 2, step 3 (the PORTACONV_FAULT_* testing hook): the job stops within
    seconds naming the rank, the folder keeps epoch 1; --resume on 2 ranks finishes the run as one
    process runs it straight, augmentation (flip+shift1) included."""
    args = flags(data, "--distributed", "--out", "run", epochs=2, augment="flip+shift1")
    done, seconds = mpirun(*args, env={"PORTACONV_FAULT_RANK": "1", "PORTACONV_FAULT_STEP": "13"}, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and seconds < 60, output
    assert "rank 1 of 2 failed" in output and "injected failure at epoch 2, step 3" in output
    assert [e["epoch"] for e in metrics("run")["epochs"]] == [1]
    assert read_checkpoint(Path("run") / "checkpoint.npz").metadata["epoch"] == 1
    resumed, _ = mpirun("train", "--resume", "run", "--distributed", "--progress", "lines")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming at epoch 2 of 2" in resumed.stdout
    single(capsys, *flags(data, "--out", "one", epochs=2, augment="flip+shift1"))
    one, two = metrics("one"), metrics("run")
    assert two["resumes"][0]["world_size"] == 2 and two["status"] == "complete"
    for a, b in zip(one["epochs"], two["epochs"], strict=True):
        np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-10)
        assert (b["train_accuracy"], b["test_accuracy"]) == (a["train_accuracy"], a["test_accuracy"])


def test_a_batch_the_ranks_do_not_divide_is_refused_once(mpirun, data):
    done, _ = mpirun(*flags(data, "--distributed", "--out", "run", "--batch-size", 65))
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1, done.stderr
    assert "--batch-size 65" in done.stderr and "not a multiple of 2" in done.stderr
    assert not Path("run").exists()


def test_ranks_with_other_flags_are_named_at_start(mpirun, data):
    base = flags(data, "--distributed", "--out", "run")
    done, _ = mpirun(ranks=[base, base + ["--lr", "0.2"]])
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1, done.stderr
    assert "rank 1 flag 'lr' = 0.2, rank 0 has '(not given)'" in done.stderr
    assert not Path("run").exists()


def test_evaluate_dask_equals_one_process(capsys, data):
    pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    single(capsys, *flags(data, "--out", "run", "--limit", 128))
    args = ["evaluate", "--checkpoint", "run/checkpoint.npz", "--data-dir", data]
    assert single(capsys, *args, "--dask") == single(capsys, *args)


def test_evaluate_dask_without_dask_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    code = cli.main(["evaluate", "--checkpoint", "none.npz", "--dask"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'portaconv[dask]'" in err
