"""Class-conditional SN-GAN: labelled data, conditional BatchNorm in G, the projection D, class
sampling, class-balanced FID and intra-class FID."""

import numpy as np
import pytest
import torch
from PIL import Image

import sngan
from conftest import cli
from formats import write_cifar10, write_stl10
from sngan import checkpoint, config, data, models, readers, runs, train
from sngan.config import DataConfig, ModelConfig
from sngan.errors import UsageError
from sngan.evaluate import eval_fid
from sngan.fid_result import format_result
from sngan.sample import generate_batches, load_generator

TINY_RESNET = {"arch": "resnet", "g_ch": 8, "d_ch": 8, "z_dim": 16, "conditional": True}


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values for every parameter, so that per-class gains and biases differ by class."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 2 and p.shape[0] == 3 else 0.0))


# ---------------------------------------------------------------------------------------------
# Models


def test_conditional_shapes_and_labels_required():
    G, D = models.build(ModelConfig(**TINY_RESNET), 32, num_classes=5)
    z, y = torch.randn(6, 16), torch.arange(6) % 5
    x = G(z, y)
    assert x.shape == (6, 3, 32, 32) and D(x, y).shape == (6,)
    with pytest.raises(ValueError, match="class-conditional"):
        G(z)
    with pytest.raises(ValueError, match="class-conditional"):
        D(x)
    with pytest.raises(ValueError, match="number of classes"):
        models.build(ModelConfig(**TINY_RESNET), 32)
    assert isinstance(D.embed.parametrizations.weight[0], sngan.spectral_norm.SpectralNorm)  # SN on the embedding


def test_conditional_batchnorm_uses_the_labels():
    G, _ = models.build(ModelConfig(**TINY_RESNET), 32, num_classes=4)
    _perturb(G)
    G.eval()
    z = torch.randn(4, 16)
    same, other = G(z, torch.tensor([0, 1, 2, 3])), G(z, torch.tensor([1, 1, 2, 0]))
    assert torch.equal(same[1:3], other[1:3])  # same class, same image
    assert not torch.allclose(same[0], other[0]) and not torch.allclose(same[3], other[3])


def test_projection_term_is_the_embedding_dot_the_pooled_features():
    _, D = models.build(ModelConfig(**TINY_RESNET), 32, num_classes=3)
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
    cifar = data.load_labelled(DataConfig(name="cifar10", root=str(tmp_path / "c"), download=False))
    assert cifar.classes == readers.CIFAR10_CLASSES and cifar.labels.shape == (20,)
    with open(tmp_path / "c" / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        import pickle
        assert cifar.labels[:4].tolist() == [int(v) for v in pickle.load(f)["labels"]]

    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "l.npz", x_train=images, y_train=np.array([0, 2, 1, 2, 0, 1]),
             class_names=np.array(["a", "b", "c"]))
    npz = data.load_labelled(DataConfig(name="npz", root=str(tmp_path / "l.npz"), resolution=8))
    assert npz.labels.tolist() == [0, 2, 1, 2, 0, 1] and npz.classes == ("a", "b", "c")

    for name, colour in (("cats", "red"), ("dogs", "blue")):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), colour).save(tmp_path / "f" / name / f"{i}.png")
    folder = data.load_labelled(DataConfig(name="folder", root=str(tmp_path / "f"), resolution=8))
    assert folder.classes == ("cats", "dogs") and folder.labels.tolist() == [0, 0, 1, 1]
    assert folder.images[0, 0, 0, 0] == 255 and folder.images[2, 2, 0, 0] == 255  # red cats, blue dogs

    shapes = data.load_labelled(DataConfig(name="synthetic", resolution=16, num_images=64))
    assert shapes.classes == data.SHAPE_CLASSES and set(shapes.labels.tolist()) == {0, 1}


def test_unlabelled_data_is_one_clear_error(tmp_path):
    write_stl10(tmp_path)
    with pytest.raises(UsageError, match="has none; STL-10's labelled splits"):
        data.load_labelled(DataConfig(name="stl10", root=str(tmp_path), resolution=48, download=False))
    np.savez(tmp_path / "u.npz", images=np.zeros((4, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(UsageError, match="add a label array"):
        data.load_labelled(DataConfig(name="npz", root=str(tmp_path / "u.npz"), resolution=8))
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(UsageError, match="one sub-folder per class"):
        data.load_labelled(DataConfig(name="folder", root=str(tmp_path), resolution=8))


def test_training_on_unlabelled_data_exits_with_one_line(tmp_path, capsys):
    np.savez(tmp_path / "u.npz", images=np.zeros((16, 32, 32, 3), dtype=np.uint8))
    code, _, err = cli(capsys, "train", "-c", "quickstart", "--out", tmp_path / "runs", "--set", "model.arch=resnet",
                        "--set", "model.conditional=true", "--set", "data.name=npz", "--set", f"data.root={tmp_path / 'u.npz'}")
    assert code == 2 and "model.conditional needs class labels" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ---------------------------------------------------------------------------------------------
# Training, sampling, FID


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A tiny conditional run on the two-class synthetic shapes, with DiffAugment."""
    tmp = tmp_path_factory.mktemp("cond")
    cfg = config.from_dict({
        "data": {"name": "synthetic", "resolution": 32, "num_images": 64}, "model": TINY_RESNET,
        "train": {"batch_size": 8, "steps": 3, "log_every": 1, "sample_every": 3, "checkpoint_every": 3,
                  "device": "cpu", "sample_grid": 6, "diffaug": "color,translation,cutout"},
        "out": {"root": str(tmp / "runs")}})
    run_dir = runs.new_run_dir(tmp / "runs", "cond")
    train.train(cfg, run_dir, progress=False)
    return run_dir


def test_conditional_run_records_classes_and_draws_a_row_per_class(conditional_run):
    state = checkpoint.load(conditional_run / "latest.pt")
    assert state["classes"] == list(data.SHAPE_CLASSES)
    grid = Image.open(conditional_run / runs.grid_name(3))
    assert grid.size == (2 + 3 * 34, 2 + 2 * 34)  # 2 classes x 3 samples, 32 px, padding 2


def test_sample_class_by_name_or_index(conditional_run, tmp_path, capsys):
    code, _, err = cli(capsys, "sample", "--checkpoint", conditional_run, "--num", 5, "--class", "disc",
                        "--out", tmp_path / "disc.npz")
    assert code == 0, err
    with np.load(tmp_path / "disc.npz") as f:
        assert f["labels"].tolist() == [1] * 5 and f["class_names"].tolist() == list(data.SHAPE_CLASSES)
        disc = f["images"]
    G = sngan.load(conditional_run, device="cpu")
    assert G.classes == data.SHAPE_CLASSES
    assert np.array_equal(G.sample_uint8(5, label=1), disc) and np.array_equal(G.sample_uint8(5, label="disc"), disc)
    assert not np.array_equal(G.sample_uint8(5, label="square"), disc)
    code, _, err = cli(capsys, "sample", "--checkpoint", conditional_run, "--num", 2, "--class", "cat",
                        "--out", tmp_path / "x.npz")
    assert code == 2 and "unknown class 'cat'; the checkpoint's classes are 0: square, 1: disc" in err


def test_class_balanced_samples_for_fid(conditional_run):
    G, cfg, _ = load_generator(conditional_run / "latest.pt")
    default = torch.cat(list(generate_batches(G, cfg, 7, 3, seed=0, device="cpu")))
    balanced = torch.cat(list(generate_batches(G, cfg, 7, 3, seed=0, device="cpu", labels=torch.arange(7) % 2)))
    squares = torch.cat(list(generate_batches(G, cfg, 7, 3, seed=0, device="cpu", labels=torch.zeros(7, dtype=torch.long))))
    assert torch.equal(default, balanced) and not torch.equal(default, squares)


def test_exported_conditional_generator_takes_labels(conditional_run, tmp_path):
    G = sngan.load(conditional_run, device="cpu")
    G.export(tmp_path / "g.pt2")
    program = torch.export.load(str(tmp_path / "g.pt2")).module()
    z, y = G.sample_z(3, seed=1), torch.tensor([1, 0, 1])
    assert torch.allclose(program(z, y), G(z, y), atol=1e-6)


class ChannelStats(torch.nn.Module):
    """A stand-in detector network: each image's per-channel means and standard deviations (6
    features), so that FID maths runs in microseconds instead of Inception's seconds."""

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_intra_fid_is_the_mean_of_per_class_fids(conditional_run, tmp_path, monkeypatch):
    from sngan import detector as inception, metrics
    tiny = inception.Detector(ChannelStats(), None, torch.device("cpu"), tmp_path / "tiny.pth", "e" * 64)
    monkeypatch.setattr(inception, "load_detector", lambda *args, **kwargs: tiny)
    ref = data.synthetic_dataset(40, 32, seed=5)
    np.savez(tmp_path / "ref.npz", images=ref.images.permute(0, 2, 3, 1).numpy(), labels=ref.labels.numpy(),
             class_names=np.array(data.SHAPE_CLASSES))
    args = dict(images=None, checkpoint=str(conditional_run / "latest.pt"), num=16, ref=str(tmp_path / "ref.npz"),
                save_stats=None, inception_score=False, inception_weights=None, batch_size=4,
                device="cpu", data_root="data", download=False, seed=0)
    result = eval_fid(**args, intra=True)
    per = result["intra_fid_classes"]
    assert set(per) == set(data.SHAPE_CLASSES) and result["intra_fid_num_per_class"] == 8
    assert result["intra_fid"] == pytest.approx(np.mean(list(per.values())))
    assert result["intra_fid_metric"] == "intrafid8_custom" and "intrafid8_custom = " in format_result(result)
    # By hand for one class: its samples against only that class's reference images.
    G, cfg, _ = load_generator(conditional_run / "latest.pt")
    fake = inception.extract(tiny, generate_batches(G, cfg, 8, 4, 0, "cpu", labels=torch.ones(8, dtype=torch.long)))[0]
    real = inception.extract(tiny, ref.images[ref.labels == 1])[0]
    assert per["disc"] == pytest.approx(metrics.frechet_distance(*metrics.statistics(fake), *metrics.statistics(real)),
                                        rel=1e-6)
    everything = metrics.frechet_distance(*metrics.statistics(fake), *metrics.statistics(inception.extract(tiny, ref.images)[0]))
    assert per["disc"] != pytest.approx(everything)  # against the whole reference it would differ

    np.savez(tmp_path / "plain.npz", images=ref.images.permute(0, 2, 3, 1).numpy())
    with pytest.raises(UsageError, match="needs a labelled reference"):
        eval_fid(**{**args, "ref": str(tmp_path / "plain.npz")}, intra=True)
    with pytest.raises(UsageError, match="give --checkpoint"):
        eval_fid(**{**args, "checkpoint": None, "images": str(tmp_path / "plain.npz")}, intra=True)
    np.savez(tmp_path / "other.npz", images=ref.images.permute(0, 2, 3, 1).numpy(), labels=ref.labels.numpy())
    with pytest.raises(UsageError, match="classes .* are not the reference's"):
        eval_fid(**{**args, "ref": str(tmp_path / "other.npz")}, intra=True)
