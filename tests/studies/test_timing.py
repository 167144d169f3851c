"""sngan.studies.timing: interleaved repeats, the ratios of step times, seconds per step."""

from types import SimpleNamespace

import torch

from sngan import config
from sngan.studies import timing


def test_ratio_of_the_best_times_and_median_of_the_per_repeat_ratios():
    assert timing.ratio([4.0, 3.0, 9.0], [1.0, 2.0, 2.0]) == (3.0, 4.0)
    assert timing.ratio([1.0, 3.0], [3.0, 3.0]) == (0.3333, 0.6667)


def test_measure_warms_each_config_up_then_rotates_the_order_of_each_repeat(monkeypatch):
    calls = []
    monkeypatch.setattr(timing, "Run", lambda cfg, device: cfg)
    monkeypatch.setattr(timing, "time_steps", lambda run, n: calls.append((run, n)) or float(len(calls)))
    out = timing.measure({"a": "A", "b": "B", "c": "C"}, "cpu", warmup=2, steps=5, repeats=4)
    assert calls == [("A", 2), ("B", 2), ("C", 2)] + [(run, 5) for run in "ABC" "BCA" "CAB" "ABC"]
    assert {name: o["times"] for name, o in out.items()} == {"a": [4.0, 9.0, 11.0, 13.0], "b": [5.0, 7.0, 12.0, 14.0],
                                                           "c": [6.0, 8.0, 10.0, 15.0]}
    assert all(o["peak_mem_mb"] is None and o["warmup_s"] >= 0 for o in out.values())  # peak memory: CUDA only


def test_time_steps_runs_n_training_steps(monkeypatch):
    run = SimpleNamespace(cfg=config.from_dict({}), device=torch.device("cpu"))
    steps = []
    monkeypatch.setattr(timing.loop, "train_step", lambda r, loss: steps.append(r))
    assert timing.time_steps(run, 3) >= 0 and steps == [run] * 3
    assert timing.time_steps(run, 0) >= 0 and len(steps) == 3
