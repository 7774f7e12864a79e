"""The Trainer: alternating generator and energy updates, checkpoints, samples and logs.

Each step draws one minibatch of data and latents, takes a generator step (DDGM: lower
E(G(z)) − H(G); GAN: non-saturating loss), then an energy step on the data and the generator's
(detached) samples; a DDGM energy step reuses the generator step's E(samples) and its gradient.
Randomness is derived from (seed, step, rank), so a resumed run draws exactly what the
uninterrupted run would have drawn; optimiser state and step live in trainer_state.pt (and,
under --generator-ema, the raw generator: the checkpoint's is the average, `train/averaging.py`).
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ebgen.checkpoint import (check_fresh_out_dir, load_checkpoint, load_trainer_state,
                              read_meta, recover, save_checkpoint, truncate_metrics, unwrap)
from ebgen.config import Config, with_overrides
from ebgen.data import adopt_points_dim, load_data, standardisation
from ebgen.errors import EbgenError
from ebgen.latents import sample_latents
from ebgen.losses import (batchnorm_entropy, gan_generator_loss, generator_loss,
                          knn_log_density)
from ebgen.models import build_models, energy_function
from ebgen.mutual_info import StatisticsNetwork, jsd_mutual_information
from ebgen.names import METRICS_FILE, SAMPLES_DIR

from .averaging import WeightAverage
from .distributed import barrier, setup_runtime, teardown_runtime
from .energy_terms import (TermWeights, calibrating, energy_terms, entropy_estimate,
                           lr_factor, reuses_sample_energies, term_weights)

#: The seed stream of the fixed latents used for sample grids (distinct from per-step streams).
_FIXED_LATENT_STREAM = 0xF1ED
#: The progress bar's figures: its short names of the logged metrics.
_PROGRESS = {"L_E": "loss_energy", "L_G": "loss_generator", "E_data": "energy_data",
             "E_samp": "energy_samples", "H": "entropy"}


class Trainer:
    """Trains an (EnergyModel, Generator) pair per `config`, writing to `out_dir`."""

    def __init__(self, config: Config, out_dir: str | Path, resume: bool = False,
                 progress: bool = True) -> None:
        self.config, self.out_dir, self.progress = config, Path(out_dir), progress
        if (config.train.calibration > 0 or config.train.likelihood > 0) \
                and config.model.kind != "points":
            raise EbgenError("--calibration and --likelihood need low-dimensional (points) data: "
                             "their densities mean nothing in pixel space")
        self.runtime = setup_runtime(config.train.device)
        self.device = self.runtime.device
        self.amp = config.train.amp and self.device.type == "cuda"
        if not resume:
            adopt_points_dim(config.model, config.data)
        self.train_data, self.heldout_data = load_data(config.data, config.model,
                                                       seed=config.train.seed)
        if self.train_data.values.numel() * self.train_data.values.element_size() < 2 ** 30:
            self.train_data.values = self.train_data.values.to(self.device)
        self.step = 0
        energy, generator = self._networks(resume)
        energy.to(self.device).train()
        generator.to(self.device).train()
        ema = config.train.generator_ema  # resumed: the average is the checkpoint's generator
        self.average = WeightAverage(generator, ema) if ema > 0 else None
        self.energy_opt = _adam_like(config, energy.parameters(), config.train.lr_energy,
                                     config.train.weight_decay)
        self.generator_opt = _adam_like(config, generator.parameters(), config.train.lr_generator)
        self.statistics: torch.nn.Module | None = None
        if "mi" in (config.train.entropy, config.train.calibrate_entropy) \
                and config.train.objective == "ddgm":
            self.statistics = StatisticsNetwork(config.model).to(self.device).train()
            self.statistics_opt = _adam_like(config, self.statistics.parameters(),
                                             config.train.lr_energy)
        if resume:
            self._load_trainer_state(generator)
        if self.runtime.distributed:
            energy, generator = self._distribute(energy), self._distribute(generator)
            if self.statistics is not None:
                self.statistics = self._distribute(self.statistics)
        self.energy, self.generator = energy, generator
        self.fixed_z = torch.from_numpy(sample_latents(
            config.train.num_eval_samples, config.model.z_dim,
            seed=(config.train.seed, _FIXED_LATENT_STREAM), distribution=config.model.latent))
        if self.runtime.is_main:
            (self.out_dir / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
            truncate_metrics(self.out_dir / METRICS_FILE, self.step)

    def _networks(self, resume: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The run's checkpointed networks (`resume`), else fresh ones (standardisation and
        the data base fitted on the training data first)."""
        config = self.config
        if resume:
            if self.runtime.is_main:  # the writer finishes an interrupted save; ranks wait
                recover(self.out_dir)
            barrier(self.runtime)
            _, energy, generator, _ = load_checkpoint(self.out_dir)
            return energy, generator
        check_fresh_out_dir(self.out_dir)
        if config.model.kind == "points" and config.model.standardize \
                and config.model.data_shift is None:
            shift, scale = standardisation(self.train_data)
            config.model.data_shift, config.model.data_scale = shift, scale
        torch.manual_seed(config.train.seed)
        energy, generator = build_models(config.model)
        if config.model.base in ("data", "covariance"):
            energy.fit_base(self.train_data.batch(torch.arange(
                min(len(self.train_data), 60_000), device=self.train_data.values.device)))
        return energy, generator

    def _load_trainer_state(self, generator: torch.nn.Module) -> None:
        """Optimisers, step and (under an average) the raw generator of the checkpoint."""
        state = load_trainer_state(self.out_dir)
        if "generator_training" in state:
            generator.load_state_dict(state["generator_training"])
        self.energy_opt.load_state_dict(state["energy_optimizer"])
        self.generator_opt.load_state_dict(state["generator_optimizer"])
        if self.statistics is not None:
            self.statistics.load_state_dict(state["statistics_network"])
            self.statistics_opt.load_state_dict(state["statistics_optimizer"])
        self.step = int(state["step"])

    def _distribute(self, module: torch.nn.Module) -> torch.nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    # ----------------------------------------------------------------------------- one step
    def _draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's data minibatch and latents, from the (seed, step, rank) stream."""
        cfg = self.config
        rng = np.random.default_rng((cfg.train.seed, self.step, self.runtime.rank))
        torch.manual_seed(int(rng.integers(2 ** 62)))  # hidden-layer noise
        index = torch.from_numpy(rng.integers(0, len(self.train_data), cfg.train.batch_size))
        x = self.train_data.batch(index.to(self.train_data.values.device)).to(self.device)
        z = sample_latents(cfg.train.batch_size, cfg.model.z_dim, seed=rng,
                           distribution=cfg.model.latent)
        return x, torch.from_numpy(z).to(self.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    def train_step(self) -> dict[str, torch.Tensor]:
        """One generator step, then one energy step. Returns detached scalar tensors."""
        cfg = self.config.train
        x, z = self._draw()
        self._set_phase()
        if cfg.lr_decay:
            self._set_learning_rates(self._decay())
        no_sync = self.energy.no_sync if self.runtime.distributed else contextlib.nullcontext
        # Generator step: gradients reach the energy too, but are discarded (and not all-reduced).
        standardise = unwrap(self.energy).affine.standardise
        estimate = self._entropy_estimate()
        log_q = None
        with self._autocast(), no_sync():
            x_fake = self.generator(z)
            if cfg.sample_noise > 0:  # in standardised units: x moves by scale · noise
                x_fake = x_fake + cfg.sample_noise * unwrap(self.energy).input_scale \
                    * torch.randn_like(x_fake)
            energy_fake = self.energy(x_fake)
            if estimate == "mi" and self.statistics is not None:  # T and G both raise the MI
                entropy = jsd_mutual_information(self.statistics, x_fake, z)
            elif estimate == "knn" and cfg.objective == "ddgm":  # standardised: a neighbour is
                log_q = knn_log_density(standardise(x_fake), cfg.entropy_neighbours)  # near in u
                entropy = -log_q.mean()
            else:
                entropy = batchnorm_entropy(unwrap(self.generator))
            if cfg.objective == "ddgm":
                loss_g = generator_loss(energy_fake, entropy, cfg.entropy_weight)
            else:
                loss_g = gan_generator_loss(energy_fake)
        train_statistics = self.statistics is not None and estimate == "mi"
        self.generator_opt.zero_grad(set_to_none=True)
        self.energy_opt.zero_grad(set_to_none=True)
        if train_statistics:
            self.statistics_opt.zero_grad(set_to_none=True)
        loss_g.backward()
        self.generator_opt.step()
        if self.average is not None:
            self.average.update(unwrap(self.generator), self.step)
        # The energy's gradient is now that of mean E(samples): negated, the sample half of a
        # loss linear in E(samples), which the energy step then need not compute again.
        shared = reuses_sample_energies(cfg)
        if shared:
            for grad in (p.grad for p in self.energy.parameters() if p.grad is not None):
                grad.neg_()
        else:
            self.energy_opt.zero_grad(set_to_none=True)
        if log_q is not None and cfg.component_reweighting > 0 \
                and self.config.model.num_components:
            components = unwrap(self.generator).components
            components.reweight(components.index(z), (energy_fake + log_q).detach(),
                                cfg.component_reweighting * self._decay())
        if train_statistics:
            self.statistics_opt.step()
        # Energy step: its terms by name (train/energy_terms.py), summed here.
        with self._autocast():
            step = energy_terms(self.energy, x, x_fake.detach(), cfg, self._energy_term_weights(),
                                energy_fake.detach() if shared else None)
        loss_e = step.loss
        loss_e.backward()
        self.energy_opt.step()
        self.step += 1
        return {"loss_energy": loss_e.detach(), "loss_generator": loss_g.detach(),
                "energy_data": step.energy_data.detach().mean(),
                "energy_samples": step.energy_samples.detach().mean(),
                "entropy": entropy.detach(),
                **{f"term_{name}": term.detach() for name, term in step.terms.items()}}

    # ------------------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train until `config.train.steps`; returns the last logged metrics."""
        from tqdm.auto import tqdm

        cfg = self.config.train
        main = self.runtime.is_main
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (self.progress and main),
                   desc="train", unit="step", dynamic_ncols=True, mininterval=0.5)
        last: dict[str, Any] = {"step": self.step}
        start, start_step = time.perf_counter(), self.step
        try:
            while self.step < cfg.steps:
                values = self.train_step()
                bar.update(1)
                done = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or done:
                    last = {"step": self.step, **{k: round(float(v), 5) for k, v in values.items()},
                            "steps_per_s": round((self.step - start_step)
                                                 / (time.perf_counter() - start), 3)}
                    bar.set_postfix({short: f"{last[key]:.3g}" for short, key
                                     in _PROGRESS.items()}, refresh=False)
                    if main:
                        with open(self.out_dir / METRICS_FILE, "a") as f:
                            f.write(json.dumps(last) + "\n")
                if main and (self.step % cfg.sample_every == 0 or done):
                    self.write_samples()
                if self.step % cfg.checkpoint_every == 0 or done:
                    self.save()
        finally:
            bar.close()
        if not cfg.steps or self.step == start_step:  # nothing to do: still leave a checkpoint
            self.save()
        teardown_runtime(self.runtime)
        return last

    def _set_phase(self) -> None:
        """From `calibrate_from` on, the energy's Fourier features join and (generator_as_deployed)
        the generator trains in eval mode: batch-statistics jitter and hidden noise widen
        training samples past what the deployed generator draws."""
        cfg = self.config.train
        self.generator.train(not (cfg.generator_as_deployed and calibrating(cfg, self.step)))
        join = cfg.calibrate_from if cfg.fourier_from is None else cfg.fourier_from
        unwrap(self.energy).switch_fourier(self.step >= join * cfg.steps)

    def _entropy_estimate(self) -> str:
        return entropy_estimate(self.config.train, self.step)

    def _energy_term_weights(self) -> TermWeights:
        return term_weights(self.config.train, self.step)

    def _decay(self) -> float:
        """This step's learning-rate factor (`energy_terms.lr_factor`)."""
        return lr_factor(self.config.train, self.step)

    def _set_learning_rates(self, factor: float) -> None:
        cfg = self.config.train
        pairs = [(self.energy_opt, cfg.lr_energy), (self.generator_opt, cfg.lr_generator)]
        if self.statistics is not None:
            pairs.append((self.statistics_opt, cfg.lr_energy))
        for optimizer, base in pairs:
            for group in optimizer.param_groups:
                group["lr"] = base * factor

    def save(self) -> None:
        """Write the checkpoint (rank 0), then wait for every process."""
        if self.runtime.is_main:
            state = {"energy_optimizer": self.energy_opt.state_dict(),
                     "generator_optimizer": self.generator_opt.state_dict()}
            if self.statistics is not None:
                state["statistics_network"] = unwrap(self.statistics).state_dict()
                state["statistics_optimizer"] = self.statistics_opt.state_dict()
            if self.average is not None:  # the checkpoint's generator is the average
                state["generator_training"] = unwrap(self.generator).state_dict()
            save_checkpoint(self.out_dir, self.config, self.energy, self.deployed_generator,
                            self.step, state)
        barrier(self.runtime)

    @property
    def deployed_generator(self) -> torch.nn.Module:
        """The generator users get: the weights' average under --generator-ema, else the raw."""
        return unwrap(self.generator) if self.average is None else self.average.module

    @torch.no_grad()
    def write_samples(self) -> Path:
        """Sample from the fixed latents: an image grid, or points over the energy landscape."""
        from ebgen import plots

        generator, energy = self.deployed_generator, unwrap(self.energy)
        generator.eval()  # the next step's _set_phase puts back the mode it trains in
        x = generator(self.fixed_z.to(self.device)).float().cpu().numpy()
        path = self.out_dir / SAMPLES_DIR / f"step_{self.step:07d}.png"
        if self.config.model.kind == "image":
            plots.save_image_grid(x, path)
        else:
            from ebgen.metrics.points import default_box

            data = self.train_data.values[:2000].cpu().numpy()
            source = self.config.data  # the built-in set, or the file's name
            name = Path(source.path).name if source.path else str(source.dataset)
            plots.save_points_plot(x, path, energy_fn=energy_function(energy, self.device),
                                   box=default_box(data) if x.shape[1] == 2 else None,
                                   data=data, title=f"{name} — step {self.step}")
        return path


def _adam_like(config: Config, params, lr: float, weight_decay: float = 0.0
               ) -> torch.optim.Optimizer:
    """The configured optimiser (Adam with the configured betas, or Adagrad) over `params`."""
    cfg = config.train
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2),
                                weight_decay=weight_decay)
    return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)


def train(config: Config, out_dir: str | Path, resume: bool = False, progress: bool = True
          ) -> dict[str, Any]:
    """Train per `config` into `out_dir` (continuing its checkpoint if `resume`).

    Example:
        >>> from ebgen.presets import preset_config
        >>> train(preset_config("tiny", steps=10), "runs/tiny")  # doctest: +SKIP
    """
    return Trainer(config, out_dir, resume=resume, progress=progress).fit()


def resume_config(out_dir: str | Path, **overrides: Any) -> Config:
    """The config saved in a checkpoint, with overrides (e.g. more `steps`) applied and checked
    as a fresh config's are."""
    return with_overrides(Config.from_dict(read_meta(out_dir)), **overrides)
