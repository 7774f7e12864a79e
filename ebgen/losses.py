"""The batch-norm entropy estimate and the training losses.

DDGM (Kim & Bengio 2016), per minibatch, generator step then energy step:
  L_G = mean E(G(z)) − H(G)                  (KL(p_G ‖ p_E) up to log Z)
  L_E = mean E(x_data) − mean E(G(z))        (max-likelihood gradient, negative phase from G)
H(G) treats each batch-normalised pre-activation as Gaussian with std |γ|:
  H ≈ Σ ½ log(2πe γ²), summed over every batch-norm scale of the generator.
The `gan` objective trains the same nets as a non-saturating GAN with logit = −E(x).
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .models import Generator

#: Keeps log γ² finite when a scale collapses to zero.
_EPS = 1e-8


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    """Differential entropy ½ log(2πe σ²) of N(·, σ²), elementwise, in nats."""
    return 0.5 * torch.log(2 * math.pi * math.e * (std.float() ** 2 + _EPS))


def batchnorm_entropy(generator: Generator) -> torch.Tensor:
    """H(G) ≈ Σ over all batch-norm scales γ of ½ log(2πe γ²) (a scalar tensor, in nats)."""
    terms = [gaussian_entropy(bn.weight).sum() for bn in generator.batch_norms()]
    return torch.stack(terms).sum()


def _kth_neighbour_dist2(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance from each row of `flat` (n, d) to its k-th nearest other row."""
    sq = flat.pow(2).sum(1)
    dist2 = (sq[:, None] + sq[None, :] - 2 * flat @ flat.T).clamp_min(1e-24)
    dist2 = dist2 + torch.eye(len(flat), device=flat.device) * dist2.max().detach() * 4
    return dist2.topk(k, dim=1, largest=False).values[:, -1]


def knn_log_density(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Kozachenko–Leonenko nearest-neighbour log-density of each sample of a batch (nats).

    log p(xᵢ) ≈ ψ(k) − ψ(n) − log V_d − d log ρᵢ, with ρᵢ the distance from sample i to its k-th
    nearest neighbour in the batch and V_d the volume of the unit d-ball. Differentiable in x.
    Suited to low-dimensional samples (2-D points), not to pixel space.
    """
    flat = x.flatten(1).float()
    n, d = flat.shape
    if not 1 <= k < n:
        raise ValueError(f"need 1 <= k < batch size, got k={k}, batch {n}")
    kth = _kth_neighbour_dist2(flat, k)
    harmonic = lambda m: sum(1.0 / i for i in range(1, m))  # ψ(m) + γ
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    return harmonic(k) - harmonic(n) - log_unit_ball - 0.5 * d * torch.log(kth)


def knn_entropy(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Kozachenko–Leonenko estimate of H = −mean log p(xᵢ) from a batch of samples (nats).

    Differentiable in x: its gradient pushes each sample away from its neighbours, at the scale
    of the samples' spread, so the generator's spread settles where the energy's pull balances
    it. Suited to low-dimensional outputs (2-D points); in pixel space prefer `bn` or `mi`.
    """
    return -knn_log_density(x, k).mean()


def importance_weights(energies: torch.Tensor, x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Self-normalised weights ∝ exp(−E(xᵢ)) / q(xᵢ) of a batch x drawn from q (no gradient).

    Σ wᵢ f(xᵢ) then estimates the mean of f under p_E ∝ exp(−E). q is estimated from the batch
    itself by `knn_log_density`, so this suits low-dimensional data only. Uniform when
    q ∝ exp(−E).
    """
    with torch.no_grad():
        log_w = -energies.float() - knn_log_density(x, k)
        # Truncated importance sampling: no sample may outweigh the √n-th heaviest, so at
        # least √n samples share the largest weight and one stray sample in a sparse region
        # cannot take the whole estimate.
        cap = log_w.topk(max(1, round(len(log_w) ** 0.5))).values[-1]
        return torch.softmax(log_w.clamp_max(cap), dim=0)


def calibration_loss(energy_data: torch.Tensor, x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Likelihood with the data batch as its own importance sampler: mean E(xᵢ) − Σ wᵢ E(xᵢ).

    With w from `importance_weights`, its gradient is the likelihood gradient restricted to
    where data lie: a well holding more of exp(−E)'s mass than the data's share (too deep) is
    raised, a too-shallow one lowered. Score matching fixes each well's shape but is blind to
    how deep separated wells are; this fixes their depths. Zero when exp(−E) ∝ p_data.
    """
    return energy_data.mean() - (importance_weights(energy_data, x, k) * energy_data).sum()


def kde_proposal(u: torch.Tensor, n: int, broad_std: float = 2.0, k: int = 3
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` points from a known density around a (standardised) data batch, and their log q.

    q = ½·KDE(batch; bandwidth h) + ½·N(0, broad_std²·I), with h twice the batch's median
    distance to its k-th neighbour: one half sits on the data, the other reaches everywhere an
    energy might hide mass (between and around the modes). No gradient. Low-D data only.
    """
    with torch.no_grad():
        u = u.flatten(1).float()
        m, d = u.shape
        sq = u.pow(2).sum(1)
        h = (2.0 * _kth_neighbour_dist2(u, min(k, m - 1)).sqrt().median()).clamp_min(1e-6)
        near = n // 2
        y = torch.cat([u[torch.randint(0, m, (near,), device=u.device)]
                       + h * torch.randn(near, d, device=u.device),
                       broad_std * torch.randn(n - near, d, device=u.device)])
        y_sq = y.pow(2).sum(1)
        to_data = (y_sq[:, None] + sq[None, :] - 2 * y @ u.T).clamp_min(0)
        log_norm = lambda std: -0.5 * d * math.log(2 * math.pi * std ** 2)
        log_kde = torch.logsumexp(-0.5 * to_data / h ** 2, dim=1) - math.log(m) \
            + log_norm(float(h))
        log_broad = -0.5 * y_sq / broad_std ** 2 + log_norm(broad_std)
        log_q = torch.logaddexp(log_kde, log_broad) - math.log(2)
    return y, log_q


def likelihood_loss(energy_data: torch.Tensor, energy_proposal: torch.Tensor,
                    log_q: torch.Tensor) -> torch.Tensor:
    """Importance-sampled maximum likelihood: mean E(x_data) − Σ wⱼ E(yⱼ), wⱼ ∝ exp(−E(yⱼ))/q(yⱼ).

    With y from a known density q (`kde_proposal`) its gradient is the exact likelihood
    gradient up to the estimate's noise: wherever exp(−E) holds more mass than the data —
    between modes, around them — the weights are large and E is raised there. The weights are
    truncated as in `importance_weights` (no sample above the √n-th heaviest).
    """
    with torch.no_grad():
        log_w = -energy_proposal.float() - log_q
        cap = log_w.topk(max(1, round(len(log_w) ** 0.5))).values[-1]
        w = torch.softmax(log_w.clamp_max(cap), dim=0)
    return energy_data.mean() - (w * energy_proposal).sum()


def energy_loss(energy_data: torch.Tensor, energy_samples: torch.Tensor) -> torch.Tensor:
    """DDGM energy loss: push data energy down and sample energy up."""
    return energy_data.mean() - energy_samples.mean()


def generator_loss(energy_samples: torch.Tensor, entropy: torch.Tensor,
                   entropy_weight: float = 1.0) -> torch.Tensor:
    """DDGM generator loss: low-energy samples, high entropy."""
    return energy_samples.mean() - entropy_weight * entropy


def gan_discriminator_loss(energy_data: torch.Tensor, energy_samples: torch.Tensor
                           ) -> torch.Tensor:
    """GAN loss of the energy as a discriminator with logit −E: real → low E, fake → high E."""
    return F.softplus(energy_data).mean() + F.softplus(-energy_samples).mean()


def gan_generator_loss(energy_samples: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN generator loss: −log σ(−E(G(z)))."""
    return F.softplus(energy_samples).mean()


def input_gradients(energies: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """∇ₓE for every row of `inputs` (which must require grad), kept differentiable.

    Rows are independent (the energy has no batch norm), so one backward pass of the summed
    energies gives each row its own gradient; `create_graph` lets penalties on it train E.
    """
    (grad,) = torch.autograd.grad(energies.sum(), inputs, create_graph=True)
    return grad


def gradient_penalty(grad_data: torch.Tensor) -> torch.Tensor:
    """R1, zero-centred: ½ mean ‖∇ₓE(x)‖² over data rows (`grad_data` from `input_gradients`)."""
    return 0.5 * grad_data.flatten(1).pow(2).sum(1).mean()


def score_matching(grad_noisy: torch.Tensor, noise: torch.Tensor, std: float | torch.Tensor
                   ) -> torch.Tensor:
    """Denoising score matching (Vincent 2011) of E at x̃ = x + std·ε, scaled by std².

    ½ mean ‖std·∇E(x̃) − ε‖²: minimised when ∇E is the score of the data smoothed by N(0, std²).
    It shapes each energy well (its width) where the contrastive DDGM term only fixes where the
    wells are; being local, it cannot tell how deep separated wells are (`calibration_loss`).

    `std` may hold one value per row (multi-scale noise): each row's term is then scaled by its
    own std², the weighting that gives every noise level a like share (Song & Ermon 2019).
    """
    return 0.5 * (std * grad_noisy - noise).flatten(1).pow(2).sum(1).mean()


def exact_score_matching(grad_u: torch.Tensor, inputs: torch.Tensor, scale: torch.Tensor | float,
                         rows: int | torch.Tensor, std: float) -> torch.Tensor:
    """Score matching without noise (Hyvärinen 2005) on the last `rows` rows (or the rows
    `rows` indexes), scaled by std².

    std² · mean(½‖∇ᵤE‖² − Δᵤ E) in the standardised coordinates u: minimised when −∇E is the
    data's own score, so the wells get the data's width (denoising score matching fits the
    data smoothed by its noise: wells wider by √(σ² + std²)/σ). The Laplacian costs one more
    backward pass per dimension: for low-D data. The std² factor makes a weight mean what it
    means for `score_matching` (which is std² times this, plus a constant, for small std).
    `grad_u` is `input_gradients(...) · scale` over all of `inputs`.
    """
    pick = slice(-rows, None) if isinstance(rows, int) else rows
    laplacian = 0.0
    scale = torch.as_tensor(scale, device=inputs.device).expand(grad_u.shape[1])
    for d in range(grad_u.shape[1]):
        (second,) = torch.autograd.grad(grad_u[:, d].sum(), inputs, create_graph=True)
        laplacian = laplacian + scale[d] * second[pick, d]
    g = grad_u[pick]
    return std ** 2 * (0.5 * g.pow(2).sum(1) - laplacian).mean()
