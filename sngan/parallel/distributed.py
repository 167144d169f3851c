"""Multi-process training with torch.distributed, launched by `torchrun` (which sets RANK,
LOCAL_RANK and WORLD_SIZE); without it there is one process and every collective is a no-op.
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sngan import config
from sngan.errors import UsageError


def shared_cores_env(processes: int) -> dict[str, str]:
    """The environment for one of `processes` processes that share this machine's cores: each gets
    its share of threads, as torchrun gives each of its processes one. PyTorch would otherwise start
    a thread per core in every process, and oversubscribed threads run several times slower. A
    thread count the user set (OMP_NUM_THREADS) is kept."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only the main process writes the run folder, logs, grids and checkpoints."""
        return self.rank == 0


def from_env() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`; a one-line error for any other name,
    or when that GPU is absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UsageError(f"unknown device '{name}'; use {', '.join(config.choices('devices'))} (or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{name}' is asked for but no CUDA GPU is visible; use auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device '{name}': only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return device


def setup(device_name: str) -> tuple[Dist, torch.device]:
    """(process info, this process's device); under torchrun, joins the process group (NCCL on
    GPUs, gloo on CPUs) and uses the GPU of its local rank."""
    ctx = from_env()
    device = resolve_device(device_name)
    if not ctx.enabled:
        return ctx, device
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise UsageError(f"local rank {ctx.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                             "start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def rank_slice(t: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """This process's contiguous share of a global batch `t` (its length divides evenly)."""
    if not ctx.enabled:
        return t
    share = len(t) // ctx.world
    return t[ctx.rank * share:(ctx.rank + 1) * share]


def cleanup(ctx: Dist, ok: bool = True) -> None:
    """Leave the process group. After success, wait for every process first, so none tears its
    connections down while another still uses them; after an error a barrier could hang."""
    if ctx.enabled and dist.is_initialized():
        gc.collect()  # whatever still holds the group's pending work goes first (see training.loop.train)
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce(t: torch.Tensor, ctx: Dist, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (`sum`, `min` or `max`); identity in a single process."""
    if ctx.enabled:
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return t


def broadcast_object(obj, ctx: Dist):
    """The main process's `obj` on every process."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, ctx: Dist) -> list:
    """Every process's `obj`, in rank order, on every process."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


def sync_bn_statistics(ctx: Dist, *modules: torch.nn.Module) -> None:
    """Broadcast rank 0's BatchNorm running statistics, which each process updates from its own
    batch; DDP does the same at the start of every forward. Weights and SN `u` are not touched:
    they must already agree, and `fingerprint` checks that they do."""
    if not ctx.enabled:
        return
    for m in modules:
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and mod.track_running_stats:
                for buf in (mod.running_mean, mod.running_var, mod.num_batches_tracked):
                    dist.broadcast(buf, src=0)


def fingerprint(*modules: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (SN `u`, BN statistics) of `modules`, bit-exact:
    equal fingerprints on all ranks prove the replicas are identical."""
    h = hashlib.sha256()
    for m in modules:
        for name, t in m.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
