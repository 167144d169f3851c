"""The `sngan` command line: train, sample, export, eval-fid, bench, sweep, report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

try:  # typer >= 0.29 vendors click privately; older typer uses click itself
    from typer import Abort as _Abort, TyperException as _CliError
except ImportError:  # pragma: no cover
    from click.exceptions import Abort as _Abort, ClickException as _CliError

from sngan import config, config_files
from sngan.errors import SnganError, UsageError


def _one_of(registry: str) -> str:
    """A config choice's valid names as prose, for help strings: `auto, cpu or cuda`."""
    *rest, last = config.choices(registry)
    return f"{', '.join(rest)} or {last}" if rest else last


EMA_HELP = ("Use the EMA generator (train.ema_decay) or the raw one (default: the EMA generator when the "
            "checkpoint has one).")
DEVICE_HELP = f"{_one_of('devices')}."
# `sngan bench`'s architectures (sngan.studies.bench.ARCHS, not imported here: it loads torch).
BENCH_ARCHS = ", ".join(f"{arch}{px}" for arch in config.choices("archs") for px in (32, 48))

app = typer.Typer(
    help="Train SN-GANs (spectral normalisation, Miyato et al. 2018) and measure them with FID.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def train(
    config_path: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config file, or the name of a bundled config (e.g. cifar_sn)."),
    overrides: List[str] = typer.Option([], "--set", "-s", help="Override a config value: section.key=value (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Root folder for run folders (sets out.root)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a run: its folder (uses latest.pt) or a checkpoint file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
):
    """Train a GAN from a YAML config; every run gets its own numbered folder."""
    from sngan.parallel.distributed import from_env
    from sngan.runs import checkpoint
    from sngan.runs.run_folder import resume_target  # lazy: `sngan --help` stays free of matplotlib
    from sngan.training import loop

    run_dir = ckpt = state = None
    if resume is not None:
        if config_path is not None or out is not None:
            raise UsageError(f"--resume continues the run in its own folder with the config stored in its checkpoint; "
                             f"drop {'--config' if config_path is not None else '--out'} "
                             "(use --set train.steps=N to train longer)")
        run_dir, ckpt = resume_target(resume)
        state = checkpoint.load(ckpt)
        for item in overrides:
            if not loop.resumable(item.split("=", 1)[0].strip()):
                raise UsageError(f"'{item}' cannot change when resuming (only {', '.join(loop.RESUMABLE)} can)")
        cfg = config.from_saved(config_files.apply_overrides(state["config"], overrides))
    elif config_path is None:
        raise UsageError("give --config PATH (or a bundled name such as quickstart), or --resume RUN_DIR")
    else:
        cfg, _ = config.load(config_path, [*overrides, f"out.root={out}"] if out is not None else overrides)
    if dry_run:
        typer.echo(config.dump(cfg), nl=False)
        return
    speaks = from_env().main  # under torchrun, one process speaks for all
    if state is not None and state["step"] >= cfg.train.steps:
        typer.echo(f"{run_dir}: already trained {state['step']} of {cfg.train.steps} steps; "
                   "pass --set train.steps=N to train longer")
        return
    summary = loop.train(cfg, run_dir, resume=state, resume_path=ckpt, progress=progress)
    if summary["stopped_by"] is not None:
        if speaks:
            typer.echo(f"stopped at step {summary['step']} of {summary['steps']}; checkpoint saved. "
                       f"Resume with: sngan train --resume {summary['run_dir']}", err=True)
        raise typer.Exit(128 + summary["stopped_by"])
    if speaks:
        metric = summary["best_metric"] or "FID"  # checkpoints from before best_metric name no protocol
        best = f" (best {metric} = {summary['best_fid']:.2f})" if summary["best_fid"] is not None else ""
        typer.echo(f"done: {summary['step']} steps in {summary['run_dir']}{best}", err=True)


@app.command()
def sample(
    checkpoint_path: Path = typer.Option(..., "--checkpoint", help="Checkpoint file, or a run folder (uses latest.pt)."),
    num: int = typer.Option(64, "--num", "-n", help="Number of images."),
    out: Path = typer.Option(..., "--out", "-o", help="A .png grid, an .npz of uint8 NHWC images, or a folder for PNG files."),
    seed: int = typer.Option(0, "--seed", help="Seed for z: the same seed gives the same images on any device."),
    batch_size: int = typer.Option(256, "--batch-size", help="Images generated at once."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help=EMA_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class-conditional checkpoints: draw only this "
                                         "class (name or index); default every class, a grid one row per class."),
):
    """Draw images from a checkpoint (the model is rebuilt from the config stored in it)."""
    from sngan.models.sample import class_index, load_generator, write_samples
    from sngan.parallel.distributed import resolve_device

    if num < 1:
        raise UsageError("--num must be at least 1")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    dev = resolve_device(device)
    G, cfg, kind = load_generator(checkpoint_path, dev, ema)
    label = None if class_ is None else class_index(G, class_)
    written = write_samples(G, cfg, num, out, seed, batch_size, dev, force, label)
    what = "" if label is None else f" of class {G.classes[label]}"
    typer.echo(f"wrote {written} samples{what} to {out}" + (" (EMA generator)" if kind == "ema" else ""), err=True)


@app.command()
def export(
    checkpoint_path: Path = typer.Option(..., "--checkpoint", help="Checkpoint file, or a run folder (uses latest.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="The file to write, e.g. generator.pt2 (load it with torch.export.load)."),
    device: str = typer.Option("cpu", "--device", help=f"Where the exported weights live: {_one_of('devices')} (default cpu: runs anywhere)."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help=EMA_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
):
    """Write the generator as one file that runs with PyTorch alone: same z, same images."""
    from sngan.api import load
    from sngan.runs.checkpoint import check_new_file

    check_new_file(out, force, "generator.pt2")  # before the slow part: loading and exporting
    G = load(checkpoint_path, device, ema)
    G.export(out, force)
    typer.echo(f"wrote {out}: the {'EMA ' if G.kind == 'ema' else ''}generator, z (N, {G.z_dim}) {G.z_dist} "
               f"-> images (N, 3, {G.resolution}, {G.resolution}) in [-1, 1]", err=True)


@app.command("eval-fid")
def eval_fid(
    images: Optional[str] = typer.Option(None, "--images", help="Generated side: a folder of images or an .npz of uint8 images."),
    checkpoint_path: Optional[str] = typer.Option(None, "--checkpoint", help="Generated side: a checkpoint; samples are generated in memory."),
    num: int = typer.Option(10_000, "--num", "-n", help="Samples to generate from --checkpoint."),
    ref: str = typer.Option("cifar10-train", "--ref", help="Reference: cifar10-train, cifar10-test, stl10-unlabeled, stl10-train, a folder of images, or a stats .npz (mu, sigma)."),
    ref_images: int = typer.Option(0, "--ref-images", help="Use the first N images of the reference (0: all; fewer is an error; the paper uses 10000)."),
    save_stats: Optional[str] = typer.Option(None, "--save-stats", help="Also write the reference statistics to this .npz."),
    inception_score: bool = typer.Option(False, "--is", help="Also compute the Inception Score (10 splits, no fc bias, as the paper; unavailable without a real classifier in the weights or with under 20 samples)."),
    kid: bool = typer.Option(False, "--kid", help="Also compute KID (100 subsets of up to 1000 images per side, torch-fidelity's protocol); needs an image reference, not a stats .npz."),
    pr: bool = typer.Option(False, "--pr", help="Also compute precision and recall (k = 3 nearest neighbours); needs an image reference, not a stats .npz."),
    intra: bool = typer.Option(False, "--intra-fid", help="Class-conditional checkpoints: also the intra-class FID (each class's NUM/classes samples against that class's reference images, and the mean); needs a labelled reference."),
    inception_weights: Optional[str] = typer.Option(None, "--inception-weights", envvar="SNGAN_INCEPTION_WEIGHTS", help="Local copy of pt_inception-2015-12-05-6726825d.pth (default: torch hub cache, downloaded on first use)."),
    batch_size: int = typer.Option(100, "--batch-size", help="Images per Inception forward."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    data_root: str = typer.Option("data", "--data-root", help="Where named reference data sets live."),
    download: bool = typer.Option(True, "--download/--no-download", help="Download a missing reference data set."),
    seed: int = typer.Option(0, "--seed", help="Seed for generated samples."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help=EMA_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """FID (and IS, KID, precision/recall) of a checkpoint or an image set against a reference, with its protocol."""
    from sngan.metrics.evaluate import eval_fid as run_eval
    from sngan.metrics.fid_result import format_result
    from sngan.parallel.distributed import resolve_device

    if num < 2:
        raise UsageError("--num must be at least 2 for FID")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if ref_images < 0:
        raise UsageError("--ref-images must be 0 (all) or a positive count")
    result = run_eval(images=images, checkpoint=checkpoint_path, num=num, ref=ref, save_stats=save_stats,
                      inception_score=inception_score, inception_weights=inception_weights,
                      batch_size=batch_size, device=str(resolve_device(device)), data_root=data_root,
                      download=download, seed=seed, ema=ema, ref_images=ref_images, kid=kid, pr=pr, intra=intra)
    typer.echo(json.dumps(result) if as_json else format_result(result))


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="CPU-sized (under two minutes): widths x0.25, batch 16, 16 FID images, no compile."),
    out: Path = typer.Option(Path("bench.json"), "--out", "-o", help="Where to write the results as JSON."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    archs: Optional[str] = typer.Option(None, "--archs", help=f"Comma-separated: {BENCH_ARCHS} (default: all)."),
    options: Optional[str] = typer.Option(None, "--options", help="Speed options timed one at a time: channels_last, bf16, compile, all, or none (default: channels_last,bf16 with --quick, else compile too)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Training batch (default 64; 16 with --quick)."),
    width_scale: Optional[float] = typer.Option(None, "--width-scale", help="Model widths as a fraction of the paper's (default 1; 0.25 with --quick)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Untimed steps per config."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Steps per timed repeat."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Timed repeats per config (the best is reported, the median too)."),
    overrides: List[str] = typer.Option([], "--set", "-s", help="Override a value in every training config: section.key=value (repeatable)."),
    fid: bool = typer.Option(True, "--fid/--no-fid", help="Also time FID's Inception features and Frechet distance (skipped, saying why, without the Inception weights)."),
    fid_num: Optional[int] = typer.Option(None, "--fid-num", help="Images for the FID timing (default 10000 on a GPU, 500 on a CPU, 16 with --quick)."),
    fid_batch: Optional[int] = typer.Option(None, "--fid-batch", help="Images per Inception forward."),
    inception_weights: Optional[str] = typer.Option(None, "--inception-weights", envvar="SNGAN_INCEPTION_WEIGHTS", help="The FID Inception weights (default: as eval-fid finds them: the torch hub cache, a download, or the offline conversion)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
):
    """Time training (steps/s, SN overhead, speed options) and FID's Inception on this device: a table, and JSON."""
    from sngan.runs.checkpoint import check_new_file
    from sngan.studies import bench as benchmark

    check_new_file(out, force, "bench.json")  # now, not after minutes of timing
    settings = benchmark.make_settings(
        quick=quick, device=device, archs=archs, options=options, batch_size=batch_size, width_scale=width_scale,
        warmup=warmup, steps=steps, repeats=repeats, overrides=overrides, fid=fid, fid_num=fid_num,
        fid_batch=fid_batch, inception_weights=inception_weights)
    result = benchmark.run(settings)
    typer.echo(benchmark.format_table(result))
    benchmark.write_json(result, out)
    typer.echo(f"wrote {out}", err=True)


@app.command()
def sweep(
    spec: str = typer.Argument(..., help="A sweep spec YAML (or the name of a bundled one, e.g. cifar10_table1), or a sweep folder to continue."),
    overrides: List[str] = typer.Option([], "--set", "-s", help="Override a config value in every cell: section.key=value (repeatable); axes still win."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The sweep folder (default: OUT_ROOT/sweeps/SPEC_NAME)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and their status, and exit."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="Run one cell per listed GPU at a time, e.g. --gpus 0,1 (each a subprocess)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells at once, each a subprocess (default 1: in this process)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar (in-process cells)."),
    only: Optional[str] = typer.Option(None, "--only", help="Train only these cells (comma-separated names, as --dry-run lists them); the others are left as they are."),
):
    """Run a grid of configs; finished cells are skipped, interrupted ones resumed."""
    import signal

    from sngan.runs import run_folder
    from sngan.studies import sweep as sweeps

    plan = sweeps.plan(spec, overrides, out)
    slots = sweeps.slots_for(gpus, jobs, {c.cfg.train.device for c in plan.cells})
    names = plan.chosen(only)
    if dry_run:
        typer.echo(sweeps.describe(plan), nl=False)
        return
    outcome = sweeps.run(plan, slots, progress=progress, only=names, say=lambda line: typer.echo(line, err=True))
    counts = {s: sum(c.status == s for c in plan.cells) for s in (*run_folder.STATUSES, "failed")}
    typer.echo(f"sweep {plan.folder}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), err=True)
    if outcome.signum is not None:
        typer.echo(f"sweep stopped by {signal.Signals(outcome.signum).name}; finished cells are kept and "
                   f"interrupted ones resume from their checkpoints. Resume with: sngan sweep {plan.folder}", err=True)
        raise typer.Exit(128 + outcome.signum)
    if outcome.failed:
        raise SnganError(f"sweep cell '{outcome.failed[0].name}' failed: {outcome.failed[0].message}; fix it, "
                         f"then run: sngan sweep {plan.folder}")
    typer.echo(f"report with: sngan report {plan.folder} --out {plan.folder / 'report'}", err=True)


@app.command()
def report(
    paths: List[Path] = typer.Argument(..., help="Run folders, sweep folders, or folders holding run folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.md, report.csv, index.html and the PNGs."),
):
    """Compare runs: a table (FID with its protocol, IS, steps, time, divergence), plots, samples."""
    from sngan.studies.report import build

    written = build(paths, out)
    typer.echo(f"wrote {len(written)} files to {out}; open {out / 'index.html'}", err=True)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one line on stderr and an exit code, never a traceback."""
    try:
        rv = app(args=argv, prog_name="sngan", standalone_mode=False)
    except SnganError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except _CliError as e:
        ctx = getattr(e, "ctx", None)  # only usage errors know their command
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except _Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:  # e.g. a run folder made read-only mid-run
        where = f" '{e.filename}'" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
