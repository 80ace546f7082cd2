"""`portaconv train` / `evaluate` never lose or misreport a result: run folders, exact resume,
strict inputs, honest errors and output (issue 16). On a tiny synthetic MNIST the tests write."""

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from portaconv.app import cli
from portaconv.app import train as train_module
from portaconv.app.checkpoint import json_text, read_checkpoint
from portaconv.app.rundir import RunFolder

KEYS = ("epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy")


def _idx(array):
    return struct.pack(">HBB", 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape) + array.astype(np.uint8).tobytes()


def write_data(directory, seed=0, n_train=600, n_test=200):
    """A learnable MNIST-format dataset: the brightness encodes the class."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.random((n, 28, 28)) * 60 + labels[:, None, None] * 18
        (directory / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (directory / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))
    return directory


@pytest.fixture
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No network, no PORTACONV_DATA, a fresh working directory (every run names its --data-dir)."""
    monkeypatch.delenv("PORTACONV_DATA", raising=False)
    monkeypatch.chdir(tmp_path)

    def offline(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(train_module.datasets.urllib.request, "urlopen", offline)


def main(capsys, *args):
    """cli.main in this process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def small(data, *more, epochs=1, limit=128):
    return ["train", "--dataset", "mnist", "--data-dir", data, "--epochs", epochs, "--limit", limit, *more]


def metrics_of(folder):
    def refuse(constant):
        raise AssertionError(f"{constant} in metrics.json")

    return json.loads((folder / "metrics.json").read_text(), parse_constant=refuse)


def curves(folder):
    return [[e[k] for k in KEYS] for e in metrics_of(folder)["epochs"]]


def _subprocess_env(home):
    env = dict(os.environ)
    env.pop("PORTACONV_DATA", None)
    return env


# -- never lose a result -----------------------------------------------------------------------
def test_refuses_a_folder_holding_a_run(capsys, data, tmp_path):
    assert main(capsys, *small(data, "--out", "run"))[0] == 0
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    code, _, err = main(capsys, *small(data, "--out", "run", "--lr", "0.01"))
    assert code == 2
    assert "--out run already holds a run (seed-cnn, 1/1 epochs, test accuracy" in err
    assert "--resume run" in err and "--overwrite" in err
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before


def test_overwrite_replaces_the_run(capsys, data, tmp_path):
    assert main(capsys, *small(data, "--out", "run"))[0] == 0
    assert main(capsys, *small(data, "--out", "run", "--lr", "0.01", "--overwrite"))[0] == 0
    assert metrics_of(tmp_path / "run")["flags"]["lr"] == 0.01


def test_refuses_a_folder_of_other_files(capsys, data, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    code, _, err = main(capsys, *small(data, "--out", "notes"))
    assert code == 2 and "--out notes is not empty (todo.txt) and holds no portaconv run" in err
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]


def test_a_second_process_is_told_who_holds_the_folder(capsys, data, tmp_path):
    held = RunFolder(tmp_path / "run").acquire("new")
    try:
        code, _, err = main(capsys, *small(data, "--out", tmp_path / "run"))
    finally:
        held.release()
    assert code == 2
    assert f"is in use by another portaconv train (pid {os.getpid()} on " in err
    assert not (tmp_path / "run").exists(), "the lock file goes, and the folder its holder created"


def test_files_are_atomic_clean_and_follow_the_umask(capsys, data, tmp_path):
    previous = os.umask(0o002)
    try:
        assert main(capsys, *small(data, "--out", "run"))[0] == 0
    finally:
        os.umask(previous)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names in (["checkpoint.npz", "curves.png", "metrics.json"], ["checkpoint.npz", "metrics.json"]), names
    for name in names:
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o664, name
    metrics = metrics_of(tmp_path / "run")
    assert metrics["status"] == "complete" and metrics["checkpoint"] == {"file": "checkpoint.npz", "epoch": 1}


@pytest.mark.parametrize("flags, message", [
    (["--data-dir", "{tmp}/nowhere"], "--data-dir {tmp}/nowhere does not exist"),
    (["--lr", "1e30"], "non-finite training loss (nan) at epoch 1, step 2 of 2 with --lr 1e+30: training stopped; nothing was saved"),
])
def test_a_failed_start_leaves_no_folder(capsys, data, tmp_path, flags, message):
    flags = [f.format(tmp=tmp_path) for f in flags]
    code, _, err = main(capsys, *small(data, "--out", tmp_path / "a" / "b" / "run"), *flags)
    assert code in (1, 2) and message.format(tmp=tmp_path) in err
    assert not (tmp_path / "a").exists()


def test_a_crash_between_checkpoint_and_metrics_is_recovered(capsys, data, tmp_path, monkeypatch):
    """The checkpoint is committed first and carries the metrics: after a crash before metrics.json
    is renamed, the folder is an earlier consistent epoch and --resume restores the later one."""
    assert main(capsys, *small(data, "--out", "straight", epochs=2))[0] == 0
    real = train_module.atomic_write

    def crash_at_epoch_2_metrics(path, write):
        if path.name == "metrics.json" and (tmp_path / "run" / "checkpoint.npz").exists() \
                and read_checkpoint(tmp_path / "run" / "checkpoint.npz").metadata["epoch"] == 2:
            raise OSError("killed (test)")
        return real(path, write)

    monkeypatch.setattr(train_module, "atomic_write", crash_at_epoch_2_metrics)
    assert main(capsys, *small(data, "--out", "run", epochs=2))[0] == 2
    assert metrics_of(tmp_path / "run")["checkpoint"]["epoch"] == 1
    assert len(metrics_of(tmp_path / "run")["epochs"]) == 1
    monkeypatch.setattr(train_module, "atomic_write", real)
    assert main(capsys, "train", "--resume", "run")[0] == 0
    assert curves(tmp_path / "run") == curves(tmp_path / "straight")
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]


# -- exact resume ------------------------------------------------------------------------------
def _train_process(data, out, home, *more):
    args = [sys.executable, "-m", "portaconv", "train", "--dataset", "mnist", "--data-dir", str(data), "--model", "cnn-fc",
            "--epochs", "3", "--limit", "600", "--out", str(out), *more]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_subprocess_env(home))


def _stop_in_epoch_2(process, signal_number):
    for line in process.stdout:
        if line.startswith("epoch 1:"):
            time.sleep(0.2)
            process.send_signal(signal_number)
            break
    return process.communicate(timeout=300)


@pytest.fixture
def straight_run(data, tmp_path):
    process = _train_process(data, tmp_path / "straight", tmp_path)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return curves(tmp_path / "straight")


def test_sigkill_mid_epoch_then_resume_equals_a_straight_run(data, tmp_path, straight_run):
    """cnn-fc: dropout generators, Adam moments, the cosine schedule and the data order restored."""
    killed = _train_process(data, tmp_path / "run", tmp_path)
    _stop_in_epoch_2(killed, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    committed = metrics_of(tmp_path / "run")
    assert 1 <= len(committed["epochs"]) < 3, "killed after epoch 1 was committed, before the end"
    assert committed["checkpoint"]["epoch"] == len(committed["epochs"])
    resumed = subprocess.run([sys.executable, "-m", "portaconv", "train", "--resume", str(tmp_path / "run")],
                             capture_output=True, text=True, env=_subprocess_env(tmp_path), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at epoch {len(committed['epochs']) + 1} of 3" in resumed.stdout
    assert curves(tmp_path / "run") == straight_run
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == [], "lock and temp files gone"


@pytest.mark.parametrize("signal_number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_says_how_to_resume_and_exits_128_plus_the_signal(data, tmp_path, straight_run, signal_number, code):
    interrupted = _train_process(data, tmp_path / "run", tmp_path)
    out, err = _stop_in_epoch_2(interrupted, signal_number)
    assert interrupted.returncode == code, err
    assert "Traceback" not in err
    assert "interrupted in epoch" in err and f"resume with: portaconv train --resume {tmp_path / 'run'}" in err
    assert metrics_of(tmp_path / "run")["status"] == "interrupted"
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]
    resumed = subprocess.run([sys.executable, "-m", "portaconv", "train", "--resume", str(tmp_path / "run")],
                             capture_output=True, text=True, env=_subprocess_env(tmp_path), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert curves(tmp_path / "run") == straight_run


@pytest.mark.parametrize("model, backend", [("resnet", "numpy"), ("seed-cnn", "torch")])
def test_resume_restores_batchnorm_sgd_momentum_and_the_backend(capsys, data, tmp_path, monkeypatch, model, backend):
    """resnet: BatchNorm buffers and SGD momentum; on torch, --resume alone continues on torch."""
    if backend != "numpy":
        pytest.importorskip(backend)
    flags = small(data, "--model", model, "--backend", backend, epochs=2, limit=256)
    assert main(capsys, *flags, "--out", "straight")[0] == 0
    real = train_module.datasets.batches

    def interrupt_epoch_2(*args, seed=0, **kwargs):
        for step, batch in enumerate(real(*args, seed=seed, **kwargs)):
            if seed == 2 and step == 1:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(train_module.datasets, "batches", interrupt_epoch_2)
    code, _, err = main(capsys, *flags, "--out", "run")
    assert code == 130 and "interrupted in epoch 2 (step 1 of " in err and "run keeps epoch 1" in err
    monkeypatch.setattr(train_module.datasets, "batches", real)
    code, out, _ = main(capsys, "train", "--resume", "run")
    assert code == 0 and f"backend {backend} float32" in out
    assert curves(tmp_path / "run") == curves(tmp_path / "straight")
    assert metrics_of(tmp_path / "run")["resumes"] == [{"from_epoch": 2, "command": metrics_of(tmp_path / "run")["resumes"][0]["command"],
                                                        "backend": backend, "data_dir": str(data.resolve())}]


def test_adamw_decouples_weight_decay(capsys, data, tmp_path):
    """--optimizer adamw: torch's AdamW (the decay applied to the weights, not to the gradient),
    recorded in the run's settings, a different run from adam with the same --weight-decay."""
    for optimizer in ("adamw", "adam"):
        flags = small(data, "--optimizer", optimizer, "--weight-decay", "0.05", epochs=2, limit=256)
        assert main(capsys, *flags, "--out", optimizer)[0] == 0
    assert metrics_of(tmp_path / "adamw")["flags"]["optimizer"] == "adamw"
    assert curves(tmp_path / "adamw") != curves(tmp_path / "adam")


def test_resume_keeps_the_runs_flags(capsys, data):
    assert main(capsys, *small(data, "--out", "run"))[0] == 0
    code, _, err = main(capsys, "train", "--resume", "run", "--lr", "0.5")
    assert code == 2 and "--lr 0.5 differs from the run's 0.001" in err
    code, _, err = main(capsys, "train", "--resume", "run", "--dtype", "float64")
    assert code == 2 and "--dtype float64 differs from the run's float32" in err
    code, out, _ = main(capsys, "train", "--resume", "run")
    assert code == 0 and "done: test accuracy" in out, "a finished run resumes to nothing more"


def test_resume_refuses_other_data_or_a_mixed_folder(capsys, data, tmp_path):
    assert main(capsys, *small(data, "--out", "run"))[0] == 0
    other = write_data(tmp_path / "other", seed=1)
    code, _, err = main(capsys, "train", "--resume", "run", "--data-dir", other)
    assert code == 2 and "the run was trained on" in err and "sha256" in err
    assert main(capsys, *small(data, "--out", "fc", "--model", "seed004"))[0] == 0
    (tmp_path / "run" / "checkpoint.npz").write_bytes((tmp_path / "fc" / "checkpoint.npz").read_bytes())
    code, _, err = main(capsys, "train", "--resume", "run")
    assert code == 2 and "a seed004 checkpoint beside a metrics.json of seed-cnn (model): the folder mixes two runs" in err


def test_resume_of_a_weights_only_checkpoint_says_why(capsys, tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    np.savez(run / "checkpoint.npz", **{"0.weight": np.zeros((2, 2)), "__portaconv_meta__": np.asarray(json.dumps({"model": "seed-cnn"}))})
    code, _, err = main(capsys, "train", "--resume", run)
    assert code == 2 and "format 1 checkpoint with weights only" in err and "can be evaluated but not resumed" in err
    code, _, err = main(capsys, "train", "--resume", tmp_path / "none")
    assert code == 2 and "no checkpoint.npz there to resume" in err


# -- strict inputs -----------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "--batch-size must be a positive integer, got 0"),
    ("--limit", "0", "--limit must be a positive integer (a number of training images), got 0"),
    ("--limit", "-5", "got -5"),
    ("--epochs", "0", "--epochs must be a positive integer, got 0"),
    ("--lr", "inf", "--lr must be a positive finite number, got inf"),
    ("--lr", "nan", "--lr must be a positive finite number, got nan"),
    ("--lr", "0", "--lr must be a positive finite number, got 0.0"),
    ("--weight-decay", "-1", "--weight-decay must be a non-negative finite number, got -1.0"),
    ("--label-smoothing", "1", "--label-smoothing must be a number in [0, 1), got 1.0"),
    ("--seed", "-1", "--seed must be a non-negative integer, got -1"),
])
def test_flags_are_checked_before_any_work(capsys, flag, value, message):
    code, out, err = main(capsys, "train", flag, value, "--out", "run")
    assert code == 2 and message in err and "Traceback" not in err
    assert out == "" and not os.path.exists("run")


def test_an_unusable_device_is_named(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, _, err = main(capsys, "train", "--backend", "torch", "--device", "cuda:0")
    assert code == 2 and err.startswith("portaconv train: error: --backend torch --device cuda:0: cannot place an array there")
    assert len(err.strip().splitlines()) == 1


def test_data_folder_and_checksums_are_printed_and_recorded(capsys, data, tmp_path):
    code, out, _ = main(capsys, *small(data, "--out", "run"))
    assert code == 0
    recorded = metrics_of(tmp_path / "run")["data"]
    assert recorded["dir"] == str(data.resolve())
    assert set(recorded["sha256"]) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    import hashlib

    digest = hashlib.sha256((data / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert recorded["sha256"]["train-images-idx3-ubyte.gz"] == digest
    assert f"data: {data.resolve()} (sha256 train-images-idx3-ubyte.gz {digest[:12]}" in out


def test_an_incomplete_data_dir_is_not_replaced_by_another_copy(capsys, data, tmp_path, monkeypatch):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (incomplete / name).write_bytes((data / name).read_bytes())
    (incomplete / "t10k-images-idx3-ubyte").write_bytes(gzip.decompress((data / "t10k-images-idx3-ubyte.gz").read_bytes()))
    monkeypatch.setenv("PORTACONV_DATA", str(data))  # a complete copy elsewhere is not used
    code, _, err = main(capsys, "train", "--dataset", "mnist", "--data-dir", incomplete, "--out", "run")
    assert code == 2
    assert f"--data-dir {incomplete} lacks 1 of the 4 mnist files: t10k-images-idx3-ubyte.gz" in err
    assert "holds t10k-images-idx3-ubyte uncompressed" in err
    assert not os.path.exists("run")


def test_a_non_finite_loss_stops_with_epoch_and_step_and_valid_json(capsys, data, tmp_path, monkeypatch):
    real = train_module.F.cross_entropy
    calls = []

    def diverging(out, y, **kwargs):
        loss = real(out, y, **kwargs)
        if kwargs.get("reduction", "mean") == "mean":
            calls.append(1)
            if len(calls) == 3:  # epoch 2, step 1 (two steps an epoch)
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_module.F, "cross_entropy", diverging)
    code, _, err = main(capsys, *small(data, "--out", "run", epochs=3))
    assert code == 1
    assert "non-finite training loss (nan) at epoch 2, step 1 of 2" in err and "run keeps epoch 1" in err
    metrics = metrics_of(tmp_path / "run")
    assert metrics["status"] == "failed" and "epoch 2, step 1" in metrics["error"] and len(metrics["epochs"]) == 1


def test_json_never_holds_nan_or_infinity():
    assert json.loads(json_text({"a": float("nan"), "b": [float("inf"), 1.5]})) == {"a": None, "b": [None, 1.5]}


# -- honest output -----------------------------------------------------------------------------
def test_progress_modes(capsys, data):
    code, out, err = main(capsys, *small(data, "--out", "lines", "--progress", "lines", epochs=2))
    assert code == 0 and "epoch 1: train loss" in out and "epoch 2: train loss" in out and "it/s" not in err
    code, out, err = main(capsys, *small(data, "--out", "bar", "--progress", "bar"))
    assert code == 0 and "epoch 1/1" in err
    for flag in (["--progress", "none"], ["--no-progress"]):
        code, out, err = main(capsys, *small(data, "--out", flag[-1].strip("-"), *flag))
        assert code == 0 and "epoch 1:" not in out and "epoch 1/1" not in err and "done: test accuracy" in out


def test_not_a_terminal_gets_a_line_per_epoch(data, tmp_path):
    result = subprocess.run([sys.executable, "-m", "portaconv", *map(str, small(data, "--out", "run", epochs=2))],
                            capture_output=True, text=True, env=_subprocess_env(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\nepoch ") == 2 and "\r" not in result.stderr and len(result.stderr) < 200


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0
    from portaconv import __version__

    assert capsys.readouterr().out.strip() == f"portaconv {__version__}"


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "model defaults" in text and "portaconv.app.models.DEFAULTS" not in text
    from portaconv.app.models import DEFAULTS

    for model, defaults in DEFAULTS.items():
        row = next(line for line in text.splitlines() if line.strip().startswith(model + " "))
        assert row.split()[1:4] == [str(defaults["epochs"]), str(defaults["batch_size"]), f"{defaults['lr']:g}"], row
    for default in ("(default: numpy;", "(default: float32)", "(default: 0)", "(default: fashion-mnist)", "(default: auto)",
                    "(default: runs/MODEL)"):
        assert default in " ".join(text.split()), default


def test_evaluate_defaults_to_the_latest_run_of_the_model(capsys, data, tmp_path):
    code, _, err = main(capsys, "evaluate", "--data-dir", data)
    assert code == 2 and "no checkpoint of seed-cnn under runs/" in err
    for name in ("runs/a", "runs/b"):
        assert main(capsys, *small(data, "--out", name))[0] == 0
    os.utime("runs/a/checkpoint.npz", (time.time() + 100, time.time() + 100))
    code, out, _ = main(capsys, "evaluate", "--data-dir", data)
    assert code == 0 and "seed-cnn (epoch 1) from runs/a/checkpoint.npz" in out and "accuracy" in out
    code, _, err = main(capsys, "evaluate", "--data-dir", data, "--model", "resnet")
    assert code == 2 and "no checkpoint of resnet" in err


def test_the_plot_names_the_smoothed_loss_and_the_final_accuracy(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    import matplotlib.figure

    saved = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: (saved.append(self), real(self, *a, **k)))
    epochs = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 0.5 / e, "train_accuracy": 0.8, "test_accuracy": 0.9137} for e in (1, 2)]
    metrics = {"model": "seed-cnn", "dataset": "fashion-mnist", "status": "complete", "epochs": epochs,
               "flags": {"label_smoothing": 0.1, "augment": "flip", "epochs": 2}}
    (tmp_path / "run").mkdir()
    train_module._plot(metrics, tmp_path / "run" / "curves.png")
    figure, = saved
    assert "test accuracy 91.37% after 2/2 epochs" in figure._suptitle.get_text()
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == ["train (label-smoothed, ε = 0.1)", "test (plain cross-entropy)"]
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["curves.png"]
