"""sngan.intra_fid: intra-class FID of a conditional G, the mean of its per-class FIDs, and its errors."""

import numpy as np
import pytest
import torch

from sngan import data
from sngan.errors import UsageError
from sngan.evaluate import eval_fid
from sngan.fid_result import format_result
from sngan.sample import generate_batches, load_generator


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

    # --ref-images: each class against its images among the reference's first N; more than it has is refused.
    first = eval_fid(**args, intra=True, ref_images=24)
    assert first["num_ref"] == 24 and first["intra_fid_metric"] == "intrafid8_custom"
    real = inception.extract(tiny, ref.images[:24][ref.labels[:24] == 1])[0]
    assert first["intra_fid_classes"]["disc"] == pytest.approx(
        metrics.frechet_distance(*metrics.statistics(fake), *metrics.statistics(real)), rel=1e-6)
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
