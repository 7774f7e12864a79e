"""The pretrained models that ship inside the wheel, addressed by name.

Each lives in `ebgen/pretrained/<name>/`: a model directory (design.md §3: `model.json` and the
ONNX files; the TorchServe archives are built on demand, so they do not bloat the wheel), plus
`recipe.json` (how `scripts/retrain_bundled.py` trained it, and how long it took) and
`quality.json` (what `ebgen eval` measured on it). Reading them needs neither torch nor data.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from .names import MODEL_FILE, QUALITY_FILE, RECIPE_FILE

#: The model `ebgen generate`, `ebgen score` and `ebgen serve` use when none is named.
DEFAULT_MODEL = "mnist"

#: The figures `ebgen models` shows for each kind of model, in this order ("a.b" is key b of
#: section a of the eval report).
KEY_METRICS = ("classes_covered", "confident_share", "class_kl_uniform",
               "generator.mmd2_ratio", "energy.mmd2_ratio", "generator.modes",
               "generator.high_quality", "kl_data_energy")


def pretrained_dir() -> Path:
    """The folder holding the bundled model directories."""
    return Path(str(resources.files("ebgen") / "pretrained"))


def bundled_names() -> list[str]:
    """Names of the bundled models, sorted."""
    root = pretrained_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MODEL_FILE).is_file())


def bundled_model_path(name: str) -> Path | None:
    """The model directory of the bundled model `name`, or None if there is none."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = pretrained_dir() / name
    return path if (path / MODEL_FILE).is_file() else None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def model_card(name: str) -> dict[str, Any]:
    """What `ebgen models` shows of bundled model `name`: size, data, recipe and metrics."""
    path = bundled_model_path(name)
    if path is None:
        from .errors import EbgenError

        raise EbgenError(f"no bundled model {name!r}; bundled: {', '.join(bundled_names())}")
    info = _read_json(path / MODEL_FILE)
    recipe = _read_json(path / RECIPE_FILE)
    quality = _read_json(path / QUALITY_FILE)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {"name": name, "kind": info.get("kind"), "sample_shape": info.get("sample_shape"),
            "size_bytes": size, "data": recipe.get("data", ""),
            "objective": recipe.get("config", {}).get("train", {}).get("objective"),
            "steps": recipe.get("config", {}).get("train", {}).get("steps"),
            "train_seconds": recipe.get("train_seconds"), "command": recipe.get("command"),
            "metrics": {k: v for k in KEY_METRICS if (v := _lookup(quality, k)) is not None},
            "path": str(path)}


def _lookup(report: dict[str, Any], key: str) -> Any:
    """report["a"]["b"] for key "a.b" (None where missing)."""
    for part in key.split("."):
        if not isinstance(report, dict):
            return None
        report = report.get(part)
    return report


def format_cards(cards: list[dict[str, Any]]) -> str:
    """The model cards as an aligned table: name, kind, size, source data, key metrics."""
    rows = [("NAME", "KIND", "SIZE", "DATA", "METRICS")]
    for card in cards:
        metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in card["metrics"].items())
        rows.append((card["name"], f"{card['kind']} {'×'.join(map(str, card['sample_shape']))}",
                     f"{card['size_bytes'] / 1e6:.1f} MB", card["data"], metrics or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4]
                     for r in rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
