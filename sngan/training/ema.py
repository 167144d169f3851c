"""An exponential moving average (EMA) of the generator's weights, with BatchNorm statistics of its own.

Averaging the late iterates smooths out the oscillation of adversarial training and usually lowers FID
(Yazici et al., ICLR 2019).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

STANDING_BATCHES = 16  # forward passes that estimate the EMA generator's BatchNorm statistics


class EMA:
    """`update(G, step)` after each G step moves the average towards G: `ema <- decay * ema + (1 - decay) * g`;
    for the first `start` steps it copies G instead, so the random initial weights do not linger.
    `.model` is the average, in eval mode and without gradients."""

    def __init__(self, model: nn.Module, decay: float, start: int = 0):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.start = decay, start
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in `model`'s weights after generator step `step` (1-based). No host sync."""
        params, source = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        if step <= self.start:
            torch._foreach_copy_(params, source)
        else:
            torch._foreach_lerp_(params, source, 1.0 - self.decay)

    @torch.no_grad()
    def standing_stats(self, inputs: Iterable[tuple[torch.Tensor, ...]]) -> None:
        """BigGAN's "standing statistics": G's BatchNorm statistics belong to G's weights, not to the
        average. Sets every BatchNorm's running mean and variance to the exact average of its batch
        statistics over forward passes of `inputs` (argument tuples: z, and labels for a conditional
        G) through the EMA weights in train mode, so they depend on the weights alone."""
        norms = [m for m in self.model.modules() if isinstance(m, _BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: each batch counts the same
        self.model.train()
        try:
            for args in inputs:
                self.model(*args)
        finally:
            self.model.eval()
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
