"""sngan.metrics.intra_fid: intra-class FID of a conditional G, the mean of its per-class FIDs, and its errors;
in eval-fid and during training."""

import json

import numpy as np
import pytest
import torch

from conftest import TINY_RESNET, tiny_config
from formats import write_cifar10, write_stl10
from sngan import config
from sngan.data import datasets, readers
from sngan.errors import UsageError
from sngan.metrics.evaluate import eval_fid
from sngan.metrics.fid_result import format_result
from sngan.metrics.intra_fid import reference_labels
from sngan.models.sample import generate_batches, load_generator
from sngan.training import loop


class ChannelStats(torch.nn.Module):
    """A stand-in detector network: each image's per-channel means and standard deviations (6
    features), so that FID maths runs in microseconds instead of Inception's seconds."""

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def _tiny_detector(tmp_path, monkeypatch):
    from sngan.metrics import detector as inception
    tiny = inception.Detector(ChannelStats(), None, torch.device("cpu"), tmp_path / "tiny.pth", "e" * 64)
    monkeypatch.setattr(inception, "load_detector", lambda *args, **kwargs: tiny)
    return tiny


def _labelled_reference(path):
    """40 synthetic shapes with their labels and class names (square, disc), as an .npz."""
    ref = datasets.synthetic_dataset(40, 32, seed=5)
    np.savez(path, images=ref.images.permute(0, 2, 3, 1).numpy(), labels=ref.labels.numpy(),
             class_names=np.array(datasets.SHAPE_CLASSES))
    return ref


def test_intra_fid_is_the_mean_of_per_class_fids(conditional_run, tmp_path, monkeypatch):
    from sngan.metrics import detector as inception, formulas
    tiny = _tiny_detector(tmp_path, monkeypatch)
    ref = _labelled_reference(tmp_path / "ref.npz")
    args = dict(images=None, checkpoint=str(conditional_run / "latest.pt"), num=16, ref=str(tmp_path / "ref.npz"),
                save_stats=None, inception_score=False, inception_weights=None, batch_size=4,
                device="cpu", data_root="data", download=False, seed=0)
    result = eval_fid(**args, intra=True)
    per = result["intra_fid_classes"]
    assert set(per) == set(datasets.SHAPE_CLASSES) and result["intra_fid_num_per_class"] == 8
    assert result["intra_fid"] == pytest.approx(np.mean(list(per.values())))
    assert result["intra_fid_metric"] == "intrafid8_custom" and "intrafid8_custom = " in format_result(result)
    # By hand for one class: its samples against only that class's reference images.
    G, cfg, _ = load_generator(conditional_run / "latest.pt")
    fake = inception.extract(tiny, generate_batches(G, cfg, 8, 4, 0, "cpu", labels=torch.ones(8, dtype=torch.long)))[0]
    real = inception.extract(tiny, ref.images[ref.labels == 1])[0]
    assert per["disc"] == pytest.approx(
        formulas.frechet_distance(*formulas.statistics(fake), *formulas.statistics(real)), rel=1e-6)
    everything = formulas.frechet_distance(*formulas.statistics(fake),
                                           *formulas.statistics(inception.extract(tiny, ref.images)[0]))
    assert per["disc"] != pytest.approx(everything)  # against the whole reference it would differ

    # --ref-images: each class against its images among the reference's first N; more than it has is refused.
    first = eval_fid(**args, intra=True, ref_images=24)
    assert first["num_ref"] == 24 and first["intra_fid_metric"] == "intrafid8_custom"
    real = inception.extract(tiny, ref.images[:24][ref.labels[:24] == 1])[0]
    assert first["intra_fid_classes"]["disc"] == pytest.approx(
        formulas.frechet_distance(*formulas.statistics(fake), *formulas.statistics(real)), rel=1e-6)
    with pytest.raises(UsageError, match=r"is 41 but reference '.*ref.npz' has 40 images"):
        eval_fid(**args, intra=True, ref_images=41)

    np.savez(tmp_path / "plain.npz", images=ref.images.permute(0, 2, 3, 1).numpy())
    with pytest.raises(UsageError, match="needs a labelled reference"):
        eval_fid(**{**args, "ref": str(tmp_path / "plain.npz")}, intra=True)
    with pytest.raises(UsageError, match="give --checkpoint"):
        eval_fid(**{**args, "checkpoint": None, "images": str(tmp_path / "plain.npz")}, intra=True)
    np.savez(tmp_path / "other.npz", images=ref.images.permute(0, 2, 3, 1).numpy(), labels=ref.labels.numpy())
    with pytest.raises(UsageError, match="classes .* are not the reference's"):
        eval_fid(**{**args, "ref": str(tmp_path / "other.npz")}, intra=True)


def test_a_named_references_labels_are_read_without_its_images(tmp_path, monkeypatch):
    """Its features may be cached: decoding its images only for the labels would cost minutes (STL-10)."""
    write_cifar10(tmp_path, n_per_batch=3)
    write_stl10(tmp_path, n_unlabeled=2, n_train=4)
    np.array([1, 10, 3, 3], np.uint8).tofile(tmp_path / "stl10_binary" / "train_y.bin")  # stored 1-10
    cifar = readers.load_cifar10(tmp_path, "train", download=False)
    stl_images = len(datasets.load_reference("stl10-train", tmp_path, 32, False))
    for module in (datasets, readers):
        for loader in ("load_cifar10", "load_stl10", "read_stl10"):
            if hasattr(module, loader):
                monkeypatch.setattr(module, loader, lambda *a, **k: pytest.fail("images decoded"))
    labels, classes = reference_labels("cifar10-train", tmp_path, False, num_images=10)
    assert classes == readers.CIFAR10_CLASSES and np.array_equal(labels, cifar.labels[:10].numpy())
    labels, classes = reference_labels("stl10-train", tmp_path, False)
    assert classes == readers.STL10_CLASSES and labels.tolist() == [0, 9, 2, 2] and stl_images == 4
    with pytest.raises(UsageError, match="'stl10-unlabeled' has no labels"):
        reference_labels("stl10-unlabeled", tmp_path, False)


def test_intra_fid_is_logged_in_training_as_eval_fid_measures_it(tmp_path, monkeypatch):
    """eval.intra_fid: each evaluation logs intra-FID next to FID, for G and its EMA, under eval-fid's
    protocol name and with eval-fid's value for the checkpoint of that step."""
    _tiny_detector(tmp_path, monkeypatch)
    _labelled_reference(tmp_path / "ref.npz")
    cfg_data = tiny_config(tmp_path, data={"num_images": 64}, model=TINY_RESNET,
                           train={"steps": 2, "ema_decay": 0.5},
                           eval={"every": 2, "num_samples": 8, "batch_size": 4, "ref": str(tmp_path / "ref.npz"),
                                 "intra_fid": True, "inception_score": False})
    loop.train(config.from_dict(cfg_data), progress=False)
    run_dir = next((tmp_path / "runs").iterdir())
    (entry,) = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "headline" in e]
    assert entry["step"] == 2 and entry["headline"] == "fid8_custom_ema"  # FID still picks best.pt
    assert {"fid8_custom", "intrafid4_custom", "fid8_custom_ema", "intrafid4_custom_ema"} <= set(entry)
    args = dict(images=None, checkpoint=str(run_dir / "latest.pt"), num=8, ref=str(tmp_path / "ref.npz"),
                save_stats=None, inception_score=False, inception_weights=None, batch_size=4, device="cpu",
                data_root="data", download=False, seed=0, intra=True)
    for ema, suffix in ((False, ""), (True, "_ema")):
        result = eval_fid(**args, ema=ema)
        assert result["intra_fid_metric"] == "intrafid4_custom"
        assert entry["intrafid4_custom" + suffix] == pytest.approx(result["intra_fid"], rel=1e-6)


def test_intra_fid_in_training_is_refused_before_it_starts(tmp_path, monkeypatch):
    _tiny_detector(tmp_path, monkeypatch)
    unconditional = tiny_config(tmp_path, eval={"every": 2, "intra_fid": True})
    with pytest.raises(UsageError, match="^config key 'eval.intra_fid' needs model.conditional true"):
        config.from_dict(unconditional)
    ref = datasets.synthetic_dataset(20, 32)
    np.savez(tmp_path / "plain.npz", images=ref.images.permute(0, 2, 3, 1).numpy())
    conditional = tiny_config(tmp_path, data={"num_images": 64}, model=TINY_RESNET,
                              eval={"every": 2, "num_samples": 8, "ref": str(tmp_path / "plain.npz"),
                                    "intra_fid": True})
    with pytest.raises(UsageError, match="intra-FID needs a labelled reference, and '.*plain.npz' has no labels"):
        loop.train(config.from_dict(conditional), progress=False)
    assert not (tmp_path / "runs").exists()
