"""sngan.runs.checkpoint and the runs that rely on it: kill and resume, signals, full disks, and
checkpoints that must not load."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sngan import config
from sngan.errors import SnganError
from sngan.runs import checkpoint, run_folder
from sngan.training import loop
from conftest import TINY_KEYS, assert_same_training_state, cli, overrides

TINY = overrides({**TINY_KEYS, "model.z_dim": 16, "train.log_every": 1, "train.sample_every": 1000,
                  "train.checkpoint_every": 5, "train.deterministic": "true"})  # the quickstart's EMA G stays on: resume covers it


def _start(*args, out):
    return subprocess.Popen([sys.executable, "-m", "sngan", "train", "-c", "quickstart", "--out", str(out),
                             "--no-progress", *TINY, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(out, min_step, proc, timeout=240):
    """The run folder, once its latest.pt is a checkpoint of step `min_step` or later. A periodic
    checkpoint is written first and linked as latest.pt after, so the wait is for the link: a
    kill between the two would leave latest.pt one checkpoint behind."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"training ended early: {proc.stderr.read()[-2000:]}"
        for ckpt in out.glob("*/ckpt-*.pt"):
            latest = ckpt.parent / "latest.pt"
            try:
                if int(ckpt.stem.split("-")[1]) >= min_step and latest.samefile(ckpt):
                    return ckpt.parent
            except FileNotFoundError:  # pruned, or not linked yet
                continue
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared in time")


def _run_to_end(*args, out):
    proc = _start(*args, out=out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return next(out.iterdir())


def _resume(run_dir, *args):
    proc = subprocess.run([sys.executable, "-m", "sngan", "train", "--resume", str(run_dir), "--no-progress", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _steps_logged(run_dir):
    import json
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "loss_d" in line]


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    steps = ["--set", "train.steps=40"]
    reference = _run_to_end(*steps, out=tmp_path / "straight")

    proc = _start(*steps, out=tmp_path / "killed")
    run_dir = _wait_for_checkpoint(tmp_path / "killed", 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.load(run_dir / "latest.pt")["step"]
    assert 10 <= killed_at < 40

    _resume(run_dir)
    assert_same_training_state(checkpoint.load(reference / "latest.pt"), checkpoint.load(run_dir / "latest.pt"))
    assert _steps_logged(run_dir) == list(range(1, 41))  # no duplicated or missing steps
    assert not list(run_dir.glob(".*.tmp-*"))


@pytest.mark.slow
def test_sigint_checkpoints_and_says_how_to_resume(tmp_path):
    proc = _start("--set", "train.steps=100000", out=tmp_path)
    run_dir = _wait_for_checkpoint(tmp_path, 5, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT
    assert f"Resume with: sngan train --resume {run_dir}" in err
    assert "Traceback" not in err
    state = checkpoint.load(run_dir / "latest.pt")
    assert state["step"] == _steps_logged(run_dir)[-1]  # the checkpoint is at the step it stopped

    # Resuming continues from exactly there.
    _resume(run_dir, "--set", f"train.steps={state['step'] + 3}")
    assert checkpoint.load(run_dir / "latest.pt")["step"] == state["step"] + 3
    assert _steps_logged(run_dir) == list(range(1, state["step"] + 4))


def test_resume_refuses_changes_to_what_is_trained(tmp_path, capsys):
    from sngan.cli import main
    run_dir = _run_to_end("--set", "train.steps=2", out=tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", str(run_dir), "--set", "optim.lr_d=1"])
    assert e.value.code == 2
    assert "cannot change when resuming" in capsys.readouterr().err
    for flag, value in (("--out", tmp_path / "elsewhere"), ("--config", "quickstart")):
        with pytest.raises(SystemExit) as e:
            main(["train", "--resume", str(run_dir), flag, str(value)])
        assert e.value.code == 2 and f"in its own folder with the config stored in its checkpoint; drop {flag}" \
            in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", str(run_dir)])
    assert e.value.code == 0 and "already trained 2 of 2 steps" in capsys.readouterr().out


def test_resuming_a_folder_in_use_is_one_line(tmp_path, capsys):
    """The lock comes first: no "resuming ..." line (and no data loaded) before the refusal."""
    base = ["--no-progress", *TINY, "--set", "train.checkpoint_every=2"]
    code, _, err = cli(capsys, "train", "-c", "quickstart", "--out", tmp_path, "--set", "train.steps=2", *base)
    assert code == 0, err
    run_dir = next(tmp_path.iterdir())
    with run_folder.run_lock(run_dir):
        code, _, err = cli(capsys, "train", "--resume", run_dir, "--set", "train.steps=4", "--no-progress")
    assert code == 1 and err.strip().splitlines() == [
        f"error: run folder '{run_dir}' is in use by another sngan process; wait for it to end, or stop it "
        "(Ctrl-C or kill PID: it checkpoints first)"]
    assert checkpoint.load(run_dir / "latest.pt")["step"] == 2
    code, _, err = cli(capsys, "train", "--resume", run_dir, "--set", "train.steps=4", "--no-progress")
    assert code == 0 and f"resuming {run_dir} from step 2 (latest.pt)" in err
    assert checkpoint.load(run_dir / "latest.pt")["step"] == 4


def test_full_disk_keeps_the_previous_checkpoint(tiny, tmp_path, monkeypatch):
    cfg = config.from_dict(tiny(train={"steps": 6, "checkpoint_every": 2}))
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-4 checkpoint: write a little, then the disk is full
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(SnganError, match="cannot write checkpoint .*ckpt-0000004.pt.*No space left on device.*intact"):
        loop.train(cfg, progress=False)
    run_dir = next((tmp_path / "runs").iterdir())
    assert checkpoint.load(run_dir / "latest.pt")["step"] == 2
    assert not list(run_dir.glob(".*.tmp-*")) and not (run_dir / "ckpt-0000004.pt").exists()


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "version": 1, "G": Payload()}, path)
    with pytest.raises(SnganError, match="refusing to load checkpoint .*evil.pt.*arbitrary Python objects"):
        checkpoint.load(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_newer_and_foreign_checkpoints(tiny, tmp_path):
    run_dir, _ = _tiny_run(tiny, tmp_path)
    good = (run_dir / "latest.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(SnganError, match="cut.pt' is truncated or corrupt"):
        checkpoint.load(cut)
    image = tmp_path / "image.pt"  # not a zip archive: said so, not "arbitrary Python objects"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + good[8:])
    with pytest.raises(SnganError, match="image.pt' is not a checkpoint"):
        checkpoint.load(image)
    newer = tmp_path / "newer.pt"
    state = checkpoint.load(run_dir / "latest.pt")
    torch.save({**state, "version": checkpoint.VERSION + 1}, newer)
    with pytest.raises(SnganError, match="newer.pt' has format version 2, newer than this sngan understands"):
        checkpoint.load(newer)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(SnganError, match="is not an sngan checkpoint"):
        checkpoint.load(foreign)
    # weights from one architecture with a config naming another
    mixed = tmp_path / "mixed.pt"
    torch.save({**state, "config": {**state["config"], "model": {**state["config"]["model"], "arch": "resnet"}}}, mixed)
    from sngan.models.sample import load_generator
    with pytest.raises(SnganError, match="mixed.pt': generator does not match the model built from its config"):
        load_generator(mixed)


def _tiny_run(tiny, tmp_path):
    cfg = config.from_dict(tiny(train={"steps": 2}))
    summary = loop.train(cfg, progress=False)
    return next((tmp_path / "runs").iterdir()), summary


@pytest.mark.slow
def test_second_sigint_quits_at_once_without_corrupting_anything(tmp_path):
    proc = _start("--set", "train.steps=100000", out=tmp_path)
    run_dir = _wait_for_checkpoint(tmp_path, 5, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert checkpoint.load(run_dir / "latest.pt")["step"] >= 5  # still a complete checkpoint
    assert not list(run_dir.glob(".*.tmp-*"))


def test_resume_removes_temporaries_of_a_killed_writer(tiny, tmp_path):
    """A SIGKILL in the middle of an atomic write leaves its temporary file; resuming (under the
    folder's lock) removes it, and never touches complete files."""
    data = tiny(train={"steps": 2})
    run_dir = run_folder.new_run_dir(tmp_path / "runs", "t")
    loop.train(config.from_dict(data), run_dir, progress=False)
    stale = [run_dir / ".losses.png.tmp-12345", run_dir / run_folder.SAMPLES / ".step-0000002.png.tmp-12345"]
    for p in stale:
        p.write_bytes(b"half a file")
    state = checkpoint.load(run_dir / run_folder.LATEST)
    longer = config.from_dict({**state["config"], "train": {**state["config"]["train"], "steps": 3}})
    loop.train(longer, run_dir, resume=state, resume_path=run_dir / run_folder.LATEST, progress=False)
    assert not any(p.exists() for p in stale)
    assert (run_dir / "losses.png").is_file() and (run_dir / run_folder.grid_name(2)).is_file()
