"""Collapse warnings: at each log interval, how much G's samples of the fixed z vary compared with
the data, and how far apart D's outputs on real and fake images are. When either says the run has
collapsed, the trainer prints one warning line with what to try, and records it.

GAN tools usually leave a collapse to be found hours later in the sample grids; these two numbers
are cheap (one G forward of the grid's z per log line) and see it as it happens."""

from __future__ import annotations

import torch

# The per-pixel standard deviation across samples, as a fraction of the data's. Collapsed runs
# measured here sit at 0.03-0.15 of the data's; healthy runs at 0.6-1.1 once past their first
# few hundred updates.
MIN_DIVERSITY = 0.3
# Mean D(x) - mean D(G(z)) for the hinge and standard losses. Healthy runs measured here stay
# below about 12; runs whose D had run away reached 50-300. (A Wasserstein critic's gap is its
# distance estimate, not a runaway, so it is not checked.)
MAX_GAP = 25.0
GAP_LOSSES = ("hinge", "standard")
DATA_IMAGES = 1024  # images (evenly spaced through the data set) that measure the data's spread

ADVICE = ("try model.init=pytorch, a lower optim.lr_d, or train.diffaug; the samples are in samples/, "
          "see docs/training.md 'Collapse warnings'")


def spread(images: torch.Tensor) -> float:
    """The per-pixel standard deviation across a batch of images `(N, C, H, W)`, averaged over pixels."""
    return float(images.float().std(dim=0).mean())


def data_spread(images: torch.Tensor) -> float:
    """`spread` of up to DATA_IMAGES uint8 images `(N, 3, R, R)`, evenly spaced through the set, in [-1, 1]."""
    idx = torch.linspace(0, len(images) - 1, min(len(images), DATA_IMAGES)).long()
    return spread(images[idx.to(images.device)].float() / 127.5 - 1)


class Monitor:
    """`measure(step, samples, d_real, d_fake)` at each log line returns the numbers to log
    (`diversity`: the samples' spread over the data's, `d_gap`) and a warning line ("" when there
    is nothing new). Each kind warns once when it starts, and again only after the run has clearly
    recovered (diversity back above twice its floor, the gap below half its ceiling): the numbers
    swing from line to line, and one collapse should be one warning."""

    def __init__(self, data_images: torch.Tensor, loss: str, warn_after: int):
        """`warn_after`: the first generator update that may warn (0: never); before a few hundred
        updates G may still draw near-constant images, as it does at initialisation."""
        self.reference = data_spread(data_images)
        self.check_gap = loss in GAP_LOSSES
        self.warn_after = warn_after
        self.active: set[str] = set()

    def measure(self, step: int, samples: torch.Tensor, d_real: float, d_fake: float) -> tuple[dict, str]:
        diversity = spread(samples) / max(self.reference, 1e-8)
        numbers = {"diversity": diversity, "d_gap": d_real - d_fake}
        if not self.warn_after or step < self.warn_after:
            return numbers, ""
        gap = d_real - d_fake if self.check_gap else 0.0
        new = []
        if diversity < MIN_DIVERSITY and "diversity" not in self.active:
            new.append(f"G's samples vary {diversity:.2f}x as much as the data's (below {MIN_DIVERSITY}): "
                       "most z give the same image")
        if gap > MAX_GAP and "gap" not in self.active:
            new.append(f"D's outputs have run away: mean D(x) {d_real:.1f}, D(G(z)) {d_fake:.1f} (gap above {MAX_GAP:g})")
        self.active |= {kind for kind, bad in (("diversity", diversity < MIN_DIVERSITY), ("gap", gap > MAX_GAP)) if bad}
        self.active -= {kind for kind, well in (("diversity", diversity >= 2 * MIN_DIVERSITY),
                                                ("gap", gap <= MAX_GAP / 2)) if well}
        return numbers, f"step {step}: possible collapse: {'; '.join(new)}; {ADVICE}" if new else ""
