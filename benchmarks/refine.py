"""Do latent-space MALA refined samples (`ebgen eval --refine-steps`) follow the data better?

Each model's generator samples are measured by `ebgen eval` itself (`ebgen.eval.evaluate`),
raw and after latent-space MALA with each (steps, step size) setting, on the same seeded
latents, for each seed. 2-D models: MMD² over the data-vs-data floor (global / local kernel),
precision / recall over fresh data's, each mode's share over its weight, HQ %. Digit models:
the bundled classifier's confident share, Fréchet distance, class KL, MMD² and precision /
recall in its features. Prints a Markdown table per kind (the README's).

    python benchmarks/refine.py
    python benchmarks/refine.py --models grid --settings 10:0.05,50:0.02 --num-samples 5000
    python benchmarks/refine.py --models mnist,runs/mnist --data MNIST_DIR --seeds 0,1
"""
from __future__ import annotations

import argparse
import time


def measure(name: str, steps: int, step_size: float, num_samples: int | None, seed: int,
            data: str | None) -> dict:
    """`ebgen eval`'s report of `name` with its samples refined by `steps` MALA steps."""
    from ebgen.eval import evaluate

    start = time.perf_counter()
    report = evaluate(name, num_samples=num_samples, data_path=data, seed=seed, device="cpu",
                      refine_steps=steps, refine_step_size=step_size or 0.1)
    report["seconds"] = time.perf_counter() - start
    return report


def _setting(report: dict) -> tuple[str, str]:
    refine = report.get("refine")
    if not refine:
        return "raw", "–"
    return f"{refine['steps']} × {refine['step_size']:g}", f"{100 * refine['accepted']:.0f} %"


def _cells(report: dict) -> list[str]:
    """The figures of one report, by the model's kind."""
    g = report["generator"]
    if report["kind"] == "points":
        return [f"{g['mmd2_ratio']:.2f} / {g['mmd2_local_ratio']:.2f}",
                f"{g['precision_ratio']:.2f} / {g['recall_ratio']:.2f}",
                f"{g['share_ratio_min']:.2f}–{g['share_ratio_max']:.2f}",
                f"{100 * g['high_quality']:.1f} ({100 * report['data_high_quality']:.1f})"]
    return [f"{100 * report['confident_share']:.1f} %", f"{report['frechet_distance']:.1f}",
            f"{report['class_kl_uniform']:.3f}", str(report["classes_covered"]),
            f"{g['mmd2_ratio']:.2f}", f"{g['precision_ratio']:.2f} / {g['recall_ratio']:.2f}"]


def row(name: str, seed: int, report: dict) -> str:
    """One Markdown table row: the model, the seed, the setting, its figures and time."""
    cells = [name, str(seed), *_setting(report), *_cells(report),
             f"{report['seconds']:.0f} s"]
    return "| " + " | ".join(cells) + " |"


HEADERS = {
    "points": ("| model | seed | MALA steps × size | accepted | G MMD² ×floor (global / local) | "
               "G precision / recall | G mode shares | G HQ % (data) | time |"),
    "image": ("| model | seed | MALA steps × size | accepted | confident | Fréchet | class KL | "
              "classes | MMD² ×floor | precision / recall | time |"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ring,grid",
                        help="comma-separated bundled names, model or checkpoint directories")
    parser.add_argument("--settings", default="10:0.05,50:0.05,20:0.1",
                        help="comma-separated STEPS:STEP_SIZE")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="(default: ebgen eval's, 12500 for points, 10000 for images)")
    parser.add_argument("--data", default=None, help="an MNIST folder for digit models")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    settings = [(0, 0.0)] + [(int(a), float(b)) for a, _, b in
                             (s.partition(":") for s in args.settings.split(","))]
    printed = set()
    for name in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for steps, step_size in settings:
                report = measure(name, steps, step_size, args.num_samples, seed, args.data)
                kind = report["kind"]
                if kind not in printed:
                    print(f"\n{HEADERS[kind]}\n|{'---|' * HEADERS[kind].count(' | ')}---|")
                    printed.add(kind)
                print(row(name, seed, report), flush=True)


if __name__ == "__main__":
    main()
