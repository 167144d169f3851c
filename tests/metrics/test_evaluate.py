"""sngan.metrics.evaluate: `sngan eval-fid` end to end against pytorch-fid itself, with random
He-initialised Inception weights (no network), its printed result and argument checks; and FID
during training (config section `eval`).

The parts are tested on their own in test_detector.py (weights, features), test_formulas.py
(statistics, distance, IS), test_fid_stats.py (image sets, statistics files, cache) and
test_fid_result.py (metric names, the printed protocol).
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from conftest import TINY, assert_same_training_state, cli
from fid_fixtures import NUM, reference_folder
from formats import write_cifar10
from sngan import config
from sngan.data import datasets
from sngan.errors import SnganError, UsageError
from sngan.metrics import fid_stats
from sngan.metrics import detector as inception
from sngan.metrics.detector import FID_WEIGHTS_FILE
from sngan.metrics.evaluate import eval_fid
from sngan.metrics.fid_result import format_result
from sngan.runs import checkpoint, run_folder
from sngan.studies import report
from sngan.training import loop


def run_eval(**kwargs) -> dict:
    args = dict(images=None, checkpoint=None, num=0, ref="cifar10-train", save_stats=None,
                inception_score=False, inception_weights=None, batch_size=5, device="cpu",
                data_root="data", download=False, seed=0)
    return eval_fid(**{**args, **kwargs})


# ---------------------------------------------------------------------------------------------
# FID end to end


def test_fid_matches_pytorch_fid(torch_home, image_dirs):
    a, b = image_dirs["shapes"], image_dirs["noise"]
    # pytorch-fid runs alongside our evaluation, on one thread so the two do not fight over the
    # cores: each spends most of its time in a 2048x2048 matrix square root.
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    theirs_proc = subprocess.Popen([sys.executable, "-m", "pytorch_fid", "--device", "cpu", "--batch-size",
                                    "4", "--num-workers", "0", str(a), str(b)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=one_thread)
    ours = run_eval(images=str(a), ref=str(b), inception_score=True)
    stdout, stderr = theirs_proc.communicate(timeout=300)
    assert theirs_proc.returncode == 0, stderr
    theirs = float(re.search(r"^FID:\s+(\S+)", stdout, re.MULTILINE).group(1))
    assert ours["fid"] == pytest.approx(theirs, rel=1e-3)
    assert ours["fid"] > 1  # He-initialised weights tell shapes from noise
    assert ours["metric"] == "fid10_custom" and ours["num_gen"] == ours["num_ref"] == NUM
    assert ours["detector"].startswith("pytorch-fid-inception-custom-")
    assert Path(ours["weights"]) == torch_home / "hub" / "checkpoints" / FID_WEIGHTS_FILE
    # 10 splits of one sample each would score exactly 1, whatever the images: no IS, and why.
    assert "is_mean" not in ours and ours["is"] is None
    assert ours["is_note"] == "10 samples are too few for its 10 splits (a split of one sample always scores 1); " \
                              "it needs at least 20"
    assert format_result(ours).splitlines()[0] == f"fid10_custom = {ours['fid']:.2f}"


def test_kid_and_precision_recall_match_torch_fidelity(torch_home, image_dirs, image_sets, detector):
    """eval-fid's KID and precision/recall are torch-fidelity's on the same pool3 features (given
    to it in float64: equal to ~1e-12 for KID, exactly for precision/recall). With 10 images a
    side, KID's subsets hold all 10, recorded in the result."""
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    ours = run_eval(images=str(image_dirs["shapes"]), ref=str(image_dirs["noise"]), kid=True, pr=True)
    gen, real = (torch.from_numpy(inception.extract(detector, image_sets[k], 5)[0]) for k in ("shapes", "noise"))
    kid = kid_features_to_metric(gen, real, kid_subset_size=NUM, verbose=False)
    prc = prc_features_to_metric(gen, real, verbose=False)
    assert ours["kid_mean"] == pytest.approx(kid["kernel_inception_distance_mean"], rel=1e-9)
    assert ours["kid_std"] == pytest.approx(kid["kernel_inception_distance_std"], rel=1e-9, abs=1e-12)
    assert ours["kid_mean"] > 0 and (ours["kid_subsets"], ours["kid_subset_size"]) == (100, NUM)
    assert (ours["precision"], ours["recall"]) == pytest.approx((prc["precision"], prc["recall"]), abs=1e-6)
    assert (ours["kid_metric"], ours["precision_metric"], ours["recall_metric"]) == (
        "kid10_custom", "precision10_custom", "recall10_custom")
    lines = format_result(ours).splitlines()
    assert lines[3] == f"  kid10_custom = {ours['kid_mean']:.5f} ± {ours['kid_std']:.5f} (KID over 100 subsets of 10 per side)"
    assert lines[4] == (f"  precision10_custom = {ours['precision']:.3f}, recall10_custom = {ours['recall']:.3f} "
                        "(k = 3 nearest neighbours)")
    assert "kid_mean" not in run_eval(images=str(image_dirs["shapes"]), ref=str(image_dirs["shapes"]))


def test_kid_needs_reference_images(torch_home, image_dirs, tmp_path):
    """A statistics .npz has no features: a one-line error, before any Inception forward."""
    fid_stats.save_stats(tmp_path / "stats.npz", np.zeros(2048), np.eye(2048))
    with pytest.raises(SnganError, match="is a statistics file: KID, precision/recall and intra-FID need"):
        with mock.patch.object(inception, "extract", side_effect=AssertionError("no features before the check")):
            run_eval(images=str(image_dirs["shapes"]), ref=str(tmp_path / "stats.npz"), kid=True)


def test_named_reference_at_generated_resolution(torch_home, tmp_path, pool3_only_weights):
    """The CIFAR-10 images themselves at 16 px are at distance ~0 from cifar10-train compared at
    16 px, which only holds if the reference was resized to the generated resolution."""
    cifar = datasets.resize(torch.from_numpy(write_cifar10(tmp_path / "data", n_per_batch=2)), 16)
    npz = tmp_path / "gen.npz"
    np.savez(npz, images=cifar.permute(0, 2, 3, 1).numpy())  # NHWC, as sample files usually are
    result = run_eval(images=str(npz), ref="cifar10-train", data_root=str(tmp_path / "data"),
                      inception_score=True, inception_weights=str(pool3_only_weights),
                      save_stats=str(tmp_path / "ref-stats.npz"))
    # Not exactly 0: round-off in the square root of the singular (rank 9 of 2048) covariance
    # product, against ~40 between the shapes and noise sets.
    assert abs(result["fid"]) < 1e-5, result["fid"]
    assert (result["split"], result["resolution"], result["num_ref"]) == ("train", 16, 10)
    # 10 of the train split's 50,000 images: the name says how many were used.
    assert result["metric"] == "fid10_cifar10-train10" and result["ref_cached"] is False
    assert result["is"] is None and result["is_note"] == "'pool3.pth' has no classifier (fc) layer"
    assert "  IS unavailable: 'pool3.pth' has no classifier (fc) layer" in format_result(result).splitlines()
    with np.load(tmp_path / "ref-stats.npz") as saved:  # the reference's, with its protocol
        assert saved["mu"].shape == (2048,) and saved["sigma"].shape == (2048, 2048)
        assert (str(saved["ref"]), str(saved["split"]), int(saved["resolution"])) == ("cifar10-train", "train", 16)


# ---------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize("kwargs, fragment", [
    ({"images": "a", "checkpoint": "b"}, "not both"),
    ({}, "nothing to evaluate"),
    ({"checkpoint": "b", "num": 1}, "at least 2"),
    ({"images": "a", "save_stats": "out.txt"}, "must end in .npz"),
    ({"save_stats": "out.npz", "kid": True}, "--kid and --pr compare generated images"),
])
def test_argument_errors_come_before_any_work(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment):
        run_eval(**kwargs)


# ---------------------------------------------------------------------------------------------
# Every number names what was computed


def test_eval_fid_refuses_a_reference_smaller_than_asked(tmp_path, capsys, monkeypatch, pixel_mean_detector,
                                                         image_dirs):
    """--ref-images 10000 (the paper's protocol) against a partial copy of CIFAR-10's test split
    (1,017 images): one line, exit code 2, before the detector runs, where the result would have
    been named `fid10_cifar10-test10k`. Without --ref-images the same copy is named by its count."""
    write_cifar10(tmp_path / "data", n_per_batch=1017)
    monkeypatch.setattr(inception, "load_detector", lambda *a, **k: pixel_mean_detector)
    monkeypatch.setenv("SNGAN_CACHE", str(tmp_path / "cache"))  # the statistics of the second run are cached
    args = ["eval-fid", "--images", image_dirs["shapes"], "--ref", "cifar10-test", "--data-root", tmp_path / "data",
            "--no-download", "--device", "cpu"]
    with mock.patch.object(inception, "extract", side_effect=AssertionError("the detector ran before the check")):
        code, out, err = cli(capsys, *args, "--ref-images", 10_000)
    assert (code, out) == (2, "")
    assert err == ("error: --ref-images (eval.ref_images) is 10000 but reference 'cifar10-test' has 1017 images: "
                   "lower it (0 uses all of them) or use another reference\n")
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert out.splitlines()[0].startswith("fid10_cifar10-test1017 = ")
    assert "vs 1017 reference images (cifar10-test: test split at 32px)" in out.splitlines()[1]


def test_training_refuses_a_reference_smaller_than_asked(tiny, tmp_path, monkeypatch, pixel_mean_detector):
    """eval.ref_images as --ref-images: refused before training starts, and no run folder is left."""
    write_cifar10(tmp_path / "data", n_per_batch=1017)
    monkeypatch.setattr(inception, "load_detector", lambda *a, **k: pixel_mean_detector)
    monkeypatch.setenv("SNGAN_CACHE", str(tmp_path / "cache"))
    cfg = config.from_dict(tiny(data={"root": str(tmp_path / "data"), "download": False},  # the reference's root
                                eval={"every": 2, "num_samples": 10, "ref": "cifar10-test", "ref_images": 10_000}))
    with mock.patch.object(loop, "train_step", side_effect=AssertionError("training started")):
        with pytest.raises(UsageError, match=r"^--ref-images \(eval.ref_images\) is 10000 but reference "
                                             "'cifar10-test' has 1017 images: lower it"):
            loop.train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_no_inception_score_from_a_zero_classifier(tiny, tmp_path, capsys, image_dirs, zero_fc_weights):
    """Weights whose 1008-class fc is all zeros (pytorch-fid's placeholder) would give IS = 1 exactly.
    eval-fid --is says why there is none; training says it once and logs no IS, so TensorBoard and
    reports have none either."""
    result = run_eval(images=str(image_dirs["shapes"]), ref=str(image_dirs["noise"]), inception_score=True,
                      inception_weights=str(zero_fc_weights))
    why = "the classifier (fc) of 'zero-fc.pth' is all zeros, a placeholder"
    assert result["is"] is None and result["is_note"] == why and not {"is_mean", "is_metric"} & result.keys()
    assert [line for line in format_result(result).splitlines() if "IS" in line] == [f"  IS unavailable: {why}"]

    ref = reference_folder(tmp_path / "ref")
    cfg = config.from_dict(tiny(train={"steps": 2}, eval={"every": 2, "num_samples": 20, "ref": str(ref),
                                                          "batch_size": 20, "inception_weights": str(zero_fc_weights)}))
    loop.train(cfg, progress=False)
    assert capsys.readouterr().err.count(f"eval.inception_score: IS unavailable: {why}\n") == 1
    run_dir = next((tmp_path / "runs").iterdir())
    evals = [e for e in run_folder.read_metrics(run_dir) if "fid20_custom" in e]
    assert len(evals) == 1 and not [k for e in run_folder.read_metrics(run_dir) for k in e if k.startswith("is")]
    assert report.summarise(run_folder.read_run(run_dir, run_dir.name))["is_mean"] is None
    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run_dir / "tensorboard"))
        events.Reload()
        assert "fid/fid20_custom" in events.Tags()["scalars"]
        assert not [t for t in events.Tags()["scalars"] if t.startswith("is/")]


def test_a_resume_with_another_protocol_starts_the_best_over(tmp_path, capsys, monkeypatch, pixel_mean_detector):
    """FIDs of two protocols do not compare: after a resume that changes eval.num_samples, best.pt is
    the best of the new protocol's evaluations, and the closing line names the metric it is best in."""
    monkeypatch.setattr(inception, "load_detector", lambda *a, **k: pixel_mean_detector)
    ref = reference_folder(tmp_path / "ref")
    code, _, err = cli(capsys, "train", "-c", "quickstart", "--out", tmp_path / "runs", "--set", "train.steps=2",
                       *TINY, "--set", "eval.every=2", "--set", f"eval.ref={ref}", "--set", "eval.num_samples=10",
                       "--set", "eval.inception_score=false", "--no-progress")
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    first = next(e for e in run_folder.read_metrics(run_dir) if "headline" in e)
    assert first["headline"] == "fid10_custom" and f"(best fid10_custom = {first['fid10_custom']:.2f})" in err
    code, _, err = cli(capsys, "train", "--resume", run_dir, "--set", "train.steps=4", "--set", "eval.num_samples=12",
                       "--no-progress")
    assert code == 0, err
    after = next(e for e in run_folder.read_metrics(run_dir) if e.get("headline") == "fid12_custom")
    best = checkpoint.load(run_dir / "best.pt")
    assert (best["step"], best["best_metric"], best["best_fid"]) == (4, "fid12_custom", after["fid12_custom"])
    assert f"(best fid12_custom = {after['fid12_custom']:.2f})" in err


# ---------------------------------------------------------------------------------------------
# FID during training


def test_fid_is_logged_best_kept_and_training_undisturbed(tiny, tmp_path, torch_home, detector):
    ref = reference_folder(tmp_path / "ref")
    with_eval = tiny(train={"steps": 2}, eval={"every": 2, "num_samples": 20, "ref": str(ref), "batch_size": 10})
    cfg = config.from_dict(with_eval)
    summary = loop.train(cfg, progress=False)
    run_dir = next((tmp_path / "runs").iterdir())

    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in entries if "fid20_custom" in e]
    assert len(evals) == 1 and evals[0]["step"] == 2
    assert evals[0]["fid20_custom"] > 0 and evals[0]["is20"] >= 1 and "is20_std" in evals[0]
    # Beside its numbers, the line records what produced them: the detector and the reference images used.
    assert (evals[0]["detector"], evals[0]["num_ref"]) == (detector.name, 12)
    assert (summary["best_fid"], summary["best_metric"]) == (evals[0]["fid20_custom"], "fid20_custom")
    assert (run_dir / "best.pt").is_file() and (run_dir / "fid.png").is_file()
    best = checkpoint.load(run_dir / "best.pt")
    assert (best["best_fid"], best["best_metric"]) == (evals[0]["fid20_custom"], "fid20_custom")

    # The same run without evaluation ends with identical weights: FID sampling has its own RNG.
    cfg_plain = config.from_dict(tiny(train={"steps": 2}, out={"root": str(tmp_path / "plain")}))
    loop.train(cfg_plain, progress=False)
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
    loop.train(cfg, progress=False)
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
    with pytest.raises(SnganError, match="KID, precision/recall and intra-FID need the reference's images"):
        loop.train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_bad_reference_in_training_fails_before_the_detector_loads(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "load_detector", lambda *a, **k: pytest.fail("detector loaded"))
    cfg = config.from_dict(tiny(eval={"every": 2, "num_samples": 10, "ref": str(tmp_path / "missing")}))
    with pytest.raises(UsageError, match="reference '.*missing' is not a named set"):
        loop.train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_eval_fid_of_a_checkpoint_on_the_cli(tmp_path, torch_home, capsys):
    ref = reference_folder(tmp_path / "ref")
    code, _, err = cli(capsys, "train", "-c", "quickstart", "--out", tmp_path / "runs", "--set", "train.steps=2",
                       *TINY, "--no-progress")
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    code, out, err = cli(capsys, "eval-fid", "--checkpoint", run_dir / "latest.pt", "--num", 20, "--ref", ref, "--is",
                         "--device", "cpu", "--batch-size", 10, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["metric"] == "fid20_custom" and result["num_gen"] == 20 and result["num_ref"] == 12
    assert result["fid"] > 0 and result["is_mean"] >= 1.0 and (result["is_metric"], result["is_splits"]) == ("is20", 10)
    code, text, err = cli(capsys, "eval-fid", "--images", ref, "--ref", ref, "--device", "cpu", "--kid", "--pr")
    assert code == 0, err
    first = text.splitlines()[0]
    assert first.startswith("fid12_custom = ") and abs(float(first.split("=")[1])) < 1e-3
    # A set against itself: KID ~0 (subsets of all 12), every image inside its own ball.
    kid_line = next(line for line in text.splitlines() if line.startswith("  kid12_custom = "))
    assert abs(float(kid_line.split()[2])) < 1e-2 and "(KID over 100 subsets of 12 per side)" in kid_line
    assert "  precision12_custom = 1.000, recall12_custom = 1.000 (k = 3 nearest neighbours)" in text
