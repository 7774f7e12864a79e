"""Held-out-class anomaly detection on MNIST (the protocol of Kumar et al. 2019).

For each digit D, a model is trained on the MNIST training split without D (`exclude_classes`);
on the held-out split, the digits D are the anomalies and the others normal. The energy is the
anomaly score; a PCA with 50 components fitted on the same training data is the baseline.
Prints a Markdown table (AUPRC per digit and the mean) and writes every figure to --json.

    python benchmarks/heldout_class.py --data ~/data/mnist --steps 2000 --jobs 2 \\
        --json runs/heldout_class/results.json
    python benchmarks/heldout_class.py --data ~/data/mnist --objective ddgm gan   # both
    python benchmarks/heldout_class.py --data tests/data/mnist --steps 3 --digits 3  # smoke

Each run trains as `ebgen train --preset mnist --data DATA --exclude-class D --steps STEPS
--out OUT/digit_D --quiet` would (`OUT/digit_D_gan` for `--objective gan`). A finished run
already in its folder is reused, not retrained, so an interrupted benchmark can be rerun.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

#: Where a run's training time is kept beside its checkpoint (so a reused run reports it).
TIMING_FILE = "benchmark_train_seconds.json"
#: Environment variables that set numpy's BLAS thread count (read when numpy loads).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_dir(out: str, digit: int, objective: str) -> Path:
    """The checkpoint folder of one (digit, objective) run."""
    return Path(out) / (f"digit_{digit}" if objective == "ddgm" else f"digit_{digit}_{objective}")


def train_or_reuse(job: dict[str, Any], directory: Path) -> float:
    """Train the job's model into `directory`, resuming a partial run there and reusing a
    finished one; returns its training seconds (this call's, plus any recorded before)."""
    from ebgen.checkpoint import read_meta
    from ebgen.presets import preset_config
    from ebgen.errors import CheckpointError
    from ebgen.train import resume_config, train

    timing = directory / TIMING_FILE
    before = float(json.loads(timing.read_text())["seconds"]) if timing.exists() else 0.0
    resume = (directory / "config.json").exists()
    if resume:
        meta = read_meta(directory)
        excluded, objective, step = (meta["data"].get("exclude_classes"),
                                     meta["train"]["objective"], meta["step"])
        if (excluded, objective) != ([job["digit"]], job["objective"]):
            raise CheckpointError(f"{directory} holds another run (excluded {excluded}, "
                                  f"objective {objective}): remove it or pick another --out")
        if step > job["steps"]:
            raise CheckpointError(f"{directory} is trained to step {step}, beyond --steps "
                                  f"{job['steps']}: remove it or pick another --out")
        if step == job["steps"] and timing.exists():
            return before
        config = resume_config(directory, steps=job["steps"])
    else:
        config = preset_config("mnist", path=job["data"], exclude_classes=[job["digit"]],
                               steps=job["steps"], objective=job["objective"],
                               device=job["device"])
    start = time.perf_counter()
    train(config, directory, resume=resume, progress=False)
    seconds = before + time.perf_counter() - start
    timing.write_text(json.dumps({"seconds": seconds}) + "\n")
    return seconds


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or reuse) one model without `job['digit']` and score the held-out split."""
    import torch

    from ebgen.metrics.anomaly import heldout_class_report
    from ebgen.checkpoint import load_checkpoint
    from ebgen.data import load_data
    from ebgen.devices import resolve_device
    from ebgen.models import energy_function

    torch.set_num_threads(job["threads"])
    directory = run_dir(job["out"], job["digit"], job["objective"])
    seconds = train_or_reuse(job, directory)
    device = resolve_device(job["device"])
    config, energy, _, meta = load_checkpoint(directory, device)
    train_ds, heldout_ds = load_data(config.data, config.model, seed=config.train.seed)
    train_x = train_ds.batch(torch.arange(len(train_ds))).numpy()
    heldout_x = heldout_ds.batch(torch.arange(len(heldout_ds))).numpy()
    report = heldout_class_report(energy_function(energy, device), train_x, heldout_x,
                                  heldout_ds.labels.numpy(), job["digit"],
                                  pca_components=job["pca_components"])
    return {"digit": job["digit"], "objective": job["objective"], "steps": meta["step"],
            "train_seconds": round(seconds, 1), "checkpoint": str(directory), **report}


def table(results: list[dict[str, Any]], objectives: list[str], pca_components: int) -> str:
    """Markdown: one row per digit (energy AUPRC per objective, PCA AUPRC, train seconds)."""
    def label(objective: str, what: str) -> str:
        return what if len(objectives) == 1 else f"{objective} {what}"

    columns = ([label(o, "energy AUPRC") for o in objectives] + [f"PCA-{pca_components} AUPRC"]
               + [label(o, "train seconds") for o in objectives])
    lines = ["| digit | " + " | ".join(columns) + " |", "|---" * (1 + len(columns)) + "|"]
    by_key = {(r["digit"], r["objective"]): r for r in results}
    digits = sorted({r["digit"] for r in results})
    rows = []
    for digit in digits:
        runs = [by_key[(digit, o)] for o in objectives]
        rows.append([r["energy"]["auprc"] for r in runs] + [runs[0]["pca"]["auprc"]]
                    + [r["train_seconds"] for r in runs])
    means = [sum(column) / len(column) for column in zip(*rows)]
    for name, row in [*zip(map(str, digits), rows), ("mean", means)]:
        auprcs, seconds = row[:len(objectives) + 1], row[len(objectives) + 1:]
        lines.append(f"| {name} | " + " | ".join([f"{v:.3f}" for v in auprcs]
                                                 + [f"{v:.0f}" for v in seconds]) + " |")
    return "\n".join(lines)


def summary(results: list[dict[str, Any]], objectives: list[str]) -> dict[str, Any]:
    """Mean AUPRC/AUROC per objective's energy and of the PCA baseline."""
    means: dict[str, Any] = {}
    for objective in objectives:
        runs = [r for r in results if r["objective"] == objective]
        means[objective] = {k: sum(r["energy"][k] for r in runs) / len(runs)
                            for k in ("auprc", "auroc")}
    first = [r for r in results if r["objective"] == objectives[0]]
    means["pca"] = {k: sum(r["pca"][k] for r in first) / len(first) for k in ("auprc", "auroc")}
    return means


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of MNIST IDX files")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default="runs/heldout_class", help="one run folder per digit")
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)),
                        choices=range(10), metavar="D", help="classes to hold out (default 0-9)")
    parser.add_argument("--objective", nargs="+", default=["ddgm"], choices=["ddgm", "gan"],
                        help="train each digit with these objectives (default ddgm)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads per process")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--pca-components", type=int, default=50)
    parser.add_argument("--json", default=None, help="(default: OUT/results.json)")
    args = parser.parse_args(argv)
    # numpy's OpenBLAS reads these when first loaded (here and in spawned workers); its default
    # of one thread per core is many times slower for the PCA's SVD when cores are shared.
    for name in BLAS_THREAD_VARIABLES:
        os.environ[name] = str(args.threads)
    objectives = list(dict.fromkeys(args.objective))
    jobs = [{"digit": d, "objective": o, "data": args.data, "steps": args.steps, "out": args.out,
             "device": args.device, "threads": args.threads,
             "pca_components": args.pca_components}
            for d in dict.fromkeys(args.digits) for o in objectives]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = []
    if args.jobs == 1:
        for job in jobs:
            results.append(run_one(job))
            print(json.dumps(results[-1]), flush=True)
    else:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for result in pool.imap_unordered(run_one, jobs):
                results.append(result)
                print(json.dumps(result), flush=True)
    results.sort(key=lambda r: (r["digit"], objectives.index(r["objective"])))
    path = Path(args.json or Path(args.out) / "results.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"steps": args.steps, "data": args.data, "objectives": objectives,
                                "mean": summary(results, objectives), "runs": results},
                               indent=1) + "\n")
    print(table(results, objectives, args.pca_components))
    print(f"wrote {path}")


if __name__ == "__main__":
    from ebgen.errors import EbgenError

    try:
        main()
    except EbgenError as err:
        raise SystemExit(f"error: {err}") from None
