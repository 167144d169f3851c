"""Offline Inception weights for FID tests: pytorch-fid's architecture, random He-normal weights.

The real weights are a 95 MB download; tests build a stand-in with the same keys and shapes
(including the 1008-class `fc`) so that pytorch-fid and sngan load it from the torch hub cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sngan.fid import FID_WEIGHTS_FILE, random_weights


def make_fid_weights(path: Path, seed: int, with_fc: bool = True) -> Path:
    """A randomly initialised FID Inception state dict at `path`, deterministic in `seed`."""
    return random_weights(path, seed, with_fc)


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
