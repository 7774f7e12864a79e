"""ebgen: deep directed generative models with energy-based probability estimation.

Kim & Bengio (2016): an energy model E(x) and a generator G(z) trained together. Train with
`ebgen.train.train`, export with `ebgen.export.export_model`, serve with `ebgen.serve`.
Importing `ebgen` is cheap: torch loads only when a module that needs it is imported.
"""
__version__ = "0.1.0"
