"""Training: one readable loop of n_dis discriminator steps per generator step.

A run lives in its own numbered folder (see `sngan.runs`); under torchrun every process trains
and only rank 0 writes to the folder.
"""

from __future__ import annotations

import random
import re
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from sngan import checkpoint, config, data, distributed, models
from sngan.ema import EMA, STANDING_BATCHES
from sngan.errors import SnganError, UsageError
from sngan.losses import LOSSES, gradient_penalty
from sngan.runs import MetricsLog, StopRequest, new_run_dir, run_lock, write_plots
from sngan.sample import save_grid, to_uint8
from sngan.spectral_norm import layer_sigmas

# Keys that may change when resuming: they affect how long and how often, not what is trained.
RESUMABLE_OVERRIDES = re.compile(r"^(train\.(steps|log_every|sample_every|checkpoint_every|keep_checkpoints|device)"
                                 r"|eval\..+)$")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("train.device is 'cuda' but no CUDA GPU is visible; use train.device=auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(z_gen: torch.Generator) -> dict:
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": np_state["state"]["pos"], "has_gauss": np_state["has_gauss"],
                  "gauss": np_state["gauss"]},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "z": z_gen.get_state(),
    }


def set_rng_state(state: dict, z_gen: torch.Generator) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32),
                         "pos": n["pos"]}, "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    z_gen.set_state(state["z"])


class DPair(nn.Module):
    """D on real and fake images in one call, so that DDP sees one forward per D update.

    One concatenated pass (one SN power iteration per D update, and faster) unless D has
    BatchNorm, whose batch statistics must not mix real and fake."""

    def __init__(self, D: nn.Module, concat: bool):
        super().__init__()
        self.D, self.concat = D, concat

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.concat:
            out = self.D(torch.cat([real, fake]))
            return out[: len(real)], out[len(real):]
        return self.D(real), self.D(fake)


class Run:
    """Everything a training run holds: config, models, optimisers, data and RNG.

    With several processes (`ctx.world > 1`), `train.batch_size` is the global batch: each
    process draws its own slice of every global batch of images and of z, so the processes
    together see exactly what one process with the whole batch would.
    """

    def __init__(self, cfg: config.Config, device: torch.device, ctx: distributed.Dist = distributed.Dist()):
        self.cfg, self.device, self.ctx = cfg, device, ctx
        self.folder: Path | None = None  # set once setup has succeeded and the folder exists
        tc = cfg.train
        if tc.batch_size % ctx.world or (tc.batch_size * cfg.optim.g_batch_mult) % ctx.world:
            raise UsageError(f"train.batch_size {tc.batch_size} must be divisible by the number of processes "
                             f"({ctx.world}): it is the global batch, split evenly across them")
        seed_everything(tc.seed)
        G, D = models.build(cfg.model, cfg.data.resolution)
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
        self.pair = DPair(self.D, concat=cfg.model.d_norm != "bn")
        if self.ema is not None:
            self.ema.model.to(device, memory_format=self.memory_format)
        # Forward wrappers share parameters with G and D, whose state dicts stay free of the
        # wrappers' prefixes. DDP all-reduces gradients of G (G step) and D (D steps) and
        # broadcasts rank 0's buffers (SN u, BN statistics) at each forward. In the G step D is
        # called unwrapped: its gradients are not needed there. The gradient penalty needs
        # double backward, which compiled graphs lack, so it always uses the eager D.
        self.G_fwd, self.pair_fwd, self.D_g = self.G, self.pair, self.D
        if ctx.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.G_fwd = DDP(self.G, device_ids=ids)
            self.pair_fwd = DDP(self.pair, device_ids=ids)
        if tc.compile:
            self.G_fwd, self.pair_fwd, self.D_g = (torch.compile(m) for m in (self.G_fwd, self.pair_fwd, self.D))
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.amp == "bf16")
        o = cfg.optim
        fused = {"fused": True} if device.type == "cuda" else {}  # one kernel for the whole update
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2), **fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2), **fused)
        images = data.load_images(cfg.data)
        images = images.to(device) if cfg.data.placement == "device" else images
        self.batches = data.Batches(images, tc.batch_size // ctx.world, tc.seed, device, ctx.rank, ctx.world)
        # The same z stream on every process; each takes its slice (see draw_z).
        self.z_gen = torch.Generator(device).manual_seed(tc.seed)
        # The fixed z of the sample grids comes from its own CPU generator: the same on any device.
        fixed = torch.Generator().manual_seed(tc.seed + 1)
        self.fixed_z = models.sample_z(tc.sample_grid, cfg.model, "cpu", fixed).to(device)
        self.step, self.elapsed, self.skipped = 0, 0.0, 0
        self.best_fid: float | None = None
        # Linear lr decay runs from (step, scale) of this knot to 0 at train.steps; a resume that
        # changes train.steps moves the knot, so the learning rate never jumps.
        self.lr_knot = (0, 1.0)

    def draw_z(self, n_global: int) -> torch.Tensor:
        """This process's share of a global batch of `n_global` latent codes."""
        return distributed.rank_slice(models.sample_z(n_global, self.cfg.model, self.device, self.z_gen), self.ctx)

    def state_dict(self) -> dict:
        return {
            "step": self.step, "elapsed": self.elapsed, "skipped": self.skipped, "best_fid": self.best_fid,
            "config": config.to_dict(self.cfg),
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "batches": self.batches.state_dict(), "rng": rng_state(self.z_gen),
            "lr_knot": list(self.lr_knot),
            **({"G_ema": self.ema_generator().state_dict()} if self.ema else {}),
        }

    def ema_generator(self) -> nn.Module:
        """The EMA generator, with BatchNorm statistics of its own weights (recomputed when stale)."""
        if self._ema_stats_step != self.step:
            g = torch.Generator().manual_seed(self.cfg.train.seed + 2)
            n = self.cfg.train.batch_size
            self.ema.standing_stats(models.sample_z(n, self.cfg.model, "cpu", g).to(self.device)
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
        set_rng_state(state["rng"], self.z_gen)
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.skipped, self.best_fid = state["skipped"], state["best_fid"]
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


def train_step(run: Run, loss) -> tuple[torch.Tensor, ...]:
    """One generator update after n_dis discriminator updates. Returns device tensors
    (loss_d, loss_g, mean D(x), mean D(G(z))); nothing here waits for the device."""
    cfg = run.cfg
    gp_weight = cfg.loss.gp_weight if cfg.loss.name == "wasserstein" else 0.0
    for _ in range(cfg.optim.n_dis):
        real = run.batches.next().contiguous(memory_format=run.memory_format)
        z = run.draw_z(cfg.train.batch_size)
        with torch.no_grad(), run.autocast:
            fake = run.G_fwd(z)
        with run.autocast:
            d_real, d_fake = run.pair_fwd(real, fake)
            loss_d = loss.d(d_real.float(), d_fake.float())
        if gp_weight:
            loss_d = loss_d + gp_weight * gradient_penalty(run.D, real, fake.float(), run.z_gen)
        run.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        run.opt_d.step()
        if cfg.loss.clip:  # the original WGAN's weight clipping
            with torch.no_grad():
                for p in run.D.parameters():
                    p.clamp_(-cfg.loss.clip, cfg.loss.clip)

    z = run.draw_z(cfg.train.batch_size * cfg.optim.g_batch_mult)
    run.D.requires_grad_(False)  # G's step needs gradients w.r.t. D's input only
    with run.autocast:
        loss_g = loss.g(run.D_g(run.G_fwd(z)).float())
    run.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    run.opt_g.step()
    run.D.requires_grad_(True)
    return loss_d.detach(), loss_g.detach(), d_real.detach().float().mean(), d_fake.detach().float().mean()


def weights_finite(*modules: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())


class Diverged(SnganError):
    pass


def train(cfg: config.Config, run_dir: Path | None = None, resume: dict | None = None,
          resume_path: Path | None = None, progress: bool = True) -> dict:
    """Train a new run (in a new numbered folder under cfg.out.root when `run_dir` is None) or
    continue one from the checkpoint dict `resume`. Returns a summary dict (step, stopped_by, ...).

    Everything that can fail on bad input (device, data, FID reference) is set up before the
    run folder is created, so a mistake leaves no empty run folder behind. Under torchrun every
    process runs this; only rank 0 touches the run folder.
    """
    ctx, device = distributed.setup(cfg.train.device)
    ok = False
    try:
        if device.type == "cpu":
            # The first steps produce denormal floats that make CPU kernels ~10x slower for a while.
            torch.set_flush_denormal(True)
        with algorithm_flags(cfg.train.deterministic):
            summary = _setup_and_train(cfg, ctx, device, run_dir, resume, resume_path, progress)
        ok = True
        return summary
    finally:
        distributed.cleanup(ctx, ok)


@contextmanager
def algorithm_flags(deterministic: bool):
    """Deterministic algorithms (and no cuDNN autotuning) for this run only: the process's
    settings come back afterwards, so runs in one process (a sweep) do not inherit them."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


def _setup_and_train(cfg: config.Config, ctx: distributed.Dist, device: torch.device, run_dir: Path | None,
                     resume: dict | None, resume_path: Path | None, progress: bool) -> dict:
    """Build the run (and the FID tracker) before its folder exists, then train in the folder."""
    run = Run(cfg, device, ctx)
    tracker = None
    if cfg.eval.every:
        from sngan.evaluate import FIDTracker
        tracker = FIDTracker(cfg, device, ctx)  # loads the detector and reference statistics up front
    if resume is not None:
        run.load_state_dict(resume, resume_path)
    if run_dir is None:
        run_dir = new_run_dir(cfg.out.root, cfg.out.name) if ctx.main else None
        run_dir = distributed.broadcast_object(run_dir, ctx)
        if ctx.main:
            tqdm.write(f"run folder: {run_dir}", file=sys.stderr)
    run.folder = run_dir
    if not ctx.main:
        return _train(run, run_dir, tracker, resume is not None, progress=False)
    with run_lock(run_dir):
        return _train(run, run_dir, tracker, resume is not None, progress)


def _resolved_config_text(cfg: config.Config, ctx: distributed.Dist) -> bytes:
    text = config.dump(cfg)
    if ctx.enabled:
        text = (f"# {ctx.world} processes: train.batch_size {cfg.train.batch_size} is the global batch, "
                f"{cfg.train.batch_size // ctx.world} per process\n") + text
    return text.encode()


def _train(run: Run, run_dir: Path, tracker, resumed: bool, progress: bool) -> dict:
    cfg, ctx = run.cfg, run.ctx
    log = MetricsLog(run_dir / "metrics.jsonl")
    if ctx.main:
        if resumed:
            dropped = log.truncate_after(run.step)
            if dropped:
                tqdm.write(f"dropped {dropped} metrics entries logged after step {run.step} by the interrupted run",
                           file=sys.stderr)
        # Rewritten on resume too, where train.steps or the intervals may have been overridden.
        text = _resolved_config_text(cfg, ctx)
        checkpoint.atomic_write(run_dir / "config.yaml", lambda f: f.write(text), "config")
        (run_dir / "samples").mkdir(exist_ok=True)

    loss = LOSSES[cfg.loss.name]
    tc, device = cfg.train, run.device
    acc = torch.zeros(4, device=device)
    acc_n = 0
    never = torch.iinfo(torch.long).max
    first_bad = torch.full((), never, dtype=torch.long, device=device)  # first step with a non-finite loss
    stop = StopRequest()
    stopped_by = None
    saved_step = run.step if resumed else None
    t_last, step_last = time.perf_counter(), run.step
    bar = tqdm(total=tc.steps, initial=run.step, desc=run_dir.name, unit="step", dynamic_ncols=True,
               disable=not progress, file=sys.stderr)

    def save_checkpoint(periodic: bool) -> None:
        nonlocal saved_step
        # Every process hashes its replica; identical hashes prove DDP kept weights and
        # buffers (SN u, BN statistics) in sync. A collective: all processes call this.
        distributed.sync_bn_statistics(ctx, run.G, run.D)
        prints = distributed.gather_objects(distributed.fingerprint(run.G, run.D), ctx)
        if len(set(prints)) > 1:
            raise SnganError(f"processes out of sync at step {run.step}: their weights or buffers differ")
        saved_step = run.step
        if not ctx.main:
            return
        state = {**run.state_dict(), "world_size": ctx.world, "rank_fingerprints": prints}
        path = checkpoint.save(state, run_dir / f"ckpt-{run.step:07d}.pt")
        checkpoint.link_latest(path, run_dir / "latest.pt")
        if not periodic:  # an end-of-run or interrupt checkpoint: keep only as latest
            path.unlink()
        checkpoint.prune(run_dir, tc.keep_checkpoints)
        write_plots(run_dir, log.read())

    def check_finite() -> None:
        # Every process calls this at the same steps, so all of them agree on the first bad step.
        bad = int(distributed.all_reduce(first_bad.clone(), ctx, "min"))
        if bad == never and weights_finite(run.G, run.D):
            return
        where = f"step {bad}" if bad != never else f"or before step {run.step}"
        if ctx.main:
            log.write({"step": run.step, "diverged": True, "first_nonfinite_step": bad if bad != never else -1})
        keep = (f"the last good checkpoint is latest.pt (step {saved_step})" if saved_step is not None
                else "no checkpoint was written yet")
        raise Diverged(f"training diverged: non-finite loss or weights at {where}; {keep}; "
                       "lower the learning rates, or set train.on_nonfinite=skip to skip such steps")

    def agree_to_stop() -> bool:
        """Single process: stop at once on a signal. Several: all must stop at the same step,
        so they agree at log intervals (one tiny all-reduce) and keep the hot loop sync-free."""
        if not ctx.enabled:
            return stop.signum is not None
        flag = torch.tensor([0 if stop.signum is None else stop.signum], device=device)
        return int(distributed.all_reduce(flag, ctx, "max")) > 0

    with stop.installed():
        try:
            while run.step < tc.steps:
                step = run.step + 1
                lr_scale = run.set_lr(run.step)
                t0 = time.perf_counter()
                snapshot = _snapshot(run) if tc.on_nonfinite == "skip" else None
                out = train_step(run, loss)
                finite = torch.isfinite(out[0]) & torch.isfinite(out[1])
                if snapshot is not None:  # this policy syncs every step, by choice
                    finite = distributed.all_reduce(finite.int(), ctx, "min").bool()
                if snapshot is not None and not bool(finite):
                    _restore(run, snapshot)
                    run.skipped += 1
                else:
                    first_bad = torch.minimum(first_bad, torch.where(finite, never, step))
                    acc += torch.stack(out)
                    acc_n += 1
                    if run.ema is not None:
                        run.ema.update(run.G, step)
                run.step = step
                run.elapsed += time.perf_counter() - t0
                bar.update(1)

                log_now = step % tc.log_every == 0 or step == tc.steps
                if log_now:
                    if tc.on_nonfinite == "stop":
                        check_finite()
                    distributed.all_reduce(acc, ctx)
                    now = time.perf_counter()
                    means = (acc / max(acc_n * ctx.world, 1)).tolist()
                    entry = {"step": step, "loss_d": means[0], "loss_g": means[1], "d_real": means[2],
                             "d_fake": means[3], "lr_g": cfg.optim.lr_g * lr_scale,
                             "lr_d": cfg.optim.lr_d * lr_scale, "it_s": (step - step_last) / (now - t_last),
                             "time": round(run.elapsed, 3), "skipped": run.skipped,
                             "sigma": layer_sigmas(run.D)}
                    if ctx.main:
                        log.write(entry)
                    bar.set_postfix(loss_d=f"{means[0]:.3f}", loss_g=f"{means[1]:.3f}")
                    acc.zero_()
                    acc_n, t_last, step_last = 0, now, step
                if ctx.main and (step % tc.sample_every == 0 or step == tc.steps):
                    write_sample_grid(run)
                if tracker is not None and (step % cfg.eval.every == 0 or step == tc.steps):
                    result = tracker.evaluate(run.G)  # every process generates and embeds a share
                    headline = tracker.metric
                    if run.ema is not None:  # logged after the raw one: the run's headline FID
                        result.update(tracker.evaluate(run.ema_generator(), suffix="_ema"))
                        headline += "_ema"
                    if ctx.main:
                        log.write({"step": step, **result})
                        bar.write(f"step {step}: " + ", ".join(f"{k} = {v:.3f}" for k, v in result.items()
                                                              if isinstance(v, float)), file=sys.stderr)
                        if run.best_fid is None or result[headline] < run.best_fid:
                            run.best_fid = result[headline]
                            checkpoint.save(run.state_dict(), run_dir / "best.pt")
                if step % tc.checkpoint_every == 0:
                    if tc.on_nonfinite == "stop":
                        check_finite()
                    save_checkpoint(periodic=True)
                if (log_now or not ctx.enabled) and agree_to_stop():
                    stopped_by = stop.signum or signal.SIGTERM  # a peer's signal stops this one too
                    break
            if tc.on_nonfinite == "stop":
                check_finite()
            if saved_step != run.step:
                save_checkpoint(periodic=False)  # which also redraws the plots
        finally:
            bar.close()
    return {"step": run.step, "steps": tc.steps, "stopped_by": stopped_by, "run_dir": str(run_dir),
            "skipped": run.skipped, "best_fid": run.best_fid}


def write_sample_grid(run: Run) -> None:
    """`samples/step-N.png` from G and, with an EMA, `samples/ema-step-N.png` from it; same z."""
    run.G.eval()
    with torch.no_grad():
        images = to_uint8(run.G(run.fixed_z))
        save_grid(images, run.folder / "samples" / f"step-{run.step:07d}.png")
        if run.ema is not None:
            images = to_uint8(run.ema_generator()(run.fixed_z))
            save_grid(images, run.folder / "samples" / f"ema-step-{run.step:07d}.png")
    run.G.train()


def _snapshot(run: Run) -> dict:
    """Copies of everything a step changes, to undo a non-finite step (train.on_nonfinite=skip)."""
    import copy
    return {k: copy.deepcopy(getattr(run, k).state_dict()) for k in ("G", "D", "opt_g", "opt_d")}


def _restore(run: Run, snap: dict) -> None:
    for k, state in snap.items():
        getattr(run, k).load_state_dict(state)
