"""`sngan bench`: how fast training and FID run on this device, with warm-up and repeats.

Training: generator steps/s and images/s of each architecture (standard CNN and ResNet, 32 and
48 px) with D normalised by `sn`, `bn` and `none`, and the SN overhead (step time with `sn` over
step time with `none`). The configs compared are built and warmed up one after another, then timed
in interleaved repeats with a rotating order, so a change of machine load hits all of them alike.
Step times are the best of the repeats, as `timeit` reports them: other processes only ever add
time. Medians are recorded too. The speed options (`train.channels_last`, `train.amp: bf16`,
`train.compile`) are timed the same way, each against its own baseline.

FID: Inception feature extraction in images/s, then `eval_fid` of N samples drawn from a checkpoint
against cached statistics, end to end, against the route without it: write the same N samples as
PNGs and run pytorch-fid's CLI on them. Both must give the same FID.

Peak memory is the CUDA memory allocated, or the CPU resident set size, above what was in use
before the config was built.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import platform
import re
import statistics as stats
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

import torch

from sngan import checkpoint, config, data, models, train
from sngan.errors import SnganError, UsageError
from sngan.losses import LOSSES

SCHEMA = "sngan-bench/1"
ARCHS = {"dcgan32": ("dcgan", 32), "dcgan48": ("dcgan", 48), "resnet32": ("resnet", 32), "resnet48": ("resnet", 48)}
NORMS = ("sn", "bn", "none")
# Each speed option as config overrides; "all" is the three together.
OPTIONS = {
    "channels_last": ["train.channels_last=true"],
    "bf16": ["train.amp=bf16"],
    "compile": ["train.compile=true"],
    "all": ["train.channels_last=true", "train.amp=bf16", "train.compile=true"],
}
# The speed options are timed on these (those benchmarked; --quick: the first only).
OPTION_ARCHS = ("dcgan32", "resnet32")
SN_OVERHEAD_TARGET, FID_SPEEDUP_TARGET, FID_MATCH_RTOL = 1.10, 2.0, 1e-3
# Steps per epoch of the synthetic data: the data order is redrawn now and then, as in real
# training, and the CUDA sync count spans one epoch, boundary included.
EPOCH_STEPS = 32


@dataclass
class Settings:
    quick: bool
    device: str
    batch_size: int
    width_scale: float  # model widths as a fraction of the paper's
    warmup: int  # untimed steps per config (compilation and allocator warm-up happen here)
    steps: int  # steps per timed repeat
    repeats: int
    archs: list[str]
    options: list[str]
    overrides: list[str] = field(default_factory=list)  # `--set` on every training config
    fid: bool = True
    fid_num: int = 0
    fid_batch: int = 100
    inception_weights: str | None = None  # a path, "random", or None: look for the real ones


def make_settings(*, quick: bool = False, device: str = "auto", archs: str | None = None,
                  options: str | None = None, batch_size: int | None = None, width_scale: float | None = None,
                  warmup: int | None = None, steps: int | None = None, repeats: int | None = None,
                  overrides: list[str] | None = None, fid: bool = True, fid_num: int | None = None,
                  fid_batch: int | None = None, inception_weights: str | None = None) -> Settings:
    """Settings for a run; what is not given takes the default of the mode and device.

    Full mode is the paper's widths at batch 64. `quick` fits a CPU in under two minutes: widths
    x0.25, batch 16, fewer repeats, 16 FID samples, and no torch.compile (about a minute of compiling on a CPU).
    """
    dev = str(train.resolve_device(device))
    cuda = dev.startswith("cuda")
    names = _names(archs, ARCHS, "--archs") if archs else list(ARCHS)
    if not names:
        raise UsageError(f"--archs names no architecture; valid: {', '.join(ARCHS)}")
    if options is None:
        chosen = ["channels_last", "bf16"] if quick else ["channels_last", "bf16", "compile"] + (["all"] if cuda else [])
    else:
        chosen = [] if options.strip() == "none" else _names(options, OPTIONS, "--options")
    if quick:
        dflt = dict(batch_size=16, width_scale=0.25, warmup=2, steps=2, repeats=6, fid_num=16, fid_batch=8)
    elif cuda:
        dflt = dict(batch_size=64, width_scale=1.0, warmup=10, steps=20, repeats=5, fid_num=10_000, fid_batch=100)
    else:  # a full-width CPU step takes seconds (ResNet: over ten)
        dflt = dict(batch_size=64, width_scale=1.0, warmup=1, steps=2, repeats=3, fid_num=500, fid_batch=50)
    given = dict(batch_size=batch_size, width_scale=width_scale, warmup=warmup, steps=steps, repeats=repeats,
                 fid_num=fid_num, fid_batch=fid_batch)
    values = {k: dflt[k] if v is None else v for k, v in given.items()}
    for key in ("batch_size", "steps", "repeats", "fid_batch"):
        if values[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be at least 1, got {values[key]}")
    if values["warmup"] < 0:
        raise UsageError(f"--warmup must be at least 0, got {values['warmup']}")
    if not 0 < values["width_scale"] <= 4:
        raise UsageError(f"--width-scale must be in (0, 4], got {values['width_scale']}")
    if fid and values["fid_num"] < 2:
        raise UsageError(f"--fid-num must be at least 2 for FID, got {values['fid_num']}")
    s = Settings(quick=quick, device=dev, archs=names, options=chosen, overrides=list(overrides or []), fid=fid,
                 inception_weights=inception_weights, **values)
    train_config(s, "dcgan", 32, "sn")  # a bad --set fails now, not after minutes of timing
    return s


def _names(text: str, registry: dict, flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in registry:
            raise UsageError(f"{flag}: unknown name '{n}'; valid: {', '.join(registry)}")
    return names


def paper_widths(arch: str, resolution: int) -> tuple[int, int]:
    """(g_ch, d_ch) of the paper for the architecture at this resolution."""
    layouts = models.DEFAULT_CH[arch]
    return layouts.get("any") or layouts[32 if resolution <= 32 else 48]


def train_config(s: Settings, arch: str, resolution: int, d_norm: str, extra: list[str] = (),
                 width_scale: float | None = None) -> config.Config:
    """The training config timed for one architecture and D normalisation (synthetic data)."""
    scale = s.width_scale if width_scale is None else width_scale
    g_ch, d_ch = (max(1, round(c * scale)) for c in paper_widths(arch, resolution))
    plain = {
        "data": {"name": "synthetic", "resolution": resolution, "num_images": EPOCH_STEPS * s.batch_size},
        "model": {"arch": arch, "g_ch": g_ch, "d_ch": d_ch, "d_norm": d_norm},
        "train": {"batch_size": s.batch_size, "device": s.device, "seed": 0},
    }
    return config.from_dict(config.apply_overrides(plain, [*s.overrides, *extra]))


# ---------------------------------------------------------------------------------------------
# Timing and memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Memory:
    """Peak memory between `start()` and `peak_mb()` above what was in use at `start()`:
    CUDA memory allocated by tensors, or the process's resident set size (Linux) on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_rss"
        self.base = 0
        self.process_peak_mb = 0.0

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        _malloc_trim()  # hand freed heap back, so the RSS before is what is really in use
        try:  # "5" resets the peak RSS (VmHWM) to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _proc_status_kb("VmRSS")
        except OSError:
            self.base = None
        if self.base is None:  # not Linux
            self.kind = "unavailable"

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.process_peak_mb = max(self.process_peak_mb, peak / 2**20)
            return round((peak - self.base) / 2**20, 1)
        if self.base is None:
            return None
        return round((_proc_status_kb("VmHWM") - self.base) / 1024, 1)

    def process_peak(self) -> float | None:
        """The process's peak over its whole life: CUDA allocated, or the CPU RSS."""
        if self.device.type == "cuda":
            return round(self.process_peak_mb, 1)
        try:
            import resource
        except ImportError:  # not on POSIX
            return None
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


def _proc_status_kb(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _steps(run: train.Run, loss, n: int) -> float:
    """Seconds per step over `n` training steps, waiting for the device at both ends only."""
    _sync(run.device)
    start = time.perf_counter()
    for _ in range(n):
        train.train_step(run, loss)
    _sync(run.device)
    return (time.perf_counter() - start) / max(n, 1)


def _host_syncs(run: train.Run, loss, n: int = EPOCH_STEPS) -> float | None:
    """Host-device synchronisations per training step over `n` steps (CUDA only), counted by
    PyTorch's sync debug mode."""
    if run.device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(n):
                train.train_step(run, loss)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / n


def measure(s: Settings, cfgs: dict[str, config.Config], memory: Memory) -> tuple[dict[str, dict], dict[str, list]]:
    """Time each config: build and warm up one after another (recording peak memory), then
    `repeats` interleaved repeats of `steps` steps, in an order that rotates each repeat.

    Returns per config {warmup_s, peak_mem_mb, host_syncs_per_step, step_s (best repeat),
    step_s_median}, and the seconds per step of every repeat, paired by position across configs.
    """
    device = torch.device(s.device)
    runs, out = {}, {}
    for name, cfg in cfgs.items():
        memory.start()
        start = time.perf_counter()
        run = train.Run(cfg, device)
        loss = LOSSES[cfg.loss.name]
        _steps(run, loss, s.warmup)
        out[name] = {"warmup_s": round(time.perf_counter() - start, 3), "peak_mem_mb": memory.peak_mb(),
                     "host_syncs_per_step": _host_syncs(run, loss)}
        runs[name] = (run, loss)
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(s.repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(_steps(*runs[name], s.steps))
    for name, ts in times.items():
        out[name].update(step_s=min(ts), step_s_median=stats.median(ts))
    return out, times


def _ratio(num: list[float], den: list[float]) -> dict:
    """The ratio of the best step times, and the median of the per-repeat ratios (each pair of
    configs timed side by side)."""
    return {"ratio": round(min(num) / min(den), 4),
            "ratio_median": round(stats.median(a / b for a, b in zip(num, den)), 4)}


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _malloc_trim()


# ---------------------------------------------------------------------------------------------
# Training


def bench_training(s: Settings, memory: Memory, log) -> tuple[list[dict], list[dict]]:
    """Rows of steps/s, images/s and peak memory per (architecture, D normalisation), and the SN
    overhead of each architecture."""
    rows, overhead = [], []
    # One untimed step first: the process's one-off costs (thread pools, kernel libraries) would
    # otherwise land in the first config's warm-up time and memory.
    warm = train.Run(train_config(s, *ARCHS[s.archs[0]], "sn"), torch.device(s.device))
    _steps(warm, LOSSES[warm.cfg.loss.name], 1)
    del warm
    _release()
    for name in s.archs:
        arch, res = ARCHS[name]
        cfgs = {norm: train_config(s, arch, res, norm) for norm in NORMS}
        log(f"timing {name}: D normalisation {', '.join(NORMS)}")
        results, times = measure(s, cfgs, memory)
        for norm, r in results.items():
            cfg = cfgs[norm]
            images = cfg.train.batch_size * cfg.optim.n_dis  # real images through D per G step
            rows.append({"arch": arch, "resolution": res, "d_norm": norm, "g_ch": cfg.model.g_ch,
                         "d_ch": cfg.model.d_ch, "batch_size": cfg.train.batch_size, "n_dis": cfg.optim.n_dis,
                         "step_s": round(r["step_s"], 5), "step_s_median": round(r["step_s_median"], 5),
                         "steps_per_s": round(1 / r["step_s"], 3), "images_per_s": round(images / r["step_s"], 1),
                         "warmup_s": r["warmup_s"], "peak_mem_mb": r["peak_mem_mb"],
                         "host_syncs_per_step": r["host_syncs_per_step"]})
        ratio = _ratio(times["sn"], times["none"])
        overhead.append({"arch": arch, "resolution": res, **ratio, "target": SN_OVERHEAD_TARGET,
                         "meets_target": ratio["ratio"] <= SN_OVERHEAD_TARGET})
        del results, times
        _release()
    return rows, overhead


def bench_options(s: Settings, memory: Memory, log) -> tuple[list[dict], dict[str, str]]:
    """Speed-up of each option alone (baseline step time / step time with it), D normalised by SN."""
    rows, skipped = [], {}
    archs = [a for a in OPTION_ARCHS if a in s.archs] or s.archs[:1]
    archs = archs[:1] if s.quick else archs
    for option in s.options:
        for name in archs:
            arch, res = ARCHS[name]
            cfgs = {"baseline": train_config(s, arch, res, "sn"),
                    option: train_config(s, arch, res, "sn", OPTIONS[option])}
            log(f"timing {name} with {option}")
            try:
                results, times = measure(s, cfgs, memory)
            except Exception as e:  # e.g. torch.compile without a C++ compiler, bf16 unsupported
                skipped[f"{option}/{name}"] = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
                _release()
                continue
            r = _ratio(times["baseline"], times[option])
            rows.append({"option": option, "arch": arch, "resolution": res, "d_norm": "sn",
                         "settings": OPTIONS[option], "step_s": round(results[option]["step_s"], 5),
                         "baseline_step_s": round(results["baseline"]["step_s"], 5),
                         "speedup": r["ratio"], "speedup_median": r["ratio_median"],
                         "warmup_s": results[option]["warmup_s"],
                         "peak_mem_mb": results[option]["peak_mem_mb"],
                         "baseline_peak_mem_mb": results["baseline"]["peak_mem_mb"]})
            del results, times
            if "train.compile=true" in OPTIONS[option]:
                torch._dynamo.reset()  # drop the graphs compiled for the freed models
            _release()
    for option in OPTIONS:
        if option not in s.options:
            skipped[option] = ("not requested (--quick leaves torch.compile out: compiling takes about a minute on a CPU)"
                               if s.quick and option == "compile" else "not requested")
    return rows, skipped


# ---------------------------------------------------------------------------------------------
# FID


def fid_weights(given: str | None, tmp: Path) -> tuple[Path, bool, str]:
    """(weights file, whether they are random, a note). `given` is a path, "random", or None to
    use $SNGAN_INCEPTION_WEIGHTS or the torch hub cache, falling back to random weights (the
    benchmark never downloads)."""
    from sngan import fid

    if given == "random":
        return fid.random_weights(tmp / fid.FID_WEIGHTS_FILE), True, "random Inception weights (as asked)"
    if given:
        return fid.resolve_weights(given), False, ""
    env = os.environ.get(fid.WEIGHTS_ENV)
    if env:
        return fid.resolve_weights(env), False, ""
    if fid.hub_weights_path().is_file():
        return fid.hub_weights_path(), False, ""
    note = (f"no Inception weights found (--inception-weights PATH, ${fid.WEIGHTS_ENV} or "
            f"{fid.hub_weights_path()}): timing randomly initialised weights of the same architecture, "
            "so the timings hold but the FID values are not comparable with published ones")
    return fid.random_weights(tmp / fid.FID_WEIGHTS_FILE), True, note


@contextlib.contextmanager
def _stopwatch(module, name: str, seconds: list[float]):
    """Add the time spent in `module.name` to `seconds` while the block runs."""
    original = getattr(module, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    with mock.patch.object(module, name, timed):
        yield


def bench_fid(s: Settings, memory: Memory, tmp: Path, log) -> dict:
    """Feature extraction speed, then `eval_fid` from a checkpoint vs PNGs + pytorch-fid's CLI."""
    from sngan import evaluate, fid
    from sngan.sample import load_generator, write_samples

    device, n, b = torch.device(s.device), s.fid_num, s.fid_batch
    weights, is_random, note = fid_weights(s.inception_weights, tmp)
    detector = fid.load_detector(weights, device)
    out = {"num": n, "batch_size": b, "weights": str(weights), "weights_random": is_random,
           "detector": detector.name, "note": note}

    # Reference statistics, cached as a pytorch-fid .npz; making them times feature extraction.
    log(f"FID: Inception features of {n} reference images")
    ref = data.synthetic_shapes(n, 32, seed=1)
    fid.extract(detector, ref[:b], b)  # warm-up
    _sync(device)
    start = time.perf_counter()
    features, _ = fid.extract(detector, ref, b)
    _sync(device)
    out["extract_images_per_s"] = round(n / (time.perf_counter() - start), 2)
    stats_file = fid.save_stats(tmp / "ref-stats.npz", *fid.statistics(features), num_images=n,
                                detector=detector.name, detector_sha256=detector.weights_sha256)
    del detector, features
    _release()

    # An untrained standard CNN at the paper's width: the generator's speed is all that matters.
    run = train.Run(train_config(s, "dcgan", 32, "sn", width_scale=1.0), device)
    ckpt = checkpoint.save(run.state_dict(), tmp / "G.pt")
    del run
    _release()

    log(f"FID: sngan eval-fid of {n} samples from a checkpoint")
    fid._SHA256_MEMO.clear()  # a fresh process hashes the weights again; so does this one
    gen_s, dist_s = [], []
    memory.start()
    start = time.perf_counter()
    with _stopwatch(fid, "extract", gen_s), _stopwatch(fid, "frechet_distance", dist_s):
        ours = evaluate.eval_fid(images=None, checkpoint=str(ckpt), num=n, ref=str(stats_file), save_stats=None,
                                 inception_score=False, inception_weights=str(weights), batch_size=b,
                                 device=s.device, data_root=str(tmp), download=False, seed=0)
    out["eval_fid_s"] = round(time.perf_counter() - start, 3)
    out["eval_fid_generate_and_features_s"] = round(sum(gen_s), 3)  # samples are drawn as Inception eats them
    out["eval_fid_distance_s"] = round(sum(dist_s), 3)
    out["peak_mem_mb"] = memory.peak_mb()
    _release()

    log(f"FID: {n} PNGs + python -m pytorch_fid")
    png_dir = tmp / "samples"
    start = time.perf_counter()
    G, cfg, _ = load_generator(ckpt, device)
    write_samples(G, cfg, n, png_dir, seed=0, batch_size=b, device=device)
    out["png_write_s"] = round(time.perf_counter() - start, 3)
    del G
    _release()
    # In strict fp32 like sngan's features, so the two FIDs can be compared to 1e-3.
    theirs, out["pytorch_fid_cli_s"] = _pytorch_fid_cli(png_dir, stats_file, weights, tmp, device, b)
    cli_s = out["pytorch_fid_cli_s"]
    out["fid_pytorch_fid_tf32"] = out["pytorch_fid_cli_tf32_s"] = None
    if device.type == "cuda":  # and as pytorch-fid runs by default on a GPU, TF32 convolutions
        out["fid_pytorch_fid_tf32"], out["pytorch_fid_cli_tf32_s"] = _pytorch_fid_cli(
            png_dir, stats_file, weights, tmp, device, b, strict_fp32=False)
        cli_s = min(cli_s, out["pytorch_fid_cli_tf32_s"])  # the speed-up is against the faster run
    out["png_cli_s"] = round(out["png_write_s"] + cli_s, 3)
    out["sngan_import_s"] = _import_seconds()

    out["fid_sngan"], out["fid_pytorch_fid"] = ours["fid"], theirs
    out["fid_rel_diff"] = abs(ours["fid"] - theirs) / max(abs(theirs), 1e-12)
    out["fid_match"] = out["fid_rel_diff"] <= FID_MATCH_RTOL
    out["speedup"] = round(out["png_cli_s"] / out["eval_fid_s"], 3)
    out["speedup_with_import"] = round(out["png_cli_s"] / (out["eval_fid_s"] + out["sngan_import_s"]), 3)
    out["target_speedup"] = FID_SPEEDUP_TARGET
    out["meets_target"] = out["speedup"] >= FID_SPEEDUP_TARGET
    return out


def _pytorch_fid_cli(png_dir: Path, stats_file: Path, weights: Path, tmp: Path, device: torch.device,
                     batch: int, strict_fp32: bool = True) -> tuple[float, float]:
    """(FID, seconds) of `python -m pytorch_fid PNG_DIR STATS.npz`, with the same
    weights placed in a private torch hub cache, where pytorch-fid looks for them.

    `strict_fp32` turns TF32 off in cuDNN and cuBLAS (`NVIDIA_TF32_OVERRIDE=0`) as sngan's
    features do; without it pytorch-fid runs its convolutions in TF32 on a recent GPU.
    """
    from sngan.fid import FID_WEIGHTS_FILE

    hub = tmp / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    link = hub / FID_WEIGHTS_FILE
    if not link.exists():
        link.symlink_to(Path(weights).resolve())
    cmd = [sys.executable, "-m", "pytorch_fid", str(png_dir), str(stats_file), "--device", str(device),
           "--batch-size", str(batch)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env=_cli_env(tmp, strict_fp32))
    seconds = round(time.perf_counter() - start, 3)
    m = re.search(r"^FID:\s+(\S+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not m:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SnganError(f"pytorch-fid's CLI failed (exit {proc.returncode}): {last}")
    return float(m.group(1)), seconds


def _cli_env(tmp: Path, strict_fp32: bool) -> dict[str, str]:
    env = {**os.environ, "TORCH_HOME": str(tmp / "torch")}
    env.pop("NVIDIA_TF32_OVERRIDE", None)
    if strict_fp32:
        env["NVIDIA_TF32_OVERRIDE"] = "0"
    return env


def _import_seconds() -> float:
    """What a fresh `sngan eval-fid` process pays before any work: Python plus importing torch."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sngan.evaluate, sngan.sample"], check=True)
    return round(time.perf_counter() - start, 3)


# ---------------------------------------------------------------------------------------------
# The whole benchmark


def device_info(device: str) -> dict:
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
            name = m.group(1).strip() if m else name
    return {"type": dev.type, "name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_avg_start": _load()}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(s: Settings, log=None) -> dict:
    """Run the benchmark; returns the JSON-able result (see docs/benchmarks.md for its fields)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    device = torch.device(s.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # as `sngan train` does: denormals make CPU kernels crawl
    else:
        torch.backends.cudnn.benchmark = True
    memory = Memory(device)
    result = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": "quick" if s.quick else "full",
              "device": device_info(s.device), "settings": asdict(s)}
    result["settings"]["note"] = (
        f"{'quick: ' if s.quick else ''}model widths x{s.width_scale:g} of the paper's, batch {s.batch_size}, "
        f"synthetic data, hinge loss, n_dis 1 unless overridden; {s.warmup} warm-up steps, then {s.repeats} "
        f"interleaved repeats of {s.steps} steps; step times are the best repeat")
    phases = {}
    t = time.perf_counter()
    result["training"], result["sn_overhead"] = bench_training(s, memory, log)
    # Phase and total times stay unrounded: rounded separately, the phases could add up to more
    # than the total. The table rounds them for display.
    phases["training"], t = time.perf_counter() - t, time.perf_counter()
    result["options"], result["options_skipped"] = bench_options(s, memory, log)
    phases["options"], t = time.perf_counter() - t, time.perf_counter()
    if s.fid:
        with tempfile.TemporaryDirectory(prefix="sngan-bench-") as tmp:
            result["fid"] = bench_fid(s, memory, Path(tmp), log)
    else:
        result["fid"] = {"skipped": "--no-fid"}
    phases["fid"] = time.perf_counter() - t
    result["memory"] = {"kind": memory.kind, "process_peak_mb": memory.process_peak(),
                        "note": "peak_mem_mb is the peak above what was in use before the config was built"}
    fid_result = result["fid"]
    result["targets"] = {
        "sn_overhead_max": SN_OVERHEAD_TARGET,
        "sn_overhead_met": all(o["meets_target"] for o in result["sn_overhead"]),
        "eval_fid_speedup_min": FID_SPEEDUP_TARGET,
        "eval_fid_speedup_met": fid_result.get("meets_target"),
        "fid_match_rtol": FID_MATCH_RTOL,
        "fid_match_met": fid_result.get("fid_match"),
    }
    result["device"]["load_avg_end"] = _load()
    result["total_s"], result["phase_s"] = time.perf_counter() - start, phases
    return result


def write_json(result: dict, path: Path) -> Path:
    text = json.dumps(result, indent=2).encode() + b"\n"
    return checkpoint.atomic_write(path, lambda f: f.write(text), "benchmark results")


def format_table(r: dict) -> str:
    """The result as plain-text tables."""
    d, s = r["device"], r["settings"]
    lines = [(f"sngan bench ({r['mode']}) on {d['type']}: {d['name']}, {d['threads']} threads, torch {d['torch']}; "
              f"load average {d['load_avg_start']} -> {d['load_avg_end']}; {r['total_s']:.0f} s"),
             s["note"], "",
             (f"{'arch':8}{'px':>4}  {'D norm':7}{'G/D width':>10}{'batch':>6}{'ms/step':>9}{'steps/s':>9}"
              f"{'images/s':>10}{'peak MB':>9}")]
    for t in r["training"]:
        mem = "-" if t["peak_mem_mb"] is None else f"{t['peak_mem_mb']:.0f}"
        lines.append(f"{t['arch']:8}{t['resolution']:>4}  {t['d_norm']:7}{t['g_ch']:>5}/{t['d_ch']:<4}"
                     f"{t['batch_size']:>6}{t['step_s'] * 1000:>9.1f}{t['steps_per_s']:>9.2f}"
                     f"{t['images_per_s']:>10.0f}{mem:>9}")
    lines += ["", f"SN overhead: step time with sn / with none (target <= {SN_OVERHEAD_TARGET})"]
    for o in r["sn_overhead"]:
        lines.append(f"  {o['arch']} {o['resolution']}: {o['ratio']:.3f} (median of paired repeats "
                     f"{o['ratio_median']:.3f}) {'met' if o['meets_target'] else 'NOT met'}")
    if r["options"] or r["options_skipped"]:
        lines += ["", "speed options, each alone, D with SN (speed-up: baseline step time / with the option)"]
        for o in r["options"]:
            lines.append(f"  {o['option']:14}{o['arch']} {o['resolution']}: {o['speedup']:.2f}x "
                         f"({o['baseline_step_s'] * 1000:.1f} -> {o['step_s'] * 1000:.1f} ms/step; "
                         f"warm-up {o['warmup_s']:.1f} s)")
        for name, why in r["options_skipped"].items():
            lines.append(f"  {name:14}{why}")
    f = r["fid"]
    lines.append("")
    if "skipped" in f:
        lines.append(f"FID: skipped ({f['skipped']})")
        return "\n".join(lines)
    lines += [f"FID: {f['num']} samples, batch {f['batch_size']}, detector {f['detector']}"
              + (" (RANDOM weights: timings hold, FID values are not comparable)" if f["weights_random"] else ""),
              f"  feature extraction       {f['extract_images_per_s']:.1f} images/s",
              (f"  sngan eval-fid           {f['eval_fid_s']:.2f} s (samples + features "
               f"{f['eval_fid_generate_and_features_s']:.2f} s, Frechet distance {f['eval_fid_distance_s']:.2f} s)"),
              (f"  PNGs + pytorch-fid CLI   {f['png_cli_s']:.2f} s (PNGs {f['png_write_s']:.2f} s, CLI "
               f"{f['pytorch_fid_cli_s']:.2f} s" + (f", {f['pytorch_fid_cli_tf32_s']:.2f} s with TF32"
                                                   if f["pytorch_fid_cli_tf32_s"] is not None else "") + ")"),
              (f"  speed-up                 {f['speedup']:.2f}x (target >= {FID_SPEEDUP_TARGET:g}: "
               f"{'met' if f['meets_target'] else 'NOT met'}); "
               f"{f['speedup_with_import']:.2f}x counting sngan's {f['sngan_import_s']:.1f} s start-up"),
              (f"  FID                      {f['fid_sngan']:.4f} (sngan) vs {f['fid_pytorch_fid']:.4f} (pytorch-fid), "
               f"relative difference {f['fid_rel_diff']:.1e}: {'match' if f['fid_match'] else 'DIFFER'}")]
    return "\n".join(lines)
