"""What a run does when a loss or weight stops being finite (`train.on_nonfinite`): `stop` before
a bad state can be saved, naming the step, or `skip` the step and count it.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from sngan.errors import SnganError
from sngan.parallel import distributed
from sngan.training.state import Run


class Diverged(SnganError):
    pass


class StopOnNonFinite:
    """`stop`: the hot loop only keeps, on the device, the first step whose loss was not finite;
    `check` (at log and checkpoint steps) syncs, and raises `diverged(first bad step or None)`
    before a bad state can be saved. Every process checks at the same steps, so all agree."""

    NEVER = torch.iinfo(torch.long).max

    def __init__(self, run: Run, diverged: Callable[[int | None], Diverged]):
        self.run, self.diverged = run, diverged
        self.first_bad = torch.full((), self.NEVER, dtype=torch.long, device=run.device)

    def step(self, train_step: Callable[[], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        out = train_step()
        finite = torch.isfinite(out[0]) & torch.isfinite(out[1])
        self.first_bad = torch.minimum(self.first_bad, torch.where(finite, self.NEVER, self.run.step + 1))
        return out

    def check(self) -> None:
        bad = int(distributed.all_reduce(self.first_bad.clone(), self.run.ctx, "min"))
        weights = (p for m in (self.run.G, self.run.D) for p in m.parameters())
        if bad == self.NEVER and all(bool(torch.isfinite(p).all()) for p in weights):
            return
        raise self.diverged(bad if bad != self.NEVER else None)


class SkipNonFinite:
    """`skip`: a step whose loss is not finite is undone and counted in `run.skipped`. Knowing
    that needs the loss on the host, so this policy syncs every step."""

    def __init__(self, run: Run, diverged: Callable[[int | None], Diverged]):
        self.run = run

    def step(self, train_step: Callable[[], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...] | None:
        run = self.run
        snapshot = {k: copy.deepcopy(getattr(run, k).state_dict()) for k in ("G", "D", "opt_g", "opt_d")}
        out = train_step()
        finite = torch.isfinite(out[0]) & torch.isfinite(out[1])
        if bool(distributed.all_reduce(finite.int(), run.ctx, "min")):
            return out
        for k, state in snapshot.items():
            getattr(run, k).load_state_dict(state)
        run.skipped += 1
        return None

    def check(self) -> None:
        pass


# train.on_nonfinite -> policy; both take (run, diverged) and wrap one training step (None: undone).
NONFINITE = {"stop": StopOnNonFinite, "skip": SkipNonFinite}
