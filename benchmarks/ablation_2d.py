"""Ablation on the 2-D benchmarks: training ingredients on/off → distribution metrics, modes, KL.

Each variant is the `toy2d` preset plus field overrides; every (variant, data set, seed) run
trains from scratch and is measured by `ebgen eval`'s report: MMD² over the data-vs-data floor
(global and local kernels, the worse shown) of the generator's samples and of exact samples of
exp(−E), precision/recall over fresh data's, each mode's share over its weight, VEEGAN modes and
HQ %, and the grid KL(p_data ‖ p_E). Runs go in parallel processes (one thread each). Prints a
Markdown table, one row per (variant, data set), worst seed per cell, with a last column
saying whether every seed met the goals of `GOALS`; writes every run to --json.

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

#: Every built-in 2-D set (ebgen.toy2d.TOY_SETS), without importing ebgen in the parent.
TOY_SET_NAMES = ("8gaussians", "25gaussians", "swissroll", "unequal", "anisotropic", "pinwheel",
                 "spirals", "moons", "faraway")

#: name → config overrides on top of the toy2d preset (the default recipe is the preset itself).
#: Issue 13's fourth step (the default until the Fourier features and the generator trained
#: as deployed joined at the handover).
STEP4 = {"generator_as_deployed": False, "fourier_features": 0}
#: Issue 13's third step (the default until score matching's noise went from 0.01 to 0.007).
STEP3 = {**STEP4, "score_matching_std": 0.01}
#: Issue 13's second step (the default until the wider energy and learned component weights).
STEP2 = {**STEP3, "energy_width": 128, "num_experts": 128, "component_reweighting": 0.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "step4": STEP4,
    "step3": STEP3,
    "step2": STEP2,
    # The default before issue 13: MI entropy throughout, no importance-sampled likelihood.
    "previous": {**STEP2, "likelihood": 0.0, "calibrate_entropy": None, "num_components": 0},
    # Issue 13's first step: one connected latent, likelihood weight 1.
    "connected": {**STEP2, "num_components": 0, "likelihood": 1.0},
    # Issue 13, step 5 candidates (README): the generator trained as deployed, alone (dep) and
    # with 128 Fourier features of the energy's input (frequencies up to 8) joining at the
    # handover (ffdep: the default since, spelt out so its rows read the same), from the
    # start (ff8dep) or a quarter of the way in (ff25dep).
    "dep": {"generator_as_deployed": True, "fourier_features": 0},
    "ffdep": {"generator_as_deployed": True, "fourier_features": 128,
              "fourier_max_frequency": 8.0},
    "ff8dep": {"fourier_from": 0.0},
    "ff25dep": {"fourier_from": 0.25},
    "paper": {"recipe": "paper"},
    # The same nets as a GAN: the energy as a plain discriminator of the raw input.
    "gan": {**STEP4, "objective": "gan"},
}


def parse_value(text: str) -> Any:
    """'1e-3' → 1e-3, '5' → 5, 'true' → True, 'none' → None, anything else stays a string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


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

    from ebgen.presets import preset_config
    from ebgen.eval import evaluate
    from ebgen.train import train

    torch.set_num_threads(1)
    name, overrides, dataset, seed, steps = job
    settings = {"dataset": dataset, "seed": seed, "steps": steps, **overrides}
    with tempfile.TemporaryDirectory() as out:
        config = preset_config("toy2d", **settings)
        for key in (k for k, v in overrides.items() if v is None):  # preset_config skips Nones
            section = next(sec for sec in (config.model, config.data, config.train)
                           if hasattr(sec, key))
            setattr(section, key, None)
        config.train.sample_every = config.train.checkpoint_every = config.train.steps
        start = time.perf_counter()
        train(config, out, progress=False)
        seconds = time.perf_counter() - start
        report = evaluate(out, device="cpu")
    row = {"variant": name, "dataset": dataset, "seed": seed, "steps": config.train.steps,
           "overrides": overrides, "kl": report["kl_data_energy"], "seconds": round(seconds, 1),
           "data_high_quality": report.get("data_high_quality")}
    for view in ("generator", "energy"):
        section = report[view]
        row[view] = {k: section.get(k) for k in (
            "mmd2_ratio", "mmd2_local_ratio", "precision_ratio", "recall_ratio",
            "share_ratio_min", "share_ratio_max", "modes", "num_modes", "high_quality",
            "radial_shares", "radial_tv")}
    return row


#: The issue's goals for every run: generator MMD² ≤ 2× floor, exp(−E)'s ≤ 3×, precision and
#: recall ≥ 0.9× fresh data's, every mode covered with 0.7–1.3× its weight, KL < 0.1 nats, and
#: HQ within 5 points of the data's own.
def meets_goals(row: dict[str, Any]) -> bool:
    gen, energy = row["generator"], row["energy"]
    ok = (max(gen["mmd2_ratio"], gen["mmd2_local_ratio"]) <= 2.0
          and max(energy["mmd2_ratio"], energy["mmd2_local_ratio"]) <= 3.0
          and min(gen["precision_ratio"], gen["recall_ratio"]) >= 0.9 and row["kl"] < 0.1)
    if gen.get("modes") is not None:
        ok = ok and gen["modes"] == gen["num_modes"] and 0.7 <= gen["share_ratio_min"] \
            and gen["share_ratio_max"] <= 1.3 \
            and gen["high_quality"] >= row["data_high_quality"] - 0.05
    return bool(ok)


def table(results: list[dict[str, Any]], datasets: list[str], per_seed: bool = False) -> str:
    """Markdown: one row per (variant, data set), worst seed per cell; or one per run
    (`per_seed`: the seeds column then names the seed)."""
    lines = ["| variant | data | seed" + ("" if per_seed else "s") + " | G MMD² ×floor "
             "| E MMD² ×floor | G precision / recall | E precision / recall | G mode shares "
             "| G modes | G HQ % (data) | KL | s/run | goals |", "|" + "---|" * 13]
    for variant in dict.fromkeys(r["variant"] for r in results):
        for dataset in datasets:
            rows = [r for r in results if r["variant"] == variant and r["dataset"] == dataset]
            groups = [[r] for r in sorted(rows, key=lambda r: r["seed"])] if per_seed else [rows]
            lines.extend(_row(group, per_seed) for group in groups if group)
    return "\n".join(lines)


def _row(rows: list[dict[str, Any]], per_seed: bool) -> str:
    """One table row over `rows` (one run, or every seed of a variant on a data set)."""
    worst_mmd = lambda view: max(max(r[view]["mmd2_ratio"], r[view]["mmd2_local_ratio"])
                                 for r in rows)
    low = lambda view, key: min(r[view][key] for r in rows)
    gen = rows[0]["generator"]
    modes = shares = hq = "–"
    if gen.get("modes") is not None:
        modes = f"{min(r['generator']['modes'] for r in rows)}/{gen['num_modes']}"
        shares = (f"{low('generator', 'share_ratio_min'):.2f}–"
                  f"{max(r['generator']['share_ratio_max'] for r in rows):.2f}")
        hq = (f"{100 * low('generator', 'high_quality'):.1f} "
              f"({100 * rows[0]['data_high_quality']:.1f})")
    cells = [rows[0]["variant"], rows[0]["dataset"],
             str(rows[0]["seed"]) if per_seed else str(len(rows)),
             f"{worst_mmd('generator'):.2f}", f"{worst_mmd('energy'):.2f}",
             f"{low('generator', 'precision_ratio'):.2f} / {low('generator', 'recall_ratio'):.2f}",
             f"{low('energy', 'precision_ratio'):.2f} / {low('energy', 'recall_ratio'):.2f}",
             shares, modes, hq, f"{max(r['kl'] for r in rows):.3g}",
             f"{sum(r['seconds'] for r in rows) / len(rows):.0f}",
             "met" if all(meets_goals(r) for r in rows) else "not met"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated names from VARIANTS")
    parser.add_argument("--variant", action="append", default=[],
                        help="extra variant 'name:key=value,...' (repeatable)")
    parser.add_argument("--datasets", default=",".join(TOY_SET_NAMES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=None, help="(default: the preset's)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", default=None, help="write every run's figures here")
    parser.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                        help="train nothing: print the table of earlier --json files together")
    parser.add_argument("--per-seed", action="store_true",
                        help="one row per run instead of the worst seed per data set")
    args = parser.parse_args()
    datasets = args.datasets.split(",")
    if args.from_json:
        saved = [r for path in args.from_json for r in json.loads(Path(path).read_text())]
        print(table(saved, datasets, args.per_seed))
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
    print(table(results, datasets, args.per_seed))


if __name__ == "__main__":
    main()
