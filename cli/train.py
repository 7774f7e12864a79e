"""`ebgen train`: wraps `ebgen.train.train`."""
from __future__ import annotations

import os

import click

from .options import device_option, seed_option


@click.command("train")
@click.option("--preset", default="toy2d", show_default=True, metavar="NAME",
              help="Starting config: tiny, toy2d, mnist, cifar10, celeba64.")
@click.option("--dataset", default=None, metavar="NAME",
              help="Built in: 8gaussians, 25gaussians, swissroll, unequal, anisotropic, "
                   "pinwheel, spirals, moons, faraway (2-D), shapes (images); or a format read "
                   "from --data: points, mnist, cifar10, images. (default: from preset; with "
                   "--data, guessed from the path)")
@click.option("--data", "path", default=None, metavar="PATH",
              help="Data file or folder: N×2 .npy/.csv (any location and scale), an MNIST IDX "
                   "folder, CIFAR-10 python batches, or a folder of PNG/JPEG images.")
@click.option("--exclude-class", "exclude_classes", type=int, multiple=True,
              help="Leave this label out of training (repeatable; labelled data only).")
@click.option("--steps", type=int, default=None, help="Training steps. (default: from preset)")
@click.option("--batch-size", type=int, default=None,
              help="Minibatch per process. (default: from preset)")
@click.option("--z-dim", type=int, default=None, help="Latent dimensions. (default: from preset)")
@click.option("--num-experts", type=int, default=None,
              help="Softplus experts in the energy. (default: from preset)")
@click.option("--image-size", type=int, default=None,
              help="Image side in px: 8, 16, 28, 32 or 64. (default: from preset)")
@click.option("--channels", type=int, default=None, help="1 (grey) or 3 (RGB). (default: from preset)")
@click.option("--latent", type=click.Choice(["uniform", "normal"]), default=None,
              help="Latent distribution. (default: uniform)")
@click.option("--objective", type=click.Choice(["ddgm", "gan"]), default=None,
              help="ddgm (energy + entropy, Kim & Bengio) or gan (same nets). (default: ddgm)")
@click.option("--optimizer", type=click.Choice(["adam", "adagrad"]), default=None,
              help="adam, or adagrad (the authors' choice). (default: adam)")
@click.option("--lr-energy", type=float, default=None, help="Energy learning rate. (default: from preset)")
@click.option("--lr-generator", type=float, default=None,
              help="Generator learning rate. (default: from preset)")
@click.option("--recipe", type=click.Choice(["default", "paper"]), default=None,
              help="default (ebgen's measured recipe) or paper (Kim & Bengio as published: "
                   "batch-norm entropy, no regularisers, constant rates). (default: default)")
@click.option("--entropy", type=click.Choice(["bn", "mi", "knn"]), default=None,
              help="Entropy estimate: bn (batch-norm scales), mi (mutual information, Kumar et "
                   "al. 2019) or knn (nearest neighbours, low-D only). (default: from preset)")
@click.option("--entropy-weight", type=float, default=None, help="Weight of H(G). (default: 1.0)")
@click.option("--gradient-penalty", type=float, default=None,
              help="R1 weight: ½‖∇E‖² at data points. (default: from preset)")
@click.option("--energy-magnitude", type=float, default=None,
              help="Weight of mean(E_data² + E_samples²). (default: 0)")
@click.option("--score-matching", type=float, default=None,
              help="Weight of denoising score matching of E at noisy data: shapes each energy "
                   "well (ddgm only). (default: from preset)")
@click.option("--score-matching-std", type=float, default=None,
              help="Noise std of --score-matching, in standardised units for points. "
                   "(default: 0.01)")
@click.option("--score-matching-share", type=float, default=None, metavar="SHARE",
              help="Share of the data batch (0–1] that --score-matching noises; only those rows "
                   "pay its double backward. (default: from preset)")
@click.option("--calibration", type=float, default=None,
              help="Weight of the data batch's importance-weighted likelihood: sets how deep "
                   "each energy well is (ddgm, low-D data only). (default: from preset)")
@click.option("--score-matching-kind", type=click.Choice(["denoising", "exact"]), default=None,
              help="denoising (noise of --score-matching-std) or exact (no noise; the "
                   "energy's Laplacian, low-D only). (default: denoising)")
@click.option("--likelihood", type=float, default=None,
              help="Weight of importance-sampled maximum likelihood with a known proposal around "
                   "the data batch: removes the energy's mass between and around the data "
                   "(ddgm, low-D data only). (default: from preset)")
@click.option("--calibrate-entropy", type=click.Choice(["bn", "mi", "knn"]), default=None,
              help="Entropy estimate from --calibrate-from on. (default: from preset)")
@click.option("--standardize/--no-standardize", default=None,
              help="Points: train the nets on the data standardised per dimension (the affine is "
                   "saved with the model; inputs and outputs stay in your units). (default: on)")
@click.option("--calibrate-from", type=float, default=None, metavar="SHARE",
              help="Share of --steps (0–1) after which --score-matching and --calibration take "
                   "over from --gradient-penalty; 0 runs all three throughout. "
                   "(default: from preset)")
@click.option("--lr-decay/--no-lr-decay", default=None,
              help="Decay learning rates linearly to 0. (default: from preset)")
@click.option("--num-components", type=int, default=None, metavar="K",
              help="Points: split the latent into K equal-weight components so samples can form "
                   "separate modes with no bridge between them; 0 = one connected latent. "
                   "(default: from preset)")
@click.option("--noise-std", type=float, default=None,
              help="Noise on generator hidden pre-activations. (default: 0.01)")
@seed_option(default=None)
@device_option(default=None)
@click.option("--out", default=None, metavar="DIR",
              help="Checkpoint directory. (default: runs/PRESET)")
@click.option("--resume", is_flag=True,
              help="Continue the checkpoint in --out (its saved config; --steps may extend it).")
@click.option("--sample-every", type=int, default=None, help="Steps between sample grids/plots.")
@click.option("--checkpoint-every", type=int, default=None, help="Steps between checkpoints.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(preset, resume, out, quiet, **fields) -> None:
    """Train the energy model and the generator together.

    \b
    Examples:
      ebgen train --preset tiny --out runs/tiny
      ebgen train --preset toy2d --dataset 8gaussians --out runs/ring
      ebgen train --preset toy2d --data points.npy --out runs/mine
      ebgen train --preset mnist --data ~/data/mnist --steps 200 --out runs/mnist
      ebgen train --out runs/ring --resume --steps 10000
      torchrun --nproc_per_node 2 $(which ebgen) train --preset tiny --out runs/ddp
    """
    from ebgen.config import preset_config
    from ebgen.train import resume_config, train

    out = out or f"runs/{preset}"
    fields["exclude_classes"] = list(fields["exclude_classes"]) or None
    if resume:
        config = resume_config(out, steps=fields["steps"], device=fields["device"],
                               sample_every=fields["sample_every"],
                               checkpoint_every=fields["checkpoint_every"])
    else:
        config = preset_config(preset, **fields)
    result = train(config, out, resume=resume, progress=not quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        click.echo(f"step {result['step']}: checkpoint in {out}")
