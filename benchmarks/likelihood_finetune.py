"""Does a trained image energy gain likelihood from persistent Langevin chains? A probe.

The contrast with the generator's samples never asks the experts for likelihood: they lower
the energy wherever the features are large, and piecewise-linear features grow with the
distance from the data. This fine-tunes the energy of checkpoint RUN (the generator untouched)
by stochastic maximum likelihood: the negatives are persistent Metropolis-adjusted Langevin
chains on exp(−E) in the base-whitened coordinates that AIS uses (`ebgen.export.partition`),
started at the generator's samples (`--restart` of them redrawn each update), against the
dequantised training digits. Optionally it refits the data base at a tighter `--floor` and
adds `--quadratic K` fresh quadratic experts (+½Σ(uᵀf + d)², which can raise the energy off
the data, where softplus experts cannot); R1 at the data (or a penalty on the energies'
spread) keeps the chains' energies finite. Then it exports with log Z (AIS) and prints
`ebgen eval --anomaly`'s figures: bits/dim (forward and reverse log Z), the corruption AUROCs
and the sample figures (the generator's samples do not change).

    python benchmarks/likelihood_finetune.py RUN --data MNIST_DIR
    python benchmarks/likelihood_finetune.py RUN --data MNIST_DIR --quadratic 64 --updates 3000
    python benchmarks/likelihood_finetune.py RUN --updates 0      # the checkpoint as it is
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from density_floor import load_image_run, refit_floor, report_with_log_z  # noqa: E402


def expert_profile(energy, target, scale, digits) -> str:
    """The experts' net contribution, base(x) − E(x) (nats), averaged at the digits, at the
    digits plus Gaussian noise, and at samples of the base alone: where they lower E most."""
    import torch

    def lowered(x: torch.Tensor) -> float:
        with torch.no_grad():
            u = energy.affine.standardise(x).flatten(1).double()
            base = 0.5 * ((u - target.mean.double()) / scale.double()).pow(2).sum(1)
            return float((base - energy(x).double()).mean())

    noise = torch.Generator().manual_seed(1)
    points = {"digits": digits}
    for sd in (0.3, 1.0):
        points[f"digits + N(0, {sd:g}²)"] = digits + sd * torch.randn(digits.shape,
                                                                    generator=noise)
    v = torch.randn(len(digits), target.dim, generator=noise)
    points["base samples"] = (target.mean + v * scale).view(digits.shape)
    return ", ".join(f"{name} {lowered(x):.0f}" for name, x in points.items())


def finetune(run: str, out: Path, data: str | None, args: argparse.Namespace) -> None:
    """Fine-tune RUN's energy by persistent-chain maximum likelihood; write checkpoint `out`."""
    import numpy as np
    import torch

    from ebgen.checkpoint import save_checkpoint
    from ebgen.export.partition import WhitenedEnergy, adapt_step_size, mala_step
    from ebgen.latents import sample_latents
    from ebgen.metrics.likelihood import dequantise
    from ebgen.models import EnergyModel

    torch.manual_seed(args.seed)
    config, energy, generator, meta, train, _ = load_image_run(run, data)
    if args.floor is not None:  # the base refitted to the training digits at a new floor
        refit_floor(config, energy, train, args.floor)
    if args.quadratic:
        config.model.quadratic_experts = args.quadratic
        grown = EnergyModel(config.model)
        grown.load_state_dict(energy.state_dict(), strict=False)  # all but the new layer
        energy = grown.eval()
    target = WhitenedEnergy(energy)
    scale = torch.diagonal(target.scale_t).clone()  # the data base is diagonal
    rng, noise = np.random.default_rng(args.seed), torch.Generator().manual_seed(args.seed)

    def generated(n: int) -> torch.Tensor:  # whitened coordinates of generator samples
        z = torch.from_numpy(sample_latents(n, config.model.z_dim, seed=rng,
                                            distribution=config.model.latent))
        with torch.no_grad():
            u = energy.affine.standardise(generator(z)).flatten(1)
        return (u - target.mean) / scale

    probe = train.batch(torch.arange(min(len(train), 500)))
    print(f"base(x) − E(x) before: {expert_profile(energy, target, scale, probe)}", flush=True)
    v = generated(args.batch)
    step = torch.full((args.batch,), 0.5 / math.sqrt(target.dim))
    new = [p for n, p in energy.named_parameters() if n.startswith("quadratic")]
    old = [p for n, p in energy.named_parameters() if not n.startswith("quadratic")]
    optimizer = torch.optim.Adam([{"params": old}, {"params": new, "lr": args.quadratic_lr}],
                                 lr=args.lr, betas=(0.5, 0.999))
    started = time.perf_counter()
    for update in range(1, args.updates + 1):
        with torch.no_grad():
            g_v, grad_g = target.g(v, grad=True)
            for _ in range(args.chain_steps):
                v, g_v, grad_g, accept = mala_step(target, v, g_v, grad_g, 1.0, step, noise)
                step = adapt_step_size(step, accept)
        negatives = energy.affine.restore((target.mean + v * scale).view(len(v), *target.shape))
        digits = train.batch(torch.from_numpy(rng.integers(0, len(train), args.batch)))
        x = torch.from_numpy(dequantise(digits.numpy(), rng)[0]).float()  # as eval scores them
        x.requires_grad_(args.gradient_penalty > 0)
        energy_data, energy_chains = energy(x), energy(negatives)
        loss = energy_data.mean() - energy_chains.mean()
        if args.gradient_penalty > 0:
            (grad,) = torch.autograd.grad(energy_data.sum(), x, create_graph=True)
            loss = loss + args.gradient_penalty * grad.flatten(1).pow(2).sum(1).mean()
        if args.spread_penalty > 0:
            loss = loss + args.spread_penalty * (energy_data.var(unbiased=False)
                                                 + energy_chains.var(unbiased=False))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        restart = int(rng.binomial(args.batch, args.restart))
        if restart:
            which = torch.from_numpy(rng.choice(args.batch, restart, replace=False))
            v[which], step[which] = generated(restart), step.median()
        if update % 250 == 0:
            print(f"update {update}: {time.perf_counter() - started:.0f} s, E(data) "
                  f"{energy_data.mean():.1f}, E(chains) {energy_chains.mean():.1f}, chain radius "
                  f"{v.norm(dim=1).mean() / math.sqrt(target.dim):.2f} (whitened)", flush=True)
    print(f"base(x) − E(x) after: {expert_profile(energy, target, scale, probe)}", flush=True)
    save_checkpoint(out, config, energy, generator, meta.get("step", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a training checkpoint of an image model (data base)")
    parser.add_argument("--data", default=None, help="its data, where not where it trained")
    parser.add_argument("--floor", type=float, default=None,
                        help="refit the data base at this variance floor first")
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--chain-steps", type=int, default=10, help="MALA moves per update")
    parser.add_argument("--batch", type=int, default=64, help="chains, and digits per update")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--quadratic", type=int, default=0, help="fresh quadratic experts")
    parser.add_argument("--quadratic-lr", type=float, default=1e-3)
    parser.add_argument("--gradient-penalty", type=float, default=0.1, help="R1 at the data")
    parser.add_argument("--spread-penalty", type=float, default=0.0,
                        help="weight on the variance of the data's and the chains' energies")
    parser.add_argument("--restart", type=float, default=0.05,
                        help="share of chains redrawn from the generator each update")
    parser.add_argument("--chains", type=int, default=64, help="AIS chains")
    parser.add_argument("--temperatures", type=int, default=3000, help="AIS temperatures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = Path(scratch) / "checkpoint"
        finetune(args.run, checkpoint, args.data, args)
        report = report_with_log_z(checkpoint, Path(scratch), args.data, args.chains,
                                   args.temperatures)
    like, auroc = report["likelihood"], report["anomaly"]["energy"]
    print(json.dumps({
        "bits_per_dim": round(like["bits_per_dim"], 3),
        "bits_per_dim_reverse_log_z": round(like["bits_per_dim_reverse_log_z"], 3),
        "diagonal_gaussian": round(like["bits_per_dim_diagonal_gaussian"], 3),
        "ppca50": round(like["bits_per_dim_ppca50"], 3),
        "auroc": {k: round(auroc[k], 4) for k in ("noise", "blur", "inverted", "shifted")},
        # the digit classifier's figures (28×28 grey models only; other sizes have none)
        "confident_share": report.get("confident_share"),
        "frechet_distance": report.get("frechet_distance")}))


if __name__ == "__main__":
    main()
