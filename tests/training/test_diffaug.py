"""DiffAugment: each augmentation on its own, the policy, where training applies it, and exact
resume of a run that uses it (its random stream is saved)."""

import pytest
import torch

from sngan import config
from sngan.errors import UsageError
from sngan.runs import checkpoint, run_folder
from sngan.training import diffaug, loop
from sngan.training.state import Run


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_translation_moves_content_and_pads_with_zeros():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    out = diffaug.translation(x, _gen())
    assert out.shape == x.shape and torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(64))  # one pixel, moved
    where = out[:, 0].flatten(1).argmax(1)
    dr, dc = where // 16 - 8, where % 16 - 8
    assert dr.abs().max() <= 2 and dc.abs().max() <= 2 and (dr != 0).any() and (dc != 0).any()  # 16/8 = 2
    ones = diffaug.translation(torch.ones(64, 1, 16, 16), _gen())
    assert set(ones.unique().tolist()) <= {0.0, 1.0} and (ones == 0).any()  # shifted-in border is zero


def test_cutout_zeroes_one_square_of_half_the_size():
    out = diffaug.cutout(torch.ones(200, 3, 8, 8), _gen())
    zeros = (out[:, 0] == 0)
    counts = zeros.flatten(1).sum(1)
    assert counts.max() == 16 and counts.min() >= 4  # 4x4 inside, clipped at the border (at least 2x2)
    assert torch.equal(zeros, (out == 0).all(dim=1))  # the same square in every channel
    rows, cols = zeros.any(2), zeros.any(1)
    assert torch.equal(zeros, rows[:, :, None] & cols[:, None, :])  # a rectangle


def test_color_changes_each_image_differently_and_keeps_gradients():
    x = torch.rand(8, 3, 4, 4, requires_grad=True)
    out = diffaug.color(x, _gen())
    assert not torch.allclose(out.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3)), torch.zeros(8))
    deltas = out.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))
    assert deltas.std() > 0.05  # per-image brightness
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_policy_is_deterministic_in_its_generator_and_empty_is_identity():
    x = torch.rand(4, 3, 16, 16)
    a = diffaug.DiffAugment("cutout, color,translation", _gen(3))
    b = diffaug.DiffAugment("color,translation,cutout", _gen(3))
    assert [s.__name__ for s in a.steps] == ["color", "translation", "cutout"]
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), b(x) * 0 + x)
    off = diffaug.DiffAugment("", _gen())
    assert not off and off(x) is x


def test_unknown_augmentation_is_a_config_error():
    with pytest.raises(UsageError, match="unknown augmentation 'flip'; valid: color, translation, cutout"):
        config.from_dict({"train": {"diffaug": "color,flip"}})
    assert set(diffaug.AUGMENTS) == set(config.CHOICES["augments"])


def test_training_augments_every_image_d_sees(tiny, monkeypatch):
    cfg = config.from_dict(tiny(train={"steps": 1, "diffaug": "translation"}, optim={"n_dis": 2}))
    run = Run(cfg, torch.device("cpu"))
    seen = []
    original = run.augment
    monkeypatch.setattr(run, "augment", lambda x: seen.append((len(x), x.requires_grad)) or original(x))
    from sngan.training.losses import Objective
    loop.train_step(run, Objective.from_config(cfg.loss))
    # n_dis x (reals, fakes without a graph), then the G step's fakes with one
    assert seen == [(8, False), (8, False)] * 2 + [(8, True)]


def test_resume_with_diffaug_and_classes_is_exact(tiny, tmp_path):
    base = tiny(model={"arch": "resnet", "g_ch": 4, "d_ch": 4, "conditional": True},
                train={"steps": 4, "checkpoint_every": 2, "log_every": 1, "diffaug": "color,translation,cutout"})
    cfg = config.from_dict(base)
    straight = run_folder.new_run_dir(tmp_path / "runs", "straight")
    loop.train(cfg, straight, progress=False)
    partial = run_folder.new_run_dir(tmp_path / "runs", "partial")
    loop.train(config.from_dict({**base, "train": {**base["train"], "steps": 2}}), partial, progress=False)
    state = checkpoint.load(partial / "latest.pt")
    assert "augment" in state["rng"]
    loop.train(cfg, partial, resume=state, resume_path=partial / "latest.pt", progress=False)
    a, b = checkpoint.load(straight / "latest.pt"), checkpoint.load(partial / "latest.pt")
    for key in ("G", "D"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    assert torch.equal(a["rng"]["augment"], b["rng"]["augment"])

    # Resumed without its augmentation stream (restarted from the seed), the run differs: the
    # stream is what makes the resume exact.
    lost = run_folder.new_run_dir(tmp_path / "runs", "lost")
    loop.train(config.from_dict({**base, "train": {**base["train"], "steps": 2}}), lost, progress=False)
    state = checkpoint.load(lost / "latest.pt")
    del state["rng"]["augment"]
    loop.train(cfg, lost, resume=state, resume_path=lost / "latest.pt", progress=False)
    assert not torch.equal(checkpoint.load(lost / "latest.pt")["G"]["to_rgb.weight"], a["G"]["to_rgb.weight"])
