"""ebgen: deep directed generative models with energy-based probability estimation.

Kim & Bengio (2016): an energy model E(x) and a generator G(z) trained together. Train with
`ebgen.train.train`, export with `ebgen.export.export_model`, serve with `ebgen.serve`; load
any model for inference with `ebgen.load_model` (this module is the package's front door, the
one place above every stage).
Importing `ebgen` is cheap: torch loads only when a module that needs it is imported.
"""
from __future__ import annotations

__version__ = "0.1.0"


def load_model(path, device: str = "auto", threads: int | None = None):
    """Load a model for inference with onnxruntime: the one public way in.

    `path` is a model directory (from `ebgen export`), a training checkpoint directory
    (exported once to a cache folder by `ebgen.export`; needs torch) or a bundled model name.
    `device`: auto, cpu or cuda[:N]. `threads`: onnxruntime threads per session (default: its
    choice). Returns an `ebgen.runtime.InferenceModel`; torch is not imported for a model
    directory or a bundled model.

    Example:
        >>> import ebgen
        >>> model = ebgen.load_model("models/tiny")   # doctest: +SKIP
        >>> x = model.generate(16, seed=0)            # float32 (16, 1, 8, 8) in [-1, 1]
        >>> model.score(x)["percentile"]              # 0–100, higher = less typical
    """
    from .runtime import InferenceModel

    return InferenceModel(resolve_model_path(path), device, threads)


def load_torch(path, device: str = "cpu"):
    """The PyTorch nets of a model, for gradients (`ebgen.torch_model.TorchModel`: energy,
    energy_grad, latent_energy_grad, generate, interpolate). `path` is a checkpoint, a model
    directory from `ebgen export` (its torch/ folder) or a bundled model that carries its
    weights. Needs torch (`ebgen[train]`).

        >>> ebgen.load_torch("ring").energy_grad([[0.0, 2.0]])   # doctest: +SKIP
    """
    from .torch_model import TorchModel, checkpoint_directory

    return TorchModel(checkpoint_directory(path), device)


def load_refiner(path, device: str = "cpu"):
    """What refines a model's latents (`refine`, `latents`, `generate_from_latents`): for a
    model directory or bundled model that carries latent_potential.onnx, its onnxruntime
    model (no torch); for a training checkpoint, or a model exported before that file
    existed, its PyTorch nets (`load_torch`). Both run the same chain (`ebgen.refine`).

        >>> z, accepted = ebgen.load_refiner("mnist").refine(latents, steps=30)  # doctest: +SKIP
    """
    from pathlib import Path

    from .errors import EbgenError
    from .names import CONFIG_FILE

    torch_device = "cpu" if device == "auto" else device
    if (Path(path).expanduser() / CONFIG_FILE).is_file():
        return load_torch(path, torch_device)
    model = load_model(path, device)
    if model.can_refine:
        return model
    try:
        return load_torch(path, torch_device)
    except EbgenError as e:
        raise EbgenError(f"{path} cannot refine latents: it has no latent_potential.onnx "
                         f"(re-export it with `ebgen export`), and {e}") from None


def calibrate(model, x, fpr: float = 0.01, out=None, source: str = ""):
    """Calibrate a model's anomaly decisions on clean held-out samples `x`; returns the
    `ebgen.calibration.Calibration` written to the model directory's calibration.json.

    `model` is a model directory, or with `out` also a bundled name or a checkpoint: the
    model directory is then copied to `out` first and calibrated there. From then on `score`
    (Python, CLI, HTTP, TorchServe) adds `tail_probability` and `is_anomaly` (energy above
    the threshold that flags a share `fpr` of clean data). The model's TorchServe archives,
    if it has any, are rebuilt to carry the calibration (needs torch-model-archiver).

        >>> ebgen.calibrate("models/tiny", clean_images, fpr=0.01)   # doctest: +SKIP
    """
    import shutil
    from pathlib import Path

    from .calibration import fit_calibration, write_calibration
    from .errors import EbgenError
    from .runtime import InferenceModel

    directory = resolve_model_path(model)
    if out is not None:
        out = Path(out)
        if out.exists() and any(out.iterdir()):
            raise EbgenError(f"{out} exists and is not empty: calibrate into a new folder")
        shutil.copytree(directory, out, dirs_exist_ok=True)
        directory = out
    elif Path(str(model)).expanduser().resolve() != directory.resolve():
        raise EbgenError(f"{model} is not a model directory of yours (it is {directory}): "
                         f"pass out=DIR (--out DIR) to calibrate a copy")
    energies = InferenceModel(directory, device="cpu").energy(x)
    calibration = fit_calibration(energies, fpr, source)
    write_calibration(directory, calibration)
    _rebuild_archives(directory)
    return calibration


def _rebuild_archives(directory) -> None:
    """Rebuild the model directory's TorchServe archives (so they carry its calibration)."""
    import logging

    from .model_format import read_model_info

    archives = read_model_info(directory).get("archives") or {}
    if not archives:
        return
    from .errors import EbgenError

    try:
        from .export.archive import build_archive  # the export stage: needs torch

        for kind in archives:
            build_archive(directory, kind)
    except (ImportError, EbgenError) as err:
        logging.getLogger(__name__).warning(
            "%s: TorchServe archives not rebuilt, so they lack the calibration (%s; pip "
            "install 'ebgen[torchserve]')", directory, err)


def _train_and_export(config, out):
    """Train `config` into out/run and export it to out/model (no archives); returns the
    model directory (`ebgen.detector.EnergyDetector` fits through this)."""
    from pathlib import Path

    from .export import export_model
    from .train import train

    train(config, Path(out) / "run", progress=False)
    return Path(export_model(Path(out) / "run", Path(out) / "model", archive=False,
                             progress=False))


def __getattr__(name):
    if name == "EnergyDetector":  # lazily: `import ebgen` stays cheap
        from .detector import EnergyDetector

        return EnergyDetector
    raise AttributeError(f"module 'ebgen' has no attribute {name!r}")


def list_models() -> list[str]:
    """Names of the bundled pretrained models, each a valid `load_model` argument (sorted).

    `ebgen.bundled.model_card(name)` (or `ebgen models NAME`) says what each one is.

        >>> import ebgen
        >>> "mnist" in ebgen.list_models()
        True
    """
    from .bundled import bundled_names

    return bundled_names()


def resolve_model_path(path):
    """The model directory `load_model(path)` would load (a checkpoint directory is exported
    to the cache first; see `ebgen.runtime.resolve_model_path`)."""
    from .runtime import resolve_model_path as resolve

    return resolve(path, export=_cached_export)


def _cached_export(checkpoint):
    from .export.cache import cached_export  # needs torch: only for checkpoint directories

    return cached_export(checkpoint)
