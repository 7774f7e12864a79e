"""The onnxruntime model: a model directory run by onnxruntime, with numpy in and out.

`ebgen.load_model(path)` (the one public front door) gives an `InferenceModel` with
`generate(num_samples, seed)` (samples in [-1, 1]), `generate_uint8`, `energy(x)`,
`percentile(energy)` and `score(x)`; arguments are checked by `ebgen.inputs`, as the servers
check theirs. This path never imports torch: latents come from `ebgen.latents.sample_latents`
(numpy, on the CPU), pixels are converted by `ebgen.pixels`. The execution provider is chosen when the sessions are created:
CUDA only where the created session really reports it (`session.get_providers()`), else CPU.

Example:
    >>> import ebgen
    >>> model = ebgen.load_model("models/tiny")              # doctest: +SKIP
    >>> x = model.generate(16, seed=0)                       # (16, 1, 8, 8) float32 in [-1, 1]
    >>> model.score(x)["percentile"]                         # 0–100; higher = less typical
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .bundled import bundled_model_path, bundled_names
from .calibration import Calibration, read_calibration
from .errors import EbgenError
from .inputs import check_num_samples, check_samples, check_seed
from .latents import REFINE_STEP_SIZE, sample_latents
from .model_format import model_file, read_model_info
from .names import CALIBRATED_OUTPUTS, CONFIG_FILE, MODEL_FILE, SCORE_OUTPUTS
from .pixels import unit_to_uint8
from .refine import held_coordinates, refine_latents
from .sessions import ort_session

log = logging.getLogger(__name__)

#: Most samples per onnxruntime call.
CHUNK = 1024
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


class InferenceModel:
    """A model directory loaded into onnxruntime sessions (generator and energy).

    `threads` sets onnxruntime's intra-op threads per session (default: its own choice).
    Attributes: `info` (the model.json dict), `directory`, `providers` (execution providers of
    the created sessions, e.g. ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    `sample_shape` ((C, H, W) or (D,)), `z_dim`, `kind` ("image" or "points").
    """

    def __init__(self, directory: str | Path, device: str = "auto",
                 threads: int | None = None) -> None:
        self.directory = Path(directory)
        self.info: dict[str, Any] = read_model_info(self.directory)
        self.sample_shape: tuple[int, ...] = tuple(self.info["sample_shape"])
        self.z_dim: int = int(self.info["latent"]["z_dim"])
        self.kind: str = self.info["kind"]
        self.distribution: str = self.info["latent"].get("distribution", "uniform")
        onnx = self.info["onnx"]
        providers = _providers(device)
        self._generator = _Net(self.directory, onnx["generator"], providers, threads)
        self._energy = _Net(self.directory, onnx["energy"], providers, threads)
        self._potential_entry: dict[str, Any] = onnx.get("latent_potential") or {
            "skipped": "exported before ebgen wrote latent_potential.onnx: re-export it"}
        self._potential: Any = None  # its session, made by the first `refine` (scoring and
        self._potential_lock = threading.Lock()  # plain generation never need it)
        self._providers, self._threads = providers, threads
        self.providers: list[str] = self._generator.session.get_providers()
        if device.startswith("cuda") and CUDA_PROVIDER not in self.providers:
            raise EbgenError(f"device {device!r} asked for, but onnxruntime could not create a "
                             f"CUDA session here (got {', '.join(self.providers)}); use "
                             f"--device cpu or auto")
        quantiles = self.info.get("energy_quantiles") or {}
        self._q_values = np.asarray(quantiles.get("values", []), dtype=np.float64)
        self._q_levels = 100.0 * np.asarray(quantiles.get("levels", []), dtype=np.float64)
        self.calibration: Calibration | None = read_calibration(self.directory)
        #: log Z of exp(−E) when `ebgen export --log-z` estimated it, else None
        self.log_z: float | None = (self.info.get("log_partition") or {}).get("log_z")
        log.info("loaded model %s from %s on %s", self.info.get("name"), self.directory,
                 ", ".join(self.providers))

    def __repr__(self) -> str:
        return (f"InferenceModel({self.info.get('name')!r}, kind={self.kind!r}, "
                f"sample_shape={self.sample_shape}, providers={self.providers})")

    def latents(self, num_samples: int, seed: int | None = None) -> np.ndarray:
        """The latents `generate(num_samples, seed)` uses: float32 (num_samples, z_dim)."""
        num_samples = check_num_samples(num_samples, low=0)
        seed = None if seed is None else check_seed(seed)
        return sample_latents(num_samples, self.z_dim, seed, self.distribution)

    def generate(self, num_samples: int, seed: int | None = None) -> np.ndarray:
        """`num_samples` samples as float32 (n, *sample_shape): images in [-1, 1], or points.

        The same `seed` (0 … 2⁶³−1) gives the same latents, hence the same samples, on every
        device and in PyTorch; `seed=None` draws fresh ones.
        """
        return self.generate_from_latents(self.latents(num_samples, seed))

    def generate_from_latents(self, z: np.ndarray) -> np.ndarray:
        """G(z) for explicit latents float32 (n, z_dim) (e.g. several requests' latents at once)."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise EbgenError(f"latents must be (n, {self.z_dim}), got {z.shape}")
        return self._generator.run(z)

    @property
    def can_refine(self) -> bool:
        """Whether the model directory carries latent_potential.onnx (`refine` runs here)."""
        return "file" in self._potential_entry

    def refine(self, z: np.ndarray, steps: int = 20, step_size: float = REFINE_STEP_SIZE,
               seed: int = 0, batch_size: int = 1000,
               progress: bool = False) -> tuple[np.ndarray, float]:
        """Latent-space MALA (`ebgen.refine`) on latents z (n, z_dim): `steps` moves on
        E(G(z)) + the latent's log-prior, run by onnxruntime on latent_potential.onnx (no
        torch). Returns (refined z, mean acceptance rate); `generate_from_latents` turns them
        into samples. The same seed gives the same chain as `TorchModel.refine`. The target is
        the latent prior reweighted by exp(−E(G(z))), sharper than exp(−E): measure first
        (`ebgen eval --refine-steps`). Raises `EbgenError` when the model has no such file."""
        if not self.can_refine:
            raise EbgenError(f"{self.directory} cannot refine latents without torch: it has "
                             f"no latent_potential.onnx "
                             f"({self._potential_entry.get('skipped', 'not written')})")
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise EbgenError(f"latents must be (n, {self.z_dim}), got {z.shape}")
        with self._potential_lock:
            if self._potential is None:
                self._potential = ort_session(model_file(self.directory, self._potential_entry),
                                              self._providers, self._threads)
        session, names = self._potential, list(self._potential_entry["outputs"])

        def potential(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            value, grad = session.run(names, {self._potential_entry["input"]:
                                              np.ascontiguousarray(u)})
            return value, grad

        held = held_coordinates(self.info.get("architecture", {}).get("num_components", 0))
        return refine_latents(z, self.distribution, potential, steps, step_size, seed,
                              batch_size, progress, held=held)

    def generate_uint8(self, num_samples: int, seed: int | None = None) -> np.ndarray:
        """`n` images as uint8 (n, C, H, W) in [0, 255] (image models only)."""
        if self.kind != "image":
            raise EbgenError("uint8 pixels exist for image models only; this is a "
                             f"{self.kind} model")
        return unit_to_uint8(self.generate(num_samples, seed))

    def energy(self, x: np.ndarray) -> np.ndarray:
        """E(x) per sample, float32 (n,); lower energy = more probable.

        `x` is (n, *sample_shape) or one sample of `sample_shape`: images as floats in
        [-1, 1] or uint8 pixels (converted through `ebgen.pixels`), points as finite numbers.
        Anything else raises `ebgen.inputs.RequestError` with the message the servers give.
        """
        return self._energy.run(check_samples(x, self.sample_shape)).reshape(-1)

    def percentile(self, energy: np.ndarray) -> np.ndarray:
        """Percentile of each energy among the training data's energies, float64 in [0, 100].

        Linear interpolation in model.json's `energy_quantiles` (levels 0.1 % … 99.9 %),
        extrapolated linearly past the ends and clipped to [0, 100]. Higher percentile =
        higher energy = less typical of the training data; NaN stays NaN.
        """
        e = np.asarray(energy, dtype=np.float64)
        values, levels = self._q_values, self._q_levels
        if len(values) < 2:
            raise EbgenError(f"{self.directory / MODEL_FILE} has no energy_quantiles: "
                             f"re-export the model to get percentiles")
        p = np.interp(e, values, levels)
        for end, inner, side in ((0, 1, e < values[0]), (-1, -2, e > values[-1])):
            dv = values[end] - values[inner]
            if dv != 0:
                slope = (levels[end] - levels[inner]) / dv
                p = np.where(side, levels[end] + (e - values[end]) * slope, p)
            else:
                p = np.where(side, 0.0 if end == 0 else 100.0, p)
        return np.clip(p, 0.0, 100.0)

    @property
    def score_outputs(self) -> tuple[str, ...]:
        """The names `score` returns: SCORE_OUTPUTS, then CALIBRATED_OUTPUTS once calibrated."""
        return SCORE_OUTPUTS + (CALIBRATED_OUTPUTS if self.calibration else ())

    def score(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per sample: `energy`, `log_density` (−energy − log Z: normalised, in nats, when the
        model carries log Z (`ebgen export --log-z`), else −energy) and `percentile`; on a
        calibrated model also `tail_probability` and `is_anomaly` (see `ebgen.calibration`)."""
        return self.score_energy(self.energy(x))

    def score_energy(self, energy: np.ndarray) -> dict[str, np.ndarray]:
        """What `score` returns, from energies already computed (the servers' batches)."""
        energy = np.asarray(energy, dtype=np.float32)
        log_density = -energy if self.log_z is None else \
            (-energy - self.log_z).astype(np.float32)
        columns = [energy, log_density, self.percentile(energy)]
        if self.calibration is not None:
            columns += [self.calibration.survival(energy), self.calibration.is_anomaly(energy)]
        return dict(zip(self.score_outputs, columns))


class _Net:
    """One ONNX file of the model directory in an onnxruntime session, run in chunks."""

    def __init__(self, directory: Path, entry: dict[str, Any], providers: list,
                 threads: int | None = None) -> None:
        self.session = ort_session(model_file(directory, entry), providers, threads)
        self.input, self.output = entry["input"], entry["output"]

    def run(self, x: np.ndarray) -> np.ndarray:
        parts = [self.session.run([self.output], {self.input: x[i:i + CHUNK]})[0]
                 for i in range(0, len(x), CHUNK)]
        if parts:
            return np.concatenate(parts)
        out = self.session.get_outputs()[0]
        shape = [0] + [d if isinstance(d, int) else 0 for d in out.shape[1:]]
        return np.zeros(shape, dtype=np.float32)


def _providers(device: str) -> list:
    """Execution providers to ask for: auto → CUDA first when onnxruntime has it; cpu; cuda[:N]."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "auto":
        return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise EbgenError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N")
        if CUDA_PROVIDER not in available:
            raise EbgenError(f"device {device!r} asked for, but this onnxruntime has no CUDA "
                             f"provider (install onnxruntime-gpu: pip install 'ebgen[gpu]')")
        return [(CUDA_PROVIDER, {"device_id": int(index)}), CPU_PROVIDER]
    raise EbgenError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N")


def resolve_model_path(name_or_path: str | Path,
                       export: Callable[[Path], Path] | None = None) -> Path:
    """The model directory for a model directory path, a checkpoint directory or a name.

    - a folder with model.json: returned as is (no torch);
    - a folder with config.json (a training checkpoint): `export(folder)`, which returns the
      model directory made from it (`ebgen.resolve_model_path` passes the export stage's
      cached export; without one, an `EbgenError` that says how to export it);
    - otherwise a bundled model name (`bundled_model_path`); else `EbgenError`.
    """
    path = Path(name_or_path).expanduser()
    if (path / MODEL_FILE).is_file():
        return path
    if (path / CONFIG_FILE).is_file():
        if export is None:
            raise EbgenError(f"{path} is a training checkpoint: load it with ebgen.load_model "
                             f"(exported once, needs torch) or export it with `ebgen export "
                             f"{path} --out DIR`")
        return export(path)
    if isinstance(name_or_path, str):  # a bare bundled name wins over a folder that is not
        bundled = bundled_model_path(name_or_path)  # a model ("./mnist" means the folder)
        if bundled is not None:
            if path.exists():
                log.warning("%s here is not a model directory: using the bundled model %s "
                            "(write ./%s to mean the folder)", name_or_path, name_or_path,
                            name_or_path)
            return bundled
    raise EbgenError(f"{name_or_path} is not a model: expected a model directory (with "
                     f"{MODEL_FILE}, from `ebgen export`), a checkpoint directory (with "
                     f"{CONFIG_FILE}, from `ebgen train`) or a bundled model name "
                     f"({', '.join(bundled_names()) or 'none installed'}; see `ebgen models`)")
