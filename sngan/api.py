"""A trained generator outside training: `sngan.load` gives a ready `nn.Module`, which `sngan export`
writes as a file that runs with PyTorch alone. Sampling uses the functions behind `sngan sample`, so
`sngan.load(ckpt).sample_uint8(n, seed=s)` is exactly what
`sngan sample --checkpoint ckpt --num n --seed s --out x.npz` writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sngan import __version__, config
from sngan.errors import UsageError
from sngan.models import networks, sample
from sngan.parallel.distributed import resolve_device
from sngan.runs import checkpoint

# The same default as `sngan sample --batch-size`: batch size can change the last bits of a
# convolution's result, so the defaults agree to keep the API's images identical to the CLI's.
BATCH_SIZE = 256

EXPORT_FORMAT, EXPORT_VERSION = "sngan-exported-generator", 1
EXPORT_METADATA = checkpoint.EXPORT_METADATA  # the extra file in an exported program that says how to draw z
# How `sngan sample --seed` draws z (networks.sample_z, on the CPU), for people without sngan.
Z_RECIPES = {
    "normal": "torch.randn(n, {z_dim}, generator=torch.Generator().manual_seed(seed))",
    "uniform": "torch.rand(n, {z_dim}, generator=torch.Generator().manual_seed(seed)) * 2 - 1",
}


class Generator(nn.Module):
    """A trained generator: z `(N, z_dim)` (and, class-conditional, labels y `(N,)`) -> images
    `(N, 3, R, R)` in `[-1, 1]`, returned by `sngan.load` in eval mode; `G.net` is the network.

    Attributes (docs/api.md): `config`, `kind` ("ema" or "raw"), `source`, `z_dim`, `z_dist`
    ("normal": N(0, I), "uniform": U(-1, 1)), `resolution` (R), `classes` (names; () when
    unconditional) and `device`.
    """

    def __init__(self, net: nn.Module, cfg: config.Config, kind: str, source: str | Path | None = None):
        super().__init__()
        self.net, self.config, self.kind, self.source = net, cfg, kind, source
        self.z_dim, self.z_dist, self.resolution = cfg.model.z_dim, cfg.model.z_dist, cfg.data.resolution
        self.classes: tuple[str, ...] = tuple(getattr(net, "classes", ()))

    @property
    def device(self) -> torch.device:
        """Where the weights are (follows `G.to(...)`)."""
        return next(self.net.parameters()).device

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z `(N, z_dim)` (and int64 labels y `(N,)` for a conditional G) on `G.device` -> images
        `(N, 3, R, R)`, float in `[-1, 1]`."""
        return self.net(z, y)

    def labels(self, n: int, label: int | str | None = None) -> torch.Tensor | None:
        """The labels `sample(n, label=label)` uses: `(n,)` int64 on the CPU; None when unconditional."""
        if not self.classes:
            if label is not None:
                raise UsageError("label needs a class-conditional generator; this one is unconditional")
            return None
        if label is None:
            return networks.balanced_labels(n, len(self.classes))
        return torch.full((n,), sample.class_index(self.net, str(label)), dtype=torch.long)

    def sample_z(self, n: int, seed: int = 0) -> torch.Tensor:
        """The z behind `sample(n, seed)`: `(n, z_dim)` float on the CPU, the same on any device."""
        _check_n(n)
        return sample.latents(self.config, n, seed)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = BATCH_SIZE, label: int | str | None = None
               ) -> torch.Tensor:
        """`n` images `(n, 3, R, R)`, float32 in `[-1, 1]` on `G.device`, from seeded z (and `labels`)."""
        _check_n(n, batch_size)
        batches = sample.inputs(self.net, self.config, n, batch_size, seed, self.device, labels=self.labels(n, label))
        return torch.cat([self.net(z, y) for z, y in batches])

    def sample_uint8(self, n: int, seed: int = 0, batch_size: int = BATCH_SIZE, label: int | str | None = None
                     ) -> np.ndarray:
        """`n` images as a uint8 numpy array `(n, R, R, 3)` in `[0, 255]`: the images of
        `sngan sample --num n --seed seed --out x.npz [--class label]` (its key `images`)."""
        _check_n(n, batch_size)
        batches = sample.generate_batches(self.net, self.config, n, batch_size, seed, self.device,
                                          labels=self.labels(n, label))
        return torch.cat([b.cpu() for b in batches]).permute(0, 2, 3, 1).numpy()

    def export(self, path: str | Path, force: bool = False) -> Path:
        """Write the network (put in eval mode; its weights stay on `G.device`) atomically to `path` as a
        `torch.export` program that takes any batch size, with `export_metadata()` as its extra file
        `sngan.json`. Returns the path.

        torch.export, not TorchScript: in the PyTorch this was written with (2.14) `torch.jit.trace`,
        `save` and `load` are deprecated and warn on every call. The generators have no data-dependent
        control flow, so the program's aten ops compute the same images as the module for the same z.
        """
        out = Path(path)
        checkpoint.check_new_file(out, force, "generator.pt2")
        # A batch of 2: torch.export specialises a dimension whose example size is 1.
        batch = torch.export.Dim("batch")
        example, shapes = (self.sample_z(2).to(self.device),), ({0: batch},)
        if self.classes:  # a conditional G takes the labels as its second input
            example, shapes = (*example, self.labels(2).to(self.device)), (*shapes, {0: batch})
        program = torch.export.export(self.net.eval(), example, dynamic_shapes=shapes)
        extra = {EXPORT_METADATA: json.dumps(self.export_metadata(), indent=1)}
        return checkpoint.atomic_write(out, lambda f: torch.export.save(program, f, extra_files=extra),
                                       "exported generator")

    def export_metadata(self) -> dict:
        """What an exported file says about itself (docs/api.md): how to draw z, the output, the config."""
        return {
            "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "sngan_version": __version__,
            "torch_version": str(torch.__version__),
            "z_dim": self.z_dim, "z_dist": self.z_dist, "z": Z_RECIPES[self.z_dist].format(z_dim=self.z_dim),
            "resolution": self.resolution, "output": "float32 (N, 3, R, R) in [-1, 1]",
            "classes": list(self.classes), "inputs": "z" + (", y: int64 (N,) class indices" if self.classes else ""),
            "kind": self.kind, "checkpoint": None if self.source is None else str(self.source),
            "config": config.to_dict(self.config),
        }

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, z_dim={self.z_dim}, z_dist={self.z_dist!r}, resolution={self.resolution}, "
                f"classes={len(self.classes)}, source={str(self.source)!r}")


def load(path: str | Path, device: str | torch.device = "auto", ema: bool | None = None) -> Generator:
    """The generator of a checkpoint file, or of a run folder's `latest.pt`, ready to sample.

    `device`: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N". `ema`: True for the EMA
    generator, False for the raw one, None (default) for the EMA one when the checkpoint has it.
    The model is rebuilt from the config stored in the checkpoint alone, in eval mode.
    """
    net, cfg, kind = sample.load_generator(path, resolve_device(str(device)), ema)
    return Generator(net, cfg, kind, path).eval()


def _check_n(n: int, batch_size: int = 1) -> None:
    if n < 1:
        raise UsageError(f"the number of samples must be at least 1, got {n}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")

