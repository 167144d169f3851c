"""sngan.runs.run_folder: run-folder numbering, the lock, the metrics log, status and headline, plots, collect."""

import json

import pytest
from PIL import Image

from sngan.errors import SnganError
from sngan.runs import run_folder
from conftest import train_run


def test_a_new_run_never_reuses_a_folder(tiny, tmp_path):
    first, _ = train_run(tiny(train={"steps": 1}), tmp_path, "same")
    second, _ = train_run(tiny(train={"steps": 1}), tmp_path, "same")
    assert first != second and first.name == "00000-same" and second.name == "00001-same"


def test_running_folder_is_locked(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    with run_folder.run_lock(run_dir):
        with pytest.raises(SnganError, match="in use by another sngan process; wait for it to end, or stop it"):
            with run_folder.run_lock(run_dir):
                pass


def test_metrics_log_skips_a_line_cut_short_and_truncates_after_a_step(tmp_path):
    log = run_folder.MetricsLog(tmp_path / run_folder.METRICS)
    assert log.read() == []
    for step in (1, 2, 3):
        log.write({"step": step, "loss_d": 1.0})
    with open(log.path, "a") as f:
        f.write('{"step": 4, "los')  # a crash in the middle of a line
    assert [e["step"] for e in log.read()] == [1, 2, 3]
    assert log.truncate_after(2) == 1
    assert run_folder.read_metrics(tmp_path) == [{"step": 1, "loss_d": 1.0}, {"step": 2, "loss_d": 1.0}]


def test_status_of_a_run():
    assert run_folder.status([], 0, 10) == "pending"
    assert run_folder.status([{"step": 3}], 3, 10) == "interrupted"
    assert run_folder.status([{"step": 10}], 10, 10) == "done"
    assert run_folder.status([{"step": 5, "diverged": True}], 10, 10) == "diverged"  # even at the last step


def test_headline_is_the_named_key_else_the_last_fid_logged():
    assert run_folder.headline([{"step": 1, "loss_d": 1.0}]) == ""
    old = [{"step": 1, "fid5k_train": 40.0}, {"step": 2, "fid5k_train_ema": 38.0, "fid_ref": "cifar10-train"}]
    assert run_folder.headline(old) == "fid5k_train_ema"  # before "headline" existed; text values are not FIDs
    named = [{"step": 3, "fid5k_train_ema": 33.0, "headline": "fid5k_train_ema"},
             {"step": 4, "fid5k_train": 30.0, "fid5k_train_ema": 31.0, "headline": "fid5k_train"}]
    assert run_folder.headline(old + named) == "fid5k_train"  # the last one named


def test_run_folder_plots(tmp_path, monkeypatch):
    """A run folder gets losses.png and sigmas.png, and fid.png only once FID is logged."""
    train = [{"step": s, "loss_d": 1.0, "loss_g": 0.5, "d_real": 0.1, "d_fake": -0.1, "sigma": {"fc": 1.0}}
             for s in (10, 20)]
    run_folder.write_plots(tmp_path, train)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.png", "sigmas.png"]
    titles = {}
    save = run_folder.plots.save
    monkeypatch.setattr(run_folder.plots, "save", lambda fig, path: titles.update({path.name: fig.axes[0].get_title()})
                        or save(fig, path))
    evaluation = {"step": 20, "fid5k_train": 40.0, "detector": "pytorch-fid-inception-2015-12-05", "num_ref": 50_000}
    run_folder.write_plots(tmp_path, train + [evaluation])
    for name in ("losses.png", "sigmas.png", "fid.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size == (800, 500)
    # The curves are named by their protocol; the title adds the detector the evaluation lines record.
    assert titles["fid.png"] == "FID over training (detector pytorch-fid-inception-2015-12-05)"


def test_collect_names_cells_of_two_sweeps_by_their_folder(tmp_path):
    for sweep in ("s1", "s2"):
        cell = tmp_path / sweep / "cells" / "A-sn"
        cell.mkdir(parents=True)
        (cell / run_folder.CONFIG).write_text("train: {steps: 4}\n")
        (tmp_path / sweep / run_folder.INDEX).write_text(json.dumps({
            "cells": [{"name": "A-sn", "dir": "cells/A-sn", "axes": {"setting": "A"}, "status": "done"}],
            "axes": {"setting": ["A"]}}))
    records, axes = run_folder.collect([tmp_path / "s1", tmp_path / "s2"])
    assert [r.name for r in records] == ["s1/A-sn", "s2/A-sn"] and axes == ["setting"]
    assert records[0].config == {"train.steps": 4} and records[0].axes == {"setting": "A"}
    assert records[0].status == "done"
