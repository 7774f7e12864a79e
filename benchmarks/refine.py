"""Do latent-space MALA refined samples (`ebgen generate --refine-steps`) follow the data better?

For each bundled 2-D model (or any model with PyTorch weights and a built-in data set), the
generator's samples are measured as `ebgen eval` measures them — MMD² over the data-vs-data
floor (global / local kernel), precision / recall over fresh data's, each mode's share over
its weight, HQ % — raw and after latent-space MALA with each (steps, step size) setting, on
the same seeded latents. Prints a Markdown table (the README's).

    python benchmarks/refine.py
    python benchmarks/refine.py --models grid --settings 10:0.05,50:0.02 --num-samples 5000
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def measure(name: str, steps: int, step_size: float, num_samples: int, seed: int) -> dict:
    """The eval report of `name`'s samples after `steps` MALA steps (0 = raw)."""
    import ebgen
    from ebgen.metrics.points import evaluate_points

    model = ebgen.load_torch(name)
    accepted = [float("nan")]

    def sample(n: int) -> np.ndarray:
        z = model.latents(n, seed)
        if steps:
            z, accepted[0] = model.refine(z, steps, step_size, seed)
        return model.generate_from_latents(z)

    start = time.perf_counter()
    report = evaluate_points(sample, model.energy, model.config.data.dataset, None,
                             num_samples=num_samples, seed=seed)
    report["seconds"] = time.perf_counter() - start
    report["accepted"] = accepted[0]
    return report


def row(name: str, steps: int, step_size: float, report: dict) -> str:
    g = report["generator"]
    setting = "raw" if not steps else f"{steps} × {step_size:g}"
    accepted = "–" if not steps else f"{100 * report['accepted']:.0f} %"
    return (f"| {name} | {setting} | {accepted} | {g['mmd2_ratio']:.2f} / "
            f"{g['mmd2_local_ratio']:.2f} | {g['precision_ratio']:.2f} / "
            f"{g['recall_ratio']:.2f} | {g['share_ratio_min']:.2f}–{g['share_ratio_max']:.2f} "
            f"| {100 * g['high_quality']:.1f} ({100 * report['data_high_quality']:.1f}) "
            f"| {report['seconds']:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ring,grid")
    parser.add_argument("--settings", default="10:0.05,50:0.05,20:0.1",
                        help="comma-separated STEPS:STEP_SIZE")
    parser.add_argument("--num-samples", type=int, default=12_500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    settings = [(0, 0.0)] + [(int(a), float(b)) for a, _, b in
                             (s.partition(":") for s in args.settings.split(","))]
    print("| model | MALA steps × size | accepted | G MMD² ×floor (global / local) | "
          "G precision / recall | G mode shares | G HQ % (data) | time |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for steps, step_size in settings:
            report = measure(name, steps, step_size, args.num_samples, args.seed)
            print(row(name, steps, step_size, report), flush=True)


if __name__ == "__main__":
    main()
