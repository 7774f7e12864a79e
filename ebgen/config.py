"""Configuration dataclasses and presets.

A `Config` (model + data + training) is saved as `config.json` beside the weights, so every
checkpoint rebuilds itself. CLI options are made from the fields (`--z-dim` ↔ `z_dim`, help in each field's metadata);
`with_overrides` applies and checks overrides, `load_config` reads a saved config. The named
starting points (presets, recipes) are in `ebgen.presets`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EbgenError, one_line
from .toy2d import TOY_SETS

#: Image sizes the convolutional nets support.
IMAGE_SIZES = (8, 16, 28, 32, 64)
OBJECTIVES = ("ddgm", "gan")
OPTIMIZERS = ("adam", "adagrad")
ENTROPY_ESTIMATES = ("bn", "mi", "knn")
LATENTS = ("uniform", "normal")
ENERGY_ACTIVATIONS = ("leaky_relu", "smooth_leaky_relu", "silu")
#: The energy's base term (`ModelConfig.base`).
BASES = ("gaussian", "data", "covariance")
#: What R1 may penalise the gradient of: all of E, or E less its fixed base.
R1_TARGETS = ("energy", "experts")
#: Largest sample size (values per sample) the covariance base takes: its D×D precision.
MAX_COVARIANCE_DIM = 4096
#: Formats `DataConfig.dataset` names for data read from `path`.
FILE_FORMATS = ("points", "mnist", "cifar10", "images")
#: Data sets generated in code (the 2-D sets and the synthetic `shapes` images).
GENERATED_NAMES = (*TOY_SETS, "shapes")


def opt(default: Any = dataclasses.MISSING, help: str = "", choices: Sequence[str] = (),
        option: str | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """A config field with the help text (and choices) `ebgen train`'s option is made from.

    `option` renames the option (`"--data"` for `path`); `"-"` means the field has none (it is
    fitted, not chosen). `factory` is a default factory (lists).
    """
    meta = {"help": help, "choices": tuple(choices), "option": option}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """The two networks' architecture; everything needed to rebuild them."""

    kind: str = opt("points", "Nets: points (MLPs on low-dimensional data) or image (conv nets).",
                    ("points", "image"))
    data_dim: int = opt(2, "Points: input dimensions (a --data points file sets it from its "
                           "columns).")
    image_size: int = opt(28, "Image side in px: 8, 16, 28, 32 or 64.")
    channels: int = opt(1, "Image channels: 1 (grey) or 3 (RGB).")
    z_dim: int = opt(16, "Latent dimensions.")
    latent: str = opt("uniform", "Latent distribution: U(-1, 1) or N(0, 1).", LATENTS)
    num_experts: int = opt(128, "Softplus experts in the energy.")
    energy_width: int = opt(128, "Energy: MLP hidden units, or base conv channels.")
    generator_width: int = opt(128, "Generator: MLP hidden units, or base conv channels.")
    depth: int = opt(3, "Points: MLP hidden layers of both nets.")
    energy_members: int = opt(1, "An ensemble: K energy nets, each from its own initial "
                                 "draw and trained as if alone; the energy is their mean "
                                 "(steadier anomaly rankings from run to run; K times the "
                                 "energy's cost). 1 = one net.")
    noise_std: float = opt(0.01, "Noise on the generator's hidden pre-activations (training).")
    energy_activation: str = opt("leaky_relu", "The energy's hidden activation: leaky_relu "
                                               "(piecewise linear: each well is a cone, with "
                                               "Laplace-like tails), smooth_leaky_relu "
                                               "(0.2x + 0.8 softplus(x): the same slopes, "
                                               "smooth at 0) or silu (smooth, not monotone; "
                                               "measured unstable on the ring and grid, see "
                                               "the README's ablation).", ENERGY_ACTIVATIONS)
    quadratic_experts: int = opt(0, "Quadratic experts in the energy: + ½ Σ_j (u_jᵀ f(x) + "
                                    "d_j)² over its deep features f, piecewise quadratic, "
                                    "so a well can be a bowl (Gaussian-shaped) rather than "
                                    "a cone; 0 = none (measured no better on the ring and "
                                    "grid: README ablation).")
    fourier_features: int = opt(0, "Points: K random Fourier features sin/cos(ωᵀu) of the "
                                   "standardised input u fed to the energy's MLP beside u, "
                                   "so its wells can be smooth bowls; frequencies log-uniform "
                                   "in [1, --fourier-max-frequency], random directions (0 = "
                                   "off).")
    fourier_max_frequency: float = opt(32.0, "Highest Fourier frequency, in radians per "
                                             "standard deviation of the data.")
    num_components: int = opt(0, "Split the latent into K components, picked by z's first "
                                 "coordinate, each with its own first-layer offset, so samples "
                                 "can form separate modes (clusters, digit classes) with no "
                                 "bridge of samples between them; equal weights unless "
                                 "--component-reweighting learns them (points). 0 = one "
                                 "connected latent.")
    base: str = opt("gaussian", "The energy's base term: gaussian (learned isotropic scale and "
                                "bias), data (the training data's per-dimension mean and "
                                "variance) or covariance (their mean and full covariance, "
                                "so the energy starts as the data's Gaussian fit; samples of "
                                f"up to {MAX_COVARIANCE_DIM:,} values); data and covariance "
                                "are fixed before training.", BASES)
    base_min_variance: float = opt(0.05, "Variance floor of the data base (pixels in [-1, 1]), "
                                         "or of the covariance base's eigenvalues "
                                         "(standardised units for points, pixels for "
                                         "images).")
    standardize: bool = opt(True, "Points: train the nets on the data standardised per "
                                  "dimension (the affine is saved with the model; inputs and "
                                  "outputs stay in your units; energies include the change of "
                                  "variables).")
    data_shift: list[float] | None = opt(None, "Points: per-dimension mean of the training data "
                                               "(fitted when training starts).", option="-")
    data_scale: list[float] | None = opt(None, "Points: per-dimension std of the training data "
                                               "(fitted; None: identity).", option="-")

    def __post_init__(self) -> None:
        if self.kind not in ("points", "image"):
            raise EbgenError(f"model kind must be 'points' or 'image', got {self.kind!r}")
        if self.kind == "image" and self.image_size not in IMAGE_SIZES:
            raise EbgenError(f"image size must be one of {IMAGE_SIZES}, got {self.image_size}")
        if self.kind == "image" and self.channels not in (1, 3):
            raise EbgenError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.base not in BASES:
            raise EbgenError(f"base must be one of {', '.join(BASES)}, got {self.base!r}")
        if self.base == "covariance" and math.prod(self.sample_shape) > MAX_COVARIANCE_DIM:
            raise EbgenError(f"base covariance holds a D×D matrix: D ≤ {MAX_COVARIANCE_DIM}, got "
                             f"D = {math.prod(self.sample_shape)} (use --base data)")
        if self.energy_activation not in ENERGY_ACTIVATIONS:
            raise EbgenError(f"energy_activation must be one of {ENERGY_ACTIVATIONS}, got "
                             f"{self.energy_activation!r}")
        if self.latent not in ("uniform", "normal"):
            raise EbgenError(f"latent must be 'uniform' or 'normal', got {self.latent!r}")
        if self.z_dim < 1 or self.num_experts < 1 or self.depth < 1 or self.energy_members < 1:
            raise EbgenError("z_dim, num_experts, depth and energy_members must be positive")
        if self.fourier_features < 0 or (self.fourier_features and self.kind != "points"):
            raise EbgenError(f"fourier_features needs a points model and must be >= 0, "
                             f"got {self.fourier_features}")
        if self.fourier_max_frequency < 1:
            raise EbgenError(f"fourier_max_frequency must be >= 1, "
                             f"got {self.fourier_max_frequency}")
        if self.quadratic_experts < 0:
            raise EbgenError(f"quadratic_experts must be >= 0, got {self.quadratic_experts}")
        if self.num_components < 0:
            raise EbgenError(f"num_components must be >= 0, got {self.num_components}")
        for name in ("data_shift", "data_scale"):
            value = getattr(self, name)
            if value is not None and (self.kind != "points" or len(value) != self.data_dim):
                raise EbgenError(f"{name} needs a points model and {self.data_dim} values, "
                                 f"got {value!r}")
        if self.data_scale is not None and not all(v > 0 for v in self.data_scale):
            raise EbgenError(f"data_scale must be positive, got {self.data_scale}")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (data_dim,) for points, (C, H, W) for images."""
        if self.kind == "points":
            return (self.data_dim,)
        return (self.channels, self.image_size, self.image_size)


@dataclass
class DataConfig:
    """Where training data comes from."""

    dataset: str | None = opt("8gaussians", f"Built in: {', '.join(GENERATED_NAMES)}; or a "
                                            f"format read from --data: {', '.join(FILE_FORMATS)}"
                                            f" (none: guessed from the path).")
    path: str | None = opt(None, "Data file or folder: an N×D .npy/.csv (any location and "
                                 "scale), an MNIST IDX folder, CIFAR-10 python batches, or a "
                                 "folder of PNG/JPEG images.", option="--data")
    num_points: int = opt(100_000, "Size of a generated (built-in) data set.")
    holdout_fraction: float = opt(0.1, "Share held out for evaluation when no test split "
                                       "exists.")
    exclude_classes: list[int] = opt(help="Leave this label out of training (repeatable; "
                                          "labelled data only: the held-out-class protocol).",
                                     option="--exclude-class", factory=list)



@dataclass
class TrainConfig:
    """How the two networks are trained."""

    objective: str = opt("ddgm", "ddgm (energy + entropy, Kim & Bengio) or gan (a non-"
                                 "saturating GAN with the same nets).", OBJECTIVES)
    recipe: str = opt("default", "default (ebgen's measured recipe) or paper (Kim & Bengio as "
                                 "published: batch-norm entropy, no regularisers, constant "
                                 "rates).", ("default", "paper"))
    steps: int = opt(5000, "Training steps.")
    batch_size: int = opt(256, "Minibatch per process.")
    optimizer: str = opt("adam", "adam, or adagrad (the authors' choice, with their rates).",
                         OPTIMIZERS)
    lr_energy: float = opt(1e-3, "Energy learning rate.")
    lr_generator: float = opt(1e-3, "Generator learning rate.")
    weight_decay: float = opt(1e-5, "L2 on the energy's parameters.")
    beta1: float = opt(0.5, "Adam β₁.")
    beta2: float = opt(0.9, "Adam β₂.")
    entropy_weight: float = opt(1.0, "Weight of H(G) in the generator loss.")
    entropy: str = opt("bn", "Entropy estimate: bn (batch-norm scales), mi (mutual information, "
                             "Kumar et al. 2019) or knn (nearest neighbours, low-D only).",
                       ENTROPY_ESTIMATES)
    entropy_neighbours: int = opt(3, "k of the nearest-neighbour estimates (knn, calibration).")
    lr_decay: bool = opt(False, "Decay both learning rates linearly to 0 over the steps.")
    lr_decay_start: float = opt(0.0, "Share of the steps (0–1) the rates stay constant before "
                                     "lr_decay takes them linearly to 0 (0: decay from the "
                                     "first step; 0.8: over the last fifth).")
    gradient_penalty: float = opt(0.0, "R1 weight: ½‖∇ₓE‖² at data points (0 = off).")
    gradient_penalty_every: int = opt(1, "Apply R1 on every Nth energy step only, N times "
                                         "as strong (lazy regularisation): 1/N of its cost.")
    gradient_penalty_on: str = opt("energy", "What R1 smooths: energy (all of E) or experts (E "
                                             "less its fixed data or covariance base: the "
                                             "base's own gradient at the data, huge under a "
                                             "tight --base-min-variance, is no part of what "
                                             "trains, and penalising it only pits the experts "
                                             "against it).", R1_TARGETS)
    energy_magnitude: float = opt(0.0, "Weight of mean(E_data² + E_samples²) (0 = off).")
    sample_noise: float = opt(0.0, "Std of Gaussian noise added to the generator's samples in "
                                   "training, both steps (standardised units for points, "
                                   "pixels in [-1, 1] for images): negatives off the "
                                   "generator's manifold, so the energy learns where mass "
                                   "goes in every direction, not only along the samples' "
                                   "(0 = off; the deployed generator never adds it).")
    score_matching: float = opt(0.0, "Weight of score matching of E at the data: shapes each "
                                     "energy well (ddgm only; 0 = off).")
    score_matching_std: float = opt(0.01, "Noise std of denoising score matching, in "
                                          "standardised units for points.")
    score_matching_std_final: float | None = opt(None, "Anneal the noise linearly from "
                                                      "--score-matching-std to this over the "
                                                      "steps score matching runs (none: "
                                                      "constant).")
    score_matching_std_min: float | None = opt(None, "Multi-scale denoising: draw each row's "
                                                    "noise std log-uniformly between this and "
                                                    "--score-matching-std (none: one std).")
    score_matching_kind: str = opt("denoising", "denoising (Vincent 2011, noise of "
                                                "--score-matching-std) or exact (no noise, the "
                                                "Laplacian of E: low-D only; the wells get the "
                                                "data's own width).", ("denoising", "exact"))
    score_matching_share: float = opt(1.0, "Share (0–1] of the data batch score matching uses; "
                                           "only those rows pay its double backward.")
    calibration: float = opt(0.0, "Weight of the data batch's importance-weighted likelihood: "
                                  "sets how deep each energy well is (ddgm, low-D data only; "
                                  "0 = off).")
    likelihood: float = opt(0.0, "Weight of importance-sampled maximum likelihood with a known "
                                 "proposal around the data batch: removes the energy's mass "
                                 "between and around the data (ddgm, low-D only; 0 = off).")
    component_reweighting: float = opt(0.0, "Rate at which the latent components' weights "
                                            "follow the energy's mode shares while the kNN "
                                            "entropy is on (points with --num-components; 0 = "
                                            "equal weights throughout).")
    calibrate_entropy: str | None = opt(None, "Entropy estimate from --calibrate-from on (none: "
                                              "--entropy throughout).", ENTROPY_ESTIMATES)
    generator_ema: float = opt(0.0, "Deploy an exponential moving average of the generator's "
                                    "weights with this decay (e.g. 0.999; 0: the raw weights); "
                                    "training goes on with the raw ones.")
    generator_as_deployed: bool = opt(False, "From --calibrate-from on, train the generator "
                                             "as it is deployed: batch norm on its running "
                                             "statistics, no hidden noise, so the samples the "
                                             "entropy estimate and the energy see are the ones "
                                             "it will draw (needs --calibrate-from > 0).")
    fourier_from: float | None = opt(None, "With --fourier-features: the share of the steps "
                                           "(0–1) after which they join, from zero (none: at "
                                           "--calibrate-from; 0: from the start; README "
                                           "ablation).")
    calibrate_from: float = opt(0.0, "Share of the steps (0–1) after which score matching, "
                                     "calibration and likelihood take over from R1 (and "
                                     "--calibrate-entropy from --entropy); 0 = all throughout.")
    seed: int = opt(0, "Random seed.")
    device: str = opt("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
    amp: bool = opt(True, "bf16 autocast when on CUDA.")
    sample_every: int = opt(500, "Steps between sample grids/plots.")
    checkpoint_every: int = opt(1000, "Steps between checkpoints.")
    log_every: int = opt(50, "Steps between metrics.jsonl rows.")
    num_eval_samples: int = opt(64, "Fixed latents drawn for sample grids and plots.")

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise EbgenError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.optimizer not in OPTIMIZERS:
            raise EbgenError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.entropy not in ENTROPY_ESTIMATES:
            raise EbgenError(f"entropy must be one of {ENTROPY_ESTIMATES}, got {self.entropy!r}")
        if self.calibrate_entropy is not None and self.calibrate_entropy not in ENTROPY_ESTIMATES:
            raise EbgenError(f"calibrate_entropy must be one of {ENTROPY_ESTIMATES}, got "
                             f"{self.calibrate_entropy!r}")
        if self.sample_noise < 0:
            raise EbgenError(f"sample_noise is a noise std and must be >= 0, got "
                             f"{self.sample_noise}")
        weights = {"score_matching": self.score_matching, "calibration": self.calibration,
                   "likelihood": self.likelihood,
                   "gradient_penalty": self.gradient_penalty,
                   "energy_magnitude": self.energy_magnitude,
                   "component_reweighting": self.component_reweighting}
        for name, value in weights.items():
            if value < 0:
                raise EbgenError(f"{name} is a weight and must be >= 0, got {value}")
        if not 0.0 <= self.calibrate_from < 1.0:
            raise EbgenError(f"calibrate_from is a share of the steps in [0, 1), "
                             f"got {self.calibrate_from}")
        if self.fourier_from is not None and not 0.0 <= self.fourier_from < 1.0:
            raise EbgenError(f"fourier_from is a share of the steps in [0, 1), "
                             f"got {self.fourier_from}")
        if self.gradient_penalty_on not in R1_TARGETS:
            raise EbgenError(f"gradient_penalty_on must be one of {', '.join(R1_TARGETS)}, got "
                             f"{self.gradient_penalty_on!r}")
        if self.gradient_penalty_every < 1:
            raise EbgenError(f"gradient_penalty_every is a number of steps >= 1, "
                             f"got {self.gradient_penalty_every}")
        if not 0.0 <= self.lr_decay_start < 1.0:
            raise EbgenError(f"lr_decay_start is a share of the steps in [0, 1), "
                             f"got {self.lr_decay_start}")
        if self.lr_decay_start > 0 and not self.lr_decay:
            raise EbgenError("lr_decay_start needs lr_decay (add --lr-decay)")
        if not 0.0 <= self.generator_ema < 1.0:
            raise EbgenError(f"generator_ema is a decay in [0, 1), got {self.generator_ema}")
        if self.generator_as_deployed and self.calibrate_from <= 0:
            raise EbgenError("generator_as_deployed needs calibrate_from > 0 (the steps before "
                             "it set the batch norms' running statistics); with --calibrate-from "
                             "0 add --no-generator-as-deployed")
        if not 0.0 < self.score_matching_share <= 1.0:
            raise EbgenError(f"score_matching_share is a share of the batch in (0, 1], "
                             f"got {self.score_matching_share}")
        if self.score_matching_kind not in ("denoising", "exact"):
            raise EbgenError(f"score_matching_kind must be 'denoising' or 'exact', got "
                             f"{self.score_matching_kind!r}")
        for name in ("score_matching_std", "score_matching_std_final", "score_matching_std_min"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise EbgenError(f"{name} must be > 0, got {value}")
        if self.score_matching_std_min is not None:
            if self.score_matching_std_min >= self.score_matching_std:
                raise EbgenError(f"score_matching_std_min ({self.score_matching_std_min}) must be "
                                 f"below score_matching_std ({self.score_matching_std})")
            if self.score_matching_std_final is not None or self.score_matching_kind == "exact":
                raise EbgenError("score_matching_std_min (multi-scale noise) goes with neither "
                                 "score_matching_std_final nor score_matching_kind 'exact'")
        if self.steps < 0 or self.batch_size < 2:
            raise EbgenError("steps must be >= 0 and batch size >= 2 (batch norm needs 2)")


@dataclass
class Config:
    """Everything a run needs; saved as config.json beside the weights."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "toy2d"

    def __post_init__(self) -> None:
        if self.train.gradient_penalty_on == "experts" \
                and self.model.base not in ("data", "covariance"):
            raise EbgenError("gradient_penalty_on=experts needs a fixed base (--base data or "
                             "covariance): the gaussian base is learned, part of what R1 smooths")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Rebuild from `to_dict()` output, ignoring keys this version does not know."""
        def build(kind: type, values: dict[str, Any]) -> Any:
            known = {f.name for f in dataclasses.fields(kind)}
            return kind(**{k: v for k, v in values.items() if k in known})

        return cls(model=build(ModelConfig, d.get("model", {})),
                   data=build(DataConfig, d.get("data", {})),
                   train=build(TrainConfig, d.get("train", {})),
                   preset=d.get("preset", "custom"))


SECTIONS = (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig))


class _SetNone:
    """An override that sets a field to None, where a plain None means "not given" (the CLI's
    `--calibrate-entropy none`)."""

    def __repr__(self) -> str:
        return "NONE"


NONE = _SetNone()


def field_owners() -> dict[str, str]:
    """Every config field's name → its section ("model", "data" or "train")."""
    return {f.name: sec for sec, kind in SECTIONS for f in dataclasses.fields(kind)}


def place_overrides(sections: dict[str, dict[str, Any]], overrides: dict[str, Any]) -> None:
    """Put each override (None: not given; `NONE`: set to None) into its section's dict."""
    owners = field_owners()
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in owners:
            raise EbgenError(f"unknown config field {key!r}")
        sections[owners[key]][key] = None if value is NONE else value


def with_overrides(config: Config, **overrides: Any) -> Config:
    """`config` with field overrides (None values ignored), checked exactly as a fresh config
    is (each section is rebuilt, so its validation runs)."""
    sections = {sec: dataclasses.asdict(getattr(config, sec)) for sec, _ in SECTIONS}
    place_overrides(sections, overrides)
    return Config(**{sec: kind(**sections[sec]) for sec, kind in SECTIONS},
                  preset=config.preset)


def load_config(path: str | Path) -> Config:
    """A saved `config.json` (a file, or a checkpoint directory holding one), as a `Config`."""
    import json

    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    try:
        return Config.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise EbgenError(f"no config file at {path}") from None
    except (ValueError, TypeError, AttributeError) as err:
        raise EbgenError(f"cannot read the config {path}: {one_line(err)}") from None
