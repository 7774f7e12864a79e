"""Training data: built-in generated sets and files on disk, as (train, heldout) `Dataset`s.

Built-in sets are generated in code: the 2-D sets of `toy2d` (`8gaussians`, `25gaussians`,
`swissroll`, `unequal`, `anisotropic`, `pinwheel`, `spirals`, `moons`, `faraway`) and `shapes`, small synthetic images of filled rectangles and bars on black. Files
on disk come in four formats: `points` (a .npy or .csv N×D array; `points_file_dim` gives D), `mnist` (a folder of IDX
files), `cifar10` (a folder of python batches) and `images` (a folder of PNG/JPEG files); the
format is guessed from the path when `DataConfig.dataset` is None or names a built-in set.

Images stay uint8 (N, C, H, W) in memory; `Dataset.batch` converts a batch to floats in [-1, 1]
through `pixels.uint8_to_unit`. The heldout set is a file's test split where there is one,
otherwise a seeded `holdout_fraction` of the data, and a fresh draw for generated sets.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import images as imgio
from .config import FILE_FORMATS, GENERATED_NAMES, DataConfig, ModelConfig
from .errors import DataError, one_line
from .pixels import uint8_to_unit
from .toy2d import get_toy_set

#: Built-in sets generated in code (no path needed).
GENERATED = GENERATED_NAMES
#: Formats read from `DataConfig.path`, with what each expects there.
FORMATS = dict(zip(FILE_FORMATS, ("a .npy or .csv file of an N×D array",
                                   "a folder of MNIST IDX files",
                                   "a folder of CIFAR-10 python batches",
                                   "a folder of PNG/JPEG images")))
POINTS_SUFFIXES = (".npy", ".csv")


@dataclass
class Dataset:
    """A data set held in memory: float32 points (N, D) or uint8 images (N, C, H, W)."""

    kind: str                          # "points" or "image"
    values: torch.Tensor
    name: str                          # e.g. "8gaussians", "mnist", "images"
    source: str | None = None          # the path it came from; None when generated
    labels: torch.Tensor | None = None # int64 (N,) class labels where the format has them

    def __len__(self) -> int:
        return len(self.values)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """The samples at `index` as float32: points as they are, images in [-1, 1]."""
        chosen = self.values[index]
        return uint8_to_unit(chosen) if self.kind == "image" else chosen.float()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (D,) or (C, H, W)."""
        return tuple(self.values.shape[1:])


def standardisation(dataset: Dataset) -> tuple[list[float], list[float]]:
    """The per-dimension mean and std of a points data set: the affine the nets of a
    standardising model work through (a constant dimension gets scale 1)."""
    values = dataset.values.double()
    shift, scale = values.mean(0), values.std(0, unbiased=False)
    scale = torch.where(scale > 1e-12 * (1.0 + shift.abs()), scale, torch.ones_like(scale))
    return [float(v) for v in shift], [float(v) for v in scale]


def _tensor(arr: np.ndarray) -> torch.Tensor:
    """A torch tensor sharing `arr`'s memory where possible (copying read-only arrays)."""
    arr = np.ascontiguousarray(arr)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def _split(values: np.ndarray, labels: np.ndarray | None, fraction: float, seed: int,
           source: Path) -> tuple[tuple[np.ndarray, np.ndarray | None], ...]:
    """Split into (train, heldout) parts, holding out `fraction` at random (seeded)."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"holdout fraction {fraction} is out of range: expected 0 <= f < 1")
    n = len(values)
    if n < 2:
        raise DataError(f"data in {source} hold {n} sample(s): expected at least 2 "
                        f"(some to train on, one held out)")
    k = min(n - 1, max(1, round(n * fraction)))
    perm = np.random.default_rng([seed, 2]).permutation(n)
    held, train = np.sort(perm[:k]), np.sort(perm[k:])
    pick = (lambda idx: None) if labels is None else (lambda idx: labels[idx])
    return (values[train], pick(train)), (values[held], pick(held))


def _generate_shapes(n: int, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """`n` images of 1–3 filled rectangles or full-length bars, bright on black, uint8 NCHW."""
    out = np.zeros((n, channels, size, size), dtype=np.uint8)
    rows = np.arange(size)[None, :, None]
    cols = np.arange(size)[None, None, :]
    for start in range(0, n, 4096):
        m = min(4096, n - start)
        img = out[start:start + m]
        for k in range(3):
            present = rng.random(m) < (1.0 if k == 0 else 0.5)
            h = rng.integers(max(1, size // 4), size // 2 + 2, m)
            w = rng.integers(max(1, size // 4), size // 2 + 2, m)
            bar = rng.random(m) < 0.3
            across = rng.random(m) < 0.5
            thick = rng.integers(1, max(1, size // 4) + 1, m)
            h = np.where(bar, np.where(across, thick, size), h)
            w = np.where(bar, np.where(across, size, thick), w)
            y0 = (rng.random(m) * (size - h + 1)).astype(np.int64)
            x0 = (rng.random(m) * (size - w + 1)).astype(np.int64)
            colour = rng.integers(64, 256, (m, channels)).astype(np.uint8)
            mask = ((rows >= y0[:, None, None]) & (rows < (y0 + h)[:, None, None])
                    & (cols >= x0[:, None, None]) & (cols < (x0 + w)[:, None, None])
                    & present[:, None, None])
            img[:] = np.where(mask[:, None], colour[:, :, None, None], img)
    return out


def _generated(name: str, data: DataConfig, model: ModelConfig,
               seed: int) -> tuple[Dataset, Dataset]:
    """A built-in set: `num_points` samples, plus a fresh draw as the heldout set."""
    if data.num_points < 1:
        raise DataError(f"num_points is {data.num_points}: expected a positive count")
    sizes = (data.num_points, max(1000, data.num_points // 10))
    rngs = (np.random.default_rng(seed), np.random.default_rng([seed, 1]))
    if name == "shapes":
        _check_kind(name, "image", model)
        return tuple(Dataset("image", _tensor(_generate_shapes(n, model.image_size,
                                                               model.channels, rng)), name)
                     for n, rng in zip(sizes, rngs))
    _check_kind(name, "points", model)
    _check_dim(name, 2, model)
    toy = get_toy_set(name)
    return tuple(Dataset("points", _tensor(toy.sample(n, rng)), name)
                 for n, rng in zip(sizes, rngs))


def _check_kind(name: str, kind: str, model: ModelConfig) -> None:
    """Raise unless the model kind fits data of `kind`."""
    if kind == model.kind:
        return
    if kind == "points":
        raise DataError(f"data set {name!r} holds 2-D points but the model kind is 'image': "
                        f"expected a points model (e.g. --preset toy2d)")
    raise DataError(f"data set {name!r} holds images but the model kind is 'points': "
                    f"expected an image model (e.g. --preset mnist)")


def _check_dim(name: str, dim: int, model: ModelConfig) -> None:
    """Raise unless points of dimension `dim` fit the model's `data_dim`."""
    if dim != model.data_dim:
        raise DataError(f"data set {name!r} holds {dim}-D points but the model has "
                        f"data_dim={model.data_dim}: expected matching dimensions")


def _read_csv(path: Path) -> np.ndarray:
    """A comma- or whitespace-separated numeric table, skipping one header row if present."""
    try:
        with path.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read points file {path}: {one_line(err)}") from None
    delimiter = "," if "," in first else None
    try:
        [float(v) for v in first.split(delimiter)]
        header = 0
    except ValueError:
        header = 1
    try:
        return np.loadtxt(path, delimiter=delimiter, skiprows=header, ndmin=2,
                          dtype=np.float64)
    except ValueError as err:
        raise DataError(f"cannot parse points file {path}: {one_line(err)}; "
                        f"expected N rows of numbers after an optional header row") from None


def read_points(path: Path, dim: int | None = 2) -> np.ndarray:
    """An N×`dim` array of finite floats from a .npy or .csv file, as float32 (`dim=None`:
    any number of columns)."""
    if path.suffix.lower() == ".csv":
        arr = _read_csv(path)
    else:
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"cannot read points file {path}: {one_line(err)}") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or len(arr) == 0 \
            or arr.shape[1] == 0 or arr.shape[1] != (dim or arr.shape[1]):
        shape = getattr(arr, "shape", type(arr).__name__)
        raise DataError(f"points file {path} holds an array of shape {shape}: "
                        f"expected an N×{dim or 'D'} array")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"points file {path} holds {arr.dtype} values: expected numbers")
    arr = arr.astype(np.float32)
    bad = int((~np.isfinite(arr)).any(axis=1).sum())
    if bad:
        raise DataError(f"points file {path} has {bad} row(s) with NaN or infinite values: "
                        f"expected finite numbers")
    return arr


def points_file_dim(data: DataConfig) -> int | None:
    """The column count D of the points file `data.path` names (None when it names none)."""
    if data.path is None:
        return None
    path = Path(data.path).expanduser()
    if not path.is_file() or (data.dataset not in (None, "points", *GENERATED)) \
            or guess_format(path) != "points":
        return None
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if isinstance(arr, np.ndarray) and arr.ndim == 2 and arr.shape[1] > 0:
                return int(arr.shape[1])
        except (OSError, ValueError, EOFError):
            pass  # read_points says what is wrong with it
    return int(read_points(path, None).shape[1])


def adopt_points_dim(model: ModelConfig, data: DataConfig) -> None:
    """Give a points `model` the column count of the points file `data` names: the default
    `data_dim` (2) follows the file; any other value must match it (`DataError` otherwise)."""
    dim = points_file_dim(data) if model.kind == "points" else None
    if dim is None or dim == model.data_dim:
        return
    default = ModelConfig.__dataclass_fields__["data_dim"].default
    if model.data_dim != default:
        raise DataError(f"{data.path} holds {dim}-D points but data_dim is {model.data_dim}: "
                        f"drop --data-dim (it follows the file) or pass --data-dim {dim}")
    model.data_dim = dim


def guess_format(path: Path) -> str:
    """The format of the data at `path`: points, mnist, cifar10 or images."""
    if path.is_file():
        if path.suffix.lower() in POINTS_SUFFIXES:
            return "points"
        raise DataError(f"cannot tell the format of {path}: expected a .npy/.csv points file "
                        f"or a folder of MNIST IDX files, CIFAR-10 batches or images")
    if imgio.has_idx_files(path):
        return "mnist"
    if imgio.has_cifar_batches(path):
        return "cifar10"
    return "images"


def _from_path(fmt: str, path: Path, data: DataConfig, model: ModelConfig,
               seed: int) -> tuple[Dataset, Dataset]:
    """Read `path` in format `fmt` and split it into (train, heldout)."""
    source = str(path)
    if fmt == "points":
        if not path.is_file():
            raise DataError(f"data set 'points' needs {FORMATS['points']}, got folder {path}")
        _check_kind("points", "points", model)
        values = read_points(path, model.data_dim)
        parts = _split(values, None, data.holdout_fraction, seed, path)
        return tuple(Dataset("points", _tensor(v), "points", source) for v, _ in parts)

    _check_kind(fmt, "image", model)
    if not path.is_dir():
        raise DataError(f"data set {fmt!r} needs {FORMATS[fmt]}, got file {path}")
    if fmt == "images":
        values = imgio.load_image_folder(path, model.image_size, model.channels)
        parts = _split(values, None, data.holdout_fraction, seed, path)
    else:
        splits = imgio.load_mnist(path) if fmt == "mnist" else imgio.load_cifar10(path)
        if len(splits) == 2:
            parts = (splits["train"], splits["test"])
        else:
            (values, labels), = splits.values()
            parts = _split(values, labels, data.holdout_fraction, seed, path)
        parts = tuple((imgio.fit_images(v, model.image_size, model.channels), lab)
                      for v, lab in parts)
    return tuple(Dataset("image", _tensor(v), fmt, source,
                         None if lab is None else _tensor(lab.astype(np.int64)))
                 for v, lab in parts)


def load_data(data: DataConfig, model: ModelConfig, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, heldout) for `data`, checked against `model` (kind, dimension, image size).

    A built-in name without a path is generated from `seed`; otherwise the file or folder at
    `data.path` is read in the format `data.dataset` names, or the one guessed from the path.
    Raises `DataError` with a one-line message for anything missing, malformed or mismatched.
    """
    name = data.dataset
    known = ", ".join((*GENERATED, *FORMATS))
    if name is not None and name not in GENERATED and name not in FORMATS:
        raise DataError(f"unknown data set {name!r}: expected one of {known}")
    if data.path is None:
        if name in GENERATED:
            return _generated(name, data, model, seed)
        if name is None:
            raise DataError(f"no data set given: expected a built-in name or --data PATH "
                            f"(known: {known})")
        raise DataError(f"data set {name!r} needs --data PATH ({FORMATS[name]})")
    path = Path(data.path).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    fmt = name if name in FORMATS else guess_format(path)
    train, heldout = _from_path(fmt, path, data, model, seed)
    if data.exclude_classes:
        train = _without_classes(train, data.exclude_classes)
    return train, heldout


def _without_classes(dataset: Dataset, classes: list[int]) -> Dataset:
    """`dataset` minus the samples labelled with any of `classes` (the held-out split keeps
    them, so they can be scored as anomalies)."""
    if dataset.labels is None:
        raise DataError(f"--exclude-class needs labelled data; {dataset.source} has no labels")
    keep = ~torch.isin(dataset.labels, torch.tensor(list(classes), dtype=torch.int64))
    if not bool(keep.any()):
        raise DataError(f"excluding classes {sorted(classes)} leaves no training data")
    return dataclasses.replace(dataset, values=dataset.values[keep], labels=dataset.labels[keep])
