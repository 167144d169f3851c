"""What FID compares: image sets, statistics files in pytorch-fid's (and TTUR's) .npz layout, and
named data sets' reference statistics (and, for KID and precision/recall, features), cached on disk
under a hash of everything they depend on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sngan.data.datasets import REFERENCES, load_reference, reference_files
from sngan.data.readers import (check_files, holds_images, list_images, npz_images, open_npz, read_image,
                                read_npz)
from sngan.errors import SnganError, UsageError
from sngan.metrics import detector as inception
from sngan.metrics.formulas import statistics
from sngan.runs.checkpoint import atomic_write

# Bump when anything that changes cached statistics changes (feature path, file layout).
CACHE_VERSION = 2  # 2: batch norms folded into the convolutions


def stats_path(path: str | Path) -> Path:
    """`path` as a statistics file name; checked early so a long run cannot fail at the end."""
    path = Path(path)
    if path.suffix != ".npz":
        raise UsageError(f"statistics file '{path}' must end in .npz (pytorch-fid recognises them by it)")
    return path


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **meta) -> Path:
    """Write `mu`, `sigma` (and `meta` as extra 0-d arrays) to a .npz, atomically."""
    path = stats_path(path)
    # None would be stored as a pickled object, which loading with allow_pickle=False rejects.
    meta = {k: np.asarray(v) for k, v in meta.items() if v is not None}
    return atomic_write(path, lambda f: np.savez_compressed(f, mu=mu, sigma=sigma, **meta), "statistics")


def _stats_from(arrays: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, np.ndarray]:
    if "mu" not in arrays or "sigma" not in arrays:
        raise SnganError(f"'{path}' has no 'mu' and 'sigma' arrays (it has: {', '.join(arrays) or 'nothing'}); "
                         "write statistics with `sngan eval-fid --save-stats` or `pytorch_fid --save-stats`")
    mu, sigma = arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise SnganError(f"'{path}' holds mu {mu.shape} and sigma {sigma.shape}; expected (D,) and (D, D)")
    return mu, sigma


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """`mu` `(D,)` and `sigma` `(D, D)` from a pytorch-fid/TTUR-style statistics .npz."""
    path = Path(path)
    return _stats_from(read_npz(path), path)


def load_image_set(path: str | Path) -> torch.Tensor:
    """A folder of images or a .npz of images as uint8 `(N, 3, H, W)`. Folder images are read as
    pytorch-fid reads them, PIL `.convert("RGB")` never resized, so all must have one size; a .npz
    holds uint8 `(N, H, W, 3)` or `(N, 3, H, W)` (see `sngan.data.readers.NPZ_IMAGE_KEYS`)."""
    path = Path(path)
    if path.suffix == ".npz" and path.is_file():
        return npz_images(read_npz(path), path)
    return _folder_images(path)


def _folder_images(folder: Path) -> torch.Tensor:
    files = list_images(folder)
    arrays = [np.asarray(read_image(p)) for p in tqdm(files, desc=f"reading {folder}", unit="img",
                                                    leave=False, disable=len(files) < 2000)]
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        (h1, w1), (h2, w2) = sorted(sizes)[:2]
        raise SnganError(f"images in '{folder}' have different sizes ({w1}x{h1}, {w2}x{h2}, ...); FID "
                         "reads them unresized like pytorch-fid, so resize them all to one size first")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def first_images(images: torch.Tensor, num_images: int, ref: str) -> torch.Tensor:
    """The reference's first `num_images` images (0: all of them). The one rule for a reference's
    size, in eval-fid (--ref-images) and training (eval.ref_images), for FID, KID, precision/recall
    and intra-FID: asked for N, a reference that has fewer is an error, before any Inception forward,
    so that a number named for N reference images (`fid5k_cifar10-test10k`) always used N."""
    if num_images > len(images):
        raise _too_few(ref, num_images, len(images))
    return images[:num_images] if num_images else images


def _too_few(ref: str, asked: int, available: int) -> UsageError:
    return UsageError(f"--ref-images (eval.ref_images) is {asked} but reference '{ref}' has {available} images: "
                      "lower it (0 uses all of them) or use another reference")


def reference_stats(ref: str, detector: inception.Detector, **kwargs) -> tuple[np.ndarray, np.ndarray, dict]:
    """Reference `mu` `(2048,)`, `sigma` `(2048, 2048)` and `info` describing the protocol (at least
    ref, num_ref (None when a stats file does not record it), detector, cached, cache_file).

    `ref` is a folder or .npz of images, a statistics .npz, or a name in `sngan.data.datasets.REFERENCES`
    resized to `resolution`, cached in `<cache_dir>/fid-stats/` (default
    `sngan.metrics.detector.default_cache_dir()`); of its images, the first `num_images` (0: all; fewer is an
    error, see `first_images`). Keyword arguments: data_root ("data"), resolution (32), download
    (True), num_images (0), batch_size (100), cache_dir (None)."""
    mu, sigma, _, info = _reference(ref, detector, False, **kwargs)
    return mu, sigma, info


def reference_features(ref: str, detector: inception.Detector, **kwargs
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """`reference_stats` and the reference's pool3 features, float32 `(N, 2048)`, which KID and
    precision/recall compare with. A named set's are cached beside its statistics (`-features.npy`,
    400 MB for CIFAR-10's 50,000); a statistics .npz has none, which is an error."""
    return _reference(ref, detector, True, **kwargs)


def check_reference(ref: str, want_features: bool = False, data_root: str | Path = "data",
                    download: bool = True) -> str:
    """What kind of reference `ref` is ("named", "stats", "images" (.npz) or "folder"), after the
    checks that need no detector: called before the detector loads (which may download its weights,
    with torch hub's chatter), so that a bad reference is one line and nothing else."""
    if ref in REFERENCES:
        check_files(*REFERENCES[ref], data_root, download)
        return "named"
    path = Path(ref)
    if path.suffix == ".npz" and path.is_file():
        with open_npz(path) as arrays:  # the array names only: an .npz of images can be large
            if holds_images(arrays):
                return "images"
        if want_features:
            raise SnganError(f"reference '{ref}' is a statistics file: KID, precision/recall and intra-FID need "
                             "the reference's images (a folder, an .npz of images or a named set)")
        return "stats"
    if path.is_dir():
        list_images(path)  # a folder without images
        return "folder"
    raise UsageError(f"reference '{ref}' is not a named set ({', '.join(REFERENCES)}), an image "
                     "folder, or an existing .npz of statistics or images")


def _reference(ref: str, detector: inception.Detector, want_features: bool, *, data_root: str | Path = "data",
               resolution: int = 32, download: bool = True, num_images: int = 0, batch_size: int = 100,
               cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """`reference_stats`, with the features third (None unless `want_features`)."""
    kind, path = check_reference(ref, want_features, data_root, download), Path(ref)
    if kind == "named":
        return _named_reference(ref, detector, want_features, data_root, resolution, download, num_images,
                                batch_size, Path(cache_dir or inception.default_cache_dir()) / "fid-stats")
    info = {"ref": ref, "detector": detector.name, "cached": False, "cache_file": None}
    if kind == "stats":
        arrays = read_npz(path)
        mu, sigma = _stats_from(arrays, path)
        # sngan records the detector in the statistics it writes; FIDs across detectors are meaningless.
        if "detector_sha256" in arrays and str(arrays["detector_sha256"]) != detector.weights_sha256:
            raise SnganError(f"'{path}' was computed with other Inception weights (sha256 "
                             f"{str(arrays['detector_sha256'])[:8]}, now {detector.weights_sha256[:8]}); "
                             "recompute it with these weights or pass the ones it was made with")
        num = int(arrays["num_images"]) if "num_images" in arrays else None
        if num_images and num != num_images:  # statistics cannot be cut to their first N images
            held = "an unrecorded number of" if num is None else num
            raise UsageError(f"--ref-images (eval.ref_images) is {num_images} but '{ref}' holds the statistics "
                             f"of {held} images, not images to take {num_images} of: set it to 0 "
                             "or use another reference")
        return mu, sigma, None, {**info, "num_ref": num}
    # Folders are never cached: their contents can change without their path changing.
    images = npz_images(read_npz(path), path) if kind == "images" else _folder_images(path)
    images = first_images(images, num_images, ref)
    features = inception.extract(detector, images, batch_size, desc="reference features")[0]
    # float32 as cached: the detector computes in float32, so nothing is lost.
    kept = features.astype(np.float32) if want_features else None
    return *statistics(features), kept, {**info, "num_ref": len(images)}


def features_path(stats_file: Path) -> Path:
    """Where a cached reference's features live: beside its statistics, keyed the same."""
    return stats_file.with_name(stats_file.stem + "-features.npy")


def _named_reference(ref, detector, want_features, data_root, resolution, download, num_images, batch_size,
                     cache_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    name, split = REFERENCES[ref]

    def cache_entry() -> tuple[Path | None, str]:
        """The cache file and its key (JSON), or None when the source files are not on disk to fingerprint.

        The key holds the requested count and each source file's name and size, so a hit costs
        one stat() per file instead of decoding the data set (STL-10 is 2.7 GB)."""
        files = reference_files(ref, data_root)
        if not all(p.is_file() for p in files):
            return None, ""
        key = json.dumps({"version": CACHE_VERSION, "ref": ref, "dataset": name, "split": split,
                          "resolution": resolution, "num_images": num_images or "all",
                          "files": [[p.name, p.stat().st_size] for p in files],
                          "detector_sha256": detector.weights_sha256}, sort_keys=True)
        count = f"n{num_images}" if num_images else "all"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cache_dir / f"{ref}-{resolution}px-{count}-{digest}.npz", key

    info = {"ref": ref, "split": split, "resolution": resolution, "detector": detector.name}
    cache_file, _ = cache_entry()
    # Features only when asked for: statistics cached without them are computed again with them.
    if cache_file is not None and cache_file.is_file() and (not want_features or features_path(cache_file).is_file()):
        arrays = read_npz(cache_file)
        if int(arrays["num_images"]) < num_images:  # cached by a version that took fewer silently
            raise _too_few(ref, num_images, int(arrays["num_images"]))
        mu, sigma = _stats_from(arrays, cache_file)
        features = np.load(features_path(cache_file), allow_pickle=False) if want_features else None
        return mu, sigma, features, {**info, "num_ref": int(arrays["num_images"]), "cached": True,
                                     "cache_file": str(cache_file)}
    images = load_reference(ref, data_root, resolution, download)  # downloads when allowed
    images = first_images(images, num_images, ref)
    features = inception.extract(detector, images, batch_size, desc=f"{ref} features")[0]
    mu, sigma = statistics(features)
    features = features.astype(np.float32) if want_features else None
    cache_file, key = cache_entry()  # the files exist now
    save_stats(cache_file, mu, sigma, num_images=len(images), detector_sha256=detector.weights_sha256, cache_key=key)
    if want_features:
        atomic_write(features_path(cache_file), lambda f: np.save(f, features), "reference features")
    return mu, sigma, features, {**info, "num_ref": len(images), "cached": False, "cache_file": str(cache_file)}
