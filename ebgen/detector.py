"""`EnergyDetector`: ebgen's energy as a scikit-learn-style novelty detector.

It follows scikit-learn's outlier-detector conventions (`fit`, `score_samples`,
`decision_function`, `predict`, `fit_predict`; `predict` gives +1 for inliers and −1 for
outliers; `score_samples` is higher for more normal samples), so it drops into pipelines and
model selection code written for IsolationForest or LocalOutlierFactor — without depending on
scikit-learn.

- `EnergyDetector(model="runs/x")` (a model directory, checkpoint or bundled name): `fit(X)`
  only calibrates the threshold on clean samples X (`ebgen.calibrate`);
- `EnergyDetector()` (no model): `fit(X)` trains `preset` (default `tabular`) on a share of
  the N×D points X, exports it and calibrates on the rest (needs torch: `ebgen[train]`).

    >>> detector = EnergyDetector(steps=2000, fpr=0.01).fit(x_train)    # doctest: +SKIP
    >>> detector.predict(x_new)                                         # doctest: +SKIP
    array([ 1,  1, -1, ...])
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EbgenError


class EnergyDetector:
    """A novelty detector whose score is an ebgen model's energy, calibrated at `fpr`.

    `out` is where the trained or calibrated model directory goes (default: a new temporary
    folder, kept while the process runs). `calibration_fraction` of X is held out of training
    to calibrate on (no-model case). Other keywords override the preset's config fields
    (`steps`, `energy_width`, ...). Fitted attributes: `model_` (an `InferenceModel`),
    `model_dir_`, `calibration_`, `threshold_` (the energy above which a sample is an
    outlier) and `offset_` (= −threshold_, scikit-learn's name).
    """

    def __init__(self, model: str | Path | None = None, fpr: float = 0.01,
                 preset: str = "tabular", out: str | Path | None = None, seed: int = 0,
                 calibration_fraction: float = 0.2, **overrides: Any) -> None:
        self.model, self.fpr, self.preset, self.out, self.seed = model, fpr, preset, out, seed
        self.calibration_fraction, self.overrides = calibration_fraction, overrides

    def fit(self, X: Any, y: Any = None) -> "EnergyDetector":
        """Calibrate the given model on clean samples X, or train one on X and calibrate it."""
        import ebgen

        out = Path(self.out) if self.out is not None else Path(tempfile.mkdtemp(
            prefix="ebgen-detector-"))
        for path in getattr(self, "written_", []):  # a refit replaces what the last fit wrote
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        self.written_ = [out / "model"] + ([out / "run", out / "train.npy"]
                                           if self.model is None else [])
        X = np.asarray(X)
        if self.model is not None:
            directory, clean = out / "model", X
            ebgen.calibrate(self.model, clean, fpr=self.fpr, out=directory)
        else:
            directory, clean = self._train(X, out)
            ebgen.calibrate(directory, clean, fpr=self.fpr)
        self.model_dir_ = directory
        self.model_ = ebgen.load_model(directory)
        self.calibration_ = self.model_.calibration
        self.threshold_ = float(self.calibration_.threshold)
        self.offset_ = -self.threshold_
        return self

    def _train(self, X: np.ndarray, out: Path) -> tuple[Path, np.ndarray]:
        """Train `preset` on (1 − calibration_fraction) of the points X, export it under
        `out`; returns the model directory and the held-out points to calibrate on."""
        from . import _train_and_export  # the front door: the train and export stages
        from .presets import preset_config

        if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
            raise EbgenError(f"EnergyDetector trains on N×D numbers, got an array of shape "
                             f"{X.shape} ({X.dtype}); pass model= for images")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise EbgenError(f"calibration_fraction must be in (0, 1), got "
                             f"{self.calibration_fraction}")
        order = np.random.default_rng(self.seed).permutation(len(X))
        cut = int(round(len(X) * (1.0 - self.calibration_fraction)))
        out.mkdir(parents=True, exist_ok=True)
        data = out / "train.npy"
        np.save(data, X[order[:cut]].astype(np.float32))
        config = preset_config(self.preset, path=str(data), seed=self.seed, **self.overrides)
        config.data.holdout_fraction = min(config.data.holdout_fraction, 0.05)
        return _train_and_export(config, out), X[order[cut:]]

    def _fitted(self) -> Any:
        if not hasattr(self, "model_"):
            raise EbgenError("this EnergyDetector is not fitted yet: call fit(X) first")
        return self.model_

    def score_samples(self, X: Any) -> np.ndarray:
        """−E(x): higher is more normal (the log-density up to its constant)."""
        return -self._fitted().energy(X).astype(np.float64)

    def decision_function(self, X: Any) -> np.ndarray:
        """score_samples − offset_ = threshold − E(x): negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """+1 for inliers, −1 for outliers (energy above the calibrated threshold)."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """fit(X), then predict(X)."""
        return self.fit(X).predict(X)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments (scikit-learn's `clone` and grid search use these)."""
        return {"model": self.model, "fpr": self.fpr, "preset": self.preset, "out": self.out,
                "seed": self.seed, "calibration_fraction": self.calibration_fraction,
                **self.overrides}

    def set_params(self, **params: Any) -> "EnergyDetector":
        """Set constructor arguments (config overrides included)."""
        for key, value in params.items():
            if key in ("model", "fpr", "preset", "out", "seed", "calibration_fraction"):
                setattr(self, key, value)
            else:
                self.overrides[key] = value
        return self
