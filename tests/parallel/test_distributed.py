"""Two processes under torchrun (gloo on the CPU): one run folder, replicas in sync, and the
same training as one process with the same global batch."""

import subprocess
import sys

import pytest
import torch

from conftest import TINY_KEYS, overrides
from sngan import config
from sngan.models import networks
from sngan.parallel import distributed
from sngan.runs import checkpoint
from sngan.training.state import seed_everything

ARGS = overrides({**TINY_KEYS, "model.z_dim": 16, "train.batch_size": 16, "train.log_every": 1,
                  "train.sample_every": 1000, "train.checkpoint_every": 3, "train.deterministic": "true",
                  "train.steps": 3,
                  # the settings the margins below were measured with, not the quickstart's (16 px, n_dis 2, EMA)
                  "data.resolution": 32, "optim.n_dis": 1, "optim.lr_g": "2e-4", "optim.lr_d": "4e-4", "train.ema_decay": 0}) + ["--no-progress"]


def _train(out, nproc, resume=None, steps=3):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    what = ["--resume", str(resume), "--no-progress", "--set", f"train.steps={steps}"] if resume else [
        "-c", "quickstart", "--out", str(out), *ARGS, "--set", f"train.steps={steps}"]
    cmd = [*(launcher if nproc > 1 else [sys.executable]), "-m", "sngan", "train", *what]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[:3000] + "\n...\n" + proc.stderr[-2000:]
    return proc


def _updates(state, cfg):
    """Flattened weight changes of G and D since initialisation (same seed -> same init)."""
    seed_everything(cfg.train.seed)
    G0, D0 = networks.build(cfg.model, cfg.data.resolution)
    out = {}
    for name, m0 in (("G", G0), ("D", D0)):
        s0 = m0.state_dict()
        keys = [k for k in s0 if s0[k].is_floating_point() and not k.endswith(".u") and "running" not in k]
        out[name] = torch.cat([(state[name][k] - s0[k]).flatten() for k in keys])
    return out


@pytest.mark.slow
def test_two_processes_train_one_run_in_sync_and_match_one_process(tmp_path):
    proc = _train(tmp_path / "ddp", 2)
    assert proc.stderr.count("run folder:") == 1 and proc.stderr.count("done:") == 1
    (run_dir,) = (tmp_path / "ddp").iterdir()
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["ckpt-0000003.pt", "latest.pt"]
    assert (run_dir / "config.yaml").read_text().startswith("# 2 processes: train.batch_size 16 is the global batch, 8 per process")
    state = checkpoint.load(run_dir / "latest.pt")
    cfg = config.from_dict(state["config"])

    # Exact: both replicas hashed identical (weights, SN u vectors, BN statistics), and the hash
    # is that of the weights saved.
    assert state["world_size"] == 2 and len(set(state["rank_fingerprints"])) == 1
    G, D = networks.build(cfg.model, cfg.data.resolution)
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    assert distributed.fingerprint(G, D) == state["rank_fingerprints"][0]

    # One process with the same global batch sees the same images and the same z. What differs
    # is G's BatchNorm: each process normalises over its own 8 images instead of all 16
    # (SyncBatchNorm, model.sync_bn, needs CUDA). Measured: D's update differs by ~12%, G's
    # update has cosine ~0.78; a run that did not average gradients or shard the data would
    # fail the exact check above or drift much further.
    _train(tmp_path / "single", 1)
    single = checkpoint.load(next((tmp_path / "single").iterdir()) / "latest.pt")
    a, b = _updates(state, cfg), _updates(single, cfg)
    assert float((a["D"] - b["D"]).norm() / b["D"].norm()) < 0.25
    assert float(torch.nn.functional.cosine_similarity(a["G"], b["G"], dim=0)) > 0.5

    # Every process resumes from the same checkpoint and continues exactly as a straight run.
    _train(None, 2, resume=run_dir, steps=5)
    _train(tmp_path / "straight", 2, steps=5)
    resumed = checkpoint.load(run_dir / "latest.pt")
    straight = checkpoint.load(next((tmp_path / "straight").iterdir()) / "latest.pt")
    assert resumed["step"] == 5 and resumed["rank_fingerprints"] == straight["rank_fingerprints"]


def test_each_process_takes_its_slice_of_the_global_batch():
    t = torch.arange(8)
    parts = [distributed.rank_slice(t, distributed.Dist(rank=r, world=2)) for r in range(2)]
    assert torch.equal(torch.cat(parts), t) and torch.equal(parts[1], torch.arange(4, 8))
    assert distributed.rank_slice(t, distributed.Dist()) is t


def test_cells_at_once_share_the_cores(monkeypatch):
    """`sngan sweep --jobs N`: each cell gets cores / N threads (at least one), unless the user set
    OMP_NUM_THREADS; one cell per GPU keeps only its GPU."""
    from sngan.studies import sweep

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: 8)
    assert sweep.slots_for(None, 2) == [{"OMP_NUM_THREADS": "4"}] * 2
    assert sweep.slots_for(None, 3) == [{"OMP_NUM_THREADS": "2"}] * 3
    assert sweep.slots_for(None, 16) == [{"OMP_NUM_THREADS": "1"}] * 16
    assert sweep.slots_for(None, 1) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert sweep.slots_for(None, 2) == [{}, {}]
