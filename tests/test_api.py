"""The Python API: `sngan.load` gives a ready generator whose samples are `sngan sample`'s."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import sngan
from sngan import checkpoint, config
from sngan.errors import SnganError, UsageError
from sngan.sample import to_uint8
from conftest import cli, tiny_config, train_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny 2-step run with an EMA generator (so its checkpoint holds G and G_ema). PyTorch's
    default initialisation, larger than the official N(0, 0.02), gives images that differ from
    seed to seed even in uint8, so comparing them means something."""
    tmp = tmp_path_factory.mktemp("api")
    data = tiny_config(tmp, model={"init": "pytorch"}, train={"steps": 2, "ema_decay": 0.5, "ema_start": 1})
    folder, _ = train_run(data, tmp)
    return folder


def test_import_sngan_stays_free_of_torch():
    """`import sngan` and the CLI module (so `sngan --help`) do not import torch; `sngan.load` does."""
    code = ("import sys, sngan, sngan.cli; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
            "sngan.load; assert 'torch' in sys.modules and callable(sngan.load); "
            "assert sngan.Generator.__module__ == 'sngan.api'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sngan.nope


def test_load_gives_a_ready_generator(run_dir):
    state = checkpoint.load(run_dir / "latest.pt")
    G = sngan.load(run_dir, device="cpu")  # a run folder means its latest.pt
    assert isinstance(G, nn.Module) and isinstance(G, sngan.Generator)
    assert G.kind == "ema" and G.config == config.from_dict(state["config"])
    assert (G.z_dim, G.z_dist, G.resolution, G.device) == (16, "normal", 32, torch.device("cpu"))
    assert not any(m.training for m in G.modules())  # eval mode: BatchNorm uses its running statistics
    for k, v in G.net.state_dict().items():
        assert torch.equal(v, state["G_ema"][k]), k
    raw = sngan.load(run_dir / "latest.pt", device="cpu", ema=False)
    assert raw.kind == "raw"
    for k, v in raw.net.state_dict().items():
        assert torch.equal(v, state["G"][k]), k
    z = torch.randn(3, 16)
    with torch.no_grad():
        x = G(z)
        assert x.shape == (3, 3, 32, 32) and torch.equal(x, G.net(z))
        assert not torch.equal(x, raw(z))
    assert "kind='ema'" in repr(G) and "z_dim=16" in repr(G)


@pytest.mark.parametrize("ema, flag", [(None, []), (False, ["--no-ema"])])
def test_sample_uint8_is_what_sngan_sample_writes(run_dir, tmp_path, capsys, ema, flag):
    out = tmp_path / "x.npz"
    code, _, err = cli(capsys, "sample", "--checkpoint", run_dir / "latest.pt", "--num", 6, "--seed", 5,
                       "--out", out, "--device", "cpu", *flag)
    assert code == 0, err
    G = sngan.load(run_dir / "latest.pt", device="cpu", ema=ema)
    images = G.sample_uint8(6, seed=5)
    assert images.dtype == np.uint8 and images.shape == (6, 32, 32, 3)
    with np.load(out) as f:
        assert np.array_equal(images, f["images"])
    assert not np.array_equal(images, G.sample_uint8(6, seed=6))


def test_sample_is_float_in_range_from_the_seeded_z(run_dir):
    G = sngan.load(run_dir, device="cpu")
    x = G.sample(5, seed=3)
    assert x.dtype == torch.float32 and x.shape == (5, 3, 32, 32) and not x.requires_grad
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
    assert torch.equal(x, G.sample(5, seed=3)) and not torch.equal(x, G.sample(5, seed=4))
    z = G.sample_z(5, seed=3)
    assert z.shape == (5, 16) and torch.equal(z, torch.randn(5, 16, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        torch.testing.assert_close(G(z), x, rtol=0, atol=1e-6)  # one batch vs the default batching
    # the float images and the uint8 ones are the same images
    assert np.array_equal(to_uint8(x).permute(0, 2, 3, 1).numpy(), G.sample_uint8(5, seed=3))
    # batches of 2 draw the same z as one batch of 5
    torch.testing.assert_close(G.sample(5, seed=3, batch_size=2), x, rtol=0, atol=1e-6)


def test_user_errors_are_one_line(run_dir, tmp_path):
    with pytest.raises(SnganError, match="not found"):
        sngan.load(tmp_path / "missing.pt")
    state = checkpoint.load(run_dir / "latest.pt")
    del state["G_ema"]
    plain = tmp_path / "plain.pt"
    checkpoint.save({k: v for k, v in state.items() if k not in ("format", "version")}, plain)
    assert sngan.load(plain, device="cpu").kind == "raw"
    with pytest.raises(UsageError, match="has no EMA generator"):
        sngan.load(plain, ema=True)
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        sngan.load(plain, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU is visible"):
            sngan.load(plain, device="cuda")
    G = sngan.load(plain, device="cpu")
    with pytest.raises(UsageError, match="at least 1"):
        G.sample(0)
    with pytest.raises(UsageError, match="batch_size must be at least 1"):
        G.sample_uint8(4, batch_size=0)
