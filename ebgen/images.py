"""Readers for image data on disk: MNIST IDX files, CIFAR-10 python batches, image folders.

Every reader returns uint8 arrays in NCHW layout (and int64 labels where the format has them);
`fit_images` then resizes and converts grey/RGB with pillow to the size a model wants. Anything
wrong with a file raises `DataError` with a one-line message naming the file. Also the one
pillow conversion (`to_pil`, `from_pil`) and the one image tiling (`tile_images`) that plots
and served grids share.
"""
from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError, one_line

#: The split names readers return: the training split and the test split.
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (raw or gzip) into an array of its dims."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read IDX file {path}: {one_line(err)}") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"corrupt IDX file {path}: not a valid gzip file "
                            f"({one_line(err)})") from None
    if len(raw) < 4:
        raise DataError(f"corrupt IDX file {path}: {len(raw)} bytes, expected a 4-byte header")
    zero, dtype, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype != IDX_UBYTE or not 1 <= ndim <= 4:
        raise DataError(f"corrupt IDX file {path}: bad magic 0x{raw[:4].hex()}, expected "
                        f"0x000008NN (unsigned bytes, NN dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"corrupt IDX file {path}: truncated header, expected {header} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(f"corrupt IDX file {path}: {len(raw)} bytes, expected {expected} "
                        f"for dimensions {'x'.join(map(str, dims))}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    """The file for e.g. ("train", "images-idx3") in any accepted spelling, or None."""
    stem, tag = kind.split("-")
    for sep in ("-", "."):
        for gz in ("", ".gz"):
            candidate = folder / f"{prefix}-{stem}{sep}{tag}-ubyte{gz}"
            if candidate.is_file():
                return candidate
    return None


def has_idx_files(folder: Path) -> bool:
    """Whether `folder` holds any MNIST image IDX file."""
    return any("idx3-ubyte" in p.name for p in folder.iterdir() if p.is_file())


def load_mnist(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The MNIST splits in `folder`: {"train"/"test": (images N×1×28×28, labels or None)}."""
    found: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for split, prefix in zip(SPLITS, ("train", "t10k")):
        images_path = _idx_file(folder, prefix, "images-idx3")
        if images_path is None:
            continue
        images = read_idx(images_path)
        if images.ndim != 3 or len(images) == 0:
            raise DataError(f"corrupt IDX file {images_path}: dimensions {images.shape}, "
                            f"expected N×H×W images")
        labels = None
        labels_path = _idx_file(folder, prefix, "labels-idx1")
        if labels_path is not None:
            labels = read_idx(labels_path)
            if labels.shape != (len(images),):
                raise DataError(f"corrupt IDX file {labels_path}: {labels.shape} labels, "
                                f"expected ({len(images)},) to match {images_path.name}")
            labels = labels.astype(np.int64)
        found[split] = (images[:, None, :, :], labels)
    if not found:
        raise DataError(f"no MNIST IDX files in {folder}: expected train-images-idx3-ubyte[.gz] "
                        f"or t10k-images-idx3-ubyte[.gz]")
    return found


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays, never arbitrary objects."""

    ALLOWED = {(f"numpy.{core}.{module}", name)
               for core in ("core", "_core")
               for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}
    ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: (images N×3×32×32 uint8, labels int64)."""
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as err:  # pickle raises many kinds; all mean "not a CIFAR batch"
        raise DataError(f"corrupt CIFAR-10 batch {path}: {one_line(err)}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"corrupt CIFAR-10 batch {path}: expected a dict with b'data' "
                        f"and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or labels.shape != (len(data),):
        raise DataError(f"corrupt CIFAR-10 batch {path}: data {data.dtype} {data.shape}, "
                        f"labels {labels.shape}; expected uint8 N×3072 and N labels")
    return data.reshape(-1, 3, 32, 32), labels


def has_cifar_batches(folder: Path) -> bool:
    """Whether `folder` holds a CIFAR-10 python batch."""
    return (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file()


def load_cifar10(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The CIFAR-10 splits in `folder` (data_batch_1..5, test_batch): {split: (images, labels)}."""
    found: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    train = [folder / f"data_batch_{i}" for i in range(1, 6)]
    for split, paths in (("train", train), ("test", [folder / "test_batch"])):
        paths = [p for p in paths if p.is_file()]
        if paths:
            parts = [_read_cifar_batch(p) for p in paths]
            found[split] = (np.concatenate([p[0] for p in parts]),
                            np.concatenate([p[1] for p in parts]))
    if not found:
        raise DataError(f"no CIFAR-10 batches in {folder}: expected data_batch_1..5 or "
                        f"test_batch (the python version)")
    return found


def to_pil(image: np.ndarray) -> Image.Image:
    """A C×H×W uint8 array as a pillow image (mode L or RGB)."""
    if image.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(image[0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), mode="RGB")


def from_pil(image: Image.Image) -> np.ndarray:
    """A pillow image (mode L or RGB) as a C×H×W uint8 array."""
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def tile_images(images: np.ndarray, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """N×C×H×W uint8 images (N > 0) tiled into one C×H'×W' uint8 image, `nrow` per row
    (default ⌈√N⌉, at most N), `padding` black pixels between and around them."""
    n, c, h, w = images.shape
    ncol = max(1, min(n, nrow or math.ceil(math.sqrt(n))))
    rows = math.ceil(n / ncol)
    grid = np.zeros((c, rows * (h + padding) + padding, ncol * (w + padding) + padding),
                    dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def fit_images(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize N×C×H×W uint8 `images` to `size` px and convert to `channels` (1 or 3)."""
    n, c, h, w = images.shape
    if (c, h, w) == (channels, size, size):
        return images
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((n, channels, size, size), dtype=np.uint8)
    for i in range(n):
        img = to_pil(images[i]).convert(mode)
        if (h, w) != (size, size):
            img = img.resize((size, size), Image.Resampling.LANCZOS)
        out[i] = from_pil(img)
    return out


def list_images(folder: Path) -> list[Path]:
    """PNG/JPEG files under `folder` (recursive), sorted by path."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _load_image(path: Path, size: int, mode: str) -> np.ndarray:
    """One image file, centre-cropped to a square and resized to `size`, as C×H×W uint8."""
    try:
        with Image.open(path) as img:
            img.draft(mode, (size, size))  # JPEG: decode at a reduced scale when possible
            img = img.convert(mode)
            w, h = img.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side))
            if side != size:
                img = img.resize((size, size), Image.Resampling.LANCZOS)
            return from_pil(img)
    except Exception as err:  # pillow raises many kinds for damaged files
        raise DataError(f"cannot read image {path}: {one_line(err)}") from None


def load_image_folder(folder: Path, size: int, channels: int) -> np.ndarray:
    """Every PNG/JPEG under `folder` as N×C×size×size uint8 (grey if `channels` is 1)."""
    paths = list_images(folder)
    if not paths:
        raise DataError(f"no images in {folder}: expected PNG or JPEG files "
                        f"({', '.join(IMAGE_SUFFIXES)}), searched recursively")
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(paths), channels, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = _load_image(path, size, mode)
    return out
