"""Checkpoints written by an earlier layout of the code still load: `fixtures/run-0.1.0` is a run
folder (its latest.pt, config.yaml and metrics.jsonl) made by a tiny 2-step conditional ResNet run
with EMA and DiffAugment before the modules moved into subpackages (commit 16c0010), and
`fixtures/run-0.1.0-samples.npz` holds the images its generators drew then (`sample_uint8(4, seed=0)`,
keys `ema` and `raw`)."""

import pickletools
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import sngan
from sngan.runs import checkpoint
from conftest import cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUN = FIXTURES / "run-0.1.0"


@pytest.fixture
def old_run(tmp_path):
    """A copy of the old run folder (the tests never write into tests/fixtures)."""
    return Path(shutil.copytree(RUN, tmp_path / "run-0.1.0"))


def test_the_checkpoint_names_no_sngan_module():
    """Only torch's and the standard library's globals are pickled: no module path of sngan's,
    so moving sngan's modules cannot break loading."""
    with zipfile.ZipFile(RUN / "latest.pt") as archive:
        pickle = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    names = {arg for op, arg, _ in pickletools.genops(pickle) if op.name in ("GLOBAL", "STACK_GLOBAL", "INST")}
    assert names and {name.split()[0].split(".")[0] for name in names} <= {"torch", "collections"}, names


@pytest.mark.parametrize("kind", ["ema", "raw"])
def test_sngan_load_draws_the_images_it_drew_before_the_move(old_run, kind):
    G = sngan.load(old_run, device="cpu", ema=kind == "ema")
    assert (G.kind, G.classes, G.z_dim, G.resolution) == (kind, ("square", "disc"), 8, 32)
    expected = np.load(FIXTURES / "run-0.1.0-samples.npz")[kind]
    images = G.sample_uint8(4, seed=0)
    assert images.shape == expected.shape == (4, 32, 32, 3)
    # the same weights in the same networks; a rounding step apart at most on another CPU
    assert np.abs(images.astype(int) - expected).max() <= 1


def test_sngan_sample_from_the_old_run(capsys, old_run, tmp_path):
    out = tmp_path / "s.npz"
    code, _, err = cli(capsys, "sample", "--checkpoint", old_run, "--num", 4, "--out", out, "--device", "cpu")
    assert code == 0, err
    images = np.load(out)["images"]
    assert np.array_equal(images, sngan.load(old_run, device="cpu").sample_uint8(4, seed=0))


def test_resume_continues_the_old_run(capsys, old_run):
    code, _, err = cli(capsys, "train", "--resume", old_run, "--set", "train.steps=3", "--no-progress")
    assert code == 0, err
    state = checkpoint.load(old_run / "latest.pt")
    assert state["step"] == 3 and "G_ema" in state
    assert (old_run / "metrics.jsonl").read_text().count('"step": 3') == 1
