"""Training-step speed, measured side by side in one run.

Prints steps/s and samples/s per configuration (median over repeats) and the step time
relative to a plain GAN and to the preset's GAN (`--objective gan`: the preset's R1 and lr
decay) on the same nets: DDGM with the paper's recipe (batch-norm entropy) and with the
preset's default recipe — before and after its handover from R1 to the calibration terms and
the late entropy estimate (`calibrate_from`, `calibrate_entropy`) where the preset has one —
each phase that uses the MI entropy estimator also without it ("-MI": batch-norm entropy), to
show what MI costs; where the preset has R1, without it ("-R1") and lazily on every 4th step
("R1/4", `--gradient-penalty-every 4`); and on CUDA fp32 vs bf16
autocast. The relative step time is the median, over repeats, of ratios taken within one
repeat (each repeat runs every variant once, in a random order), with the range over repeats
for the GAN column.

    python benchmarks/train_speed.py --preset toy2d --steps 100 --repeats 15
    OMP_NUM_THREADS=1 python benchmarks/train_speed.py --preset toy2d --steps 100 --repeats 15
    python benchmarks/train_speed.py --preset mnist --device cuda --steps 300
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time

import torch

from ebgen.presets import preset_config
from ebgen.train import Trainer


#: Overrides key of a row that starts at the handover step (`calibrate_from`), so the trainer
#: runs the late phase as a real run does: the calibration terms instead of R1, the late
#: entropy estimate, the Fourier features and the deployed generator where the preset has them.
PAST_HANDOVER = "_past_handover"


def variants_for(preset: str) -> list[tuple[str, dict]]:
    """(row name, preset_config overrides); the first two rows are the references."""
    train = preset_config(preset).train
    rows = [("gan plain", {"objective": "gan", "recipe": "paper"}),  # no R1
            ("gan", {"objective": "gan"}),                       # the preset's R1 + lr decay
            ("ddgm paper", {"recipe": "paper"}),
            ("ddgm default", {})]                                # before the handover: R1
    if train.gradient_penalty > 0:  # what R1's double backward costs, and lazy R1's share
        rows += [("ddgm default -R1", {"gradient_penalty": 0.0}),
                 ("ddgm default R1/4", {"gradient_penalty_every": 4})]
    late_entropy = train.calibrate_entropy or train.entropy
    if train.calibrate_from:
        rows.append(("ddgm calib.", {PAST_HANDOVER: True}))
    if train.entropy == "mi":
        rows.append(("ddgm default -MI", {"entropy": "bn"}))
        if train.calibrate_from and late_entropy == "mi":
            rows.append(("ddgm calib. -MI", {PAST_HANDOVER: True, "entropy": "bn",
                                             "calibrate_entropy": "bn"}))
    return rows


def measure(preset: str, variants: list[tuple[str, dict]], device: str, amp: bool, steps: int,
            warmup: int, data: str | None, repeats: int) -> list[list[float]]:
    """Steps per second of `Trainer.train_step`, `[repeat][variant]`.

    Every repeat times each variant once for `steps` steps, in a fresh random order, so drift
    in machine load and any order effect hit all variants alike.
    """
    order = random.Random(0)
    with tempfile.TemporaryDirectory() as out:
        trainers = []
        for i, (_, overrides) in enumerate(variants):
            overrides = dict(overrides)
            late = overrides.pop(PAST_HANDOVER, False)
            config = preset_config(preset, device=device, amp=amp, path=data, **overrides)
            trainer = Trainer(config, f"{out}/{i}", progress=False)
            if late:
                trainer.step = math.ceil(config.train.calibrate_from * config.train.steps)
            trainers.append(trainer)
        for trainer in trainers:
            for _ in range(warmup):
                trainer.train_step()
        rates = []
        for _ in range(repeats):
            rate = [0.0] * len(trainers)
            for i in order.sample(range(len(trainers)), len(trainers)):
                trainer = trainers[i]
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(steps):
                    trainer.train_step()
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize()
                rate[i] = steps / (time.perf_counter() - start)
            rates.append(rate)
        return rates


def relative_cost(rates: list[list[float]], reference: int) -> list[tuple[float, float, float]]:
    """Per variant: the median, min and max over repeats of its step time over the reference's.

    Ratios pair the variants' timings within one repeat, taken seconds apart.
    """
    ratios = [[repeat[reference] / repeat[i] for repeat in rates] for i in range(len(rates[0]))]
    return [(statistics.median(r), min(r), max(r)) for r in ratios]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="toy2d")
    parser.add_argument("--data", default=None, help="data path the preset needs (mnist, ...)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    variants = variants_for(args.preset)
    batch = preset_config(args.preset).train.batch_size
    print(f"preset {args.preset}, device {args.device}, batch {batch}, torch {torch.__version__},"
          f" {torch.get_num_threads()} threads, {args.repeats} repeats of {args.steps} steps")
    print(f"{'variant':<18}{'precision':<11}{'steps/s':>9}{'samples/s':>11}"
          f"{'vs gan plain':>14}{'vs gan':>8}{'  (vs gan: min-max)':>20}")
    amps = [False, True] if args.device.startswith("cuda") else [False]
    for amp in amps:
        rates = measure(args.preset, variants, args.device, amp, args.steps, args.warmup,
                        args.data, args.repeats)
        names = [name for name, _ in variants]
        plain = relative_cost(rates, names.index("gan plain"))
        gan = relative_cost(rates, names.index("gan"))
        for i, name in enumerate(names):
            rate = statistics.median(repeat[i] for repeat in rates)
            print(f"{name:<18}{'bf16' if amp else 'fp32':<11}{rate:>9.1f}{rate * batch:>11.0f}"
                  f"{plain[i][0]:>13.2f}x{gan[i][0]:>7.2f}x"
                  f"{f'({gan[i][1]:.2f}-{gan[i][2]:.2f})':>20}")


if __name__ == "__main__":
    main()
