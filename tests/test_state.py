"""sngan.state: the Run's learning-rate schedule and its split of the global batch."""

import pytest
import torch

from sngan import config, distributed, state
from sngan.state import Run


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
        state.Run(cfg, torch.device("cpu"), distributed.Dist(rank=0, world=2))
