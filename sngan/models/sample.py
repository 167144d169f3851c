"""Drawing images from a trained generator: in memory, as a grid PNG, PNG files or an .npz."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn

from sngan import config
from sngan.errors import SnganError, UsageError
from sngan.models import networks
from sngan.runs import checkpoint

GRID_PADDING = 2  # pixels around each image of a saved grid


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Generator output in `[-1, 1]` -> uint8 `[0, 255]`, same shape."""
    return ((x.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def load_generator(path: str | Path, device: str | torch.device = "cpu",
                   ema: bool | None = None) -> tuple[nn.Module, config.Config, str]:
    """Rebuild G from the config stored in the checkpoint alone; returned in eval mode.

    `ema`: True for the EMA generator (`train.ema_decay`), False for the raw one, None for the
    EMA generator when the checkpoint has one. Returns G, its config, and "ema" or "raw".
    """
    state = checkpoint.load(path)
    cfg = config.from_saved(state["config"])
    has_ema = "G_ema" in state
    if ema and not has_ema:
        raise UsageError(f"checkpoint '{path}' has no EMA generator (it was trained with "
                         "train.ema_decay 0); drop --ema to use its generator")
    kind = "ema" if has_ema and ema is not False else "raw"
    classes = tuple(state.get("classes", ()))
    G, _ = networks.build(cfg.model, cfg.data.resolution, len(classes))
    G.classes = classes  # the names of a conditional G's labels
    key, what = ("G_ema", "EMA generator") if kind == "ema" else ("G", "generator")
    checkpoint.load_module_state(G, state[key], what, path)
    return G.to(device).eval(), cfg, kind


def class_index(G: nn.Module, name_or_index: str) -> int:
    """The label of a conditional G's class given by name or by index (as text)."""
    classes = tuple(getattr(G, "classes", ()))
    if not classes:
        raise UsageError("--class needs a class-conditional checkpoint (model.conditional); this one is unconditional")
    if name_or_index in classes:
        return classes.index(name_or_index)
    if name_or_index.isdigit() and int(name_or_index) < len(classes):
        return int(name_or_index)
    raise UsageError(f"unknown class '{name_or_index}'; the checkpoint's classes are "
                     f"{', '.join(f'{i}: {c}' for i, c in enumerate(classes))}")


def latents(cfg: config.Config, num: int, seed: int) -> torch.Tensor:
    """The z behind `--seed`: `(num, z_dim)` on the CPU, drawn from its own generator so that a
    seed gives the same images on any device."""
    return networks.sample_z(num, cfg.model, "cpu", torch.Generator().manual_seed(seed))


def inputs(G: nn.Module, cfg: config.Config, num: int, batch_size: int, seed: int, device: str | torch.device,
           share: tuple[int, int] = (0, 1), labels: torch.Tensor | None = None
           ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """G's input batches `(z, y)` on `device`: the z of `latents` and, for a conditional G, the
    classes `labels` (`(num,)`; default: every class equally often), else y None.

    With `share=(rank, world)` only that contiguous part of the same `num` inputs is yielded,
    so `world` processes together produce exactly the single-process set.
    """
    num_classes = getattr(G, "num_classes", 0)
    if num_classes and labels is None:
        labels = networks.balanced_labels(num, num_classes)
    rank, world = share
    part = slice(rank * num // world, (rank + 1) * num // world)
    zs = latents(cfg, num, seed)[part].split(batch_size)
    ys = [None] * len(zs) if labels is None else labels[part].split(batch_size)
    for z, y in zip(zs, ys):
        yield z.to(device), None if y is None else y.to(device)


def generate_batches(G: nn.Module, cfg: config.Config, num: int, batch_size: int, seed: int,
                     device: str | torch.device, share: tuple[int, int] = (0, 1),
                     labels: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """`num` samples as uint8 batches `(B, 3, R, R)` on `device`, from the inputs of `inputs`."""
    for z, y in inputs(G, cfg, num, batch_size, seed, device, share, labels):
        with torch.inference_mode():
            yield to_uint8(G(z, y))


def check_output_path(out: Path, force: bool) -> str:
    """Which kind of output `out` is ('png', 'npz' or 'folder'), after checking it is writable."""
    kind = {".png": "png", ".npz": "npz"}.get(out.suffix.lower(), "folder")
    checkpoint.check_parent(out)
    if kind == "folder":
        if out.exists() and not out.is_dir():
            raise UsageError(f"output '{out}' is a file; name a folder, a .png grid or an .npz")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise UsageError(f"output folder '{out}' is not empty; choose another or pass --force")
    elif out.exists() and not force:
        raise UsageError(f"output '{out}' already exists; choose another path or pass --force")
    return kind


def write_samples(G: nn.Module, cfg: config.Config, num: int, out: Path, seed: int,
                  batch_size: int, device, force: bool = False, label: int | None = None) -> int:
    """Write `num` samples to `out`: a grid when it ends in .png, an .npz of uint8 NHWC images
    (key `images`, and `labels` from a conditional G) when it ends in .npz, else one PNG per image
    in that folder. A conditional G draws class `label`, else every class equally often, and a
    grid then has one row per class (`num // C` images each). Returns the number written."""
    kind = check_output_path(out, force)
    num_classes, nrow, labels = getattr(G, "num_classes", 0), None, None
    if num_classes and label is not None:
        labels = torch.full((num,), label, dtype=torch.long)
    elif num_classes and kind == "png":
        labels = networks.grid_labels(num, num_classes)
        num, nrow = len(labels), len(labels) // num_classes
    elif num_classes:
        labels = networks.balanced_labels(num, num_classes)
    images = torch.cat([b.cpu() for b in generate_batches(G, cfg, num, batch_size, seed, device, labels=labels)])
    nhwc = images.permute(0, 2, 3, 1).numpy()
    try:
        if kind == "png":
            save_grid(images, out, nrow)
        elif kind == "npz":
            extra = {} if labels is None else {"labels": labels.numpy(), "class_names": np.array(G.classes)}
            checkpoint.atomic_write(out, lambda f: np.savez(f, images=nhwc, **extra), "samples")
        else:
            out.mkdir(parents=True, exist_ok=True)
            for i, im in enumerate(nhwc):
                Image.fromarray(im).save(out / f"{i:06d}.png")
    except PermissionError as e:
        raise SnganError(f"cannot write to '{out}': {e.strerror}") from None
    return num


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> torch.Tensor:
    """Save uint8 `(N, 3, R, R)` images as a grid PNG of `nrow` images per row (default: square-ish),
    atomically; returns the grid as uint8 `(3, H, W)`."""
    from torchvision.utils import make_grid  # torchvision takes a while to import; only grids need it

    grid = make_grid(images.cpu(), nrow=nrow or math.ceil(math.sqrt(len(images))), padding=GRID_PADDING)
    image = Image.fromarray(grid.permute(1, 2, 0).numpy())
    checkpoint.atomic_write(path, lambda f: image.save(f, format="PNG"), "image")
    return grid
