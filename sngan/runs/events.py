"""TensorBoard event files beside a run's metrics.jsonl, for watching curves live (`tensorboard --logdir runs`).

metrics.jsonl stays the record: the events repeat its numbers under tags (`loss/d`, `sigma/main.0`,
`fid/fid5k_cifar10-train10k`, ...) at the same steps, and add the sample grids.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

FOLDER = "tensorboard"  # inside the run folder
# metrics.jsonl key -> TensorBoard tag
TAGS = {"loss_d": "loss/d", "loss_g": "loss/g", "d_real": "d_output/real", "d_fake": "d_output/fake",
        "lr_g": "lr/g", "lr_d": "lr/d", "it_s": "speed/steps_per_s", "skipped": "train/skipped_steps",
        "diversity": "health/diversity", "d_gap": "health/d_gap"}


class Events:
    """A SummaryWriter for the run folder when `enabled` (rank 0 with `train.tensorboard`) and the
    `tensorboard` package is installed (`pip install "sngan[tensorboard]"`); otherwise every call is
    a no-op, so the training loop need not ask."""

    def __init__(self, run_dir: Path, enabled: bool, start_step: int = 0):
        self.writer = None
        if enabled and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            # A resumed run purges the events a killed run wrote after its checkpoint, so the
            # curves continue without duplicated steps.
            self.writer = SummaryWriter(str(run_dir / FOLDER), purge_step=start_step + 1 if start_step else None)

    def scalars(self, entry: dict) -> None:
        """A metrics.jsonl entry: known keys under their tags, `sigma` per layer, metrics (FID and
        intra-FID, IS) under `fid/` or `is/`, at the entry's step."""
        if self.writer is None:
            return
        step = entry["step"]
        for key, value in entry.items():
            if key == "sigma":
                for layer, sigma in value.items():
                    self.writer.add_scalar(f"sigma/{layer}", sigma, step)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                tag = TAGS.get(key) or (f"fid/{key}" if key.startswith(("fid", "intrafid")) else
                                        f"is/{key}" if key.startswith("is") else key)
                if math.isfinite(value):
                    self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """A uint8 `(3, H, W)` sample grid."""
        if self.writer is not None:
            self.writer.add_image(tag, grid, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
