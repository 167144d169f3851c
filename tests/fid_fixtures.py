"""Offline Inception weights for FID tests: pytorch-fid's architecture, random He-normal weights.

The real weights are a 95 MB download; tests build a stand-in with the same keys and shapes
(including the 1008-class `fc`) so that pytorch-fid and sngan load it from the torch hub cache.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
import torchvision
from pytorch_fid import inception as pfi

from sngan.fid import FID_WEIGHTS_FILE


def make_fid_weights(path: Path, seed: int, with_fc: bool = True) -> Path:
    """Save a randomly initialised FID Inception state dict to `path`; deterministic in `seed`.

    Convs are re-initialised He-normal because PyTorch's default init shrinks the signal layer
    by layer until pool3 features are ~1e-8 and every FID is ~0 (see PAPER.md).
    """
    # fid_inception_v3() always loads the downloaded weights; make that load a no-op so it only
    # builds the architecture, which stays pytorch-fid's own.
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *args, **kwargs: None), \
         mock.patch.object(torchvision.models.Inception3, "load_state_dict",
                           lambda self, state_dict, *args, **kwargs: None):
        net = pfi.fid_inception_v3()
    # Every random parameter is drawn from `g`, so the file depends on `seed` alone.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
            elif isinstance(m, torch.nn.Linear):  # fc: logits on the scale of the features
                torch.nn.init.normal_(m.weight, std=2048 ** -0.5, generator=g)
                torch.nn.init.zeros_(m.bias)
    state = net.state_dict()
    if not with_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def fid_weights_file(tmp_path_factory) -> Path:
    """A stand-in for pt_inception-2015-12-05-6726825d.pth, built once per test session."""
    return make_fid_weights(tmp_path_factory.mktemp("fid-weights") / FID_WEIGHTS_FILE, seed=0)


@pytest.fixture
def torch_home(fid_weights_file, tmp_path, monkeypatch) -> Path:
    """TORCH_HOME whose hub cache holds the test weights, and an empty SNGAN_CACHE.

    Both pytorch-fid (subprocesses included) and sngan then find the weights without network.
    """
    home = tmp_path / "torch"
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / FID_WEIGHTS_FILE).symlink_to(fid_weights_file)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("SNGAN_CACHE", str(tmp_path / "sngan-cache"))
    monkeypatch.delenv("SNGAN_INCEPTION_WEIGHTS", raising=False)
    return home
