"""Spectral normalisation (Miyato et al. 2018, Algorithm 1) as a weight parametrization.

`W_SN = target * W / sigma(W)`, where sigma is estimated by power iteration on a persistent
vector `u` (a buffer, so it is saved in checkpoints and broadcast by DDP). A conv kernel is
treated as the matrix `(out, in * kh * kw)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class SpectralNorm(nn.Module):
    """Parametrization `W -> target * W / sigma`, sigma = u^T W v from `n_iters` power iterations.

    In training mode each forward pass runs the power iteration and updates `u` in place; in
    eval mode `u` is left as it is. u and v are constants for autograd, so gradients flow
    through sigma's dependence on W only (d sigma / dW = u v^T), as in the paper.
    """

    def __init__(self, weight: torch.Tensor, n_iters: int = 1, target: float = 1.0, eps: float = 1e-12):
        super().__init__()
        self.n_iters, self.target, self.eps = n_iters, target, eps
        u = torch.randn(weight.shape[0], device=weight.device, dtype=torch.float32)
        self.register_buffer("u", F.normalize(u, dim=0, eps=eps))

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.flatten(1).float()  # fp32 even under autocast: sigma must be accurate

    @torch.no_grad()
    def _power_iteration(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.u
        for _ in range(self.n_iters):
            v = F.normalize(torch.mv(w.t(), u), dim=0, eps=self.eps)
            u = F.normalize(torch.mv(w, v), dim=0, eps=self.eps)
        self.u.copy_(u)
        return u, v

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            w = self._matrix(weight)
            if self.training:
                u, v = self._power_iteration(w.detach())
                u, v = u.clone(), v.clone()  # the buffer changes again next step; autograd keeps these
            else:
                with torch.no_grad():
                    u = self.u.clone()
                    v = F.normalize(torch.mv(w.t(), u), dim=0, eps=self.eps)
            sigma = torch.dot(u, torch.mv(w, v))
        return weight * (self.target / sigma).to(weight.dtype)

    @torch.no_grad()
    def sigma(self, weight: torch.Tensor) -> float:
        """The current estimate of the raw weight's largest singular value (no update)."""
        w = self._matrix(weight)
        v = F.normalize(torch.mv(w.t(), self.u), dim=0, eps=self.eps)
        return float(torch.dot(self.u, torch.mv(w, v)))


def spectral_norm(module: nn.Module, n_iters: int = 1, target: float = 1.0) -> nn.Module:
    """Spectrally normalise `module.weight` in place and return the module."""
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, n_iters, target))
    return module


def sn_layers(model: nn.Module) -> dict[str, SpectralNorm]:
    """Every SpectralNorm parametrization in `model`, keyed by the owning module's name."""
    found = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, SpectralNorm):
                    found[name] = p
    return found


def raw_weight(module: nn.Module) -> torch.Tensor:
    """A layer's weight before any parametrization."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


@torch.no_grad()
def layer_sigmas(model: nn.Module) -> dict[str, float]:
    """The largest singular value of each conv/linear raw weight in `model`.

    For SN layers this is the power-iteration estimate the layer divides by (cheap); for other
    layers it is exact (an SVD), which is affordable at logging intervals.
    """
    sn = sn_layers(model)
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        w = raw_weight(module)
        if name in sn:
            out[name] = sn[name].sigma(w)
        else:
            out[name] = float(torch.linalg.matrix_norm(w.flatten(1).float(), ord=2))
    return out
