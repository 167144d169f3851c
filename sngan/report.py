"""`sngan report`: runs and sweeps side by side, as a table, plots and a page of samples.

    report/
        report.md  report.csv  index.html   one row per run (index.html shows everything)
        fid_by_setting.png   final FID per setting, one bar per method (the paper's Figure 1)
        fid.png              FID over steps, one line per run
        losses.png           loss_d and loss_g over steps, one panel per run
        sigmas.png           the sigma of each D layer over steps, one panel per run
        samples.png          each run's latest sample grid, side by side

The FID plots are left out when no run has an FID entry. Everything is read from the run
folders (config.yaml, metrics.jsonl, samples/) and, for a sweep, its index.json; no model is
loaded, so a report can be built while the runs are still training.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from sngan import plots
from sngan.config import flatten
from sngan.runs import CONFIG, headline, read_metrics, status as run_status
from sngan.checkpoint import atomic_write
from sngan.errors import SnganError, UsageError

NONE = "—"  # a number a run does not have (no FID yet, no IS without logits)


@dataclass
class Run:
    name: str
    folder: Path
    config: dict  # flattened: "optim.lr_d" -> 0.0004
    entries: list[dict]
    axes: dict[str, str] = field(default_factory=dict)
    status: str = ""  # from the sweep index; "" for a plain run folder


# ---------------------------------------------------------------------------------------------
# Collecting runs


def collect(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """The runs under `paths` (run folders, sweep folders, folders of run folders) and the sweep
    axes in order of first appearance."""
    runs, axes = [], []
    for path in paths:
        path = Path(path)
        if (path / "index.json").is_file():
            found, sweep_axes = _sweep_runs(path)
            axes += [a for a in sweep_axes if a not in axes]
        elif (path / CONFIG).is_file():
            found = [_run(path, path.name)]
        elif path.is_dir():
            found = [_run(p, p.name) for p in sorted(path.iterdir()) if (p / CONFIG).is_file()]
        else:
            raise UsageError(f"'{path}' not found")
        if not found:
            raise UsageError(f"no runs in '{path}': expected a run folder (config.yaml), a sweep folder "
                             "(index.json) or a folder of run folders")
        runs += found
    _unique_names(runs)
    return runs, axes


def _sweep_runs(folder: Path) -> tuple[list[Run], list[str]]:
    try:
        index = json.loads((folder / "index.json").read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise SnganError(f"cannot read sweep index '{folder / 'index.json'}': {e}") from None
    runs = []
    for cell in index.get("cells", []):
        cell_dir = folder / cell["dir"]
        run = _run(cell_dir, cell["name"]) if (cell_dir / CONFIG).is_file() else \
            Run(cell["name"], cell_dir, flatten(cell.get("config", {})), [])
        run.axes, run.status = dict(cell.get("axes", {})), cell.get("status", "")
        runs.append(run)
    return runs, list(index.get("axes", {}))


def _run(folder: Path, name: str) -> Run:
    try:
        cfg = yaml.safe_load((folder / CONFIG).read_text()) or {}
    except (yaml.YAMLError, OSError) as e:
        raise SnganError(f"cannot read '{folder / 'config.yaml'}': {e}") from None
    return Run(name, folder, flatten(cfg), read_metrics(folder))


def _unique_names(runs: list[Run]) -> None:
    """Two sweeps may both have a cell `A-sn`: name those by their sweep folder too."""
    counts = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    for r in runs:
        if counts[r.name] > 1:
            parent = r.folder.parent.parent if r.folder.parent.name == "cells" else r.folder.parent
            r.name = f"{parent.name}/{r.name}"


# ---------------------------------------------------------------------------------------------
# One row per run


def fid_protocol(run: Run) -> str:
    """The run's headline FID key, e.g. `fid5k_cifar10-train10k` (see `sngan.runs.headline`)."""
    return headline(run.entries)


def fid_values(run: Run, protocol: str) -> list[tuple[int, float]]:
    return [(e["step"], e[protocol]) for e in run.entries if isinstance(e.get(protocol), (int, float))]


def summarise(run: Run) -> dict:
    """The numbers of the table: FID (final, best and its step, protocol), IS, steps, time, divergence."""
    train = [e for e in run.entries if "loss_d" in e]
    protocol = fid_protocol(run)
    values = fid_values(run, protocol)
    best = min(values, key=lambda sv: sv[1]) if values else (None, None)
    suffix = "_ema" if protocol.endswith("_ema") else ""
    is_key = re.compile(r"^is\d+k?" + suffix + "$")  # `is10k` (or `is10k_ema`), named by its sample count
    inception = [{"is_mean": e[k], "is_std": e.get(k[:len(k) - len(suffix)] + "_std" + suffix)}
                 for e in run.entries for k in e if is_key.match(k) and isinstance(e[k], (int, float))]
    diverged = next((e for e in run.entries if e.get("diverged")), None)
    steps = run.config.get("train.steps")
    step = train[-1]["step"] if train else 0
    status = run.status or run_status(run.entries, step, steps or float("inf"))
    if status == "running" and steps and step >= steps:  # an index written before the cell ended
        status = "done"
    return {
        "run": run.name, "status": status, "step": step, "steps": steps,
        "fid_final": values[-1][1] if values else None, "fid_best": best[1], "fid_best_step": best[0],
        "fid_protocol": protocol,
        "is_mean": inception[-1]["is_mean"] if inception else None,
        "is_std": inception[-1].get("is_std") if inception else None,
        "train_seconds": train[-1].get("time") if train else None,
        "it_s": train[-1].get("it_s") if train else None,
        "skipped": train[-1].get("skipped", 0) if train else None,
        "diverged_step": (diverged.get("first_nonfinite_step", diverged["step"]) if diverged else None),
    }


def varying_keys(runs: list[Run]) -> list[str]:
    """Config keys whose value differs between the runs (where they write is not a difference)."""
    keys = sorted({k for r in runs for k in r.config if not k.startswith("out.")})
    return [k for k in keys if len({json.dumps(r.config.get(k)) for r in runs}) > 1]


def _num(v, digits=2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return NONE if v is None else str(v)
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _value(v) -> str:
    """A config value as a user would write it: 0.0004, not 0.000400."""
    return NONE if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _duration(seconds) -> str:
    if seconds is None:
        return NONE
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


def table(runs: list[Run], axes: list[str], rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the Markdown/HTML table. Sweeps show their axis labels; plain runs
    show the config keys that differ between them (all of them are in the CSV)."""
    extra = axes or varying_keys(runs)
    header = ["run", *extra, "status", "steps", "final FID", "best FID (step)", "FID protocol", "IS",
              "train time", "diverged"]
    body = []
    for run, row in zip(runs, rows):
        cols = [run.axes.get(a, NONE) for a in axes] if axes else [_value(run.config.get(k)) for k in extra]
        best = NONE if row["fid_best"] is None else f"{row['fid_best']:.2f} ({row['fid_best_step']})"
        inception = NONE if row["is_mean"] is None else (
            f"{row['is_mean']:.2f} ± {row['is_std']:.2f}" if row["is_std"] is not None else f"{row['is_mean']:.2f}")
        body.append([row["run"], *cols, row["status"], f"{row['step']}/{row['steps']}", _num(row["fid_final"]),
                     best, row["fid_protocol"] or NONE, inception, _duration(row["train_seconds"]),
                     NONE if row["diverged_step"] is None else f"step {row['diverged_step']}"])
    return header, body


def _markdown(header: list[str], body: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in body]) + "\n"


def _csv(runs: list[Run], axes: list[str], rows: list[dict], out: Path) -> str:
    keys = varying_keys(runs)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", *[f"axis:{a}" for a in axes], *keys, *list(rows[0])[1:], "folder"] if rows else ["run"])
    for run, row in zip(runs, rows):
        w.writerow([row["run"], *[run.axes.get(a, "") for a in axes], *[run.config.get(k, "") for k in keys],
                    *["" if v is None else v for v in list(row.values())[1:]], os.path.relpath(run.folder, out)])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Plots and samples


def fid_by_setting(runs: list[Run], axes: list[str], rows: list[dict]) -> Figure | None:
    """Final FID as grouped bars: groups are the first axis' labels (settings A-F), one bar per
    label of the other axes (the method). Runs outside a sweep are grouped by their name, one
    bar per D normalisation. Repeated (group, bar) pairs, such as seeds, are averaged."""
    values: dict[tuple[str, str], list[float]] = {}
    for run, row in zip(runs, rows):
        if axes:
            group = run.axes.get(axes[0], NONE)
            bar = "/".join(run.axes.get(a, NONE) for a in axes[1:]) or "final FID"
            if set(run.axes.values()) == {NONE}:  # an extra cell outside every axis
                group, bar = run.name, "final FID"
        else:
            group, bar = run.name, str(run.config.get("model.d_norm", "final FID"))
        if row["fid_final"] is not None:
            values.setdefault((group, bar), []).append(row["fid_final"])
    if not values:
        return None
    groups = list(dict.fromkeys(g for g, _ in values))
    bars = list(dict.fromkeys(b for _, b in values))
    series = {b: [statistics.fmean(values[g, b]) if (g, b) in values else None for g in groups] for b in bars}
    protocols = sorted({r["fid_protocol"] for r in rows if r["fid_protocol"]})
    return plots.bar_figure(groups, series, title=f"final FID ({', '.join(protocols)}), lower is better",
                            xlabel=axes[0] if axes else "run", ylabel="FID")


def fid_curves(runs: list[Run]) -> Figure | None:
    """Each run's headline FID over steps, one line per run; None when no run has FID."""
    series = {r.name: plots.metric_series(r.entries, [p])[p] for r in runs if (p := fid_protocol(r))}
    return plots.line_figure(series, title="FID over training", ylabel="FID") if series else None


def loss_panels(runs: list[Run]) -> Figure:
    panels = [(r.name, plots.metric_series(r.entries, ("loss_d", "loss_g"))) for r in runs]
    return plots.grid_figure(panels, cols=min(4, len(panels)))


def sigma_panels(runs: list[Run]) -> Figure:
    panels = [(f"{r.name}: sigma per D layer", plots.metric_series(r.entries, within="sigma")) for r in runs]
    return plots.grid_figure(panels, cols=min(4, len(panels)), logy=True)


def latest_sample(run: Run) -> Path | None:
    """The last sample grid: the EMA generator's when the run keeps one."""
    grids = (sorted((run.folder / "samples").glob("ema-step-*.png"))
             or sorted((run.folder / "samples").glob("step-*.png")))
    return grids[-1] if grids else None


def sample_sheet(runs: list[Run], path: Path, tile: int = 256) -> Path:
    """Each run's latest sample grid, scaled to `tile` pixels, captioned with name and step."""
    cols = max(1, min(4, len(runs)))
    rows = math.ceil(len(runs) / cols) or 1
    font = ImageFont.load_default(size=13)  # scalable; Pillow without FreeType gives its bitmap font
    ink, grey = (40, 40, 40), (150, 150, 150)
    caption = 40
    sheet = Image.new("RGB", (cols * (tile + 16), rows * (tile + caption + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, run in enumerate(runs):
        x, y = (i % cols) * (tile + 16) + 8, (i // cols) * (tile + caption + 16) + 8
        grid = latest_sample(run)
        draw.text((x, y), run.name, fill=ink, font=font)
        draw.text((x, y + 18), f"step {int(grid.stem.split('-')[-1])}" if grid else "no samples yet",
                  fill=grey, font=font)
        if grid is None:
            draw.rectangle([x, y + caption, x + tile, y + caption + tile], outline=grey)
            continue
        try:
            with Image.open(grid) as img:
                # NEAREST keeps the pixels of small images sharp instead of blurring them
                thumb = img.convert("RGB").resize((tile, tile), Image.NEAREST)
        except OSError:
            draw.text((x, y + caption), "unreadable sample grid", fill=ink, font=font)
            continue
        sheet.paste(thumb, (x, y + caption))
    return atomic_write(path, lambda f: sheet.save(f, format="PNG"), "sample sheet")


# ---------------------------------------------------------------------------------------------
# The report


def build(paths: list[Path], out: Path) -> list[Path]:
    """Write the report for the runs under `paths` into `out`; returns the files written."""
    runs, axes = collect(paths)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SnganError(f"cannot create report folder '{out}': {e.strerror}") from None
    rows = [summarise(r) for r in runs]
    header, body = table(runs, axes, rows)
    plotted = [("Final FID per setting", "fid_by_setting.png", fid_by_setting(runs, axes, rows)),
               ("FID over training", "fid.png", fid_curves(runs)),
               ("Losses over training", "losses.png", loss_panels(runs)),
               ("Spectral norm of each D layer (raw weight)", "sigmas.png", sigma_panels(runs))]
    figures = [(title, plots.save(fig, out / name)) for title, name, fig in plotted if fig is not None]
    figures.append(("Latest samples", sample_sheet(runs, out / "samples.png")))
    note = "" if any(r["fid_protocol"] for r in rows) else \
        "No run has an FID entry yet (eval.every: 0, or no evaluation reached), so the FID plots are left out.\n\n"
    md = (f"# sngan report\n\n{len(runs)} runs from {', '.join(str(p) for p in paths)}.\n\n{note}"
          + _markdown(header, body) + "\n"
          + "".join(f"## {title}\n\n![{title}]({p.name})\n\n" for title, p in figures))
    written = [_write(out / "report.md", md), _write(out / "report.csv", _csv(runs, axes, rows, out)),
               _write(out / "index.html", _html(runs, header, body, figures, note, out))]
    return written + [p for _, p in figures]


def _write(path: Path, text: str) -> Path:
    try:
        path.write_text(text)
    except OSError as e:
        raise SnganError(f"cannot write '{path}': {e.strerror}") from None
    return path


def _html(runs: list[Run], header, body, figures, note: str, out: Path) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    trs = []
    for run, row in zip(runs, body):
        link = os.path.relpath(run.folder, out)
        cells = [f'<td><a href="{e(link)}/">{e(row[0])}</a></td>'] + [f"<td>{e(str(c))}</td>" for c in row[1:]]
        trs.append(f"<tr>{''.join(cells)}</tr>")
    figs = "".join(f'<h2>{e(t)}</h2>\n<img src="{e(p.name)}" alt="{e(t)}">\n' for t, p in figures)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sngan report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #282828; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head><body>
<h1>sngan report</h1>
<p>{len(runs)} runs. Table also in <a href="report.csv">report.csv</a> and <a href="report.md">report.md</a>.</p>
{f"<p>{e(note.strip())}</p>" if note else ""}
<table><tr>{head}</tr>
{chr(10).join(trs)}
</table>
{figs}</body></html>
"""
