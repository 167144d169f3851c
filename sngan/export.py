"""`sngan export`: a generator as one file that runs with PyTorch alone, no sngan installed.

The file is a `torch.export` program (`torch.export.save`; load it with `torch.export.load`),
not TorchScript. Both load with torch alone, but in the PyTorch this was written with (2.14)
`torch.jit.trace`, `torch.jit.save` and `torch.jit.load` are deprecated and warn on every call, while
`torch.export` is the supported way to ship a model without its Python code. The generators
have no data-dependent control flow, so exporting them captures the whole computation, and the
program's aten ops compute the same numbers as the module: the same z gives the same images.

What a user needs to draw z correctly (latent size, distribution, resolution, which generator)
is stored in the file as the JSON extra file `sngan.json`; docs/api.md shows how to read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sngan import __version__, checkpoint, config
from sngan.errors import UsageError

if TYPE_CHECKING:
    from sngan.api import Generator

FORMAT = "sngan-exported-generator"
VERSION = 1
METADATA = "sngan.json"  # the name of the extra file holding `metadata(G)`

# How `sngan sample --seed` draws z (models.sample_z, on the CPU), for people without sngan.
Z_RECIPES = {
    "normal": "torch.randn(n, {z_dim}, generator=torch.Generator().manual_seed(seed))",
    "uniform": "torch.rand(n, {z_dim}, generator=torch.Generator().manual_seed(seed)) * 2 - 1",
}


def metadata(G: Generator) -> dict:
    """What the exported file says about itself: JSON-serialisable."""
    return {
        "format": FORMAT, "version": VERSION, "sngan_version": __version__,
        "torch_version": str(torch.__version__),
        "z_dim": G.z_dim, "z_dist": G.z_dist, "z": Z_RECIPES[G.z_dist].format(z_dim=G.z_dim),
        "resolution": G.resolution, "output": "float32 (N, 3, R, R) in [-1, 1]",
        "classes": list(G.classes), "inputs": "z" + (", y: int64 (N,) class indices" if G.classes else ""),
        "kind": G.kind, "checkpoint": None if G.source is None else str(G.source),
        "config": config.to_dict(G.config),
    }


def check_out(out: Path, force: bool) -> None:
    if not out.parent.is_dir():
        raise UsageError(f"output folder '{out.parent}' does not exist; create it first")
    if out.is_dir():
        raise UsageError(f"output '{out}' is a folder; name a file such as generator.pt2")
    if out.exists() and not force:
        raise UsageError(f"output '{out}' already exists; choose another path or pass --force")


def export(G: Generator, out: Path, force: bool = False) -> Path:
    """Write `G`'s network (put in eval mode; its weights stay on `G.device`) to `out`,
    atomically, with its metadata; the program takes any batch size. Returns `out`."""
    check_out(out, force)
    # A batch of 2: torch.export specialises a dimension whose example size is 1.
    batch = torch.export.Dim("batch")
    example, shapes = (G.sample_z(2).to(G.device),), ({0: batch},)
    if G.classes:  # a conditional G takes the labels as its second input
        example, shapes = (*example, G.labels(2).to(G.device)), (*shapes, {0: batch})
    program = torch.export.export(G.net.eval(), example, dynamic_shapes=shapes)
    extra = {METADATA: json.dumps(metadata(G), indent=1)}
    return checkpoint.atomic_write(out, lambda f: torch.export.save(program, f, extra_files=extra),
                                   "exported generator")

