"""Small line plots as PNG files, drawn with Pillow alone (no matplotlib dependency).

`line_plot` draws one chart; `grid_plot` tiles several charts into one image. Both share
`_draw_panel`, which draws a chart into a rectangle of an existing image.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

Series = dict[str, tuple[Sequence[float], Sequence[float]]]

# matplotlib's "tab10": ten colours that stay distinguishable, also for most colour-blind readers.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
INK, GRID, FRAME = (40, 40, 40), (228, 228, 228), (150, 150, 150)


def _font(size: int):
    """PIL's bundled font; scalable on Pillow >= 10.1, else the fixed-size bitmap fallback."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow, or Pillow built without FreeType
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


def _sci(v: float) -> str:
    mant, exp = f"{v:.3e}".split("e")
    return f"{float(mant):g}" + (f"e{int(exp)}" if int(exp) else "") if v else "0"  # 1, not 1e0


def _labels(ticks: list[float]) -> list[str]:
    """Compact tick labels in one style per axis (so no "1k, 1005, 1010" mix): plain (0.25),
    thousands (20k), millions (1.5M) or scientific (1e-4), whichever is shortest overall."""
    styles = [lambda v: f"{v:.6g}", lambda v: f"{v / 1e3:.6g}k" if v else "0",
              lambda v: f"{v / 1e6:.6g}M" if v else "0", _sci]
    candidates = [[f(t) for t in ticks] for f in styles]
    return min(candidates, key=lambda labels: sum(map(len, labels)))  # ties: earlier style


def _axis(lo: float, hi: float, log: bool) -> tuple[float, float, list[tuple[float, str]]]:
    """Axis bounds and (position, label) ticks at 1/2/5 x 10^k steps; bounds in plotted units
    (log10 of the value when `log`)."""
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):  # constant data: pad so the mapping never divides by 0
        d = 0.5 if log else (abs(lo) * 0.1 or 1.0)
        lo, hi = lo - d, hi + d
    if log and hi - lo < 1:
        # Less than a decade: linear ticks on the values, inside the (un-rounded) range, because
        # rounding the bounds outwards could reach 0, which has no logarithm.
        _, _, ticks = _axis(10 ** lo, 10 ** hi, False)
        return lo, hi, [(math.log10(t), s) for t, s in ticks if t > 0 and lo <= math.log10(t) <= hi]
    raw = (hi - lo) / 4  # about 5 ticks including both ends
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda s: abs(math.log(s / raw)))
    if log:
        step = max(1.0, round(step))  # whole decades only
    k0, k1 = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [float(f"{k * step:.12g}") for k in range(k0, k1 + 1)]  # .12g drops float noise
    return ticks[0], ticks[-1], list(zip(ticks, _labels([10 ** t if log else t for t in ticks])))


def _segments(xs, ys, logy: bool) -> list[list[tuple[float, float]]]:
    """Runs of drawable points; a non-finite (or, on a log axis, non-positive) value breaks the line."""
    runs, run = [], []
    for x, y in zip(xs, ys):
        x, y = float(x), float(y)
        ok = math.isfinite(x) and math.isfinite(y) and (y > 0 or not logy)
        if ok:
            run.append((x, math.log10(y) if logy else y))
        elif run:
            runs.append(run)
            run = []
    return runs + [run] if run else runs


def _draw_panel(img: Image.Image, box, series: Series, *, title="", xlabel="", ylabel="",
                logy=False, font_size=13) -> None:
    """Draw one chart into `box` = (left, top, right, bottom) of `img`."""
    draw = ImageDraw.Draw(img)
    font, tfont = _font(font_size), _font(font_size + 2)
    bx0, by0, bx1, by1 = box
    pad, lh = 8, _text_size(draw, "0123456789k", font)[1]
    if title:
        tw, th = _text_size(draw, title, tfont)
        draw.text(((bx0 + bx1 - tw) // 2, by0 + pad), title, fill=INK, font=tfont)
    # Empty series get neither a colour nor a legend entry; colours follow the input order so a
    # series keeps its colour when a neighbour happens to be empty.
    lines = [(name, PALETTE[i % len(PALETTE)], segs) for i, (name, (xs, ys)) in enumerate(series.items())
             if (segs := _segments(xs, ys, logy))]
    if not lines:
        w, h = _text_size(draw, "no data", font)
        draw.text(((bx0 + bx1 - w) // 2, (by0 + by1 - h) // 2), "no data", fill=FRAME, font=font)
        return
    pts = [p for _, _, segs in lines for seg in segs for p in seg]
    x0, x1, xt = _axis(min(p[0] for p in pts), max(p[0] for p in pts), False)
    y0, y1, yt = _axis(min(p[1] for p in pts), max(p[1] for p in pts), logy)

    # Plot area: leave room for the title, tick labels and axis labels.
    top = by0 + pad + (th + 10 if title else 4)
    left = bx0 + pad + (lh + 8 if ylabel else 0) + max(_text_size(draw, s, font)[0] for _, s in yt) + 8
    bottom = by1 - pad - (lh + 8 if xlabel else 0) - lh - 8
    right = bx1 - pad - _text_size(draw, xt[-1][1], font)[0] // 2  # last x label must fit
    X = lambda x: left + (x - x0) / (x1 - x0) * (right - left)
    Y = lambda y: bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for t, s in xt:
        w = _text_size(draw, s, font)[0]
        draw.line([(X(t), top), (X(t), bottom)], fill=GRID)
        draw.text((X(t) - w / 2, bottom + 6), s, fill=INK, font=font)
    for t, s in yt:
        w = _text_size(draw, s, font)[0]
        draw.line([(left, Y(t)), (right, Y(t))], fill=GRID)
        draw.text((left - 6 - w, Y(t) - lh / 2 - 2), s, fill=INK, font=font)
    draw.rectangle([left, top, right, bottom], outline=FRAME)
    if xlabel:
        w = _text_size(draw, xlabel, font)[0]
        draw.text(((left + right - w) / 2, by1 - pad - lh - 2), xlabel, fill=INK, font=font)
    if ylabel:  # rotated text: draw it on its own small image, then paste it turned by 90 degrees
        w = _text_size(draw, ylabel, font)[0]
        label = Image.new("RGB", (w + 4, lh + 6), "white")
        ImageDraw.Draw(label).text((2, 0), ylabel, fill=INK, font=font)
        label = label.rotate(90, expand=True)
        img.paste(label, (bx0 + pad, int((top + bottom - label.height) / 2)))

    screen = []  # points along the drawn lines, used to place the legend
    for _, colour, segs in lines:
        for seg in segs:
            xy = [(X(x), Y(y)) for x, y in seg]
            if len(xy) == 1:  # a lone point has no line to draw: show it as a dot
                (cx, cy), r = xy[0], 3
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            else:
                draw.line(xy, fill=colour, width=2, joint="curve")
            # Sample long segments every ~10 px so a straight line under the legend counts too.
            for (a, b), (c, d) in zip(xy, xy[1:] or xy):
                n = 1 + int(math.hypot(c - a, d - b) / 10)
                screen += [(a + (c - a) * k / n, b + (d - b) * k / n) for k in range(n + 1)]

    # Legend: the inside corner that hides the fewest data points (ties: top-right first).
    rows = [(name, colour, _text_size(draw, name, font)[0]) for name, colour, _ in lines]
    lw, lhh = max(w for *_, w in rows) + 40, len(rows) * (lh + 6) + 8
    corners = [(right - 8 - lw, top + 8), (left + 8, top + 8),
               (right - 8 - lw, bottom - 8 - lhh), (left + 8, bottom - 8 - lhh)]
    hidden = lambda c: sum(c[0] <= px <= c[0] + lw and c[1] <= py <= c[1] + lhh for px, py in screen)
    lx, ly = min(corners, key=hidden)
    draw.rectangle([lx, ly, lx + lw, ly + lhh], fill="white", outline=FRAME)
    for i, (name, colour, _) in enumerate(rows):
        cy = ly + 4 + i * (lh + 6) + (lh + 6) / 2
        draw.line([(lx + 8, cy), (lx + 28, cy)], fill=colour, width=3)
        draw.text((lx + 34, cy - lh / 2 - 2), name, fill=INK, font=font)


def _save(img: Image.Image, path) -> Path:
    """Write atomically: a reader never sees a half-written PNG, even if training is killed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        img.save(tmp, format="PNG")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a plot should be readable like any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def line_plot(series: Series, path, *, title="", xlabel="step", ylabel="", logy=False,
              size=(800, 500)) -> Path:
    """Plot `{name: (xs, ys)}` as coloured lines into the PNG `path`; returns the path.

    NaN/inf values (and, with `logy`, values <= 0) are skipped and break the line; empty series
    are left out; with no data at all the image says "no data".
    """
    img = Image.new("RGB", tuple(size), "white")
    _draw_panel(img, (0, 0, size[0] - 1, size[1] - 1), series, title=title, xlabel=xlabel,
                ylabel=ylabel, logy=logy)
    return _save(img, path)


def grid_plot(panels: list[tuple[str, Series]], path, *, cols=2, panel_size=(600, 380),
              xlabel="step", logy=False) -> Path:
    """Tile `(title, series)` panels, `cols` per row, each `panel_size`, into the PNG `path`."""
    pw, ph = panel_size
    cols = max(1, min(cols, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    img = Image.new("RGB", (cols * pw, rows * ph), "white")
    for i, (title, series) in enumerate(panels or [("", {})]):  # no panels: one "no data" panel
        x, y = (i % cols) * pw, (i // cols) * ph
        _draw_panel(img, (x, y, x + pw - 1, y + ph - 1), series, title=title, xlabel=xlabel,
                    logy=logy, font_size=12)
    return _save(img, path)


def bar_plot(groups: Sequence[str], series: dict[str, Sequence[float | None]], path, *, title="",
             xlabel="", ylabel="", size=(900, 500)) -> Path:
    """Grouped bars into the PNG `path`: for each of `groups` along x, one bar per series, in
    palette colours, as in the paper's Figure 1 (settings A-F along x, one bar per method).

    `series` maps a name to one value per group; None and NaN/inf values get no bar (a run
    without that number). The y axis starts at 0 unless a value is negative. With no value at
    all the image says "no data". Returns the path.
    """
    img = Image.new("RGB", tuple(size), "white")
    draw = ImageDraw.Draw(img)
    font, tfont, small = _font(13), _font(15), _font(11)
    W, H = size
    pad, lh = 8, _text_size(draw, "0123456789k", font)[1]
    names = list(series)
    finite = [float(v) for vs in series.values() for v in vs if v is not None and math.isfinite(float(v))]
    top = pad
    if title:
        tw, th = _text_size(draw, title, tfont)
        draw.text(((W - tw) // 2, pad), title, fill=INK, font=tfont)
        top += th + 10
    if not groups or not finite:
        w, h = _text_size(draw, "no data", font)
        draw.text(((W - w) // 2, (H - h) // 2), "no data", fill=FRAME, font=font)
        return _save(img, path)
    y0, y1, yt = _axis(min(0.0, min(finite)), max(0.0, max(finite)), False)

    # Legend on the right, outside the bars, so it never hides one.
    legend_w = max(_text_size(draw, n, font)[0] for n in names) + 44 if names else 0
    left = pad + (lh + 8 if ylabel else 0) + max(_text_size(draw, s, font)[0] for _, s in yt) + 8
    right = W - pad - legend_w - 8
    bottom = H - pad - (lh + 8 if xlabel else 0) - lh - 10
    Y = lambda y: bottom - (y - y0) / (y1 - y0) * (bottom - top)
    for t, s in yt:
        w = _text_size(draw, s, font)[0]
        draw.line([(left, Y(t)), (right, Y(t))], fill=GRID)
        draw.text((left - 6 - w, Y(t) - lh / 2 - 2), s, fill=INK, font=font)

    slot = (right - left) / len(groups)
    bar = slot * 0.8 / max(1, len(names))
    for g, label in enumerate(groups):
        x_group = left + g * slot + slot * 0.1
        for i, name in enumerate(names):
            v = series[name][g] if g < len(series[name]) else None
            if v is None or not math.isfinite(float(v)):
                continue
            xa, xb = x_group + i * bar, x_group + (i + 1) * bar - 1
            ya, yb = sorted((Y(0.0), Y(float(v))))
            draw.rectangle([xa, ya, max(xa, xb), yb], fill=PALETTE[i % len(PALETTE)])
            text = f"{float(v):.3g}"
            tw, th = _text_size(draw, text, small)
            if tw <= bar + 2 and ya - th - 3 > top:  # value above its bar, where it fits
                draw.text(((xa + xb - tw) / 2, ya - th - 4), text, fill=INK, font=small)
        w = _text_size(draw, label, font)[0]
        if w > slot - 4:  # too long for its slot: shorten rather than overlap a neighbour
            while len(label) > 1 and _text_size(draw, label + "…", font)[0] > slot - 4:
                label = label[:-1]
            label, w = label + "…", _text_size(draw, label + "…", font)[0]
        draw.text((left + (g + 0.5) * slot - w / 2, bottom + 6), label, fill=INK, font=font)
    draw.line([(left, Y(0.0)), (right, Y(0.0))], fill=FRAME)
    draw.rectangle([left, top, right, bottom], outline=FRAME)
    if xlabel:
        w = _text_size(draw, xlabel, font)[0]
        draw.text(((left + right - w) / 2, H - pad - lh - 2), xlabel, fill=INK, font=font)
    if ylabel:
        w = _text_size(draw, ylabel, font)[0]
        label = Image.new("RGB", (w + 4, lh + 6), "white")
        ImageDraw.Draw(label).text((2, 0), ylabel, fill=INK, font=font)
        label = label.rotate(90, expand=True)
        img.paste(label, (pad, int((top + bottom - label.height) / 2)))
    lx = right + 16
    for i, name in enumerate(names):
        cy = top + 8 + i * (lh + 8) + lh / 2
        draw.rectangle([lx, cy - 6, lx + 20, cy + 6], fill=PALETTE[i % len(PALETTE)])
        draw.text((lx + 26, cy - lh / 2 - 2), name, fill=INK, font=font)
    return _save(img, path)
