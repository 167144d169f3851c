"""sngan.training.state: the Run's learning-rate schedule and batch split, the RNG streams it saves, DPair."""

import io
import random

import numpy as np
import pytest
import torch
from torch import nn

from sngan import config
from sngan.parallel import distributed
from sngan.training.state import DPair, Run, rng_state, set_rng_state


def test_linear_lr_decay(tiny, tmp_path):
    cfg = config.from_dict(tiny(optim={"lr_decay": "linear"}, train={"steps": 4}))
    run = Run(cfg, torch.device("cpu"))
    assert run.set_lr(0) == 1.0 and run.set_lr(2) == 0.5
    assert run.opt_d.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr_d * 0.5)


def test_linear_decay_stays_continuous_when_steps_grow_on_resume(tiny, tmp_path):
    """Raising train.steps on resume decays on from the current rate to 0 at the new end,
    instead of jumping to the rate of the longer schedule (1 - t/T with the new T)."""
    data = tiny(optim={"lr_decay": "linear"}, train={"steps": 4})
    run = Run(config.from_dict(data), torch.device("cpu"))
    assert [run.lr_scale(s) for s in range(5)] == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    run.step = 2
    state = run.state_dict()  # a checkpoint half-way through the 4-step schedule (scale 0.5)
    longer = Run(config.from_dict({**data, "train": {**data["train"], "steps": 6}}), torch.device("cpu"))
    longer.load_state_dict(state, tmp_path / "ckpt.pt")
    assert [longer.lr_scale(s) for s in range(2, 7)] == pytest.approx([0.5, 0.375, 0.25, 0.125, 0])
    again = Run(config.from_dict({**data, "train": {**data["train"], "steps": 8}}), torch.device("cpu"))
    again.step = 4
    again.load_state_dict({**longer.state_dict(), "step": 4}, tmp_path / "ckpt.pt")  # extended twice
    assert again.lr_scale(4) == pytest.approx(0.25) and again.lr_scale(8) == 0
    same = Run(config.from_dict(data), torch.device("cpu"))
    same.load_state_dict(state, tmp_path / "ckpt.pt")  # steps unchanged: the original schedule
    assert same.lr_scale(3) == pytest.approx(0.25)


def test_global_batch_must_split_evenly(tiny):
    cfg = config.from_dict(tiny(train={"batch_size": 9}))
    with pytest.raises(Exception, match="must be divisible by the number of processes"):
        Run(cfg, torch.device("cpu"), distributed.Dist(rank=0, world=2))


def test_rng_state_survives_a_weights_only_load_and_restores_every_stream():
    z_gen, aug_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)

    def draw():
        return (random.random(), np.random.rand(), np.random.randn(), torch.rand(()).item(),
                torch.rand((), generator=z_gen).item(), torch.rand((), generator=aug_gen).item())

    np.random.randn()  # numpy now holds a cached second normal (has_gauss), which must be saved too
    buffer = io.BytesIO()
    torch.save(rng_state(z_gen, aug_gen), buffer)
    first = draw()
    assert draw() != first
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True), z_gen, aug_gen)
    assert draw() == first


class Recorder(nn.Module):
    """A stand-in D: records the batch size and labels of each call; scores are image sums plus labels."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, y=None):
        self.calls.append((len(x), None if y is None else y.tolist()))
        return x.flatten(1).sum(1) + (0 if y is None else y)


def test_dpair_calls_d_once_on_real_and_fake_together_unless_told_not_to():
    real, fake, y_real, y_fake = torch.randn(2, 3), torch.randn(3, 3), torch.tensor([0, 1]), torch.tensor([1, 1, 0])
    for concat, calls in ((True, [(5, [0, 1, 1, 1, 0])]), (False, [(2, [0, 1]), (3, [1, 1, 0])])):
        D = Recorder()
        out_real, out_fake = DPair(D, concat)(real, fake, y_real, y_fake)
        assert D.calls == calls
        assert torch.allclose(out_real, real.sum(1) + y_real) and torch.allclose(out_fake, fake.sum(1) + y_fake)
    D = Recorder()
    out_real, out_fake = DPair(D, True)(real, fake)
    assert D.calls == [(5, None)] and torch.allclose(out_fake, fake.sum(1))
