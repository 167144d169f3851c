"""Shared by the test modules: fixtures, and helpers imported by name (`from conftest import cli`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (`-n auto`) the workers share the cores: each takes its share of threads and
# passes the same count on to the subprocesses it starts. The same count matters beyond speed: a
# subprocess's results are compared bit for bit with the test's own, and a CPU convolution's
# rounding depends on how many threads split it.
THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ["OMP_NUM_THREADS"] = str(THREADS)

import torch  # noqa: E402  (after OMP_NUM_THREADS)

sys.path.insert(0, str(Path(__file__).parent))

from fid_fixtures import *  # noqa: E402,F401,F403
from sngan import config  # noqa: E402
from sngan.cli import main  # noqa: E402
from sngan.runs import run_folder  # noqa: E402
from sngan.studies import sweep_spec  # noqa: E402
from sngan.training import loop  # noqa: E402

torch.set_num_threads(THREADS)


def pytest_collection_modifyitems(config, items):
    """Leaves out the tests marked `full_run` (minutes each) unless `-m` names them, so the suite stays
    a few minutes long; `python -m pytest -m full_run` runs them. Then the longest first, `full_run`
    and `slow`: started first, each runs beside the other worker's short tests instead of after them
    (xdist's worksteal hands each worker a contiguous share of this order)."""
    if "full_run" not in config.option.markexpr:
        left_out = [item for item in items if item.get_closest_marker("full_run")]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if not item.get_closest_marker("full_run")]
    items.sort(key=lambda item: (item.get_closest_marker("full_run") is None, item.get_closest_marker("slow") is None))


def tiny_config(tmp_path: Path, **sections) -> dict:
    """Plain config data for a tiny, fast CPU run on the synthetic set; `sections` override."""
    cfg = {
        "data": {"name": "synthetic", "resolution": 32, "num_images": 256},
        "model": {"arch": "dcgan", "g_ch": 4, "d_ch": 4, "z_dim": 16},
        "train": {"batch_size": 8, "steps": 4, "log_every": 2, "sample_every": 2,
                  "checkpoint_every": 2, "device": "cpu", "sample_grid": 4},
        "out": {"root": str(tmp_path / "runs")},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


TINY_RESNET = {"arch": "resnet", "g_ch": 8, "d_ch": 8, "z_dim": 16, "conditional": True}


@pytest.fixture(scope="session")
def conditional_run(tmp_path_factory):
    """A tiny conditional run on the two-class synthetic shapes, with DiffAugment."""
    tmp = tmp_path_factory.mktemp("cond")
    cfg = config.from_dict({
        "data": {"name": "synthetic", "resolution": 32, "num_images": 64}, "model": TINY_RESNET,
        "train": {"batch_size": 8, "steps": 3, "log_every": 1, "sample_every": 3, "checkpoint_every": 3,
                  "device": "cpu", "sample_grid": 6, "diffaug": "color,translation,cutout"},
        "out": {"root": str(tmp / "runs")}})
    run_dir = run_folder.new_run_dir(tmp / "runs", "cond")
    loop.train(cfg, run_dir, progress=False)
    return run_dir


@pytest.fixture
def tiny(tmp_path):
    """`tiny(section={key: value}, ...)` -> config data for a tiny CPU run writing under tmp_path."""
    return lambda **sections: tiny_config(tmp_path, **sections)


def overrides(keys: dict) -> list[str]:
    """The CLI's `--set KEY=VALUE` arguments, one pair per key of `keys`."""
    return [arg for key, value in keys.items() for arg in ("--set", f"{key}={value}")]


# The quickstart shrunk for CLI runs in tests; each test file adds what it needs to the same base.
TINY_KEYS = {"data.num_images": 128, "model.g_ch": 4, "model.d_ch": 4, "train.batch_size": 8,
             "train.device": "cpu", "train.sample_grid": 4}
TINY = overrides({**TINY_KEYS, "train.log_every": 2, "train.sample_every": 2, "train.checkpoint_every": 2,
                  "train.ema_decay": 0})  # the quickstart's EMA generator would be the one sampled; tests of best/headline read G


def sngan(*args, cwd=None, env=None, check=True):
    """Run the real CLI in a subprocess; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "sngan", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"sngan {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def cli(capsys, *args):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def train_run(cfg_data, tmp_path, name="t"):
    """Train config data `cfg_data` into a new run folder under tmp_path; (run folder, summary)."""
    cfg = config.from_dict(cfg_data)
    run_dir = run_folder.new_run_dir(tmp_path / "runs", name)
    summary = loop.train(cfg, run_dir, progress=False)
    return run_dir, summary


def assert_same_training_state(a, b):
    """Two checkpoints hold the same weights, optimiser states, data position and step."""
    assert ("G_ema" in a) == ("G_ema" in b)
    for key in ("G", "D", "G_ema") if "G_ema" in a else ("G", "D"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    for key in ("opt_g", "opt_d"):
        for pid, s in a[key]["state"].items():
            for name, t in s.items():
                assert torch.equal(t, b[key]["state"][pid][name]), f"{key}.{pid}.{name} differs"
    assert a["batches"] == b["batches"] and a["step"] == b["step"]


def spec_file(tmp_path: Path, text: str, name="spec.yaml") -> Path:
    """A sweep spec file holding `text`."""
    path = tmp_path / name
    path.write_text(text)
    return path


def expand_spec(path: Path, overrides=(), out=None):
    """The sweep_spec.Sweep of the spec file `path`."""
    return sweep_spec.expand(sweep_spec.read_spec(path), path, list(overrides), out)
