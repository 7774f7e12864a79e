"""Ablation on the 2-D benchmarks: training ingredients on/off → modes, high-quality %, grid KL.

Each variant is the `toy2d` preset plus field overrides; every (variant, data set, seed) run
trains from scratch and is evaluated with the VEEGAN protocol (2,500 samples) and the grid
KL(p_data ‖ p_E). Runs go in parallel processes (one thread each). Prints a Markdown table
(worst seed per cell: fewest modes, lowest HQ, highest KL) and writes every run to --json.

    python benchmarks/ablation_2d.py --jobs 2                       # the README table
    python benchmarks/ablation_2d.py --variants default,paper,gan --seeds 0 --steps 2000
    python benchmarks/ablation_2d.py --variant "mine:entropy_weight=0.5,gradient_penalty=1"
    python benchmarks/ablation_2d.py --from-json default.json paper.json   # one table, no runs
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

#: name → config overrides on top of the toy2d preset (the default recipe is the preset itself).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {"recipe": "paper"},
    "gan": {"objective": "gan"},
}


def parse_value(text: str) -> Any:
    """'1e-3' → 1e-3, '5' → 5, 'true' → True, anything else stays a string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """'name:key=value,key=value' → (name, overrides)."""
    name, _, body = spec.partition(":")
    overrides = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = parse_value(value.strip())
    return name, overrides


def run_one(job: tuple[str, dict[str, Any], str, int, int | None]) -> dict[str, Any]:
    """Train and evaluate one (variant, data set, seed); returns the figures."""
    import torch

    from ebgen.config import preset_config
    from ebgen.evaluate import evaluate
    from ebgen.train import train

    torch.set_num_threads(1)
    name, overrides, dataset, seed, steps = job
    settings = {"dataset": dataset, "seed": seed, "steps": steps, **overrides}
    with tempfile.TemporaryDirectory() as out:
        config = preset_config("toy2d", **settings)
        config.train.sample_every = config.train.checkpoint_every = config.train.steps
        start = time.perf_counter()
        train(config, out, progress=False)
        seconds = time.perf_counter() - start
        report = evaluate(out, device="cpu")
    return {"variant": name, "dataset": dataset, "seed": seed, "steps": config.train.steps,
            "overrides": overrides, "modes": report.get("modes"),
            "num_modes": report.get("num_modes"), "high_quality": report.get("high_quality"),
            "kl": report["kl_data_energy"], "seconds": round(seconds, 1)}


def table(results: list[dict[str, Any]], datasets: list[str]) -> str:
    """Markdown: one row per variant, worst seed per cell."""
    header = "| variant | " + " | ".join(
        f"{d} modes | {d} HQ % | {d} KL" for d in datasets) + " | s/run |"
    lines = [header, "|" + "---|" * (2 + 3 * len(datasets))]
    for variant in dict.fromkeys(r["variant"] for r in results):
        cells, seconds = [], []
        for dataset in datasets:
            rows = [r for r in results if r["variant"] == variant and r["dataset"] == dataset]
            seconds += [r["seconds"] for r in rows]
            if not rows:
                cells += ["–"] * 3
                continue
            if rows[0]["modes"] is None:
                cells += ["–", "–"]
            else:
                cells += [f"{min(r['modes'] for r in rows)}/{rows[0]['num_modes']}",
                          f"{100 * min(r['high_quality'] for r in rows):.1f}"]
            cells.append(f"{max(r['kl'] for r in rows):.3g}")
        lines.append(f"| {variant} | " + " | ".join(cells)
                     + f" | {sum(seconds) / max(1, len(seconds)):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated names from VARIANTS")
    parser.add_argument("--variant", action="append", default=[],
                        help="extra variant 'name:key=value,...' (repeatable)")
    parser.add_argument("--datasets", default="8gaussians,25gaussians")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=None, help="(default: the preset's)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", default=None, help="write every run's figures here")
    parser.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                        help="train nothing: print the table of earlier --json files together")
    args = parser.parse_args()
    datasets = args.datasets.split(",")
    if args.from_json:
        saved = [r for path in args.from_json for r in json.loads(Path(path).read_text())]
        print(table(saved, datasets))
        return
    variants = {name: VARIANTS[name] for name in filter(None, args.variants.split(","))}
    variants.update(parse_variant(spec) for spec in args.variant)
    jobs = [(name, overrides, dataset, int(seed), args.steps)
            for name, overrides in variants.items() for dataset in datasets
            for seed in args.seeds.split(",")]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        results = []
        for result in pool.imap_unordered(run_one, jobs):
            results.append(result)
            print(json.dumps(result), flush=True)
    order = {name: i for i, name in enumerate(variants)}
    results.sort(key=lambda r: (order[r["variant"]], r["dataset"], r["seed"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(table(results, datasets))


if __name__ == "__main__":
    main()
