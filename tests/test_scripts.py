"""The scripts in scripts/ that the docs give as commands: the real-data study's split and sweep
spec (the full study needs the real detector and hours of CPU, so it is not run here)."""

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml
from torchvision.utils import save_image

from conftest import cli
from sngan.models.sample import GRID_PADDING

ROOT = Path(__file__).resolve().parent.parent


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_data_study_split_and_spec(tmp_path, capsys):
    study = _script("real_data_study")
    images = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "subset.npz", x_train=images, y_train=np.zeros(50, dtype=np.int64))
    train_file, held_file = study.split(tmp_path / "subset.npz", tmp_path, held_out=10, seed=0)
    with np.load(train_file) as t, np.load(held_file) as h:
        train, held = t["images"], h["images"]
    assert train.shape == (40, 32, 32, 3) and held.shape == (10, 32, 32, 3)
    # a partition of the subset: every image once, none in both parts
    rows = {r.tobytes() for r in images}
    assert {r.tobytes() for r in train} | {r.tobytes() for r in held} == rows
    assert not {r.tobytes() for r in train} & {r.tobytes() for r in held}
    (tmp_path / "again").mkdir()
    _, held_again = study.split(tmp_path / "subset.npz", tmp_path / "again", held_out=10, seed=0)
    with np.load(held_again) as h2:
        assert np.array_equal(h2["images"], held)  # seeded: the same split every time

    spec_file = tmp_path / "study.yaml"
    spec_file.write_text(yaml.safe_dump(study.spec(train_file, held_file, steps=600, every=250, num_samples=1000)))
    code, out, err = cli(capsys, "sweep", spec_file, "--out", tmp_path / "sweep", "--dry-run")
    assert code == 0, err
    for cell, overrides in (("SN", "model.d_norm=sn"), ("BN", "model.d_norm=bn"), ("none", "model.d_norm=none"),
                            ("SN-EMA", "train.ema_decay=0.995")):
        assert any(cell in line and overrides in line for line in out.splitlines()), out

    # The DiffAugment study: the SN cell without and with DiffAugment, under both initialisations.
    spec_file.write_text(yaml.safe_dump(study.spec(train_file, held_file, 600, 250, 1000, study="diffaug")))
    code, out, err = cli(capsys, "sweep", spec_file, "--out", tmp_path / "diffaug", "--dry-run")
    assert code == 0, err
    cells = [line for line in out.splitlines() if "model.init=" in line]
    assert len(cells) == 4, out
    for init in ("official", "pytorch"):
        assert any(f"model.init={init}" in line and "train.diffaug=color,translation,cutout" in line for line in cells)
        assert any(f"model.init={init}" in line and "train.diffaug=color" not in line for line in cells)
    with np.load(train_file) as t:
        assert "labels" in t.files and len(t["labels"]) == len(t["images"])  # the split keeps the labels


def test_real_data_study_controls_robustness_and_cifar_sn_specs(tmp_path, capsys):
    """The studies of the defaults (docs/results.md): every cell resolves, the controls change one
    thing at a time from the old defaults, and the robustness grid is the paper's settings x norms."""
    study = _script("real_data_study")
    train_file, held = tmp_path / "train.npz", tmp_path / "heldout-stats.npz"

    def cells(name, width=16):
        spec_file = tmp_path / f"{name}.yaml"
        spec_file.write_text(yaml.safe_dump(study.spec(train_file, held, 5000, 1000, 1000, study=name, width=width),
                                            sort_keys=False))
        code, out, err = cli(capsys, "sweep", spec_file, "--out", tmp_path / name, "--dry-run")
        assert code == 0, err
        rows = [re.match(r"\s+\d+\s+(\S+)\s+pending", line) for line in out.splitlines()]
        return {row[1]: row.string.rstrip() for row in rows if row}

    controls = cells("controls")
    assert list(controls) == ["old", "new", "feature-bn", "pytorch-init", "lr_d-2e-4"]
    assert "model.init=official model.g_dense_bn=channel" in controls["old"]
    assert "model.init=pytorch model.g_dense_bn=feature" in controls["new"]
    assert controls["lr_d-2e-4"].endswith("optim.lr_d=0.0002")
    robustness = cells("robustness")
    grid = [f"{s}-{n}" for s in ("TTUR", "B", "C", "A", "D", "E", "F") for n in ("SN", "BN", "none")]
    assert list(robustness)[:21] == grid and len(robustness) == 27 and list(robustness)[-1] == "A-WGAN-GP"
    assert "optim.n_dis=5" in robustness["A-SN"] and "optim.lr_d=0.0004" in robustness["TTUR-SN"]
    assert "model.init=official" in robustness["F-SN-init-official"] and "optim.beta1=0.9" in robustness["F-SN-init-official"]
    assert "train.seed=1" in robustness["TTUR-SN-seed1"]
    wgan = robustness["A-WGAN-GP"]  # no normalisation, the Wasserstein loss with its penalty, setting A
    assert all(s in wgan for s in ("model.d_norm=none", "loss.name=wasserstein", "loss.gp_weight=10", "optim.n_dis=5"))
    assert list(cells("cifar_sn", width=0)) == ["new"]
    spec = study.spec(train_file, held, 2000, 500, 1000, study="cifar_sn")
    assert "model.g_ch" not in spec["set"] and spec["set"]["eval.ref"] == str(held.resolve())  # the paper's widths


def test_real_data_study_passes_only_to_the_sweep(tmp_path, monkeypatch):
    """--only reaches `sngan sweep`: a study can train just the cells named (here, without training)."""
    study = _script("real_data_study")
    np.savez(tmp_path / "subset.npz", images=np.zeros((20, 32, 32, 3), dtype=np.uint8))
    calls = []
    monkeypatch.setattr(study.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or SimpleNamespace(returncode=0))
    assert study.main(["--study", "robustness", "--data", str(tmp_path / "subset.npz"), "--out", str(tmp_path / "s"),
                       "--held-out", "10", "--only", "F-SN,F-BN"]) == 0
    sweep = next(cmd for cmd in calls if "sweep" in cmd)
    assert sweep[-2:] == ["--only", "F-SN,F-BN"] and "--jobs" in sweep


def test_robustness_figure_reads_each_cells_fid(tmp_path):
    """The robustness figure is drawn from the cells' metrics.jsonl: the FID curve of each cell
    (its headline key), seeds kept apart, a half-written last line skipped, a cell short of the
    study's last step marked as running; without any robustness cell there is no figure."""
    study = _script("real_data_study")
    cells = tmp_path / "cells"
    for name, fids in {"TTUR-SN": [250.0, 150.0], "TTUR-SN-seed1": [240.0, 160.0], "D-BN": [400.0, 420.0],
                       "A-WGAN-GP": [300.0, 200.0]}.items():
        (cells / name).mkdir(parents=True)
        lines = [{"step": 500, "loss_d": 1.0}] + [
            {"step": 1000 * (i + 1), "fid1k_custom": f, "headline": "fid1k_custom"} for i, f in enumerate(fids)]
        (cells / name / "metrics.jsonl").write_text("".join(f"{json.dumps(e)}\n" for e in lines))
    with open(cells / "D-BN" / "metrics.jsonl", "a") as log:
        log.write('{"step": 3000, "fid1k_cus')  # a line the running cell is still writing
    assert study.fid_rows(cells) == {"A-WGAN-GP": [(1000, 300.0), (2000, 200.0)], "D-BN": [(1000, 400.0), (2000, 420.0)],
                                     "TTUR-SN": [(1000, 250.0), (2000, 150.0)], "TTUR-SN-seed1": [(1000, 240.0), (2000, 160.0)]}
    assert study._variants(["A", "D"], study.fid_rows(cells)) == ["SN", "BN", "none", "WGAN-GP"]
    assert study._variants(["D", "TTUR"], study.fid_rows(cells)) == ["SN", "BN", "none"]  # no column of WGAN-GP
    assert study.running_cells(study.fid_rows(cells)) == set()
    (cells / "B-none").mkdir()
    (cells / "B-none" / "metrics.jsonl").write_text('{"step": 1000, "fid1k_custom": 300.0, "headline": "fid1k_custom"}\n')
    assert study.running_cells(study.fid_rows(cells)) == {"B-none"}  # drawn hatched, at its latest FID
    figure = study.robustness_figure(study.fid_rows(cells), tmp_path / "robustness.png")
    assert figure.is_file() and figure.stat().st_size > 10_000
    assert study.robustness_figure(study.fid_rows(tmp_path / "empty"), tmp_path / "none.png") is None


def test_robustness_figure_draws_recorded_curves_of_cells_not_here(tmp_path, capsys):
    """--recorded: the curves of an earlier robustness-fid.csv are drawn for cells without a run
    folder, a cell's own metrics win over its record, and the finished cells' curves are written
    back (a running cell is drawn, not recorded)."""
    study = _script("real_data_study")
    recorded = study.write_curves({"TTUR-SN": [(1000, 247.5), (2000, 154.4)], "D-BN": [(1000, 203.4), (2000, 132.2)]},
                                  tmp_path / "recorded.csv")
    assert study.read_curves(recorded) == {"D-BN": [(1000, 203.4), (2000, 132.2)],
                                           "TTUR-SN": [(1000, 247.5), (2000, 154.4)]}
    cell = tmp_path / "study" / "sweep" / "cells" / "D-BN"
    cell.mkdir(parents=True)
    cell.joinpath("metrics.jsonl").write_text("".join(
        f'{{"step": {s}, "fid1k_custom": {f}, "headline": "fid1k_custom"}}\n' for s, f in ((1000, 210.0), (2000, 130.0))))
    out = tmp_path / "study"
    assert study.main(["--study", "robustness", "--out", str(out), "--figures", "--recorded", str(recorded)]) == 0
    assert (out / "robustness.png").is_file()
    assert study.read_curves(out / "robustness-fid.csv") == {"D-BN": [(1000, 210.0), (2000, 130.0)],
                                                             "TTUR-SN": [(1000, 247.5), (2000, 154.4)]}
    running = cell.parent / "F-SN"  # drawn, but left out of the record until it reaches the last step
    running.mkdir()
    running.joinpath("metrics.jsonl").write_text('{"step": 1000, "fid1k_custom": 375.1, "headline": "fid1k_custom"}\n')
    assert study.main(["--study", "robustness", "--out", str(out), "--figures", "--recorded", str(recorded)]) == 0
    assert set(study.read_curves(out / "robustness-fid.csv")) == {"D-BN", "TTUR-SN"}
    capsys.readouterr()
    assert study.main(["--study", "robustness", "--out", str(out), "--figures", "--recorded", str(tmp_path / "no.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_robustness_samples_show_each_cells_latest_grid(tmp_path):
    """robustness-samples.png takes each cell's latest grid of G (not of its EMA); without grids
    there is none, and --figures draws both figures of a study folder."""
    study = _script("real_data_study")
    cells = tmp_path / "study" / "sweep" / "cells"
    for name, steps in {"TTUR-SN": (1000, 2000), "C-none": (1000,)}.items():
        (cells / name / "samples").mkdir(parents=True)
        for step in steps:
            save_image(torch.rand(64, 3, 32, 32), cells / name / "samples" / f"step-{step:07d}.png", nrow=8,
                       padding=GRID_PADDING)
    save_image(torch.rand(64, 3, 32, 32), cells / "TTUR-SN" / "samples" / "ema-step-0003000.png", nrow=8)
    assert {name: path.name for name, path in study.latest_grids(cells).items()} == {
        "C-none": "step-0001000.png", "TTUR-SN": "step-0002000.png"}
    figure = study.robustness_samples(cells, tmp_path / "samples.png")
    assert figure.is_file() and figure.stat().st_size > 10_000
    assert study.robustness_samples(tmp_path / "empty", tmp_path / "none.png") is None
    assert study.main(["--study", "robustness", "--out", str(tmp_path / "study"), "--figures"]) == 0
    assert (tmp_path / "study" / "robustness-samples.png").is_file()  # no FID logged: no robustness.png
    assert not (tmp_path / "study" / "robustness.png").exists()
