"""The IDX loader and its error cases, on files the tests write, and the real files when present."""

import gzip
import hashlib
import io
import struct

import numpy as np
import pytest

from portaconv import to_numpy
from portaconv.app import datasets
from portaconv.app.datasets import DatasetError


def _idx(array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_split(directory, images, labels, prefix="train", raw=None):
    names = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"), "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}[prefix]
    image_bytes = raw["images"] if raw and "images" in raw else _idx(images)
    label_bytes = raw["labels"] if raw and "labels" in raw else _idx(labels)
    (directory / names[0]).write_bytes(gzip.compress(image_bytes))
    (directory / names[1]).write_bytes(gzip.compress(label_bytes))


def _write_dataset(directory, n=20, **raw):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28))
    labels = rng.integers(0, 10, n)
    _write_split(directory, images, labels, "train", raw or None)
    _write_split(directory, images[:10], labels[:10], "t10k")
    return images, labels


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data anywhere: empty HOME, no PORTACONV_DATA, no system directory, no network."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PORTACONV_DATA", raising=False)
    for name, spec in datasets.SPECS.items():
        monkeypatch.setitem(datasets.SPECS, name, spec.__class__(**{**spec.__dict__, "system_dir": str(tmp_path / "nowhere")}))

    def offline(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    return tmp_path


def test_loads_valid_files(isolated):
    images, labels = _write_dataset(isolated)
    data = datasets.load("mnist", "train", data_dir=isolated)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert len(datasets.load("mnist", "test", data_dir=isolated)) == 10


def test_the_folder_and_checksums_read_are_recorded(isolated):
    _write_dataset(isolated)
    data = datasets.load("mnist", "train", data_dir=isolated)
    assert data.directory == str(isolated.resolve())
    assert data.sha256 == {name: hashlib.sha256((isolated / name).read_bytes()).hexdigest()
                           for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")}


def _complete_system_copy(isolated, monkeypatch):
    """A complete copy where the search would find it without an explicit folder."""
    system = isolated / "system"
    system.mkdir()
    _write_dataset(system)
    monkeypatch.setitem(datasets.SPECS, "mnist", datasets.SPECS["mnist"].__class__(**{**datasets.SPECS["mnist"].__dict__, "system_dir": str(system)}))
    assert datasets.find_files("mnist") == system


def test_an_explicit_folder_is_used_or_the_load_fails_naming_what_is_missing(isolated, monkeypatch):
    _complete_system_copy(isolated, monkeypatch)
    with pytest.raises(DatasetError, match=f"no mnist files to use: --data-dir {isolated / 'missing'} does not exist"):
        datasets.load("mnist", "train", data_dir=isolated / "missing", download=False)
    incomplete = isolated / "incomplete"
    incomplete.mkdir()
    (incomplete / "train-images-idx3-ubyte.gz").write_bytes((isolated / "system" / "train-images-idx3-ubyte.gz").read_bytes())
    (incomplete / "train-labels-idx1-ubyte").write_bytes(b"unzipped")
    with pytest.raises(DatasetError) as error:
        datasets.load("mnist", "train", data_dir=incomplete)
    text = str(error.value)
    assert f"--data-dir {incomplete} lacks 3 of the 4 mnist files: train-labels-idx1-ubyte.gz, t10k-images" in text
    assert "it holds train-labels-idx1-ubyte uncompressed: portaconv reads the .gz files" in text
    assert "network unreachable" in text, "the download into the folder was tried"
    assert sorted(p.name for p in incomplete.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte"]


def test_portaconv_data_is_explicit_too(isolated, monkeypatch):
    _complete_system_copy(isolated, monkeypatch)
    (isolated / "env").mkdir()
    monkeypatch.setenv("PORTACONV_DATA", str(isolated / "env"))
    assert datasets.find_files("mnist") is None
    with pytest.raises(DatasetError, match=f"PORTACONV_DATA {isolated / 'env'} lacks 4 of the 4 mnist files"):
        datasets.load("mnist", "test", download=False)


def test_environment_variable_is_searched(isolated, monkeypatch):
    _write_dataset(isolated)
    monkeypatch.setenv("PORTACONV_DATA", str(isolated))
    assert datasets.find_files("mnist") == isolated


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"images": _idx(np.zeros((20, 28, 28)))[:-5]}, r"bytes, expected 15696 for dimensions \(20, 28, 28\)"),
        ({"images": b"\x00\x00\x08\x01" + b"\x00" * 20}, r"bad magic number 0x00000801, expected 0x00000803"),
        ({"labels": _idx(np.zeros(19))}, r"20 images but 19 labels"),
        ({"labels": _idx(np.full(20, 12))}, r"label 12 is not a class 0..9"),
        ({"images": b""}, r"too short for an IDX header"),
    ],
    ids=["truncated", "magic", "count-mismatch", "bad-label", "empty"],
)
def test_bad_files_raise(isolated, raw, message):
    _write_dataset(isolated, **raw)
    with pytest.raises(DatasetError, match=message):
        datasets.load("mnist", "train", data_dir=isolated)


def test_corrupt_gzip_raises(isolated):
    _write_dataset(isolated)
    path = isolated / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DatasetError, match="not a complete gzip file"):
        datasets.load("mnist", "train", data_dir=isolated)


def test_fashion_content_checksum(isolated):
    _write_dataset(isolated)
    with pytest.raises(DatasetError, match="content checksum .* does not match the published f4a8712d"):
        datasets.load("fashion-mnist", "train", data_dir=isolated)


def test_offline_without_files_names_every_option(isolated):
    with pytest.raises(DatasetError) as error:
        datasets.load("fashion-mnist", "train")
    text = str(error.value)
    for expected in ("no fashion-mnist files found in", "--data-dir", "PORTACONV_DATA", ".cache/portaconv/fashion-mnist",
                     "apt-get install dataset-fashion-mnist", "network unreachable"):
        assert expected in text


class _Response(io.BytesIO):
    def __init__(self, data, fail_after=None):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}
        self.fail_after = fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise OSError("connection reset (test)")
        return super().read(size)

    def __exit__(self, *args):
        return False


def test_failed_download_leaves_no_file(isolated, monkeypatch):
    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: _Response(b"x" * 200_000, fail_after=70_000))
    target = isolated / "dl"
    with pytest.raises(DatasetError, match="connection reset"):
        datasets.load("mnist", "train", data_dir=target, progress=False)
    assert not target.exists(), "the folder the download created is removed with its partial file"


def test_download_checksum_mismatch_leaves_no_file(isolated, monkeypatch):
    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: _Response(b"not the file"))
    target = isolated / "dl"
    with pytest.raises(DatasetError, match="has MD5 .* expected f68b3c2d"):
        datasets.load("mnist", "train", data_dir=target, progress=False)
    assert not target.exists()


def test_download_verifies_and_installs(isolated, monkeypatch):
    """A download whose MD5 matches is renamed into place and then loaded."""
    source = isolated / "source"
    source.mkdir()
    images, labels = _write_dataset(source)
    files = {name: (datasets.hashlib.md5((source / name).read_bytes()).hexdigest(), None) for name in datasets.SPECS["mnist"].files}
    monkeypatch.setitem(datasets.SPECS, "mnist", datasets.SPECS["mnist"].__class__(**{**datasets.SPECS["mnist"].__dict__, "files": files}))
    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: _Response((source / url.rsplit("/", 1)[1]).read_bytes()))
    data = datasets.load("mnist", "train", data_dir=isolated / "dl", progress=False)
    np.testing.assert_array_equal(data.labels, labels)
    assert sorted(p.name for p in (isolated / "dl").iterdir()) == sorted(files)


def test_batches_on_backend(isolated, backend):
    _write_dataset(isolated, n=50)
    data = datasets.load("mnist", "train", data_dir=isolated)
    batches = list(datasets.batches(data, 16, seed=3, backend=backend.xp, device=backend.device))
    assert [tuple(x.shape) for x, _ in batches] == [(16, 1, 28, 28)] * 3 + [(2, 1, 28, 28)]
    assert batches[0][0].dtype == backend.xp.float32 and batches[0][1].dtype == backend.xp.int64
    again = list(datasets.batches(data, 16, seed=3, backend=backend.xp, device=backend.device))
    np.testing.assert_array_equal(to_numpy(batches[0][1]), to_numpy(again[0][1]))
    labels = np.concatenate([to_numpy(y) for _, y in batches])
    assert sorted(labels) == sorted(data.labels)
    x = to_numpy(batches[0][0])
    assert abs(x.mean() - (127.5 / 255 - data.mean) / data.std) < 0.5


def test_real_fashion_mnist_when_installed():
    if datasets.find_files("fashion-mnist") is None:
        pytest.skip("Fashion-MNIST files not installed")
    train = datasets.load("fashion-mnist", "train", download=False)
    test = datasets.load("fashion-mnist", "test", download=False)
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10


def test_augmentations_are_seeded_flips_and_shifts(isolated):
    _write_dataset(isolated, n=64)
    data = datasets.load("mnist", "train", data_dir=isolated)
    plain = next(datasets.batches(data, 64, seed=2))[0]
    for augment in ("flip", "shift1", "shift2", "flip+shift1", "flip+shift2"):
        first = next(datasets.batches(data, 64, seed=2, augment=augment))[0]
        again = next(datasets.batches(data, 64, seed=2, augment=augment))[0]
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, plain)
    flipped = next(datasets.batches(data, 64, seed=2, augment="flip"))[0]
    for a, b in zip(flipped, plain):
        assert np.array_equal(a, b) or np.array_equal(a, b[:, :, ::-1])
    shifted = next(datasets.batches(data, 64, seed=2, augment="shift2"))[0]
    background = plain.min()
    for a, b in zip(shifted, plain):
        # some translation by at most 2 pixels maps the plain image onto the shifted one
        assert any(
            np.array_equal(a[0, max(dy, 0) : 28 + min(dy, 0), max(dx, 0) : 28 + min(dx, 0)],
                           b[0, max(-dy, 0) : 28 + min(-dy, 0), max(-dx, 0) : 28 + min(-dx, 0)])
            for dy in range(-2, 3) for dx in range(-2, 3)
        )
        assert a.min() >= background - 1e-6
    with pytest.raises(ValueError, match=r"augment must be one of \(None, 'flip', 'shift1', .*\), got 'crop'"):
        next(datasets.batches(data, 8, augment="crop"))


def test_plain_batches_are_the_normalized_images(isolated):
    _write_dataset(isolated, n=30)
    data = datasets.load("mnist", "train", data_dir=isolated)
    (x, y), = list(datasets.batches(data, 30, shuffle=False, dtype="float64"))
    np.testing.assert_allclose(x[:, 0] * data.std * 255 + data.mean * 255, data.images, atol=1e-9)
    np.testing.assert_array_equal(y, data.labels)
