"""The Python API: `sngan.load` gives a ready generator whose samples are `sngan sample`'s, and
`sngan export` writes it as a file that runs with PyTorch alone and gives sngan's images for the
same z."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import sngan
from sngan import api, config
from sngan.errors import SnganError, UsageError
from sngan.models.sample import to_uint8
from sngan.runs import checkpoint
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


# ---------------------------------------------------------------------------------------------
# sngan export

# What a user without sngan runs (docs/api.md): load the program and its metadata, draw z as
# the metadata says, generate. `-I -S` below keep sngan off sys.path; only torch's
# site-packages is added, without processing its .pth files (where an editable sngan hides).
WITHOUT_SNGAN = """
import json, os, sys
sys.path.append(sys.argv[1])
try:
    import sngan
except ImportError:
    pass
else:
    raise SystemExit("sngan is importable here: " + sngan.__file__)
import torch
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # the parent's count (conftest), for equal rounding
path, n, seed, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
extra = {"sngan.json": ""}
G = torch.export.load(path, extra_files=extra).module()
meta = json.loads(extra["sngan.json"])
g = torch.Generator().manual_seed(seed)
if meta["z_dist"] == "normal":
    z = torch.randn(n, meta["z_dim"], generator=g)
else:
    z = torch.rand(n, meta["z_dim"], generator=g) * 2 - 1
with torch.no_grad():
    x, x1 = G(z), G(z[:1])
images = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
torch.save({"z": z, "x": x, "x1": x1, "images": images, "meta": json.dumps(meta)}, out)
"""


def _train(tmp_path_factory, name, **sections):
    tmp = tmp_path_factory.mktemp(name)
    folder, _ = train_run(tiny_config(tmp, **sections), tmp)
    return folder


@pytest.fixture(scope="module")
def dcgan_ema(run_dir):
    """The API tests' run: a standard CNN with an EMA generator, PyTorch's initialisation."""
    return run_dir


@pytest.fixture(scope="module")
def resnet_uniform(tmp_path_factory):
    return _train(tmp_path_factory, "resnet", model={"arch": "resnet", "z_dist": "uniform", "init": "pytorch"},
                  train={"steps": 2})


def _metadata(path: Path) -> dict:
    extra = {api.EXPORT_METADATA: ""}
    torch.export.load(str(path), extra_files=extra)
    return json.loads(extra[api.EXPORT_METADATA])


@pytest.mark.parametrize("run, flags, kind, z_dist", [("dcgan_ema", [], "ema", "normal"),
                                                      ("resnet_uniform", ["--no-ema"], "raw", "uniform")])
def test_exported_generator_runs_without_sngan(request, tmp_path, capsys, run, flags, kind, z_dist):
    run_dir = request.getfixturevalue(run)
    out = tmp_path / "generator.pt2"
    code, _, err = cli(capsys, "export", "--checkpoint", run_dir, "--out", out, "--device", "cpu", *flags)
    assert code == 0, err
    assert f"wrote {out}" in err

    result = tmp_path / "result.pt"
    torch_site = str(Path(torch.__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", WITHOUT_SNGAN, torch_site, str(out), "5", "7",
                           str(result)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(result, weights_only=True)

    G = sngan.load(run_dir, device="cpu", ema=kind == "ema")
    meta = json.loads(got["meta"])
    assert meta["format"] == api.EXPORT_FORMAT and meta["kind"] == kind
    assert (meta["z_dim"], meta["z_dist"], meta["resolution"]) == (16, z_dist, 32)
    assert config.from_dict(meta["config"]) == G.config
    # the same z, the same images: float outputs bit for bit, and the documented uint8 recipe
    # gives exactly `sngan sample --seed 7`'s images
    assert torch.equal(got["z"], G.sample_z(5, seed=7))
    assert torch.equal(got["x"], G.sample(5, seed=7))
    assert np.array_equal(got["images"].numpy(), G.sample_uint8(5, seed=7))
    assert not torch.equal(got["images"][0], got["images"][1])
    with torch.no_grad():  # any batch size, here 1 (the program was exported with a batch of 2)
        assert got["x1"].shape == (1, 3, 32, 32) and torch.equal(got["x1"], G(got["z"][:1]))


def test_existing_output_needs_force(dcgan_ema, tmp_path, capsys):
    out = tmp_path / "G.pt2"
    assert cli(capsys, "export", "--checkpoint", dcgan_ema / "latest.pt", "--out", out)[0] == 0
    before = out.read_bytes()
    code, _, err = cli(capsys, "export", "--checkpoint", dcgan_ema, "--out", out, "--no-ema")
    assert code == 2 and err.strip() == f"error: output '{out}' already exists; choose another path or pass --force"
    assert out.read_bytes() == before and _metadata(out)["kind"] == "ema"
    assert cli(capsys, "export", "--checkpoint", dcgan_ema, "--out", out, "--no-ema", "--force")[0] == 0
    assert _metadata(out)["kind"] == "raw"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G.pt2"]  # no temporary files left

    for bad, message in ((out / "G.pt2", "is a file, not a folder"), (tmp_path, "is a folder")):
        code, _, err = cli(capsys, "export", "--checkpoint", dcgan_ema, "--out", bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_an_exported_generator_given_as_a_checkpoint_says_what_it_is(dcgan_ema, tmp_path, capsys):
    out = tmp_path / "G.pt2"
    assert cli(capsys, "export", "--checkpoint", dcgan_ema / "latest.pt", "--out", out)[0] == 0
    expected = (f"error: '{out}' is an exported generator (sngan export), not a checkpoint: it is for running with "
                f"PyTorch alone (torch.export.load, see docs/api.md); give the checkpoint it was exported from "
                f"({dcgan_ema / 'latest.pt'})")
    for command in (["sample", "--out", tmp_path / "x.png"], ["export", "--out", tmp_path / "again.pt2"]):
        code, _, err = cli(capsys, command[0], "--checkpoint", out, *command[1:])
        assert code == 1 and err.strip() == expected
    code, _, err = cli(capsys, "train", "--resume", out)
    assert code == 1 and err.strip() == expected
    # a torch.export program that sngan did not write
    torch.export.save(torch.export.export(nn.Linear(2, 2), (torch.randn(2, 2),)), tmp_path / "other.pt2")
    with pytest.raises(SnganError, match="other.pt2' is a torch.export program, not a checkpoint: .* a run folder"):
        checkpoint.load(tmp_path / "other.pt2")


def test_a_failed_write_keeps_the_previous_file(dcgan_ema, tmp_path, monkeypatch):
    out = tmp_path / "G.pt2"
    out.write_bytes(b"the previous export")

    def full_disk(program, f, **kwargs):
        f.write(b"half a program")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.export, "save", full_disk)
    with pytest.raises(SnganError, match="cannot write exported generator .*No space left on device"):
        sngan.load(dcgan_ema, device="cpu").export(out, force=True)
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G.pt2"]
