"""Checkpoints: .npz without pickle, atomic writes, loadable onto every backend."""

import numpy as np
import pytest

from portaconv import to_numpy
from portaconv.app import models
from portaconv.app.checkpoint import load_checkpoint, save_checkpoint


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
    with pytest.raises(ValueError, match="allow_pickle"):
        load_checkpoint(path)


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
