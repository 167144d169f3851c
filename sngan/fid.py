"""Temporary: the names `sngan.bench` still takes from `sngan.fid`. New code imports
`sngan.detector` (weights, network, features), `sngan.metrics` (statistics, distance, IS) and
`sngan.fid_stats` (statistics files, image sets, reference statistics).

Delete this module once bench imports those. Until then two things keep bench as it was:
- bench times eval-fid's phases by replacing `fid.extract` and `fid.frechet_distance` for a
  while (`mock.patch.object`); evaluate calls them on their home modules, so a replacement
  made here is made there too.
- `random_weights`, for `sngan bench --inception-weights random` (the tests' copy, its future
  only home, is in tests/fid_fixtures.py).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

from sngan import detector, metrics
from sngan.detector import (_SHA256_MEMO, FID_WEIGHTS_FILE, WEIGHTS_ENV, extract,  # noqa: F401
                            hub_weights_path, load_detector, resolve_weights)
from sngan.fid_stats import save_stats  # noqa: F401
from sngan.metrics import frechet_distance, statistics  # noqa: F401


def random_weights(path: str | Path, seed: int = 0, with_fc: bool = True) -> Path:
    """Save pytorch-fid's FID Inception with random weights to `path`; deterministic in `seed`.

    For offline benchmarks: the architecture, and so every forward pass's cost, is the real one,
    but FIDs made with it compare with nothing published. He-normal convs (PyTorch's default
    init shrinks pool3 features to ~1e-8), random batch-norm statistics and affine parameters.
    """
    net = detector.fid_inception()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
            elif isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=2048 ** -0.5, generator=g)
                torch.nn.init.zeros_(m.bias)
    state = net.state_dict()
    if not with_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(state, path)
    return Path(path)


_HOMES = {"extract": detector, "frechet_distance": metrics}


class _ForwardingModule(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name in _HOMES:
            setattr(_HOMES[name], name, value)


sys.modules[__name__].__class__ = _ForwardingModule
