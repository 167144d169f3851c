"""Checkpoints: plain dicts of state dicts + config + RNG states, written atomically, loaded safely.

Never pickled modules or classes: a checkpoint loads with `torch.load(weights_only=True)` and keeps
loading when the code moves around."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable

import torch

from sngan import __version__
from sngan.errors import SnganError, UsageError

FORMAT = "sngan-checkpoint"
VERSION = 1  # bump when the layout changes; loads refuse newer versions
# The extra file in a `sngan export` program (sngan.api) that says how to draw z and where it came
# from; here so that such a file given as a checkpoint can be recognised.
EXPORT_METADATA = "sngan.json"


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable; skipped where a directory cannot be opened or synced."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Any], None], what: str = "file") -> Path:
    """Write via `write(fileobj)` to a temporary file, fsync, then rename over `path`; missing
    folders on the way to `path` are created (every output sngan writes follows this rule).

    Either the new content is complete at `path` or the old file is untouched: a crash, a full
    disk or a second Ctrl-C mid-write cannot leave a half-written file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise SnganError(f"cannot write {what} '{path}': {e.strerror or e}; free disk space or fix permissions "
                             "(the previous file, if any, is intact)") from None
        raise
    _fsync_dir(path.parent)
    return path


TMP_PATTERN = ".*.tmp-*"  # atomic_write's temporary files


def check_parent(out: str | Path) -> None:
    """Before a slow job that writes `out`: no file stands where a folder on its way should be.
    Missing folders are fine: they are created when `out` is written (`atomic_write`)."""
    nearest = next(p for p in Path(out).absolute().parents if p.exists())
    if not nearest.is_dir():
        raise UsageError(f"cannot write '{out}': '{nearest}' is a file, not a folder; choose another path")


def check_new_file(out: Path, force: bool, example: str) -> None:
    """Before a slow job that writes the single file `out`: it can be written (`check_parent`), it
    is not a folder, and it is not there already unless `force` (no earlier output is lost)."""
    check_parent(out)
    if out.is_dir():
        raise UsageError(f"output '{out}' is a folder; name a file such as {example}")
    if out.exists() and not force:
        raise UsageError(f"output '{out}' already exists; choose another path or pass --force")


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporary files that a writer killed mid-write (SIGKILL, power loss) left in
    `folder`; call it only while holding the folder's lock. Returns how many there were."""
    stale = list(Path(folder).glob(TMP_PATTERN))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def save(state: dict, path: str | Path) -> Path:
    """Atomically save a checkpoint dict (format and version are added here)."""
    payload = {"format": FORMAT, "version": VERSION, "sngan_version": __version__,
               "torch_version": str(torch.__version__), **state}
    return atomic_write(path, lambda f: torch.save(payload, f), "checkpoint")


def link_latest(ckpt: Path, latest: Path) -> None:
    """Atomically make `latest` the same complete file as `ckpt` (a hard link, else a copy)."""
    tmp = latest.with_name(f".{latest.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(ckpt, tmp)
        os.replace(tmp, latest)
        _fsync_dir(latest.parent)
    except OSError:  # filesystems without hard links: copy, still atomically
        tmp.unlink(missing_ok=True)
        atomic_write(latest, lambda f: f.write(ckpt.read_bytes()), "checkpoint")


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and check a checkpoint; every failure is one SnganError line naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "latest.pt"
    if not path.is_file():
        raise SnganError(f"checkpoint '{path}' not found; give a run folder (it has latest.pt) or a checkpoint file")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch.save writes a zip archive (unpickling anything else misleads)
            raise SnganError(f"'{path}' is not a checkpoint (torch.save writes zip archives, and it is not one); "
                             "give a run folder or one of its ckpt-*.pt files")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise SnganError(f"refusing to load checkpoint '{path}': it contains arbitrary Python objects "
                             "that could run code (only plain tensors and containers are allowed)") from None
        raise SnganError(f"checkpoint '{path}' is corrupt ({_first_line(e)})") from None
    except Exception as e:  # a file that is not a checkpoint can fail the unpickler in any way
        raise SnganError(_exported_program(path) or f"checkpoint '{path}' is truncated or corrupt, or not a "
                         f"checkpoint ({_first_line(e)}); give a run folder or one of its ckpt-*.pt files") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SnganError(f"'{path}' is not an sngan checkpoint (no '{FORMAT}' format marker)")
    if state.get("version", 0) > VERSION:
        raise SnganError(f"checkpoint '{path}' has format version {state['version']}, newer than this "
                         f"sngan understands ({VERSION}); upgrade sngan (pip install -U sngan)")
    return state


def _exported_program(path: Path) -> str | None:
    """What to say when `path` is a torch.export archive, such as `sngan export` writes (also a zip,
    but no checkpoint); None when it is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(n.endswith("/archive_format") for n in names):
                return None
            meta = next((n for n in names if n.endswith(f"/extra/{EXPORT_METADATA}")), None)
            source = json.loads(archive.read(meta)).get("checkpoint") if meta else None
    except (OSError, ValueError, zipfile.BadZipFile, AttributeError):
        return None
    what = "an exported generator (sngan export)" if meta else "a torch.export program"
    return (f"'{path}' is {what}, not a checkpoint: it is for running with PyTorch alone (torch.export.load, "
            f"see docs/api.md); give the checkpoint it was exported from"
            + (f" ({source})" if source else ", a run folder or one of its .pt files"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def load_module_state(module: torch.nn.Module, state: dict, what: str, path: str | Path) -> None:
    """`module.load_state_dict(state)` with a one-line error when the shapes or keys do not fit."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as e:
        raise SnganError(f"checkpoint '{path}': {what} does not match the model built from its config "
                         f"({_first_line(e)})") from None


@contextmanager
def folder_lock(folder: Path, in_use: str):
    """An exclusive lock on `folder` (via `folder/.lock`) for as long as the block runs.

    The OS releases it when the process dies, so a crash leaves no stale lock. `in_use` is the
    error message when another process holds it."""
    import fcntl

    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SnganError(in_use) from None
        yield


def prune(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` periodic checkpoints (latest.pt/best.pt are separate)."""
    for old in sorted(folder.glob("ckpt-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)

