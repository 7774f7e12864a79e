"""TorchServe entry module of `generate.mar`: one class, over `handlers.GenerateHandler`.

TorchServe imports this file from the unpacked archive by its bare name and uses the single
class defined in it, so it imports absolutely and defines exactly one class.
"""
from ebgen.serve.handlers import GenerateHandler


class EbgenGenerate(GenerateHandler):
    """Samples from the archive's generator (see `GenerateHandler`)."""
