"""ebgen: deep directed generative models with energy-based probability estimation.

Kim & Bengio (2016): an energy model E(x) and a generator G(z) trained together. Train with
`ebgen.train.train`, export with `ebgen.export.export_model`, serve with `ebgen.serve`.
Importing `ebgen` is cheap: torch loads only when a module that needs it is imported.
"""
from __future__ import annotations

__version__ = "0.1.0"


def load_model(path, device: str = "auto", threads: int | None = None):
    """Load a model directory (from `ebgen export`) for inference with onnxruntime.

    `path` is a model directory, a training checkpoint directory (exported once to a cache
    folder; needs torch) or a bundled model name. `device`: auto, cpu or cuda[:N].
    `threads`: onnxruntime threads per session (default: its choice). Returns an
    `ebgen.serve.runtime.InferenceModel`; torch is not imported for a model directory.

    Example:
        >>> import ebgen
        >>> model = ebgen.load_model("models/tiny")   # doctest: +SKIP
        >>> x = model.generate(16, seed=0)            # float32 (16, 1, 8, 8) in [-1, 1]
        >>> model.score(x)["percentile"]              # 0–100, higher = less typical
    """
    from .serve.runtime import load_model as _load_model

    return _load_model(path, device, threads)
