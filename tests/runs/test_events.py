"""TensorBoard event files (sngan/runs/events.py): the tags and steps of metrics.jsonl, read back with
TensorBoard's own reader; a resumed run continues the curves without duplicated steps."""

import pytest

from sngan import config
from sngan.runs import checkpoint, run_folder
from sngan.runs.events import FOLDER
from sngan.training import loop
from fid_fixtures import reference_folder

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator


def _events(run_dir):
    acc = EventAccumulator(str(run_dir / FOLDER), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _steps(acc, tag):
    return [e.step for e in acc.Scalars(tag)]


def test_events_mirror_the_metrics(tiny, tmp_path, torch_home):
    ref = reference_folder(tmp_path / "ref")
    data = tiny(train={"steps": 4, "log_every": 2, "sample_every": 2, "ema_decay": 0.5},
                eval={"every": 4, "num_samples": 20, "ref": str(ref), "batch_size": 10})
    summary = loop.train(config.from_dict(data), progress=False)
    run_dir = next((tmp_path / "runs").iterdir())
    entries = run_folder.read_metrics(run_dir)
    acc = _events(run_dir)
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/d", "loss/g", "d_output/real", "d_output/fake", "lr/g", "lr/d", "speed/steps_per_s",
            "fid/fid20_custom", "fid/fid20_custom_ema", "is/is20", "is/is20_ema"} <= scalars
    assert "num_ref" not in scalars  # the evaluation line's protocol fields are not curves
    layers = entries[0]["sigma"]
    assert {f"sigma/{layer}" for layer in layers} <= scalars
    logged = [e for e in entries if "loss_d" in e]
    assert _steps(acc, "loss/d") == [e["step"] for e in logged] == [2, 4]
    assert [e.value for e in acc.Scalars("loss/d")] == pytest.approx([e["loss_d"] for e in logged])
    fid = [e for e in entries if "fid20_custom_ema" in e]
    assert _steps(acc, "fid/fid20_custom_ema") == [e["step"] for e in fid] == [4]
    assert [e.value for e in acc.Scalars("fid/fid20_custom_ema")] == pytest.approx([e["fid20_custom_ema"] for e in fid])
    assert set(acc.Tags()["images"]) == {"samples/G", "samples/G_ema"}
    assert [e.step for e in acc.Images("samples/G")] == [2, 4]
    assert summary["step"] == 4


def test_resumed_run_continues_without_duplicated_steps(tiny, tmp_path):
    """A run that got to step 4 but resumes from its step-2 checkpoint (as after a crash) ends with
    each step's events once: those written after step 2 are purged, then written again."""
    data = tiny(train={"steps": 4, "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 5})
    run_dir = run_folder.new_run_dir(tmp_path / "runs", "t")
    loop.train(config.from_dict(data), run_dir, progress=False)
    assert _steps(_events(run_dir), "loss/d") == [1, 2, 3, 4]
    ckpt = run_dir / run_folder.checkpoint_name(2)
    state = checkpoint.load(ckpt)
    loop.train(config.from_dict(state["config"]), run_dir, resume=state, resume_path=ckpt, progress=False)
    assert _steps(_events(run_dir), "loss/d") == [1, 2, 3, 4]


def test_tensorboard_off(tiny, tmp_path):
    data = tiny(train={"steps": 2, "tensorboard": False})
    run_dir = run_folder.new_run_dir(tmp_path / "runs", "off")
    loop.train(config.from_dict(data), run_dir, progress=False)
    assert not (run_dir / FOLDER).exists() and (run_dir / run_folder.LATEST).is_file()
