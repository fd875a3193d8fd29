"""Where training runs: the device, and the process group when started by torchrun.

One process per device. torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training is a
single process and every helper here is a no-op, so the training loop reads the same either way.
Rules the loop relies on:
- every rank trains the same model on its shard of the same per-epoch permutation (perm[r::world],
  as DistributedSampler does) with batch_size / world examples per step: --batch-size stays the
  global batch, so one process and N processes take the same optimizer steps;
- only rank 0 touches the run directory (reads config, vocab and checkpoint, writes everything);
  what it reads reaches the other ranks by broadcast, so the run directory needs no shared storage;
- pruning decisions are taken from scores summed over all ranks, so every rank removes the same
  units and connections; `check_in_sync` verifies that after every epoch.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from edgeprune.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env(env=os.environ) -> Dist:
    """The job layout torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    if not all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return Dist()
    world = int(env["WORLD_SIZE"])
    return Dist(
        rank=int(env["RANK"]),
        world=world,
        local_rank=int(env["LOCAL_RANK"]),
        local_world=int(env.get("LOCAL_WORLD_SIZE", world)),
    )


def resolve_device(name: str, ctx: Dist = Dist()) -> torch.device:
    """auto picks cuda, then mps, then cpu; under torchrun each process takes cuda:LOCAL_RANK."""
    if name not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got '{name}'.")
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                "--device cuda was asked for but this torch sees no CUDA GPU; "
                "use --device cpu (or auto), or install a CUDA build of torch."
            )
        if ctx.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"Process {ctx.local_rank} on this node has no GPU of its own (this machine has "
                f"{torch.cuda.device_count()}); start at most that many with torchrun --nproc_per_node."
            )
        return torch.device("cuda", ctx.local_rank)
    if name == "mps":
        if not has_mps:
            raise UserError("--device mps was asked for but MPS is not available here; use --device cpu (or auto).")
        if ctx.enabled:
            raise UserError("Multi-process training does not run on MPS; use --device cpu with torchrun.")
    return torch.device(name)


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype for --amp (bf16 where the GPU has it, else fp16), None without --amp."""
    if not amp:
        return None
    if device.type != "cuda":
        raise UserError(
            f"--amp runs on CUDA only and this run trains on {device.type}; drop --amp or use --device cuda."
        )
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def local_batch_size(batch_size: int, world: int) -> int:
    """Each rank's share of the global --batch-size."""
    if batch_size % world:
        raise UserError(
            f"--batch-size {batch_size} is the global batch and must divide evenly over the "
            f"{world} processes; use a multiple of {world}."
        )
    return batch_size // world


def shard(perm: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """This rank's share of an epoch's permutation: perm[rank::world], padded by wrapping around
    (like DistributedSampler) so every rank takes the same number of steps."""
    if not ctx.enabled:
        return perm
    pad = -len(perm) % ctx.world
    if pad:
        perm = torch.cat([perm, perm[:pad]])
    return perm[ctx.rank :: ctx.world]


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One batch to the device; on CUDA through pinned memory so the copy does not block."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@contextlib.contextmanager
def process_group(ctx: Dist, device: torch.device):
    """Join the torchrun job for the duration of a run (nccl on CUDA, gloo on CPU)."""
    if not ctx.enabled or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world, timeout=timedelta(minutes=30))
    yield
    # Only on success: after a failure a peer may be gone and teardown could wait on it; torchrun
    # (or the process exit) cleans up instead. Collect first: objects DDP leaves in reference
    # cycles otherwise outlive the group and abort the process at interpreter exit ("terminate
    # called without an active exception", seen in ~40% of torchrun runs without this).
    gc.collect()
    dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device, ctx: Dist) -> nn.Module:
    """The module the loop calls forward on: DDP around `model` when distributed, else `model`."""
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


def on_main(ctx: Dist, fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and hand its result to every rank. A UserError raised there is raised
    on every rank, so all processes stop with the same sentence instead of waiting on rank 0."""
    if not ctx.enabled:
        return fn()
    box: list = [None]
    if ctx.is_main:
        try:
            box[0] = ("ok", fn())
        except UserError as e:
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def sum_over_ranks(values: list[float], device: torch.device, ctx: Dist) -> list[float]:
    """Element-wise sums over all ranks (e.g. loss sum, correct, seen)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_scores(scores) -> None:
    """Sum an importance's sums (edgeprune.prune.importance.Importance.tensors(): for Taylor scores
    the unit and connection sums and the batch count) over all ranks, in place.

    With DDP the gradients the scores come from are already averaged, so every rank holds the same
    scores and the sum is world x each; summing anyway keeps the pruning decision identical on
    every rank even if a rank's scores ever differ (per-rank hooks, non-deterministic kernels)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    # one collective per dtype, on the device the backend works on (nccl: this rank's GPU)
    comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    named = scores.tensors()  # the same names in the same order on every rank
    by_dtype: dict[torch.dtype, list[str]] = {}
    for name, t in named.items():
        by_dtype.setdefault(t.dtype, []).append(name)
    summed = {}
    for names in by_dtype.values():
        flat = torch.cat([named[k].to(comm).reshape(-1) for k in names])
        dist.all_reduce(flat)
        for k, part in zip(names, flat.split([named[k].numel() for k in names])):
            summed[k] = part.view_as(named[k])
    scores.load_tensors(summed)


def fingerprint(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(structure, weights): every parameter's shape, and its sum and sum of squares."""
    params = list(model.parameters())
    device = params[0].device
    shapes = [d for p in params for d in (p.dim(), *p.shape)]
    structure = torch.tensor([len(params), *shapes], dtype=torch.float64, device=device)
    weights = torch.stack([s for p in params for s in (p.detach().double().sum(), p.detach().double().square().sum())])
    return structure, weights


def check_in_sync(model: nn.Module, ctx: Dist, rtol: float = 1e-5) -> None:
    """Fail loudly if the ranks' models differ: the structure must be identical, the weights equal
    (DDP keeps them bitwise equal; the tolerance only guards against kernels that are not)."""
    if not ctx.enabled:
        return
    structure, weights = fingerprint(model)
    n = torch.tensor([structure.numel()], device=structure.device)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world)]
    dist.all_gather(sizes, n)
    if len({int(s) for s in sizes}) > 1:
        raise RuntimeError("ranks hold models of different structure after a pruning step; this is a bug in edgeprune.")
    gathered = [torch.zeros_like(structure) for _ in range(ctx.world)]
    dist.all_gather(gathered, structure)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError("ranks hold models of different structure after a pruning step; this is a bug in edgeprune.")
    ws = [torch.zeros_like(weights) for _ in range(ctx.world)]
    dist.all_gather(ws, weights)
    if any(not torch.allclose(w, ws[0], rtol=rtol, atol=1e-8) for w in ws):
        raise RuntimeError("ranks' weights have drifted apart; this is a bug in edgeprune or the backend.")
