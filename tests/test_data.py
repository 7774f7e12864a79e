"""Tests for ebgen.data and ebgen.images: built-in sets, MNIST, CIFAR-10, images, points."""
from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ebgen.config import DataConfig, ModelConfig
from ebgen.data import Dataset, load_data
from ebgen.errors import DataError
from ebgen.toy2d import TOY_SETS

MNIST_DIR = Path(__file__).parent / "data" / "mnist"
POINTS = ModelConfig(kind="points")


def image_model(size: int = 28, channels: int = 1) -> ModelConfig:
    return ModelConfig(kind="image", image_size=size, channels=channels)


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", list(TOY_SETS))
def test_toy_sets_shape_range_and_seed(name: str) -> None:
    train, held = load_data(DataConfig(dataset=name, num_points=500), POINTS, seed=3)
    assert isinstance(train, Dataset) and train.kind == "points" and train.source is None
    assert train.values.shape == (500, 2) and train.values.dtype == torch.float32
    assert len(held) == 1000 and held.sample_shape == (2,)
    toy = TOY_SETS[name]
    assert ((train.values - torch.tensor(toy.shift)).abs().max() / toy.scale) < 3.0
    assert not torch.equal(train.values[:100], held.values[:100])
    again, _ = load_data(DataConfig(dataset=name, num_points=500), POINTS, seed=3)
    other, _ = load_data(DataConfig(dataset=name, num_points=500), POINTS, seed=4)
    assert torch.equal(train.values, again.values)
    assert not torch.equal(train.values, other.values)
    assert torch.equal(train.batch(torch.tensor([0, 5])), train.values[[0, 5]])


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_set(channels: int) -> None:
    model = image_model(8, channels)
    train, held = load_data(DataConfig(dataset="shapes", num_points=64), model, seed=1)
    assert train.values.shape == (64, channels, 8, 8) and train.values.dtype == torch.uint8
    assert len(held) == 1000
    assert (train.values.flatten(1).amax(1) >= 64).all()  # every image has a shape
    assert (train.values == 0).any()                      # on black
    x = train.batch(torch.arange(10))
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    again, _ = load_data(DataConfig(dataset="shapes", num_points=64), model, seed=1)
    assert torch.equal(train.values, again.values)


def test_kind_mismatch() -> None:
    with pytest.raises(DataError, match="model kind is 'image'"):
        load_data(DataConfig(dataset="8gaussians", num_points=10), image_model())
    with pytest.raises(DataError, match="model kind is 'points'"):
        load_data(DataConfig(dataset="shapes", num_points=10), POINTS)
    with pytest.raises(DataError, match="data_dim=3"):
        load_data(DataConfig(dataset="8gaussians", num_points=10), ModelConfig(data_dim=3))


@pytest.mark.mnist
def test_mnist_fixture_splits() -> None:
    data = DataConfig(dataset="mnist", path=str(MNIST_DIR), holdout_fraction=0.25)
    train, held = load_data(data, image_model(), seed=0)
    assert (len(train), len(held)) == (384, 128)
    assert train.values.dtype == torch.uint8 and train.sample_shape == (1, 28, 28)
    assert train.name == "mnist" and train.source == str(MNIST_DIR)
    assert train.labels is not None and train.labels.dtype == torch.int64
    assert held.labels is not None and held.labels.shape == (128,)
    all_labels = torch.cat([train.labels, held.labels])
    assert set(all_labels.tolist()) == set(range(10))
    x = train.batch(torch.arange(32))
    assert x.shape == (32, 1, 28, 28) and x.min() == -1 and x.max() == 1
    again, _ = load_data(data, image_model(), seed=0)
    assert torch.equal(train.values, again.values)
    guessed, _ = load_data(DataConfig(dataset=None, path=str(MNIST_DIR)), image_model())
    assert guessed.name == "mnist"


@pytest.mark.mnist
def test_excluded_classes_leave_training_but_stay_held_out(tmp_path: Path) -> None:
    data = DataConfig(dataset="mnist", path=str(MNIST_DIR), holdout_fraction=0.25,
                      exclude_classes=[3, 7])
    train, held = load_data(data, image_model(), seed=0)
    full, full_held = load_data(DataConfig(dataset="mnist", path=str(MNIST_DIR),
                                           holdout_fraction=0.25), image_model(), seed=0)
    assert set(train.labels.tolist()) == set(range(10)) - {3, 7}
    assert len(train) == int(((full.labels != 3) & (full.labels != 7)).sum())
    assert torch.equal(held.labels, full_held.labels)  # held out as before: 3s and 7s included
    np.save(tmp_path / "p.npy", np.zeros((10, 2), np.float32))
    with pytest.raises(DataError, match="needs labelled data"):
        load_data(DataConfig(dataset="points", path=str(tmp_path / "p.npy"),
                             exclude_classes=[1]), ModelConfig(kind="points"))
    with pytest.raises(DataError, match="leaves no training data"):
        load_data(DataConfig(dataset="mnist", path=str(MNIST_DIR),
                             exclude_classes=list(range(10))), image_model())


@pytest.mark.mnist
def test_mnist_resized_and_rgb() -> None:
    data = DataConfig(dataset="mnist", path=str(MNIST_DIR))
    small, _ = load_data(data, image_model(8, 1))
    assert small.values.shape[1:] == (1, 8, 8) and small.values.max() > 200
    rgb, _ = load_data(data, image_model(28, 3))
    assert rgb.values.shape[1:] == (3, 28, 28)
    assert torch.equal(rgb.values[:, 0], rgb.values[:, 2])


@pytest.mark.mnist
def test_mnist_raw_idx_dotted_names(tmp_path: Path) -> None:
    for name, raw in (("t10k-images-idx3-ubyte.gz", "t10k-images.idx3-ubyte"),
                      ("t10k-labels-idx1-ubyte.gz", "t10k-labels.idx1-ubyte")):
        (tmp_path / raw).write_bytes(gzip.decompress((MNIST_DIR / name).read_bytes()))
    train, held = load_data(DataConfig(dataset="mnist", path=str(tmp_path)), image_model())
    assert len(train) + len(held) == 512 and train.labels is not None


@pytest.mark.mnist
def test_mnist_train_and_test_splits(tmp_path: Path) -> None:
    for kind in ("images-idx3", "labels-idx1"):
        src = MNIST_DIR / f"t10k-{kind}-ubyte.gz"
        shutil.copy(src, tmp_path / src.name)
        shutil.copy(src, tmp_path / f"train-{kind}-ubyte.gz")
    train, held = load_data(DataConfig(dataset="mnist", path=str(tmp_path)), image_model())
    assert len(train) == len(held) == 512


def _raw_images(tmp_path: Path) -> tuple[Path, bytes]:
    raw = gzip.decompress((MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    return tmp_path / "t10k-images-idx3-ubyte", raw


@pytest.mark.mnist
@pytest.mark.parametrize("damage", ["truncated", "bad_magic", "bad_gzip"])
def test_corrupt_idx(tmp_path: Path, damage: str) -> None:
    path, raw = _raw_images(tmp_path)
    if damage == "truncated":
        path.write_bytes(raw[:-100])
    elif damage == "bad_magic":
        path.write_bytes(b"\x00\x00\x0d\x03" + raw[4:])
    else:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw)[:-50])
    with pytest.raises(DataError) as excinfo:
        load_data(DataConfig(dataset="mnist", path=str(tmp_path)), image_model())
    message = one_line_error(excinfo)
    assert "corrupt" in message and path.name in message


def test_mnist_folder_without_idx(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no MNIST IDX files"):
        load_data(DataConfig(dataset="mnist", path=str(tmp_path)), image_model())
    with pytest.raises(DataError, match=r"'mnist' needs --data PATH"):
        load_data(DataConfig(dataset="mnist"), image_model())


def test_points_npy_and_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((40, 2)).astype(np.float32)
    np.save(tmp_path / "p.npy", pts)
    train, held = load_data(DataConfig(dataset=None, path=str(tmp_path / "p.npy")), POINTS)
    assert (len(train), len(held)) == (36, 4) and train.name == "points"
    assert torch.equal(torch.cat([train.values, held.values]).sort(0).values,
                       torch.from_numpy(pts).sort(0).values)
    csv = tmp_path / "p.csv"
    csv.write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in pts) + "\n")
    train, held = load_data(DataConfig(dataset="points", path=str(csv)), POINTS)
    assert len(train) + len(held) == 40 and train.values.dtype == torch.float32
    # a built-in name with a path: the path's format is guessed
    train, _ = load_data(DataConfig(dataset="8gaussians", path=str(csv)), POINTS)
    assert train.source == str(csv)


def test_points_bad_files(tmp_path: Path) -> None:
    np.save(tmp_path / "three.npy", np.zeros((10, 3)))
    with pytest.raises(DataError) as excinfo:
        load_data(DataConfig(dataset=None, path=str(tmp_path / "three.npy")), POINTS)
    assert "(10, 3)" in one_line_error(excinfo) and "expected an N×2 array" in str(excinfo.value)
    bad = np.zeros((10, 2))
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match="NaN"):
        load_data(DataConfig(dataset=None, path=str(tmp_path / "nan.npy")), POINTS)
    with pytest.raises(DataError, match="model kind is 'image'"):
        load_data(DataConfig(dataset=None, path=str(tmp_path / "nan.npy")), image_model())


def test_missing_path() -> None:
    with pytest.raises(DataError) as excinfo:
        load_data(DataConfig(dataset=None, path="/no/such/place"), POINTS)
    assert one_line_error(excinfo) == "data path /no/such/place does not exist"


def _write_images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        arr = rng.integers(0, 256, (20 + i * 10, 30, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"a{i}.png")
        Image.fromarray(arr).save(folder / "sub" / f"b{i}.JPG", format="JPEG")
    Image.fromarray(arr[:, :, 0]).save(folder / "grey.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder(tmp_path: Path, channels: int) -> None:
    _write_images(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    train, held = load_data(DataConfig(dataset=None, path=str(tmp_path)),
                            image_model(16, channels))
    assert len(train) + len(held) == 7 and train.name == "images"
    assert train.values.shape[1:] == (channels, 16, 16) and train.values.dtype == torch.uint8
    assert train.labels is None
    x = held.batch(torch.arange(len(held)))
    assert x.min() >= -1 and x.max() <= 1


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images"):
        load_data(DataConfig(dataset="images", path=str(tmp_path)), image_model(16))
    _write_images(tmp_path)
    (tmp_path / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError) as excinfo:
        load_data(DataConfig(dataset="images", path=str(tmp_path)), image_model(16))
    assert "broken.png" in one_line_error(excinfo)


def _write_cifar(folder: Path) -> np.ndarray:
    rng = np.random.default_rng(0)
    every = []
    for name in ("data_batch_1", "data_batch_2"):
        data = rng.integers(0, 256, (10, 3072), dtype=np.uint8)
        every.append(data)
        batch = {b"data": data, b"labels": list(rng.integers(0, 10, 10).tolist())}
        (folder / name).write_bytes(pickle.dumps(batch))
    return np.concatenate(every).reshape(-1, 3, 32, 32)


def test_cifar10(tmp_path: Path) -> None:
    images = _write_cifar(tmp_path)
    data = DataConfig(dataset=None, path=str(tmp_path), holdout_fraction=0.2)
    train, held = load_data(data, image_model(32, 3))
    assert (len(train), len(held)) == (16, 4) and train.name == "cifar10"
    assert train.labels is not None and train.labels.dtype == torch.int64
    merged = torch.cat([train.values, held.values]).flatten(1).sort(0).values
    assert torch.equal(merged, torch.from_numpy(images).flatten(1).sort(0).values)
    small, _ = load_data(data, image_model(16, 1))
    assert small.values.shape[1:] == (1, 16, 16)


def test_cifar10_refuses_other_pickles(tmp_path: Path) -> None:
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}))
    with pytest.raises(DataError, match="corrupt CIFAR-10 batch"):
        load_data(DataConfig(dataset="cifar10", path=str(tmp_path)), image_model(32, 3))
