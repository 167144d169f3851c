"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable augmentations of every image D sees, real and
fake, so that D trained on a few thousand images does not memorise them and G does not learn the
augmentations. Every random draw comes from the `torch.Generator` passed in: a stream a checkpoint saves.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def _rand(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One uniform `[0, 1)` number per image, shaped `(N, 1, 1, 1)` to broadcast over it."""
    return torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype, generator=g)


def color(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0 to x2) and contrast (x0.5 to x1.5) per image."""
    x = x + (_rand(x, g) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, g) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, g) + 0.5) + mean


def _offsets(n: int, low: int, high: int, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """`n` integer offsets in `[low, high]`, shaped `(n, 1, 1)`."""
    return torch.randint(low, high + 1, (n, 1, 1), device=x.device, generator=g)


def _pixel_grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices `(1, H, 1)` and `(1, 1, W)` of an image batch `(N, C, H, W)`."""
    h, w = x.shape[2:]
    return torch.arange(h, device=x.device).view(1, h, 1), torch.arange(w, device=x.device).view(1, 1, w)


def translation(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shift each image by up to 1/8 of its size in each direction; uncovered pixels become 0."""
    n, _, h, w = x.shape
    sy, sx = int(h / 8 + 0.5), int(w / 8 + 0.5)
    rows, cols = _pixel_grid(x)
    # Index into the image padded by one zero pixel on each side; out-of-range sources land on it.
    src_r = (rows + _offsets(n, -sy, sy, x, g)).add(1).clamp(0, h + 1)  # (n, H, 1)
    src_c = (cols + _offsets(n, -sx, sx, x, g)).add(1).clamp(0, w + 1)  # (n, 1, W)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)[batch, src_r, src_c].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Zero one square of half the image's size per image, centred anywhere (the border may cut it)."""
    n, _, h, w = x.shape
    ch, cw = int(h / 2 + 0.5), int(w / 2 + 0.5)
    top = _offsets(n, 0, h + (1 - ch % 2) - 1, x, g) - ch // 2
    left = _offsets(n, 0, w + (1 - cw % 2) - 1, x, g) - cw // 2
    rows, cols = _pixel_grid(x)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # (n, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


# train.diffaug's names (sngan.config.CHOICES["augments"]), in the order they are applied
AUGMENTS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout,
}


class DiffAugment:
    """`DiffAugment("color,cutout", generator)(x)`: the policy's augmentations, in AUGMENTS' order, of
    images `(N, 3, H, W)` in `[-1, 1]`, each with its own random parameters. An empty policy is falsy
    and the identity."""

    def __init__(self, policy: str, generator: torch.Generator):
        names = {p.strip() for p in policy.split(",")}
        self.steps = [step for name, step in AUGMENTS.items() if name in names]
        self.generator = generator

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x, self.generator)
        return x
