"""sngan.studies.report on hand-written run folders: FID final/best with protocol, IS, divergence, plots."""

import csv
import json
import os
from pathlib import Path

import pytest
import yaml
from PIL import Image

from sngan.runs.run_folder import collect
from sngan.studies import report
from conftest import cli

SIGMA = {"main.0": 1.0, "fc": 0.5}


def _run(folder: Path, *, d_norm="sn", lr_d=4e-4, steps=300, entries=(), sample_steps=(100,)) -> Path:
    """A run folder as training writes it: config.yaml, metrics.jsonl, samples/step-*.png."""
    (folder / "samples").mkdir(parents=True)
    cfg = {"model": {"d_norm": d_norm}, "optim": {"lr_d": lr_d}, "train": {"steps": steps},
           "out": {"root": str(folder.parent), "name": folder.name}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries) + '{"step": 1, "los')
    for s in sample_steps:
        Image.new("RGB", (34, 34), (s % 256, 0, 0)).save(folder / "samples" / f"step-{s:07d}.png")
    return folder


def _train(step, time=1.0):
    return {"step": step, "loss_d": 1.0 / step, "loss_g": 0.5, "d_real": 0.1, "d_fake": -0.1, "time": time,
            "it_s": 10.0, "skipped": 0, "sigma": SIGMA}


DETECTOR = "pytorch-fid-inception-2015-12-05"


def _runs(root: Path) -> list[Path]:
    """Three runs: a with FID and IS (its evaluation lines record their detector), b from before
    evaluation lines did, c without FID."""
    fid, d = "fid10k_cifar10-train", {"detector": DETECTOR, "num_ref": 50_000}
    return [
        _run(root / "00000-a", entries=[_train(100), {"step": 100, fid: 40.0, "is10k": 5.0, "is10k_std": 0.1, **d},
                                        _train(200), {"step": 200, fid: 30.0, "is10k": 6.0, "is10k_std": 0.2, **d},
                                        _train(300, time=3725.0),
                                        {"step": 300, fid: 35.0, "is10k": 6.5, "is10k_std": 0.3, **d}],
             sample_steps=(100, 300)),
        _run(root / "00001-b", d_norm="bn", entries=[_train(100), {"step": 100, fid: 50.0},
                                                     _train(200), {"step": 200, "diverged": True, "first_nonfinite_step": 151}]),
        _run(root / "00002-c", d_norm="none", lr_d=2e-4, entries=[_train(100)], sample_steps=()),
    ]


def test_rows_name_final_and_best_fid_with_protocol_is_and_divergence(tmp_path):
    a, b, c = _runs(tmp_path / "runs")
    runs, axes = collect([tmp_path / "runs"])  # a folder of run folders
    assert [r.name for r in runs] == ["00000-a", "00001-b", "00002-c"] and axes == []
    rows = {r["run"]: r for r in map(report.summarise, runs)}
    ra = rows["00000-a"]
    assert (ra["fid_final"], ra["fid_best"], ra["fid_best_step"]) == (35.0, 30.0, 200)
    assert ra["fid_protocol"] == "fid10k_cifar10-train" and (ra["is_mean"], ra["is_std"]) == (6.5, 0.3)
    assert (ra["fid_detector"], ra["is_metric"]) == (DETECTOR, "is10k")
    assert ra["status"] == "done" and ra["step"] == 300 and ra["train_seconds"] == 3725.0
    rb = rows["00001-b"]
    assert rb["status"] == "diverged" and rb["diverged_step"] == 151 and rb["fid_final"] == 50.0 and rb["is_mean"] is None
    assert rb["fid_detector"] is None and rb["is_metric"] is None
    rc = rows["00002-c"]
    assert rc["status"] == "interrupted" and rc["fid_final"] is None and rc["step"] == 100
    assert report.varying_keys(runs) == ["model.d_norm", "optim.lr_d"]  # out.* is where, not what


def test_report_files(tmp_path, capsys):
    _runs(tmp_path / "runs")
    code, _, err = cli(capsys, "report", tmp_path / "runs" / "00000-a", tmp_path / "runs" / "00001-b",
                       tmp_path / "runs" / "00002-c", "--out", tmp_path / "rep")
    assert code == 0, err
    out = tmp_path / "rep"
    md = (out / "report.md").read_text()
    assert "| final FID | best FID (step) | FID protocol | FID detector | IS | train time | diverged |" in md
    assert (f"| 00000-a | sn | 0.0004 | done | 300/300 | 35.00 | 30.00 (200) | fid10k_cifar10-train | {DETECTOR} | "
            "6.50 ± 0.30 (is10k) | 1h02m | — |") in md
    assert "| 00001-b | bn | 0.0004 | diverged | 200/300 | 50.00 | 50.00 (100) | fid10k_cifar10-train | — | — | 1.0s | step 151 |" in md
    assert "| 00002-c | none | 0.0002 | interrupted | 100/300 | — | — | — | — | — |" in md
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["run"] for r in rows] == ["00000-a", "00001-b", "00002-c"]
    assert rows[0]["fid_best"] == "30.0" and rows[2]["fid_final"] == "" and rows[0]["folder"] == "../runs/00000-a"
    assert (rows[0]["fid_detector"], rows[0]["is_metric"], rows[1]["fid_detector"]) == (DETECTOR, "is10k", "")
    for png in ("fid_by_setting.png", "fid.png", "losses.png", "sigmas.png", "samples.png"):
        with Image.open(out / png) as img:
            img.verify()
        assert f'<img src="{png}"' in (out / "index.html").read_text()
    with Image.open(out / "samples.png") as img:  # 3 tiles side by side; the latest grid of a is step 300
        assert img.size == (3 * (256 + 16), 256 + 40 + 16)
        assert img.convert("RGB").getpixel((8 + 128, 8 + 40 + 128)) == (300 % 256, 0, 0)
    html = (out / "index.html").read_text()
    assert html.count("<tr>") == 4 and 'href="../runs/00000-a/"' in html


def test_figures_plot_each_runs_metrics(tmp_path):
    """fid.png: one line per run with FID, at its steps; losses.png and sigmas.png: one panel per run."""
    _runs(tmp_path / "runs")
    runs, axes = collect([tmp_path / "runs"])
    curves = report.fid_curves(runs).axes[0]
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in curves.get_lines()}
    assert lines == {"00000-a": ([100, 200, 300], [40.0, 30.0, 35.0]), "00001-b": ([100], [50.0])}
    # The title says what the numbers are: the protocol, and the detector where the runs record it.
    assert curves.get_title() == f"FID over training (fid10k_cifar10-train; detector {DETECTOR})"
    bars = report.fid_by_setting(runs, axes, [report.summarise(r) for r in runs]).axes[0]
    assert bars.get_title() == f"final FID (fid10k_cifar10-train; detector {DETECTOR}), lower is better"
    losses = report.loss_panels(runs)
    assert [ax.get_title() for ax in losses.axes] == ["00000-a", "00001-b", "00002-c"]
    a = {line.get_label(): list(line.get_ydata()) for line in losses.axes[0].get_lines()}
    assert a == {"loss_d": [1 / 100, 1 / 200, 1 / 300], "loss_g": [0.5] * 3}
    sigmas = report.sigma_panels(runs)
    assert len(sigmas.axes) == 3 and all(ax.get_yscale() == "log" for ax in sigmas.axes)
    assert [line.get_label() for line in sigmas.axes[1].get_lines()] == list(SIGMA)
    assert list(sigmas.axes[1].get_lines()[1].get_xdata()) == [100, 200]
    no_fid = [r for r in runs if r.name == "00002-c"]
    assert report.fid_curves(no_fid) is None and report.fid_by_setting(no_fid, axes, [report.summarise(no_fid[0])]) is None


def test_diversity_curves_plot_the_runs_that_logged_it(tmp_path):
    """diversity.png: one line per run with the collapse measure; runs logged before it are left out."""
    _run(tmp_path / "runs" / "00000-new", entries=[{**_train(s), "diversity": d} for s, d in ((100, 0.07), (200, 0.8))])
    _run(tmp_path / "runs" / "00001-old", entries=[_train(100), _train(200)])
    runs, _ = collect([tmp_path / "runs"])
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
             for line in report.diversity_curves(runs).axes[0].get_lines()}
    assert lines == {"00000-new": ([100, 200], [0.07, 0.8])}
    assert report.diversity_curves([r for r in runs if r.name == "00001-old"]) is None
    assert report.build([tmp_path / "runs"], tmp_path / "rep")
    assert "diversity.png" in (tmp_path / "rep" / "report.md").read_text()


def test_sweep_index_gives_axes_and_the_figure_1_grouping(tmp_path):
    """With a sweep, rows show the axis labels and the bars group by the first axis."""
    sweep_dir = tmp_path / "sw"
    cells = []
    for setting in ("A", "B"):
        for method, fid in (("SN", 25.0), ("BN", 50.0)):
            name = f"{setting}-{method}"
            _run(sweep_dir / "cells" / name, d_norm=method.lower(),
                 entries=[_train(300), {"step": 300, "fid5k_custom": fid + (setting == "B")}])
            cells.append({"name": name, "dir": f"cells/{name}", "axes": {"setting": setting, "method": method},
                          "status": "done", "step": 300, "steps": 300})
    cells.append({"name": "B-none", "dir": "cells/B-none", "axes": {"setting": "B", "method": "none"},
                  "status": "pending", "step": 0, "steps": 300, "config": {"train": {"steps": 300}}})
    (sweep_dir / "index.json").write_text(json.dumps({"format": "sngan-sweep", "version": 1, "cells": cells,
                                                      "axes": {"setting": ["A", "B"], "method": ["SN", "BN", "none"]}}))
    runs, axes = collect([sweep_dir])
    assert axes == ["setting", "method"] and len(runs) == 5
    rows = [report.summarise(r) for r in runs]
    header, body = report.table(runs, axes, rows)
    assert header[:4] == ["run", "setting", "method", "status"]
    assert body[-1][:5] == ["B-none", "B", "none", "pending", "0/300"]

    fig = report.fid_by_setting(runs, axes, rows)
    with Image.open(report.plots.save(fig, tmp_path / "bars.png")) as img:
        img.verify()
    ax, = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B"]
    assert {c.get_label(): [p.get_height() for p in c] for c in ax.containers} == {"SN": [25.0, 26.0],
                                                                                  "BN": [50.0, 51.0]}


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "not found"),
    (lambda p: p.mkdir(), "no runs in"),
    (lambda p: p.write_text("a file"), "is not a folder; give run folders, sweep folders or folders holding run"),
])
def test_report_bad_input_is_one_line(tmp_path, capsys, make, fragment):
    make(tmp_path / "x")
    code, _, err = cli(capsys, "report", tmp_path / "x", "--out", tmp_path / "rep")
    assert code == 2 and fragment in err and err.count("\n") == 1


def test_report_never_writes_into_a_run_or_sweep_folder(tmp_path, capsys):
    _runs(tmp_path / "runs")
    run_dir = tmp_path / "runs" / "00000-a"
    (run_dir / "losses.png").write_bytes(b"the run's own plot")
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "index.json").write_text("{}")
    for out in (run_dir, sweep_dir):
        code, _, err = cli(capsys, "report", tmp_path / "runs", "--out", out)
        assert code == 2 and "is a run or sweep folder" in err and f"--out, e.g. {out / 'report'}" in err
        assert err.count("\n") == 1 and not (out / "report.md").exists()
    assert (run_dir / "losses.png").read_bytes() == b"the run's own plot"


def test_report_texts_are_utf8_and_written_atomically(tmp_path, capsys, monkeypatch):
    """A failed write of report.md (here: its final rename) is one line and leaves the previous report whole."""
    _runs(tmp_path / "runs")
    assert cli(capsys, "report", tmp_path / "runs", "--out", tmp_path / "rep")[0] == 0
    md = tmp_path / "rep" / "report.md"
    before = md.read_bytes()
    assert "6.50 ± 0.30" in before.decode("utf-8")  # UTF-8 whatever the locale's encoding
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("report.md"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr("os.replace", failing_replace)
    (tmp_path / "runs" / "00002-c" / "metrics.jsonl").unlink()  # the new report would differ
    code, _, err = cli(capsys, "report", tmp_path / "runs", "--out", tmp_path / "rep")
    assert code == 1 and "cannot write report" in err and "report.md" in err and err.count("\n") == 1
    assert md.read_bytes() == before and not list((tmp_path / "rep").glob(".*.tmp-*"))
