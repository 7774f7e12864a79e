"""Train the small MNIST classifier bundled with ebgen, export it to ONNX, write its sidecar.

The classifier backs `ebgen.metrics.images` (class coverage, confidence and a Fréchet distance of
generated digits). It is trained on the training split ebgen itself uses (`ebgen.data.load_data`
with seed 0), with light augmentation done in torch (random rotations, scalings and shifts of a
few pixels through `affine_grid`/`grid_sample`), and scored on the held-out split. The export
has input `x` f32 [batch, 1, 28, 28] in [-1, 1] and outputs `logits` f32 [batch, 10] and
`features` f32 [batch, F] (penultimate-layer activations); the names come from
`ebgen.metrics.images`. onnxruntime must agree with PyTorch on both outputs at a batch size other
than the export batch, or the script fails.

    python scripts/train_classifier.py --data /work/shared/data/mnist \
        --out ebgen/assets/mnist_classifier.onnx
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ebgen.config import DataConfig, ModelConfig
from ebgen.data import Dataset, load_data
from ebgen.errors import EbgenError
from ebgen.metrics.images import (CLASSIFIER_FEATURES, CLASSIFIER_INPUT, CLASSIFIER_LOGITS,
                                 IMAGE_SHAPE, NUM_CLASSES)
from ebgen.names import BATCH_AXIS

SEED = 0
EXPORT_BATCH = 5
PARITY_BATCH = 7
PARITY_ATOL = 1e-4
FEATURE_DIM = 96
MAX_ROTATION_DEG = 12.0
MAX_SHIFT_PX = 2.0
MAX_SCALE_CHANGE = 0.08


class DigitClassifier(nn.Module):
    """Three conv blocks (16, 32, 64 channels, each halving the size) and two linear layers;
    `forward` returns (logits, penultimate features)."""

    def __init__(self, feature_dim: int = FEATURE_DIM, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.convs = nn.Sequential(block(1, 16), block(16, 32), block(32, 64))  # 28→14→7→3
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(64 * 3 * 3, feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(self.convs(x))
        return self.head(self.dropout(features)), features


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, scaling and shift of each image in `x` (N, 1, 28, 28) in [-1, 1];
    the background that comes into view is black (-1)."""
    n, _, height, _ = x.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(MAX_ROTATION_DEG)
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * MAX_SCALE_CHANGE
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / height.
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * MAX_SHIFT_PX * 2 / height
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Sample x + 1 (background 0) with zero padding so new borders stay black after the -1.
    return F.grid_sample(x + 1, grid, padding_mode="zeros", align_corners=False) - 1


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, batch: int = 1000) -> float:
    """Share of `data` whose argmax class matches its label."""
    model.eval()
    correct = 0
    for start in range(0, len(data), batch):
        index = torch.arange(start, min(start + batch, len(data)))
        logits, _ = model(data.batch(index))
        correct += int((logits.argmax(1) == data.labels[index]).sum())
    return correct / len(data)


def train(model: nn.Module, data: Dataset, epochs: int, batch: int, lr: float) -> None:
    """Adam with a one-cycle learning rate over `epochs` passes of augmented minibatches."""
    generator = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(data) / batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs,
                                                   steps_per_epoch=steps_per_epoch)
    progress = tqdm(total=epochs * steps_per_epoch, desc="train classifier", unit="step")
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), batch):
            index = order[start:start + batch]
            logits, _ = model(augment(data.batch(index), generator))
            loss = F.cross_entropy(logits, data.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            progress.update()
            progress.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    progress.close()


def export(model: nn.Module, path: Path) -> None:
    """Write `model` (eval mode) to `path` with a dynamic batch axis and the weights inside."""
    import onnx

    model.eval()
    example = torch.zeros(EXPORT_BATCH, *IMAGE_SHAPE)
    batch_dim = torch.export.Dim(BATCH_AXIS, min=1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # missing torchvision ops etc.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                          input_names=[CLASSIFIER_INPUT],
                          output_names=[CLASSIFIER_LOGITS, CLASSIFIER_FEATURES],
                          dynamic_shapes=({0: batch_dim},), verbose=False)
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    names = ([i.name for i in graph.input], [o.name for o in graph.output])
    if names != ([CLASSIFIER_INPUT], [CLASSIFIER_LOGITS, CLASSIFIER_FEATURES]):
        raise EbgenError(f"{path.name} has I/O names {names}: expected "
                         f"{CLASSIFIER_INPUT!r} → {CLASSIFIER_LOGITS!r}, {CLASSIFIER_FEATURES!r}")


def check_parity(model: nn.Module, path: Path, x: torch.Tensor) -> dict[str, float]:
    """Max |onnxruntime − PyTorch| of both outputs on `x`; raises when beyond `PARITY_ATOL`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([CLASSIFIER_LOGITS, CLASSIFIER_FEATURES], {CLASSIFIER_INPUT: x.numpy()})
    model.eval()
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    diffs = {}
    for name, g, w in zip((CLASSIFIER_LOGITS, CLASSIFIER_FEATURES), got, want):
        if g.shape != w.shape:
            raise EbgenError(f"parity: {name} has shape {g.shape} in onnxruntime, {w.shape} in "
                             f"PyTorch (batch {len(x)})")
        diffs[name] = float(np.abs(g - w).max())
        if diffs[name] > PARITY_ATOL:
            raise EbgenError(f"parity: {name} differs by {diffs[name]:.2e} > {PARITY_ATOL} "
                             f"between onnxruntime and PyTorch at batch {len(x)}")
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of MNIST IDX files")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()

    torch.set_num_threads(1)
    seed_everything(SEED)
    started = time.perf_counter()
    train_set, heldout = load_data(DataConfig(dataset="mnist", path=args.data),
                                   ModelConfig(kind="image", image_size=28, channels=1),
                                   seed=SEED)
    model = DigitClassifier()
    num_params = sum(p.numel() for p in model.parameters())
    print(f"{len(train_set)} train / {len(heldout)} held-out digits; {num_params} parameters")
    train(model, train_set, args.epochs, args.batch, args.lr)
    heldout_accuracy = accuracy(model, heldout)
    train_accuracy = accuracy(model, train_set)
    wall = time.perf_counter() - started

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    export(model, out)
    parity_input = heldout.batch(torch.arange(PARITY_BATCH))
    diffs = check_parity(model, out, parity_input)
    info = {
        "heldout_accuracy": round(heldout_accuracy, 4),
        "train_accuracy": round(train_accuracy, 4),
        "num_train": len(train_set),
        "num_heldout": len(heldout),
        "seed": SEED,
        "epochs": args.epochs,
        "num_parameters": num_params,
        "feature_dim": FEATURE_DIM,
        "train_seconds": round(wall, 1),
        "parity_max_abs_diff": diffs,
        "inputs": {CLASSIFIER_INPUT: [BATCH_AXIS, *IMAGE_SHAPE]},
        "outputs": {CLASSIFIER_LOGITS: [BATCH_AXIS, NUM_CLASSES],
                    CLASSIFIER_FEATURES: [BATCH_AXIS, FEATURE_DIM]},
        "pixel_range": [-1.0, 1.0],
        "command": shlex.join(["python", *sys.argv]),
        "torch_version": torch.__version__,
    }
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps(info, indent=2) + "\n")
    print(f"held-out accuracy {heldout_accuracy:.4f} (train {train_accuracy:.4f}); "
          f"trained in {wall:.1f} s; parity {diffs}")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) and {sidecar}")


if __name__ == "__main__":
    main()
