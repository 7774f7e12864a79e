"""`evaluate`: what `ebgen eval` reports about a trained checkpoint or an exported model.

Points models: distribution metrics (MMD² over the data-vs-data floor, precision/recall) for
the generator's samples and for exact samples of exp(−E), each mode's share and VEEGAN mode
coverage (built-in sets), and the KL(p_data ‖ p_E) of the energy normalised on a grid
(`ebgen.metrics.points`). Image models: the mean energy of held-out
data, of generator samples and of uniform noise (a working energy orders them data < samples
< noise, since lower energy means more probable); for 28×28 grey digits, the bundled
classifier's metrics (`ebgen.metrics.images`); with `anomaly`, energy AUROCs against corrupted
digits beside a PCA baseline (`ebgen.metrics.anomaly`), and for points models of any dimension
AUROCs against corrupted points beside a Gaussian baseline (`ebgen.metrics.point_anomaly`); with
`plots_dir`, pictures (`ebgen.plots`; 2-D points models and images).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ebgen.checkpoint import load_checkpoint
from ebgen.config import Config
from ebgen.data import load_data
from ebgen.devices import resolve_device
from ebgen.errors import EbgenError
from ebgen.latents import REFINE_STEP_SIZE
from ebgen.models import energy_function, generator_function
from ebgen.names import CONFIG_FILE
from ebgen.toy2d import TOY_SETS


@dataclasses.dataclass
class Evaluated:
    """What evaluation needs of a model, whichever form it comes in."""

    config: Config
    sample: Callable[[int], np.ndarray]       # n -> samples (seeded)
    energy: Callable[[np.ndarray], np.ndarray]
    step: int | None
    source: str                               # "checkpoint" or "model directory"
    log_z: float | None = None                # model.json's AIS estimate, when there is one
    log_z_reverse: float | None = None        # ... and its reverse (from above) estimate


def open_for_eval(target: str | Path, seed: int = 0, device: str | None = "auto") -> Evaluated:
    """A training checkpoint (PyTorch) or a model directory / bundled name (onnxruntime)."""
    path = Path(target).expanduser()
    if (path / CONFIG_FILE).is_file():
        torch_device = resolve_device(device)
        config, energy, generator, meta = load_checkpoint(path, torch_device)
        return Evaluated(config, generator_function(generator, config.model.z_dim,
                                                    config.model.latent, torch_device, seed=seed),
                         energy_function(energy, torch_device), meta["step"], "checkpoint")
    from ebgen.bundled import bundled_model_path
    from ebgen import load_model

    if not path.exists() and bundled_model_path(str(target)) is None:
        raise EbgenError(f"{target} does not exist: expected a checkpoint directory, a model "
                         f"directory or a bundled model name (see `ebgen models`)")
    model = load_model(target, "cpu" if device in (None, "auto", "cpu") else device)
    provenance = model.info.get("provenance", {})
    if "config" not in provenance:
        raise EbgenError(f"{target}: model.json records no training config to evaluate with")
    return Evaluated(Config.from_dict(provenance["config"]),
                     lambda n: model.generate(n, seed=seed), model.energy,
                     provenance.get("step"), "model directory", model.log_z,
                     (model.info.get("log_partition") or {}).get("log_z_reverse"))


def evaluate(checkpoint: str | Path, num_samples: int | None = None,
             data_path: str | None = None, seed: int = 0, device: str | None = "auto",
             anomaly: bool = False, plots_dir: str | Path | None = None,
             refine_steps: int = 0,
             refine_step_size: float = REFINE_STEP_SIZE) -> dict[str, Any]:
    """Evaluate a checkpoint, model directory or bundled model; returns a JSON-ready report.

    `num_samples` defaults to 12,500 for points models (five MMD repeats of 2,500) and 10,000
    for image models. `data_path` replaces the training run's data (needed where that data is
    not on this machine). A model trained on a file is judged against that file's held-out
    points, and the report and plots name the file. With `refine_steps`, the generator's
    samples are first refined by latent-space MALA (`ebgen.load_refiner`: onnxruntime on the
    model's latent_potential.onnx, else its PyTorch nets) and the report's `refine` says how.
    """
    model = open_for_eval(checkpoint, seed, device)
    config = model.config
    data_config = config.data
    if data_path is not None:
        data_config = dataclasses.replace(data_config, path=data_path, dataset=None)
    elif data_config.path is not None and not Path(data_config.path).expanduser().exists():
        raise EbgenError(f"{checkpoint} was trained on {data_config.path}, which is not here: "
                         f"pass --data PATH (e.g. an MNIST folder)")
    train, heldout = load_data(data_config, config.model, seed=config.train.seed)
    builtin = data_config.path is None and data_config.dataset in TOY_SETS
    label = data_config.dataset if builtin else (heldout.source or heldout.name)
    report: dict[str, Any] = {"model": str(checkpoint), "source": model.source,
                              "step": model.step, "kind": config.model.kind,
                              "objective": config.train.objective, "dataset": label}
    if refine_steps:
        model, report["refine"] = _refined(model, checkpoint, refine_steps, refine_step_size,
                                           seed, device)
    plots = Path(plots_dir) if plots_dir is not None else None
    if config.model.kind == "points":
        from ebgen.metrics.points import evaluate_points

        data = heldout.values.cpu().numpy()
        report.update(evaluate_points(model.sample, model.energy,
                                      data_config.dataset if builtin else None, data,
                                      num_samples=num_samples or 12_500, seed=seed,
                                      data_label=None if builtin else label))
        heldout_energy = model.energy(data.astype(np.float32))
        report["energy_heldout_mean"] = float(np.mean(heldout_energy))
        if model.log_z is not None:
            report.update(_points_likelihood(model, heldout_energy, report.get("box")))
        if anomaly:
            from ebgen.metrics.point_anomaly import point_anomaly_report

            report["anomaly"] = point_anomaly_report(model.energy, train.values.cpu().numpy(),
                                                     data, seed=seed)
        if plots is not None and "box" in report:  # pictures of 2-D models only
            report["plots"] = _points_plots(model, data, report, plots)
        return report
    from .images import evaluate_images

    report.update(evaluate_images(model.sample, model.energy, config.model, train, heldout,
                                  num_samples or 10_000, seed, anomaly, plots))
    if model.log_z is not None:
        from ebgen.metrics.likelihood import image_likelihood_report

        from .images import MAX_PCA_TRAIN, _pick

        rng = np.random.default_rng(seed)
        report["likelihood"] = {"log_z": model.log_z, **image_likelihood_report(
            model.energy, model.log_z, _pick(train, MAX_PCA_TRAIN, rng),
            _pick(heldout, 10_000, rng), model.log_z_reverse, seed)}
    return report


def _refined(model: Evaluated, target: str | Path, steps: int, step_size: float, seed: int,
             device: str | None) -> tuple[Evaluated, dict[str, Any]]:
    """`model` whose `sample` refines its latents first (the same latents as unrefined, so
    the two reports compare sample for sample), and the refinement's record (its mean
    acceptance filled in once sampled)."""
    import ebgen
    from ebgen.runtime import InferenceModel

    refiner = ebgen.load_refiner(target, "cpu" if device in (None, "auto", "cpu") else device)
    record: dict[str, Any] = {"steps": int(steps), "step_size": float(step_size),
                              "accepted": None,
                              "engine": "onnxruntime" if isinstance(refiner, InferenceModel)
                              else "torch"}

    def sample(n: int) -> np.ndarray:
        z, record["accepted"] = refiner.refine(refiner.latents(n, seed), steps, step_size,
                                               seed, progress=True)
        return refiner.generate_from_latents(z)

    return dataclasses.replace(model, sample=sample), record


def _points_likelihood(model: Evaluated, heldout_energy: np.ndarray, box) -> dict[str, Any]:
    """Held-out log-likelihood under exp(−E)/Z (nats per point, from the held-out points'
    energies) and, in 2-D, the grid's log Z beside the AIS one (on the plots' box widened to
    twice its side)."""
    out: dict[str, Any] = {"log_z": model.log_z, "heldout_log_likelihood": float(np.mean(
        -heldout_energy - model.log_z))}
    if box is not None:
        from ebgen.metrics.points import grid_log_z

        cx, cy, half = (box[0] + box[1]) / 2, (box[2] + box[3]) / 2, box[1] - box[0]
        out["log_z_grid"] = grid_log_z(model.energy, (cx - half, cx + half, cy - half,
                                                      cy + half), resolution=1500)
    return out


def _points_plots(model: Evaluated, data: np.ndarray, report: dict[str, Any],
                  plots: Path) -> list[str]:
    """The energy landscape with samples over it, and the energy histogram, for 2-D models."""
    from ebgen import plots as plotting

    rng = np.random.default_rng(0)
    samples = model.sample(2000)
    x0, x1, y0, y1 = report["box"]
    noise = np.stack([rng.uniform(x0, x1, 2000), rng.uniform(y0, y1, 2000)], 1)
    name = Path(str(report["dataset"])).name
    written = [plotting.save_points_plot(samples, plots / "samples_energy.png",
                                         energy_fn=model.energy, box=tuple(report["box"]),
                                         data=data[:2000], title=f"{name}: samples over E"),
               plotting.save_energy_histogram(
                   {"data": model.energy(data[:2000].astype(np.float32)),
                    "samples": model.energy(samples),
                    "noise": model.energy(noise.astype(np.float32))},
                   plots / "energy_histogram.png", title=f"{name}: energies")]
    return [str(p) for p in written]


def format_report(report: dict[str, Any], indent: str = "") -> str:
    """The report as aligned `key  value` lines; nested dicts (e.g. `anomaly`) indented."""
    width = max((len(k) for k in report), default=0)
    lines = []
    for key, value in report.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}")
            lines.append(format_report(value, indent + "  "))
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list) and value and isinstance(value[0], float):
            value = "[" + ", ".join(f"{v:.3g}" for v in value) + "]"
        lines.append(f"{indent}{key:<{width}}  {value}")
    return "\n".join(lines)
