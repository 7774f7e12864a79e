"""ebgen.train — the Trainer: alternating updates, devices, AMP, DDP, resume, logging."""
from .trainer import Trainer, resume_config, train

__all__ = ["Trainer", "train", "resume_config"]
