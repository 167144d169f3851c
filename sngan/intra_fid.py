"""Intra-class FID (Miyato and Koyama, ICLR 2018): the mean over classes of the FID of a
conditional G's samples of a class against that class's real images, which catches a G that mixes
classes up while its class-balanced FID looks good.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sngan import data, detector as inception, metrics, readers
from sngan.errors import UsageError


def reference_labels(ref: str, data_root: str | Path, download: bool, num_images: int = 0
                     ) -> tuple[np.ndarray, tuple[str, ...]]:
    """The labels `(N,)` of the reference images whose features are computed (the first
    `num_images`, 0: all, as `sngan.fid_stats.first_images` takes them), and the class names."""
    path, labels, classes = Path(ref), None, ()
    if ref in data.REFERENCES:
        ds = data.load_reference_dataset(ref, data_root, download)
        labels, classes = ds.labels, ds.classes
    elif path.suffix == ".npz" and path.is_file():
        arrays = readers.read_npz(path)
        if readers.holds_images(arrays):
            labels, classes = readers.npz_labels(arrays, path, len(readers.npz_images(arrays, path)))
    elif path.is_dir():
        labels, classes = readers.folder_classes(path, readers.list_images(path))
    if labels is None:
        raise UsageError(f"--intra-fid needs a labelled reference, and '{ref}' has no labels: use cifar10-train, "
                         "cifar10-test, stl10-train, an .npz with a label array or a folder of class sub-folders")
    return labels[: num_images or len(labels)].numpy(), tuple(classes)


def intra_fid(G: torch.nn.Module, cfg, detector: inception.Detector, ref_features: np.ndarray,
              ref_labels: np.ndarray, ref_classes: tuple[str, ...], num_per_class: int, batch_size: int,
              seed: int, device) -> dict:
    """`{"intra_fid": mean, "intra_fid_classes": {name: fid}, "intra_fid_num_per_class": n}`:
    `num_per_class` samples of each class (the same seeded z for every class) against the
    reference features `(N, 2048)` whose label is that class."""
    from sngan.sample import generate_batches  # lazy: pulls in the models

    classes = tuple(G.classes)  # eval-fid checked that G is class-conditional
    if classes != ref_classes:
        raise UsageError(f"the checkpoint's classes ({', '.join(classes)}) are not the reference's "
                         f"({', '.join(ref_classes) or 'none'}); intra-FID compares each class with its own images")
    per_class = {}
    for c, name in enumerate(classes):
        real = ref_features[ref_labels == c]
        if len(real) < 2:
            raise UsageError(f"the reference has {len(real)} images of class '{name}'; intra-FID needs at least 2")
        labels = torch.full((num_per_class,), c, dtype=torch.long)
        batches = generate_batches(G, cfg, num_per_class, batch_size, seed, device, labels=labels)
        fake = inception.extract(detector, batches, batch_size, total=num_per_class, desc=f"class {name}")[0]
        per_class[name] = metrics.frechet_distance(*metrics.statistics(fake), *metrics.statistics(real))
    return {"intra_fid": float(np.mean(list(per_class.values()))), "intra_fid_classes": per_class,
            "intra_fid_num_per_class": num_per_class}
