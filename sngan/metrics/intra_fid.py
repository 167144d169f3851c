"""Intra-class FID (Miyato and Koyama, ICLR 2018): the mean over classes of the FID of a
conditional G's samples of a class against that class's real images, which catches a G that mixes
classes up while its class-balanced FID looks good.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sngan.data import datasets, readers
from sngan.errors import UsageError
from sngan.metrics import formulas
from sngan.metrics.fid_result import metric_name


def reference_labels(ref: str, data_root: str | Path, download: bool, num_images: int = 0
                     ) -> tuple[np.ndarray, tuple[str, ...]]:
    """The labels `(N,)` of the reference images whose features are computed (the first
    `num_images`, 0: all, as `sngan.metrics.fid_stats.first_images` takes them), and the class names."""
    path, labels, classes = Path(ref), None, ()
    if ref in datasets.REFERENCES:  # its features may be cached: read the labels alone
        labels, classes = datasets.load_reference_labels(ref, data_root, download)
    elif path.suffix == ".npz" and path.is_file():
        arrays = readers.read_npz(path)
        if readers.holds_images(arrays):
            labels, classes = readers.npz_labels(arrays, path, len(readers.npz_images(arrays, path)))
    elif path.is_dir():
        labels, classes = readers.folder_classes(path, readers.list_images(path))
    if labels is None:
        raise UsageError(f"intra-FID needs a labelled reference, and '{ref}' has no labels: use cifar10-train, "
                         "cifar10-test, stl10-train, an .npz with a label array or a folder of class sub-folders")
    return labels[: num_images or len(labels)].numpy(), tuple(classes)


def protocol(num: int, num_classes: int, ref: str, ref_images: int) -> tuple[int, str]:
    """Each class's share of `num` samples (at least 2, for a covariance), and the metric's name,
    `intrafid<share>_<ref>` (see `sngan.metrics.fid_result.metric_name`)."""
    per_class = max(2, num // max(1, num_classes))
    return per_class, metric_name(per_class, ref, ref_images, "intrafid")


def check_classes(classes: tuple[str, ...], ref_labels: np.ndarray, ref_classes: tuple[str, ...]) -> None:
    """Before any features: the generator's classes are the reference's, by name and in order, and
    each has at least 2 reference images."""
    if tuple(classes) != tuple(ref_classes):
        raise UsageError(f"the generator's classes ({', '.join(classes)}) are not the reference's "
                         f"({', '.join(ref_classes) or 'none'}); intra-FID compares each class with its own images")
    for name, count in zip(classes, np.bincount(ref_labels, minlength=len(classes))):
        if count < 2:
            raise UsageError(f"the reference has {count} images of class '{name}'; intra-FID needs at least 2")


def intra_fid(embed: Callable[[torch.Tensor, str], np.ndarray], num_per_class: int, ref_features: np.ndarray,
              ref_labels: np.ndarray, classes: tuple[str, ...]) -> dict:
    """`{"intra_fid": mean, "intra_fid_classes": {name: fid}, "intra_fid_num_per_class": n}`:
    `num_per_class` samples of each class against the reference features `(N, 2048)` whose label
    is that class (`check_classes` first). `embed(labels, desc)` gives the features `(n, 2048)` of
    the generator's samples of int64 labels `(n,)`, drawn from the same seeded z for every class."""
    per_class = {}
    for c, name in enumerate(classes):
        fake = embed(torch.full((num_per_class,), c, dtype=torch.long), f"class {name}")
        real = ref_features[ref_labels == c]
        per_class[name] = formulas.frechet_distance(*formulas.statistics(fake), *formulas.statistics(real))
    return {"intra_fid": float(np.mean(list(per_class.values()))), "intra_fid_classes": per_class,
            "intra_fid_num_per_class": num_per_class}
