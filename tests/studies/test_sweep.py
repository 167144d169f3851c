"""sngan.studies.sweep: the sweep command, interrupt/resume, subprocess scheduling."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from sngan.errors import UsageError
from sngan.runs import checkpoint
from sngan.studies import sweep
from conftest import TINY, cli, expand_spec, sngan, spec_file

# Eight steps with a checkpoint at 4: a SIGINT sent once a cell's first checkpoint exists stops
# that cell in the middle (4 steps later at the latest), whatever the load on the machine.
STEPS = ["--set", "model.z_dim=16", "--set", "train.steps=8", "--set", "train.log_every=1",
         "--set", "train.sample_every=4", "--set", "train.checkpoint_every=4"]


def _index(folder: Path) -> dict:
    return {c["name"]: c for c in json.loads((folder / "index.json").read_text())["cells"]}


def _fingerprint(path: Path) -> tuple:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "loss_d" in line]


# ---------------------------------------------------------------------------------------------
# The spec


def test_cli_spec_errors(capsys, tmp_path):
    code, _, err = cli(capsys, "sweep", "no_such_spec")
    assert code == 2 and "sweep spec 'no_such_spec' not found" in err and "cifar10_table1" in err
    code, _, err = cli(capsys, "sweep", "quickstart_2x2", "--gpus", "0", "--jobs", "2", "--out", tmp_path / "s")
    assert code == 2 and "not both" in err
    for gpus in ("a,b", ",", "0,gpu1"):
        code, _, err = cli(capsys, "sweep", "quickstart_2x2", "--gpus", gpus, "--out", tmp_path / "s")
        assert code == 2 and f"list of GPU indices (or UUIDs), e.g. --gpus 0,1; got '{gpus}'" in err
    assert sweep.slots_for("0, GPU-8f2e", 1, {"cpu"}) == [{"CUDA_VISIBLE_DEVICES": "0"},
                                                          {"CUDA_VISIBLE_DEVICES": "GPU-8f2e"}]
    code, _, err = cli(capsys, "sweep", tmp_path)
    assert code == 2 and "not a sweep folder" in err
    assert not (tmp_path / "s").exists()


def test_gpus_without_a_gpu_are_refused_unless_the_cells_train_on_the_cpu(tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for dry in (["--dry-run"], []):
        code, listing, err = cli(capsys, "sweep", "quickstart_2x2", "--gpus", "0,1", "--out", tmp_path / "s", *dry)
        assert code == 2 and not listing and err.strip().splitlines() == [
            "error: --gpus 0,1: no CUDA GPU is visible here, so the cells would train on the CPU; to run 2 cells "
            "at once on the CPU, use --jobs 2"]
    code, _, err = cli(capsys, "sweep", "quickstart_2x2", "--gpus", "0", "--set", "train.device=cuda", "--out",
                       tmp_path / "s", "--dry-run")
    assert code == 2 and "no CUDA GPU is visible here" in err
    assert not (tmp_path / "s").exists()
    # train.device=cpu in every cell is a choice, not an accident: the cells run as subprocesses, one per "GPU"
    code, listing, _ = cli(capsys, "sweep", "quickstart_2x2", "--gpus", "0,1", "--set", "train.device=cpu", "--out",
                           tmp_path / "s", "--dry-run")
    assert code == 0 and "4 cells" in listing


def test_dry_run_lists_cells_and_creates_nothing(capsys, tmp_path):
    code, out, _ = cli(capsys, "sweep", "cifar10_table1", "--out", tmp_path / "t1", "--dry-run")
    assert code == 0 and "24 cells" in out and "A-WGAN-GP" in out and "loss.name=wasserstein" in out
    assert not (tmp_path / "t1").exists()


# ---------------------------------------------------------------------------------------------
# A real sweep: interrupt, resume, report


def test_sweep_interrupt_resume_then_report(tmp_path, capsys):
    """The 2x2 quickstart sweep, stopped by SIGINT in its second cell and run again: finished
    cells are not re-run, the interrupted one continues from its checkpoint, the report has 4 rows."""
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "sngan", "sweep", "quickstart_2x2", "--out", str(out), "--no-progress",
            *TINY, *STEPS]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = out / "cells" / "sn-standard"
    deadline = time.time() + 120
    while not (second / "latest.pt").exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "the second cell wrote no checkpoint in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert f"Resume with: sngan sweep {out}" in err and "Traceback" not in err

    index = _index(out)
    assert {n: c["status"] for n, c in index.items()} == {
        "sn-hinge": "done", "sn-standard": "interrupted", "none-hinge": "pending", "none-standard": "pending"}
    stopped_at = checkpoint.load(second / "latest.pt")["step"]
    assert 4 <= stopped_at < 8 and index["sn-standard"]["step"] == stopped_at
    first = out / "cells" / "sn-hinge"
    before = _fingerprint(first / "latest.pt"), (first / "metrics.jsonl").read_text()

    # The same command again (a sweep folder would do too), in this process to save a start-up.
    code, _, err = cli(capsys, *args[3:])
    assert code == 0, err
    assert "sn-hinge: done at step 8, skipped" in err and f"sn-standard: resuming from step {stopped_at}" in err
    assert (_fingerprint(first / "latest.pt"), (first / "metrics.jsonl").read_text()) == before
    index = _index(out)
    assert all(c["status"] == "done" and c["step"] == 8 for c in index.values())
    for name in index:  # every cell logged each step exactly once, the resumed one included
        assert _steps_logged(out / "cells" / name) == list(range(1, 9)), name
    assert yaml.safe_load((second / "config.yaml").read_text())["loss"]["name"] == "standard"

    # A changed spec may not silently reuse results; continuing the folder may train longer.
    code, _, err = cli(capsys, "sweep", "quickstart_2x2", "--out", out, *TINY)
    assert code == 2 and "sweep cell 'sn-hinge'" in err and "was trained with" in err
    code, listing, _ = cli(capsys, "sweep", out, "--set", "train.steps=10", "--dry-run")
    assert code == 0 and listing.count("interrupted 8/10") == 4

    code, _, err = cli(capsys, "report", out, "--out", tmp_path / "report")
    assert code == 0, err
    _check_report(tmp_path / "report", list(index))


def _check_report(report: Path, names: list[str]) -> None:
    import csv
    rows = list(csv.DictReader((report / "report.csv").open()))
    assert [r["run"] for r in rows] == names
    assert [(r["axis:model.d_norm"], r["axis:loss.name"]) for r in rows] == [
        ("sn", "hinge"), ("sn", "standard"), ("none", "hinge"), ("none", "standard")]
    assert all(r["status"] == "done" and r["step"] == "8" and r["fid_final"] == "" for r in rows)
    md = (report / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4 and all(f"| {n} |" in md for n in names)
    assert "| sn-hinge | sn | hinge | done | 8/8 | — | — | — |" in md
    for png in ("losses.png", "sigmas.png", "samples.png"):
        with Image.open(report / png) as img:
            img.verify()
        assert f"]({png})" in md and f'src="{png}"' in (report / "index.html").read_text()
    assert not (report / "fid.png").exists()  # no FID in the quickstart


# ---------------------------------------------------------------------------------------------
# Cells as subprocesses (--jobs / --gpus)


class FakeProc:
    """Finishes with `rc` after `polls` polls; records signals."""

    def __init__(self, rc=0, polls=2):
        self.rc, self.polls, self.signals, self.ended = rc, polls, [], False

    def poll(self):
        self.polls -= 1
        self.ended = self.polls <= 0
        return self.rc if self.ended else None

    def send_signal(self, s):  # a cell checkpoints and exits with 128+signal
        self.signals.append(s)
        self.rc, self.polls = 128 + s, 1


def _run_fakes(tmp_path, n, slots, procs, log, only=None):
    """sweep.run over n prepared cells (seed0, seed1, ...) that launches FakeProcs instead of training."""
    s = expand_spec(spec_file(tmp_path, f"base: quickstart\naxes: {{train.seed: {list(range(n))}}}\n"), out=tmp_path / "s")

    def launch(cell, env):
        gpu = env.get("CUDA_VISIBLE_DEVICES")
        assert _index(s.folder)[cell.name]["status"] == "running"  # the index is rewritten as a cell starts
        busy = [g for name, g in log if not procs[name].ended]
        log.append((cell.name, gpu))
        assert gpu is None or gpu not in busy, "two cells on one GPU"
        return procs.setdefault(cell.name, FakeProc())

    return sweep.run(s, slots, launch=launch, poll_s=0, say=lambda line: None, only=s.chosen(only))


def test_run_puts_one_cell_per_gpu(tmp_path):
    log, procs = [], {}
    outcome = _run_fakes(tmp_path, 5, [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}], procs, log)
    assert outcome.signum is None and not outcome.failed
    assert sorted(n for n, _ in log) == [f"seed{i}" for i in range(5)]  # each cell once
    assert log[:2] == [("seed0", "0"), ("seed1", "1")]


def test_run_passes_a_stop_on_once_and_starts_nothing_new(tmp_path):
    class RunsUntilSignalled(FakeProc):
        def poll(self):  # the sweep gets SIGINT, then SIGTERM (real ones) while both first cells run
            if len(log) == 2 and len(sent) < 2:
                sent.append(os.kill(os.getpid(), (signal.SIGINT, signal.SIGTERM)[len(sent)]))
            return super().poll()

    log, sent = [], []  # unsignalled, the cells would end "done" after 10**4 polls
    procs = {"seed0": RunsUntilSignalled(polls=10**4), "seed1": RunsUntilSignalled(polls=10**4)}
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN, not Python's handler, under a shell's `&`
    outcome = _run_fakes(tmp_path, 4, [{}, {}], procs, log)
    assert outcome.signum == signal.SIGINT
    assert [n for n, _ in log] == ["seed0", "seed1"]
    assert len(sent) == 2 and procs["seed0"].signals == procs["seed1"].signals == [signal.SIGINT]  # once
    assert signal.getsignal(signal.SIGINT) is before  # the sweep's handler is gone again


def test_only_trains_the_cells_named_and_leaves_the_others(tmp_path, capsys):
    log, procs = [], {}
    outcome = _run_fakes(tmp_path, 4, [{}, {}], procs, log, only="seed3, seed1")
    assert outcome.signum is None and [n for n, _ in log] == ["seed1", "seed3"]  # in the spec's order
    assert list(_index(tmp_path / "s")) == [f"seed{i}" for i in range(4)]  # the others stay listed
    for only in ("seed9", ","):  # no such cell; no name at all: one line, nothing trained
        code, _, err = cli(capsys, "sweep", tmp_path / "s", "--only", only)
        assert code == 2 and "--only: this sweep has no cell named" in err and len(err.strip().splitlines()) == 1


def test_run_starts_no_cell_after_a_failure(tmp_path):
    log, procs = [], {"seed0": FakeProc(rc=1, polls=1)}
    outcome = _run_fakes(tmp_path, 3, [{}], procs, log)
    assert [c.name for c in outcome.failed] == ["seed0"] and [n for n, _ in log] == ["seed0"]
    index = _index(tmp_path / "s")
    assert [index[n]["status"] for n in ("seed0", "seed1", "seed2")] == ["failed", "pending", "pending"]
    assert index["seed0"]["message"] == "exit code 1"


def test_another_spec_cannot_take_over_a_sweep_folder(tmp_path):
    _run_fakes(tmp_path, 3, [{}], {}, [])
    before = (tmp_path / "s" / "index.json").read_bytes()
    with pytest.raises(UsageError, match="holds cells this spec does not have \\(seed2\\); use another --out"):
        _run_fakes(tmp_path, 2, [{}], {}, [])
    assert (tmp_path / "s" / "index.json").read_bytes() == before
    outcome = _run_fakes(tmp_path, 4, [{}], {}, log := [])  # a spec with more cells extends the sweep
    assert [name for name, _ in log] == ["seed0", "seed1", "seed2", "seed3"] and not outcome.failed


def test_dry_run_refuses_what_the_run_refuses(tmp_path, capsys):
    """--dry-run is no "(new)" for an --out the run cannot use: a file, or another spec's sweep folder."""
    afile = tmp_path / "afile"
    afile.write_text("precious")
    for out in (afile, afile / "sub"):
        for dry in (["--dry-run"], []):
            code, listing, err = cli(capsys, "sweep", "quickstart_2x2", "--out", out, *dry, *TINY)
            assert code == 2 and not listing and err.strip().splitlines() == [
                f"error: sweep folder '{out}' is a file; give --out a new folder or a sweep folder" if out == afile
                else f"error: cannot write '{out}': '{afile}' is a file, not a folder; choose another path"]
    assert afile.read_text() == "precious"
    _run_fakes(tmp_path, 3, [{}], {}, [])  # a sweep folder tmp_path/s with cells seed0..seed2
    two = spec_file(tmp_path, "base: quickstart\naxes: {train.seed: [0, 1]}\n", name="two.yaml")
    before = (tmp_path / "s" / "index.json").read_bytes()
    code, listing, err = cli(capsys, "sweep", two, "--out", tmp_path / "s", "--dry-run")
    assert code == 2 and not listing and "holds cells this spec does not have (seed2); use another --out" in err
    assert (tmp_path / "s" / "index.json").read_bytes() == before


def test_a_failed_cells_unreadable_log_gives_its_exit_code(tmp_path, monkeypatch):
    real_read = Path.read_text

    def read_text(path, *args, **kwargs):
        if path.name == sweep.LOG:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    log, procs = [], {"seed0": FakeProc(rc=3, polls=1)}
    (tmp_path / "s" / "cells" / "seed0").mkdir(parents=True)
    (tmp_path / "s" / "cells" / "seed0" / sweep.LOG).write_bytes(b"error: unreadable anyway\n")
    outcome = _run_fakes(tmp_path, 1, [{}], procs, log)
    assert [c.name for c in outcome.failed] == ["seed0"]
    assert _index(tmp_path / "s")["seed0"]["message"] == "exit code 3"


def test_gpus_run_cells_as_subprocesses(tmp_path):
    """`--gpus 0` runs the cell through `python -m sngan.studies.sweep CELL_DIR` with CUDA_VISIBLE_DEVICES
    set (ignored here: the cell trains on the CPU). One cell keeps it quick; the run tests above
    cover several at once."""
    spec = spec_file(tmp_path, "base: quickstart\naxes: {model.d_norm: [sn]}\n")
    out = tmp_path / "sweep"
    err = sngan("sweep", spec, "--out", out, "--gpus", "0", *TINY, *STEPS, "--set", "train.steps=2").stderr
    assert "sn: starting on GPU 0" in err and "sn: done at step 2" in err
    assert _index(out)["sn"]["status"] == "done"
    assert (out / "cells" / "sn" / "sweep.log").is_file() and _steps_logged(out / "cells" / "sn") == [1, 2]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile
            pass
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the cell's process in /proc")
def test_cells_checkpoint_and_stop_when_the_sweep_is_killed(tmp_path):
    """SIGKILL gives the sweep no chance to forward anything; its cells see their stdin pipe
    from the sweep close, and stop as on SIGTERM."""
    spec = spec_file(tmp_path, "base: quickstart\naxes: {model.d_norm: [sn]}\n")
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "sngan", "sweep", str(spec), "--out", str(out), "--jobs", "2",
                             *TINY, *STEPS, "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cell = out / "cells" / "sn"
    try:
        deadline = time.monotonic() + 120
        while not ((cell / "metrics.jsonl").is_file() and (cell / "metrics.jsonl").read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None, "the cell never started training"
            time.sleep(0.2)
        assert _processes_mentioning(str(cell))
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 60
    while _processes_mentioning(str(cell)):
        assert time.monotonic() < deadline, "the cell outlived its sweep"
        time.sleep(0.2)
    saved = checkpoint.load(cell / "latest.pt")  # written on SIGTERM: nothing trained is lost
    assert 0 < saved["step"] < 100000 and saved["step"] == _steps_logged(cell)[-1]


def test_failed_cell_stops_the_sweep_with_one_line(tmp_path, capsys):
    spec = spec_file(tmp_path, "base: quickstart\nset: {data.name: folder}\naxes: {data.root: [missing1, missing2]}\n")
    code, _, err = cli(capsys, "sweep", spec, "--out", tmp_path / "s", *TINY, "--no-progress")
    last = err.strip().splitlines()[-1]
    assert code == 1 and "Traceback" not in err
    assert last.startswith("error: sweep cell 'missing1' failed: ") and last.endswith(f"sngan sweep {tmp_path / 's'}")
    index = _index(tmp_path / "s")
    assert index["missing1"]["status"] == "failed" and index["missing2"]["status"] == "pending"
    assert index["missing1"]["message"] in last
