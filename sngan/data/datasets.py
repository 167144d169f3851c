"""Data sets by name (`DATASETS`), each decoded once into one uint8 tensor `(N, 3, R, R)` with its labels
when it has them: at a few milliseconds per GAN step a per-image DataLoader would be the bottleneck, so
`sngan.data.batches` gathers batches from the tensor on the device. Also the FID reference sets and synthetic shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from sngan.config import DataConfig
from sngan.data.readers import (NPZ_LABEL_KEYS, Dataset, load_cifar10, load_folder, load_labels, load_npz,
                                load_stl10, source_files)
from sngan.errors import UsageError

# FID reference sets by name: (data set, split).
REFERENCES = {
    "cifar10-train": ("cifar10", "train"),
    "cifar10-test": ("cifar10", "test"),
    "stl10-unlabeled": ("stl10", "unlabeled"),
    "stl10-train": ("stl10", "train"),
    "stl10-unlabeled+train": ("stl10", "unlabeled+train"),
}
# Images in each reference's official split. A metric is named by the split alone only when all of
# them were used; a partial copy on disk, or the first N, get their count in the name.
REFERENCE_SIZES = {"cifar10-train": 50_000, "cifar10-test": 10_000, "stl10-unlabeled": 100_000,
                   "stl10-train": 5_000, "stl10-unlabeled+train": 105_000}


def resize(images: torch.Tensor, resolution: int, chunk: int = 4096) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 `(N, 3, H, W)` to `(N, 3, R, R)` uint8, in chunks."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    out = []
    for part in images.split(chunk):
        x = F.interpolate(part.float(), size=(resolution, resolution), mode="bilinear",
                          antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


SHAPE_CLASSES = ("square", "disc")


def synthetic_shapes(n: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """`n` images of one coloured disc or square on a two-colour gradient, uint8 `(n, 3, R, R)`."""
    return synthetic_dataset(n, resolution, seed).images


def synthetic_dataset(n: int, resolution: int, seed: int = 0) -> Dataset:
    """The synthetic shapes, labelled by shape (SHAPE_CLASSES): a built-in data set that a small GAN
    learns in minutes on a CPU. Deterministic in `seed`; thousands take well under a second."""
    g = torch.Generator().manual_seed(seed)
    r = resolution
    coords = (torch.arange(r, dtype=torch.float32) + 0.5) / r
    yy, xx = coords.view(1, r, 1), coords.view(1, 1, r)
    bg_a, bg_b = torch.rand(n, 3, 1, 1, generator=g) * 0.6, torch.rand(n, 3, 1, 1, generator=g) * 0.6
    angle = torch.rand(n, 1, 1, generator=g) * 2 * torch.pi
    t = (xx * torch.cos(angle) + yy * torch.sin(angle)).unsqueeze(1)  # (n, 1, r, r)
    t = (t - t.amin((2, 3), keepdim=True)) / (t.amax((2, 3), keepdim=True) - t.amin((2, 3), keepdim=True))
    image = bg_a + (bg_b - bg_a) * t
    cx, cy = (0.25 + 0.5 * torch.rand(2, n, 1, 1, generator=g))
    # Radius (half-width for a square) 0.2-0.35 of the image: shapes this big are what a x0.25 GAN
    # draws recognisably at 16 or 32 pixels in a few thousand updates (docs/results.md, "The quickstart").
    size = 0.2 + 0.15 * torch.rand(n, 1, 1, generator=g)
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() < size
    square = torch.maximum((xx - cx).abs(), (yy - cy).abs()) < size * 0.85
    is_disc = torch.rand(n, 1, 1, generator=g) < 0.5
    mask = torch.where(is_disc, disc, square).unsqueeze(1)
    colour = 0.4 + 0.6 * torch.rand(n, 3, 1, 1, generator=g)
    image = torch.where(mask, colour.expand_as(image), image)
    return Dataset((image * 255).round().clamp(0, 255).to(torch.uint8), is_disc.view(n).long(), SHAPE_CLASSES)


def _split(cfg: DataConfig, default: str) -> str:
    return default if cfg.split == "default" else cfg.split


# name -> loader of a Dataset of uint8 (N, 3, H, W); load_dataset limits and resizes it.
DATASETS: dict[str, Callable[[DataConfig], Dataset]] = {
    "cifar10": lambda cfg: load_cifar10(cfg.root, _split(cfg, "train"), cfg.download),
    "stl10": lambda cfg: load_stl10(cfg.root, _split(cfg, "unlabeled+train"), cfg.download),
    "folder": lambda cfg: load_folder(cfg.root, cfg.resolution, cfg.num_images),
    "npz": lambda cfg: load_npz(cfg.root),
    "synthetic": lambda cfg: synthetic_dataset(cfg.num_images or 4096, cfg.resolution),
}


def load_dataset(cfg: DataConfig) -> Dataset:
    """The configured data set, images uint8 `(N, 3, R, R)` on the CPU, R = cfg.resolution."""
    images, labels, classes = DATASETS[cfg.name](cfg)
    if cfg.num_images:
        images, labels = images[: cfg.num_images], None if labels is None else labels[: cfg.num_images]
    return Dataset(resize(images, cfg.resolution), labels, classes)


def load_images(cfg: DataConfig) -> torch.Tensor:
    """The configured data set's images, uint8 `(N, 3, R, R)`."""
    return load_dataset(cfg).images


def load_labelled(cfg: DataConfig) -> Dataset:
    """The configured data set with its labels; a clear error when it has none."""
    ds = load_dataset(cfg)
    if ds.labels is None:
        hint = {"stl10": "STL-10's labelled splits are data.split=train or test (unlabeled has no labels)",
                "folder": "put the images in one sub-folder per class",
                "npz": f"add a label array ({', '.join(NPZ_LABEL_KEYS)})"}.get(cfg.name, "use labelled data")
        raise UsageError(f"model.conditional needs class labels, but data set '{cfg.name}' (split "
                         f"'{cfg.split}') has none; {hint}, or set model.conditional=false")
    return ds


def reference_files(ref: str, root: str | Path) -> list[Path]:
    """The on-disk files a named reference set (see REFERENCES) is read from (they may not exist yet)."""
    return source_files(*REFERENCES[ref], root)


def load_reference_labels(ref: str, root: str | Path, download: bool) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """A named reference set's labels `(N,)` and class names, its images left on disk; (None, ()) without."""
    return load_labels(*REFERENCES[ref], root, download)


def load_reference(ref: str, root: str | Path, resolution: int, download: bool) -> torch.Tensor:
    """A named reference set's images as uint8 `(N, 3, R, R)`."""
    name, split = REFERENCES[ref]
    return resize((load_cifar10 if name == "cifar10" else load_stl10)(root, split, download).images, resolution)
