"""Everything a training run holds (models, optimisers, data, RNG streams, EMA) and its
checkpoint dict. With several processes (`ctx.world > 1`) each holds a replica.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from sngan import config
from sngan.data import datasets
from sngan.data.batches import Batches
from sngan.errors import SnganError, UsageError
from sngan.models import networks
from sngan.parallel import distributed
from sngan.runs import checkpoint
from sngan.training.diffaug import DiffAugment
from sngan.training.ema import EMA, STANDING_BATCHES


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(z_gen: torch.Generator, aug_gen: torch.Generator) -> dict:
    _, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        # A numpy array would not load with weights_only=True: the MT19937 key travels as a tensor.
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "z": z_gen.get_state(),
        "augment": aug_gen.get_state(),
    }


def set_rng_state(state: dict, z_gen: torch.Generator, aug_gen: torch.Generator) -> None:
    py, n = state["python"], state["numpy"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    z_gen.set_state(state["z"])
    if "augment" in state:  # checkpoints from before DiffAugment have no augmentation stream
        aug_gen.set_state(state["augment"])


class DPair(nn.Module):
    """D on real and fake images (and their labels) in one call, so that DDP sees one forward per D
    update: one concatenated pass (one SN power iteration, and faster) unless D has BatchNorm,
    whose batch statistics must not mix real and fake."""

    def __init__(self, D: nn.Module, concat: bool):
        super().__init__()
        self.D, self.concat = D, concat

    def forward(self, real: torch.Tensor, fake: torch.Tensor, y_real: torch.Tensor | None = None,
                y_fake: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.concat:
            y = None if y_real is None else torch.cat([y_real, y_fake])
            out = self.D(torch.cat([real, fake]), y)
            return out[: len(real)], out[len(real):]
        return self.D(real, y_real), self.D(fake, y_fake)


class Run:
    """With several processes (`ctx.world > 1`), `train.batch_size` is the global batch: each
    process draws its own slice of every global batch of images and of z, so the processes
    together see exactly what one process with the whole batch would."""

    def __init__(self, cfg: config.Config, device: torch.device, ctx: distributed.Dist = distributed.Dist()):
        self.cfg, self.device, self.ctx = cfg, device, ctx
        self.folder: Path | None = None  # set once setup has succeeded and the folder exists
        tc = cfg.train
        if tc.batch_size % ctx.world or (tc.batch_size * cfg.optim.g_batch_mult) % ctx.world:
            raise UsageError(f"train.batch_size {tc.batch_size} must be divisible by the number of processes "
                             f"({ctx.world}): it is the global batch, split evenly across them")
        dataset = datasets.load_labelled(cfg.data) if cfg.model.conditional else datasets.load_dataset(cfg.data)
        self.classes = dataset.classes if cfg.model.conditional else ()  # recorded in checkpoints
        seed_everything(tc.seed)
        G, D = networks.build(cfg.model, cfg.data.resolution, len(self.classes))
        # The EMA copies G before any SyncBatchNorm conversion: its standing statistics are
        # computed by each process alone, on the same latents, so every replica gets the same.
        self.ema = EMA(G, tc.ema_decay, tc.ema_start) if tc.ema_decay else None
        self._ema_stats_step = -1  # the step whose weights the EMA's BatchNorm statistics belong to
        if cfg.model.sync_bn and ctx.enabled:
            if device.type != "cuda":
                raise UsageError("model.sync_bn needs CUDA GPUs (SyncBatchNorm has no CPU kernel); set it to false")
            G, D = (nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (G, D))
        self.memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
        self.G, self.D = (m.to(device, memory_format=self.memory_format) for m in (G, D))
        pair = DPair(self.D, concat=cfg.model.d_norm != "bn")
        if self.ema is not None:
            self.ema.model.to(device, memory_format=self.memory_format)
        # Forward wrappers share parameters with G and D, whose state dicts stay free of the
        # wrappers' prefixes. DDP all-reduces gradients of G (G step) and D (D steps) and
        # broadcasts rank 0's buffers (SN u, BN statistics) at each forward. In the G step D is
        # called unwrapped: its gradients are not needed there. The gradient penalty needs
        # double backward, which compiled graphs lack, so it always uses the eager D.
        self.G_fwd, self.pair_fwd, self.D_g = self.G, pair, self.D
        if ctx.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.G_fwd = DDP(self.G, device_ids=ids)
            self.pair_fwd = DDP(pair, device_ids=ids)
        if tc.compile:
            self.G_fwd, self.pair_fwd, self.D_g = (torch.compile(m) for m in (self.G_fwd, self.pair_fwd, self.D))
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.amp == "bf16")
        o = cfg.optim
        fused = {"fused": True} if device.type == "cuda" else {}  # one kernel for the whole update
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2), **fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2), **fused)
        images, labels = dataset.images, dataset.labels if self.classes else None
        if cfg.data.placement == "device":
            images, labels = images.to(device), None if labels is None else labels.to(device)
        self.batches = Batches(images, tc.batch_size // ctx.world, tc.seed, device, ctx.rank, ctx.world, labels)
        # The same z (and fake label) stream on every process; each takes its slice (see draw_z).
        self.z_gen = torch.Generator(device).manual_seed(tc.seed)
        # DiffAugment's random parameters are a stream of their own, saved in checkpoints.
        self.aug_gen = torch.Generator(device).manual_seed(tc.seed + 3)
        self.augment = DiffAugment(tc.diffaug, self.aug_gen)
        # The fixed z of the sample grids comes from its own CPU generator: the same on any device;
        # with classes, one row per class.
        fixed = torch.Generator().manual_seed(tc.seed + 1)
        self.fixed_y = networks.grid_labels(tc.sample_grid, len(self.classes), device)
        n_grid = tc.sample_grid if self.fixed_y is None else len(self.fixed_y)
        self.fixed_z = networks.sample_z(n_grid, cfg.model, "cpu", fixed).to(device)
        self.step, self.elapsed, self.skipped = 0, 0.0, 0
        self.best_fid: float | None = None
        self.best_metric: str | None = None  # best_fid's metric name: FIDs of two protocols do not compare
        # Linear lr decay runs from (step, scale) of this knot to 0 at train.steps; a resume that
        # changes train.steps moves the knot, so the learning rate never jumps.
        self.lr_knot = (0, 1.0)

    def draw_z(self, n_global: int) -> torch.Tensor:
        """This process's share of a global batch of `n_global` latent codes."""
        return distributed.rank_slice(networks.sample_z(n_global, self.cfg.model, self.device, self.z_gen), self.ctx)

    def draw_y(self, n_global: int) -> torch.Tensor | None:
        """This process's share of `n_global` uniformly random class labels for fakes (None without classes)."""
        if not self.classes:
            return None
        y = torch.randint(len(self.classes), (n_global,), device=self.device, generator=self.z_gen)
        return distributed.rank_slice(y, self.ctx)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Images as D sees them: augmented (train.diffaug), in the run's memory format."""
        return self.augment(x).contiguous(memory_format=self.memory_format)

    def state_dict(self) -> dict:
        return {
            "step": self.step, "elapsed": self.elapsed, "skipped": self.skipped,
            "best_fid": self.best_fid, "best_metric": self.best_metric,
            "config": config.to_dict(self.cfg),
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "batches": self.batches.state_dict(), "rng": rng_state(self.z_gen, self.aug_gen),
            "lr_knot": list(self.lr_knot), "classes": list(self.classes),
            **({"G_ema": self.ema_generator().state_dict()} if self.ema else {}),
        }

    def ema_generator(self) -> nn.Module:
        """The EMA generator, with BatchNorm statistics of its own weights (recomputed when stale)."""
        if self._ema_stats_step != self.step:
            n, g = self.cfg.train.batch_size, torch.Generator().manual_seed(self.cfg.train.seed + 2)
            y = networks.balanced_labels(n, len(self.classes), self.device)
            self.ema.standing_stats((networks.sample_z(n, self.cfg.model, "cpu", g).to(self.device), y)
                                    for _ in range(STANDING_BATCHES))
            self._ema_stats_step = self.step
        return self.ema.model

    def load_state_dict(self, state: dict, path: Path) -> None:
        targets = [("G", self.G), ("D", self.D), ("opt_g", self.opt_g), ("opt_d", self.opt_d)]
        if self.ema:
            if "G_ema" not in state:
                raise SnganError(f"checkpoint '{path}' has no EMA generator although its config sets "
                                 "train.ema_decay; it was not written by this version of sngan")
            targets.append(("G_ema", self.ema.model))
        for name, target in targets:
            checkpoint.load_module_state(target, state[name], name, path)
        self.batches.load_state_dict(state["batches"])
        if list(state.get("classes", [])) != list(self.classes):
            raise SnganError(f"checkpoint '{path}' was trained on classes {state.get('classes', [])}, but the "
                             f"data now has {list(self.classes)}; resume with the same data")
        set_rng_state(state["rng"], self.z_gen, self.aug_gen)
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.skipped, self.best_fid = state["skipped"], state["best_fid"]
        self.best_metric = state.get("best_metric")  # checkpoints before it have none
        self._ema_stats_step = self.step  # saved statistics are those of the saved EMA weights
        knot, saved_steps = tuple(state.get("lr_knot", (0, 1.0))), state["config"]["train"]["steps"]
        self.lr_knot = (int(knot[0]), float(knot[1]))
        if saved_steps != self.cfg.train.steps:  # train.steps changed: decay on from where it is
            self.lr_knot = (self.step, self.lr_scale(self.step, saved_steps))

    def lr_scale(self, step: int, steps: int | None = None) -> float:
        """The learning-rate multiplier before generator step `step + 1`."""
        if self.cfg.optim.lr_decay != "linear":
            return 1.0
        (s0, a0), end = self.lr_knot, steps or self.cfg.train.steps
        return a0 * (end - step) / (end - s0)

    def set_lr(self, step: int) -> float:
        """Set both optimisers' learning rates for the step after `step`; returns the multiplier."""
        scale = self.lr_scale(step)
        for opt, lr in ((self.opt_g, self.cfg.optim.lr_g), (self.opt_d, self.cfg.optim.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * scale
        return scale

