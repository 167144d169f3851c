"""Class-conditional SN-GAN: labelled data, conditional BatchNorm in G, the projection D, class
sampling and export."""

import numpy as np
import pytest
import torch
from PIL import Image

import sngan
from conftest import TINY_RESNET, cli
from formats import write_cifar10, write_stl10
from sngan import config
from sngan.config import DataConfig, ModelConfig
from sngan.data import datasets, readers
from sngan.errors import UsageError
from sngan.models import networks
from sngan.runs import checkpoint, run_folder


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values for every parameter, so that per-class gains and biases differ by class."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 2 and p.shape[0] == 3 else 0.0))


# ---------------------------------------------------------------------------------------------
# Models


def test_conditional_shapes_and_labels_required():
    G, D = networks.build(ModelConfig(**TINY_RESNET), 32, num_classes=5)
    z, y = torch.randn(6, 16), torch.arange(6) % 5
    x = G(z, y)
    assert x.shape == (6, 3, 32, 32) and D(x, y).shape == (6,)
    with pytest.raises(ValueError, match="class-conditional"):
        G(z)
    with pytest.raises(ValueError, match="class-conditional"):
        D(x)
    with pytest.raises(ValueError, match="number of classes"):
        networks.build(ModelConfig(**TINY_RESNET), 32)
    # SN on the embedding
    assert isinstance(D.embed.parametrizations.weight[0], sngan.models.spectral_norm.SpectralNorm)


def test_conditional_batchnorm_uses_the_labels():
    G, _ = networks.build(ModelConfig(**TINY_RESNET), 32, num_classes=4)
    _perturb(G)
    G.eval()
    z = torch.randn(4, 16)
    same, other = G(z, torch.tensor([0, 1, 2, 3])), G(z, torch.tensor([1, 1, 2, 0]))
    assert torch.equal(same[1:3], other[1:3])  # same class, same image
    assert not torch.allclose(same[0], other[0]) and not torch.allclose(same[3], other[3])


def test_projection_term_is_the_embedding_dot_the_pooled_features():
    _, D = networks.build(ModelConfig(**TINY_RESNET), 32, num_classes=3)
    D.eval()
    x, y = torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        h = torch.relu(D.bn(D.blocks(x))).sum(dim=(2, 3))
        expected = D.fc(h).squeeze(1) + (D.embed.weight[y] * h).sum(1)
        assert torch.allclose(D(x, y), expected, atol=1e-5)
        assert not torch.allclose(D(x, y), D(x, (y + 1) % 3))


def test_conditional_needs_resnet():
    with pytest.raises(UsageError, match="model.conditional.*resnet"):
        config.from_dict({"model": {"arch": "dcgan", "conditional": True}})


# ---------------------------------------------------------------------------------------------
# Labels


def test_labels_from_every_kind_of_data(tmp_path):
    write_cifar10(tmp_path / "c")
    cifar = datasets.load_labelled(DataConfig(name="cifar10", root=str(tmp_path / "c"), download=False))
    assert cifar.classes == readers.CIFAR10_CLASSES and cifar.labels.shape == (20,)
    with open(tmp_path / "c" / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        import pickle
        assert cifar.labels[:4].tolist() == [int(v) for v in pickle.load(f)["labels"]]

    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "l.npz", x_train=images, y_train=np.array([0, 2, 1, 2, 0, 1]),
             class_names=np.array(["a", "b", "c"]))
    npz = datasets.load_labelled(DataConfig(name="npz", root=str(tmp_path / "l.npz"), resolution=8))
    assert npz.labels.tolist() == [0, 2, 1, 2, 0, 1] and npz.classes == ("a", "b", "c")

    for name, colour in (("cats", "red"), ("dogs", "blue")):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), colour).save(tmp_path / "f" / name / f"{i}.png")
    folder = datasets.load_labelled(DataConfig(name="folder", root=str(tmp_path / "f"), resolution=8))
    assert folder.classes == ("cats", "dogs") and folder.labels.tolist() == [0, 0, 1, 1]
    assert folder.images[0, 0, 0, 0] == 255 and folder.images[2, 2, 0, 0] == 255  # red cats, blue dogs

    shapes = datasets.load_labelled(DataConfig(name="synthetic", resolution=16, num_images=64))
    assert shapes.classes == datasets.SHAPE_CLASSES and set(shapes.labels.tolist()) == {0, 1}


def test_unlabelled_data_is_one_clear_error(tmp_path):
    write_stl10(tmp_path)
    with pytest.raises(UsageError, match="has none; STL-10's labelled splits"):
        datasets.load_labelled(DataConfig(name="stl10", root=str(tmp_path), resolution=48, download=False))
    np.savez(tmp_path / "u.npz", images=np.zeros((4, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(UsageError, match="add a label array"):
        datasets.load_labelled(DataConfig(name="npz", root=str(tmp_path / "u.npz"), resolution=8))
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(UsageError, match="one sub-folder per class"):
        datasets.load_labelled(DataConfig(name="folder", root=str(tmp_path), resolution=8))


def test_training_on_unlabelled_data_exits_with_one_line(tmp_path, capsys):
    np.savez(tmp_path / "u.npz", images=np.zeros((16, 32, 32, 3), dtype=np.uint8))
    code, _, err = cli(capsys, "train", "-c", "quickstart", "--out", tmp_path / "runs", "--set", "model.arch=resnet",
                        "--set", "model.conditional=true", "--set", "data.name=npz", "--set", f"data.root={tmp_path / 'u.npz'}")
    assert code == 2 and "model.conditional needs class labels" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ---------------------------------------------------------------------------------------------
# Training and sampling


def test_conditional_run_records_classes_and_draws_a_row_per_class(conditional_run):
    state = checkpoint.load(conditional_run / "latest.pt")
    assert state["classes"] == list(datasets.SHAPE_CLASSES)
    grid = Image.open(conditional_run / run_folder.grid_name(3))
    assert grid.size == (2 + 3 * 34, 2 + 2 * 34)  # 2 classes x 3 samples, 32 px, padding 2


def test_sample_class_by_name_or_index(conditional_run, tmp_path, capsys):
    code, _, err = cli(capsys, "sample", "--checkpoint", conditional_run, "--num", 5, "--class", "disc",
                        "--out", tmp_path / "disc.npz")
    assert code == 0, err
    with np.load(tmp_path / "disc.npz") as f:
        assert f["labels"].tolist() == [1] * 5 and f["class_names"].tolist() == list(datasets.SHAPE_CLASSES)
        disc = f["images"]
    G = sngan.load(conditional_run, device="cpu")
    assert G.classes == datasets.SHAPE_CLASSES
    assert np.array_equal(G.sample_uint8(5, label=1), disc) and np.array_equal(G.sample_uint8(5, label="disc"), disc)
    assert not np.array_equal(G.sample_uint8(5, label="square"), disc)
    code, _, err = cli(capsys, "sample", "--checkpoint", conditional_run, "--num", 2, "--class", "cat",
                        "--out", tmp_path / "x.npz")
    assert code == 2 and "unknown class 'cat'; the checkpoint's classes are 0: square, 1: disc" in err


def test_exported_conditional_generator_takes_labels(conditional_run, tmp_path):
    G = sngan.load(conditional_run, device="cpu")
    G.export(tmp_path / "g.pt2")
    program = torch.export.load(str(tmp_path / "g.pt2")).module()
    z, y = G.sample_z(3, seed=1), torch.tensor([1, 0, 1])
    assert torch.allclose(program(z, y), G(z, y), atol=1e-6)
