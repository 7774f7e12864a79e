"""The energy step's loss, term by term: each term computed once and returned by its name.

`energy_terms` gives the weighted terms the Trainer sums and logs separately (in
`metrics.jsonl` as `term_<name>`), with the energies of the data and the samples:

    contrast        DDGM: mean E(data) − mean E(samples); GAN: the discriminator's loss
    r1              ½‖∇ᵤE‖² at the data (Mescheder et al. 2018); of E less its fixed base
                    with `gradient_penalty_on="experts"`
    score_matching  denoising (Vincent 2011) or exact (the Laplacian of E) score matching
    calibration     the importance-weighted likelihood of the data batch (ebgen.losses)
    likelihood      importance-sampled maximum likelihood with a known proposal
    magnitude       mean(E_data² + E_samples²)

Only the terms whose weight is on appear. Penalties live in the nets' standardised coordinates
u = (x − shift) / scale, so their weights and noise std mean the same at any location and
scale of the data. Rows a penalty needs ∇ₓE at (data for R1, noisy data for score matching) go
through their own forward pass, so only they pay the double backward. The samples' energies
can come from the caller: the Trainer's DDGM generator step has already run E on the samples
and taken the gradient of their mean (the contrast's sample half, up to its sign), so the
energy step does not run them again.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ebgen.checkpoint import unwrap
from ebgen.config import TrainConfig
from ebgen.ensemble import num_members
from ebgen.losses import (calibration_loss, energy_loss, exact_score_matching,
                          gan_discriminator_loss, gradient_penalty, input_gradients,
                          kde_proposal, likelihood_loss, score_matching)


@dataclass(frozen=True)
class TermWeights:
    """This step's weights of the terms that switch on and off (`calibrate_from`)."""

    r1: float = 0.0
    score_matching: float = 0.0
    calibration: float = 0.0
    likelihood: float = 0.0
    score_matching_std: float | None = None  # this step's noise (None: the config's)


@dataclass
class EnergyStep:
    """The weighted terms by name, and the energies of this step's data and samples."""

    terms: dict[str, torch.Tensor]
    energy_data: torch.Tensor
    energy_samples: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        """The terms' sum, added in their order (so a run's numbers never depend on it)."""
        return sum(self.terms.values())  # 0 + the first term is that term, exactly


def reuses_sample_energies(cfg: TrainConfig) -> bool:
    """Whether the energy step's loss is linear in E(samples), so that the generator step's
    gradient of mean E(samples) can stand in for its sample half: DDGM without the magnitude
    term (a GAN's loss and E(samples)² need the samples run again)."""
    return cfg.objective == "ddgm" and cfg.energy_magnitude == 0


def annealed_noise_std(cfg: TrainConfig, step: int) -> float | None:
    """The denoising noise at `step`, annealed linearly from `score_matching_std` to
    `score_matching_std_final` over the steps from `calibrate_from` on (None: constant)."""
    if cfg.score_matching_std_final is None:
        return None
    start = max(0.0, cfg.calibrate_from) * cfg.steps
    done = min(1.0, max(0.0, (step - start) / max(1.0, cfg.steps - start)))
    return cfg.score_matching_std + done * (cfg.score_matching_std_final
                                            - cfg.score_matching_std)


def noise_stds(low: float, high: float, rows: torch.Tensor) -> torch.Tensor:
    """Multi-scale denoising (Li et al. 2019): one noise std per row of `rows`, drawn
    log-uniformly from [low, high], shaped to broadcast over the row's features."""
    u = torch.rand(len(rows), *([1] * (rows.dim() - 1)), device=rows.device)
    return low * (high / low) ** u


def energy_terms(energy: torch.nn.Module, x: torch.Tensor, x_fake: torch.Tensor,
                 cfg: TrainConfig, weights: TermWeights,
                 energy_samples: torch.Tensor | None = None) -> EnergyStep:
    """The energy step's terms for data `x` and detached samples `x_fake`.

    Given `energy_samples` (E(x_fake), detached: the caller supplies their gradient), the
    samples are not run through the energy again; the terms' values are the same. An ensemble
    (`ebgen.ensemble`) of K members scores every row once per member, K copies of the rows
    with `split=True`, and each term is the mean of the members' own terms, so each member
    trains as it would alone; the energies returned are the members' mean.
    """
    net = unwrap(energy)
    standardise, scale = net.affine.standardise, net.input_scale
    k = num_members(net)
    n, r1, sm = len(x), weights.r1, weights.score_matching
    exact = cfg.score_matching_kind == "exact"
    noise_std = weights.score_matching_std or cfg.score_matching_std
    graded = [x] if r1 > 0 else []
    if sm > 0:  # a random batch, so its first rows are a random subset
        noisy = x[:max(1, round(cfg.score_matching_share * n))]
        noise = torch.randn_like(noisy)
        if cfg.score_matching_std_min is not None:  # one std per row, log-uniform
            noise_std = noise_stds(cfg.score_matching_std_min, noise_std, noisy)
        graded.append(noisy if exact else noisy + noise_std * scale * noise)
    # Rows that need no ∇ₓE share one forward pass: data (unless R1 grades them), the samples
    # (unless given) and the likelihood's proposal points.
    plain = {"data": x} if r1 == 0 else {}
    if energy_samples is None:
        plain["samples"] = x_fake
    likelihood = cfg.objective == "ddgm" and weights.likelihood > 0
    if likelihood:
        y, log_q = kde_proposal(standardise(x), n, k=cfg.entropy_neighbours)
        plain["proposal"] = net.affine.restore(y)
    energies: dict[str, torch.Tensor] = {}  # each (members, rows)
    if plain:
        sizes = [len(rows) for rows in plain.values()]
        rows = _per_member(torch.cat(list(plain.values())), k)
        energies = dict(zip(plain, _score(energy, rows, k).view(k, -1).split(sizes, dim=1)))
    if graded:
        inputs = _per_member(torch.cat(graded), k).requires_grad_(True)
        graded_energies = _score(energy, inputs, k).view(k, -1)
        grad = input_gradients(graded_energies, inputs) * scale  # ∇ᵤE, each member's own
        grad_by_member = grad.view(k, -1, *grad.shape[1:])
    energy_data = graded_energies[:, :n] if r1 > 0 else energies["data"]
    if energy_samples is None:
        energy_samples = energies["samples"]
    terms: dict[str, torch.Tensor] = {}
    if cfg.objective == "ddgm":  # linear in E: the members' mean contrast
        terms["contrast"] = energy_loss(energy_data, energy_samples)
        if weights.calibration > 0:
            u = standardise(x)
            terms["calibration"] = weights.calibration * _mean(
                calibration_loss(e, u, cfg.entropy_neighbours) for e in energy_data)
        if likelihood:
            terms["likelihood"] = weights.likelihood * _mean(
                likelihood_loss(e, e_proposal, log_q)
                for e, e_proposal in zip(energy_data, energies["proposal"]))
    else:
        terms["contrast"] = gan_discriminator_loss(energy_data, energy_samples)
    if r1 > 0:
        grad_data = grad_by_member[:, :n]
        if cfg.gradient_penalty_on == "experts":  # E less its fixed base (no parameters)
            u = standardise(inputs.detach().view(k, -1, *x.shape[1:])[:, :n].flatten(0, 1))
            base = net.base_gradient(u, split=True) if k > 1 else net.base_gradient(u)
            grad_data = grad_data - base.view_as(grad_data)
        terms["r1"] = r1 * gradient_penalty(grad_data.flatten(0, 1))
    if sm > 0 and exact:
        noisy_rows = torch.arange(len(inputs), device=inputs.device).view(k, -1)[:, -len(noise):]
        terms["score_matching"] = sm * exact_score_matching(grad, inputs, scale,
                                                            noisy_rows.flatten(), noise_std)
    elif sm > 0:
        std = _per_member(noise_std, k) if torch.is_tensor(noise_std) else noise_std
        terms["score_matching"] = sm * score_matching(
            grad_by_member[:, -len(noise):].flatten(0, 1), _per_member(noise, k), std)
    if cfg.energy_magnitude > 0:
        terms["magnitude"] = cfg.energy_magnitude * (energy_data.pow(2).mean()
                                                     + energy_samples.pow(2).mean())
    return EnergyStep(terms, energy_data.mean(0), energy_samples.mean(0)
                      if energy_samples.dim() > 1 else energy_samples)


def _per_member(rows: torch.Tensor, members: int) -> torch.Tensor:
    """`rows` once per member (members = 1: the rows themselves)."""
    return rows if members == 1 else rows.repeat(members, *([1] * (rows.dim() - 1)))


def _score(energy: torch.nn.Module, rows: torch.Tensor, members: int) -> torch.Tensor:
    """E of `rows` (from `_per_member`): each member scores its own copy."""
    return energy(rows) if members == 1 else energy(rows, split=True)


def _mean(values) -> torch.Tensor:
    values = list(values)
    return sum(values) / len(values)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """This step's learning-rate factor: 1 until `lr_decay_start` of the steps, then linearly
    to 0 at the last step with lr_decay; always 1 without."""
    if not cfg.lr_decay:
        return 1.0
    start = cfg.lr_decay_start * cfg.steps
    return min(1.0, max(0.0, 1.0 - (step - start) / max(1.0, cfg.steps - start)))


def calibrating(cfg: TrainConfig, step: int) -> bool:
    """Whether `step` is past `calibrate_from` (always, when it is 0)."""
    return cfg.calibrate_from <= 0 or step >= cfg.calibrate_from * cfg.steps


def entropy_estimate(cfg: TrainConfig, step: int) -> str:
    """The entropy estimate at `step`: `calibrate_entropy` once calibrating, else `entropy`."""
    if cfg.calibrate_entropy is not None and cfg.calibrate_from > 0 and calibrating(cfg, step):
        return cfg.calibrate_entropy
    return cfg.entropy


def r1_weight(cfg: TrainConfig, step: int) -> float:
    """R1's weight at `step`: `gradient_penalty`, or with `gradient_penalty_every` N > 1 (lazy
    regularisation, Karras et al. 2020) N times it on every Nth step and 0 on the others, the
    same penalty on average for 1/N of its double backward passes."""
    every = cfg.gradient_penalty_every
    return cfg.gradient_penalty * every if step % every == 0 else 0.0


def term_weights(cfg: TrainConfig, step: int) -> TermWeights:
    """The weights of R1, score matching, calibration and likelihood at `step`, per
    `calibrate_from`."""
    if cfg.objective != "ddgm":  # a discriminator is no density to calibrate: R1 only
        return TermWeights(r1=r1_weight(cfg, step))
    late = TermWeights(score_matching=cfg.score_matching, calibration=cfg.calibration,
                       likelihood=cfg.likelihood,
                       score_matching_std=annealed_noise_std(cfg, step))
    if cfg.calibrate_from <= 0:
        return dataclasses.replace(late, r1=r1_weight(cfg, step))
    if not calibrating(cfg, step):
        return TermWeights(r1=r1_weight(cfg, step))
    return late
