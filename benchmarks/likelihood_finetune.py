"""Does a trained image energy gain likelihood from persistent Langevin chains? A probe.

The contrast with the generator's samples never asks the experts for likelihood: they lower
the energy wherever the features are large, and piecewise-linear features grow with the
distance from the data. This runs `ebgen fit-density`'s refit (`ebgen.train.density`: the
energy alone by stochastic maximum likelihood, persistent Metropolis-adjusted Langevin chains
on exp(−E) as negatives) on checkpoint RUN, optionally with `--quadratic K` fresh quadratic
experts (+½Σ(uᵀf + d)², which can raise the energy off the data, where softplus experts
cannot), and prints where the experts lower the energy (base(x) − E(x) at the digits, at
noisy digits and at base samples) before and after. Then it exports with log Z (AIS) and
prints `ebgen eval --anomaly`'s figures: bits/dim (forward and reverse log Z), the baselines,
the corruption AUROCs and the sample figures (the generator's samples do not change).

    python benchmarks/likelihood_finetune.py RUN --data MNIST_DIR
    python benchmarks/likelihood_finetune.py RUN --data MNIST_DIR --base covariance --floor 1e-3
    python benchmarks/likelihood_finetune.py RUN --data MNIST_DIR --no-reset-experts \
        --floor 0.05 --quadratic 64
    python benchmarks/likelihood_finetune.py RUN --updates 0      # the base alone
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from density_floor import load_image_run, report_with_log_z  # noqa: E402


def expert_profile(energy, digits) -> str:
    """The experts' net contribution, base(x) − E(x) (nats), averaged at the digits, at the
    digits plus Gaussian noise, and at samples of the base alone: where they lower E most."""
    import torch

    from ebgen.whitened import WhitenedEnergy

    target = WhitenedEnergy(energy)

    def lowered(x: torch.Tensor) -> float:
        with torch.no_grad():
            base = target.base_energy(energy.affine.standardise(x)).double()
            return float((base - energy(x).double()).mean())

    noise = torch.Generator().manual_seed(1)
    points = {"digits": digits}
    for sd in (0.3, 1.0):
        points[f"digits + N(0, {sd:g}²)"] = digits + sd * torch.randn(digits.shape,
                                                                    generator=noise)
    v = torch.randn(len(digits), target.dim, generator=noise)
    points["base samples"] = target.inputs(v)
    return "; ".join(f"{name} {lowered(x):.0f}" for name, x in points.items())


def finetune(run: str, out: Path, data: str | None, args: argparse.Namespace) -> None:
    """Refit RUN's energy for likelihood (`ebgen.train.density.refit_energy`); write
    checkpoint `out`."""
    import torch

    from ebgen.checkpoint import save_checkpoint
    from ebgen.density_fit import DensityFit
    from ebgen.models import EnergyModel
    from ebgen.train.density import refit_energy

    config, energy, generator, meta, train, _ = load_image_run(run, data)
    probe = train.batch(torch.arange(min(len(train), 500)))
    print(f"base(x) − E(x) before: {expert_profile(energy, probe)}", flush=True)
    if args.quadratic:
        config.model.quadratic_experts = args.quadratic
        grown = EnergyModel(config.model)
        grown.load_state_dict(energy.state_dict(), strict=False)  # all but the new layer
        energy = grown.eval()
    fit = DensityFit(updates=args.updates, base=args.base, floor=args.floor,
                     reset_experts=args.reset_experts, lr=args.lr, chains=args.batch,
                     chain_steps=args.chain_steps, restart=args.restart,
                     gradient_penalty=args.gradient_penalty, seed=args.seed)

    def report(update: int, figures: dict) -> None:
        if update % 250 == 0:
            print(f"update {update}: {figures['seconds']:.0f} s, E(data) "
                  f"{figures['energy_data']:.1f}, E(chains) {figures['energy_chains']:.1f}, "
                  f"chain radius {figures['chain_radius']:.2f} (whitened)", flush=True)

    energy = refit_energy(config, energy, train, fit, report)
    print(f"base(x) − E(x) after: {expert_profile(energy, probe)}", flush=True)
    save_checkpoint(out, config, energy, generator, meta.get("step", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a training checkpoint of an image model (data base)")
    parser.add_argument("--data", default=None, help="its data, where not where it trained")
    parser.add_argument("--base", choices=("data", "covariance"), default=None,
                        help="refit the base as this kind (default: the run's)")
    parser.add_argument("--floor", type=float, default=1e-4,
                        help="the refitted base's variance floor")
    parser.add_argument("--no-reset-experts", dest="reset_experts", action="store_false",
                        help="keep the trained experts (default: zero their weights first)")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--chain-steps", type=int, default=10, help="MALA moves per update")
    parser.add_argument("--batch", type=int, default=64, help="chains, and digits per update")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--quadratic", type=int, default=0, help="fresh quadratic experts")
    parser.add_argument("--gradient-penalty", type=float, default=0.1,
                        help="R1 of the experts at the data")
    parser.add_argument("--restart", type=float, default=0.05,
                        help="share of chains redrawn from the base each update")
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
