"""The EMA generator (train.ema_decay): its update, checkpoints, resume, sampling, FID and reports."""

import json

import pytest
import torch
from torch import nn

from sngan import config, config_files
from sngan.runs import checkpoint, run_folder
from sngan.studies import report
from sngan.training import loop
from sngan.training.ema import EMA
from sngan.training.state import Run
from conftest import TINY, assert_same_training_state, cli, train_run
from fid_fixtures import reference_folder


def test_update_averages_parameters_and_leaves_buffers():
    g = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(g, decay=0.9, start=1)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
    before = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
        g[1].running_mean.fill_(5.0)
    ema.update(g, step=1)  # within `start`: a copy
    for p, q in zip(ema.model.parameters(), g.parameters()):
        assert torch.equal(p, q)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(10.0)
    ema.update(g, step=2)
    for p, b, q in zip(ema.model.parameters(), before, g.parameters()):
        torch.testing.assert_close(p, 0.9 * (b + 1.0) + 0.1 * q)
    # G's statistics belong to G's weights: they are neither copied nor averaged
    assert torch.equal(ema.model[1].running_mean, torch.zeros(2))
    with pytest.raises(ValueError, match="decay"):
        EMA(g, decay=1.0)


def test_training_keeps_the_average_of_g(tiny, tmp_path):
    """After one step from G0 to G1 the checkpoint's G_ema is d * G0 + (1 - d) * G1."""
    d = 0.75
    data = tiny(train={"steps": 1, "ema_decay": d})
    g0 = {k: v.clone() for k, v in Run(config.from_dict(data), torch.device("cpu")).G.state_dict().items()}
    run_dir, _ = train_run(data, tmp_path)
    state = checkpoint.load(run_dir / "latest.pt")
    g1, ema = state["G"], state["G_ema"]
    assert ema.keys() == g1.keys()
    params = [k for k in g1 if k.endswith(("weight", "bias")) and g1[k].is_floating_point()]
    assert params and all(not torch.equal(g0[k], g1[k]) for k in params if k.endswith("weight"))
    for k in params:
        torch.testing.assert_close(ema[k], d * g0[k] + (1 - d) * g1[k])
    # BatchNorm statistics: those of the EMA's own weights, not G's
    stats = [k for k in g1 if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(ema[k], g1[k]) for k in stats)
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples == ["ema-step-0000001.png", "step-0000001.png"]


def test_resume_with_ema_equals_an_uninterrupted_run(tiny, tmp_path):
    data = tiny(train={"steps": 4, "checkpoint_every": 2, "ema_decay": 0.9, "ema_start": 1})
    straight, _ = train_run(data, tmp_path, "straight")
    partial, _ = train_run({**data, "train": {**data["train"], "steps": 2}}, tmp_path, "partial")
    state = checkpoint.load(partial / "latest.pt")
    cfg = config.from_dict(config_files.apply_overrides(state["config"], ["train.steps=4"]))
    loop.train(cfg, partial, resume=state, resume_path=partial / "latest.pt", progress=False)
    a, b = checkpoint.load(straight / "latest.pt"), checkpoint.load(partial / "latest.pt")
    assert "G_ema" in a
    assert_same_training_state(a, b)


def test_fid_of_both_generators_best_by_ema_and_report(tiny, tmp_path, torch_home):
    ref = reference_folder(tmp_path / "ref")
    data = tiny(train={"steps": 2, "ema_decay": 0.5, "ema_start": 1},
                eval={"every": 1, "num_samples": 20, "ref": str(ref), "batch_size": 10, "inception_score": True})
    summary = loop.train(config.from_dict(data), progress=False)
    run_dir = next((tmp_path / "runs").iterdir())
    evals = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "fid20_custom" in e]
    assert [e["step"] for e in evals] == [1, 2]
    for e in evals:
        assert {"fid20_custom", "fid20_custom_ema", "is20", "is20_ema", "is20_std_ema"} <= e.keys()
        assert e["headline"] == "fid20_custom_ema"  # the evaluation line names its headline metric
    # Up to ema_start the average copies G's weights, but is scored with the standing BatchNorm
    # statistics of those weights rather than G's running statistics, so the FIDs differ.
    assert evals[0]["fid20_custom_ema"] != pytest.approx(evals[0]["fid20_custom"], rel=1e-6)
    assert evals[1]["fid20_custom_ema"] != evals[1]["fid20_custom"]
    best = min(evals, key=lambda e: e["fid20_custom_ema"])
    assert summary["best_fid"] == best["fid20_custom_ema"]
    assert checkpoint.load(run_dir / "best.pt")["step"] == best["step"]

    row = report.summarise(run_folder.read_run(run_dir, run_dir.name))
    assert row["fid_protocol"] == "fid20_custom_ema" and row["fid_final"] == evals[-1]["fid20_custom_ema"]
    assert row["is_mean"] == evals[-1]["is20_ema"] and row["is_std"] == evals[-1]["is20_std_ema"]
    assert row["is_metric"] == "is20_ema" and row["fid_detector"] == evals[-1]["detector"]
    assert run_folder.latest_grid(run_dir).name == "ema-step-0000002.png"


def test_cli_ema_flags(tmp_path, torch_home, capsys):
    code, _, err = cli(capsys, "train", "-c", "quickstart", "--out", tmp_path / "runs", "--set", "train.steps=2",
                       *TINY, "--set", "train.ema_decay=0.5", "--no-progress")  # after TINY's ema_decay=0: the last wins
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    ckpt = run_dir / "latest.pt"
    code, _, err = cli(capsys, "sample", "--checkpoint", ckpt, "--num", 4, "--out", tmp_path / "ema.npz", "--device", "cpu")
    assert code == 0 and "(EMA generator)" in err
    code, _, err = cli(capsys, "sample", "--checkpoint", ckpt, "--num", 4, "--out", tmp_path / "raw.npz",
                       "--device", "cpu", "--no-ema")
    assert code == 0, err
    import numpy as np
    with np.load(tmp_path / "ema.npz") as a, np.load(tmp_path / "raw.npz") as b:
        assert not np.array_equal(a["images"], b["images"])  # same z, different weights

    ref = reference_folder(tmp_path / "ref")
    code, out, err = cli(capsys, "eval-fid", "--checkpoint", ckpt, "--num", 10, "--ref", ref, "--device", "cpu",
                         "--batch-size", 10, "--json")
    assert code == 0, err
    assert json.loads(out)["source"] == f"{ckpt}, EMA generator"
    code, _, err = cli(capsys, "eval-fid", "--images", ref, "--ref", ref, "--ema")
    assert code == 2 and err.strip().splitlines()[-1].endswith("use them with --checkpoint")


def test_standing_stats_are_the_statistics_of_the_ema_weights():
    """The EMA generator's BatchNorm statistics are recomputed from its own weights: the mean of
    each BN's batch means (and unbiased variances) over the latents, whatever G's were."""
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(g, decay=0.5)
    with torch.no_grad():
        for p in ema.model.parameters():
            p.mul_(3.0).add_(0.5)  # weights of its own, unlike G's
        g[1].running_mean.fill_(7.0)
    batches = [torch.randn(16, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    ema.standing_stats((z,) for z in batches)
    m = ema.model
    assert not m.training and m[1].momentum == g[1].momentum
    with torch.no_grad():  # by hand: the inputs each BN sees in train mode, batch by batch
        h1 = [m[0](z) for z in batches]
        h2 = [m[3](torch.relu((h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + m[1].eps) * m[1].weight
                              + m[1].bias)) for h in h1]
    for bn, hs in ((m[1], h1), (m[4], h2)):
        torch.testing.assert_close(bn.running_mean, torch.stack([h.mean(0) for h in hs]).mean(0))
        torch.testing.assert_close(bn.running_var, torch.stack([h.var(0) for h in hs]).mean(0))
    assert not torch.allclose(m[1].running_mean, g[1].running_mean)


def test_samples_use_the_ema_statistics(tiny, tmp_path):
    """A run's EMA checkpoint holds the standing statistics of its weights: recomputing them from
    the saved EMA weights reproduces the saved statistics exactly."""
    data = tiny(train={"steps": 3, "ema_decay": 0.5, "checkpoint_every": 3})
    run_dir, _ = train_run(data, tmp_path)
    state = checkpoint.load(run_dir / "latest.pt")
    run = Run(config.from_dict(data), torch.device("cpu"))
    run.ema.model.load_state_dict(state["G_ema"])
    for m in run.ema.model.modules():  # forget the saved statistics
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    run.step = 3
    recomputed = run.ema_generator().state_dict()
    for k, v in state["G_ema"].items():
        assert torch.equal(recomputed[k], v), k
