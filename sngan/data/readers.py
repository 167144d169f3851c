"""The on-disk formats data sets are read from, each into a `Dataset` of uint8 `(N, 3, H, W)` images:
CIFAR-10's pickle batches and STL-10's column-major binaries (torchvision only downloads their archives),
folders of image files, and .npz arrays; a bad file is one clear line.
"""

from __future__ import annotations

import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from sngan.errors import SnganError, UsageError


class Dataset(NamedTuple):
    """uint8 images `(N, 3, H, W)`, and for labelled data int64 `labels` `(N,)` indexing `classes`."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: tuple[str, ...] = ()


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif")

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
STL10_DIR = "stl10_binary"
STL10_FILES = {"unlabeled": "unlabeled_X.bin", "train": "train_X.bin", "test": "test_X.bin"}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")

# name -> (title, archive to unpack, where to get it, the torchvision data set that downloads it)
ARCHIVES = {
    "cifar10": ("CIFAR-10", "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar.html", "CIFAR10"),
    "stl10": ("STL-10", "stl10_binary.tar.gz", "https://cs.stanford.edu/~acoates/stl10/", "STL10"),
}


def source_files(name: str, split: str, root: str | Path) -> list[Path]:
    """The original files a data set split is read from (they may not exist yet)."""
    root = Path(root)
    if name == "cifar10":
        return [root / CIFAR10_DIR / n for n in CIFAR10_FILES[split]]
    return [root / STL10_DIR / STL10_FILES[s] for s in split.split("+")]


def check_files(name: str, split: str, root: str | Path, download: bool) -> list[Path]:
    """The missing files of a data set split, to download; when downloads are off, an error
    saying what to put where."""
    missing = [p for p in source_files(name, split, root) if not p.is_file()]
    if missing and not download:
        title, archive, url, _ = ARCHIVES[name]
        raise SnganError(f"{title} not found (expected {missing[0]}); set data.download=true (eval-fid: "
                         f"--download), or unpack {archive} from {url} into '{missing[0].parent.parent}'")
    return missing


def _ensure(name: str, split: str, root: str | Path, download: bool) -> None:
    """Download the archive when files are missing and that is allowed (`check_files`)."""
    if not check_files(name, split, root, download):
        return
    title, _, _, dataset = ARCHIVES[name]
    try:
        import torchvision  # lazy: slow to import, and only needed to download

        getattr(torchvision.datasets, dataset)(str(root), download=True)
    except Exception as e:  # network errors come in many types (URLError, HTTPError, OSError, ...)
        raise SnganError(f"downloading {title} failed ({type(e).__name__}: {e}); download it on a "
                         "machine with internet access and copy it into data.root") from None


def _cifar10_batches(root: str | Path, split: str, download: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 `split` ('train' or 'test'), one pickle batch at a time: uint8 images
    `(n, 3, 32, 32)` and int64 labels `(n,)`."""
    if split not in CIFAR10_FILES:
        raise UsageError(f"CIFAR-10 split '{split}' is not one of: train, test")
    _ensure("cifar10", split, root, download)
    folder = Path(root) / CIFAR10_DIR
    for name in CIFAR10_FILES[split]:
        path = folder / name
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            batch = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(entry["labels"], dtype=np.int64)
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
            raise SnganError(f"cannot read CIFAR-10 file '{path}' ({e}); delete '{folder}' and "
                             "download it again with data.download=true") from None
        yield batch, labels


def load_cifar10(root: str | Path, split: str, download: bool) -> Dataset:
    """CIFAR-10 `split` ('train' or 'test'): uint8 `(N, 3, 32, 32)` and labels, from the pickle batches."""
    parts, labels = zip(*_cifar10_batches(root, split, download))
    return Dataset(torch.from_numpy(np.concatenate(parts)), torch.from_numpy(np.concatenate(labels)), CIFAR10_CLASSES)


def read_stl10(root: str | Path, split: str) -> torch.Tensor:
    """STL-10 `split` as uint8 `(N, 3, 96, 96)` from the column-major binary files."""
    path = Path(root) / STL10_DIR / STL10_FILES[split]
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise SnganError(f"cannot read STL-10 file '{path}': {e.strerror}") from None
    if raw.size == 0 or raw.size % (3 * 96 * 96):
        raise SnganError(f"STL-10 file '{path}' has {raw.size} bytes, not a whole number of "
                         "96x96 images; delete it and download it again")
    # Each image is stored channel by channel, each channel column by column.
    return torch.from_numpy(np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)))


def _stl10_labels(root: str | Path, split: str, download: bool) -> torch.Tensor | None:
    """STL-10 `split`'s labels (after checking the split and ensuring its files): int64 `(N,)`
    when every part has a label file (train, test), else None."""
    parts = split.split("+")
    if any(s not in STL10_FILES for s in parts):
        raise UsageError(f"STL-10 split '{split}' is not one of: unlabeled, train, test, unlabeled+train")
    _ensure("stl10", split, root, download)
    label_files = [Path(root) / STL10_DIR / STL10_FILES[s].replace("_X", "_y") for s in parts]
    if "unlabeled" in parts or not all(p.is_file() for p in label_files):
        return None
    labels = [np.fromfile(p, dtype=np.uint8).astype(np.int64) - 1 for p in label_files]  # stored 1-10
    return torch.from_numpy(np.concatenate(labels))


def load_stl10(root: str | Path, split: str, download: bool) -> Dataset:
    """STL-10 `split` (`+` joins splits); labelled when every part has a label file (train, test)."""
    labels = _stl10_labels(root, split, download)
    images = torch.cat([read_stl10(root, s) for s in split.split("+")])
    return Dataset(images) if labels is None else Dataset(images, labels, STL10_CLASSES)


def load_labels(name: str, split: str, root: str | Path, download: bool) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """The labels `(N,)` and class names of a CIFAR-10 or STL-10 split, as `load_cifar10` and
    `load_stl10` give them, without decoding its images (STL-10's are not even read); (None, ())
    for an unlabelled split."""
    if name == "cifar10":
        labels = np.concatenate([y for _, y in _cifar10_batches(root, split, download)])
        return torch.from_numpy(labels), CIFAR10_CLASSES
    labels = _stl10_labels(root, split, download)
    return (None, ()) if labels is None else (labels, STL10_CLASSES)


# ---------------------------------------------------------------------------------------------
# Image folders


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (recursive, sorted); a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SnganError(f"image folder '{folder}' does not exist; check the path (data.root, or eval-fid's "
                         "--images/--ref)" if not folder.exists() else f"'{folder}' is a file, not an image folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        other = f" (it holds {len(files)} other files)" if files else ""
        raise SnganError(f"image folder '{folder}' has no images{other}; expected files ending in "
                         f"{', '.join(IMAGE_EXTENSIONS)}")
    return images


def read_image(path: Path):
    """A PIL RGB image; a one-line error naming the file when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise SnganError(f"cannot read image '{path}': {e}; remove it from the folder") from None


def folder_classes(root: str | Path, files: list[Path]) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """Labels from one sub-folder per class (the sub-folders' sorted names are the classes), as
    torchvision's ImageFolder; (None, ()) when any image lies directly in `root`."""
    tops = [p.relative_to(root).parts for p in files]
    if any(len(parts) < 2 for parts in tops):
        return None, ()
    classes = tuple(sorted({parts[0] for parts in tops}))
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[parts[0]] for parts in tops], dtype=torch.int64), classes


def load_folder(root: str | Path, resolution: int, limit: int = 0) -> Dataset:
    """Every image under `root`, centre-cropped to a square and resized (bicubic), as uint8
    `(N, 3, R, R)`; labelled when the images are in one sub-folder per class."""
    from PIL import Image

    files = list_images(root)[: limit or None]
    out = np.empty((len(files), resolution, resolution, 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(files, desc=f"reading {root}", unit="img", leave=False,
                                  disable=len(files) < 2000)):
        im = read_image(path)
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))  # the centre square
        if s != resolution:
            im = im.resize((resolution, resolution), Image.BICUBIC, reducing_gap=None)
        out[i] = np.asarray(im)
    return Dataset(torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), *folder_classes(Path(root), files))


# ---------------------------------------------------------------------------------------------
# Arrays of images in .npz files: what `sngan sample` writes, and a common exchange format

# The array holding the images, in order of preference: `images` (sngan sample, ADM, TTUR),
# `x_train` and `x` (Keras-style data sets), `arr_0` (np.savez without a name).
NPZ_IMAGE_KEYS = ("images", "x_train", "x", "arr_0")
# Its class labels, if any: integers 0..C-1, named by an optional string array `class_names`.
NPZ_LABEL_KEYS = ("labels", "y_train", "y")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file (no pickles); a one-line error when it cannot be read."""
    with open_npz(path) as f:
        return {k: f[k] for k in f.files}


@contextmanager
def open_npz(path: Path) -> Iterator[np.lib.npyio.NpzFile]:
    """A .npz file whose arrays are read only when asked for (`f.files` lists them; no pickles);
    a one-line error when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as f:
            yield f
    except FileNotFoundError:
        raise SnganError(f"file '{path}' does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise SnganError(f"cannot read '{path}' as a .npz file ({e})") from None


def holds_images(arrays: dict[str, np.ndarray]) -> bool:
    return "mu" not in arrays and any(k in arrays for k in NPZ_IMAGE_KEYS)


def npz_images(arrays: dict[str, np.ndarray], path: Path) -> torch.Tensor:
    """The images of a .npz's arrays as uint8 `(N, 3, H, W)`; stored `(N, H, W, 3)` or `(N, 3, H, W)`."""
    key = next((k for k in NPZ_IMAGE_KEYS if k in arrays), None)
    if key is None:
        raise SnganError(f"'{path}' has no image array ({', '.join(NPZ_IMAGE_KEYS)}); it has: "
                         f"{', '.join(arrays) or 'nothing'}")
    x = arrays[key]
    if x.dtype != np.uint8 or x.ndim != 4 or 3 not in (x.shape[1], x.shape[3]):
        raise SnganError(f"'{path}' array '{key}' is {x.dtype} {x.shape}; expected uint8 images "
                         "(N, H, W, 3) or (N, 3, H, W)")
    images = torch.from_numpy(x)
    if x.shape[3] == 3:  # NHWC, the layout of TTUR/ADM sample files and of most data sets
        images = images.permute(0, 3, 1, 2)
    return images.contiguous()


def npz_labels(arrays: dict[str, np.ndarray], path: Path, n: int) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """The class labels of a .npz's arrays (see NPZ_LABEL_KEYS) and the class names; (None, ()) without."""
    key = next((k for k in NPZ_LABEL_KEYS if k in arrays), None)
    if key is None:
        return None, ()
    y = arrays[key].reshape(-1)
    if y.dtype.kind not in "iu" or len(y) != n or (n and y.min() < 0):
        raise SnganError(f"'{path}' array '{key}' is {y.dtype} {arrays[key].shape}; expected {n} class "
                         "indices 0, 1, ... (one per image)")
    names = tuple(str(c) for c in arrays.get("class_names", range(int(y.max()) + 1 if n else 0)))
    if n and int(y.max()) >= len(names):
        raise SnganError(f"'{path}' has label {int(y.max())} but only {len(names)} class_names")
    return torch.from_numpy(y.astype(np.int64)), names


def load_npz(path: str | Path) -> Dataset:
    """The uint8 images of a .npz file (`data.name: npz`, `data.root: FILE`) as `(N, 3, H, W)`,
    with their labels when it has a label array."""
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file():
        raise SnganError(f"data.root '{path}' is not a .npz file; for data.name npz, set data.root to a .npz "
                         "holding uint8 images (N, H, W, 3), such as `sngan sample --out samples.npz` writes")
    arrays = read_npz(path)
    images = npz_images(arrays, path)
    if images.shape[2] != images.shape[3]:
        raise SnganError(f"'{path}' holds {images.shape[3]}x{images.shape[2]} images; training needs square images")
    return Dataset(images, *npz_labels(arrays, path, len(images)))
