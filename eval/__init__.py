"""ebgen.eval: what `ebgen eval` reports about a checkpoint, a model directory or a bundled model.

`evaluate(model)` returns a JSON-ready report; `format_report` prints it as aligned lines.
Points models are judged by distributions first (`ebgen.metrics.distribution`,
`ebgen.metrics.points`), image models by energies, the bundled classifier's metrics and anomaly
AUROCs (`ebgen.metrics.images`, `ebgen.metrics.anomaly`); the metrics themselves live in the core, the
stage only gathers a model's samples and energies and writes the report and plots.

    >>> from ebgen.eval import evaluate, format_report   # doctest: +SKIP
    >>> print(format_report(evaluate("ring")))
"""
from .evaluate import Evaluated, evaluate, format_report, open_for_eval

__all__ = ["Evaluated", "evaluate", "format_report", "open_for_eval"]
