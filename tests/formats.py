"""Tiny data sets written in the real on-disk formats of CIFAR-10 and STL-10."""

import pickle
from pathlib import Path

import numpy as np


def write_cifar10(root: Path, n_per_batch: int = 4, seed: int = 0) -> np.ndarray:
    """cifar-10-batches-py/data_batch_1..5 and test_batch as python pickles of
    {"data": uint8 (n, 3072) in CHW order, "labels": [...]}. Returns the train images (N, 3, 32, 32)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": list(rng.integers(0, 10, n_per_batch)),
                         "data": data, "filenames": [f"{i}.png" for i in range(n_per_batch)]}, f)
        if name != "test_batch":
            train.append(data.reshape(-1, 3, 32, 32))
    return np.concatenate(train)


def write_stl10(root: Path, n_unlabeled: int = 6, n_train: int = 3, seed: int = 0) -> dict:
    """stl10_binary/{unlabeled,train}_X.bin: uint8 images of 3x96x96 stored channel by channel,
    each channel column-major, as in the official files. Returns the images (N, 3, 96, 96)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("unlabeled", n_unlabeled), ("train", n_train)):
        images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # column-major per channel
        out[split] = images
    return out
