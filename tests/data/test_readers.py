from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from formats import write_cifar10, write_stl10
from sngan.config import DataConfig
from sngan.data import datasets, readers
from sngan.errors import SnganError


def test_cifar10_real_format(tmp_path):
    expected = write_cifar10(tmp_path, n_per_batch=3)
    images = datasets.load_images(DataConfig(name="cifar10", root=str(tmp_path), download=False))
    assert images.dtype == torch.uint8 and images.shape == (15, 3, 32, 32)
    assert np.array_equal(images.numpy(), expected)
    test = readers.load_cifar10(tmp_path, "test", download=False)
    assert test.images.shape == (3, 3, 32, 32) and test.labels.shape == (3,)


def test_stl10_real_format_column_major_and_resized(tmp_path):
    written = write_stl10(tmp_path, n_unlabeled=4, n_train=2)
    raw = readers.read_stl10(tmp_path, "unlabeled")
    assert np.array_equal(raw.numpy(), written["unlabeled"])  # orientation survives the transpose
    images = datasets.load_images(DataConfig(name="stl10", root=str(tmp_path), resolution=48, download=False))
    assert images.shape == (6, 3, 48, 48) and images.dtype == torch.uint8


def test_missing_data_without_download_says_how_to_get_it(tmp_path):
    with pytest.raises(SnganError, match=r"CIFAR-10 not found .*data.download=true \(eval-fid: --download\)"):
        datasets.load_images(DataConfig(name="cifar10", root=str(tmp_path), download=False))
    with pytest.raises(SnganError, match="STL-10 not found .*stl10_binary"):
        datasets.load_images(DataConfig(name="stl10", root=str(tmp_path), resolution=48, download=False))


def test_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(SnganError, match="downloading CIFAR-10 failed .*network unreachable"):
        datasets.load_images(DataConfig(name="cifar10", root=str(tmp_path), download=True))


def test_corrupt_cifar_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(SnganError, match="cannot read CIFAR-10 file .*data_batch_3"):
        readers.load_cifar10(tmp_path, "train", download=False)



def test_short_cifar_batch_is_one_clear_line(tmp_path):
    import pickle
    write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:  # cut off mid-image
        pickle.dump({"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(SnganError, match="cannot read CIFAR-10 file .*data_batch_2.*download it again"):
        readers.load_cifar10(tmp_path, "train", download=False)


@pytest.mark.parametrize("name, dataset", [("cifar10", "CIFAR10"), ("stl10", "STL10")])
def test_download_is_torchvisions_whole_archive(tmp_path, monkeypatch, name, dataset):
    """torchvision downloads and unpacks the archive (every split); sngan then reads the files itself."""
    import torchvision

    calls = []

    def download(root, **kwargs):
        calls.append((root, kwargs))
        (write_cifar10 if name == "cifar10" else write_stl10)(Path(root))
    monkeypatch.setattr(torchvision.datasets, dataset, download)
    split = "train" if name == "cifar10" else "unlabeled+train"
    loaded = getattr(readers, f"load_{name}")(tmp_path, split, download=True)
    assert calls == [(str(tmp_path), {"download": True})]  # no split: the archive is the same for all
    assert len(loaded.images) == (20 if name == "cifar10" else 9)
    getattr(readers, f"load_{name}")(tmp_path, split, download=True)
    assert len(calls) == 1  # files present: no second download

def _png(path, size, colour):
    Image.new("RGB", size, colour).save(path)


def test_image_folder_crops_and_resizes(tmp_path):
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "a.png", (64, 40), (255, 0, 0))
    _png(tmp_path / "sub" / "b.jpg", (20, 30), (0, 0, 255))
    (tmp_path / "notes.txt").write_text("not an image")  # ignored: not an image extension
    images = datasets.load_images(DataConfig(name="folder", root=str(tmp_path), resolution=16))
    assert images.shape == (2, 3, 16, 16)
    assert images[0, 0].float().mean() > 250 and images[1, 2].float().mean() > 240


def test_image_folder_errors(tmp_path):
    with pytest.raises(SnganError, match=r"does not exist; check the path \(data.root, or eval-fid's --images/--ref\)"):
        readers.list_images(tmp_path / "missing")
    (tmp_path / "a.txt").write_text("text")
    with pytest.raises(SnganError, match="a.txt' is a file, not an image folder"):
        readers.list_images(tmp_path / "a.txt")
    (tmp_path / "a.txt").unlink()
    with pytest.raises(SnganError, match="has no images$|has no images;"):
        readers.list_images(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(SnganError, match=r"has no images \(it holds 1 other files\)"):
        readers.list_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SnganError, match="cannot read image .*broken.png"):
        readers.load_folder(tmp_path, 8)


def test_npz_data_set_nhwc_or_nchw_and_resized(tmp_path):
    """`data.name: npz` reads uint8 images (N, H, W, 3) under any known key, as `sngan sample` writes."""
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", x_train=nhwc, y_train=np.arange(5))  # a Keras-style subset
    images = datasets.load_images(DataConfig(name="npz", root=str(tmp_path / "train.npz"), resolution=16))
    assert images.dtype == torch.uint8 and np.array_equal(images.permute(0, 2, 3, 1).numpy(), nhwc)
    np.savez(tmp_path / "nchw.npz", images=nhwc.transpose(0, 3, 1, 2))
    images = datasets.load_images(DataConfig(name="npz", root=str(tmp_path / "nchw.npz"), resolution=8, num_images=3))
    assert images.shape == (3, 3, 8, 8)


def test_npz_data_set_errors(tmp_path):
    def load(path):
        datasets.load_images(DataConfig(name="npz", root=str(path)))
    with pytest.raises(SnganError, match="is not a .npz file; for data.name npz, set data.root"):
        load(tmp_path / "missing.npz")
    np.savez(tmp_path / "floats.npz", images=np.zeros((2, 32, 32, 3), dtype=np.float32))
    with pytest.raises(SnganError, match=r"array 'images' is float32 \(2, 32, 32, 3\); expected uint8"):
        load(tmp_path / "floats.npz")
    np.savez(tmp_path / "labels.npz", y_train=np.arange(3))
    with pytest.raises(SnganError, match="has no image array .*it has: y_train"):
        load(tmp_path / "labels.npz")
    np.savez(tmp_path / "wide.npz", images=np.zeros((2, 32, 48, 3), dtype=np.uint8))
    with pytest.raises(SnganError, match="48x32 images; training needs square images"):
        load(tmp_path / "wide.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(SnganError, match="cannot read .* as a .npz file"):
        load(tmp_path / "bad.npz")
