"""Training: one readable loop of n_dis discriminator steps per generator step.

A run lives in its own numbered folder:

    runs/00003-cifar_sn/
        config.yaml          resolved config, written before the first step
        metrics.jsonl        losses, D(x)/D(G(z)), per-layer sigma, lr, time; FID at eval steps
        samples/step-*.png   grids of a fixed z
        ckpt-*.pt latest.pt  checkpoints (best.pt too when FID is tracked)
        losses.png sigmas.png fid.png
"""

from __future__ import annotations

import json
import random
import re
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sngan import checkpoint, config, data, models, plots
from sngan.errors import SnganError, UsageError
from sngan.losses import LOSSES
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


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create `root/NNNNN-name`, numbered one past the highest existing run; never reuses one."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SnganError(f"cannot create output folder '{root}': {e.strerror}") from None
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-") or "run"
    while True:
        numbers = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
        folder = root / f"{max(numbers, default=-1) + 1:05d}-{safe}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:  # another process took this number first
            continue
        except OSError as e:
            raise SnganError(f"cannot create run folder in '{root}': {e.strerror}") from None


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


class Run:
    """Everything a training run holds: config, folder, models, optimisers, data and RNG."""

    def __init__(self, cfg: config.Config, device: torch.device):
        self.cfg, self.device = cfg, device
        self.folder: Path | None = None  # set once setup has succeeded and the folder exists
        seed_everything(cfg.train.seed)
        self.G, self.D = (m.to(device) for m in models.build(cfg.model, cfg.data.resolution))
        o = cfg.optim
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2))
        images = data.load_images(cfg.data)
        images = images.to(device) if cfg.data.placement == "device" else images
        self.batches = data.Batches(images, cfg.train.batch_size, cfg.train.seed, device)
        self.z_gen = torch.Generator(device).manual_seed(cfg.train.seed)
        # The fixed z of the sample grids comes from its own CPU generator: the same on any device.
        fixed = torch.Generator().manual_seed(cfg.train.seed + 1)
        self.fixed_z = models.sample_z(cfg.train.sample_grid, cfg.model, "cpu", fixed).to(device)
        self.step, self.elapsed, self.skipped = 0, 0.0, 0
        self.best_fid: float | None = None

    def state_dict(self) -> dict:
        return {
            "step": self.step, "elapsed": self.elapsed, "skipped": self.skipped, "best_fid": self.best_fid,
            "config": config.to_dict(self.cfg),
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "batches": self.batches.state_dict(), "rng": rng_state(self.z_gen),
        }

    def load_state_dict(self, state: dict, path: Path) -> None:
        for name, target in (("G", self.G), ("D", self.D), ("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            checkpoint.load_module_state(target, state[name], name, path)
        self.batches.load_state_dict(state["batches"])
        set_rng_state(state["rng"], self.z_gen)
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.skipped, self.best_fid = state["skipped"], state["best_fid"]

    def set_lr(self, step: int) -> float:
        """Linear decay to 0 over the run when configured; returns the multiplier."""
        scale = 1.0 - step / self.cfg.train.steps if self.cfg.optim.lr_decay == "linear" else 1.0
        for opt, lr in ((self.opt_g, self.cfg.optim.lr_g), (self.opt_d, self.cfg.optim.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * scale
        return scale


def d_logits(D: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, concat: bool):
    """D on real and fake. One concatenated pass (one SN power iteration per D step, and faster)
    unless D has BatchNorm, whose batch statistics must not mix real and fake."""
    if concat:
        out = D(torch.cat([real, fake]))
        return out[: len(real)], out[len(real):]
    return D(real), D(fake)


def train_step(run: Run, loss) -> tuple[torch.Tensor, ...]:
    """One generator update after n_dis discriminator updates. Returns device tensors
    (loss_d, loss_g, mean D(x), mean D(G(z))); nothing here waits for the device."""
    cfg, G, D = run.cfg, run.G, run.D
    concat = cfg.model.d_norm != "bn"
    for _ in range(cfg.optim.n_dis):
        real = run.batches.next()
        z = models.sample_z(len(real), cfg.model, run.device, run.z_gen)
        with torch.no_grad():
            fake = G(z)
        d_real, d_fake = d_logits(D, real, fake, concat)
        loss_d = loss.d(d_real, d_fake)
        run.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        run.opt_d.step()

    z = models.sample_z(cfg.train.batch_size * cfg.optim.g_batch_mult, cfg.model, run.device, run.z_gen)
    D.requires_grad_(False)  # G's step needs gradients w.r.t. D's input only
    loss_g = loss.g(D(G(z)))
    run.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    run.opt_g.step()
    D.requires_grad_(True)
    return loss_d.detach(), loss_g.detach(), d_real.detach().mean(), d_fake.detach().mean()


def weights_finite(*modules: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())


class MetricsLog:
    """Append-only JSON lines, flushed per line so a crash loses at most the line being written."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, entry: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
        return entries

    def truncate_after(self, step: int) -> int:
        """Drop entries logged after `step` (a killed run got further than its checkpoint)."""
        entries = self.read()
        keep = [e for e in entries if e.get("step", 0) <= step]
        text = "".join(json.dumps(e) + "\n" for e in keep)
        checkpoint.atomic_write(self.path, lambda f: f.write(text.encode()), "metrics")
        return len(entries) - len(keep)


def write_plots(run_dir: Path, entries: list[dict]) -> None:
    """losses.png, sigmas.png and (when tracked) fid.png from the metrics entries."""
    train = [e for e in entries if "loss_d" in e]
    if train:
        steps = [e["step"] for e in train]
        plots.line_plot({k: (steps, [e[k] for e in train]) for k in ("loss_d", "loss_g", "d_real", "d_fake")},
                        run_dir / "losses.png", title="losses and mean D outputs", ylabel="value")
        layers = list(train[-1].get("sigma", {}))
        plots.line_plot({k: (steps, [e.get("sigma", {}).get(k, float("nan")) for e in train]) for k in layers},
                        run_dir / "sigmas.png", title="spectral norm of each D layer (raw weight)",
                        ylabel="sigma", logy=True)
    fid_keys = sorted({k for e in entries for k in e if k.startswith("fid")})
    if fid_keys:
        series = {k: ([e["step"] for e in entries if k in e], [e[k] for e in entries if k in e]) for k in fid_keys}
        plots.line_plot(series, run_dir / "fid.png", title="FID over training", ylabel="FID")


class StopRequest:
    """SIGINT/SIGTERM: finish the current step, checkpoint, exit. A second SIGINT quits at once."""

    def __init__(self):
        self.signum: int | None = None

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signum = signum
        tqdm.write(f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
                   "(Ctrl-C again to quit at once)", file=sys.stderr)

    @contextmanager
    def installed(self):
        if threading_main():
            old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield self
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
        else:
            yield self


def threading_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


class Diverged(SnganError):
    pass


@contextmanager
def run_lock(run_dir: Path):
    """Hold an exclusive lock on a run folder so two processes never train into it at once.
    The OS releases it when the process dies, so a crash leaves no stale lock."""
    import fcntl

    with open(run_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SnganError(f"run folder '{run_dir}' is in use by another sngan process") from None
        yield


def train(cfg: config.Config, run_dir: Path | None = None, resume: dict | None = None,
          resume_path: Path | None = None, progress: bool = True) -> dict:
    """Train a new run (in a new numbered folder under cfg.out.root when `run_dir` is None) or
    continue one from the checkpoint dict `resume`. Returns a summary dict (step, stopped_by, ...).

    Everything that can fail on bad input (device, data, FID reference) is set up before the
    run folder is created, so a mistake leaves no empty run folder behind.
    """
    device = resolve_device(cfg.train.device)
    if device.type == "cpu":
        # The first steps produce denormal floats that make CPU kernels ~10x slower for a while.
        torch.set_flush_denormal(True)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    run = Run(cfg, device)
    tracker = None
    if cfg.eval.every:
        from sngan.evaluate import FIDTracker
        tracker = FIDTracker(cfg, device)  # loads the detector and reference statistics up front
    if resume is not None:
        run.load_state_dict(resume, resume_path)
    if run_dir is None:
        run_dir = new_run_dir(cfg.out.root, cfg.out.name)
        tqdm.write(f"run folder: {run_dir}", file=sys.stderr)
    run.folder = run_dir
    with run_lock(run_dir):
        return _train(run, run_dir, tracker, resume is not None, progress)


def _train(run: Run, run_dir: Path, tracker, resumed: bool, progress: bool) -> dict:
    cfg = run.cfg
    log = MetricsLog(run_dir / "metrics.jsonl")
    if resumed:
        dropped = log.truncate_after(run.step)
        if dropped:
            tqdm.write(f"dropped {dropped} metrics entries logged after step {run.step} by the interrupted run",
                       file=sys.stderr)
    # Rewritten on resume too, where train.steps or the intervals may have been overridden.
    text = config.dump(cfg).encode()
    checkpoint.atomic_write(run_dir / "config.yaml", lambda f: f.write(text), "config")
    (run_dir / "samples").mkdir(exist_ok=True)

    loss = LOSSES[cfg.loss.name]
    tc, device = cfg.train, run.device
    acc = torch.zeros(4, device=device)
    acc_n = 0
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    stop = StopRequest()
    t_last, step_last = time.perf_counter(), run.step
    bar = tqdm(total=tc.steps, initial=run.step, desc=run_dir.name, unit="step", dynamic_ncols=True,
               disable=not progress, file=sys.stderr)

    def save_checkpoint(periodic: bool) -> None:
        state = run.state_dict()
        name = f"ckpt-{run.step:07d}.pt"
        path = checkpoint.save(state, run_dir / name)
        checkpoint.link_latest(path, run_dir / "latest.pt")
        if not periodic:  # an end-of-run or interrupt checkpoint: keep only as latest
            path.unlink()
        checkpoint.prune(run_dir, tc.keep_checkpoints)
        write_plots(run_dir, log.read())

    def check_finite() -> None:
        bad = int(first_bad)
        if bad < 0 and weights_finite(run.G, run.D):
            return
        where = f"step {bad}" if bad >= 0 else f"or before step {run.step}"
        log.write({"step": run.step, "diverged": True, "first_nonfinite_step": bad})
        last = checkpoint.load(run_dir / "latest.pt")["step"] if (run_dir / "latest.pt").exists() else None
        keep = f"the last good checkpoint is latest.pt (step {last})" if last is not None else "no checkpoint was written yet"
        raise Diverged(f"training diverged: non-finite loss or weights at {where}; {keep}; "
                       "lower the learning rates, or set train.on_nonfinite=skip to skip such steps")

    with stop.installed():
        try:
            while run.step < tc.steps and stop.signum is None:
                step = run.step + 1
                lr_scale = run.set_lr(run.step)
                t0 = time.perf_counter()
                snapshot = None
                if tc.on_nonfinite == "skip":
                    snapshot = _snapshot(run)
                out = train_step(run, loss)
                finite = torch.isfinite(out[0]) & torch.isfinite(out[1])
                if snapshot is not None and not bool(finite):  # this policy syncs every step, by choice
                    _restore(run, snapshot)
                    run.skipped += 1
                else:
                    first_bad = torch.where(~finite & (first_bad < 0), step, first_bad)
                    acc += torch.stack(out)
                    acc_n += 1
                run.step = step
                run.elapsed += time.perf_counter() - t0
                bar.update(1)

                if step % tc.log_every == 0 or step == tc.steps:
                    if tc.on_nonfinite == "stop":
                        check_finite()
                    now = time.perf_counter()
                    means = (acc / max(acc_n, 1)).tolist()
                    entry = {"step": step, "loss_d": means[0], "loss_g": means[1], "d_real": means[2],
                             "d_fake": means[3], "lr_g": cfg.optim.lr_g * lr_scale,
                             "lr_d": cfg.optim.lr_d * lr_scale, "it_s": (step - step_last) / (now - t_last),
                             "time": round(run.elapsed, 3), "skipped": run.skipped,
                             "sigma": layer_sigmas(run.D)}
                    log.write(entry)
                    bar.set_postfix(loss_d=f"{means[0]:.3f}", loss_g=f"{means[1]:.3f}")
                    acc.zero_()
                    acc_n, t_last, step_last = 0, now, step
                if step % tc.sample_every == 0 or step == tc.steps:
                    write_sample_grid(run)
                if tracker is not None and (step % cfg.eval.every == 0 or step == tc.steps):
                    result = tracker.evaluate(run.G)
                    log.write({"step": step, **result})
                    bar.write(f"step {step}: " + ", ".join(f"{k} = {v:.3f}" for k, v in result.items()
                                                          if isinstance(v, float)), file=sys.stderr)
                    if run.best_fid is None or result[tracker.metric] < run.best_fid:
                        run.best_fid = result[tracker.metric]
                        checkpoint.save(run.state_dict(), run_dir / "best.pt")
                if step % tc.checkpoint_every == 0:
                    if tc.on_nonfinite == "stop":
                        check_finite()
                    save_checkpoint(periodic=True)
            if tc.on_nonfinite == "stop":
                check_finite()
            if not (run_dir / "latest.pt").exists() or checkpoint_step(run_dir) != run.step:
                save_checkpoint(periodic=False)
            write_plots(run_dir, log.read())
        finally:
            bar.close()
    return {"step": run.step, "steps": tc.steps, "stopped_by": stop.signum, "run_dir": str(run_dir),
            "skipped": run.skipped, "best_fid": run.best_fid}


def checkpoint_step(run_dir: Path) -> int | None:
    try:
        return checkpoint.load(run_dir / "latest.pt")["step"]
    except SnganError:
        return None


def write_sample_grid(run: Run) -> None:
    run.G.eval()
    with torch.no_grad():
        images = to_uint8(run.G(run.fixed_z))
    run.G.train()
    save_grid(images, run.folder / "samples" / f"step-{run.step:07d}.png")


def _snapshot(run: Run) -> dict:
    """Copies of everything a step changes, to undo a non-finite step (train.on_nonfinite=skip)."""
    import copy
    return {k: copy.deepcopy(getattr(run, k).state_dict()) for k in ("G", "D", "opt_g", "opt_d")}


def _restore(run: Run, snap: dict) -> None:
    for k, state in snap.items():
        getattr(run, k).load_state_dict(state)
