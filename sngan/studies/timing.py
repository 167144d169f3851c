"""Timing on a device, as `sngan bench` and the scripts in benchmarks/ take it: configs compared
with each other are timed in interleaved repeats, and a step time is the best repeat (as `timeit`).
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
import torch

from sngan import config
from sngan.training import loop
from sngan.training.losses import Objective
from sngan.training.state import Run


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a clock reads its end."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(run: Run, n: int) -> float:
    """Seconds per step over `n` training steps, waiting for the device at both ends only."""
    loss = Objective.from_config(run.cfg.loss)
    sync(run.device)
    start = time.perf_counter()
    for _ in range(n):
        loop.train_step(run, loss)
    sync(run.device)
    return (time.perf_counter() - start) / max(n, 1)


def measure(cfgs: dict[str, config.Config], device: str, warmup: int, steps: int, repeats: int) -> dict[str, dict]:
    """Per config: {warmup_s, peak_mem_mb (CUDA; else None), times (s/step of each repeat)}.

    Builds the configs and runs `warmup` untimed steps of each, one after another, then times
    `repeats` interleaved repeats of `steps` steps, in an order that rotates each repeat.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    runs, out = {}, {}
    for name, cfg in cfgs.items():
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        runs[name] = Run(cfg, device)
        time_steps(runs[name], warmup)
        peak = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1) if cuda else None
        out[name] = {"warmup_s": round(time.perf_counter() - start, 3), "peak_mem_mb": peak, "times": []}
    names = list(runs)
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name]["times"].append(time_steps(runs[name], steps))
    return out


def ratio(num: list[float], den: list[float]) -> tuple[float, float]:
    """The ratio of the best step times, and the median of the ratios within each repeat."""
    return round(min(num) / min(den), 4), round(statistics.median(a / b for a, b in zip(num, den)), 4)


def time_extract(detector, images: torch.Tensor, batch: int) -> tuple[np.ndarray, float]:
    """Pool3 features of uint8 `images` and the seconds they took, after one warm-up batch."""
    from sngan.metrics.detector import extract

    extract(detector, images[:batch], batch)
    sync(detector.device)
    start = time.perf_counter()
    features, _ = extract(detector, images, batch)
    sync(detector.device)
    return features, time.perf_counter() - start


def device_info(device: str) -> dict:
    """The device, the software and the machine's load average as the timing starts."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {"type": dev.type, "name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_avg_start": load_average()}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): other processes slow
    every timing down, and this says how busy the machine was."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
