"""Acceptance check: `sngan eval-fid` from a checkpoint against PNGs + pytorch-fid's CLI.

    python benchmarks/fid_vs_pytorch_fid.py --num 500 --batch-size 50 --out fid_vs_pytorch_fid.json

N synthetic reference images go through the Inception (after a warm-up batch): their statistics
are cached as a pytorch-fid `.npz`, and the time gives the feature extraction rate. An untrained
standard CNN at the paper's width is saved as a checkpoint. Then, each timed end to end:

1. `sngan.metrics.evaluate.eval_fid(checkpoint=..., num=N, ref=STATS.npz)` in this process;
2. the PNG route: write the same N samples (same seed and batches) as PNGs, then run
   `python -m pytorch_fid PNG_DIR STATS.npz` with the same weights, in strict fp32
   (`NVIDIA_TF32_OVERRIDE=0`) as sngan's features are; on CUDA once more with pytorch-fid's
   default TF32, and the speed-up is taken against the faster run.

Targets: the two FIDs agree within 1e-3 (relative), and eval-fid is at least 2x faster. The
Inception weights are found as `sngan eval-fid` finds them, or given by --inception-weights.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when sngan is not installed

import torch  # noqa: E402

from sngan.data import datasets  # noqa: E402
from sngan.errors import SnganError  # noqa: E402
from sngan.metrics import evaluate, fid_stats, formulas  # noqa: E402
from sngan.metrics import detector as fid_detector  # noqa: E402
from sngan.models.sample import load_generator, write_samples  # noqa: E402
from sngan.parallel.distributed import resolve_device  # noqa: E402
from sngan.runs import checkpoint  # noqa: E402
from sngan.studies import bench, timing  # noqa: E402
from sngan.training.state import Run  # noqa: E402

SCHEMA = "sngan-fid-vs-pytorch-fid/1"
SPEEDUP_TARGET, MATCH_RTOL = 2.0, 1e-3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cli_env(tmp: Path, strict_fp32: bool) -> dict[str, str]:
    """pytorch-fid's environment: its weights in a private torch hub, TF32 off when `strict_fp32`
    (whatever the caller's environment says), else the GPU's default."""
    env = {**os.environ, "TORCH_HOME": str(tmp / "torch")}
    env.pop("NVIDIA_TF32_OVERRIDE", None)
    if strict_fp32:
        env["NVIDIA_TF32_OVERRIDE"] = "0"
    return env


def pytorch_fid_cli(png_dir: Path, stats_file: Path, weights: Path, tmp: Path, device: torch.device,
                    batch: int, strict_fp32: bool = True) -> tuple[float, float]:
    """(FID, seconds) of `python -m pytorch_fid PNG_DIR STATS.npz` with `weights` where it looks."""
    hub = tmp / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    target = hub / fid_detector.FID_WEIGHTS_FILE
    if not target.exists():
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if "fc.weight" in state:
            target.symlink_to(Path(weights).resolve())
        else:  # pool3-only (the offline conversion): pytorch-fid loads strictly, but never uses fc
            torch.save({**state, "fc.weight": torch.zeros(fid_detector.NUM_CLASSES, fid_detector.FEATURE_DIM),
                        "fc.bias": torch.zeros(fid_detector.NUM_CLASSES)}, target)
    cmd = [sys.executable, "-m", "pytorch_fid", str(png_dir), str(stats_file), "--device", str(device),
           "--batch-size", str(batch)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=cli_env(tmp, strict_fp32))
    seconds = round(time.perf_counter() - start, 3)
    m = re.search(r"^FID:\s+(\S+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not m:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SnganError(f"pytorch-fid's CLI failed (exit {proc.returncode}): {last}")
    return float(m.group(1)), seconds


def import_seconds() -> float:
    """What a fresh `sngan eval-fid` process pays before any work: Python plus importing torch."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sngan.metrics.evaluate, sngan.models.sample"], check=True)
    return round(time.perf_counter() - start, 3)


def compare(num: int, batch: int, device: torch.device, weights: Path, tmp: Path, log) -> dict:
    """Both routes on the same N samples; the fields that docs/benchmarks.md describes."""
    out: dict = {"num": num, "batch_size": batch, "weights": str(weights)}
    detector = fid_detector.load_detector(weights, device)
    out["detector"] = detector.name
    log(f"Inception features of {num} reference images")
    features, seconds = timing.time_extract(detector, datasets.synthetic_shapes(num, 32, seed=1), batch)
    out["extract_images_per_s"] = round(num / seconds, 2)
    stats_file = fid_stats.save_stats(tmp / "ref-stats.npz", *formulas.statistics(features), num_images=num,
                                detector=detector.name, detector_sha256=detector.weights_sha256)
    del detector, features

    # An untrained standard CNN at the paper's width: only the generator's speed matters here.
    settings = bench.make_settings(device=str(device), width_scale=1.0, options="none", fid=False)
    ckpt = checkpoint.save(Run(bench.train_config(settings, "dcgan", 32, "sn"), device).state_dict(),
                           tmp / "G.pt")

    log(f"sngan eval_fid of {num} samples from a checkpoint")
    fid_detector._SHA256_MEMO.clear()  # a fresh `sngan eval-fid` hashes the weights again; so does this run
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    ours = evaluate.eval_fid(images=None, checkpoint=str(ckpt), num=num, ref=str(stats_file), save_stats=None,
                             inception_score=False, inception_weights=str(weights), batch_size=batch,
                             device=str(device), data_root=str(tmp), download=False, seed=0)
    _sync(device)
    out["eval_fid_s"] = round(time.perf_counter() - start, 3)
    out["peak_mem_mb"] = (round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                          if device.type == "cuda" else None)

    log(f"{num} PNGs + python -m pytorch_fid")
    start = time.perf_counter()
    G, cfg, _ = load_generator(ckpt, device)
    write_samples(G, cfg, num, tmp / "samples", seed=0, batch_size=batch, device=device)
    out["png_write_s"] = round(time.perf_counter() - start, 3)
    theirs, out["pytorch_fid_cli_s"] = pytorch_fid_cli(tmp / "samples", stats_file, weights, tmp, device, batch)
    cli_s = out["pytorch_fid_cli_s"]
    out["fid_pytorch_fid_tf32"] = out["pytorch_fid_cli_tf32_s"] = None
    if device.type == "cuda":  # pytorch-fid's default on a GPU: TF32 convolutions
        out["fid_pytorch_fid_tf32"], out["pytorch_fid_cli_tf32_s"] = pytorch_fid_cli(
            tmp / "samples", stats_file, weights, tmp, device, batch, strict_fp32=False)
        cli_s = min(cli_s, out["pytorch_fid_cli_tf32_s"])
    out["png_cli_s"] = round(out["png_write_s"] + cli_s, 3)
    out["sngan_import_s"] = import_seconds()

    out["fid_sngan"], out["fid_pytorch_fid"] = ours["fid"], theirs
    out["fid_rel_diff"] = abs(ours["fid"] - theirs) / max(abs(theirs), 1e-12)
    out["fid_match"] = out["fid_rel_diff"] <= MATCH_RTOL
    out["speedup"] = round(out["png_cli_s"] / out["eval_fid_s"], 3)
    out["speedup_with_import"] = round(out["png_cli_s"] / (out["eval_fid_s"] + out["sngan_import_s"]), 3)
    out["meets_target"] = out["speedup"] >= SPEEDUP_TARGET
    return out


def report(r: dict) -> str:
    return "\n".join([
        f"FID: {r['num']} samples, batch {r['batch_size']}, detector {r['detector']}",
        f"  feature extraction       {r['extract_images_per_s']:.1f} images/s",
        f"  sngan eval_fid           {r['eval_fid_s']:.2f} s",
        (f"  PNGs + pytorch-fid CLI   {r['png_cli_s']:.2f} s (PNGs {r['png_write_s']:.2f} s, CLI "
         f"{r['pytorch_fid_cli_s']:.2f} s" + (f", {r['pytorch_fid_cli_tf32_s']:.2f} s with TF32"
                                             if r["pytorch_fid_cli_tf32_s"] is not None else "") + ")"),
        (f"  speed-up                 {r['speedup']:.2f}x (target >= {SPEEDUP_TARGET:g}: "
         f"{'met' if r['meets_target'] else 'NOT met'}); {r['speedup_with_import']:.2f}x counting "
         f"sngan's {r['sngan_import_s']:.1f} s start-up"),
        (f"  FID                      {r['fid_sngan']:.4f} (sngan) vs {r['fid_pytorch_fid']:.4f} (pytorch-fid), "
         f"relative difference {r['fid_rel_diff']:.1e}: {'match' if r['fid_match'] else 'DIFFER'}")])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=500, help="samples on each route (default 500)")
    p.add_argument("--batch-size", type=int, default=50, help="images per Inception forward (default 50)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--inception-weights", default=None, help="the FID Inception weights (default: as eval-fid finds them)")
    p.add_argument("--out", type=Path, default=Path("fid_vs_pytorch_fid.json"), help="where to write the JSON")
    args = p.parse_args(argv)
    if args.num < 2 or args.batch_size < 1:
        p.error("--num must be at least 2 and --batch-size at least 1")
    device = resolve_device(args.device)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        weights = fid_detector.resolve_weights(args.inception_weights)
        with tempfile.TemporaryDirectory(prefix="sngan-fid-vs-pytorch-fid-") as tmp:
            result = compare(args.num, args.batch_size, device, weights, Path(tmp), log)
    except SnganError as e:
        sys.exit(f"error: {e}")
    result = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "device": timing.device_info(str(device)), **result,
              "targets": {"speedup_min": SPEEDUP_TARGET, "fid_match_rtol": MATCH_RTOL}}
    print(report(result))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
