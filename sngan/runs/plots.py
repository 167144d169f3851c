"""Line, panel and bar charts of metrics as matplotlib `Figure`s (Agg, no pyplot state), which a caller
may restyle before `save` writes the PNG; and sheets of captioned sample grids. Sizes are in pixels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from sngan.runs.checkpoint import atomic_write

Series = dict[str, tuple[Sequence[float], Sequence[float]]]  # name -> (steps, values)
DPI = 100  # sizes are in pixels: a figure of size (w, h) is saved as a w x h PNG


def metric_series(entries: list[dict], keys: Sequence[str] | None = None, *, within: str = "") -> Series:
    """`{key: (steps, values)}` from metrics.jsonl entries, over the entries with a number at
    `entry[key]`, or at `entry[within][key]` for a group such as `within="sigma"` (one series per
    D layer; with no `keys`, those of the last entry that has the group)."""
    found = [(e["step"], e.get(within) if within else e) for e in entries]
    found = [(step, group) for step, group in found if isinstance(group, dict)]
    keys = (list(found[-1][1]) if found else []) if keys is None else keys
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    return {k: ([s for s, g in found if number(g.get(k))], [g[k] for _, g in found if number(g.get(k))])
            for k in keys}


def _figure(width: int, height: int) -> Figure:
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # renders off-screen: no GUI backend, nothing registered with pyplot
    return fig


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.tick_params(which="both", left=False, bottom=False, labelleft=False, labelbottom=False)


def _draw_lines(ax, series: Series, *, title="", xlabel="", ylabel="", logy=False) -> None:
    """One chart of `series` into `ax`: values that cannot be drawn (NaN/inf, or <= 0 on a log
    axis) become NaN, which breaks the line; a series with nothing to draw gets no legend entry."""
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    # Colours go by position in the style's cycle ("C0", "C1", ...), so a series keeps its colour
    # when a neighbour has nothing to draw.
    for i, (name, (xs, ys)) in enumerate(series.items()):
        x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y) & ((y > 0) if logy else True)
        if not ok.any():
            continue
        x, y = np.where(ok, x, np.nan), np.where(ok, y, np.nan)
        # A point with no drawable neighbour has no segment to draw (one FID so far): mark it.
        lone = np.flatnonzero(ok & ~np.r_[False, ok[:-1]] & ~np.r_[ok[1:], False]).tolist()
        marks = {"marker": "o", "markersize": 4, "markevery": lone} if lone else {}
        ax.plot(x, y, color=f"C{i}", label=name, **marks)
    if ax.lines:
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")  # the spot that hides the fewest points
    else:
        _no_data(ax)


def line_figure(series: Series, *, title="", xlabel="step", ylabel="", logy=False, size=(800, 500)) -> Figure:
    """`{name: (xs, ys)}` as coloured lines in one chart of `size` = (width, height) pixels."""
    return grid_figure([(title, series)], panel_size=size, xlabel=xlabel, ylabel=ylabel, logy=logy)


def grid_figure(panels: list[tuple[str, Series]], *, cols=2, panel_size=(600, 380), xlabel="step", ylabel="",
                logy=False) -> Figure:
    """`(title, series)` panels, `cols` per row, each `panel_size` pixels; a panel (or no panels)
    with nothing to draw says "no data"."""
    panels = panels or [("", {})]
    cols = max(1, min(cols, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(cols * panel_size[0], rows * panel_size[1])
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, series) in zip(axes, panels):
        _draw_lines(ax, series, title=title, xlabel=xlabel, ylabel=ylabel, logy=logy)
    for ax in axes[len(panels):]:  # the unused end of the last row
        ax.remove()
    return fig


def bar_figure(groups: Sequence[str], series: dict[str, Sequence[float | None]], *, title="",
               xlabel="", ylabel="", size=(900, 500)) -> Figure:
    """Grouped bars, as in the paper's Figure 1: for each of `groups` along x (settings A-F), one bar
    per series (method), labelled with its value. `series` maps a name to one value per group; None
    and NaN/inf get no bar (a run without that number). With no value at all it says "no data"."""
    fig = _figure(*size)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    # (colour index, name, [(group index, value)]) of the series with a bar to draw
    drawn = [(i, name, at) for i, (name, values) in enumerate(series.items())
             if (at := [(g, float(v)) for g, v in enumerate(values[:len(groups)])
                        if v is not None and math.isfinite(v)])]
    width = 0.8 / max(1, len(drawn))
    for slot, (i, name, at) in enumerate(drawn):
        bars = ax.bar([g - 0.4 + (slot + 0.5) * width for g, _ in at], [v for _, v in at], width,
                      label=name, color=f"C{i}")
        ax.bar_label(bars, fmt="%.3g", fontsize="small")
    if not ax.containers:
        _no_data(ax)
        return fig
    # Long labels (run names) would run into each other: slant them.
    slant = {"rotation": 30, "ha": "right"} if max(map(len, groups)) * len(groups) * 8 > 0.8 * size[0] else {}
    ax.set_xticks(range(len(groups)), groups, **slant)
    ax.margins(y=0.1)  # room for the value labels above the bars
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)  # outside: hides no bar
    return fig


def save(fig: Figure, path) -> Path:
    """Write `fig` as a PNG at `path`, creating its folder; atomically, so a reader never sees a
    half-written plot even when training is killed. Returns the path."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi="figure"), "plot")


def sample_sheet(tiles: list[tuple[str, str, Path | None]], path, tile: int = 256) -> Path:
    """Sample grids side by side, up to 4 a row, each scaled to `tile` x `tile` pixels under a
    two-line caption: `tiles` are (title, subtitle, PNG path or None for an empty frame)."""
    cols = max(1, min(4, len(tiles)))
    rows = math.ceil(len(tiles) / cols) or 1
    font = ImageFont.load_default(size=13)  # scalable; Pillow without FreeType gives its bitmap font
    ink, grey, caption = (40, 40, 40), (150, 150, 150), 40
    sheet = Image.new("RGB", (cols * (tile + 16), rows * (tile + caption + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, subtitle, image) in enumerate(tiles):
        x, y = (i % cols) * (tile + 16) + 8, (i // cols) * (tile + caption + 16) + 8
        draw.text((x, y), title, fill=ink, font=font)
        draw.text((x, y + 18), subtitle, fill=grey, font=font)
        if image is None:
            draw.rectangle([x, y + caption, x + tile, y + caption + tile], outline=grey)
            continue
        try:
            with Image.open(image) as img:
                # NEAREST keeps the pixels of small images sharp instead of blurring them
                thumb = img.convert("RGB").resize((tile, tile), Image.NEAREST)
        except OSError:
            draw.text((x, y + caption), "unreadable sample grid", fill=ink, font=font)
            continue
        sheet.paste(thumb, (x, y + caption))
    return atomic_write(path, lambda f: sheet.save(f, format="PNG"), "sample sheet")
