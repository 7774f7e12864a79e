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
