"""`sngan report`: runs and sweeps side by side as a table, plots and a sheet of samples (the files
are listed in docs/sweeps.md). It reads only what `run_folder.collect` reads from the folders and loads
no model, so a report can be built while the runs still train."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import statistics
from pathlib import Path

from matplotlib.figure import Figure

from sngan.errors import SnganError, UsageError
from sngan.runs import plots
from sngan.runs.checkpoint import atomic_write
from sngan.runs.run_folder import (CONFIG, INDEX, METRICS, RunRecord, collect, headline, latest_grid,
                                    status as run_status)

NONE = "—"  # a number a run does not have (no FID yet, no IS where it could not be computed)


def summarise(run: RunRecord) -> dict:
    """The numbers of the table: FID (final, best and its step, protocol, detector), IS (and its name,
    which states its sample count), steps, time, divergence."""
    train = [e for e in run.entries if "loss_d" in e]
    last = train[-1] if train else {}
    protocol = headline(run.entries)  # e.g. `fid5k_cifar10-train10k`
    fids = [(e["step"], e[protocol]) for e in run.entries if isinstance(e.get(protocol), (int, float))]
    # Evaluation lines record their detector (runs from before that do not: None).
    detector = next((e["detector"] for e in reversed(run.entries) if protocol in e and "detector" in e), None)
    best = min(fids, key=lambda sv: sv[1]) if fids else (None, None)
    suffix = "_ema" if protocol.endswith("_ema") else ""
    is_key = re.compile(r"^is\d+k?" + suffix + "$")  # `is10k` (or `is10k_ema`), named by its sample count
    inception = [(e[k], e.get(k.removesuffix(suffix) + "_std" + suffix), k)
                 for e in run.entries for k in e if is_key.match(k) and isinstance(e[k], (int, float))]
    diverged = next((e for e in run.entries if e.get("diverged")), None)
    steps, step = run.config.get("train.steps"), last.get("step", 0)
    status = run.status or run_status(run.entries, step, steps or float("inf"))
    if status == "running" and steps and step >= steps:  # an index written before the cell ended
        status = "done"
    return {
        "run": run.name, "status": status, "step": step, "steps": steps,
        "fid_final": fids[-1][1] if fids else None, "fid_best": best[1], "fid_best_step": best[0],
        "fid_protocol": protocol, "fid_detector": detector,
        "is_mean": inception[-1][0] if inception else None, "is_std": inception[-1][1] if inception else None,
        "is_metric": inception[-1][2] if inception else None,
        "train_seconds": last.get("time"), "it_s": last.get("it_s"),
        "skipped": last.get("skipped", 0) if train else None,
        "diverged_step": diverged.get("first_nonfinite_step", diverged["step"]) if diverged else None,
    }


def varying_keys(runs: list[RunRecord]) -> list[str]:
    """Config keys whose value differs between the runs (where they write is not a difference)."""
    keys = sorted({k for r in runs for k in r.config if not k.startswith("out.")})
    return [k for k in keys if len({json.dumps(r.config.get(k)) for r in runs}) > 1]


def _num(v) -> str:
    return NONE if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def _value(v) -> str:
    """A config value as a user would write it: 0.0004, not 0.000400."""
    return NONE if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _duration(seconds) -> str:
    if seconds is None:
        return NONE
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


def table(runs: list[RunRecord], axes: list[str], rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the Markdown/HTML table. Sweeps show their axis labels; plain runs
    show the config keys that differ between them (all of them are in the CSV)."""
    extra = axes or varying_keys(runs)
    header = ["run", *extra, "status", "steps", "final FID", "best FID (step)", "FID protocol", "FID detector",
              "IS", "train time", "diverged"]
    body = []
    for run, row in zip(runs, rows):
        cols = [run.axes.get(a, NONE) for a in axes] if axes else [_value(run.config.get(k)) for k in extra]
        best = NONE if row["fid_best"] is None else f"{row['fid_best']:.2f} ({row['fid_best_step']})"
        inception = NONE if row["is_mean"] is None else f"{row['is_mean']:.2f}" + (
            "" if row["is_std"] is None else f" ± {row['is_std']:.2f}") + f" ({row['is_metric']})"
        diverged = NONE if row["diverged_step"] is None else f"step {row['diverged_step']}"
        body.append([row["run"], *cols, row["status"], f"{row['step']}/{row['steps']}", _num(row["fid_final"]), best,
                     row["fid_protocol"] or NONE, row["fid_detector"] or NONE, inception,
                     _duration(row["train_seconds"]), diverged])
    return header, body


def _markdown(header: list[str], body: list[list[str]]) -> str:
    line = lambda cells: "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |\n"  # noqa: E731
    return line(header) + "|" + "---|" * len(header) + "\n" + "".join(map(line, body))


def _csv(runs: list[RunRecord], axes: list[str], rows: list[dict], out: Path) -> str:
    keys = varying_keys(runs)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", *[f"axis:{a}" for a in axes], *keys, *list(rows[0])[1:], "folder"] if rows else ["run"])
    for run, row in zip(runs, rows):
        w.writerow([row["run"], *[run.axes.get(a, "") for a in axes], *[run.config.get(k, "") for k in keys],
                    *["" if v is None else v for v in list(row.values())[1:]], os.path.relpath(run.folder, out)])
    return buf.getvalue()


def _html(runs: list[RunRecord], header, body, figures, note: str, out: Path) -> str:
    e = html.escape
    trs = "\n".join(f'<tr><td><a href="{e(os.path.relpath(run.folder, out))}/">{e(row[0])}</a></td>'
                    + "".join(f"<td>{e(str(c))}</td>" for c in row[1:]) + "</tr>" for run, row in zip(runs, body))
    figs = "".join(f'<h2>{e(t)}</h2>\n<img src="{e(p.name)}" alt="{e(t)}">\n' for t, p in figures)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sngan report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #282828; }} th {{ background: #f3f3f3; }}
table {{ border-collapse: collapse; font-size: 14px; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
</style></head><body>
<h1>sngan report</h1>
<p>{len(runs)} runs. Table also in <a href="report.csv">report.csv</a> and <a href="report.md">report.md</a>.</p>
{f"<p>{e(note.strip())}</p>" if note else ""}
<table><tr>{"".join(f"<th>{e(h)}</th>" for h in header)}</tr>
{trs}
</table>
{figs}</body></html>
"""


def fid_by_setting(runs: list[RunRecord], axes: list[str], rows: list[dict]) -> Figure | None:
    """Final FID as grouped bars: groups are the first axis' labels (settings A-F), one bar per
    label of the other axes (the method). Runs outside a sweep are grouped by their name, one
    bar per D normalisation. Repeated (group, bar) pairs, such as seeds, are averaged."""
    values: dict[tuple[str, str], list[float]] = {}
    for run, row in zip(runs, rows):
        if not axes:
            group, bar = run.name, str(run.config.get("model.d_norm", "final FID"))
        elif set(run.axes.values()) == {NONE}:  # an extra cell outside every axis
            group, bar = run.name, "final FID"
        else:
            group = run.axes.get(axes[0], NONE)
            bar = "/".join(run.axes.get(a, NONE) for a in axes[1:]) or "final FID"
        if row["fid_final"] is not None:
            values.setdefault((group, bar), []).append(row["fid_final"])
    if not values:
        return None
    groups = list(dict.fromkeys(g for g, _ in values))
    bars = list(dict.fromkeys(b for _, b in values))
    series = {b: [statistics.fmean(values[g, b]) if (g, b) in values else None for g in groups] for b in bars}
    return plots.bar_figure(groups, series, title=f"final FID ({_protocols(rows)}), lower is better",
                            xlabel=axes[0] if axes else "run", ylabel="FID")


def fid_curves(runs: list[RunRecord]) -> Figure | None:
    """Each run's headline FID over steps, one line per run; None when no run has FID."""
    series = {r.name: plots.metric_series(r.entries, [p])[p] for r in runs if (p := headline(r.entries))}
    if not series:
        return None
    return plots.line_figure(series, title=f"FID over training ({_protocols(map(summarise, runs))})", ylabel="FID")


def _protocols(rows) -> str:
    """What the rows' FIDs are, for a figure's title: their metric names, and the detectors recorded."""
    rows = list(rows)
    names = sorted({r["fid_protocol"] for r in rows if r["fid_protocol"]})
    detectors = sorted({r["fid_detector"] for r in rows if r["fid_detector"]})
    return ", ".join(names) + (f"; detector {', '.join(detectors)}" if detectors else "")


def diversity_curves(runs: list[RunRecord]) -> Figure | None:
    """Each run's sample diversity (sngan.training.health) over steps; None when no run logged it."""
    series = {r.name: s for r in runs if (s := plots.metric_series(r.entries, ["diversity"])["diversity"])[0]}
    return plots.line_figure(series, title="sample diversity over training (1: as varied as the data; "
                             "below 0.3: collapse)", ylabel="diversity") if series else None


def loss_panels(runs: list[RunRecord]) -> Figure:
    panels = [(r.name, plots.metric_series(r.entries, ("loss_d", "loss_g"))) for r in runs]
    return plots.grid_figure(panels, cols=min(4, len(panels)))


def sigma_panels(runs: list[RunRecord]) -> Figure:
    panels = [(f"{r.name}: sigma per D layer", plots.metric_series(r.entries, within="sigma")) for r in runs]
    return plots.grid_figure(panels, cols=min(4, len(panels)), logy=True)


def sample_sheet(runs: list[RunRecord], path: Path) -> Path:
    """Each run's latest sample grid (see `run_folder.latest_grid`), captioned with its name and step."""
    grids = [latest_grid(run.folder) for run in runs]
    return plots.sample_sheet([(run.name, f"step {int(g.stem.split('-')[-1])}" if g else "no samples yet", g)
                              for run, g in zip(runs, grids)], path)


def build(paths: list[Path], out: Path) -> list[Path]:
    """Write the report for the runs under `paths` into `out`; returns the files written."""
    runs, axes = collect(paths)
    out = Path(out)
    if any((out / name).exists() for name in (CONFIG, METRICS, INDEX)):
        raise UsageError(f"'{out}' is a run or sweep folder, whose own files the report would overwrite; "
                         f"choose another --out, e.g. {out / 'report'}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SnganError(f"cannot create report folder '{out}': {e.strerror}") from None
    rows = [summarise(r) for r in runs]
    header, body = table(runs, axes, rows)
    plotted = [("Final FID per setting", "fid_by_setting.png", fid_by_setting(runs, axes, rows)),
               ("FID over training", "fid.png", fid_curves(runs)),
               ("Sample diversity over training", "diversity.png", diversity_curves(runs)),
               ("Losses over training", "losses.png", loss_panels(runs)),
               ("Spectral norm of each D layer (raw weight)", "sigmas.png", sigma_panels(runs))]
    figures = [(title, plots.save(fig, out / name)) for title, name, fig in plotted if fig is not None]
    figures.append(("Latest samples", sample_sheet(runs, out / "samples.png")))
    note = "" if any(r["fid_protocol"] for r in rows) else \
        "No run has an FID entry yet (eval.every: 0, or no evaluation reached), so the FID plots are left out.\n\n"
    md = (f"# sngan report\n\n{len(runs)} runs from {', '.join(str(p) for p in paths)}.\n\n{note}"
          + _markdown(header, body) + "\n"
          + "".join(f"## {title}\n\n![{title}]({p.name})\n\n" for title, p in figures))
    texts = {"report.md": md, "report.csv": _csv(runs, axes, rows, out),
             "index.html": _html(runs, header, body, figures, note, out)}
    for name, text in texts.items():  # atomically, like the PNGs: a reader never sees half a table
        atomic_write(out / name, lambda f, t=text: f.write(t.encode()), "report")
    return [out / name for name in texts] + [p for _, p in figures]
