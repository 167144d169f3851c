"""Shuffled batches drawn from a whole data set held as a uint8 tensor, reproducible and resumable."""

from __future__ import annotations

import torch

from sngan.errors import UsageError


class Batches:
    """Shuffled batches from uint8 images `(N, 3, R, R)` (and their labels `(N,)`).

    Every epoch is a fresh permutation derived from `seed` and the epoch number, so the state
    needed to resume is two integers. With `world > 1`, all ranks draw the same global batch
    of `batch_size * world` indices and each takes its own contiguous slice of it.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world: int = 1, labels: torch.Tensor | None = None):
        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed
        self.device, self.rank, self.world = torch.device(device), rank, world
        self.global_batch = batch_size * world
        if self.global_batch > len(images):
            raise UsageError(f"batch size {self.global_batch} is larger than the data set "
                             f"({len(images)} images); lower train.batch_size")
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.images), generator=g)  # on the CPU: the same on any device
        if self.images.device.type == "cuda":
            # From pinned memory the copy is asynchronous: the host need not wait for the GPU's
            # queue at each epoch boundary, as a copy from pageable memory would.
            return perm.pin_memory().to(self.images.device, non_blocking=True)
        return perm.to(self.images.device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's next batch as float `(B, 3, R, R)` in `[-1, 1]` on the training device, and
        its int64 labels `(B,)` there (None without labels)."""
        if self.pos + self.global_batch > len(self.images):  # drop the ragged tail of an epoch
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation(self.epoch)
        start = self.pos + self.rank * self.batch_size
        idx = self._perm[start: start + self.batch_size]
        self.pos += self.global_batch
        x = self.images[idx].to(self.device, non_blocking=True).float().div_(127.5).sub_(1.0)  # -> [-1, 1]
        if self.labels is None:
            return x, None
        return x, self.labels[idx.to(self.labels.device)].to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation(self.epoch)
