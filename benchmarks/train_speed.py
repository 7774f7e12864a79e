"""Training-step speed, measured side by side in one run.

Prints steps/s and samples/s per configuration and the step time relative to the first row
(a plain GAN on the same nets): DDGM with the paper's recipe (batch-norm entropy) and with
the preset's default recipe — before and after its handover from R1 to score matching and
calibration (`calibrate_from`) where the preset has one — and on CUDA fp32 vs bf16 autocast.

    python benchmarks/train_speed.py --preset toy2d --steps 200
    python benchmarks/train_speed.py --preset mnist --device cuda --steps 300
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from ebgen.config import preset_config
from ebgen.train import Trainer


#: (row name, preset_config overrides), first row the reference.
VARIANTS = [("gan plain", {"objective": "gan", "recipe": "paper"}),  # no R1
            ("gan", {"objective": "gan"}),                       # the preset's R1 + lr decay
            ("ddgm paper", {"recipe": "paper"}),
            ("ddgm default", {}),                                # before the handover: R1
            # After `calibrate_from` (toy2d): score matching and calibration instead of R1.
            ("ddgm calib.", {"gradient_penalty": 0.0, "calibrate_from": 0.0})]


def measure(preset: str, variants: list[tuple[str, dict]], device: str, amp: bool, steps: int,
            warmup: int, data: str | None, repeats: int) -> list[float]:
    """Best-of-`repeats` steps per second of `Trainer.train_step` per variant.

    Variants are timed round-robin within each repeat, so drift in machine load hits all alike.
    """
    with tempfile.TemporaryDirectory() as out:
        trainers = []
        for i, (_, overrides) in enumerate(variants):
            config = preset_config(preset, device=device, amp=amp, path=data, **overrides)
            trainers.append(Trainer(config, f"{out}/{i}", progress=False))
        for trainer in trainers:
            for _ in range(warmup):
                trainer.train_step()
        best = [0.0] * len(trainers)
        for _ in range(repeats):
            for i, trainer in enumerate(trainers):
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(steps):
                    trainer.train_step()
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize()
                best[i] = max(best[i], steps / (time.perf_counter() - start))
        return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="toy2d")
    parser.add_argument("--data", default=None, help="data path the preset needs (mnist, ...)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    variants = VARIANTS
    if not preset_config(args.preset).train.calibrate_from:  # no handover: one default row
        variants = [v for v in VARIANTS if v[0] != "ddgm calib."]
    rows = []
    amps = [False, True] if args.device.startswith("cuda") else [False]
    for amp in amps:
        rates = measure(args.preset, variants, args.device, amp, args.steps, args.warmup,
                        args.data, args.repeats)
        rows += [(name, "bf16" if amp else "fp32", rate)
                 for (name, _), rate in zip(variants, rates)]
    batch = preset_config(args.preset).train.batch_size
    print(f"preset {args.preset}, device {args.device}, batch {batch}, torch {torch.__version__}")
    print(f"{'variant':<14}{'precision':<11}{'steps/s':>10}{'samples/s':>12}{'step time':>11}")
    for name, precision, rate in rows:
        print(f"{name:<14}{precision:<11}{rate:>10.1f}{rate * batch:>12.0f}"
              f"{rows[0][2] / rate:>10.2f}x")


if __name__ == "__main__":
    main()
