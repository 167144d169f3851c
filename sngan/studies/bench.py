"""`sngan bench`: how fast each training option, and FID's Inception, run on this device (timed as
`sngan.studies.timing` describes). The project's acceptance checks live in `benchmarks/`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sngan import config, config_files
from sngan.data import datasets
from sngan.errors import SnganError, UsageError
from sngan.models import networks
from sngan.parallel.distributed import resolve_device
from sngan.runs import checkpoint
from sngan.studies.timing import device_info, load_average, measure, ratio, time_extract, time_steps
from sngan.training import loop
from sngan.training.state import Run

SCHEMA = "sngan-bench/2"
ARCHS = {f"{arch}{res}": (arch, res) for arch in config.CHOICES["archs"] for res in (32, 48)}  # dcgan32: (dcgan, 32)
NORMS = config.CHOICES["d_norms"]
# Each speed option as config overrides; "all" is the three together.
OPTIONS = {
    "channels_last": ["train.channels_last=true"],
    "bf16": ["train.amp=bf16"],
    "compile": ["train.compile=true"],
    "all": ["train.channels_last=true", "train.amp=bf16", "train.compile=true"],
}
# Config keys bench varies itself, so `--set` may not change them.
VARIED = {"model.arch": "each of --archs", "data.resolution": "each of --archs", "model.d_norm": "each D normalisation",
          "train.batch_size": "--batch-size", "model.g_ch": "--width-scale", "model.d_ch": "--width-scale",
          "train.device": "--device", "data.name": "synthetic data"}
# The speed options are timed on these (those benchmarked; --quick: the first only).
OPTION_ARCHS = ("dcgan32", "resnet32")
# The sizes' defaults per mode; on a CPU a full-width step takes seconds (ResNet: over ten).
SIZES = {
    "quick": dict(batch_size=16, width_scale=0.25, warmup=2, steps=2, repeats=6, fid_num=16, fid_batch=8),
    "cuda": dict(batch_size=64, width_scale=1.0, warmup=10, steps=20, repeats=5, fid_num=10_000, fid_batch=100),
    "cpu": dict(batch_size=64, width_scale=1.0, warmup=1, steps=2, repeats=3, fid_num=500, fid_batch=50),
}


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
    overrides: list[str]  # `--set` on every training config
    fid: bool
    fid_num: int
    fid_batch: int
    inception_weights: str | None  # None: as `sngan eval-fid` finds them


def make_settings(*, quick: bool = False, device: str = "auto", archs: str | None = None, options: str | None = None,
                  overrides: list[str] | None = None, fid: bool = True, inception_weights: str | None = None,
                  **sizes: int | float | None) -> Settings:
    """Settings for a run. `sizes` (the keys of SIZES; a TypeError for others) not given, or None,
    take the mode's default: the paper's widths at batch 64, or with `quick` a CPU-sized run (no
    torch.compile: a minute of compiling)."""
    dev = str(resolve_device(device))
    cuda = dev.startswith("cuda")
    names = _names(archs, ARCHS, "--archs") if archs is not None else list(ARCHS)
    if not names:
        raise UsageError(f"--archs names no architecture; valid: {', '.join(ARCHS)}")
    if options is None:
        chosen = ["channels_last", "bf16"] + ([] if quick else ["compile"] + (["all"] if cuda else []))
    elif options.strip() == "none":
        chosen = []
    elif not (chosen := _names(options, OPTIONS, "--options")):
        raise UsageError(f"--options names no option; valid: {', '.join(OPTIONS)}, or none")
    for item in overrides or []:  # what each row times is set by bench itself
        if (key := item.split("=", 1)[0].strip()) in VARIED:
            raise UsageError(f"--set {key} would relabel bench's rows; bench times {VARIED[key]} itself")
    defaults = SIZES["quick" if quick else "cuda" if cuda else "cpu"]
    values = {**defaults, **{k: v for k, v in sizes.items() if v is not None}}
    lows = {"batch_size": 1, "steps": 1, "repeats": 1, "fid_batch": 1, "warmup": 0, "fid_num": 2 if fid else 0}
    for key, low in lows.items():  # FID needs two images for a covariance
        if values[key] < low:
            raise UsageError(f"--{key.replace('_', '-')} must be at least {low}, got {values[key]}")
    if not 0 < values["width_scale"] <= 4:
        raise UsageError(f"--width-scale must be in (0, 4], got {values['width_scale']}")
    s = Settings(quick=quick, device=dev, archs=names, options=chosen, overrides=list(overrides or []), fid=fid,
                 inception_weights=inception_weights, **values)
    train_config(s, "dcgan", 32, "sn")  # a bad --set fails now, not after minutes of timing
    return s


def _names(text: str, registry: dict, flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if unknown := [n for n in names if n not in registry]:
        raise UsageError(f"{flag}: unknown name '{unknown[0]}'; valid: {', '.join(registry)}")
    return names


def train_config(s: Settings, arch: str, resolution: int, d_norm: str, extra: list[str] = ()) -> config.Config:
    """The training config timed for one architecture and D normalisation (synthetic data)."""
    g_ch, d_ch = (max(1, round(c * s.width_scale)) for c in networks.paper_widths(arch, resolution))
    plain = {
        # 32 steps per epoch: the data order is redrawn now and then, as in real training.
        "data": {"name": "synthetic", "resolution": resolution, "num_images": 32 * s.batch_size},
        "model": {"arch": arch, "g_ch": g_ch, "d_ch": d_ch, "d_norm": d_norm},
        "train": {"batch_size": s.batch_size, "device": s.device, "seed": 0},
    }
    return config.from_dict(config_files.apply_overrides(plain, [*s.overrides, *extra]))


def bench_training(s: Settings, log) -> tuple[list[dict], list[dict]]:
    """Rows per (architecture, D normalisation), and the SN overhead (sn / none) per architecture."""
    rows, overhead = [], []
    # One untimed step first: the process's one-off costs (thread pools, kernel libraries) would
    # otherwise land in the first config's warm-up time.
    time_steps(Run(train_config(s, *ARCHS[s.archs[0]], "sn"), torch.device(s.device)), 1)
    for name in s.archs:
        arch, res = ARCHS[name]
        cfgs = {norm: train_config(s, arch, res, norm) for norm in NORMS}
        log(f"timing {name}: D normalisation {', '.join(NORMS)}")
        results = measure(cfgs, s.device, s.warmup, s.steps, s.repeats)
        for norm, r in results.items():
            cfg, step = cfgs[norm], min(r["times"])
            images = cfg.train.batch_size * cfg.optim.n_dis  # real images through D per G step
            rows.append({"arch": arch, "resolution": res, "d_norm": norm, "g_ch": cfg.model.g_ch,
                         "d_ch": cfg.model.d_ch, "batch_size": cfg.train.batch_size, "n_dis": cfg.optim.n_dis,
                         "step_s": round(step, 5), "step_s_median": round(statistics.median(r["times"]), 5),
                         "steps_per_s": round(1 / step, 3), "images_per_s": round(images / step, 1),
                         "warmup_s": r["warmup_s"], "peak_mem_mb": r["peak_mem_mb"]})
        best, median = ratio(results["sn"]["times"], results["none"]["times"])
        overhead.append({"arch": arch, "resolution": res, "ratio": best, "ratio_median": median})
    return rows, overhead


def bench_options(s: Settings, log) -> tuple[list[dict], dict[str, str]]:
    """Speed-up of each option alone (baseline step time / step time with it), D normalised by SN."""
    rows, skipped = [], {}
    archs = [a for a in OPTION_ARCHS if a in s.archs] or s.archs[:1]
    for option in s.options:
        for name in archs[:1] if s.quick else archs:
            arch, res = ARCHS[name]
            cfgs = {"baseline": train_config(s, arch, res, "sn"),
                    option: train_config(s, arch, res, "sn", OPTIONS[option])}
            log(f"timing {name} with {option}")
            try:
                r = measure(cfgs, s.device, s.warmup, s.steps, s.repeats)
            except Exception as e:  # e.g. torch.compile without a C++ compiler, bf16 unsupported
                skipped[f"{option}/{name}"] = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
            else:
                base, with_it = r["baseline"], r[option]
                speedup, median = ratio(base["times"], with_it["times"])
                rows.append({"option": option, "arch": arch, "resolution": res, "d_norm": "sn",
                             "settings": OPTIONS[option], "step_s": round(min(with_it["times"]), 5),
                             "baseline_step_s": round(min(base["times"]), 5), "speedup": speedup,
                             "speedup_median": median, "warmup_s": with_it["warmup_s"],
                             "peak_mem_mb": with_it["peak_mem_mb"], "baseline_peak_mem_mb": base["peak_mem_mb"]})
            if option in ("compile", "all"):
                torch._dynamo.reset()  # drop the graphs compiled for the freed models
    for option in (o for o in OPTIONS if o not in s.options):
        skipped[option] = ("not requested (--quick leaves torch.compile out: compiling takes about a minute on a CPU)"
                           if s.quick and option == "compile" else "not requested")
    return rows, skipped


def bench_fid(s: Settings, log) -> dict:
    """Inception feature extraction (images/s) and the Frechet distance's time, with the real
    detector as `sngan eval-fid` loads it; {"skipped": why} when it cannot be loaded."""
    from sngan.metrics import detector as fid_detector, formulas

    n, b = s.fid_num, s.fid_batch
    try:
        detector = fid_detector.load_detector(s.inception_weights, torch.device(s.device))
    except SnganError as e:
        log(f"FID: skipped: {e}")
        return {"skipped": str(e)}
    log(f"FID: Inception features of {n} images")
    features, extract_s = time_extract(detector, datasets.synthetic_shapes(n, 32, seed=1), b)
    mu, sigma = formulas.statistics(features)
    start = time.perf_counter()
    formulas.frechet_distance(mu, sigma, mu, sigma)  # the same cost as against any 2048-d reference
    return {"num": n, "batch_size": b, "detector": detector.name, "weights": str(detector.weights_path),
            "extract_s": round(extract_s, 3), "extract_images_per_s": round(n / extract_s, 2),
            "distance_s": round(time.perf_counter() - start, 3)}


def run(s: Settings, log=None) -> dict:
    """Run the benchmark; returns the JSON-able result (see docs/benchmarks.md for its fields)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    result = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": "quick" if s.quick else "full",
              "device": device_info(s.device), "settings": asdict(s)}
    result["settings"]["note"] = (
        f"{'quick: ' if s.quick else ''}model widths x{s.width_scale:g} of the paper's, batch {s.batch_size}, "
        f"synthetic data, hinge loss, n_dis 1 unless overridden; {s.warmup} warm-up steps, then {s.repeats} "
        f"interleaved repeats of {s.steps} steps; step times are the best repeat")
    # Phase and total times stay unrounded, so the phases never add up to more than the total.
    phases, t = {}, time.perf_counter()
    with loop.algorithm_flags(False, torch.device(s.device)):  # cuDNN autotuning, no CPU denormals, as in training
        result["training"], result["sn_overhead"] = bench_training(s, log)
        phases["training"], t = time.perf_counter() - t, time.perf_counter()
        result["options"], result["options_skipped"] = bench_options(s, log)
        phases["options"], t = time.perf_counter() - t, time.perf_counter()
        result["fid"] = bench_fid(s, log) if s.fid else {"skipped": "--no-fid"}
        phases["fid"] = time.perf_counter() - t
    result["device"]["load_avg_end"] = load_average()
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
    lines += ["", "SN overhead: step time with sn / with none"]
    lines += [f"  {o['arch']} {o['resolution']}: {o['ratio']:.3f} (median of paired repeats {o['ratio_median']:.3f})"
              for o in r["sn_overhead"]]
    if r["options"] or r["options_skipped"]:
        lines += ["", "speed options, each alone, D with SN (speed-up: baseline step time / with the option)"]
        lines += [f"  {o['option']:14}{o['arch']} {o['resolution']}: {o['speedup']:.2f}x "
                  f"({o['baseline_step_s'] * 1000:.1f} -> {o['step_s'] * 1000:.1f} ms/step; "
                  f"warm-up {o['warmup_s']:.1f} s)" for o in r["options"]]
        lines += [f"  {name:14}{why}" for name, why in r["options_skipped"].items()]
    f = r["fid"]
    if "skipped" in f:
        return "\n".join([*lines, "", f"FID: skipped ({f['skipped']})"])
    return "\n".join([*lines, "", f"FID: detector {f['detector']}, {f['num']} images, batch {f['batch_size']}",
                      f"  Inception features       {f['extract_images_per_s']:.1f} images/s",
                      f"  Frechet distance         {f['distance_s']:.2f} s"])
