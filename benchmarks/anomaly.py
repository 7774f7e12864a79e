"""Anomaly detection on feature vectors: ebgen's energy beside the detectors users already run.

Data this machine has without a download (scikit-learn's bundled sets):

- `digits` (8×8 = 64-D, 1,797 digits), one task per class k: trained on 80 % of the other nine
  classes; the normals are the other 20 % of them, the anomalies every digit k (novelty);
- `breast_cancer` (30-D, 569 tumours): trained on 80 % of the benign tumours; the normals are
  the other 20 %, the anomalies the malignant ones.
- `wine` (13-D, 178 wines of 3 cultivars) and `iris` (4-D, 150 flowers of 3 species), one task
  per class as for digits: small sets outside the default table, to check a change on data it
  was not chosen on (`--sets wine,iris`).

Detectors, each fitted on the same training points: ebgen (`--preset tabular`, plus
`--set key=value` overrides; the score is the energy), IsolationForest, LocalOutlierFactor
(novelty mode, 20 neighbours, standardised features), a Gaussian (Mahalanobis distance,
`ebgen.metrics.point_anomaly`) and PCA reconstruction error (standardised, the components that
hold 90 % of the variance). Prints AUROC and AUPRC per task and the mean per data set and
overall; writes every figure to --json. scikit-learn is a dev dependency only.

    python benchmarks/anomaly.py --jobs 2 --json runs/anomaly.json
    python benchmarks/anomaly.py --sets breast_cancer --steps 500          # quick
    python benchmarks/anomaly.py --set energy_width=128 --set steps=3000   # an ebgen variant
    python benchmarks/anomaly.py --seed 0 1 2 --jobs 2       # each task's mean over three seeds
    python benchmarks/anomaly.py --set energy_members=3      # an ensemble, and its members alone
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Fraction of the normal class(es) trained on; the rest are the normals scored.
TRAIN_FRACTION = 0.8
DETECTORS = ("ebgen", "isolation_forest", "lof", "gaussian", "pca")


def tasks(sets: list[str], seed: int) -> list[dict[str, Any]]:
    """(name, train, normal, anomalous) arrays for every task of the named sets."""
    from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine

    found = []
    for name in sets:
        if name == "digits":
            x, y = load_digits(return_X_y=True)
            splits = [(f"digits/{k}", x[y != k], x[y == k]) for k in range(10)]
        elif name in ("wine", "iris"):  # small sets, each class in turn the novelty
            x, y = (load_wine if name == "wine" else load_iris)(return_X_y=True)
            splits = [(f"{name}/{k}", x[y != k], x[y == k]) for k in np.unique(y)]
        elif name == "breast_cancer":
            x, y = load_breast_cancer(return_X_y=True)   # 0 = malignant, 1 = benign
            splits = [("breast_cancer", x[y == 1], x[y == 0])]
        else:
            raise SystemExit(f"unknown set {name!r}: expected digits, breast_cancer, wine or "
                             "iris")
        for task, normal, anomalous in splits:
            order = np.random.default_rng(seed).permutation(len(normal))
            cut = int(TRAIN_FRACTION * len(normal))
            found.append({"task": task, "train": normal[order[:cut]].astype(np.float32),
                          "normal": normal[order[cut:]].astype(np.float32),
                          "anomalous": anomalous.astype(np.float32)})
    return found


def ebgen_scores(task: dict[str, Any], overrides: dict[str, Any], seed: int
                 ) -> tuple[np.ndarray, np.ndarray, float, list[tuple[np.ndarray, np.ndarray]]]:
    """Train the tabular preset on the task's training points; energies of normal/anomalous,
    the training seconds, and (an ensemble, `energy_members`) each member's energies alone."""
    import torch

    from ebgen.checkpoint import load_checkpoint
    from ebgen.models import energy_function
    from ebgen.presets import preset_config
    from ebgen.train import train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        data = Path(out) / "train.npy"
        np.save(data, task["train"])
        config = preset_config("tabular", path=str(data), seed=seed, **overrides)
        config.data.holdout_fraction = 0.05
        config.train.sample_every = config.train.checkpoint_every = config.train.steps
        start = time.perf_counter()
        train(config, Path(out) / "run", progress=False)
        seconds = time.perf_counter() - start
        _, energy, _, _ = load_checkpoint(Path(out) / "run")
        scores = [energy_function(net, torch.device("cpu"))
                  for net in getattr(energy, "members", [])]
        score = energy_function(energy, torch.device("cpu"))
        return (score(task["normal"]), score(task["anomalous"]), seconds,
                [(s(task["normal"]), s(task["anomalous"])) for s in scores])


def baseline_scores(task: dict[str, Any], detector: str, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly scores (higher = more anomalous) of one scikit-learn or numpy baseline."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.preprocessing import StandardScaler

    from ebgen.metrics.point_anomaly import GaussianBaseline

    train, normal, anomalous = task["train"], task["normal"], task["anomalous"]
    if detector == "gaussian":
        fitted = GaussianBaseline().fit(train)
        return fitted.score(normal), fitted.score(anomalous)
    if detector == "isolation_forest":
        forest = IsolationForest(n_estimators=300, random_state=seed).fit(train)
        return -forest.score_samples(normal), -forest.score_samples(anomalous)
    scaler = StandardScaler().fit(train)
    train, normal, anomalous = (scaler.transform(a) for a in (train, normal, anomalous))
    if detector == "lof":
        lof = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(train)
        return -lof.score_samples(normal), -lof.score_samples(anomalous)
    pca = PCA(n_components=0.9, random_state=seed).fit(train)
    error = lambda a: ((a - pca.inverse_transform(pca.transform(a))) ** 2).sum(1)
    return error(normal), error(anomalous)


def run_task(job: tuple[dict[str, Any], dict[str, Any], int]) -> dict[str, Any]:
    """Every detector on one task: AUROC, AUPRC (and ebgen's training seconds)."""
    from ebgen.metrics.anomaly import auprc, auroc

    task, overrides, seed = job
    row: dict[str, Any] = {"task": task["task"], "seed": seed, "dim": task["train"].shape[1],
                           "num_train": len(task["train"]), "overrides": overrides}
    for detector in DETECTORS:
        if detector == "ebgen":
            normal, anomalous, row["ebgen_seconds"], members = ebgen_scores(task, overrides,
                                                                            seed)
            if members:  # an ensemble: its members alone, beside it
                row["ebgen_members"] = [{"auroc": auroc(*m), "auprc": auprc(*m)}
                                        for m in members]
        else:
            normal, anomalous = baseline_scores(task, detector, seed)
        row[detector] = {"auroc": auroc(normal, anomalous), "auprc": auprc(normal, anomalous)}
    return row


def table(rows: list[dict[str, Any]], metric: str) -> str:
    """Markdown: one row per task (the mean over its seeds), then the mean per data set and
    over the sets."""
    lines = ["| task | " + " | ".join(DETECTORS) + " |", "|" + "---|" * (len(DETECTORS) + 1)]
    cell = lambda group, d: f"{np.mean([r[d][metric] for r in group]):.3f}"
    for task in dict.fromkeys(r["task"] for r in rows):  # a task's seeds, averaged
        group = [r for r in rows if r["task"] == task]
        lines.append(f"| {task} | " + " | ".join(cell(group, d) for d in DETECTORS) + " |")
    for name in dict.fromkeys(r["task"].split("/")[0] for r in rows):
        group = [r for r in rows if r["task"].split("/")[0] == name]
        if len({r["task"] for r in group}) > 1:  # a set of several tasks
            lines.append(f"| **{name} mean** | " + " | ".join(cell(group, d) for d in DETECTORS)
                         + " |")
    means = {d: mean_of_sets(rows, lambda r, d=d: r[d][metric]) for d in DETECTORS}
    lines.append("| **mean of the sets** | " + " | ".join(f"{means[d]:.3f}" for d in DETECTORS)
                 + " |")
    return "\n".join(lines)


def mean_of_sets(rows: list[dict[str, Any]], value) -> float:
    """The mean over data sets of each set's mean `value(row)` (a set: the tasks before '/')."""
    names = dict.fromkeys(r["task"].split("/")[0] for r in rows)
    return float(np.mean([np.mean([value(r) for r in rows if r["task"].split("/")[0] == n])
                          for n in names]))


def _members_line(rows: list[dict[str, Any]]) -> str:
    """The mean AUROC of the sets for each ensemble member alone, against the ensemble's."""
    alone = [mean_of_sets(rows, lambda r, i=i: r["ebgen_members"][i]["auroc"])
             for i in range(len(rows[0]["ebgen_members"]))]
    return (f"ensemble members alone, mean AUROC of the sets: "
            f"{', '.join(f'{a:.3f}' for a in alone)} (their mean {np.mean(alone):.3f}); "
            f"the ensemble {mean_of_sets(rows, lambda r: r['ebgen']['auroc']):.3f}")


def main() -> None:
    from ablation_2d import parse_value  # the same 'key=value' reading as the 2-D ablation

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="digits,breast_cancer")
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="one run of every task per seed (its split and ebgen's training); "
                             "the tables average them")
    parser.add_argument("--steps", type=int, default=None, help="(default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an ebgen config override (repeatable)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--json", default=None, help="write every task's figures here")
    parser.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                        help="train nothing: print the tables of earlier --json files")
    args = parser.parse_args()
    if args.from_json:
        rows = [row for f in args.from_json for row in json.loads(Path(f).read_text())]
    else:
        overrides = {k: parse_value(v) for k, _, v in (s.partition("=") for s in args.set)}
        if args.steps is not None:
            overrides["steps"] = args.steps
        jobs = [(t, overrides, seed) for seed in dict.fromkeys(args.seed)
                for t in tasks(args.sets.split(","), seed)]
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            rows = pool.map(run_task, jobs, chunksize=1)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    seconds = [r["ebgen_seconds"] for r in rows if "ebgen_seconds" in r]
    seeds = ", ".join(map(str, dict.fromkeys(r["seed"] for r in rows)))
    print(f"ebgen overrides: {rows[0]['overrides'] or 'none'}; seeds {seeds}; training "
          f"{np.mean(seconds):.0f} s a task on one thread\n\nAUROC\n\n{table(rows, 'auroc')}"
          f"\n\nAUPRC\n\n{table(rows, 'auprc')}")
    members = [r for r in rows if "ebgen_members" in r]
    if members:  # the ensemble's members, each alone: the mean of the sets, member by member
        print("\n" + _members_line(members))


if __name__ == "__main__":
    main()
