"""TorchServe entry module of `score.mar`: one class, over `handlers.ScoreHandler`.

TorchServe imports this file from the unpacked archive by its bare name and uses the single
class defined in it, so it imports absolutely and defines exactly one class.
"""
from ebgen.serve.handlers import ScoreHandler


class EbgenScore(ScoreHandler):
    """Energies, log-densities and percentiles from the archive's energy model."""
