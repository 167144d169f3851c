"""`sngan export`: a file that runs with PyTorch alone and gives sngan's images for the same z."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sngan
from sngan import api, config
from sngan.errors import SnganError
from conftest import cli, tiny_config, train_run

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
def dcgan_ema(tmp_path_factory):
    # PyTorch's default initialisation: images that vary with z even in uint8
    return _train(tmp_path_factory, "dcgan", model={"init": "pytorch"},
                  train={"steps": 2, "ema_decay": 0.5, "ema_start": 1})


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

    for bad, message in ((tmp_path / "no" / "G.pt2", "output folder"), (tmp_path, "is a folder")):
        code, _, err = cli(capsys, "export", "--checkpoint", dcgan_ema, "--out", bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


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
