"""Collapse warnings (sngan/training/health.py): the diversity and D-gap numbers, one warning per collapse,
and a real run made to collapse; the healthy quickstart raises none (test_quickstart.py, a `full_run` test)."""

import pytest
import torch

from sngan import config
from sngan.runs import run_folder
from sngan.training import loop
from sngan.training.health import MAX_GAP, MIN_DIVERSITY, Monitor, data_spread, spread

DATA = torch.randint(0, 256, (200, 3, 8, 8), dtype=torch.uint8)
VARIED = DATA[:64].float() / 127.5 - 1  # samples as varied as the data


def test_diversity_is_relative_to_the_data():
    assert data_spread(DATA) == pytest.approx(spread(DATA.float() / 127.5 - 1), rel=0.05)
    monitor = Monitor(DATA, "hinge", warn_after=1)
    numbers, _ = monitor.measure(1, VARIED, 1.0, -1.0)
    assert numbers["diversity"] == pytest.approx(1.0, abs=0.1) and numbers["d_gap"] == 2.0
    same = VARIED[:1].repeat(64, 1, 1, 1)  # one image for every z
    assert monitor.measure(2, same, 1.0, -1.0)[0]["diversity"] == 0.0


def test_one_warning_per_collapse_and_again_after_a_recovery():
    monitor = Monitor(DATA, "hinge", warn_after=10)
    low = VARIED * 0.1
    assert monitor.measure(5, low, 100.0, 0.0)[1] == ""  # before warn_after: numbers only
    warning = monitor.measure(10, low, 100.0, 0.0)[1]
    assert warning.startswith("step 10: possible collapse") and "0.10x" in warning and "run away" in warning
    assert "model.init" in warning  # says what to try
    assert monitor.measure(20, low * 2, MAX_GAP + 1, 0.0)[1] == ""  # still collapsed: no second line
    assert monitor.measure(30, VARIED * 0.5, MAX_GAP / 2 + 1, 0.0)[1] == ""  # not clearly recovered
    assert monitor.measure(40, low, MAX_GAP + 1, 0.0)[1] == ""
    assert monitor.measure(50, VARIED, 0.0, 0.0)[1] == ""  # recovered
    again = monitor.measure(60, low, 0.0, 0.0)[1]
    assert again.startswith("step 60") and f"below {MIN_DIVERSITY}" in again and "run away" not in again


def test_no_warnings_when_off_and_no_gap_check_for_a_wasserstein_critic():
    low = VARIED * 0.01
    assert Monitor(DATA, "hinge", warn_after=0).measure(10_000, low, 1e3, 0.0)[1] == ""
    assert Monitor(DATA, "wasserstein", warn_after=1).measure(10, VARIED, 1e3, 0.0)[1] == ""
    assert "run away" in Monitor(DATA, "standard", warn_after=1).measure(10, VARIED, 1e3, 0.0)[1]


def test_a_run_made_to_collapse_warns_once(tiny, tmp_path, capsys):
    """G's learning rate of 1.0 saturates its tanh output: every z gives the same image."""
    data = tiny(train={"steps": 40, "log_every": 10, "sample_every": 40, "checkpoint_every": 40, "sample_grid": 16,
                       "collapse_warning": 20}, optim={"lr_g": 1.0})
    summary = loop.train(config.from_dict(data), progress=False)
    entries = run_folder.read_metrics(summary["run_dir"])
    logged = [e for e in entries if "loss_d" in e]
    assert [e["step"] for e in logged] == [10, 20, 30, 40]
    assert all(e["diversity"] < MIN_DIVERSITY for e in logged)
    warnings = [e for e in entries if "warning" in e]
    assert [e["step"] for e in warnings] == [20]
    assert "possible collapse" in warnings[0]["warning"]
    assert capsys.readouterr().err.count("warning: step 20: possible collapse") == 1
