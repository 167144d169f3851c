"""`sngan sweep`: train the cells of a spec (`sngan.studies.sweep_spec`), each an ordinary run folder, in this
process or as subprocesses. A cell's folder is the truth about it (`run_folder.status`), and index.json
a summary rewritten whenever a cell starts or ends. Folder layout and behaviour: docs/sweeps.md."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch

from sngan import config, config_files
from sngan.errors import SnganError, UsageError
from sngan.parallel.distributed import shared_cores_env
from sngan.runs import checkpoint, run_folder
from sngan.studies.sweep_spec import Cell, Sweep, cell_config, expand, find_spec, read_spec
from sngan.training import loop

INDEX_FORMAT, INDEX_VERSION, LOG = "sngan-sweep", 1, "sweep.log"
FINAL = ("done", "diverged")  # states a re-run leaves alone
STOPPED = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # a cell's exit code after it checkpointed on request


def plan(target: str, overrides: list[str], out: str | Path | None) -> Sweep:
    """The sweep for `sngan sweep TARGET`: a spec (file or bundled name), or a sweep folder continued
    from its index.json alone, where `overrides` may only change how long and how often cells train."""
    if not Path(target).is_dir():
        spec_path = find_spec(target)
        return expand(read_spec(spec_path), spec_path, overrides, Path(out) if out is not None else None)
    if out is not None:
        raise UsageError("--out goes with a spec; a sweep folder is continued where it is")
    folder = Path(target)
    if not (folder / run_folder.INDEX).is_file():
        raise UsageError(f"'{folder}' is not a sweep folder (it has no {run_folder.INDEX}); give a sweep spec instead")
    index = run_folder.read_index(folder)
    if index.get("format") != INDEX_FORMAT or index.get("version", 0) > INDEX_VERSION:
        raise SnganError(f"'{folder / run_folder.INDEX}' is not a sweep index this sngan understands")
    for item in overrides:
        if not loop.resumable(item.split("=", 1)[0].strip()):
            raise UsageError(f"'{item}' cannot change when continuing a sweep folder (only "
                             f"{', '.join(loop.RESUMABLE)} can); edit the spec and run it instead")
    cells = [Cell(e["name"], e["axes"], e["overrides"],
                  cell_config(config_files.apply_overrides(e["config"], overrides), folder, e["name"]))
             for e in index["cells"]]
    return Sweep(folder, cells, index["axes"], index.get("spec", ""), "", index.get("set", []))


def write_index(sweep: Sweep) -> None:
    index = {
        "format": INDEX_FORMAT, "version": INDEX_VERSION, "spec": sweep.spec, "set": sweep.overrides,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "axes": sweep.axes,
        "cells": [{"name": c.name, "dir": f"cells/{c.name}", "axes": c.axes, "status": c.status, "step": c.step,
                   "steps": c.cfg.train.steps, "message": c.message, "overrides": c.overrides,
                   "config": config.to_dict(c.cfg)} for c in sweep.cells],
    }
    text = json.dumps(index, indent=1).encode()
    checkpoint.atomic_write(sweep.folder / run_folder.INDEX, lambda f: f.write(text), "sweep index")


def refresh(sweep: Sweep, cells: list[Cell] | None = None) -> None:
    """Each cell's status and step, read from its folder."""
    for cell in sweep.cells if cells is None else cells:
        latest = sweep.cell_dir(cell) / run_folder.LATEST
        cell.step = checkpoint.load(latest)["step"] if latest.is_file() else 0
        cell.status = run_folder.status(run_folder.read_metrics(sweep.cell_dir(cell)), cell.step, cell.cfg.train.steps)


def check(sweep: Sweep) -> None:
    """What `run` refuses in a sweep folder, found without writing anything (so `--dry-run` refuses
    it too): another spec's cells, cells trained otherwise than the spec says. Refreshes each
    cell's status. (A sweep folder that is a file is refused when the spec is expanded.)"""
    if (sweep.folder / run_folder.INDEX).is_file():  # a sweep folder holds one sweep: its cells stay listed
        names = {c.name for c in sweep.cells}
        listed = run_folder.read_index(sweep.folder).get("cells", [])
        if others := [e["name"] for e in listed if e["name"] not in names]:
            raise UsageError(f"sweep folder '{sweep.folder}' holds cells this spec does not have "
                             f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); use another --out, "
                             f"or continue that sweep: sngan sweep {sweep.folder}")
    refresh(sweep)
    for cell in sweep.cells:
        if cell.step:
            _check_same_experiment(cell, sweep.cell_dir(cell))


def prepare(sweep: Sweep) -> None:
    """Check finished work still matches the spec (`check`: a mismatch changes nothing), then
    write the configs to run and the spec copy."""
    check(sweep)
    (sweep.folder / "cells").mkdir(parents=True, exist_ok=True)
    for cell in sweep.cells:
        if cell.status not in FINAL:  # a finished cell keeps the config it was trained with
            sweep.cell_dir(cell).mkdir(exist_ok=True)
            text = config.dump(cell.cfg).encode()
            checkpoint.atomic_write(sweep.cell_dir(cell) / run_folder.CONFIG, lambda f, t=text: f.write(t), "config")
    if sweep.spec_text:
        checkpoint.atomic_write(sweep.folder / "sweep.yaml", lambda f: f.write(sweep.spec_text.encode()), "spec copy")


def _check_same_experiment(cell: Cell, cell_dir: Path) -> None:
    """A cell with results may only differ from the spec in how long and how often it trains."""
    old = config_files.flatten(config.to_dict(config.from_saved(config_files.read_yaml(cell_dir / run_folder.CONFIG))))
    for key, value in config_files.flatten(config.to_dict(cell.cfg)).items():
        if old.get(key) != value and not key.startswith("out.") and not loop.resumable(key):
            raise UsageError(f"sweep cell '{cell.name}' in '{cell_dir}' was trained with {key}={old.get(key)!r}, "
                             f"the spec now says {value!r}; restore the spec, use another --out, or delete "
                             "that cell folder to train it again")


class _Stop(BaseException):
    """A signal (its number the only arg) that came before train() put its own handler in place."""


@dataclass
class Outcome:
    signum: int | None = None  # the signal that stopped the sweep
    failed: list[Cell] = field(default_factory=list)


def train_cell(cell_dir: Path, progress: bool, outcome: Outcome) -> tuple[int, str]:
    """Train a cell's folder to the end here: resume from latest.pt, or start afresh. Returns
    (exit code, error) as its subprocess exits: 0, 128+signal when stopped, or the error's code."""

    def stop(signum, frame):
        raise _Stop(signum)

    latest = cell_dir / run_folder.LATEST
    try:
        with run_folder.stop_signals(stop):
            if outcome.signum:  # the sweep was stopped while this cell was being announced
                raise _Stop(outcome.signum)
            cfg = config.from_saved(config_files.read_yaml(cell_dir / run_folder.CONFIG))
            state = checkpoint.load(latest) if latest.is_file() else None
            if state is None:  # stopped before its first checkpoint: new metrics must not follow the old
                for name in (run_folder.METRICS, run_folder.BEST, "losses.png", "sigmas.png", "fid.png"):
                    (cell_dir / name).unlink(missing_ok=True)
                shutil.rmtree(cell_dir / run_folder.SAMPLES, ignore_errors=True)
            signum = loop.train(cfg, cell_dir, resume=state, resume_path=latest, progress=progress)["stopped_by"]
    except (_Stop, KeyboardInterrupt) as e:  # KeyboardInterrupt: a second Ctrl-C in train()
        signum = e.args[0] if isinstance(e, _Stop) else signal.SIGINT
    except SnganError as e:
        return e.exit_code, str(e)
    outcome.signum = outcome.signum or signum
    return (128 + signum if signum else 0), ""


def _spawn(cell_dir: Path, stdin: int, env: dict) -> subprocess.Popen:
    with open(cell_dir / LOG, "ab") as log:
        # Its own session: a Ctrl-C in the terminal reaches only the sweep, which passes it on
        # once (a second SIGINT to train means "quit at once").
        return subprocess.Popen([sys.executable, "-m", "sngan.studies.sweep", str(cell_dir)], stdin=stdin, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **env})


def _stop_at_eof() -> None:
    """The sweep holds the other end of a cell's stdin; when the sweep dies, even by SIGKILL,
    the pipe closes and the cell stops as on SIGTERM: it checkpoints and exits, and the next
    `sngan sweep` resumes it, instead of training on unwatched."""
    os.read(0, 1)
    os.kill(os.getpid(), signal.SIGTERM)


def slots_for(gpus: str | None, jobs: int, devices: set[str] = frozenset({"auto"})) -> list[dict] | None:
    """The environment of each cell that may run at once: one per GPU of `gpus` ("0,1"), else
    `jobs` that share the CPU cores; None: one cell at a time, in this process. `devices`: the cells'
    train.device; without a visible GPU, `gpus` is refused unless they all train on the CPU by choice."""
    if gpus is not None and jobs != 1:
        raise UsageError("give --gpus (one cell per listed GPU) or --jobs (cells at once), not both")
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    gpu_list = [g.strip() for g in (gpus or "").split(",") if g.strip()]
    if (gpus is not None and not gpu_list) or not all(g.isdigit() or g.startswith(("GPU-", "MIG-"))
                                                      for g in gpu_list):
        raise UsageError(f"--gpus takes a comma-separated list of GPU indices (or UUIDs), e.g. --gpus 0,1; got '{gpus}'")
    if gpu_list and devices != {"cpu"} and not torch.cuda.is_available():
        raise UsageError(f"--gpus {gpus}: no CUDA GPU is visible here, so the cells would train on the CPU; "
                         f"to run {len(gpu_list)} cells at once on the CPU, use --jobs {len(gpu_list)}")
    return [{"CUDA_VISIBLE_DEVICES": g} for g in gpu_list] or ([shared_cores_env(jobs)] * jobs if jobs > 1 else None)


def run(sweep: Sweep, slots: list[dict] | None = None, *, progress: bool = True, only: set[str] | None = None,
        say: Callable[[str], None] = print, launch: Callable | None = None, poll_s: float = 0.2) -> Outcome:
    """Run every unfinished cell (of `only`, when given): one after another in this process (`slots`
    None), or as subprocesses, one per slot at a time (a slot is the environment for a GPU, or a
    share of the CPU cores).

    A stop request (SIGINT/SIGTERM) is passed once to every running cell, which checkpoints and
    exits. After it, or after a failed cell (most failures, such as missing data, would fail
    every cell alike), no new cell starts, and `run` returns once the running ones have ended.
    `launch(cell, env)` starts a cell and returns a Popen-like object (tests pass their own).
    """
    try:
        sweep.folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SnganError(f"cannot create sweep folder '{sweep.folder}': {e.strerror}") from None
    # One `sngan sweep` per sweep folder; the OS drops the lock when the process dies.
    with checkpoint.folder_lock(sweep.folder, f"sweep folder '{sweep.folder}' is in use by another sngan sweep; wait "
                              "for it to end, or stop it (Ctrl-C or kill PID: its cells checkpoint first)"):
        prepare(sweep)
        return _run(sweep, slots, progress, only, say, launch, poll_s)


def _run(sweep: Sweep, slots, progress, only, say, launch, poll_s) -> Outcome:
    outcome, running = Outcome(), {}  # slot -> (cell, process)
    todo = [c for c in sweep.cells if c.status not in FINAL and (only is None or c.name in only)]
    for c in sweep.cells:
        if c.status in FINAL:
            say(f"{c.name}: {c.status} at step {c.step}, skipped")
    write_index(sweep)

    def stop(signum, frame):
        first, outcome.signum = outcome.signum is None, outcome.signum or signum
        if first or signum == signal.SIGINT:  # a second Ctrl-C: the cells quit at once
            for _, proc in running.values():
                proc.send_signal(signum)

    watched, held = os.pipe()  # the cells' stdin, closed when this process ends (_stop_at_eof)

    def here(cell: Cell, env: dict) -> SimpleNamespace:  # trains it now; then it is polled like a subprocess
        rc, message = train_cell(sweep.cell_dir(cell), progress, outcome)
        return SimpleNamespace(poll=lambda: rc, send_signal=lambda signum: None, message=message)

    def may_start() -> bool:
        return bool(todo) and outcome.signum is None and not outcome.failed

    launch = launch or (here if slots is None else lambda cell, env: _spawn(sweep.cell_dir(cell), watched, env))
    total = len(todo)
    try:
        with run_folder.stop_signals(stop):
            while running or may_start():
                for slot, env in enumerate(slots or [{}]):
                    if slot in running or not may_start():
                        continue
                    cell = todo.pop(0)
                    cell.status = "running"
                    write_index(sweep)
                    say(f"[{total - len(todo)}/{total}] {cell.name}: "
                        + (f"resuming from step {cell.step}" if cell.step else "starting")
                        + (f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else "")
                        + (f" (log: {sweep.cell_dir(cell) / LOG})" if slots else ""))
                    running[slot] = (cell, launch(cell, env))
                for slot, (cell, proc) in list(running.items()):
                    if (rc := proc.poll()) is not None:
                        del running[slot]
                        _ended(sweep, cell, rc, getattr(proc, "message", ""), outcome, say)
                time.sleep(poll_s if running else 0)
    finally:
        os.close(watched)
        os.close(held)
    return outcome


def _ended(sweep: Sweep, cell: Cell, rc: int, message: str, outcome: Outcome, say) -> None:
    # Stopped on request: 128+signal from train, or killed by the signal before a handler was in place.
    stopped = rc in STOPPED or (rc < 0 and outcome.signum is not None)
    if rc and not stopped and not message:  # a subprocess's error is the last line of its log
        try:
            lines = (sweep.cell_dir(cell) / LOG).read_text(errors="replace").strip().splitlines()
        except OSError:  # no log, or an unreadable one: the exit code is all there is to say
            lines = []
        message = lines[-1][:300] if lines else f"exit code {rc}"
    refresh(sweep, [cell])
    cell.message = message
    if rc and not stopped and cell.status not in FINAL:
        cell.status = "failed"
        outcome.failed.append(cell)
    write_index(sweep)
    say(f"{cell.name}: {cell.status} at step {cell.step}" + (f": {message}" if message else ""))


def describe(sweep: Sweep) -> str:
    """The cells as `sngan sweep --dry-run` lists them, with their status when the folder exists;
    what a run would refuse (`check`) is refused here too."""
    check(sweep)
    lines = [f"sweep folder: {sweep.folder}" + ("" if sweep.folder.is_dir() else " (new)"),
             f"{len(sweep.cells)} cells:"]
    width = max(len(c.name) for c in sweep.cells)
    for n, c in enumerate(sweep.cells, 1):
        state = f"{c.status} {c.step}/{c.cfg.train.steps}" if c.step else c.status
        sets = " ".join(f"{k}={v}" for k, v in c.overrides.items())
        lines.append(f"{n:4d}  {c.name:<{width}}  {state:<18}  {sets}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # a cell run as a subprocess, with stdin a pipe the sweep holds
    threading.Thread(target=_stop_at_eof, daemon=True).start()
    rc, error = train_cell(Path(sys.argv[1]), False, Outcome())
    if error:
        print(f"error: {error}", file=sys.stderr)
    sys.exit(rc)
