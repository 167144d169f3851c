"""GAN losses as pure functions of discriminator logits.

Each loss is a pair: `d(real_logits, fake_logits) -> scalar` for the discriminator and
`g(fake_logits) -> scalar` for the generator; both are minimised.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


class Loss(NamedTuple):
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]


def standard_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-E[log sigmoid(D(x))] - E[log(1 - sigmoid(D(G(z))))], via softplus for stability."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def standard_g(fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating: -E[log sigmoid(D(G(z)))]."""
    return F.softplus(-fake).mean()


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


def wasserstein_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[D(G(z))] - E[D(x)]: D estimates the Wasserstein-1 distance (needs a Lipschitz D:
    a gradient penalty, weight clipping or spectral norm)."""
    return fake.mean() - real.mean()


def wasserstein_g(fake: torch.Tensor) -> torch.Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


LOSSES: dict[str, Loss] = {
    "standard": Loss(standard_d, standard_g),
    "hinge": Loss(hinge_d, hinge_g),
    "wasserstein": Loss(wasserstein_d, wasserstein_g),
}


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's E[(|grad_x D(x_hat)|_2 - 1)^2], x_hat uniformly between paired real and fake images.

    `real`, `fake`: `(N, 3, H, W)`; returns a scalar with a graph (create_graph=True) so the
    penalty's gradient reaches D's weights.
    """
    eps = torch.rand(len(real), 1, 1, 1, device=real.device, generator=generator, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
