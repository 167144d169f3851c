"""Training: one readable loop of n_dis discriminator steps per generator step. A run lives in its own
numbered folder (`sngan.runs.run_folder`); under torchrun every process trains, only rank 0 writes to it."""

from __future__ import annotations

import signal
import sys
import time
from contextlib import ExitStack, contextmanager
from fnmatch import fnmatchcase
from pathlib import Path

import torch
from tqdm import tqdm

from sngan import config
from sngan.errors import SnganError
from sngan.models.sample import save_grid, to_uint8
from sngan.models.spectral_norm import layer_sigmas
from sngan.parallel import distributed
from sngan.runs import checkpoint, run_folder
from sngan.runs.events import Events
from sngan.training.health import Monitor
from sngan.training.losses import Objective
from sngan.training.nonfinite import NONFINITE, Diverged
from sngan.training.state import Run

# Keys (or patterns) that may change when resuming: they affect how long and how often, not what is trained.
RESUMABLE = ("train.steps", "train.log_every", "train.sample_every", "train.checkpoint_every",
             "train.keep_checkpoints", "train.device", "train.tensorboard", "eval.*")


def resumable(key: str) -> bool:
    """Whether the config key `key` (dotted) may change when a run is resumed."""
    return any(fnmatchcase(key, pattern) for pattern in RESUMABLE)


def train_step(run: Run, objective: Objective) -> tuple[torch.Tensor, ...]:
    """One generator update after n_dis discriminator updates. Returns device tensors
    (loss_d, loss_g, mean D(x), mean D(G(z))); nothing here waits for the device.

    D sees every image through `run.prepare` (DiffAugment when on); a conditional run's fakes get
    uniformly random labels, its reals their own."""
    cfg = run.cfg
    for _ in range(cfg.optim.n_dis):
        real, y_real = run.batches.next()
        z, y_fake = run.draw_z(cfg.train.batch_size), run.draw_y(cfg.train.batch_size)
        with torch.no_grad(), run.autocast:
            fake = run.G_fwd(z, y_fake)
        real, fake = run.prepare(real), run.prepare(fake)
        with run.autocast:
            d_real, d_fake = run.pair_fwd(real, fake, y_real, y_fake)
        loss_d = objective.d(lambda x: run.D(x, y_real), real, fake.float(), d_real.float(), d_fake.float(),
                             run.z_gen)
        run.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        run.opt_d.step()
        objective.after_d_step(run.D)

    n_g = cfg.train.batch_size * cfg.optim.g_batch_mult
    z, y = run.draw_z(n_g), run.draw_y(n_g)
    run.D.requires_grad_(False)  # G's step needs gradients w.r.t. D's input only
    with run.autocast:
        loss_g = objective.g(run.D_g(run.prepare(run.G_fwd(z, y)), y).float())
    run.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    run.opt_g.step()
    run.D.requires_grad_(True)
    return loss_d.detach(), loss_g.detach(), d_real.detach().float().mean(), d_fake.detach().float().mean()


def train(cfg: config.Config, run_dir: Path | None = None, resume: dict | None = None,
          resume_path: Path | None = None, progress: bool = True) -> dict:
    """Train a new run (in a new numbered folder under cfg.out.root when `run_dir` is None) or
    continue one from the checkpoint dict `resume`; returns a summary dict (step, stopped_by, ...).
    An existing `run_dir` is locked before anything else; all that can fail on bad input (device, data,
    FID reference) is set up before a new run folder is created, so a mistake leaves none behind."""
    ctx, device = distributed.setup(cfg.train.device)
    ok = False
    try:
        with algorithm_flags(cfg.train.deterministic, device), ExitStack() as held:
            if run_dir is not None and ctx.main:  # a folder in use is refused before any work or message
                held.enter_context(run_folder.run_lock(run_dir))
                if resume is not None:
                    tqdm.write(f"resuming {run_dir} from step {resume['step']} ({resume_path.name})", file=sys.stderr)
            run = Run(cfg, device, ctx)
            tracker = None
            if cfg.eval.every:
                from sngan.metrics.evaluate import FIDTracker  # lazy: the detector stack is heavy
                tracker = FIDTracker(cfg, device, ctx, run.classes)  # loads the detector and reference now
            if resume is not None:
                run.load_state_dict(resume, resume_path)
            run.folder = run_dir or distributed.broadcast_object(
                run_folder.new_run_dir(cfg.out.root, cfg.out.name) if ctx.main else None, ctx)
            if run_dir is None and ctx.main:
                held.enter_context(run_folder.run_lock(run.folder))
                tqdm.write(f"run folder: {run.folder}", file=sys.stderr)
            summary = _loop(run, tracker, resume is not None, progress and ctx.main)
        ok = True
        return summary
    finally:
        run = tracker = None  # free the models (and DDP's reducer) while the process group is still up
        distributed.cleanup(ctx, ok)


def _due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


def _loop(run: Run, tracker, resumed: bool, progress: bool) -> dict:
    cfg, tc, ctx = run.cfg, run.cfg.train, run.ctx
    objective = Objective.from_config(cfg.loss)
    book = Book(run, resumed)
    guard = NONFINITE[tc.on_nonfinite](run, book.diverged)
    stopped_by = None
    bar = tqdm(total=tc.steps, initial=run.step, desc=run.folder.name, unit="step", dynamic_ncols=True,
               disable=not progress, file=sys.stderr)
    with book.stop.installed():
        try:
            while run.step < tc.steps:
                lr_scale = run.set_lr(run.step)
                t0 = time.perf_counter()
                out = guard.step(lambda: train_step(run, objective))  # None: a non-finite step, undone
                run.step += 1
                if out is not None:
                    book.accumulate(out)
                    if run.ema is not None:
                        run.ema.update(run.G, run.step)
                run.elapsed += time.perf_counter() - t0
                bar.update(1)

                log_now = _due(run.step, tc.log_every, tc.steps)
                if log_now:
                    guard.check()
                    bar.set_postfix(book.log(lr_scale))
                if ctx.main and _due(run.step, tc.sample_every, tc.steps):
                    write_sample_grid(run, book.events)
                if tracker is not None and _due(run.step, cfg.eval.every, tc.steps):
                    book.evaluate(tracker)
                if run.step % tc.checkpoint_every == 0:
                    guard.check()
                    book.checkpoint(periodic=True)
                if (log_now or not ctx.enabled) and book.stop_agreed():
                    stopped_by = book.stop.signum or signal.SIGTERM  # a peer's signal stops this one too
                    break
            guard.check()
            if book.saved_step != run.step:
                book.checkpoint(periodic=False)  # which also redraws the plots
        finally:
            bar.close()
            book.events.close()
    return {"step": run.step, "steps": tc.steps, "stopped_by": stopped_by, "run_dir": str(run.folder),
            "skipped": run.skipped, "best_fid": run.best_fid, "best_metric": run.best_metric}


class Book:
    """The run's records: the metrics log, checkpoints, the best FID, and the stop request. Under
    torchrun every process keeps one and calls the collectives (checkpoint fingerprints, loss sums,
    stop agreement) at the same steps; only rank 0 writes to the folder."""

    def __init__(self, run: Run, resumed: bool):
        self.run, self.ctx = run, run.ctx
        self.log_file = run_folder.MetricsLog(run.folder / run_folder.METRICS)
        self.stop = run_folder.StopRequest()
        self.saved_step = run.step if resumed else None  # the step of the newest checkpoint
        self.sums = torch.zeros(4, device=run.device)  # loss_d, loss_g, D(x), D(G(z)) since the last line
        self.count, self.t_last, self.step_last = 0, time.perf_counter(), run.step
        if self.ctx.main:
            text = config.dump(run.cfg)
            if self.ctx.enabled:
                text = (f"# {self.ctx.world} processes: train.batch_size {run.cfg.train.batch_size} is the global "
                        f"batch, {run.cfg.train.batch_size // self.ctx.world} per process\n") + text
            run_folder.prepare(run.folder, text.encode(), truncate_after=run.step if resumed else None)
        self.events = Events(run.folder, run.cfg.train.tensorboard and self.ctx.main, run.step if resumed else 0)
        self.monitor = Monitor(run.batches.images, run.cfg.loss.name, run.cfg.train.collapse_warning)

    def accumulate(self, out: tuple[torch.Tensor, ...]) -> None:
        self.sums += torch.stack(out)
        self.count += 1

    def log(self, lr_scale: float) -> dict:
        """Write a metrics line (the only place the loop waits for the device); returns the bar's postfix."""
        run, cfg = self.run, self.run.cfg
        distributed.all_reduce(self.sums, self.ctx)
        now = time.perf_counter()
        means = (self.sums / max(self.count * self.ctx.world, 1)).tolist()
        if self.ctx.main:
            entry = {
                "step": run.step, "loss_d": means[0], "loss_g": means[1], "d_real": means[2], "d_fake": means[3],
                "lr_g": cfg.optim.lr_g * lr_scale, "lr_d": cfg.optim.lr_d * lr_scale,
                "it_s": (run.step - self.step_last) / (now - self.t_last), "time": round(run.elapsed, 3),
                "skipped": run.skipped, "sigma": layer_sigmas(run.D)}
            health, warning = self.monitor.measure(run.step, grid_samples(run, run.G), means[2], means[3])
            entry.update(health)
            self.log_file.write(entry)
            self.events.scalars(entry)
            if warning:
                tqdm.write(f"warning: {warning}", file=sys.stderr)
                self.log_file.write({"step": run.step, "warning": warning})
                self.events.text("warnings", warning, run.step)
        self.sums.zero_()
        self.count, self.t_last, self.step_last = 0, now, run.step
        return {"loss_d": f"{means[0]:.3f}", "loss_g": f"{means[1]:.3f}"}

    def evaluate(self, tracker) -> None:
        """FID (and IS) of G and, when kept, of the EMA generator, which is then the headline:
        it picks best.pt. A collective: every process generates and embeds a share."""
        run = self.run
        result, headline = tracker.evaluate(run.G), tracker.metric
        if run.ema is not None:
            result.update(tracker.evaluate(run.ema_generator(), suffix="_ema"))
            headline += "_ema"
        if not self.ctx.main:
            return
        self.log_file.write({"step": run.step, **result, "headline": headline, **tracker.protocol})
        self.events.scalars({"step": run.step, **result})
        tqdm.write(f"step {run.step}: " + ", ".join(f"{k} = {v:.3f}" for k, v in result.items()
                                                   if isinstance(v, float)), file=sys.stderr)
        # A resume that changed eval.* (another protocol) starts the best over: its FIDs do not compare.
        if run.best_fid is None or run.best_metric not in (None, headline) or result[headline] < run.best_fid:
            run.best_fid, run.best_metric = result[headline], headline
            checkpoint.save(run.state_dict(), run.folder / run_folder.BEST)

    def checkpoint(self, periodic: bool) -> None:
        """A checkpoint at this step; an end-of-run or interrupt one is kept only as latest.pt.

        Every process hashes its replica first; identical hashes prove DDP kept weights and
        buffers (SN u, BN statistics) in sync. A collective: all processes call this."""
        run = self.run
        distributed.sync_bn_statistics(self.ctx, run.G, run.D)
        prints = distributed.gather_objects(distributed.fingerprint(run.G, run.D), self.ctx)
        if len(set(prints)) > 1:
            raise SnganError(f"processes out of sync at step {run.step}: their weights or buffers differ")
        self.saved_step = run.step
        if not self.ctx.main:
            return
        state = {**run.state_dict(), "world_size": self.ctx.world, "rank_fingerprints": prints}
        path = checkpoint.save(state, run.folder / run_folder.checkpoint_name(run.step))
        checkpoint.link_latest(path, run.folder / run_folder.LATEST)
        if not periodic:
            path.unlink()
        checkpoint.prune(run.folder, run.cfg.train.keep_checkpoints)
        run_folder.write_plots(run.folder, self.log_file.read())

    def diverged(self, first_bad: int | None) -> Diverged:
        """Record the divergence in the log and say where the last good checkpoint is."""
        where = f"step {first_bad}" if first_bad is not None else f"or before step {self.run.step}"
        if self.ctx.main:
            self.log_file.write({"step": self.run.step, "diverged": True,
                                 "first_nonfinite_step": first_bad if first_bad is not None else -1})
        keep = (f"the last good checkpoint is latest.pt (step {self.saved_step})" if self.saved_step is not None
                else "no checkpoint was written yet")
        return Diverged(f"training diverged: non-finite loss or weights at {where}; {keep}; "
                        "lower the learning rates, or set train.on_nonfinite=skip to skip such steps")

    def stop_agreed(self) -> bool:
        """Single process: stop at once on a signal. Several: all must stop at the same step, so
        they agree at log intervals (one tiny all-reduce) and keep the hot loop sync-free."""
        if not self.ctx.enabled:
            return self.stop.signum is not None
        flag = torch.tensor([self.stop.signum or 0], device=self.run.device)
        return int(distributed.all_reduce(flag, self.ctx, "max")) > 0


def write_sample_grid(run: Run, events: Events) -> None:
    """`samples/step-N.png` from G and, with an EMA, `samples/ema-step-N.png` from it; same z
    (and, with classes, one row per class)."""
    nrow = None if run.fixed_y is None else len(run.fixed_y) // len(run.classes)
    for tag, G in {"G": run.G, **({"G_ema": run.ema_generator()} if run.ema else {})}.items():
        path = run.folder / run_folder.grid_name(run.step, ema=tag == "G_ema")
        grid = save_grid(to_uint8(grid_samples(run, G)), path, nrow)
        events.image(f"samples/{tag}", grid, run.step)


@torch.no_grad()
def grid_samples(run: Run, G: torch.nn.Module) -> torch.Tensor:
    """G's images of the fixed z (and labels) of the sample grids, in eval mode, as a user samples them."""
    mode = G.training
    try:
        return G.eval()(run.fixed_z, run.fixed_y)
    finally:
        G.train(mode)


@contextmanager
def algorithm_flags(deterministic: bool, device: torch.device):
    """Deterministic algorithms (and no cuDNN autotuning) for this run only: the process's
    settings come back afterwards, so runs in one process (a sweep) do not inherit them."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    if device.type == "cpu":
        # The first steps produce denormal floats that make CPU kernels ~10x slower for a while.
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
