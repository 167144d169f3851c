"""What FID compares (`sngan.metrics.fid_stats`): image sets, statistics files, and the cache of named
reference statistics, with random He-initialised Inception weights (no network)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fid_fixtures import NUM
from formats import write_cifar10
from sngan.errors import SnganError, UsageError
from sngan.metrics import detector as inception
from sngan.metrics import fid_stats

# ---------------------------------------------------------------------------------------------
# Image sets


def test_npz_images_equal_the_folder(image_sets, image_dirs, tmp_path):
    """The same pixels reach Inception from a folder, a NHWC .npz and a NCHW .npz, so their
    FIDs are equal."""
    images = image_sets["shapes"]
    np.savez(tmp_path / "nhwc.npz", images=images.permute(0, 2, 3, 1).numpy())
    np.savez(tmp_path / "nchw.npz", images.numpy())  # stored as arr_0
    assert torch.equal(fid_stats.load_image_set(image_dirs["shapes"]), images)
    assert torch.equal(fid_stats.load_image_set(tmp_path / "nhwc.npz"), images)
    assert torch.equal(fid_stats.load_image_set(tmp_path / "nchw.npz"), images)
    np.savez(tmp_path / "float.npz", images=images.float().numpy())
    with pytest.raises(SnganError, match="expected uint8"):
        fid_stats.load_image_set(tmp_path / "float.npz")


def test_folder_of_mixed_sizes_is_an_error(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    Image.new("RGB", (48, 32)).save(folder / "b.png")
    with pytest.raises(SnganError, match="different sizes"):
        fid_stats.load_image_set(folder)


# ---------------------------------------------------------------------------------------------
# Statistics files


def test_stats_round_trip_and_stats_file_as_reference(detector, image_dirs, tmp_path):
    mu, sigma, info = fid_stats.reference_stats(str(image_dirs["noise"]), detector, batch_size=5)
    assert info["num_ref"] == NUM and info["cached"] is False and info["cache_file"] is None
    path = fid_stats.save_stats(tmp_path / "noise.npz", mu, sigma, num_images=NUM,
                                detector_sha256=detector.weights_sha256)
    with np.load(path) as f:  # what pytorch-fid reads
        np.testing.assert_array_equal(f["mu"], mu)
        np.testing.assert_array_equal(f["sigma"], sigma)
    mu2, sigma2, info2 = fid_stats.reference_stats(str(path), detector)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    assert info2["num_ref"] == NUM
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_stats_file_errors(detector, tmp_path):
    np.savez(tmp_path / "nomu.npz", mean=np.zeros(3))
    with pytest.raises(SnganError, match=r"nomu\.npz' has no 'mu' and 'sigma'"):
        fid_stats.load_stats(tmp_path / "nomu.npz")
    with pytest.raises(SnganError, match="has no 'mu' and 'sigma'"):
        fid_stats.reference_stats(str(tmp_path / "nomu.npz"), detector)
    fid_stats.save_stats(tmp_path / "other.npz", np.zeros(2048), np.eye(2048), detector_sha256="0" * 64)
    with pytest.raises(SnganError, match="other Inception weights"):
        fid_stats.reference_stats(str(tmp_path / "other.npz"), detector)
    with pytest.raises(UsageError, match="must end in .npz"):
        fid_stats.save_stats(tmp_path / "stats.txt", np.zeros(2), np.eye(2))
    with pytest.raises(UsageError, match="not a named set"):
        fid_stats.reference_stats(str(tmp_path / "nowhere"), detector)


# ---------------------------------------------------------------------------------------------
# Named reference statistics


def test_named_reference_stats_are_cached_by_what_they_depend_on(detector, pool3_only_weights, tmp_path):
    write_cifar10(tmp_path / "data", n_per_batch=1)  # 5 train images
    cache = tmp_path / "cache"
    kwargs = dict(data_root=tmp_path / "data", resolution=32, download=False, batch_size=5, cache_dir=cache)
    mu, sigma, first = fid_stats.reference_stats("cifar10-train", detector, **kwargs)
    assert first["cached"] is False and first["num_ref"] == 5 and Path(first["cache_file"]).is_file()
    assert Path(first["cache_file"]).parent == cache / "fid-stats"
    assert Path(first["cache_file"]).name.startswith("cifar10-train-32px-all-")

    def must_not_load(*args, **kwargs):
        raise AssertionError("a cache hit must not decode the data set")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fid_stats, "load_reference", must_not_load)
        mu2, sigma2, second = fid_stats.reference_stats("cifar10-train", detector, **kwargs)
    assert second["cached"] is True and second["cache_file"] == first["cache_file"] and second["num_ref"] == 5
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)

    _, _, fewer = fid_stats.reference_stats("cifar10-train", detector, **kwargs, num_images=3)
    assert fewer["cached"] is False and fewer["num_ref"] == 3
    other = inception.load_detector(str(pool3_only_weights))  # another weights file, another sha256
    _, _, reweighted = fid_stats.reference_stats("cifar10-train", other, **kwargs)
    assert reweighted["cached"] is False
    write_cifar10(tmp_path / "data", n_per_batch=2, seed=1)  # the data set changed on disk
    _, _, changed = fid_stats.reference_stats("cifar10-train", detector, **kwargs)
    assert changed["cached"] is False and changed["num_ref"] == 10
    entries = (first, fewer, reweighted, changed)
    assert len({i["cache_file"] for i in entries}) == 4
    assert sorted(p.name for p in (cache / "fid-stats").iterdir()) == sorted(
        Path(i["cache_file"]).name for i in entries)  # no temporary files left


def test_named_reference_cache_defaults_to_sngan_cache(pixel_mean_detector, tmp_path, monkeypatch):
    """Without `cache_dir`, named reference statistics go to $SNGAN_CACHE/fid-stats."""
    write_cifar10(tmp_path / "data", n_per_batch=1)
    monkeypatch.setenv("SNGAN_CACHE", str(tmp_path / "sngan-cache"))
    _, _, info = fid_stats.reference_stats("cifar10-train", pixel_mean_detector, data_root=tmp_path / "data",
                                           download=False, batch_size=5)
    assert Path(info["cache_file"]).parent == tmp_path / "sngan-cache" / "fid-stats"


# ---------------------------------------------------------------------------------------------
# Reference features (KID, precision/recall)


def test_named_reference_features_are_cached_beside_the_statistics_only_when_asked(pixel_mean_detector,
                                                                                    tmp_path):
    write_cifar10(tmp_path / "data", n_per_batch=1)  # 5 train images
    kwargs = dict(data_root=tmp_path / "data", download=False, batch_size=5, cache_dir=tmp_path / "cache")
    mu, sigma, info = fid_stats.reference_stats("cifar10-train", pixel_mean_detector, **kwargs)
    feature_file = fid_stats.features_path(Path(info["cache_file"]))
    assert not feature_file.exists()  # FID alone does not pay for them

    mu2, sigma2, features, first = fid_stats.reference_features("cifar10-train", pixel_mean_detector, **kwargs)
    assert first["cached"] is False and first["cache_file"] == info["cache_file"] and feature_file.is_file()
    assert feature_file.name == Path(info["cache_file"]).stem + "-features.npy"
    assert features.dtype == np.float32 and features.shape == (5, 2048)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_allclose(features.mean(axis=0), mu, rtol=1e-6)  # the same images' features
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fid_stats, "load_reference", lambda *a, **k: pytest.fail("a cache hit must not decode"))
        _, _, again, second = fid_stats.reference_features("cifar10-train", pixel_mean_detector, **kwargs)
    assert second["cached"] is True
    np.testing.assert_array_equal(again, features)
    assert not list((tmp_path / "cache" / "fid-stats").glob(".*tmp*"))


def test_image_references_give_features_and_statistics_files_cannot(detector, image_sets, image_dirs, tmp_path):
    expected = inception.extract(detector, image_sets["noise"], 5)[0]
    np.savez(tmp_path / "noise.npz", images=image_sets["noise"].numpy())
    for ref in (image_dirs["noise"], tmp_path / "noise.npz"):
        mu, sigma, features, info = fid_stats.reference_features(str(ref), detector, batch_size=5)
        np.testing.assert_array_equal(features, expected.astype(np.float32))
        np.testing.assert_array_equal(mu, expected.mean(axis=0))  # statistics of the float64 features, as before
        assert info["num_ref"] == NUM
    fid_stats.save_stats(tmp_path / "stats.npz", mu, sigma)
    with pytest.raises(SnganError, match="is a statistics file: KID, precision/recall and intra-FID need the reference's images"):
        fid_stats.reference_features(str(tmp_path / "stats.npz"), detector)


# ---------------------------------------------------------------------------------------------
# The reference's size: asked for N images, fewer is an error


def test_a_reference_smaller_than_asked_is_refused_before_any_forward(pixel_mean_detector, image_sets, image_dirs,
                                                                      tmp_path, monkeypatch):
    """`num_images` N of a named split, a folder or an .npz of images that holds fewer: one line that
    says so, before the detector runs (its statistics or features would be named for N images), for
    statistics and features (FID; KID, precision/recall and intra-FID) alike."""
    write_cifar10(tmp_path / "data", n_per_batch=2)  # a partial test split: 2 images
    np.savez(tmp_path / "noise.npz", images=image_sets["noise"].numpy())
    kwargs = dict(data_root=tmp_path / "data", download=False, batch_size=5, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(inception, "extract", lambda *a, **k: pytest.fail("the detector ran before the check"))
    for ref, has, asked in (("cifar10-test", 2, 10_000), (str(image_dirs["noise"]), NUM, NUM + 1),
                            (str(tmp_path / "noise.npz"), NUM, 1000)):
        for load in (fid_stats.reference_stats, fid_stats.reference_features):
            with pytest.raises(UsageError) as e:
                load(ref, pixel_mean_detector, **kwargs, num_images=asked)
            assert str(e.value) == (f"--ref-images (eval.ref_images) is {asked} but reference '{ref}' has {has} "
                                    "images: lower it (0 uses all of them) or use another reference")
    assert not (tmp_path / "cache").exists()  # nothing cached under the count asked for


def test_the_first_n_images_of_any_image_reference(pixel_mean_detector, image_sets, image_dirs, tmp_path):
    """`num_images` takes the first N of a folder (sorted file names) or an .npz as of a named set."""
    expected = inception.extract(pixel_mean_detector, image_sets["noise"][:4])[0]
    np.savez(tmp_path / "noise.npz", images=image_sets["noise"].numpy())
    for ref in (image_dirs["noise"], tmp_path / "noise.npz"):
        mu, _, features, info = fid_stats.reference_features(str(ref), pixel_mean_detector, num_images=4)
        assert info["num_ref"] == 4 and len(features) == 4
        np.testing.assert_array_equal(mu, expected.mean(axis=0))


def test_statistics_files_and_stale_caches_cannot_pass_for_n_images(pixel_mean_detector, tmp_path, monkeypatch):
    """A statistics file holds the statistics of all its images, which cannot be cut to the first N:
    `num_images` must be the count it records. A cache entry written for N images that holds fewer
    (as versions that silently took fewer wrote them) is refused like the data set itself."""
    fid_stats.save_stats(tmp_path / "stats.npz", np.zeros(2048), np.eye(2048), num_images=10)
    fid_stats.save_stats(tmp_path / "unrecorded.npz", np.zeros(2048), np.eye(2048))
    assert fid_stats.reference_stats(str(tmp_path / "stats.npz"), pixel_mean_detector, num_images=10)[2]["num_ref"] == 10
    for name, held in (("stats.npz", "10"), ("unrecorded.npz", "an unrecorded number of")):
        with pytest.raises(UsageError, match=f"is 5 but '.*{name}' holds the statistics of {held} images, "
                                             "not images to take 5 of: set it to 0 or use another reference"):
            fid_stats.reference_stats(str(tmp_path / name), pixel_mean_detector, num_images=5)

    write_cifar10(tmp_path / "data", n_per_batch=2)  # 2 test images
    kwargs = dict(data_root=tmp_path / "data", download=False, batch_size=5, cache_dir=tmp_path / "cache",
                  num_images=3)
    with monkeypatch.context() as m:  # the old behaviour: the first 3 of 2 are the 2
        m.setattr(fid_stats, "first_images", lambda images, n, ref: images[:n])
        assert fid_stats.reference_stats("cifar10-test", pixel_mean_detector, **kwargs)[2]["num_ref"] == 2
    with pytest.raises(UsageError, match="is 3 but reference 'cifar10-test' has 2 images"):
        fid_stats.reference_stats("cifar10-test", pixel_mean_detector, **kwargs)
