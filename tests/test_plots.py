"""sngan.plots: PNGs of the requested size, series drawn in their palette colours, edge cases."""

import math

import numpy as np
import pytest
from PIL import Image

from sngan.plots import PALETTE, grid_plot, line_plot

XS = list(range(0, 10001, 100))


def _mask(path, colour, lower_half=True):
    """Boolean (H, W) mask of pixels exactly `colour`. The lower half of the image keeps the
    legend's colour swatch out (tests put their lines low, so the legend goes to a top corner)."""
    px = np.asarray(Image.open(path).convert("RGB"))
    mask = (px == np.array(colour, dtype=np.uint8)).all(axis=-1)
    if lower_half:
        mask[: mask.shape[0] // 2] = False
    return mask


def _low_series(n=len(XS)):
    """Values in [0, 1]; with a companion point at 10 they occupy the bottom tenth of the plot."""
    return [0.5 + 0.5 * math.sin(i / 7) for i in range(n)]


def test_png_has_requested_size_and_draws_each_series(tmp_path):
    series = {"a": (XS, _low_series()), "b": (XS, [v * 0.5 for v in _low_series()]),
              "top": ([5000], [10.0])}
    out = line_plot(series, tmp_path / "p.png", title="t", ylabel="loss", size=(640, 400))
    assert out == tmp_path / "p.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (640, 400)
    for colour in PALETTE[:2]:
        assert _mask(out, colour).sum() > 300  # a whole line, far more than a legend swatch
    assert _mask(out, PALETTE[2], lower_half=False).sum() > 60 + 20  # legend swatch + a dot


def test_empty_series_is_not_drawn_anywhere(tmp_path):
    out = line_plot({"a": (XS, _low_series()), "empty": ([], []), "c": (XS, XS)}, tmp_path / "p.png")
    assert _mask(out, PALETTE[0]).sum() > 300
    assert _mask(out, PALETTE[1], lower_half=False).sum() == 0  # not even in the legend
    assert _mask(out, PALETTE[2]).sum() > 0  # later series keep their own colour


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_break_the_line(tmp_path, bad):
    ys = [0.0] * len(XS)
    ys[40:61] = [bad] * 21  # a gap over steps 4000..6000
    out = line_plot({"a": (XS, ys), "top": ([0, 10000], [10.0, 10.0])}, tmp_path / "p.png")
    cols = np.flatnonzero(_mask(out, PALETTE[0]).any(axis=0))
    assert cols.size > 0
    gaps = np.diff(cols)
    # Both parts are drawn (columns on both sides) with one wide gap in between.
    assert gaps.max() > 0.1 * 800 and (gaps > 5).sum() == 1
    mid = cols[np.argmax(gaps)]
    assert cols.min() < mid < cols.max()


def test_constant_series_and_single_points(tmp_path):
    out = line_plot({"c": (XS, [3.0] * len(XS))}, tmp_path / "c.png")
    assert _mask(out, PALETTE[0], lower_half=False).sum() > 300
    out = line_plot({"z": (XS, [0.0] * len(XS))}, tmp_path / "z.png")
    assert _mask(out, PALETTE[0], lower_half=False).sum() > 300
    out = line_plot({"one": ([7], [2.5])}, tmp_path / "one.png")
    assert _mask(out, PALETTE[0], lower_half=False).sum() > 60 + 20  # legend swatch + a dot
    out = line_plot({"s": ([1e9], [1e-12])}, tmp_path / "s.png", logy=True)
    assert Image.open(out).size == (800, 500)


def test_logy_skips_non_positive_values(tmp_path):
    ys = [10 ** (-i / 20) for i in range(len(XS))]
    ys[10], ys[50], ys[90] = 0.0, -1.0, float("nan")
    out = line_plot({"a": (XS, ys), "neg": ([0, 1], [-1.0, 0.0])}, tmp_path / "p.png", logy=True)
    assert _mask(out, PALETTE[0], lower_half=False).sum() > 300
    assert _mask(out, PALETTE[1], lower_half=False).sum() == 0  # nothing positive: left out


def test_no_data_still_writes_a_png(tmp_path):
    for name, series in [("none", {}), ("empty", {"a": ([], [])}), ("nan", {"a": ([1], [math.nan])})]:
        out = line_plot(series, tmp_path / f"{name}.png", size=(300, 200))
        with Image.open(out) as img:
            assert img.size == (300, 200)
            assert img.convert("L").getextrema()[0] < 200  # the "no data" text is there
    with Image.open(line_plot({}, tmp_path / "log.png", logy=True)) as img:
        assert img.size == (800, 500)


def test_grid_plot_tiles_panels(tmp_path):
    panels = [(f"panel {i}", {"a": (XS, _low_series()), "b": (XS, XS)}) for i in range(5)]
    panels.append(("empty", {}))
    out = grid_plot(panels, tmp_path / "g.png", cols=2, panel_size=(300, 200))
    with Image.open(out) as img:
        assert img.size == (600, 600)
    mask = _mask(out, PALETTE[0], lower_half=False)
    for i in range(5):  # every non-empty panel has its own line
        r, c = divmod(i, 2)
        assert mask[r * 200:(r + 1) * 200, c * 300:(c + 1) * 300].sum() > 100
    assert mask[400:, 300:].sum() == 0  # the empty panel
    assert Image.open(grid_plot(panels[:1], tmp_path / "one.png", cols=3)).size == (600, 380)
    assert Image.open(grid_plot([], tmp_path / "none.png")).size == (600, 380)


def test_atomic_write_creates_folder_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "new" / "dir" / "p.png"
    line_plot({"a": (XS, _low_series())}, target)
    line_plot({"a": (XS, XS)}, target)  # overwrite in place
    assert [p.name for p in target.parent.iterdir()] == ["p.png"]
    assert Image.open(target).size == (800, 500)


def test_failed_write_leaves_no_temp_files(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        line_plot({"a": (XS, XS)}, tmp_path / "p.png")
    assert list(tmp_path.iterdir()) == []


def test_many_series_cycle_the_palette(tmp_path):
    series = {f"s{i}": (XS, [v + i for v in _low_series()]) for i in range(12)}
    out = line_plot(series, tmp_path / "p.png")
    assert all(_mask(out, colour, lower_half=False).sum() > 0 for colour in PALETTE)


def test_bar_plot_groups_bars_by_series_and_skips_missing_values(tmp_path):
    from sngan.plots import bar_plot

    out = bar_plot(["A", "B", "C"], {"SN": [30.0, 20.0, 10.0], "BN": [60.0, None, float("nan")]},
                   tmp_path / "b.png", title="final FID", xlabel="setting", ylabel="FID", size=(600, 400))
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (600, 400)
    sn, bn = (_mask(out, c, lower_half=False) for c in PALETTE[:2])
    cols = lambda m: np.flatnonzero(m[m.shape[0] // 2:].any(axis=0))  # noqa: E731 (bars, not the legend)
    # Three SN bars; one BN bar, in the first group, left of the second SN bar.
    assert (np.diff(cols(sn)) > 1).sum() == 2 and (np.diff(cols(bn)) > 1).sum() == 0
    assert cols(bn).max() < cols(sn)[np.argmax(np.diff(cols(sn)) > 1) + 1]
    # Bar heights follow the values: SN's 30 is three times its 10.
    heights = [sn[:, c].sum() for c in (cols(sn)[0], cols(sn)[-1])]
    assert heights[0] == pytest.approx(3 * heights[1], rel=0.05)
    assert bn[:, cols(bn)[0]].sum() == pytest.approx(2 * heights[0], rel=0.05)


def test_bar_plot_without_values_says_no_data(tmp_path):
    from sngan.plots import bar_plot

    for name, args in [("empty", ([], {})), ("none", (["A"], {"x": [None]}))]:
        with Image.open(bar_plot(*args, tmp_path / f"{name}.png", size=(300, 200))) as img:
            assert img.size == (300, 200) and img.convert("L").getextrema()[0] < 200
