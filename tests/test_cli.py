"""The portaconv command as a user runs it: subprocesses."""

import json
import os
import subprocess
import sys

import pytest

from portaconv.app import datasets


def _run(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "portaconv", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_check_numpy_passes():
    result = _run("check", "--backend", "numpy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "conv2d" in result.stdout and "FAIL" not in result.stdout
    assert result.stdout.strip().endswith("0 failed")


def test_check_unknown_backend_fails_clearly():
    result = _run("check", "--backend", "tensorflow")
    assert result.returncode == 2
    assert "backend='tensorflow' is not one of" in result.stderr


def test_bench_on_a_missing_backend_fails_clearly():
    """Before any work: which backend, and what to install (CuPy without a GPU says so instead)."""
    pytest.importorskip("torch")
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    result = _run("bench", "--suite", "gpu", "--backend", "cupy")
    assert result.returncode == 2
    assert "backend 'cupy' is not installed; install it with: pip install 'portaconv[cupy]'" in result.stderr


def test_train_offline_without_data_fails_clearly(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), PORTACONV_DATA="")
    result = _run("train", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--epochs", "1", "--out", str(tmp_path / "run"), env=env)
    assert result.returncode == 2
    assert f"no mnist files to use: --data-dir {tmp_path / 'none'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "none").exists() and not (tmp_path / "run").exists(), "a failed start leaves no folder"


@pytest.mark.parametrize("content, message", [
    (b"", "empty file (0 bytes), not a portaconv checkpoint"),
    (b"hello", "not a portaconv checkpoint (not an .npz archive"),
    (b"PK\x03\x04" + b"\x00" * 40, "truncated or damaged archive"),
])
def test_evaluate_an_unreadable_checkpoint_says_what_is_wrong_in_one_line(tmp_path, content, message):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(content)
    result = _run("evaluate", "--checkpoint", str(path))
    assert result.returncode == 2
    assert result.stderr == f"portaconv evaluate: error: {path}: {message}" + result.stderr.split(message, 1)[1]
    assert len(result.stderr.strip().splitlines()) == 1 and "allow_pickle" not in result.stderr


@pytest.mark.skipif(datasets.find_files("fashion-mnist") is None, reason="Fashion-MNIST files not installed")
def test_train_and_evaluate_on_real_data(tmp_path):
    out = tmp_path / "run"
    result = _run("train", "--limit", "2000", "--epochs", "2", "--out", str(out), "--seed", "1", "--progress", "bar")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert len(epochs) == 2 and metrics["backend"] == "numpy" and "numpy" in metrics["versions"]
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[1]["test_accuracy"] > 0.6, "far above chance (0.1)"
    assert (out / "checkpoint.npz").is_file()
    assert "epoch 1/2" in result.stderr, "tqdm progress bar"
    assert f"data: {datasets.find_files('fashion-mnist')}" in result.stdout
    assert metrics["data"]["dir"] == str(datasets.find_files("fashion-mnist").resolve())
    evaluated = _run("evaluate", "--checkpoint", str(out / "checkpoint.npz"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "seed-cnn" in evaluated.stdout and "accuracy" in evaluated.stdout
    try:
        import matplotlib  # noqa: F401

        assert (out / "curves.png").is_file()
    except ImportError:
        assert "matplotlib is not installed" in result.stdout
