"""Sweeps: a base config plus axes to vary; every cell of the grid is an ordinary run folder.

    runs/sweeps/<spec name>/       (or --out DIR)
        sweep.yaml                 a copy of the spec, for the record
        index.json                 every cell: axis labels, overrides, resolved config, status, step
        cells/<cell name>/         an ordinary run folder (config.yaml, metrics.jsonl, latest.pt, ...)
        cells/<cell name>/sweep.log   the cell's output, when cells run as subprocesses (--gpus, --jobs)

A spec (see README "Sweeps and reports"):

    base: cifar10_dcgan_sn_standard      # a config file (next to the spec, or a path) or bundled name
    set: {train.steps: 100000}           # overrides for every cell (dotted keys or nested sections)
    axes:                                # the grid is every combination; the first axis varies slowest
      setting:                           # named bundles: each label sets several keys
        A: {optim.lr_g: 1.0e-4, optim.lr_d: 1.0e-4, optim.beta1: 0.5, optim.beta2: 0.9, optim.n_dis: 5}
      model.d_norm: [sn, bn, none]       # a list: the values of one key
    extra:                               # single cells besides the grid: axis labels and/or overrides
      A-wgan-gp: {setting: A, loss.name: wasserstein, model.d_norm: none}

A cell's folder is the truth about it: finished (its checkpoint reached train.steps), diverged
(metrics.jsonl has a divergence line), interrupted (a checkpoint short of the end) or pending.
Running the spec again therefore skips finished and diverged cells and resumes interrupted ones;
the index is a summary, rewritten whenever a cell changes state.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable


from sngan import checkpoint, config
from sngan.errors import SnganError, UsageError

SPEC_KEYS = {
    "base": "the config every cell starts from: a file (next to the spec, or a path) or a bundled name",
    "set": "overrides applied to every cell",
    "axes": "the grid: axis name -> list of values of one key, or mapping of label -> overrides",
    "extra": "single cells besides the grid: name -> axis labels and/or overrides",
}
INDEX_FORMAT, INDEX_VERSION = "sngan-sweep", 1
SWEEPS_DIRS = [d / "sweeps" for d in config.BUNDLED_CONFIG_DIRS]
FINAL = ("done", "diverged")  # states a re-run leaves alone


@dataclass
class Cell:
    name: str
    axes: dict[str, str]  # axis name -> label ("—" for an extra cell that does not name that axis)
    overrides: dict[str, Any]  # dotted key -> value, on top of the base
    cfg: config.Config
    status: str = "pending"
    step: int = 0
    message: str = ""


@dataclass
class Sweep:
    folder: Path
    cells: list[Cell]
    axes: dict[str, list[str]]  # axis name -> its labels, in order
    spec: str = ""  # the spec file, or "" when continued from the folder
    spec_text: str = ""
    overrides: list[str] = field(default_factory=list)  # --set given with the spec

    def cell_dir(self, cell: Cell) -> Path:
        return self.folder / "cells" / cell.name


# ---------------------------------------------------------------------------------------------
# The spec


def find_spec(name: str) -> Path:
    """A spec file at `name`, else a bundled spec in configs/sweeps (with or without .yaml)."""
    p = Path(name)
    if p.is_file():
        return p
    if p.parent == Path("."):
        for folder in SWEEPS_DIRS:
            for candidate in (folder / p.name, folder / f"{p.name}.yaml"):
                if candidate.is_file():
                    return candidate
    bundled = sorted({q.stem for d in SWEEPS_DIRS if d.is_dir() for q in d.glob("*.yaml")})
    raise UsageError(f"sweep spec '{name}' not found, and it is not a sweep folder "
                     f"(bundled specs: {', '.join(bundled) or 'none found'})")


def read_spec(path: Path) -> dict:
    spec = config.parse_yaml_file(path, "sweep spec")
    if not isinstance(spec, dict):
        raise UsageError(f"sweep spec '{path}' must be a mapping with base:, set:, axes: and extra:")
    for key in spec:
        if key not in SPEC_KEYS:
            raise UsageError(f"unknown sweep spec key '{key}' in '{path}'; valid keys: {', '.join(SPEC_KEYS)}")
    if "base" not in spec:
        raise UsageError(f"sweep spec '{path}' needs 'base: CONFIG' (a config file or bundled name)")
    if not spec.get("axes") and not spec.get("extra"):
        raise UsageError(f"sweep spec '{path}' has no cells: give 'axes:' (and/or 'extra:')")
    return spec


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr_g": 1}} and {"optim.lr_g": 1} both -> {"optim.lr_g": 1}."""
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def set_key(data: dict, dotted: str, value: Any) -> None:
    """Set a dotted key in nested config data, keeping the value's YAML type."""
    node, parts = data, dotted.split(".")
    for part in parts[:-1]:
        if part == "loss" and isinstance(node.get(part), str):  # shorthand `loss: hinge`
            node[part] = {"name": node[part]}
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UsageError(f"sweep override '{dotted}': '{part}' is not a config section")
    node[parts[-1]] = value


def _label(key: str, value: Any) -> str:
    """A value's label in cell names: strings as they are (`sn`), numbers with their key (`seed0`)."""
    if isinstance(value, str) and value:
        return value
    return f"{key.rsplit('.', 1)[-1]}{value}"


def parse_axes(axes: Any, where: str) -> dict[str, dict[str, dict[str, Any]]]:
    """axis name -> {label: {dotted key: value}}, from lists of one key's values or named bundles."""
    if axes is None:
        return {}
    if not isinstance(axes, dict):
        raise UsageError(f"'axes' in '{where}' must map axis names to a list of values or to named bundles")
    parsed = {}
    for name, values in axes.items():
        if isinstance(values, list) and values:
            parsed[name] = {_label(name, v): {name: v} for v in values}
            if len(parsed[name]) < len(values):
                raise UsageError(f"axis '{name}' in '{where}' repeats a value")
        elif isinstance(values, dict) and values:
            bad = [label for label, b in values.items() if not isinstance(b, dict)]
            if bad:
                raise UsageError(f"axis '{name}' in '{where}': bundle '{bad[0]}' must be a mapping of config keys "
                                 "to values (for one key's values, give a list)")
            parsed[name] = {str(label): flatten(b) for label, b in values.items()}
        else:
            raise UsageError(f"axis '{name}' in '{where}' must be a non-empty list of values or mapping of "
                             "label -> overrides")
    return parsed


def expand(spec: dict, spec_path: Path, overrides: list[str], folder: Path | None) -> Sweep:
    """The cells of a spec, each with its resolved, validated config (nothing is written)."""
    where = str(spec_path)
    base_file = spec_path.parent / str(spec["base"])
    base_file = base_file if base_file.is_file() else config.find_config(str(spec["base"]))
    base = config.read_yaml(base_file)
    if not isinstance(spec.get("set") or {}, dict):
        raise UsageError(f"'set' in '{where}' must be a mapping of config keys to values")
    for key, value in flatten(spec.get("set") or {}).items():
        set_key(base, key, value)
    base = config.apply_overrides(base, overrides)
    base_cfg = _validated(base, "the base config")
    if folder is None:  # deterministic, so running the same spec again finds the same sweep
        folder = Path(base_cfg.out.root) / "sweeps" / spec_path.stem
    axes = parse_axes(spec.get("axes"), where)

    cells: list[tuple[str, dict, dict]] = [("", {}, {})]
    for axis, bundles in axes.items():  # product, first axis slowest
        cells = [(f"{name}-{label}" if name else label, {**labels, axis: label}, {**ov, **b})
                 for name, labels, ov in cells for label, b in bundles.items()]
    if not axes:
        cells = []
    extra = spec.get("extra") or {}
    if not isinstance(extra, dict):
        raise UsageError(f"'extra' in '{where}' must map cell names to axis labels and/or overrides")
    for name, entry in extra.items():
        if not isinstance(entry, dict):
            raise UsageError(f"extra cell '{name}' in '{where}' must be a mapping of axis labels and/or overrides")
        labels, ov = {axis: "—" for axis in axes}, {}
        for key, value in flatten(entry).items():
            if key not in axes:
                ov[key] = value
            elif str(value) in axes[key]:  # a label of the axis: its values
                labels[key] = str(value)
                ov.update(axes[key][str(value)])
            elif all(b.keys() == {key} for b in axes[key].values()):  # a new value of a one-key axis
                labels[key] = _label(key, value)
                ov[key] = value
            else:
                raise UsageError(f"extra cell '{name}': axis '{key}' has no label '{value}' "
                                 f"(labels: {', '.join(axes[key])})")
        cells.append((str(name), labels, ov))

    built, seen = [], {}
    for name, labels, ov in cells:
        safe = re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-") or "cell"
        if safe in seen:
            raise UsageError(f"sweep cells '{seen[safe]}' and '{name}' get the same folder name '{safe}'; "
                             "rename a label or an extra cell")
        seen[safe] = name
        data = json.loads(json.dumps(base))  # a deep copy of plain data
        for key, value in ov.items():
            set_key(data, key, value)
        cfg = _validated(data, f"sweep cell '{safe}'")
        cfg.out.root, cfg.out.name = str(folder / "cells"), safe
        built.append(Cell(safe, labels, ov, cfg))
    return Sweep(folder, built, {a: list(b) for a, b in axes.items()}, str(spec_path),
                 spec_path.read_text(), list(overrides))


def _validated(data: dict, what: str) -> config.Config:
    try:
        return config.from_dict(data)
    except UsageError as e:
        raise UsageError(f"{what}: {e}") from None


# ---------------------------------------------------------------------------------------------
# The sweep folder


def plan(target: str, overrides: list[str], out: str | Path | None) -> Sweep:
    """The sweep for `sngan sweep TARGET`: a spec (file or bundled name) or an existing sweep folder."""
    path = Path(target)
    if path.is_dir():
        if out is not None:
            raise UsageError("--out goes with a spec; a sweep folder is continued where it is")
        return from_folder(path, overrides)
    spec_path = find_spec(target)
    return expand(read_spec(spec_path), spec_path, overrides, Path(out) if out is not None else None)


def from_folder(folder: Path, overrides: list[str]) -> Sweep:
    """Continue a sweep from its index.json alone; `overrides` may only change how long and how often."""
    from sngan.train import RESUMABLE, resumable

    index = read_index(folder)
    for item in overrides:
        if not resumable(item.split("=", 1)[0].strip()):
            raise UsageError(f"'{item}' cannot change when continuing a sweep folder (only "
                             f"{', '.join(RESUMABLE)} can); edit the spec and run it instead")
    cells = []
    for entry in index["cells"]:
        cfg = _validated(config.apply_overrides(entry["config"], overrides), f"sweep cell '{entry['name']}'")
        cfg.out.root, cfg.out.name = str(folder / "cells"), entry["name"]
        cells.append(Cell(entry["name"], entry["axes"], entry["overrides"], cfg))
    return Sweep(folder, cells, index["axes"], index.get("spec", ""), "", index.get("set", []))


def read_index(folder: Path) -> dict:
    path = folder / "index.json"
    if not path.is_file():
        raise UsageError(f"'{folder}' is not a sweep folder (it has no index.json); give a sweep spec instead")
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise SnganError(f"cannot read sweep index '{path}': {e}") from None
    if index.get("format") != INDEX_FORMAT or index.get("version", 0) > INDEX_VERSION:
        raise SnganError(f"'{path}' is not a sweep index this sngan understands")
    return index


def write_index(sweep: Sweep) -> Path:

    index = {
        "format": INDEX_FORMAT, "version": INDEX_VERSION, "spec": sweep.spec, "set": sweep.overrides,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "axes": sweep.axes,
        "cells": [{"name": c.name, "dir": f"cells/{c.name}", "axes": c.axes, "status": c.status, "step": c.step,
                   "steps": c.cfg.train.steps, "message": c.message, "overrides": c.overrides,
                   "config": config.to_dict(c.cfg)} for c in sweep.cells],
    }
    text = json.dumps(index, indent=1).encode()
    return checkpoint.atomic_write(sweep.folder / "index.json", lambda f: f.write(text), "sweep index")


def cell_state(cell_dir: Path, steps: int) -> tuple[str, int]:
    """(status, step of its latest checkpoint) read from a cell's folder."""
    from sngan import runs

    latest = cell_dir / runs.LATEST
    step = checkpoint.load(latest)["step"] if latest.is_file() else 0
    return runs.status(runs.read_metrics(cell_dir), step, steps), step


def refresh(sweep: Sweep) -> None:
    """Each cell's status and step from its folder."""
    for cell in sweep.cells:
        cell.status, cell.step = cell_state(sweep.cell_dir(cell), cell.cfg.train.steps)


def prepare(sweep: Sweep) -> None:
    """Create the folder, check finished work still matches the spec, write the configs to run."""

    (sweep.folder / "cells").mkdir(parents=True, exist_ok=True)
    refresh(sweep)
    for cell in sweep.cells:  # all checks first, so that a mismatch changes nothing
        if cell.step:
            _check_same_experiment(cell, sweep.cell_dir(cell))
    for cell in sweep.cells:
        if cell.status not in FINAL:  # a finished cell keeps the config it was trained with
            sweep.cell_dir(cell).mkdir(exist_ok=True)
            text = config.dump(cell.cfg).encode()
            checkpoint.atomic_write(sweep.cell_dir(cell) / "config.yaml", lambda f, t=text: f.write(t), "config")
    if sweep.spec_text:
        checkpoint.atomic_write(sweep.folder / "sweep.yaml", lambda f: f.write(sweep.spec_text.encode()), "spec copy")


def _check_same_experiment(cell: Cell, cell_dir: Path) -> None:
    """A cell with results may only differ from the spec in how long and how often it trains."""
    from sngan.train import resumable

    old = flatten(config.to_dict(config.from_dict(config.read_yaml(cell_dir / "config.yaml"))))
    new = flatten(config.to_dict(cell.cfg))
    for key in new:
        if old.get(key) != new[key] and not key.startswith("out.") and not resumable(key):
            raise UsageError(f"sweep cell '{cell.name}' in '{cell_dir}' was trained with {key}={old.get(key)!r}, "
                             f"the spec now says {new[key]!r}; restore the spec, use another --out, or delete "
                             "that cell folder to train it again")


@contextmanager
def sweep_lock(folder: Path):
    """One `sngan sweep` per sweep folder at a time (creating the folder); the OS drops the lock
    when the process dies, so a crash leaves no stale lock."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SnganError(f"cannot create sweep folder '{folder}': {e.strerror}") from None
    with checkpoint.folder_lock(folder, f"sweep folder '{folder}' is in use by another sngan sweep"):
        yield


# ---------------------------------------------------------------------------------------------
# Running one cell (in this process, or as `python -m sngan.sweep CELL_DIR`)


def run_cell(cell_dir: Path, progress: bool) -> dict:
    """Train a cell's folder to the end: resume from latest.pt, or start afresh. Returns train()'s summary."""
    from sngan import train as training

    cfg = config.from_dict(config.read_yaml(cell_dir / "config.yaml"))
    latest = cell_dir / "latest.pt"
    if latest.is_file():
        state = checkpoint.load(latest)
        if state["step"] >= cfg.train.steps:
            return {"step": state["step"], "steps": cfg.train.steps, "stopped_by": None, "run_dir": str(cell_dir)}
        return training.train(cfg, cell_dir, resume=state, resume_path=latest, progress=progress)
    _clear_partial(cell_dir)
    return training.train(cfg, cell_dir, progress=progress)


def _clear_partial(cell_dir: Path) -> None:
    """A cell stopped before its first checkpoint starts afresh; drop what it wrote, so its new
    metrics are not appended to the old ones."""
    for name in ("metrics.jsonl", "best.pt", "losses.png", "sigmas.png", "fid.png"):
        (cell_dir / name).unlink(missing_ok=True)
    shutil.rmtree(cell_dir / "samples", ignore_errors=True)


PARENT_ENV = "SNGAN_SWEEP_PID"


def _die_with_parent() -> None:
    """Linux: have the kernel send this cell SIGTERM when the sweep that started it dies, even
    by SIGKILL, so no cell trains on unwatched: it checkpoints and exits, and the next
    `sngan sweep` resumes it. Elsewhere a killed sweep's cells run to their end."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the sweep died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(argv: list[str]) -> int:
    """`python -m sngan.sweep CELL_DIR`: one cell in its own process; exit 0, 128+signal, or 1."""
    if len(argv) != 1:
        print("usage: python -m sngan.sweep CELL_DIR", file=sys.stderr)
        return 2
    _die_with_parent()
    try:
        summary = run_cell(Path(argv[0]), progress=False)
    except SnganError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C: quit at once (the last checkpoint is intact)
        return 128 + signal.SIGINT
    return 128 + summary["stopped_by"] if summary["stopped_by"] else 0


# ---------------------------------------------------------------------------------------------
# Running a sweep


@dataclass
class Outcome:
    signum: int | None = None  # the signal that stopped the sweep
    failed: list[Cell] = field(default_factory=list)


class _Stop(BaseException):
    """SIGINT/SIGTERM outside train()'s own handler (between cells, or while one is set up)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _stop_on_signals():
    """Between cells a signal stops the sweep at once; train() installs its own handler for the
    training loop (finish the step, checkpoint, return) and restores this one afterwards. A
    second signal while the sweep winds down quits at once, like a second Ctrl-C in train."""
    fired = []

    def handle(signum, frame):
        if fired:
            raise KeyboardInterrupt
        fired.append(signum)
        raise _Stop(signum)

    from sngan.runs import stop_signals

    with stop_signals(handle):
        yield


def run(sweep: Sweep, *, gpus: list[str] | None = None, jobs: int = 1, progress: bool = True,
        say: Callable[[str], None] = print) -> Outcome:
    """Run every cell that is not finished; in this process, or `len(gpus)`/`jobs` at a time as
    subprocesses. The sweep folder must have been `prepare`d (under `sweep_lock`)."""
    todo = [c for c in sweep.cells if c.status not in FINAL]
    for c in sweep.cells:
        if c.status in FINAL:
            say(f"{c.name}: {c.status} at step {c.step}, skipped")
    write_index(sweep)
    if gpus or jobs > 1:
        slots = [{"CUDA_VISIBLE_DEVICES": g} for g in gpus] if gpus else [{} for _ in range(jobs)]
        return _run_parallel(sweep, todo, slots, say)
    return _run_sequential(sweep, todo, progress, say)


def _settle(sweep: Sweep, cell: Cell, message: str = "") -> None:
    cell.status, cell.step = cell_state(sweep.cell_dir(cell), cell.cfg.train.steps)
    cell.message = message
    write_index(sweep)


def _run_sequential(sweep: Sweep, todo: list[Cell], progress: bool, say) -> Outcome:
    from sngan.train import Diverged

    outcome = Outcome()
    with _stop_on_signals():
        cell = None
        try:
            for n, cell in enumerate(todo, 1):
                say(f"[{n}/{len(todo)}] {cell.name}: " +
                    (f"resuming from step {cell.step}" if cell.step else "starting"))
                cell.status = "running"
                write_index(sweep)
                try:
                    summary = run_cell(sweep.cell_dir(cell), progress)
                except Diverged as e:
                    _settle(sweep, cell, str(e))
                    say(f"{cell.name}: {e}")
                    continue
                except SnganError as e:
                    _fail(sweep, cell, str(e), outcome)
                    say(f"{cell.name}: failed: {e}")
                    break  # most failures (missing data, full disk) would fail every cell alike
                _settle(sweep, cell)
                if summary["stopped_by"] is not None:
                    raise _Stop(summary["stopped_by"])
                say(f"{cell.name}: {cell.status} at step {cell.step}")
        except (_Stop, KeyboardInterrupt) as stop:
            outcome.signum = getattr(stop, "signum", signal.SIGINT)
            if cell is not None:
                _settle(sweep, cell, "interrupted")
    return outcome


def _fail(sweep: Sweep, cell: Cell, message: str, outcome: Outcome) -> None:
    _settle(sweep, cell, message)
    cell.status = "failed"
    write_index(sweep)
    outcome.failed.append(cell)


Launch = Callable[[Cell, dict], Any]  # (cell, env) -> a Popen-like object: poll(), send_signal(s)


def _launch(sweep: Sweep) -> Launch:
    def launch(cell: Cell, env: dict):
        cell_dir = sweep.cell_dir(cell)
        with open(cell_dir / "sweep.log", "ab") as log:
            # Its own session: a Ctrl-C in the terminal reaches only the sweep, which forwards
            # it once (a second SIGINT to train means "quit at once").
            return subprocess.Popen([sys.executable, "-m", "sngan.sweep", str(cell_dir)], stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **env, PARENT_ENV: str(os.getpid())})
    return launch


def _run_parallel(sweep: Sweep, todo: list[Cell], slots: list[dict], say) -> Outcome:
    def finished(cell: Cell, rc: int) -> str:
        # Stopped on request: exit 128+signal from train, or killed by the signal before
        # train's handler was in place (a negative return code).
        stopped = rc in (128 + signal.SIGINT, 128 + signal.SIGTERM) or (rc < 0 and scheduler.signum is not None)
        msg = "" if rc == 0 or stopped else _last_line(sweep.cell_dir(cell) / "sweep.log") or f"exit code {rc}"
        _settle(sweep, cell, msg)
        if rc and not stopped and cell.status not in FINAL:
            cell.status = "failed"
            write_index(sweep)
        say(f"{cell.name}: {cell.status} at step {cell.step}" + (f": {msg}" if msg else ""))
        return cell.status

    def started(cell: Cell, env: dict) -> None:
        cell.status = "running"
        write_index(sweep)
        where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else ""
        say(f"{cell.name}: " + (f"resuming from step {cell.step}" if cell.step else "starting") + where +
            f" (log: {sweep.cell_dir(cell) / 'sweep.log'})")

    scheduler = Scheduler(slots, _launch(sweep), started, finished)
    with scheduler.signals():
        return scheduler.run(todo)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class Scheduler:
    """Runs cells as subprocesses, one per slot at a time (a slot is a GPU, or just a place).

    After a failed cell no new cell starts (most failures would fail every cell alike). A stop
    request (SIGINT/SIGTERM) is forwarded once to every running cell, which checkpoints and
    exits; no new cell starts, and `run` returns when the running ones have ended.
    """

    def __init__(self, slots: list[dict], launch: Launch, started: Callable[[Cell, dict], None],
                 finished: Callable[[Cell, int], str], poll_s: float = 0.2):
        self.slots, self.launch, self.started, self.finished, self.poll_s = slots, launch, started, finished, poll_s
        self.running: dict[int, tuple[Cell, Any]] = {}  # slot index -> (cell, process)
        self.signum: int | None = None

    def request_stop(self, signum: int) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if first or signum == signal.SIGINT:  # a second Ctrl-C: the cells quit at once
            for _, proc in self.running.values():
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    @contextmanager
    def signals(self):
        from sngan.runs import stop_signals

        with stop_signals(lambda signum, frame: self.request_stop(signum)):
            yield self

    def run(self, cells: list[Cell]) -> Outcome:
        pending, outcome = list(cells), Outcome()
        while pending or self.running:
            for slot, env in enumerate(self.slots):
                if slot in self.running or not pending or self.signum is not None or outcome.failed:
                    continue
                cell = pending.pop(0)
                self.started(cell, env)
                self.running[slot] = (cell, self.launch(cell, env))
            for slot, (cell, proc) in list(self.running.items()):
                rc = proc.poll()
                if rc is not None:
                    del self.running[slot]
                    if self.finished(cell, rc) == "failed":
                        outcome.failed.append(cell)
            if self.running:
                time.sleep(self.poll_s)
            elif self.signum is not None or outcome.failed:
                break
        outcome.signum = self.signum
        return outcome


def describe(sweep: Sweep) -> str:
    """The cells as `sngan sweep --dry-run` lists them."""
    lines = [f"sweep folder: {sweep.folder}" + ("" if sweep.folder.is_dir() else " (new)"),
             f"{len(sweep.cells)} cells:"]
    width = max(len(c.name) for c in sweep.cells)
    for n, c in enumerate(sweep.cells, 1):
        state = f"{c.status} {c.step}/{c.cfg.train.steps}" if c.step else c.status
        sets = " ".join(f"{k}={v}" for k, v in c.overrides.items())
        lines.append(f"{n:4d}  {c.name:<{width}}  {state:<18}  {sets}")
    return "\n".join(lines) + "\n"


def cli_run(target: str, overrides: list[str], out: str | None, dry_run: bool, gpus: str | None,
            jobs: int, progress: bool) -> int:
    """`sngan sweep`: returns the exit code (0, 1 when a cell failed, 128+signal when stopped)."""
    if gpus is not None and jobs != 1:
        raise UsageError("give --gpus (one cell per listed GPU) or --jobs (cells at once), not both")
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus is not None else None
    if gpus is not None and not gpu_list:
        raise UsageError("--gpus takes a comma-separated list of GPU indices, e.g. --gpus 0,1")
    sweep = plan(target, overrides, out)
    if dry_run:
        if (sweep.folder / "cells").is_dir():
            refresh(sweep)
        sys.stdout.write(describe(sweep))
        return 0
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    with sweep_lock(sweep.folder):
        prepare(sweep)
        outcome = run(sweep, gpus=gpu_list, jobs=jobs, progress=progress, say=say)
    counts = {s: sum(c.status == s for c in sweep.cells) for s in ("done", "diverged", "interrupted", "pending", "failed")}
    say(f"sweep {sweep.folder}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if outcome.signum is not None:
        say(f"sweep stopped by {signal.Signals(outcome.signum).name}; finished cells are kept and interrupted "
            f"ones resume from their checkpoints. Resume with: sngan sweep {sweep.folder}")
        return 128 + outcome.signum
    if outcome.failed:
        cell = outcome.failed[0]
        raise SnganError(f"sweep cell '{cell.name}' failed: {cell.message}; fix it, then run: sngan sweep {sweep.folder}")
    say(f"report with: sngan report {sweep.folder} --out {sweep.folder / 'report'}")
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
