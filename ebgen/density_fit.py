"""`DensityFit`: the settings of refitting a trained energy for likelihood.

`ebgen.train.density` does the fit; `ebgen fit-density` makes one option per field. Kept apart
from it (no torch here) so that building the command line stays instant.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import opt
from .errors import EbgenError

#: The base kinds a fit may refit (both fitted to the training data, neither learned).
FIXED_BASES = ("data", "covariance")


@dataclass
class DensityFit:
    """How `ebgen.train.density.refit_energy` refits an energy for likelihood."""

    updates: int = opt(3000, "Gradient updates of the energy.")
    base: str | None = opt(None, "Refit the base as data (diagonal Gaussian) or covariance "
                                 "(full Gaussian) of the training data; none keeps the "
                                 "run's kind when it is one of these, else data.", FIXED_BASES)
    floor: float = opt(1e-4, "Variance floor of the refitted base (its eigenvalues' for "
                             "covariance), in standardised units.")
    reset_experts: bool = opt(True, "Zero the softplus experts' weights first, so that the fit "
                                    "starts from the base alone.")
    lr: float = opt(1e-4, "Adam learning rate of the energy.")
    chains: int = opt(64, "Persistent chains, and data rows per update.")
    chain_steps: int = opt(10, "MALA moves of every chain per update.")
    restart: float = opt(0.05, "Share of chains redrawn from the base each update.")
    gradient_penalty: float = opt(0.1, "R1 weight on the experts' gradient at the data.")
    seed: int = opt(0, "Random seed.")

    def __post_init__(self) -> None:
        """One-line errors for settings no fit can run with."""
        least = {"updates": 0, "chains": 2, "chain_steps": 1, "gradient_penalty": 0}
        for name, low in least.items():
            if getattr(self, name) < low:
                raise EbgenError(f"{name.replace('_', '-')} must be at least {low}, got "
                                 f"{getattr(self, name)}")
        if not (self.lr > 0 and self.floor > 0):
            raise EbgenError(f"lr and floor must be positive, got {self.lr} and {self.floor}")
        if not 0 <= self.restart <= 1:
            raise EbgenError(f"restart is a share of the chains, in [0, 1]: got {self.restart}")
        if self.base is not None and self.base not in FIXED_BASES:
            raise EbgenError(f"base {self.base!r}: expected one of {', '.join(FIXED_BASES)}")
