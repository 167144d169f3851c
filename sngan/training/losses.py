"""GAN losses as pure functions of D's logits, both minimised: `d(real, fake)` and `g(fake)` -> scalar.
The WGAN baselines add what keeps D Lipschitz besides spectral norm: a gradient penalty or weight clipping.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from sngan.config import LossConfig


class Loss(NamedTuple):
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]
    takes_penalty: bool = False  # WGAN-GP's gradient penalty (loss.gp_weight) applies to it


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
    """-E[D(G(z))]: G's loss under both hinge and Wasserstein."""
    return -fake.mean()


def wasserstein_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[D(G(z))] - E[D(x)]: D estimates the Wasserstein-1 distance (when it is Lipschitz)."""
    return fake.mean() - real.mean()


wasserstein_g = hinge_g

LOSSES: dict[str, Loss] = {
    "standard": Loss(standard_d, standard_g),
    "hinge": Loss(hinge_d, hinge_g),
    "wasserstein": Loss(wasserstein_d, wasserstein_g, takes_penalty=True),
}


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's E[(|grad_x D(x_hat)|_2 - 1)^2], x_hat uniformly between paired real and fake images.

    `D`: images -> logits (a conditional D with the labels bound); `real`, `fake`: `(N, 3, H, W)`.
    Returns a scalar with a graph (create_graph=True) so the penalty's gradient reaches D's weights.
    """
    eps = torch.rand(len(real), 1, 1, 1, device=real.device, generator=generator, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class Objective:
    """The configured loss with its Lipschitz devices: `d` adds the gradient penalty when the loss
    takes one, and `after_d_step` clips D's weights when `loss.clip` is set."""

    def __init__(self, cfg: LossConfig):
        self.loss = LOSSES[cfg.name]
        self.g = self.loss.g
        self.gp_weight = cfg.gp_weight if self.loss.takes_penalty else 0.0
        self.clip = cfg.clip

    @classmethod
    def from_config(cls, cfg: LossConfig) -> Objective:
        return cls(cfg)

    def d(self, D, real: torch.Tensor, fake: torch.Tensor, d_real: torch.Tensor, d_fake: torch.Tensor,
          generator: torch.Generator | None = None) -> torch.Tensor:
        """D's loss from its logits on `real` and `fake` (images `(N, 3, H, W)`), penalty included."""
        loss = self.loss.d(d_real, d_fake)
        if self.gp_weight:
            loss = loss + self.gp_weight * gradient_penalty(D, real, fake, generator)
        return loss

    @torch.no_grad()
    def after_d_step(self, D: torch.nn.Module) -> None:
        """The original WGAN's weight clipping of D's parameters to [-clip, clip]."""
        if self.clip:
            for p in D.parameters():
                p.clamp_(-self.clip, self.clip)
