"""Run folders (layout in docs/training.md): numbering, the lock, the metrics log and plots, the
signals that stop a run cleanly, and reading folders and sweep indexes back for reports."""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from sngan.config_files import flatten
from sngan.errors import SnganError, UsageError
from sngan.runs import checkpoint, plots

# The run folder's layout: every other module names these files through here.
CONFIG, METRICS, LATEST, BEST, SAMPLES = "config.yaml", "metrics.jsonl", "latest.pt", "best.pt", "samples"
INDEX = "index.json"  # a sweep folder's summary of its cells


def checkpoint_name(step: int) -> str:
    """The periodic checkpoint of `step`: `ckpt-0005000.pt`."""
    return f"ckpt-{step:07d}.pt"


def grid_name(step: int, ema: bool = False) -> str:
    """The sample grid of `step`, relative to the run folder: `samples/[ema-]step-0005000.png`."""
    return f"{SAMPLES}/{'ema-' if ema else ''}step-{step:07d}.png"


def latest_grid(folder: Path) -> Path | None:
    """The run's last sample grid: the EMA generator's when the run keeps one; None before any."""
    grids = sorted(Path(folder, SAMPLES).glob("ema-step-*.png")) or sorted(Path(folder, SAMPLES).glob("step-*.png"))
    return grids[-1] if grids else None


def resume_target(path: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint file) for `--resume RUN_DIR` (its latest.pt) or `--resume CKPT`."""
    return (path, path / LATEST) if path.is_dir() else (path.parent, path)


def prepare(folder: Path, config_text: bytes, truncate_after: int | None = None) -> None:
    """Write the resolved config (on resume too, where train.steps or the intervals may have
    changed) and the samples folder; on resume, drop metrics logged after the checkpoint's step
    and temporary files that a killed writer left."""
    if truncate_after is not None:
        for sub in (folder, folder / SAMPLES):  # a killed run can leave a write half-done
            checkpoint.remove_stale_temporaries(sub)
        dropped = MetricsLog(folder / METRICS).truncate_after(truncate_after)
        if dropped:
            tqdm.write(f"dropped {dropped} metrics entries logged after step {truncate_after} by the "
                       "interrupted run", file=sys.stderr)
    checkpoint.atomic_write(folder / CONFIG, lambda f: f.write(config_text), "config")
    (folder / SAMPLES).mkdir(exist_ok=True)


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create `root/NNNNN-name`, numbered one past the highest existing run; never reuses one."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SnganError(f"cannot create output folder '{root}': {e.strerror}") from None
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-") or "run"
    while True:
        numbers = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
        folder = root / f"{max(numbers, default=-1) + 1:05d}-{safe}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:  # another process took this number first
            continue
        except OSError as e:
            raise SnganError(f"cannot create run folder in '{root}': {e.strerror}") from None


class MetricsLog:
    """Append-only JSON lines, flushed per line so a crash loses at most the line being written."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, entry: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
        return entries

    def truncate_after(self, step: int) -> int:
        """Drop entries logged after `step` (a killed run got further than its checkpoint)."""
        entries = self.read()
        keep = [e for e in entries if e.get("step", 0) <= step]
        text = "".join(json.dumps(e) + "\n" for e in keep)
        checkpoint.atomic_write(self.path, lambda f: f.write(text.encode()), "metrics")
        return len(entries) - len(keep)


def read_metrics(folder: Path) -> list[dict]:
    """A run folder's metrics entries (dicts with a step); a line cut short by a crash is skipped."""
    return [e for e in MetricsLog(Path(folder) / METRICS).read() if isinstance(e, dict) and "step" in e]


def headline(entries: list[dict]) -> str:
    """The run's headline FID key, as its evaluation lines name it (`"headline"`: the EMA
    generator's when kept); for runs written before that key, the last FID key logged. ""
    when FID was not tracked."""
    named = [e["headline"] for e in entries if "headline" in e]
    if named:
        return named[-1]
    keys = [k for e in entries for k in e if k.startswith("fid") and isinstance(e[k], (int, float))]
    return keys[-1] if keys else ""


# A run's status, in one vocabulary for sweeps and reports.
STATUSES = ("done", "diverged", "interrupted", "pending")


def status(entries: list[dict], step: int, steps: int) -> str:
    """`diverged` when the log has a divergence line, `done` when `step` reached `steps`,
    `interrupted` short of it, `pending` before the first step."""
    if any(e.get("diverged") for e in entries):
        return "diverged"
    if step >= steps:
        return "done"
    return "interrupted" if step else "pending"


def write_plots(run_dir: Path, entries: list[dict]) -> None:
    """losses.png, sigmas.png and (when tracked) fid.png, with intra-FID when logged, from the metrics entries."""
    if any("loss_d" in e for e in entries):
        losses = plots.metric_series(entries, ("loss_d", "loss_g", "d_real", "d_fake"))
        plots.save(plots.line_figure(losses, title="losses and mean D outputs", ylabel="value"),
                   run_dir / "losses.png")
        plots.save(plots.line_figure(plots.metric_series(entries, within="sigma"), ylabel="sigma", logy=True,
                                     title="spectral norm of each D layer (raw weight)"), run_dir / "sigmas.png")
    fid_keys = sorted({k for e in entries for k in e if k.startswith(("fid", "intrafid"))})
    if fid_keys:  # the keys name the protocols; the title adds the detector that evaluation lines record
        detectors = sorted({e["detector"] for e in entries if "detector" in e})
        title = "FID over training" + (f" (detector {', '.join(detectors)})" if detectors else "")
        plots.save(plots.line_figure(plots.metric_series(entries, fid_keys), title=title, ylabel="FID"),
                   run_dir / "fid.png")


class StopRequest:
    """SIGINT/SIGTERM: finish the current step, checkpoint, exit. A second SIGINT quits at once."""

    def __init__(self):
        self.signum: int | None = None

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signum = signum
        tqdm.write(f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
                   "(Ctrl-C again to quit at once)", file=sys.stderr)

    def installed(self):
        return stop_signals(self._handle)


@contextmanager
def stop_signals(handler):
    """Route SIGINT and SIGTERM to `handler` inside the block, then restore the old handlers.
    Python delivers signals to the main thread only, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_lock(run_dir: Path):
    """An exclusive lock on a run folder, so two processes never train into it at once."""
    return checkpoint.folder_lock(run_dir, f"run folder '{run_dir}' is in use by another sngan process; "
                                            "wait for it to end, or stop it (Ctrl-C or kill PID: it checkpoints first)")


@dataclass
class RunRecord:
    """What a run folder (or a sweep's cell not started yet) holds, read back without the model."""

    name: str
    folder: Path
    config: dict  # flattened: "optim.lr_d" -> 0.0004
    entries: list[dict]  # metrics.jsonl
    axes: dict[str, str] = field(default_factory=dict)  # the sweep cell's axis labels
    status: str = ""  # from the sweep index; "" for a plain run folder


def read_run(folder: Path, name: str) -> RunRecord:
    try:
        cfg = yaml.safe_load((folder / CONFIG).read_text()) or {}
    except (yaml.YAMLError, OSError) as e:
        raise SnganError(f"cannot read '{folder / CONFIG}': {e}") from None
    return RunRecord(name, folder, flatten(cfg), read_metrics(folder))


def read_index(folder: Path) -> dict:
    """A sweep folder's index.json (written by `sngan.studies.sweep`)."""
    try:
        return json.loads((folder / INDEX).read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise SnganError(f"cannot read sweep index '{folder / INDEX}': {e}") from None


def read_sweep(folder: Path) -> tuple[list[RunRecord], list[str]]:
    """A sweep folder's cells, with their axis labels and status, and its axes."""
    index = read_index(folder)
    records = []
    for cell in index.get("cells", []):
        cell_dir = folder / cell["dir"]
        record = read_run(cell_dir, cell["name"]) if (cell_dir / CONFIG).is_file() else \
            RunRecord(cell["name"], cell_dir, flatten(cell.get("config", {})), [])
        record.axes, record.status = dict(cell.get("axes", {})), cell.get("status", "")
        records.append(record)
    return records, list(index.get("axes", {}))


def collect(paths: list[Path]) -> tuple[list[RunRecord], list[str]]:
    """The runs under `paths` (run folders, sweep folders, folders of run folders) and the sweep
    axes in order of first appearance."""
    records, axes = [], []
    for path in map(Path, paths):
        if (path / INDEX).is_file():
            found, sweep_axes = read_sweep(path)
            axes += [a for a in sweep_axes if a not in axes]
        elif (path / CONFIG).is_file():
            found = [read_run(path, path.name)]
        elif path.is_dir():
            found = [read_run(p, p.name) for p in sorted(path.iterdir()) if (p / CONFIG).is_file()]
        else:
            raise UsageError(f"'{path}' is not a folder; give run folders, sweep folders or folders holding run "
                             "folders (such as runs)" if path.exists() else f"'{path}' not found; check the path")
        if not found:
            raise UsageError(f"no runs in '{path}': expected a run folder (config.yaml), a sweep folder "
                             "(index.json) or a folder of run folders")
        records += found
    # Two sweeps may both have a cell `A-sn`: name those by their sweep folder too.
    counts = Counter(r.name for r in records)
    for r in records:
        if counts[r.name] > 1:
            parent = r.folder.parent.parent if r.folder.parent.name == "cells" else r.folder.parent
            r.name = f"{parent.name}/{r.name}"
    return records, axes
