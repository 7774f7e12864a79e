"""Presets and recipes: named starting configs, and `preset_config` to build one.

Presets: `tiny` (tests, seconds on CPU), `toy2d` (2-D sets), `tabular` (N×D feature vectors),
`mnist`, `cifar10`, `celeba64`.
A recipe is a set of training fields on top of a preset: `default` (ebgen's measured recipe)
or `paper` (Kim & Bengio as published). Overrides come last and are checked like any config.

    >>> preset_config("toy2d", steps=100).train.steps
    100
"""
from __future__ import annotations

from typing import Any

from .config import (GENERATED_NAMES, Config, DataConfig, ModelConfig, TrainConfig,
                     field_owners, place_overrides)
from .errors import EbgenError


def _preset(model: dict, data: dict, train: dict) -> dict[str, dict]:
    return {"model": model, "data": data, "train": train}


PRESETS: dict[str, dict[str, dict]] = {
    # Seconds on a CPU: 8×8 grey synthetic shapes, small nets.
    "tiny": _preset(
        dict(kind="image", image_size=8, channels=1, z_dim=16, num_experts=32,
             energy_width=8, generator_width=8),
        dict(dataset="shapes", num_points=2048),
        dict(steps=40, batch_size=32, lr_energy=1e-3, lr_generator=1e-3, beta2=0.999,
             sample_every=20, checkpoint_every=20, log_every=10, num_eval_samples=16)),
    "toy2d": _preset(
        dict(kind="points", z_dim=16, num_experts=256, energy_width=256, generator_width=128,
             depth=3, num_components=256, fourier_features=128, fourier_max_frequency=8.0),
        dict(dataset="8gaussians"),
        # Measured in benchmarks/ablation_2d.py (README): the mutual-information entropy, a
        # small R1 penalty and a linear learning-rate decay give full mode coverage; halfway,
        # score matching, calibration and importance-sampled likelihood take over from R1 and
        # set each well's width and depth and remove the energy's mass off the data, while the
        # nearest-neighbour entropy takes over from MI and gives the samples their true spread.
        # 256 latent components let the samples form separate modes with no bridges between;
        # their learned weights (component_reweighting) give each mode its share, and a
        # twice wider energy (256 units, 256 experts) has enough linear pieces for wells of
        # the data's shape. Denoising noise 0.007 (standardised units) widens each well by
        # √(σ² + 0.007²)/σ, at most 1.12× on the ring's σ = 0.0141 (0.01 made it 1.22×).
        # At the handover 128 Fourier features of the energy's input (frequencies up to 8)
        # join from zero, so the wells level out at the data's width and depth on curved
        # and tightly packed sets, and the generator trains as it is deployed (running batch
        # statistics), so the entropy estimate sees the samples users will draw.
        dict(steps=20000, batch_size=256, lr_energy=1e-3, lr_generator=1e-3, entropy="mi",
             gradient_penalty=0.01, score_matching=10.0, score_matching_std=0.007,
             score_matching_share=0.5,
             calibration=1.0, likelihood=3.0, calibrate_from=0.5, calibrate_entropy="knn",
             component_reweighting=0.01, generator_as_deployed=True, lr_decay=True,
             sample_every=5000,
             checkpoint_every=2000, num_eval_samples=1000)),
    # Feature vectors of any dimension (tabular data, embeddings): `--data FILE` (N×D .npy
    # or .csv) sets data_dim. Wider nets than toy2d, one connected latent, the MI entropy
    # throughout (the kNN estimate and the grid-based terms are for low dimensions), and the
    # covariance base: the energy starts as the data's Gaussian fit, the experts learn the rest.
    # Strong denoising score matching (noise 0.1 of the data's scale) throughout keeps the
    # experts on the data's shape: with the contrast alone they fit the generator's samples
    # and lose the base's ranking of outliers (benchmarks/anomaly.py, README). Three energies,
    # each trained as if alone, averaged: steadier rankings than any one of them (README).
    "tabular": _preset(
        dict(kind="points", z_dim=32, num_experts=256, energy_width=256, generator_width=256,
             depth=3, base="covariance", base_min_variance=0.01, energy_members=3),
        dict(dataset="points"),
        dict(steps=5000, batch_size=256, lr_energy=1e-3, lr_generator=1e-3, entropy="mi",
             gradient_penalty=0.01, score_matching=100.0, score_matching_std=0.1,
             lr_decay=True, sample_every=1000, checkpoint_every=1000,
             num_eval_samples=1000)),
    # The bundled `mnist` model's recipe (scripts/retrain_bundled.py; README "Pretrained
    # models"): small nets (a few MB of ONNX), the data base (shifted digits score as
    # anomalies), MI entropy and a small R1 penalty. Measured (README, issue 18): the average
    # of the generator's weights over constant rates, decayed over the last quarter only,
    # beats decay from the first step; lazy R1 (every 4th step) buys 1.25x the steps. About
    # 24 minutes on 2 CPU threads; a twice wider generator did worse in more time. 32 latent
    # components (as toy2d's) took the samples off the plateau that no rate, width, penalty
    # or schedule moved: a continuous generator must draw in-between digits to pass from
    # one class to the next, and with components it need not.
    "mnist": _preset(
        dict(kind="image", image_size=28, channels=1, z_dim=100, num_experts=128,
             energy_width=32, generator_width=32, base="data", num_components=32),
        dict(dataset="mnist"),
        dict(steps=42000, batch_size=64, lr_energy=5e-4, lr_generator=5e-4, beta2=0.999,
             entropy="mi", gradient_penalty=0.1, gradient_penalty_every=4, lr_decay=True,
             lr_decay_start=0.75, generator_ema=0.999, sample_every=2000,
             checkpoint_every=2000)),
    "cifar10": _preset(
        dict(kind="image", image_size=32, channels=3, z_dim=100, num_experts=1024,
             energy_width=64, generator_width=64),
        dict(dataset="cifar10"),
        dict(steps=50000, batch_size=64, lr_energy=2e-4, lr_generator=2e-4, beta2=0.999,
             sample_every=1000, checkpoint_every=2000)),
    "celeba64": _preset(
        dict(kind="image", image_size=64, channels=3, z_dim=100, num_experts=1024,
             energy_width=64, generator_width=64),
        dict(dataset="images"),
        dict(steps=50000, batch_size=64, lr_energy=2e-4, lr_generator=2e-4, beta2=0.999,
             sample_every=1000, checkpoint_every=2000)),
}


#: Kim & Bengio's Adagrad settings, taken by `--optimizer adagrad` unless rates are given.
AUTHORS_ADAGRAD = dict(lr_energy=1e-3, lr_generator=2e-3, weight_decay=1e-5)

#: Training recipes: field values of any section applied on top of a preset (before explicit
#: overrides). "paper" is Kim & Bengio as published: batch-norm entropy, no regularisers or
#: calibration terms, constant rates, no weight averaging, an energy of the raw input.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": dict(entropy="bn", gradient_penalty=0.0, gradient_penalty_every=1,
                  energy_magnitude=0.0, score_matching=0.0, calibration=0.0, likelihood=0.0,
                  calibrate_from=0.0, calibrate_entropy=None, lr_decay=False, lr_decay_start=0.0,
                  generator_ema=0.0, entropy_weight=1.0, generator_as_deployed=False,
                  fourier_features=0),
}


def preset_config(name: str, recipe: str | None = None, **overrides: Any) -> Config:
    """The config of preset `name` and `recipe`, with field overrides (None values ignored).

    Override keys are field names of any section (`z_dim`, `steps`, `path`, ...).
    """
    if name not in PRESETS:
        raise EbgenError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    recipe = recipe or "default"
    if recipe not in RECIPES:
        raise EbgenError(f"unknown recipe {recipe!r}; known recipes: {', '.join(RECIPES)}")
    sections = {k: dict(v) for k, v in PRESETS[name].items()}
    owners = field_owners()
    for key, value in {**RECIPES[recipe], "recipe": recipe}.items():  # None is a value here
        sections[owners[key]][key] = value
    if overrides.get("optimizer") == "adagrad":  # the authors' rates, unless given
        sections["train"].update(AUTHORS_ADAGRAD)
    if overrides.get("path") is not None and overrides.get("dataset") is None \
            and sections["data"].get("dataset") in GENERATED_NAMES:
        sections["data"]["dataset"] = None  # a file replaces the preset's generated set
    place_overrides(sections, overrides)
    return Config(model=ModelConfig(**sections["model"]), data=DataConfig(**sections["data"]),
                  train=TrainConfig(**sections["train"]), preset=name)
