"""Spectral normalisation (Miyato et al. 2018, Algorithm 1) as a weight parametrization:
`W_SN = target * W / sigma(W)`, sigma estimated by power iteration, a conv kernel viewed as the
matrix `(out, in * kh * kw)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class SpectralNorm(nn.Module):
    """Parametrization `W -> target * W / sigma`, sigma = u^T W v from `n_iters` power iterations.

    `u` persists as a buffer, so checkpoints save it and DDP broadcasts it. In training mode each
    forward pass iterates and updates `u` in place; in eval mode `u` is left as it is. u and v are
    constants for autograd, so gradients flow through sigma's dependence on W only (d sigma / dW =
    u v^T), as in the paper.
    """

    def __init__(self, weight: torch.Tensor, n_iters: int = 1, target: float = 1.0, eps: float = 1e-12):
        super().__init__()
        self.n_iters, self.target, self.eps = n_iters, target, eps
        u = torch.randn(weight.shape[0], device=weight.device, dtype=torch.float32)
        self.register_buffer("u", F.normalize(u, dim=0, eps=eps))

    @torch.no_grad()
    def _vectors(self, w: torch.Tensor, iterate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, v) of the estimate u^T W v: after `n_iters` power iterations that update the stored u,
        or from u as stored. Copies, as autograd keeps them while the buffer changes."""
        u = self.u.clone()
        if not iterate:
            return u, F.normalize(torch.mv(w.t(), u), dim=0, eps=self.eps)
        for _ in range(self.n_iters):
            v = F.normalize(torch.mv(w.t(), u), dim=0, eps=self.eps)
            u = F.normalize(torch.mv(w, v), dim=0, eps=self.eps)
        self.u.copy_(u)
        return u, v

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            w = weight.flatten(1).float()  # fp32 even under autocast: sigma must be accurate
            u, v = self._vectors(w, iterate=self.training)
            sigma = torch.dot(u, torch.mv(w, v))
        return weight * (self.target / sigma).to(weight.dtype)

    @torch.no_grad()
    def sigma(self, weight: torch.Tensor) -> float:
        """The current estimate of the raw weight's largest singular value (no update)."""
        w = weight.flatten(1).float()
        u, v = self._vectors(w, iterate=False)
        return float(torch.dot(u, torch.mv(w, v)))


def spectral_norm(module: nn.Module, n_iters: int = 1, target: float = 1.0) -> nn.Module:
    """Spectrally normalise `module.weight` in place and return the module."""
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, n_iters, target))
    return module


def sn_layers(model: nn.Module) -> dict[str, SpectralNorm]:
    """Every SpectralNorm parametrization in `model`, keyed by the owning module's name."""
    return {name: p for name, module in model.named_modules() if parametrize.is_parametrized(module, "weight")
            for p in module.parametrizations.weight if isinstance(p, SpectralNorm)}


def raw_weight(module: nn.Module) -> torch.Tensor:
    """A layer's weight before any parametrization."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


@torch.no_grad()
def layer_sigmas(model: nn.Module) -> dict[str, float]:
    """The largest singular value of each conv/linear raw weight in `model`: for SN layers the
    power-iteration estimate they divide by (cheap), for others exact (an SVD, fine at logging intervals)."""
    sn = sn_layers(model)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = raw_weight(module).flatten(1).float()
            out[name] = sn[name].sigma(w) if name in sn else float(torch.linalg.matrix_norm(w, ord=2))
    return out
