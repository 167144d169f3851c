"""The layers the paper's networks are built from: D's normalisation choice (`Norm`), and the
ResNet's residual blocks, G's up-sampling `GBlock` (with conditional BatchNorm when it has classes)
and D's `DBlock`. Feature maps are `(N, C, H, W)`.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from sngan.spectral_norm import spectral_norm


class Norm:
    """Wraps D's layers according to the chosen normalisation."""

    def __init__(self, kind: str, n_iters: int, target: float):
        self.kind, self.n_iters, self.target = kind, n_iters, target

    def layer(self, module: nn.Module) -> nn.Module:
        return spectral_norm(module, self.n_iters, self.target) if self.kind == "sn" else module

    def bn(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels) if self.kind == "bn" else nn.Identity()


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine, then a gain and bias of each image's class `y`:
    `gain[y] * x_hat + bias[y]`, starting as the identity (gains 1, biases 0)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain, self.bias = nn.Embedding(num_classes, channels), nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


def _g_norm(channels: int, num_classes: int) -> nn.Module:
    return ConditionalBatchNorm2d(channels, num_classes) if num_classes else nn.BatchNorm2d(channels)


def _apply_norm(norm: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return norm(x, y) if isinstance(norm, ConditionalBatchNorm2d) else norm(x)


class GBlock(nn.Module):
    """BN-ReLU-up-conv3x3-BN-ReLU-conv3x3, shortcut up + conv1x1; conditional BN with classes."""

    def __init__(self, c_in: int, c_out: int, num_classes: int = 0):
        super().__init__()
        self.bn1, self.conv1 = _g_norm(c_in, num_classes), nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.bn2, self.conv2 = _g_norm(c_out, num_classes), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, 1, 0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = F.interpolate(F.relu(_apply_norm(self.bn1, x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(_apply_norm(self.bn2, self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """ReLU-conv3x3-ReLU-conv3x3 [-avgpool]; shortcut conv1x1 [-avgpool] when shape changes.

    As in the official code, the hidden width (conv1's output) is the block's input width.
    `first=True` is the paper's "optimized" first block: conv-ReLU-conv-avgpool, hidden width
    c_out, with the shortcut avgpool-conv1x1 (no ReLU on the raw image).
    """

    def __init__(self, c_in: int, c_out: int, norm: Norm, down: bool, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        hidden = c_out if first else c_in
        self.bn1 = nn.Identity() if first else norm.bn(c_in)
        self.conv1 = norm.layer(nn.Conv2d(c_in, hidden, 3, 1, 1))
        self.bn2 = norm.bn(hidden)
        self.conv2 = norm.layer(nn.Conv2d(hidden, c_out, 3, 1, 1))
        self.learnable_sc = first or down or c_in != c_out
        if self.learnable_sc:
            self.shortcut = norm.layer(nn.Conv2d(c_in, c_out, 1, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(self.bn1(x))
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if not self.learnable_sc:
            return h + x
        if self.first:  # pool first: the 1x1 conv then runs on 4x fewer pixels, same result
            return h + self.shortcut(F.avg_pool2d(x, 2))
        sc = self.shortcut(x)
        return h + (F.avg_pool2d(sc, 2) if self.down else sc)
