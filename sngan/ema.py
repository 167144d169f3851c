"""An exponential moving average (EMA) of the generator's weights.

After every generator update, each EMA parameter moves towards G's:
`ema <- decay * ema + (1 - decay) * g`. Averaging the late iterates smooths out the oscillation
of adversarial training and usually lowers FID (Yazici et al., ICLR 2019). Buffers (BatchNorm's
running statistics) are copied from G, not averaged. For the first `start` steps the EMA simply
copies G, so the random initial weights do not linger in the average.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """`EMA(G, decay, start)`; `update(G, step)` after each G step; `.model` is the average, in
    eval mode and without gradients."""

    def __init__(self, model: nn.Module, decay: float, start: int = 0):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.start = decay, start
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in `model`'s weights after generator step `step` (1-based). No host sync."""
        params = list(self.model.parameters())
        source = [p.detach() for p in model.parameters()]
        if step <= self.start:
            torch._foreach_copy_(params, source)
        else:
            torch._foreach_lerp_(params, source, 1.0 - self.decay)
        torch._foreach_copy_(list(self.model.buffers()), list(model.buffers()))

    def state_dict(self) -> dict:
        return self.model.state_dict()
