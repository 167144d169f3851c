"""The command line as users meet it: real subprocess smoke runs and a bad-input battery."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sngan import config_files
from conftest import TINY, cli, sngan

def test_help_lists_the_commands():
    out = sngan("--help").stdout
    for command in ("train", "sample", "eval-fid"):
        assert command in out


def test_quickstart_train_then_sample_smoke(tmp_path):
    """The README's main job, shortened: train the bundled quickstart by bare name, then sample."""
    sngan("train", "--config", "quickstart.yaml", "--out", tmp_path / "runs", "--set", "train.steps=4",
          *TINY, "--no-progress", cwd=tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name == "00000-quickstart"
    assert (run_dir / "latest.pt").is_file() and (run_dir / "samples" / "step-0000004.png").is_file()
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [2, 4]

    sngan("sample", "--checkpoint", run_dir / "latest.pt", "--num", 9, "--out", tmp_path / "grid.png", "--device", "cpu")
    assert Image.open(tmp_path / "grid.png").size == (3 * 18 + 2, 3 * 18 + 2)  # 3x3 grid of 16 px images, 2 px padding
    sngan("sample", "--checkpoint", run_dir, "--num", 5, "--out", tmp_path / "pngs", "--seed", 3)
    files = sorted((tmp_path / "pngs").iterdir())
    assert len(files) == 5 and Image.open(files[0]).size == (16, 16)
    sngan("sample", "--checkpoint", run_dir / "latest.pt", "--num", 5, "--out", tmp_path / "s.npz", "--seed", 3)
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    # the same seed gives the same images whatever the output kind
    assert np.array_equal(images[0], np.asarray(Image.open(files[0])))


def test_every_bundled_config_dry_runs(capsys):
    for name in config_files.list_bundled():
        code, out, err = cli(capsys, "train", "--config", name, "--dry-run")
        assert code == 0, err
        assert yaml.safe_load(out)["out"]["name"] == name


def test_dry_run_applies_overrides_and_creates_nothing(capsys, tmp_path):
    code, out, _ = cli(capsys, "train", "-c", "cifar_sn", "--set", "optim.lr_d=2e-4", "--out", tmp_path / "r", "--dry-run")
    assert code == 0
    assert yaml.safe_load(out)["optim"]["lr_d"] == 2e-4
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# Bad input: one line on stderr, a non-zero exit (2 for usage errors), no traceback, files untouched.


def _one_clean_line(code, err, expect_code, fragment):
    assert code == expect_code, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("yaml_text, code, fragment", [
    ("train: {steps: [1, 2\n", 2, "cannot parse config"),
    ("train: {stepz: 5}\n", 2, "unknown config key 'train.stepz'; did you mean 'train.steps'?"),
    ("train: {batch_size: 'many'}\n", 2, "'train.batch_size' must be int"),
    ("optim: {lr_g: 0}\n", 2, "'optim.lr_g' must be > 0"),
    ("optim: {lr_d: -0.1}\n", 2, "'optim.lr_d' must be > 0"),
    ("train: {batch_size: 0}\n", 2, "'train.batch_size' must be >= 1"),
    ("train: {steps: -3}\n", 2, "'train.steps' must be >= 1"),
    ("data: {name: imagenet}\n", 2, "valid choices: cifar10, folder, npz, stl10, synthetic"),
    ("model: {arch: biggan}\n", 2, "valid choices: dcgan, resnet"),
    ("loss: {name: wgan}\n", 2, "valid choices: hinge, standard"),
    ("model: {d_norm: layer}\n", 2, "valid choices: sn, bn, none"),
])
def test_bad_config_files(capsys, tmp_path, yaml_text, code, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    _one_clean_line(*cli(capsys, "train", "--config", path, "--out", tmp_path / "runs")[::2], code, fragment)
    assert not (tmp_path / "runs").exists()


def test_bad_cli_usage(capsys, tmp_path):
    _one_clean_line(*cli(capsys, "train")[::2], 2, "give --config")
    _one_clean_line(*cli(capsys, "train", "--config", tmp_path / "missing.yaml")[::2], 2, "not found")
    _one_clean_line(*cli(capsys, "train", "-c", "quickstart", "--set", "train.steps")[::2], 2, "section.key=value")
    _one_clean_line(*cli(capsys, "train", "--bogus")[::2], 2, "No such option")
    _one_clean_line(*cli(capsys, "sample", "--checkpoint", tmp_path / "nope.pt", "--out", tmp_path / "x.png")[::2],
                    1, "not found")


def test_missing_data_without_download(capsys, tmp_path):
    _one_clean_line(*cli(capsys, "train", "-c", "cifar_sn", "--set", f"data.root={tmp_path}", "--set",
                         "data.download=false", "--set", "eval.every=0", "--out", tmp_path / "runs")[::2],
                    1, "CIFAR-10 not found")


def test_image_folder_problems(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["train", "-c", "quickstart", "--set", "data.name=folder", "--out", tmp_path / "runs"]
    _one_clean_line(*cli(capsys, *base, "--set", f"data.root={empty}")[::2], 1, "has no images")
    (empty / "readme.txt").write_text("hello")
    _one_clean_line(*cli(capsys, *base, "--set", f"data.root={empty}")[::2], 1, "(it holds 1 other files)")
    (empty / "x.png").write_bytes(b"\x89PNG broken")
    _one_clean_line(*cli(capsys, *base, "--set", f"data.root={empty}")[::2], 1, "cannot read image")


def _tiny_run(capsys, tmp_path) -> Path:
    code, _, err = cli(capsys, "train", "-c", "quickstart", "--out", tmp_path / "runs", "--set", "train.steps=2",
                       *TINY, "--no-progress")
    assert code == 0, err
    return next((tmp_path / "runs").iterdir())


def test_sample_bad_outputs_leave_files_untouched(capsys, tmp_path):
    run_dir = _tiny_run(capsys, tmp_path)
    ckpt = run_dir / "latest.pt"
    _one_clean_line(*cli(capsys, "sample", "--checkpoint", ckpt, "--num", 0, "--out", tmp_path / "a.png")[::2],
                    2, "--num must be at least 1")
    existing = tmp_path / "keep.png"
    existing.write_bytes(b"precious")
    _one_clean_line(*cli(capsys, "sample", "--checkpoint", ckpt, "--out", existing)[::2], 2, "already exists")
    for out in (existing / "a.png", existing / "sub" / "pngs"):  # a file where a folder should be
        _one_clean_line(*cli(capsys, "sample", "--checkpoint", ckpt, "--out", out)[::2], 2,
                        f"cannot write '{out}': '{existing}' is a file, not a folder; choose another path")
    assert existing.read_bytes() == b"precious"
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as a user that can write read-only folders")
        code, _, err = cli(capsys, "sample", "--checkpoint", ckpt, "--out", locked / "a.png")
        _one_clean_line(code, err, 1, "cannot write")
    finally:
        locked.chmod(stat.S_IRWXU)


def test_outputs_in_missing_folders_are_created(capsys, tmp_path, monkeypatch):
    """One rule for every command that writes a file: missing folders on the way are created
    (as eval-fid --save-stats and report --out always did)."""
    from sngan.studies import bench

    run_dir = _tiny_run(capsys, tmp_path)
    new = tmp_path / "new" / "deeper"
    for out in (new / "grid.png", new / "s.npz", new / "pngs"):
        code, _, err = cli(capsys, "sample", "--checkpoint", run_dir, "--num", 4, "--out", out)
        assert code == 0 and f"wrote 4 samples to {out}" in err, err
    assert len(list((new / "pngs").iterdir())) == 4
    code, _, err = cli(capsys, "export", "--checkpoint", run_dir, "--out", new / "g" / "G.pt2")
    assert code == 0 and (new / "g" / "G.pt2").is_file(), err
    monkeypatch.setattr(bench, "run", lambda s: {"quick": s.quick})
    monkeypatch.setattr(bench, "format_table", lambda r: "table")
    code, _, err = cli(capsys, "bench", "--quick", "--device", "cpu", "--out", new / "b" / "bench.json")
    assert code == 0 and json.loads((new / "b" / "bench.json").read_text()) == {"quick": True}, err


def test_a_text_file_as_checkpoint_and_an_unknown_device_are_one_line(capsys, tmp_path):
    run_dir = _tiny_run(capsys, tmp_path)
    for i, text in enumerate(["hello world\n", "this is text\n"]):  # each once failed the unpickler differently
        fake = tmp_path / f"fake{i}.pt"
        fake.write_text(text)
        for args in (["sample", "--checkpoint", fake, "--out", tmp_path / "s.png"], ["train", "--resume", fake],
                     ["export", "--checkpoint", fake, "--out", tmp_path / "g.pt2"],
                     ["eval-fid", "--checkpoint", fake, "--ref", run_dir / "samples"]):
            _one_clean_line(*cli(capsys, *args)[::2], 1, "is not a checkpoint (torch.save writes zip archives")
    for device in ("gpu", "cuda:x"):
        _one_clean_line(*cli(capsys, "sample", "--checkpoint", run_dir, "--out", tmp_path / "s.png",
                             "--device", device)[::2], 2, f"unknown device '{device}'")
    assert not (tmp_path / "s.png").exists()


def test_eval_fid_refuses_cheap_mistakes_before_loading_the_detector(capsys, tmp_path, monkeypatch):
    import sngan.metrics.detector

    run_dir = _tiny_run(capsys, tmp_path)
    monkeypatch.setattr(sngan.metrics.detector, "load_detector", lambda *a, **k: pytest.fail("detector loaded"))
    fake = tmp_path / "fake.pt"
    fake.write_text("hello world\n")
    _one_clean_line(*cli(capsys, "eval-fid", "--checkpoint", fake, "--ref", "cifar10-train")[::2],
                    1, "is not a checkpoint")
    _one_clean_line(*cli(capsys, "eval-fid", "--checkpoint", run_dir, "--ref", "cifar10-train",
                         "--intra-fid")[::2], 2, "is unconditional")
    stats = tmp_path / "stats.npz"
    stats.write_bytes(b"precious")
    _one_clean_line(*cli(capsys, "eval-fid", "--ref", "cifar10-train", "--save-stats", stats)[::2],
                    2, "already exists")
    assert stats.read_bytes() == b"precious"
    # A bad reference, before the detector (offline, its download attempt would print first).
    images, empty = run_dir / "samples", tmp_path / "empty"
    empty.mkdir()
    np.savez(tmp_path / "ref-stats.npz", mu=np.zeros(3), sigma=np.eye(3))
    for ref, more, code, fragment in (
            (tmp_path / "missing", [], 2, "is not a named set (cifar10-train, "),
            (empty, [], 1, "image folder '" + str(empty) + "' has no images"),
            ("cifar10-test", ["--data-root", empty, "--no-download"], 1, "CIFAR-10 not found"),
            (tmp_path / "ref-stats.npz", ["--kid"], 1, "is a statistics file: KID, precision/recall and intra-FID")):
        _one_clean_line(*cli(capsys, "eval-fid", "--images", images, "--ref", ref, *more)[::2], code, fragment)


def test_unwritable_output_is_one_line(capsys, tmp_path, monkeypatch):
    """The OS refusing the write (a read-only folder for a non-root user) is simulated, since
    root ignores folder permissions."""
    run_dir = _tiny_run(capsys, tmp_path)
    import sngan.runs.checkpoint

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))
    monkeypatch.setattr(sngan.runs.checkpoint.os, "replace", refuse)
    code, _, err = cli(capsys, "sample", "--checkpoint", run_dir / "latest.pt", "--out", tmp_path / "g.png")
    _one_clean_line(code, err, 1, "cannot write image")
    assert not (tmp_path / "g.png").exists() and not list(tmp_path.glob(".g.png.tmp-*"))
