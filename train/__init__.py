"""ebgen.train — the Trainer: alternating updates, devices, AMP, DDP, resume, logging; and the
likelihood refit of a trained energy (`fit_density`)."""
from .density import fit_density
from .trainer import Trainer, resume_config, train

__all__ = ["Trainer", "train", "resume_config", "fit_density"]
