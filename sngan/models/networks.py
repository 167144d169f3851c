"""The paper's generators and discriminators, the standard CNN ("dcgan", Table 3) and the ResNet (Tables 4
and 5), at 32 px (CIFAR-10) and 48 px (STL-10); images are `(N, 3, R, R)` in `[-1, 1]`, D's logits `(N,)`.
All take labels `y` `(N,)` as an optional second argument: only the class-conditional ResNet needs them."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from sngan.config import CHOICES, ModelConfig, check_resolution
from sngan.models.spectral_norm import raw_weight, spectral_norm

D_NORMS = CHOICES["d_norms"]

# Paper widths as multiples of the base width (g_ch / d_ch) and the paper's base widths.
DCGAN_D_WIDTHS = {"paper": (1, 1, 2, 2, 4, 4, 8), "official": (1, 2, 2, 4, 4, 8, 8)}
DCGAN_D_SLOPE = {"paper": 0.1, "official": 0.2}
DEFAULT_CH = {  # arch -> resolution layout -> (g_ch, d_ch)
    "dcgan": {"any": (64, 64)},
    "resnet": {32: (256, 128), 48: (64, 64)},
}


class Norm(NamedTuple):
    """Wraps D's layers according to the chosen normalisation (G always uses BatchNorm, as in the paper)."""

    kind: str  # D_NORMS
    n_iters: int
    target: float

    def layer(self, module: nn.Module) -> nn.Module:
        return spectral_norm(module, self.n_iters, self.target) if self.kind == "sn" else module

    def bn(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels) if self.kind == "bn" else nn.Identity()


class DCGANGenerator(nn.Module):
    """z `(N, z_dim)` -> dense M x M x 8ch, BN, ReLU -> 3 x [deconv 4x4 s2, BN, ReLU] -> conv 3x3 -> tanh.

    `dense_bn="feature"` normalises each of the dense layer's outputs on its own (the official
    code's BatchNormalization over M*M*8ch features), `"channel"` each channel over its M x M
    positions. With `channel`, the official initialisation and the two time-scale Adam,
    G collapsed early on real images; with `feature` it did not (docs/results.md)."""

    def __init__(self, z_dim: int, resolution: int, ch: int, dense_bn: str = "feature"):
        super().__init__()
        self.shape = (8 * ch, resolution // 8, resolution // 8)  # of the dense layer's output
        self.fc = nn.Linear(z_dim, math.prod(self.shape))
        self.fc_bn = nn.BatchNorm1d(math.prod(self.shape)) if dense_bn == "feature" else nn.Identity()
        layers = [nn.BatchNorm2d(8 * ch) if dense_bn == "channel" else nn.Identity(), nn.ReLU()]
        for c_in, c_out in ((8 * ch, 4 * ch), (4 * ch, 2 * ch), (2 * ch, ch)):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.Conv2d(ch, 3, 3, 1, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(self.fc_bn(self.fc(z)).view(-1, *self.shape))


class DCGANDiscriminator(nn.Module):
    """x `(N, 3, R, R)` -> 7 convs (3x3 s1 / 4x4 s2 alternating), LeakyReLU -> dense -> logit."""

    def __init__(self, resolution: int, ch: int, norm: Norm, variant: str = "paper", slope: float = 0.0):
        super().__init__()
        slope = slope or DCGAN_D_SLOPE[variant]
        layers, c_in = [], 3
        for i, c_out in enumerate(m * ch for m in DCGAN_D_WIDTHS[variant]):
            k, s = (3, 1) if i % 2 == 0 else (4, 2)
            layers.append(norm.layer(nn.Conv2d(c_in, c_out, k, s, 1)))
            if i > 0:
                layers.append(norm.bn(c_out))
            layers.append(nn.LeakyReLU(slope))
            c_in = c_out
        self.main = nn.Sequential(*layers)
        self.fc = norm.layer(nn.Linear((resolution // 8) ** 2 * c_in, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.main(x).flatten(1)).squeeze(1)


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


def _need_labels(y: torch.Tensor | None, num_classes: int) -> None:
    if num_classes and y is None:
        raise ValueError(f"this model is class-conditional ({num_classes} classes): pass labels y")


class ResNetGenerator(nn.Module):
    """z -> dense M x M x C -> 3 up-blocks -> BN, ReLU, conv3x3 -> tanh. With `num_classes`, the
    blocks' BatchNorms are conditional on y; the last one is not, as in the official code."""

    def __init__(self, z_dim: int, resolution: int, widths: list[int], num_classes: int = 0):
        super().__init__()
        self.shape, self.num_classes = (widths[0], resolution // 8, resolution // 8), num_classes
        self.fc = nn.Linear(z_dim, math.prod(self.shape))
        self.blocks = nn.ModuleList([GBlock(a, b, num_classes) for a, b in zip(widths[:-1], widths[1:])])
        self.bn = nn.BatchNorm2d(widths[-1])
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        _need_labels(y, self.num_classes)
        h = self.fc(z).view(-1, *self.shape)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.to_rgb(F.relu(self.bn(h))))


class ResNetDiscriminator(nn.Module):
    """x -> optimized block -> blocks -> ReLU -> global sum pool h -> dense -> logit. With
    `num_classes`, the projection discriminator: the logit gains `<embed(y), h>`, the embedding
    normalised like the other layers (under SN, as in the official code)."""

    def __init__(self, widths: list[int], downs: list[bool], norm: Norm, fc_bias: bool = True,
                 num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        c_ins = [3, *widths[:-1]]
        self.blocks = nn.Sequential(*[DBlock(c_ins[i], widths[i], norm, downs[i], first=i == 0)
                                      for i in range(len(widths))])
        self.bn = norm.bn(widths[-1])
        self.fc = norm.layer(nn.Linear(widths[-1], 1, bias=fc_bias))
        if num_classes:
            self.embed = norm.layer(nn.Embedding(num_classes, widths[-1]))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        _need_labels(y, self.num_classes)
        h = F.relu(self.bn(self.blocks(x))).sum(dim=(2, 3))
        out = self.fc(h).squeeze(1)
        return out + (self.embed(y) * h).sum(1) if self.num_classes else out


# ---------------------------------------------------------------------------------------------
# Registry


def _dcgan(cfg: ModelConfig, resolution: int, g_ch: int, d_ch: int, norm: Norm, num_classes: int):
    return (DCGANGenerator(cfg.z_dim, resolution, g_ch, cfg.g_dense_bn),
            DCGANDiscriminator(resolution, d_ch, norm, cfg.dcgan_d, cfg.d_slope))


def _resnet(cfg: ModelConfig, resolution: int, g_ch: int, d_ch: int, norm: Norm, num_classes: int):
    if resolution <= 32:  # Table 4: G 256 everywhere; D 128 everywhere, two down, two plain
        g_widths, d_widths, downs = [g_ch] * 4, [d_ch] * 4, [True, True, False, False]
    else:  # Table 5: G 512 -> 256 -> 128 -> 64; D 64, 128, 256, 512 (down), 1024 (plain)
        g_widths = [8 * g_ch, 4 * g_ch, 2 * g_ch, g_ch]
        d_widths, downs = [d_ch, 2 * d_ch, 4 * d_ch, 8 * d_ch, 16 * d_ch], [True] * 4 + [False]
    # The official 32 px D's last linear has no bias; the 48 px one has.
    D = ResNetDiscriminator(d_widths, downs, norm, fc_bias=resolution > 32, num_classes=num_classes)
    return ResNetGenerator(cfg.z_dim, resolution, g_widths, num_classes), D


def _init_dcgan(module: nn.Module) -> None:
    """The official standard CNN's initialisation: weights N(0, 0.02), biases zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(raw_weight(m), 0.0, 0.02)
            nn.init.zeros_(m.bias)


def _init_resnet(module: nn.Module) -> None:
    """The official ResNet's initialisation: Glorot-uniform with gain sqrt(2) on the convs inside
    residual paths, gain 1 on shortcuts, linears, G's output conv and D's class embedding; biases zero."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Embedding) and name == "embed":
            nn.init.xavier_uniform_(raw_weight(m))
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            plain = name.endswith(("shortcut", "to_rgb")) or isinstance(m, nn.Linear)
            nn.init.xavier_uniform_(raw_weight(m), 1.0 if plain else math.sqrt(2))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# arch -> (builder of (G, D), the official code's initialisation)
ARCHS = {"dcgan": (_dcgan, _init_dcgan), "resnet": (_resnet, _init_resnet)}
# arch -> what `model.init: auto` means: the initialisation that learned on real images under the
# default optimiser (docs/results.md); the ResNet keeps the official one, not measured otherwise.
AUTO_INIT = {"dcgan": "pytorch", "resnet": "official"}


def build(cfg: ModelConfig, resolution: int, num_classes: int = 0) -> tuple[nn.Module, nn.Module]:
    """(G, D) for the config; the caller seeds torch beforehand for reproducible weights.

    `model.init: official` initialises them as the official code does; `pytorch` keeps
    PyTorch's default initialisation of each layer; `auto` picks one per arch (AUTO_INIT). `num_classes` (the data's) is required with
    `model.conditional` and ignored without."""
    check_resolution(cfg.arch, resolution)  # the config's rule, for models built without a Config
    if cfg.conditional and num_classes < 1:
        raise ValueError("model.conditional needs the number of classes")
    g_ch, d_ch = paper_widths(cfg.arch, resolution)
    norm = Norm(cfg.d_norm, cfg.sn_iters, cfg.sn_lipschitz)
    builder, init = ARCHS[cfg.arch]
    G, D = builder(cfg, resolution, cfg.g_ch or g_ch, cfg.d_ch or d_ch, norm, num_classes if cfg.conditional else 0)
    if (AUTO_INIT[cfg.arch] if cfg.init == "auto" else cfg.init) == "official":
        init(G)
        init(D)
    return G, D


def paper_widths(arch: str, resolution: int) -> tuple[int, int]:
    """(g_ch, d_ch) of the paper for the architecture at this resolution."""
    layouts = DEFAULT_CH[arch]
    return layouts.get("any") or layouts[32 if resolution <= 32 else 48]


def sample_z(n: int, cfg: ModelConfig, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latent codes `(n, z_dim)`: N(0, I) as in the paper, or U(-1, 1) as in the official code."""
    if cfg.z_dist == "uniform":
        return torch.rand(n, cfg.z_dim, device=device, generator=generator) * 2 - 1
    return torch.randn(n, cfg.z_dim, device=device, generator=generator)


def balanced_labels(n: int, num_classes: int, device="cpu") -> torch.Tensor | None:
    """`0, 1, ..., C-1, 0, 1, ...` for `n` samples: every class equally often (None without classes)."""
    return torch.arange(n, device=device) % num_classes if num_classes else None


def grid_labels(n: int, num_classes: int, device="cpu") -> torch.Tensor | None:
    """Labels of a sample grid of about `n` images with one row per class: `max(1, n // C)` of
    class 0, then as many of class 1, ... (None without classes)."""
    if not num_classes:
        return None
    return torch.arange(num_classes, device=device).repeat_interleave(max(1, n // num_classes))
