import json

import pytest
import torch

from sngan.runs import checkpoint
from sngan.training import nonfinite
from sngan.training.losses import LOSSES
from conftest import train_run


def _nan_d_loss_on_call(monkeypatch, n: int) -> None:
    """Make the n-th discriminator loss of the hinge loss NaN."""
    calls = {"n": 0}
    real_hinge = LOSSES["hinge"]

    def d_loss(real, fake):
        calls["n"] += 1
        out = real_hinge.d(real, fake)
        return out * float("nan") if calls["n"] == n else out
    monkeypatch.setitem(LOSSES, "hinge", real_hinge._replace(d=d_loss))


def test_non_finite_loss_stops_and_names_the_step(tiny, tmp_path, monkeypatch):
    _nan_d_loss_on_call(monkeypatch, 3)
    with pytest.raises(nonfinite.Diverged, match=r"non-finite loss or weights at step 3; the last good checkpoint is latest.pt \(step 2\)"):
        train_run(tiny(train={"steps": 6, "log_every": 1, "checkpoint_every": 2}), tmp_path)
    run_dir = next((tmp_path / "runs").iterdir())
    assert checkpoint.load(run_dir / "latest.pt")["step"] == 2


def test_non_finite_step_can_be_skipped(tiny, tmp_path, monkeypatch):
    _nan_d_loss_on_call(monkeypatch, 2)
    run_dir, summary = train_run(tiny(train={"steps": 4, "log_every": 1, "on_nonfinite": "skip", "ema_decay": 0.5}),
                            tmp_path)
    assert summary["skipped"] == 1 and summary["step"] == 4
    state = checkpoint.load(run_dir / "latest.pt")
    for key in ("G", "G_ema"):  # the skipped step reaches neither G nor its average
        assert all(torch.isfinite(v).all() for v in state[key].values() if v.is_floating_point()), key
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["skipped"] == 1
