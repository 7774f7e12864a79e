"""Fitting a trained energy for likelihood: persistent-chain maximum likelihood.

Training contrasts the data with the generator's samples, which decides where the energy is
low but not how much probability goes there: the softplus experts lower the energy wherever
their features are large, and piecewise-linear features grow away from the data, so the
normalised density (log Z by `ebgen.export.partition`'s AIS) scores worse than a Gaussian.
`refit_energy` refits the energy alone by stochastic maximum likelihood: the gradient of the
data's mean energy less that of persistent Metropolis-adjusted Langevin chains on exp(−E), run
in the base-whitened coordinates AIS uses (`ebgen.whitened`), with R1 on the experts (E less
its fixed base) at the data. By default it first refits the base (the data's diagonal
Gaussian or full covariance) at a tight variance floor and zeroes the softplus experts'
weights, so the fit starts at the base's own likelihood with the chains in equilibrium
(samples of the base). Random Fourier features are switched off for the fit: on a 2-D ring,
with them on, the short chains never found the narrow wells their sines dig, and the
held-out likelihood (normalised exactly on a grid) fell by 1–80 nats instead of rising by 1.4.

`ebgen.density_fit.DensityFit` holds the settings (`ebgen fit-density`'s options);
`fit_density` applies them to a checkpoint and writes the fitted one, its generator
untouched. The fit runs on the CPU.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import Config
from ..data import Dataset
from ..density_fit import FIXED_BASES, DensityFit
from ..errors import EbgenError
from ..metrics.likelihood import dequantise
from ..models import EnergyModel
from ..names import TORCH_DIR
from ..whitened import WhitenedEnergy, adapt_step_size, mala_step


def refit_base(config: Config, energy: EnergyModel, data: Dataset, kind: str,
               floor: float) -> EnergyModel:
    """`energy` with its base refitted as `kind` at variance floor `floor` to (up to 60,000
    rows of) `data`; a new net (the same expert weights) when the kind changes. Updates
    `config.model`."""
    if kind not in FIXED_BASES:
        raise ValueError(f"base {kind!r}: a fit needs a fixed base, one of {FIXED_BASES}")
    changed = kind != energy.config.base  # (often the same object as config.model)
    config.model.base, config.model.base_min_variance = kind, floor
    if changed:
        rebuilt = EnergyModel(config.model)
        kept = {k: w for k, w in energy.state_dict().items()
                if not k.startswith("base_") and k not in ("log_sigma", "bias")}
        rebuilt.load_state_dict(kept, strict=False)  # all but the base
        energy = rebuilt.to(next(energy.parameters()).device)
    energy.config.base, energy.config.base_min_variance = kind, floor
    energy.fit_base(data.batch(torch.arange(min(len(data), 60_000))))
    return energy.eval()


def refit_energy(config: Config, energy: EnergyModel, data: Dataset, fit: DensityFit,
                 report: Callable[[int, dict], None] | None = None) -> EnergyModel:
    """Refit `energy` (and `config.model`'s base fields) for likelihood on training `data`;
    returns the fitted net (a new one when the base kind changes). `report(update, figures)`
    is called every 50 updates and at the end (mean energies, chain radius, seconds)."""
    torch.manual_seed(fit.seed)
    kind = fit.base or (energy.config.base if energy.config.base in FIXED_BASES else "data")
    energy = refit_base(config, energy, data, kind, fit.floor)
    if fit.reset_experts:
        with torch.no_grad():
            energy.experts.weight.zero_()
    energy.switch_fourier(False)  # short chains miss the wells of high-frequency features
    energy.requires_grad_(True)
    target = WhitenedEnergy(energy)
    rng, noise = np.random.default_rng(fit.seed), torch.Generator().manual_seed(fit.seed)
    images = config.model.kind == "image"
    v = torch.randn(fit.chains, target.dim, generator=noise)
    step = torch.full((fit.chains,), 0.5 / math.sqrt(target.dim))
    optimizer = torch.optim.Adam(energy.parameters(), lr=fit.lr, betas=(0.5, 0.999))
    started = time.perf_counter()
    for update in range(1, fit.updates + 1):
        with torch.no_grad():
            g_v, grad_g = target.g(v, grad=True)
            for _ in range(fit.chain_steps):
                v, g_v, grad_g, accept = mala_step(target, v, g_v, grad_g, 1.0, step, noise)
                step = adapt_step_size(step, accept)
        negatives = target.inputs(v)
        x = data.batch(torch.from_numpy(rng.integers(0, len(data), fit.chains)))
        if images:  # scored as `ebgen eval` scores them: spread over their 8-bit bins
            x = torch.from_numpy(dequantise(x.numpy(), rng)[0]).float()
        x.requires_grad_(fit.gradient_penalty > 0)
        energy_data, energy_chains = energy(x), energy(negatives.float())
        loss = energy_data.mean() - energy_chains.mean()
        if fit.gradient_penalty > 0:  # R1 of the experts: E less its fixed base
            experts = energy_data - target.base_energy(energy.affine.standardise(x))
            (grad,) = torch.autograd.grad(experts.sum(), x, create_graph=True)
            loss = loss + fit.gradient_penalty * grad.flatten(1).pow(2).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        restart = int(rng.binomial(fit.chains, fit.restart))
        if restart:
            which = torch.from_numpy(rng.choice(fit.chains, restart, replace=False))
            v[which] = torch.randn(restart, target.dim, generator=noise)
            step[which] = step.median()
        if report is not None and (update % 50 == 0 or update == fit.updates):
            report(update, {"energy_data": float(energy_data.detach().mean()),
                            "energy_chains": float(energy_chains.detach().mean()),
                            "chain_radius": float(v.norm(dim=1).mean() / math.sqrt(target.dim)),
                            "seconds": time.perf_counter() - started})
    return energy.eval().requires_grad_(False)


def fit_density(run: str | Path, out: str | Path, fit: DensityFit | None = None,
                data: str | None = None, progress: bool = True) -> dict:
    """Refit checkpoint `run`'s energy for likelihood (`refit_energy`) and write the result,
    with the same generator, as checkpoint `out`; `data` replaces the path the run trained
    on. Returns what `out`'s config.json records of the fit (`density_fit`)."""
    from tqdm.auto import tqdm

    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..data import load_data
    from ..torch_model import checkpoint_directory

    fit = fit or DensityFit()
    checkpoint = checkpoint_directory(run).resolve()
    own = {checkpoint, checkpoint.parent} if checkpoint.name == TORCH_DIR else {checkpoint}
    if Path(out).resolve() in own:  # the run, or the model directory around its weights
        raise EbgenError(f"--out {out} holds the run itself: write the fitted energy elsewhere")
    config, energy, generator, meta = load_checkpoint(checkpoint)
    if data is None and config.data.path and not Path(config.data.path).expanduser().exists():
        raise EbgenError(f"{run} trained on {config.data.path}, which is not here: give its "
                         f"data with --data PATH")
    data_config = config.data if data is None else dataclasses.replace(
        config.data, path=str(data), dataset=None)
    train, _ = load_data(data_config, config.model, seed=config.train.seed)
    bar = tqdm(total=fit.updates, disable=not progress, desc="fit-density", unit="update")

    def report(update: int, figures: dict) -> None:
        bar.update(update - bar.n)
        bar.set_postfix(E_data=f"{figures['energy_data']:.1f}",
                        E_chains=f"{figures['energy_chains']:.1f}", refresh=False)

    started = time.perf_counter()
    energy = refit_energy(config, energy, train, fit, report)
    bar.close()
    record = {**dataclasses.asdict(fit), "source": str(run),
              "seconds": round(time.perf_counter() - started, 1)}
    save_checkpoint(out, config, energy, generator, meta.get("step", 0),
                    extra={"density_fit": record})
    return record
