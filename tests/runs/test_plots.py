"""sngan.runs.plots: figures plot the given data in the style's cycle colours, PNGs of the requested
size written atomically, edge cases."""

import math

import numpy as np
import pytest
from matplotlib.colors import same_color
from matplotlib.figure import Figure
from PIL import Image

from sngan.errors import SnganError
from sngan.runs.plots import bar_figure, grid_figure, line_figure, metric_series, save

XS = list(range(0, 10001, 100))


def _low_series(n=len(XS)):
    return [0.5 + 0.5 * math.sin(i / 7) for i in range(n)]


def _lines(ax) -> dict:
    """{label: Line2D} of the lines drawn in `ax`."""
    return {line.get_label(): line for line in ax.get_lines()}


def _legend(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def _says_no_data(ax) -> bool:
    return "no data" in [t.get_text() for t in ax.texts]


def _marked(line) -> list[int]:
    """Indices of the points drawn as markers (a lone point has no segment to show it)."""
    return list(line.get_markevery() or []) if line.get_marker() not in (None, "None", "", " ") else []


def test_png_has_requested_size_and_draws_each_series(tmp_path):
    series = {"a": (XS, _low_series()), "b": (XS, [v * 0.5 for v in _low_series()]), "top": ([5000], [10.0])}
    fig = line_figure(series, title="t", ylabel="loss", size=(640, 400))
    out = save(fig, tmp_path / "p.png")
    assert out == tmp_path / "p.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (640, 400)
    ax, = fig.axes
    lines = _lines(ax)
    assert list(lines) == _legend(ax) == ["a", "b", "top"]
    for name, (xs, ys) in series.items():  # the plotted data is the data given
        np.testing.assert_array_equal(lines[name].get_xdata(), xs)
        np.testing.assert_array_equal(lines[name].get_ydata(), ys)
    colours = [line.get_color() for line in lines.values()]
    assert all(same_color(c, f"C{i}") for i, c in enumerate(colours))
    assert _marked(lines["top"]) == [0] and _marked(lines["a"]) == []  # a lone point shows as a dot
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("t", "step", "loss")


def test_empty_series_is_not_drawn_anywhere(tmp_path):
    fig = line_figure({"a": (XS, _low_series()), "empty": ([], []), "c": (XS, XS)})
    ax, = fig.axes
    assert list(_lines(ax)) == _legend(ax) == ["a", "c"]  # not even in the legend
    assert same_color(_lines(ax)["c"].get_color(), "C2")  # later series keep their own colour


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_break_the_line(tmp_path, bad):
    ys = [0.0] * len(XS)
    ys[40:61] = [bad] * 21  # a gap over steps 4000..6000
    fig = line_figure({"a": (XS, ys), "top": ([0, 10000], [10.0, 10.0])})
    y = np.asarray(_lines(fig.axes[0])["a"].get_ydata(), dtype=float)
    # NaN breaks a matplotlib line: both parts are drawn, with one gap exactly where the data was bad.
    assert np.isnan(y[40:61]).all() and (y[:40] == 0).all() and (y[61:] == 0).all()
    assert fig.axes[0].get_ylim()[0] <= 0 <= fig.axes[0].get_ylim()[1]
    save(fig, tmp_path / "p.png")  # and it renders


def test_constant_series_and_single_points(tmp_path):
    for value in (3.0, 0.0):
        ax = line_figure({"c": (XS, [value] * len(XS))}).axes[0]
        lo, hi = ax.get_ylim()
        assert lo < value < hi and len(ax.get_lines()) == 1  # padded, not a zero-height axis
    fig = line_figure({"one": ([7], [2.5])})
    assert _marked(_lines(fig.axes[0])["one"]) == [0]
    fig = line_figure({"s": ([1e9], [1e-12])}, logy=True)
    lo, hi = fig.axes[0].get_ylim()
    assert 0 < lo < 1e-12 < hi
    with Image.open(save(fig, tmp_path / "s.png")) as img:
        assert img.size == (800, 500)


def test_logy_skips_non_positive_values(tmp_path):
    ys = [10 ** (-i / 20) for i in range(len(XS))]
    ys[10], ys[50], ys[90] = 0.0, -1.0, float("nan")
    fig = line_figure({"a": (XS, ys), "neg": ([0, 1], [-1.0, 0.0])}, logy=True)
    ax, = fig.axes
    assert ax.get_yscale() == "log" and list(_lines(ax)) == ["a"]  # nothing positive: left out
    y = np.asarray(_lines(ax)["a"].get_ydata(), dtype=float)
    assert np.isnan(y[[10, 50, 90]]).all() and np.isfinite(np.delete(y, [10, 50, 90])).all()
    save(fig, tmp_path / "p.png")


def test_no_data_still_writes_a_png(tmp_path):
    for name, series in [("none", {}), ("empty", {"a": ([], [])}), ("nan", {"a": ([1], [math.nan])})]:
        fig = line_figure(series, size=(300, 200))
        assert _says_no_data(fig.axes[0]) and not fig.axes[0].get_lines()
        with Image.open(save(fig, tmp_path / f"{name}.png")) as img:
            assert img.size == (300, 200)
            assert img.convert("L").getextrema()[0] < 200  # something is drawn
    with Image.open(save(line_figure({}, logy=True), tmp_path / "log.png")) as img:
        assert img.size == (800, 500)


def test_grid_figure_tiles_panels(tmp_path):
    panels = [(f"panel {i}", {"a": (XS, _low_series()), "b": (XS, XS)}) for i in range(5)]
    panels.append(("empty", {}))
    fig = grid_figure(panels, cols=2, panel_size=(300, 200))
    with Image.open(save(fig, tmp_path / "g.png")) as img:
        assert img.size == (600, 600)
    assert [ax.get_title() for ax in fig.axes] == [t for t, _ in panels]
    for ax, (_, series) in zip(fig.axes[:5], panels):  # every non-empty panel has its own lines
        assert list(_lines(ax)) == ["a", "b"]
        np.testing.assert_array_equal(_lines(ax)["b"].get_ydata(), series["b"][1])
    assert not fig.axes[5].get_lines() and _says_no_data(fig.axes[5])  # the empty panel
    assert len(grid_figure(panels[:5], cols=2).axes) == 5  # the unused end of the last row is blank
    fig = grid_figure(panels[:1], cols=3)
    assert len(fig.axes) == 1 and Image.open(save(fig, tmp_path / "one.png")).size == (600, 380)
    fig = grid_figure([])
    assert _says_no_data(fig.axes[0]) and Image.open(save(fig, tmp_path / "none.png")).size == (600, 380)


def test_atomic_write_creates_folder_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "new" / "dir" / "p.png"
    save(line_figure({"a": (XS, _low_series())}), target)
    save(line_figure({"a": (XS, XS)}), target)  # overwrite in place
    assert [p.name for p in target.parent.iterdir()] == ["p.png"]
    assert Image.open(target).size == (800, 500)


def test_failed_write_leaves_no_temp_files(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(SnganError, match="disk full"):  # one line for the user, not a traceback
        save(line_figure({"a": (XS, XS)}), tmp_path / "p.png")
    assert list(tmp_path.iterdir()) == []


def test_many_series_cycle_the_palette(tmp_path):
    series = {f"s{i}": (XS, [v + i for v in _low_series()]) for i in range(12)}
    colours = [line.get_color() for line in line_figure(series).axes[0].get_lines()]
    assert all(same_color(c, f"C{i % 10}") for i, c in enumerate(colours))
    assert same_color(colours[10], colours[0]) and not same_color(colours[1], colours[0])


def _bars(ax) -> dict:
    """{series: [(x centre, height)]} of a bar chart."""
    return {c.get_label(): [(p.get_x() + p.get_width() / 2, p.get_height()) for p in c] for c in ax.containers}


def test_bar_figure_groups_bars_by_series_and_skips_missing_values(tmp_path):
    fig = bar_figure(["A", "B", "C"], {"SN": [30.0, 20.0, 10.0], "BN": [60.0, None, float("nan")]},
                     title="final FID", xlabel="setting", ylabel="FID", size=(600, 400))
    with Image.open(save(fig, tmp_path / "b.png")) as img:
        assert img.format == "PNG" and img.size == (600, 400)
    ax, = fig.axes
    bars = _bars(ax)
    # Three SN bars; one BN bar, in the first group, left of the second SN bar; heights are the values.
    assert [h for _, h in bars["SN"]] == [30.0, 20.0, 10.0] and [h for _, h in bars["BN"]] == [60.0]
    assert bars["SN"][0][0] < bars["BN"][0][0] < bars["SN"][1][0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B", "C"]
    for (x, _), tick in zip(bars["SN"], ax.get_xticks()):  # each bar sits in its group's slot
        assert abs(x - tick) < 0.5
    assert ax.get_ylim()[0] == 0 and _legend(ax) == ["SN", "BN"]
    assert {t.get_text() for t in ax.texts} >= {"30", "20", "10", "60"}  # values on the bars
    assert same_color(ax.containers[1].patches[0].get_facecolor(), "C1")


def test_bar_figure_without_values_says_no_data(tmp_path):
    for name, args in [("empty", ([], {})), ("none", (["A"], {"x": [None]}))]:
        fig = bar_figure(*args, size=(300, 200))
        assert _says_no_data(fig.axes[0]) and not fig.axes[0].containers
        with Image.open(save(fig, tmp_path / f"{name}.png")) as img:
            assert img.size == (300, 200) and img.convert("L").getextrema()[0] < 200


def test_metric_series_reads_metrics_entries():
    entries = [{"step": 1, "loss_d": 0.5, "sigma": {"fc": 1.0}}, {"step": 2, "fid5k": 30.0},
               {"step": 3, "loss_d": 0.4, "sigma": {"fc": 2.0, "c0": 3.0}}, {"step": 4, "diverged": True}]
    assert metric_series(entries, ["loss_d", "fid5k"]) == {"loss_d": ([1, 3], [0.5, 0.4]), "fid5k": ([2], [30.0])}
    assert metric_series(entries, within="sigma") == {"fc": ([1, 3], [1.0, 2.0]), "c0": ([3], [3.0])}
    assert metric_series(entries, ["diverged"]) == {"diverged": ([], [])}  # flags are not numbers
    assert metric_series([], within="sigma") == {}
