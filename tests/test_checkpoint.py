"""Checkpoints: .npz without pickle, atomic writes with the umask, versioned, loadable onto every backend,
and a one-line error naming the file and the problem for any unreadable one."""

import json
import os
import re

import numpy as np
import pytest

import portaconv
from portaconv import optim, to_numpy
from portaconv.app import models
from portaconv.app.checkpoint import FORMAT, CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint


def test_round_trip_on_every_backend(tmp_path, backend):
    net = models.build("seed004", seed=4)
    path = save_checkpoint(tmp_path / "model.npz", net, {"model": "seed004", "epoch": 3})
    state, meta = load_checkpoint(path)
    assert meta == {"model": "seed004", "epoch": 3}
    other = models.build("seed004", backend=backend.xp, device=backend.device, seed=5)
    other.load_state_dict(state)
    for (name, p), original in zip(other.named_parameters(), net.parameters()):
        np.testing.assert_array_equal(to_numpy(p.data), to_numpy(original.data))
    assert [f.name for f in tmp_path.iterdir()] == ["model.npz"], "no temporary file left behind"


def test_no_pickle(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"0.weight": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match="member '0.weight' holds Python objects, which no portaconv checkpoint does") as error:
        load_checkpoint(path)
    assert "allow_pickle" not in str(error.value)


def _good(tmp_path):
    return save_checkpoint(tmp_path / "good.npz", models.build("seed004", seed=0), {"model": "seed004", "dtype": "float32"}).read_bytes()


def _flip(data):
    data = bytearray(data)
    data[len(data) // 3] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("make, message", [
    (lambda good: b"", r"empty file \(0 bytes\), not a portaconv checkpoint"),
    (lambda good: good[: len(good) // 2], r"truncated or damaged archive \(BadZipFile"),
    (_flip, r"corrupt member '.*' \(BadZipFile: Bad CRC-32"),
    (lambda good: b"portaconv is great\n", r"not a portaconv checkpoint \(not an .npz archive: it starts with b'port'\)"),
    (lambda good: b"\x93NUMPY" + good, r"not a portaconv checkpoint \(not an .npz archive"),
], ids=["empty", "truncated", "bit-flip", "text", "npy"])
def test_unreadable_checkpoints_say_what_is_wrong(tmp_path, make, message):
    path = tmp_path / "bad.npz"
    path.write_bytes(make(_good(tmp_path)))
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: {message}") as error:
        read_checkpoint(path)
    assert "\n" not in str(error.value)


def test_an_npz_of_someone_else_is_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a portaconv checkpoint .*without its __portaconv_meta__ member"):
        read_checkpoint(tmp_path / "other.npz")
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "missing.npz")


def test_format_versions(tmp_path):
    """Format 1 (weights and metadata only) still loads; a newer format says to upgrade."""
    net = models.build("seed004", seed=0)
    state = {name: to_numpy(value) for name, value in net.state_dict().items()}
    np.savez(tmp_path / "v1.npz", **state, __portaconv_meta__=np.asarray(json.dumps({"model": "seed004", "dtype": "float32"})))
    checkpoint = read_checkpoint(tmp_path / "v1.npz")
    assert checkpoint.format == 1 and checkpoint.training is None and checkpoint.metadata == {"model": "seed004", "dtype": "float32"}
    models.build("seed004", seed=1).load_state_dict(checkpoint.model_state)
    assert read_checkpoint(save_checkpoint(tmp_path / "v2.npz", net)).format == FORMAT == 2
    np.savez(tmp_path / "v9.npz", **state, __portaconv_meta__=np.asarray(json.dumps({"format": 9})))
    with pytest.raises(CheckpointError, match="checkpoint format 9 is newer than this portaconv reads .*upgrade portaconv"):
        read_checkpoint(tmp_path / "v9.npz")


def test_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        path = save_checkpoint(tmp_path / "model.npz", models.build("seed004", seed=0))
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o640


def test_optimizer_and_training_state_round_trip(tmp_path):
    net = models.build("cnn-fc", seed=0)
    opt = optim.Adam(net.parameters(), lr=1e-3)
    x = portaconv.Tensor(np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32))
    net(x).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.npz", net, {"epoch": 1}, optimizer=opt, training={"rng": {"a": [1, 2]}, "loss": float("nan")})
    checkpoint = read_checkpoint(path)
    assert checkpoint.training["rng"] == {"a": [1, 2]} and checkpoint.training["loss"] is None
    other = optim.Adam(models.build("cnn-fc", seed=1).parameters(), lr=0.5)
    other.load_state_dict(checkpoint.training["optimizer"])
    assert other.param_groups[0]["lr"] == 1e-3
    for p, q in zip(opt.param_groups[0]["params"], other.param_groups[0]["params"]):
        assert opt.state[p]["step"] == other.state[q]["step"] == 1.0
        np.testing.assert_array_equal(to_numpy(opt.state[p]["exp_avg_sq"]), to_numpy(other.state[q]["exp_avg_sq"]))


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    net = models.build("seed004", seed=0)
    path = save_checkpoint(tmp_path / "model.npz", net, {"epoch": 1})
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full (test)")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, net, {"epoch": 2})
    assert path.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["model.npz"]
