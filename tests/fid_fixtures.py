"""Offline Inception weights for FID tests: pytorch-fid's architecture, random He-normal weights.

The real weights are a 95 MB download; tests build a stand-in with the same keys and shapes
(including the 1008-class `fc`) so that pytorch-fid and sngan load it from the torch hub cache.
Also the detector built from them and two small image sets, shared by the FID test files.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
from pytorch_fid import inception as pfi

from PIL import Image

from sngan.data import datasets
from sngan.metrics.detector import FEATURE_DIM, FID_WEIGHTS_FILE, Detector, fid_inception, load_detector

# The fixtures, for conftest's `import *`; the helpers are imported by name.
__all__ = ["fid_weights_file", "torch_home", "detector", "pool3_only_weights", "zero_fc_weights", "image_sets",
           "image_dirs", "pixel_mean_detector"]

NUM = 10  # images per test set: enough for distinct statistics, few enough for a CPU


def random_weights(path: str | Path, seed: int = 0, with_fc: bool = True) -> Path:
    """Save pytorch-fid's FID Inception with random weights to `path`; deterministic in `seed`.

    The architecture, and so every forward pass's cost, is the real one, but FIDs made with it
    compare with nothing published. Convs are He-normal because PyTorch's default init shrinks
    pool3 features to ~1e-8, where every FID is ~0. Batch norms get random statistics and affine
    parameters, as trained ones have.
    """
    net = fid_inception()
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


def make_fid_weights(path: Path, seed: int, with_fc: bool = True) -> Path:
    """A randomly initialised FID Inception state dict at `path`, deterministic in `seed`."""
    return random_weights(path, seed, with_fc)


def pytorch_fid_network(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """pytorch-fid's own `InceptionV3([3])` with `state`, untouched: batch norms, default layout.

    The reference that sngan's detector is checked against. pytorch-fid's constructor always
    downloads its weights, so for this call only its download returns `state` instead.
    """
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *args, **kwargs: state):
        return pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()


@pytest.fixture(scope="session")
def fid_weights_file(tmp_path_factory) -> Path:
    """A stand-in for pt_inception-2015-12-05-6726825d.pth, built once per test session."""
    return make_fid_weights(tmp_path_factory.mktemp("fid-weights") / FID_WEIGHTS_FILE, seed=0)


@pytest.fixture
def torch_home(fid_weights_file, tmp_path, monkeypatch) -> Path:
    """TORCH_HOME whose hub cache holds the test weights, and an empty SNGAN_CACHE.

    Both pytorch-fid (subprocesses included) and sngan then find the weights without network.
    """
    home = tmp_path / "torch"
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / FID_WEIGHTS_FILE).symlink_to(fid_weights_file)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("SNGAN_CACHE", str(tmp_path / "sngan-cache"))
    monkeypatch.delenv("SNGAN_INCEPTION_WEIGHTS", raising=False)
    return home


@pytest.fixture(scope="session")
def detector(fid_weights_file) -> Detector:
    """sngan's detector with the test weights (loading one takes 2-4 s, so once per session)."""
    return load_detector(str(fid_weights_file))


@pytest.fixture
def pixel_mean_detector() -> Detector:
    """A Detector whose "network" is each image's mean pixel in [0, 1], repeated 2048 times: for
    tests of what happens around the features, in microseconds instead of seconds. `.sizes`
    records how many images each forward got."""
    class PixelMean(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sizes = []

        def forward(self, x):
            self.sizes.append(len(x))
            return x.mean(dim=(1, 2, 3))[:, None].expand(-1, FEATURE_DIM)

    return Detector(PixelMean(), None, torch.device("cpu"), Path("pixel-mean.pth"), "f" * 64)


@pytest.fixture(scope="session")
def pool3_only_weights(tmp_path_factory) -> Path:
    """The test weights without `fc`: same pool3 features, no logits."""
    return make_fid_weights(tmp_path_factory.mktemp("pool3-only") / "pool3.pth", seed=0, with_fc=False)


@pytest.fixture(scope="session")
def zero_fc_weights(fid_weights_file, tmp_path_factory) -> Path:
    """The test weights with an all-zero `fc`, the placeholder pytorch-fid needs where the classifier
    is absent: same pool3 features, and logits that would make every Inception Score exactly 1."""
    state = torch.load(fid_weights_file, weights_only=True)
    state["fc.weight"], state["fc.bias"] = torch.zeros_like(state["fc.weight"]), torch.zeros_like(state["fc.bias"])
    path = tmp_path_factory.mktemp("zero-fc") / "zero-fc.pth"
    torch.save(state, path)
    return path


def write_pngs(folder: Path, images: torch.Tensor) -> Path:
    """uint8 `(N, 3, H, W)` images as `folder/000.png`, ..."""
    folder.mkdir(parents=True)
    for i, im in enumerate(images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    return folder


def reference_folder(path: Path) -> Path:
    """12 synthetic shapes (seed 5) as PNGs: a small FID reference for runs that evaluate."""
    return write_pngs(path, datasets.synthetic_shapes(12, 32, seed=5))


@pytest.fixture(scope="session")
def image_sets() -> dict[str, torch.Tensor]:
    """Two differently distributed sets of uint8 (10, 3, 32, 32): shapes and uniform noise."""
    noise = torch.randint(0, 256, (NUM, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return {"shapes": datasets.synthetic_shapes(NUM, 32, seed=0), "noise": noise}


@pytest.fixture(scope="session")
def image_dirs(image_sets, tmp_path_factory) -> dict[str, Path]:
    """`image_sets` as folders of PNGs."""
    root = tmp_path_factory.mktemp("images")
    return {name: write_pngs(root / name, images) for name, images in image_sets.items()}
