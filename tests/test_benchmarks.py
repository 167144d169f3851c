"""benchmarks/: the project's acceptance scripts run at tiny sizes with the tests' Inception weights.

As in studies/test_bench.py, timings are never compared with thresholds (they depend on the machine);
what is checked is that every field is there and consistent, that each target is judged by its
stated rule, and that the same samples through sngan and through pytorch-fid's CLI give the same FID.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_training_targets_judge_sn_overhead(tmp_path):
    script = load_script("training_targets")
    out = tmp_path / "t.json"
    result = script.main(["--archs", "dcgan32", "--device", "cpu", "--width-scale", "0.125", "--batch-size", "4",
                          "--warmup", "1", "--steps", "1", "--repeats", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["schema"] == script.SCHEMA and result["device"]["type"] == "cpu"
    [o] = result["sn_overhead"]
    assert (o["arch"], o["resolution"]) == ("dcgan", 32) and 0.2 < o["ratio"] < 5
    step = {r["d_norm"]: r["step_s"] for r in result["training"]}
    assert o["ratio"] == pytest.approx(step["sn"] / step["none"], rel=1e-2)
    assert o["target"] == 1.10 and o["meets_target"] == (o["ratio"] <= 1.10)
    assert result["targets"]["sn_overhead_met"] == o["meets_target"]
    assert [r["host_syncs_per_step"] for r in result["training"]] == [None] * 3  # counted on CUDA only


def test_pytorch_fid_cli_runs_in_strict_fp32_unless_asked(tmp_path, monkeypatch):
    """The FID-agreement run turns TF32 off in pytorch-fid's process; the default run leaves the
    GPU's default, whatever the caller's environment says."""
    script = load_script("fid_vs_pytorch_fid")
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "1")
    strict, default = script.cli_env(tmp_path, True), script.cli_env(tmp_path, False)
    assert strict["NVIDIA_TF32_OVERRIDE"] == "0" and "NVIDIA_TF32_OVERRIDE" not in default
    assert strict["TORCH_HOME"] == default["TORCH_HOME"] == str(tmp_path / "torch")


@pytest.mark.slow
def test_fid_routes_agree(tmp_path, fid_weights_file, monkeypatch):
    """eval-fid and PNGs + `python -m pytorch_fid` on 16 samples (about a minute on 2 CPU cores)."""
    monkeypatch.chdir(tmp_path)
    script = load_script("fid_vs_pytorch_fid")
    f = script.main(["--num", "16", "--batch-size", "8", "--device", "cpu",
                     "--inception-weights", str(fid_weights_file)])
    assert json.loads((tmp_path / "fid_vs_pytorch_fid.json").read_text()) == json.loads(json.dumps(f))
    assert f["schema"] == script.SCHEMA and f["num"] == 16 and f["batch_size"] == 8
    assert f["detector"].startswith("pytorch-fid-inception-custom-")
    for key in ("extract_images_per_s", "eval_fid_s", "png_write_s", "pytorch_fid_cli_s", "png_cli_s",
                "sngan_import_s", "speedup", "speedup_with_import"):
        assert positive(f[key]), (key, f[key])
    assert f["peak_mem_mb"] is None  # measured on CUDA only
    assert f["png_cli_s"] == pytest.approx(f["png_write_s"] + f["pytorch_fid_cli_s"], abs=2e-3)
    assert f["pytorch_fid_cli_tf32_s"] is None and f["fid_pytorch_fid_tf32"] is None  # CUDA only
    assert f["speedup"] == pytest.approx(f["png_cli_s"] / f["eval_fid_s"], rel=1e-2)
    assert f["speedup_with_import"] < f["speedup"]
    # The same samples through both routes: the same FID (a property, not a timing).
    assert positive(f["fid_sngan"]) and f["fid_sngan"] == pytest.approx(f["fid_pytorch_fid"], rel=1e-3)
    assert f["fid_match"] is True and f["fid_rel_diff"] <= 1e-3
    assert f["meets_target"] == (f["speedup"] >= 2.0)
    assert f["targets"] == {"speedup_min": 2.0, "fid_match_rtol": 1e-3}


def test_fid_script_without_weights_is_one_line_error(tmp_path, capsys):
    script = load_script("fid_vs_pytorch_fid")
    with pytest.raises(SystemExit) as e:
        script.main(["--inception-weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "f.json")])
    assert str(e.value).startswith("error: ") and "do not exist" in str(e.value)
    assert len(str(e.value).splitlines()) == 1 and not (tmp_path / "f.json").exists()

