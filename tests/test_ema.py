"""The EMA generator (train.ema_decay): its update, checkpoints, resume, sampling, FID and reports."""

import json

import pytest
import torch
from torch import nn

from sngan import checkpoint, config, report, train
from sngan.ema import EMA
from sngan.errors import UsageError
from sngan.sample import load_generator
from test_cli import TINY, sngan
from test_eval_in_training import _reference_folder
from test_train import _assert_same_training_state, _run


def test_update_averages_parameters_and_copies_buffers():
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
    assert torch.equal(ema.model[1].running_mean, torch.full((2,), 5.0))  # copied, not averaged
    with pytest.raises(ValueError, match="decay"):
        EMA(g, decay=1.0)


def test_training_keeps_the_average_of_g(tiny, tmp_path):
    """After one step from G0 to G1 the checkpoint's G_ema is d * G0 + (1 - d) * G1."""
    d = 0.75
    data = tiny(train={"steps": 1, "ema_decay": d})
    g0 = {k: v.clone() for k, v in train.Run(config.from_dict(data), torch.device("cpu")).G.state_dict().items()}
    run_dir, _ = _run(data, tmp_path)
    state = checkpoint.load(run_dir / "latest.pt")
    g1, ema = state["G"], state["G_ema"]
    assert ema.keys() == g1.keys()
    params = [k for k in g1 if k.endswith(("weight", "bias")) and g1[k].is_floating_point()]
    assert params and all(not torch.equal(g0[k], g1[k]) for k in params if k.endswith("weight"))
    for k in params:
        torch.testing.assert_close(ema[k], d * g0[k] + (1 - d) * g1[k])
    for k in g1:
        if k not in params:  # BatchNorm statistics: G's own
            assert torch.equal(ema[k], g1[k]), k
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples == ["ema-step-0000001.png", "step-0000001.png"]


def test_resume_with_ema_equals_an_uninterrupted_run(tiny, tmp_path):
    data = tiny(train={"steps": 4, "checkpoint_every": 2, "ema_decay": 0.9, "ema_start": 1})
    straight, _ = _run(data, tmp_path, "straight")
    partial, _ = _run({**data, "train": {**data["train"], "steps": 2}}, tmp_path, "partial")
    state = checkpoint.load(partial / "latest.pt")
    cfg = config.from_dict(config.apply_overrides(state["config"], ["train.steps=4"]))
    train.train(cfg, partial, resume=state, resume_path=partial / "latest.pt", progress=False)
    a, b = checkpoint.load(straight / "latest.pt"), checkpoint.load(partial / "latest.pt")
    assert "G_ema" in a
    _assert_same_training_state(a, b)


def test_load_generator_chooses_ema_by_default(tiny, tmp_path):
    plain, _ = _run(tiny(train={"steps": 1}), tmp_path, "plain")
    with_ema, _ = _run(tiny(train={"steps": 1, "ema_decay": 0.5}), tmp_path, "ema")
    state = checkpoint.load(with_ema / "latest.pt")
    for ema, kind, key in ((None, "ema", "G_ema"), (True, "ema", "G_ema"), (False, "raw", "G")):
        G, _, got = load_generator(with_ema / "latest.pt", "cpu", ema)
        assert got == kind
        for k, v in G.state_dict().items():
            assert torch.equal(v, state[key][k])
    assert load_generator(plain / "latest.pt")[2] == "raw"
    with pytest.raises(UsageError, match="has no EMA generator"):
        load_generator(plain / "latest.pt", ema=True)


def test_fid_of_both_generators_best_by_ema_and_report(tiny, tmp_path, torch_home):
    ref = _reference_folder(tmp_path / "ref")
    data = tiny(train={"steps": 2, "ema_decay": 0.5, "ema_start": 1},
                eval={"every": 1, "num_samples": 10, "ref": str(ref), "batch_size": 10, "inception_score": True})
    summary = train.train(config.from_dict(data), progress=False)
    run_dir = next((tmp_path / "runs").iterdir())
    evals = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "fid10_custom" in e]
    assert [e["step"] for e in evals] == [1, 2]
    for e in evals:
        assert {"fid10_custom", "fid10_custom_ema", "is_mean", "is_mean_ema", "is_std_ema"} <= e.keys()
    # Up to ema_start the average is a copy of G: the same network, so the same FID.
    assert evals[0]["fid10_custom_ema"] == pytest.approx(evals[0]["fid10_custom"], rel=1e-9)
    assert evals[1]["fid10_custom_ema"] != evals[1]["fid10_custom"]
    best = min(evals, key=lambda e: e["fid10_custom_ema"])
    assert summary["best_fid"] == best["fid10_custom_ema"]
    assert checkpoint.load(run_dir / "best.pt")["step"] == best["step"]

    row = report.summarise(report._run(run_dir, run_dir.name))
    assert row["fid_protocol"] == "fid10_custom_ema" and row["fid_final"] == evals[-1]["fid10_custom_ema"]
    assert row["is_mean"] == evals[-1]["is_mean_ema"]
    assert report.latest_sample(report._run(run_dir, run_dir.name)).name == "ema-step-0000002.png"


def test_cli_ema_flags(tmp_path, torch_home):
    import os
    sngan("train", "-c", "quickstart", "--out", tmp_path / "runs", "--set", "train.steps=2", *TINY,
          "--set", "train.ema_decay=0.5", "--no-progress")
    run_dir = next((tmp_path / "runs").iterdir())
    ckpt = run_dir / "latest.pt"
    out = sngan("sample", "--checkpoint", ckpt, "--num", 4, "--out", tmp_path / "ema.npz", "--device", "cpu")
    assert "(EMA generator)" in out.stderr
    sngan("sample", "--checkpoint", ckpt, "--num", 4, "--out", tmp_path / "raw.npz", "--device", "cpu", "--no-ema")
    import numpy as np
    with np.load(tmp_path / "ema.npz") as a, np.load(tmp_path / "raw.npz") as b:
        assert not np.array_equal(a["images"], b["images"])  # same z, different weights

    ref = _reference_folder(tmp_path / "ref")
    env = {"TORCH_HOME": os.environ["TORCH_HOME"], "SNGAN_CACHE": os.environ["SNGAN_CACHE"]}
    result = json.loads(sngan("eval-fid", "--checkpoint", ckpt, "--num", 10, "--ref", ref, "--device", "cpu",
                              "--batch-size", 10, "--json", env=env).stdout)
    assert result["source"] == f"{ckpt}, EMA generator"
    bad = sngan("eval-fid", "--images", ref, "--ref", ref, "--ema", env=env, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("use them with --checkpoint")
