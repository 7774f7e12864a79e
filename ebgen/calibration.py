"""Calibrated anomaly decisions: energies of a clean held-out set, a threshold, a tail.

`ebgen calibrate MODEL DATA` scores clean data the model never trained on and stores a
`Calibration` in the model directory (`calibration.json`); every front door's `score` then
adds, per sample:

- `tail_probability`: P(E ≥ e) for clean data, the share of clean samples at least as
  anomalous. Inside the calibration set it interpolates the set's quantiles; beyond its
  upper tail it follows an exponential tail fitted to the top exceedances (peaks over a
  threshold, the generalised Pareto tail with shape 0), so it keeps falling — and keeps
  ranking — past the most extreme clean energy instead of saturating at 0;
- `is_anomaly`: energy above the threshold, the energy whose tail probability is the
  chosen false-positive rate `fpr` (so about `fpr` of clean data are flagged).

numpy only; the servers and `ebgen.load_model` read it without torch.

    >>> calibration = fit_calibration(np.random.default_rng(0).normal(size=5000), fpr=0.01)
    >>> round(calibration.threshold, 1)
    2.3
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, EbgenError
from .files import atomic_write_text
from .names import CALIBRATION_FILE

CALIBRATION_FORMAT = "ebgen-calibration"
CALIBRATION_FORMAT_VERSION = 1
#: Quantile levels of the clean energies kept (0 and 1 are the extremes).
LEVELS = tuple(float(v) for v in np.linspace(0.0, 1.0, 501))
#: The exponential tail is fitted to the top TAIL_SHARE of clean energies (at least
#: MIN_TAIL of them).
TAIL_SHARE = 0.05
MIN_TAIL = 10
#: Fewest clean samples a calibration accepts.
MIN_SAMPLES = 50


@dataclass
class Calibration:
    """What `score` needs to decide: the threshold, the clean energies' quantiles, the tail."""

    fpr: float
    threshold: float
    values: list[float]             # clean energies at LEVELS (ascending)
    tail_start: float               # u: the tail model holds for energies above it
    tail_probability: float         # P(E > u) for clean data
    tail_scale: float               # β: P(E ≥ e) = tail_probability · exp(−(e − u) / β)
    num_samples: int
    source: str = ""
    created_at: str = field(default_factory=lambda: datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds"))

    def survival(self, energy: Any) -> np.ndarray:
        """P(E ≥ energy) for clean data, float64 in (0, 1]; NaN stays NaN."""
        e = np.asarray(energy, dtype=np.float64)
        inside = 1.0 - np.interp(e, self.values, LEVELS)
        tail = self.tail_probability * np.exp(-(e - self.tail_start) / self.tail_scale)
        return np.where(e > self.tail_start, np.minimum(tail, self.tail_probability),
                        np.maximum(inside, self.tail_probability))

    def is_anomaly(self, energy: Any) -> np.ndarray:
        """Energy above the threshold (about `fpr` of clean data), bool per sample."""
        return np.asarray(energy, dtype=np.float64) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"format": CALIBRATION_FORMAT, "format_version": CALIBRATION_FORMAT_VERSION,
                "levels": list(LEVELS), **asdict(self)}


def fit_calibration(energies: Any, fpr: float = 0.01, source: str = "") -> Calibration:
    """A `Calibration` from the energies of clean held-out samples at false-positive rate `fpr`.

    Raises `EbgenError` for fewer than `MIN_SAMPLES` finite energies or `fpr` outside (0, 1).
    """
    e = np.sort(np.asarray(energies, dtype=np.float64).ravel())
    if not 0.0 < fpr < 1.0:
        raise EbgenError(f"fpr must be in (0, 1), got {fpr}")
    if len(e) < MIN_SAMPLES or not np.all(np.isfinite(e)):
        raise EbgenError(f"calibration needs at least {MIN_SAMPLES} clean samples with finite "
                         f"energies, got {len(e)}")
    k = max(MIN_TAIL, math.ceil(TAIL_SHARE * len(e)))
    start = float(e[len(e) - k - 1])
    excess = e[len(e) - k:] - start
    scale = max(float(excess.mean()), 1e-9 * (1.0 + abs(start)))
    p_tail = k / len(e)
    values = [float(v) for v in np.quantile(e, LEVELS)]
    if fpr < p_tail:
        threshold = start + scale * math.log(p_tail / fpr)
    else:
        threshold = float(np.interp(1.0 - fpr, LEVELS, values))
    return Calibration(fpr=float(fpr), threshold=float(threshold), values=values,
                       tail_start=start, tail_probability=p_tail, tail_scale=scale,
                       num_samples=len(e), source=source)


def read_calibration(directory: str | Path) -> Calibration | None:
    """The model directory's calibration, or None when it has not been calibrated."""
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if data.get("format") != CALIBRATION_FORMAT \
            or data.get("format_version") != CALIBRATION_FORMAT_VERSION:
        raise CheckpointError(f"{path} is not an ebgen calibration of version "
                              f"{CALIBRATION_FORMAT_VERSION}: calibrate again")
    if data.get("levels") != list(LEVELS):
        raise CheckpointError(f"{path} was written with other quantile levels: calibrate again")
    fields = Calibration.__dataclass_fields__
    return Calibration(**{k: v for k, v in data.items() if k in fields})


def write_calibration(directory: str | Path, calibration: Calibration) -> Path:
    """Write `calibration.json` into the model directory (atomically); returns its path."""
    return atomic_write_text(Path(directory) / CALIBRATION_FILE,
                             json.dumps(calibration.to_dict(), indent=1) + "\n")
