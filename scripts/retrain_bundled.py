"""Retrain the bundled pretrained models from scratch, export them into the package, measure them.

One command rebuilds `ebgen/pretrained/<name>/` for each model: train with the recipe below
(a preset plus overrides, so `ebgen train` reproduces it), export the ONNX model directory
(without TorchServe archives: `ebgen serve --engine torchserve` builds those on demand), run
`ebgen eval` on the exported files (with the anomaly AUROCs for image models), and write
`recipe.json` (command, config, wall time) and `quality.json` (the metrics) beside them.
`--compare-gan` also trains the GAN objective on the same nets and records its metrics.

    python scripts/retrain_bundled.py --data ~/data/mnist                # all three
    python scripts/retrain_bundled.py --only ring grid                   # no data needed
    python scripts/retrain_bundled.py --only mnist --data ~/data/mnist --compare-gan
    python scripts/retrain_bundled.py --only mnist --data ~/data/mnist --checkpoint runs/m  # as is
    python scripts/retrain_bundled.py --table        # the README's results tables
    python scripts/retrain_bundled.py --remeasure --only ring grid   # new metrics, same models
    python scripts/retrain_bundled.py --weights-from-onnx --only mnist  # torch/ from its ONNX
    python scripts/retrain_bundled.py --add-latent-potential  # latent_potential.onnx, from torch/
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: name → (preset, config overrides, description of the source data). The presets carry the
#: measured recipes; the overrides pick the data set and the seed.
BUNDLED: dict[str, tuple[str, dict[str, Any], str]] = {
    "mnist": ("mnist", {"dataset": "mnist", "seed": 0},
              "MNIST digits (9,000 of the 10k test set; 1,000 held out)"),
    "ring": ("toy2d", {"dataset": "8gaussians", "seed": 0}, "8 Gaussians on a ring (built in)"),
    "grid": ("toy2d", {"dataset": "25gaussians", "seed": 0}, "25 Gaussians on a grid (built in)"),
}
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "ebgen" / "pretrained"
#: AIS settings of the bundled models' log Z (`ebgen export --log-z`). The 2-D models serve the
#: midpoint rule's value and keep a smaller AIS run beside it as a record (README).
LOG_Z = {"chains": 1024, "temperatures": 20000}
LOG_Z_2D = {"chains": 256, "temperatures": 5000}


def log_z_settings(config: dict[str, Any]) -> dict[str, int]:
    """The AIS settings for a model of `config` (a Config dict)."""
    model = config["model"]
    return LOG_Z_2D if model["kind"] == "points" and model["data_dim"] == 2 else LOG_Z


def command_line(name: str, objective: str | None = None) -> str:
    """The `ebgen train` command equivalent to the recipe of `name`."""
    preset, overrides, _ = BUNDLED[name]
    parts = ["ebgen train", f"--preset {preset}"]
    for key, value in overrides.items():
        parts.append(f"--{key.replace('_', '-')} {value}")
    if preset == "mnist":
        parts.append("--data MNIST_DIR")
    if objective:
        parts.append(f"--objective {objective}")
    parts.append(f"--out runs/bundled/{name}{'_' + objective if objective else ''}")
    return " ".join(parts)


def train_and_measure(name: str, runs: Path, data: str | None, objective: str | None = None,
                      progress: bool = True, threads: int | None = None
                      ) -> tuple[Path, dict[str, Any], float]:
    """Train `name` (optionally with another objective) into runs/; (checkpoint, config, s)."""
    import torch

    from ebgen.presets import preset_config
    from ebgen.train import train

    if threads:
        torch.set_num_threads(threads)

    preset, overrides, _ = BUNDLED[name]
    extra: dict[str, Any] = {"objective": objective} if objective else {}
    if preset == "mnist":
        if data is None:
            sys.exit(f"{name} needs --data: an MNIST IDX folder")
        extra["path"] = data
    config = preset_config(preset, **overrides, **extra)
    out = runs / (name if objective is None else f"{name}_{objective}")
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    train(config, out, progress=progress)
    return out, config.to_dict(), time.perf_counter() - started


def finished_run(name: str, checkpoint: Path) -> tuple[Path, dict[str, Any], float]:
    """A finished run of `name`'s recipe, as `train_and_measure` returns it: refused unless its
    config is the recipe's (data folder and device aside) and it reached the recipe's steps.
    Its seconds are its steps over its last logged rate (the training loop's own time)."""
    from ebgen.checkpoint import read_meta
    from ebgen.presets import preset_config

    preset, overrides, _ = BUNDLED[name]
    recipe = preset_config(preset, **overrides).to_dict()
    meta = read_meta(checkpoint)
    run = {part: dict(meta[part]) for part in ("model", "data", "train")}
    for config in (recipe, run):
        config["data"]["path"] = config["train"]["device"] = None
    differ = [f"{part}.{key}: run {run[part].get(key)!r}, recipe {value!r}"
              for part in run for key, value in recipe[part].items()
              if run[part].get(key) != value]
    if differ or meta["step"] != recipe["train"]["steps"]:
        raise SystemExit(f"{checkpoint} is not a finished run of the {name} recipe: "
                         + "; ".join(differ or [f"step {meta['step']}"]))
    last = json.loads((checkpoint / "metrics.jsonl").read_text().splitlines()[-1])
    config = {part: meta[part] for part in ("model", "data", "train")}
    return checkpoint, config, meta["step"] / last["steps_per_s"]


def rebuild(name: str, runs: Path, data: str | None, compare_gan: bool,
            checkpoint: Path | None = None) -> dict[str, Any]:
    """Train (or take the finished run `checkpoint`), export into the package and measure one
    bundled model; returns its quality."""
    from ebgen.eval import evaluate
    from ebgen.export import export_model

    gan_job = None
    if compare_gan:  # the GAN trains in a second process, beside the DDGM model
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
        gan_job = pool.submit(train_and_measure, name, runs, data, "gan", False, 1)
    trained_here = checkpoint is None
    if not trained_here:
        checkpoint, config, seconds = finished_run(name, checkpoint)
    else:
        checkpoint, config, seconds = train_and_measure(name, runs, data,
                                                        threads=1 if compare_gan else None)
    target = PACKAGE_DIR / name
    card = target / "quality.json"
    earlier = json.loads(card.read_text()).get("compare") if card.exists() else None
    image = config["model"]["kind"] == "image"
    # An image model's AIS at LOG_Z's settings takes hours on a CPU and its forward and reverse
    # estimates still lie far apart (README "Normalised density"): `--add-log-z` is its own step.
    export_model(checkpoint, target, force=True, archive=False, name=name, progress=False,
                 log_z=None if image else log_z_settings(config))
    _forget_local_paths(target, checkpoint)
    quality = evaluate(target, data_path=data if image else None, anomaly=image)  # on ONNX
    quality.pop("model", None)
    if gan_job is not None:
        gan_checkpoint, _, gan_seconds = gan_job.result()
        pool.shutdown()
        gan = evaluate(gan_checkpoint, data_path=data if image else None, anomaly=image)
        gan.pop("model", None)  # a path on this machine
        gan.update(train_seconds=round(gan_seconds, 1), command=command_line(name, "gan"))
        quality["compare"] = {"gan": gan}
    elif earlier:  # kept, and the table says when it was measured on an earlier recipe
        quality["compare"] = earlier
    import ebgen
    import torch

    config["data"]["path"] = None  # this machine's folder: the command says MNIST_DIR
    # A packaged run's device and threads are not on record: this process's would be a guess.
    device = str(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    recipe = {"name": name, "data": BUNDLED[name][2], "command": command_line(name),
              "train_seconds": round(seconds, 1),
              "device": device if trained_here else None,
              "torch_threads": torch.get_num_threads() if trained_here else None,
              "ebgen_version": ebgen.__version__, "config": config}
    (target / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    (target / "quality.json").write_text(json.dumps(quality, indent=2) + "\n")
    return {"name": name, "train_seconds": round(seconds, 1), **quality}


def _forget_local_paths(target: Path, checkpoint: Path) -> None:
    """Drop this machine's paths from model.json: a user's `ebgen eval` then asks for --data
    instead of looking for a folder that only existed here."""
    path = target / "model.json"
    info = json.loads(path.read_text())
    info["provenance"]["config"]["data"]["path"] = None
    info["provenance"]["checkpoint"] = f"runs/bundled/{checkpoint.name}"
    path.write_text(json.dumps(info, indent=2) + "\n")


def results_table() -> str:
    """The README's results tables (Markdown), from the bundled models' quality.json files."""
    cards = {name: json.loads((PACKAGE_DIR / name / "quality.json").read_text())
             for name in BUNDLED if (PACKAGE_DIR / name / "quality.json").is_file()}
    recipes = {name: json.loads((PACKAGE_DIR / name / "recipe.json").read_text())
               for name in cards}
    lines = []
    if "mnist" in cards:
        corruptions = ("noise", "blur", "inverted", "shifted")
        lines += ["| mnist | classes | class KL | confident | Fréchet | "
                  + " | ".join(f"AUROC {c}" for c in corruptions) + " | train | command |",
                  "|---" * (7 + len(corruptions)) + "|"]
        rows = [("**DDGM (bundled)**", cards["mnist"], recipes["mnist"]["train_seconds"],
                 recipes["mnist"]["command"])]
        gan = cards["mnist"].get("compare", {}).get("gan")
        if gan:
            label = "GAN objective, same nets"
            if gan["step"] != cards["mnist"]["step"]:
                label += f" (an earlier recipe, {gan['step']:,} steps)"
            rows.append((label, gan, gan["train_seconds"], gan["command"]))
        for label, q, seconds, command in rows:
            lines.append(f"| {label} | {q['classes_covered']}/10 | {q['class_kl_uniform']:.3f} | "
                         f"{100 * q['confident_share']:.1f} % | {q['frechet_distance']:.0f} | "
                         + " | ".join(f"{q['anomaly']['energy'][c]:.3f}" for c in corruptions)
                         + f" | {seconds:.0f} s | `{command}` |")
        pca = cards["mnist"]["anomaly"]["pca"]
        lines.append(f"| PCA-50 reconstruction error | – | – | – | – | "
                     + " | ".join(f"{pca[c]:.3f}" for c in corruptions)
                     + " | – | `ebgen eval mnist --data MNIST_DIR --anomaly` |")
        lines.append("")
    points = [n for n in ("ring", "grid") if n in cards]
    if points:
        lines += ["| 2-D model | G MMD² ×floor (global / local) | E MMD² ×floor | "
                  "G precision / recall | G mode shares | modes | HQ % (data's) | grid KL | "
                  "train | command |", "|---" * 10 + "|"]
        for name in points:
            q, r = cards[name], recipes[name]
            g, e = q["generator"], q["energy"]
            lines.append(
                f"| {name} | {g['mmd2_ratio']:.1f} / {g['mmd2_local_ratio']:.1f} | "
                f"{e['mmd2_ratio']:.1f} / {e['mmd2_local_ratio']:.1f} | "
                f"{g['precision_ratio']:.2f} / {g['recall_ratio']:.2f} | "
                f"{g['share_ratio_min']:.2f}–{g['share_ratio_max']:.2f} | "
                f"{g['modes']}/{g['num_modes']} | {100 * g['high_quality']:.1f} "
                f"({100 * q['data_high_quality']:.1f}) | {q['kl_data_energy']:.3g} | "
                f"{r['train_seconds']:.0f} s | `{r['command']}` |")
    return "\n".join(lines)


def add_log_z(name: str) -> dict[str, Any]:
    """Estimate log Z of a bundled model from its PyTorch weights (as `export --log-z`: AIS,
    and the midpoint rule for 2-D models) and store it in its model.json; returns it."""
    from ebgen.checkpoint import load_checkpoint
    from ebgen.export.model_dir import estimate_log_z

    target = PACKAGE_DIR / name
    if not (target / "torch").is_dir():
        raise SystemExit(f"{name} carries no PyTorch weights: retrain it to add log Z")
    _, energy, _, _ = load_checkpoint(target / "torch")
    path = target / "model.json"
    info = json.loads(path.read_text())
    info["log_partition"] = estimate_log_z(energy, lambda m: print(m, flush=True),
                                           **log_z_settings(info["provenance"]["config"]))
    path.write_text(json.dumps(info, indent=2) + "\n")
    return info["log_partition"]


def add_latent_potential(name: str) -> dict[str, Any]:
    """Write latent_potential.onnx into a bundled model from its PyTorch weights (as `ebgen
    export` does, parity checked) and record it in its model.json; returns the entry."""
    from ebgen.checkpoint import load_checkpoint
    from ebgen.export.model_dir import export_potential

    target = PACKAGE_DIR / name
    if not (target / "torch").is_dir():
        raise SystemExit(f"{name} carries no PyTorch weights: retrain it first")
    config, energy, generator, _ = load_checkpoint(target / "torch")
    path = target / "model.json"
    info = json.loads(path.read_text())
    entry, parity = export_potential(config.model, energy, generator, target,
                                     info["onnx"]["opset"], lambda m: print(m, flush=True))
    if parity is None:
        raise SystemExit(f"{name}: {entry['skipped']}")
    info["onnx"]["latent_potential"] = entry
    info["parity"]["latent_potential"] = parity
    path.write_text(json.dumps(info, indent=2) + "\n")
    return {"latent_potential": entry, "parity": parity}


def weights_from_onnx(name: str) -> dict[str, Any]:
    """Give a bundled model its PyTorch weights (torch/) back from its own ONNX files.

    Every parameter and buffer is the ONNX initializer of the same name, except where the
    exporter folded a batch norm into the layer before it (`net.K.weight` scaled, the shift as
    `net.K.weight_bias`): that norm comes back as an identity carrying the shift, the same
    function in eval mode. The nets are checked against every bundled ONNX file as `ebgen
    export` checks its own (batches 1, 7, 64; rtol 1e-3, atol 1e-4) before torch/ is kept.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    from ebgen.checkpoint import save_checkpoint
    from ebgen.config import Config
    from ebgen.export.onnx_export import UInt8Generator, check_parity
    from ebgen.latents import sample_latents
    from ebgen.models import build_models

    target = PACKAGE_DIR / name
    info = json.loads((target / "model.json").read_text())
    config = Config.from_dict(info["provenance"]["config"])
    model = config.model
    energy, generator = build_models(model)
    for net, key in ((energy, "energy"), (generator, "generator")):
        graph = onnx.load(str(target / info["onnx"][key]["file"])).graph
        found = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
                 for i in graph.initializer}
        net.load_state_dict(_unfold_norms(net, found), strict=True)
    if model.kind != "image":
        raise SystemExit(f"{name}: points models carry their weights since they were trained")
    latents = lambda n, seed: sample_latents(n, model.z_dim, seed, model.latent)  # noqa: E731
    images = lambda n, seed: np.random.default_rng(seed).uniform(  # noqa: E731
        -1, 1, (n, *model.sample_shape)).astype(np.float32)
    parity = {key: check_parity(target / info["onnx"][key]["file"], net, make_input)
              for key, net, make_input in (("generator", generator, latents),
                                           ("generator_uint8", UInt8Generator(generator), latents),
                                           ("energy", energy, images))}
    step = info["provenance"].get("step", 0)
    save_checkpoint(target / "torch", config, energy, generator, step)
    info["torch"] = "torch"
    (target / "model.json").write_text(json.dumps(info, indent=2) + "\n")
    return {"step": step, "parity": parity}


def _unfold_norms(net: Any, found: dict[str, Any]) -> dict[str, Any]:
    """`net`'s state dict from ONNX initializers, batch norms the exporter folded made identities
    that add the folded shift (`PREV.weight_bias`)."""
    import torch

    state, modules = {}, dict(net.named_modules())
    for key, value in net.state_dict().items():
        if key in found:
            state[key] = found[key]
            continue
        norm, _, field = key.rpartition(".")
        parent, _, index = norm.rpartition(".")
        shift = found.get(f"{parent}.{int(index) - 1}.weight_bias")
        if not isinstance(modules.get(norm), torch.nn.modules.batchnorm._BatchNorm) \
                or shift is None:
            raise SystemExit(f"{key} is in neither the ONNX file nor a folded batch norm")
        identity = {"weight": lambda: torch.ones_like(value),
                    "bias": lambda: shift.reshape(value.shape),
                    "running_mean": lambda: torch.zeros_like(value),
                    "running_var": lambda: torch.full_like(value, 1.0 - modules[norm].eps),
                    "num_batches_tracked": lambda: value}
        state[key] = identity[field]()
    return state


def remeasure(name: str, data: str | None) -> dict[str, Any]:
    """Rerun `ebgen eval` on a bundled model's exported files and rewrite its quality.json
    (the comparison runs it keeps are not remeasured)."""
    from ebgen.eval import evaluate

    target = PACKAGE_DIR / name
    old = json.loads((target / "quality.json").read_text())
    image = json.loads((target / "model.json").read_text())["kind"] == "image"
    quality = evaluate(target, data_path=data if image else None, anomaly=image)
    quality.pop("model", None)
    if "compare" in old:
        quality["compare"] = old["compare"]
    (target / "quality.json").write_text(json.dumps(quality, indent=2) + "\n")
    return quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="MNIST IDX folder (for mnist)")
    parser.add_argument("--only", nargs="+", choices=list(BUNDLED), default=list(BUNDLED))
    parser.add_argument("--runs", default="runs/bundled", help="where checkpoints go")
    parser.add_argument("--compare-gan", action="store_true",
                        help="also train and measure the GAN objective on the same nets")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="RUN",
                        help="package this finished run instead of training (one --only "
                             "model; refused unless its config is the recipe's)")
    parser.add_argument("--table", action="store_true",
                        help="only print the README's results tables from the bundled models")
    parser.add_argument("--remeasure", action="store_true",
                        help="train nothing: rerun eval on the bundled files, rewrite quality.json")
    parser.add_argument("--weights-from-onnx", action="store_true",
                        help="train nothing: rebuild torch/ of an image model from its ONNX "
                             "files (checked against them), for models bundled before weights "
                             "travelled")
    parser.add_argument("--add-log-z", action="store_true",
                        help="train nothing: estimate log Z from the bundled weights into "
                             "model.json, then remeasure")
    parser.add_argument("--add-latent-potential", action="store_true",
                        help="train nothing: write latent_potential.onnx (refinement in "
                             "onnxruntime) from the bundled weights")
    args = parser.parse_args()
    if args.add_latent_potential:
        for name in args.only:
            print(json.dumps({"name": name, **add_latent_potential(name)}, indent=2),
                  flush=True)
        return
    if args.weights_from_onnx:
        for name in args.only:
            print(json.dumps({"name": name, **weights_from_onnx(name)}, indent=2), flush=True)
        return
    if args.add_log_z:
        for name in args.only:
            print(json.dumps({"name": name, **add_log_z(name)}, indent=2), flush=True)
        args.remeasure = True
    if args.table:
        print(results_table())
        return
    if args.remeasure:
        for name in args.only:
            print(json.dumps({"name": name, **remeasure(name, args.data)}, indent=2))
        return
    if args.checkpoint is not None and (len(args.only) != 1 or args.compare_gan):
        parser.error("--checkpoint packages one run: give one --only model, no --compare-gan")
    started = time.perf_counter()
    for name in args.only:
        t0 = time.perf_counter()
        result = rebuild(name, Path(args.runs), args.data, args.compare_gan, args.checkpoint)
        print(json.dumps(result, indent=2), flush=True)
        print(f"{name}: rebuilt in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"all done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
