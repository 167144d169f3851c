"""TensorBoard event files beside a run's metrics.jsonl, for watching curves live.

`metrics.jsonl` stays the record; the events repeat its numbers under the same steps, grouped
into tags (`loss/d`, `sigma/main.0`, `fid/fid5k_cifar10-train10k`, ...), and the sample grids.
They are written when the `tensorboard` package is installed (`pip install "sngan[tensorboard]"`)
and `train.tensorboard` is on, by rank 0 only. A resumed run purges events after its
checkpoint's step, so the curves continue without duplicated steps.

    tensorboard --logdir runs
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

FOLDER = "tensorboard"  # inside the run folder
# metrics.jsonl key -> TensorBoard tag
TAGS = {"loss_d": "loss/d", "loss_g": "loss/g", "d_real": "d_output/real", "d_fake": "d_output/fake",
        "lr_g": "lr/g", "lr_d": "lr/d", "it_s": "speed/steps_per_s", "skipped": "train/skipped_steps"}


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class Events:
    """A SummaryWriter for the run folder, or nothing at all when it is off: every call is then a
    no-op, so the training loop need not ask."""

    def __init__(self, run_dir: Path, enabled: bool, start_step: int = 0):
        self.writer = None
        if enabled and available():
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run wrote after the checkpoint it resumes from.
            self.writer = SummaryWriter(str(run_dir / FOLDER), purge_step=start_step + 1 if start_step else None)

    def scalars(self, entry: dict) -> None:
        """A metrics.jsonl entry: known keys under their tags, `sigma` per layer, metrics (FID,
        IS) under `fid/` or `is/`, at the entry's step."""
        if self.writer is None:
            return
        step = entry["step"]
        for key, value in entry.items():
            if key == "sigma":
                for layer, sigma in value.items():
                    self.writer.add_scalar(f"sigma/{layer}", sigma, step)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                tag = TAGS.get(key) or (f"fid/{key}" if key.startswith("fid") else
                                        f"is/{key}" if key.startswith("is") else key)
                if math.isfinite(value):
                    self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """A uint8 `(3, H, W)` sample grid."""
        if self.writer is not None:
            self.writer.add_image(tag, grid, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
