"""Acceptance check of training speed: SN's overhead, and host-device syncs in the training step.

    python benchmarks/training_targets.py --out training_targets.json            # paper widths, batch 64
    python benchmarks/training_targets.py --archs dcgan32 --steps 1 --repeats 8  # a CPU-sized check

Target: a step with D normalised by spectral norm takes at most 1.10x the time of one without
(timed as `sngan bench` times it: interleaved repeats, best repeat), judged at the paper's widths.
On CUDA it also counts host-device synchronisations per training step (the aim: none in the hot
loop) with PyTorch's sync debug mode over one epoch of the synthetic data (32 steps, the epoch
boundary with its redraw of the data order included).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when sngan is not installed

import torch  # noqa: E402

from sngan.errors import SnganError  # noqa: E402
from sngan.studies import bench, timing  # noqa: E402
from sngan.training import loop  # noqa: E402
from sngan.training.losses import Objective  # noqa: E402
from sngan.training.state import Run  # noqa: E402

SCHEMA = "sngan-training-targets/1"
SN_OVERHEAD_TARGET = 1.10
EPOCH_STEPS = 32  # bench.train_config's synthetic data set holds 32 batches


def host_syncs_per_step(s: bench.Settings, arch: str, resolution: int, d_norm: str) -> float | None:
    """Host-device synchronisations per training step over one epoch (CUDA only, else None)."""
    if not s.device.startswith("cuda"):
        return None
    run = Run(bench.train_config(s, arch, resolution, d_norm), torch.device(s.device))
    loss = Objective.from_config(run.cfg.loss)
    loop.train_step(run, loss)  # the first step's one-off set-up is not the hot loop
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(EPOCH_STEPS):
                loop.train_step(run, loss)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / EPOCH_STEPS


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default=None, help=f"comma-separated: {', '.join(bench.ARCHS)} (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width-scale", type=float, default=1.0, help="model widths as a fraction of the paper's")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per config")
    p.add_argument("--steps", type=int, default=None, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per config")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value (repeatable)")
    p.add_argument("--out", type=Path, default=Path("training_targets.json"), help="where to write the JSON")
    args = p.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        s = bench.make_settings(device=args.device, archs=args.archs, options="none", overrides=args.overrides,
                                fid=False, batch_size=args.batch_size, width_scale=args.width_scale,
                                warmup=args.warmup, steps=args.steps, repeats=args.repeats)
    except SnganError as e:
        p.error(str(e))
    start = time.perf_counter()
    rows, overhead = bench.bench_training(s, log)
    for o in overhead:
        o["target"], o["meets_target"] = SN_OVERHEAD_TARGET, o["ratio"] <= SN_OVERHEAD_TARGET
    for r in rows:
        r["host_syncs_per_step"] = host_syncs_per_step(s, r["arch"], r["resolution"], r["d_norm"])
    result = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": timing.device_info(s.device),
              "settings": vars(s).copy(), "training": rows, "sn_overhead": overhead,
              "targets": {"sn_overhead_max": SN_OVERHEAD_TARGET,
                          "sn_overhead_met": all(o["meets_target"] for o in overhead)},
              "total_s": round(time.perf_counter() - start, 3)}
    for o in overhead:
        print(f"SN overhead {o['arch']} {o['resolution']}: {o['ratio']:.3f} (median {o['ratio_median']:.3f}), "
              f"target <= {SN_OVERHEAD_TARGET}: {'met' if o['meets_target'] else 'NOT met'}")
    for r in rows:
        if r["host_syncs_per_step"] is not None:
            print(f"host syncs per step {r['arch']} {r['resolution']} {r['d_norm']}: {r['host_syncs_per_step']:g}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
