import itertools
import json

import pytest
import torch

from sngan import config, config_files
from sngan.errors import SnganError
from sngan.parallel import distributed
from sngan.runs import checkpoint, run_folder
from sngan.training import loop, losses
from sngan.training.losses import Objective
from sngan.training.state import Run
from conftest import assert_same_training_state, train_run


@pytest.mark.parametrize("arch, norm, loss", list(itertools.product(["dcgan", "resnet"], ["sn", "bn", "none"],
                                                                    ["standard", "hinge"])))
def test_every_architecture_norm_and_loss_trains(tiny, tmp_path, arch, norm, loss):
    run_dir, summary = train_run(tiny(model={"arch": arch, "d_norm": norm}, loss={"name": loss},
                                 train={"steps": 2, "log_every": 1}), tmp_path)
    assert summary["step"] == 2
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [1, 2]
    for e in entries:
        assert all(k in e for k in ("loss_d", "loss_g", "d_real", "d_fake", "lr_g", "lr_d", "time", "sigma"))
        assert all(torch.isfinite(torch.tensor(v)) for v in (e["loss_d"], e["loss_g"]))
    assert (run_dir / "latest.pt").is_file()


def test_run_folder_contents(tiny, tmp_path):
    run_dir, _ = train_run(tiny(train={"steps": 4, "checkpoint_every": 2, "keep_checkpoints": 1}), tmp_path, "contents")
    assert run_dir.name == "00000-contents"
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "latest.pt", "losses.png", "sigmas.png", "samples"} <= names
    assert sorted(p.name for p in run_dir.glob("ckpt-*.pt")) == ["ckpt-0000004.pt"]  # keep_checkpoints=1
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step-0000002.png", "step-0000004.png"]
    saved = config.from_dict(__import__("yaml").safe_load((run_dir / "config.yaml").read_text()))
    assert saved.train.steps == 4
    state = checkpoint.load(run_dir / "latest.pt")
    assert state["step"] == 4 and state["version"] == checkpoint.VERSION
    assert {"G", "D", "opt_g", "opt_d", "rng", "batches", "config"} <= set(state)
    assert any(k.endswith("parametrizations.weight.0.u") for k in state["D"])  # SN u vectors persist


def test_one_step_changes_both_networks(tiny, tmp_path):
    cfg = config.from_dict(tiny())
    run = Run(cfg, torch.device("cpu"))
    g0 = {k: v.clone() for k, v in run.G.state_dict().items()}
    d0 = {k: v.clone() for k, v in run.D.state_dict().items()}
    loop.train_step(run, Objective.from_config(cfg.loss))
    assert any(not torch.equal(g0[k], v) for k, v in run.G.state_dict().items() if "weight" in k)
    assert any(not torch.equal(d0[k], v) for k, v in run.D.state_dict().items() if "original" in k)
    assert all(p.requires_grad for p in run.D.parameters())  # G's step must not leave D frozen


def test_n_dis_draws_n_dis_real_batches(tiny, tmp_path):
    cfg = config.from_dict(tiny(optim={"n_dis": 3}))
    run = Run(cfg, torch.device("cpu"))
    loop.train_step(run, Objective.from_config(cfg.loss))
    assert run.batches.state_dict()["pos"] == 3 * cfg.train.batch_size


def test_deterministic_flags_last_for_the_run_only(tiny, tmp_path):
    """Runs sharing a process (a sweep's cells) must not inherit each other's settings."""
    assert not torch.are_deterministic_algorithms_enabled()
    seen = []
    real_loop = loop._loop

    def spy(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real_loop(*args, **kwargs)

    import unittest.mock
    with unittest.mock.patch.object(loop, "_loop", spy):
        train_run(tiny(train={"steps": 1, "deterministic": True}), tmp_path, "det")
    assert seen == [True] and not torch.are_deterministic_algorithms_enabled()


def _final_state(run_dir):
    return checkpoint.load(run_dir / "latest.pt")


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tiny, tmp_path):
    data = tiny(train={"steps": 6, "checkpoint_every": 3, "log_every": 1}, optim={"n_dis": 2})
    straight, _ = train_run(data, tmp_path, "straight")

    # Same config, stopped after 3 steps (as if killed right after the step-3 checkpoint) ...
    partial, _ = train_run({**data, "train": {**data["train"], "steps": 3}}, tmp_path, "partial")
    # ... and resumed to 6 from its checkpoint, in the same folder.
    state = checkpoint.load(partial / "latest.pt")
    cfg = config.from_dict(config_files.apply_overrides(state["config"], ["train.steps=6"]))
    loop.train(cfg, partial, resume=state, resume_path=partial / "latest.pt", progress=False)

    assert_same_training_state(_final_state(straight), _final_state(partial))
    steps = [json.loads(line)["step"] for line in (partial / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_drops_metrics_logged_after_the_checkpoint(tiny, tmp_path):
    run_dir, _ = train_run(tiny(train={"steps": 4, "checkpoint_every": 2, "log_every": 1}), tmp_path)
    state = checkpoint.load(run_dir / "ckpt-0000002.pt")
    cfg = config.from_dict(state["config"])
    loop.train(cfg, run_dir, resume=state, resume_path=run_dir / "ckpt-0000002.pt", progress=False)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_training_twice_from_one_checkpoint_is_identical(tiny, tmp_path):
    run_dir, _ = train_run(tiny(train={"steps": 2, "checkpoint_every": 2}), tmp_path, "base")
    results = []
    for i in range(2):
        state = checkpoint.load(run_dir / "latest.pt")
        target = run_folder.new_run_dir(tmp_path / "runs", f"again{i}")
        cfg = config.from_dict(config_files.apply_overrides(state["config"], ["train.steps=4"]))
        loop.train(cfg, target, resume=state, resume_path=run_dir / "latest.pt", progress=False)
        results.append(_final_state(target))
    assert_same_training_state(*results)


def test_cuda_request_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SnganError, match="no CUDA GPU is visible"):
        distributed.resolve_device("cuda")
    assert distributed.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(SnganError, match="unknown device 'gpu'"):
        distributed.resolve_device("gpu")
    with pytest.raises(SnganError, match="unknown device 'mps'"):  # a torch device, but not one sngan trains on
        distributed.resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(SnganError, match="'cuda:2': only 2 CUDA GPU"):
        distributed.resolve_device("cuda:2")


def test_wgan_gp_and_weight_clipping_train(tiny, tmp_path):
    _, summary = train_run(tiny(loss={"name": "wasserstein"}, model={"d_norm": "none"}, train={"steps": 2}), tmp_path, "gp")
    assert summary["step"] == 2
    cfg = config.from_dict(tiny(loss={"name": "wasserstein", "gp_weight": 0.0, "clip": 0.01}, model={"d_norm": "none"}))
    run = Run(cfg, torch.device("cpu"))
    loop.train_step(run, Objective.from_config(cfg.loss))
    assert all(float(p.detach().abs().max()) <= 0.01 + 1e-7 for p in run.D.parameters())
    assert any(float(p.detach().abs().max()) > 0.01 for p in run.G.parameters())  # only D is clipped


def test_gradient_penalty_is_only_added_for_wasserstein(tiny, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(losses, "gradient_penalty", lambda *a, **k: calls.append(1) or torch.zeros(()))
    for name, expected in (("hinge", 0), ("wasserstein", 2)):
        cfg = config.from_dict(tiny(loss={"name": name}, optim={"n_dis": 2}))
        loop.train_step(Run(cfg, torch.device("cpu")), Objective.from_config(cfg.loss))
        assert len(calls) == expected
        calls.clear()


def test_bf16_autocast_keeps_spectral_norm_in_fp32(tiny, tmp_path):
    run_dir, summary = train_run(tiny(train={"steps": 3, "amp": "bf16", "log_every": 1}), tmp_path, "bf16")
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor([e["loss_d"], e["loss_g"]])).all() for e in entries)
    state = checkpoint.load(run_dir / "latest.pt")
    us = [v for k, v in state["D"].items() if k.endswith(".u")]
    assert us and all(u.dtype == torch.float32 for u in us)
    assert all(v.dtype == torch.float32 for v in state["G"].values() if v.is_floating_point())


def test_channels_last_trains_and_matches_contiguous(tiny, tmp_path):
    a, _ = train_run(tiny(train={"steps": 2}), tmp_path, "plain")
    b, _ = train_run(tiny(train={"steps": 2, "channels_last": True}), tmp_path, "cl")
    sa, sb = checkpoint.load(a / "latest.pt"), checkpoint.load(b / "latest.pt")
    for k in sa["G"]:  # same maths, other memory layout: equal up to float rounding
        torch.testing.assert_close(sa["G"][k], sb["G"][k], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_torch_compile_path_trains_and_saves_clean_state_dicts(tiny, tmp_path):
    run_dir, summary = train_run(tiny(train={"steps": 1, "compile": True}), tmp_path, "compiled")
    state = checkpoint.load(run_dir / "latest.pt")
    assert summary["step"] == 1
    assert not any("_orig_mod" in k for k in [*state["G"], *state["D"]])
