"""FID during training (config section `eval`) and `sngan eval-fid --checkpoint` through the CLI."""

import json

import numpy as np
import pytest

from sngan import checkpoint, config, fid_stats, train
from sngan.errors import SnganError
from conftest import TINY, assert_same_training_state, cli
from fid_fixtures import reference_folder


def test_fid_is_logged_best_kept_and_training_undisturbed(tiny, tmp_path, torch_home):
    ref = reference_folder(tmp_path / "ref")
    with_eval = tiny(train={"steps": 2}, eval={"every": 2, "num_samples": 10, "ref": str(ref), "batch_size": 10})
    cfg = config.from_dict(with_eval)
    summary = train.train(cfg, progress=False)
    run_dir = next((tmp_path / "runs").iterdir())

    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in entries if "fid10_custom" in e]
    assert len(evals) == 1 and evals[0]["step"] == 2
    assert evals[0]["fid10_custom"] > 0 and "is10" in evals[0] and "is10_std" in evals[0]
    assert summary["best_fid"] == evals[0]["fid10_custom"]
    assert (run_dir / "best.pt").is_file() and (run_dir / "fid.png").is_file()
    assert checkpoint.load(run_dir / "best.pt")["best_fid"] == evals[0]["fid10_custom"]

    # The same run without evaluation ends with identical weights: FID sampling has its own RNG.
    cfg_plain = config.from_dict(tiny(train={"steps": 2}, out={"root": str(tmp_path / "plain")}))
    train.train(cfg_plain, progress=False)
    plain_dir = next((tmp_path / "plain").iterdir())
    assert_same_training_state(checkpoint.load(run_dir / "latest.pt"), checkpoint.load(plain_dir / "latest.pt"))


def test_kid_and_precision_recall_are_logged_for_g_and_its_ema(tiny, tmp_path, torch_home, monkeypatch):
    """eval.kid/eval.pr: the reference's features are loaded once, at the start, and each
    evaluation logs KID (with its std), precision and recall next to FID, `_ema` for the EMA."""
    ref = reference_folder(tmp_path / "ref")
    loads = []
    real_reference_features = fid_stats.reference_features
    monkeypatch.setattr(fid_stats, "reference_features", lambda *a, **k: loads.append(1) or real_reference_features(*a, **k))
    cfg = config.from_dict(tiny(train={"steps": 4, "ema_decay": 0.9},
                                eval={"every": 2, "num_samples": 10, "ref": str(ref), "batch_size": 10, "kid": True,
                                      "pr": True, "inception_score": False}))
    train.train(cfg, progress=False)
    run_dir = next((tmp_path / "runs").iterdir())
    evals = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "fid10_custom" in e]
    assert [e["step"] for e in evals] == [2, 4] and loads == [1]
    for e in evals:
        for suffix in ("", "_ema"):
            assert e[f"kid10_custom{suffix}"] > 0 and e[f"kid10_custom_std{suffix}"] >= 0
            assert 0 <= e[f"precision10_custom{suffix}"] <= 1 and 0 <= e[f"recall10_custom{suffix}"] <= 1
    assert evals[0]["headline"] == "fid10_custom_ema"  # FID still picks best.pt


def test_kid_in_training_needs_reference_images(tiny, tmp_path, torch_home):
    """A statistics .npz as eval.ref with eval.kid fails at the start, before a run folder exists."""
    fid_stats.save_stats(tmp_path / "stats.npz", np.zeros(2048), np.eye(2048))
    cfg = config.from_dict(tiny(eval={"every": 2, "num_samples": 10, "ref": str(tmp_path / "stats.npz"), "pr": True}))
    with pytest.raises(SnganError, match="KID and precision/recall need the reference's images"):
        train.train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_eval_fid_of_a_checkpoint_on_the_cli(tmp_path, torch_home, capsys):
    ref = reference_folder(tmp_path / "ref")
    code, _, err = cli(capsys, "train", "-c", "quickstart", "--out", tmp_path / "runs", "--set", "train.steps=2",
                       *TINY, "--no-progress")
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    code, out, err = cli(capsys, "eval-fid", "--checkpoint", run_dir / "latest.pt", "--num", 10, "--ref", ref, "--is",
                         "--device", "cpu", "--batch-size", 10, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["metric"] == "fid10_custom" and result["num_gen"] == 10 and result["num_ref"] == 12
    assert result["fid"] > 0 and result["is_mean"] >= 1.0
    code, text, err = cli(capsys, "eval-fid", "--images", ref, "--ref", ref, "--device", "cpu", "--kid", "--pr")
    assert code == 0, err
    first = text.splitlines()[0]
    assert first.startswith("fid12_custom = ") and abs(float(first.split("=")[1])) < 1e-3
    # A set against itself: KID ~0 (subsets of all 12), every image inside its own ball.
    kid_line = next(line for line in text.splitlines() if line.startswith("  kid12_custom = "))
    assert abs(float(kid_line.split()[2])) < 1e-2 and "(KID over 100 subsets of 12 per side)" in kid_line
    assert "  precision12_custom = 1.000, recall12_custom = 1.000 (k = 3 nearest neighbours)" in text
