"""Fashion-MNIST and MNIST from the standard IDX ``.gz`` files.

An explicit folder (``data_dir``, else ``$PORTACONV_DATA``) is the only place looked at: files
missing there are downloaded into it, or the load fails naming what is missing; it never falls
back to another copy. Without one, files are looked up in ``~/.cache/portaconv/<name>`` and
(Fashion-MNIST) ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist``
package installs them, else downloaded into the cache. Downloads come from the dataset's
canonical mirror, are checked against the published MD5 sums, and are renamed into place only
when complete. Every file is validated (magic number, dimensions, length, image/label
counts) before anything is returned: a bad file raises, never a partial dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._backend import get_namespace

__all__ = ["DatasetError", "Dataset", "SPECS", "load", "find_files", "parse_idx", "batches"]


class DatasetError(ValueError):
    """A dataset file is missing, truncated, corrupt or inconsistent."""


@dataclass(frozen=True)
class Spec:
    name: str
    mirror: str
    # file name -> (MD5 of the .gz as served by the mirror, MD5 of its decompressed content or None)
    files: dict
    system_dir: str | None
    mean: float
    std: float


_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: Checksums as published with torchvision's dataset classes (compressed) and for the
#: decompressed Fashion-MNIST files (Debian recompresses them, so its .gz sums differ).
SPECS = {
    "fashion-mnist": Spec(
        "fashion-mnist",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        },
        "/usr/share/datasets/fashion-mnist",
        0.2860,
        0.3530,
    ),
    "mnist": Spec(
        "mnist",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", None),
            "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", None),
            "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", None),
            "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", None),
        },
        None,
        0.1307,
        0.3081,
    ),
}


@dataclass
class Dataset:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split, on the host."""

    images: np.ndarray
    labels: np.ndarray
    mean: float
    std: float
    #: the folder the files were read from, and the SHA-256 of each file read (name -> hex digest)
    directory: str | None = None
    sha256: dict = field(default_factory=dict)

    def __len__(self):
        return self.labels.shape[0]


def _spec(name):
    if name not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(SPECS)}")
    return SPECS[name]


def _explicit(data_dir):
    """The folder the user named, and how (``--data-dir`` or ``PORTACONV_DATA``), or ``(None, None)``."""
    if data_dir is not None:
        return Path(data_dir), "--data-dir"
    if os.environ.get("PORTACONV_DATA"):
        return Path(os.environ["PORTACONV_DATA"]), "PORTACONV_DATA"
    return None, None


def _candidates(spec, data_dir):
    explicit, _ = _explicit(data_dir)
    if explicit is not None:
        return [explicit]
    dirs = [Path.home() / ".cache" / "portaconv" / spec.name]
    if spec.system_dir:
        dirs.append(Path(spec.system_dir))
    return dirs


def find_files(name="fashion-mnist", data_dir=None):
    """The folder holding all four files: the explicit one (``data_dir``, else ``$PORTACONV_DATA``)
    or nothing; without one, the first complete folder of the search order. ``None`` when none is."""
    spec = _spec(name)
    for directory in _candidates(spec, data_dir):
        if all((directory / f).is_file() for f in spec.files):
            return directory
    return None


def _missing_in(spec, directory: Path, how: str) -> str:
    """What an explicit folder lacks, in words."""
    if not directory.exists():
        return f"{how} {directory} does not exist"
    if not directory.is_dir():
        return f"{how} {directory} is not a folder"
    missing = [f for f in spec.files if not (directory / f).is_file()]
    text = f"{how} {directory} lacks {len(missing)} of the {len(spec.files)} {spec.name} files: {', '.join(missing)}"
    unzipped = [f[: -len(".gz")] for f in missing if (directory / f[: -len(".gz")]).is_file()]
    if unzipped:
        text += f" (it holds {', '.join(unzipped)} uncompressed: portaconv reads the .gz files; gzip them back)"
    return text


def parse_idx(data: bytes, *, expect_ndim: int, source: str = "data") -> np.ndarray:
    """Parse an uncompressed IDX buffer of unsigned bytes, checking its header and length."""
    if len(data) < 4:
        raise DatasetError(f"{source}: {len(data)} bytes is too short for an IDX header")
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code != 0x08 or ndim != expect_ndim:
        raise DatasetError(
            f"{source}: bad magic number 0x{int.from_bytes(data[:4], 'big'):08x}, "
            f"expected 0x{0x0800 + expect_ndim:08x} (unsigned bytes, {expect_ndim} dims)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source}: truncated header ({len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DatasetError(f"{source}: {len(data)} bytes, expected {expected} for dimensions {dims} (truncated or padded file)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read(path: Path, raw_md5):
    """The decompressed content of a .gz file and the SHA-256 of the file itself."""
    try:
        compressed = path.read_bytes()
        data = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{path}: not a complete gzip file ({error})") from error
    if raw_md5 is not None and hashlib.md5(data).hexdigest() != raw_md5:
        raise DatasetError(f"{path}: content checksum {hashlib.md5(data).hexdigest()} does not match the published {raw_md5}")
    return data, hashlib.sha256(compressed).hexdigest()


def _download(spec, directory: Path, progress=True):
    """Fetch the four files into ``directory``; each appears only once complete and verified (with
    the permissions of the user's umask). A folder created here and left empty is removed."""
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _download_files(spec, directory, progress)
    finally:
        if created and not any(directory.iterdir()):
            directory.rmdir()


def _download_files(spec, directory: Path, progress):
    from tqdm.auto import tqdm

    mask = os.umask(0o022)
    os.umask(mask)
    for file, (gz_md5, _) in spec.files.items():
        target = directory / file
        if target.is_file():
            continue
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{file}.", suffix=".part")
        try:
            digest = hashlib.md5()
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(spec.mirror + file, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=file, disable=not progress) as bar:
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            if digest.hexdigest() != gz_md5:
                raise DatasetError(f"download of {file} has MD5 {digest.hexdigest()}, expected {gz_md5}")
            os.chmod(temporary, 0o666 & ~mask)
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)


def load(name="fashion-mnist", split="train", *, data_dir=None, download=True, progress=True) -> Dataset:
    """Load one split (``"train"`` or ``"test"``) of ``"fashion-mnist"`` or ``"mnist"``.

    Raises
    ------
    DatasetError
        For missing files when offline (naming every place searched), or a bad file.
    """
    spec = _spec(name)
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = find_files(name, data_dir) or _fetch(spec, data_dir, download, progress)
    image_file, label_file = _SPLITS[split]
    image_bytes, image_sha = _read(directory / image_file, spec.files[image_file][1])
    label_bytes, label_sha = _read(directory / label_file, spec.files[label_file][1])
    images = parse_idx(image_bytes, expect_ndim=3, source=str(directory / image_file))
    labels = parse_idx(label_bytes, expect_ndim=1, source=str(directory / label_file))
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{directory}: {images.shape[0]} images but {labels.shape[0]} labels in the {split} split")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{directory / label_file}: label {labels.max()} is not a class 0..9")
    return Dataset(images, labels, spec.mean, spec.std, str(directory.resolve()), {image_file: image_sha, label_file: label_sha})


def _fetch(spec, data_dir, download, progress) -> Path:
    """Download the missing files into the explicit folder, else the cache; or say what is missing where."""
    explicit, how = _explicit(data_dir)
    if explicit is not None:
        hint = f"no {spec.name} files to use: {_missing_in(spec, explicit, how)}"
    else:
        places = ", ".join(str(d) for d in _candidates(spec, data_dir))
        hint = (
            f"no {spec.name} files found in: {places}. Pass --data-dir DIR (or data_dir=) or set PORTACONV_DATA "
            f"to a directory holding {', '.join(spec.files)}"
            + ("; on Debian/Ubuntu: apt-get install dataset-fashion-mnist" if spec.system_dir else "")
        )
    if not download:
        raise DatasetError(hint)
    # The first place searched is where a download goes: the explicit folder, or the cache.
    target = _candidates(spec, data_dir)[0]
    try:
        if progress:
            print(f"downloading {spec.name} from {spec.mirror} into {target}")
        _download(spec, target, progress)
    except (OSError, DatasetError) as error:
        raise DatasetError(f"{hint}. Downloading from {spec.mirror} failed: {error}") from error
    return target


#: Training augmentations: mirror a random half left-right (``flip``), translate by up to 1 or 2
#: pixels in each direction with zero background (``shift1``, ``shift2``), or a flip and a shift.
AUGMENTATIONS = (None, "flip", "shift1", "shift2", "flip+shift1", "flip+shift2")


def _translate(images, offsets, limit):
    """Move image i by offsets[i] = (dy, dx) pixels (|d| <= limit), filling with zeros (the background)."""
    count, height, width = images.shape
    padded = np.zeros((count, height + 2 * limit, width + 2 * limit), dtype=images.dtype)
    padded[:, limit : limit + height, limit : limit + width] = images
    rows = (limit - offsets[:, 0])[:, None] + np.arange(height)
    cols = (limit - offsets[:, 1])[:, None] + np.arange(width)
    return padded[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]


def batches(dataset: Dataset, batch_size, *, shuffle=True, seed=0, augment=None, backend="numpy", dtype="float32", device=None,
            shard=None):
    """Yield ``(x, y)`` batches on a backend: x (B, 1, 28, 28) normalized floats, y (B,) int64.

    The order is a seeded permutation (one per call: pass ``seed + epoch`` for new orders).
    ``augment`` (training only, seeded, on the host): one of :data:`AUGMENTATIONS`.
    ``shard=(rank, K)``: only rank's contiguous part of every batch (``np.array_split`` into K, as
    :class:`portaconv.distributed.DistributedSampler` cuts it), augmented exactly as the whole batch
    would be (the random draws of the whole batch are made, the rank's part is kept).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    randomness = np.random.default_rng([seed, 1])
    parts = set((augment or "").split("+"))
    flip = "flip" in parts
    translate = 2 if "shift2" in parts else 1 if "shift1" in parts else 0
    xp = get_namespace(backend)
    order = np.random.default_rng(seed).permutation(len(dataset)) if shuffle else np.arange(len(dataset))
    float_dtype = getattr(np, dtype if isinstance(dtype, str) else str(dtype).rsplit(".", 1)[-1])
    scale = float_dtype(1.0 / (255.0 * dataset.std))
    offset = float_dtype(dataset.mean / dataset.std)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        if shard is not None:
            yield _shard_of(dataset, index, shard, randomness, flip, translate, xp, float_dtype, scale, offset, device)
            continue
        images = dataset.images[index]
        if flip:
            mirrored = randomness.random(len(index)) < 0.5
            images = np.where(mirrored[:, None, None], images[:, :, ::-1], images)
        if translate:
            images = _translate(images, randomness.integers(-translate, translate + 1, size=(len(index), 2)), translate)
        images = images.astype(float_dtype)[:, None] * scale - offset
        x = xp.asarray(images, dtype=getattr(xp, float_dtype.__name__), device=device)
        y = xp.asarray(dataset.labels[index].astype(np.int64), device=device)
        yield x, y


def _shard_of(dataset, index, shard, randomness, flip, translate, xp, float_dtype, scale, offset, device):
    """One rank's part of a batch, drawing the whole batch's augmentation (see :func:`batches`)."""
    rank, size = shard
    part = np.array_split(np.arange(len(index)), size)[rank]
    images = dataset.images[index[part]]
    if flip:
        mirrored = (randomness.random(len(index)) < 0.5)[part]
        images = np.where(mirrored[:, None, None], images[:, :, ::-1], images)
    if translate:
        images = _translate(images, randomness.integers(-translate, translate + 1, size=(len(index), 2))[part], translate)
    images = images.astype(float_dtype)[:, None] * scale - offset
    x = xp.asarray(images, dtype=getattr(xp, float_dtype.__name__), device=device)
    return x, xp.asarray(dataset.labels[index[part]].astype(np.int64), device=device)
