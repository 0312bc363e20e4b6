"""One run over several processes, as torchrun starts them:

    torchrun --nproc_per_node N -m featdrop train FIELD=VALUE ...          # one machine
    torchrun --nnodes M --nproc_per_node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m featdrop train ...

NCCL on CUDA (one GPU per process, ``LOCAL_RANK``), gloo on a CPU. The run is the same experiment as one
process with the same config (``batch_size`` is the global batch):
- each process takes its slice of the same global permutation, and every item gets the same views whatever
  the number of processes (``featdrop.views.draws.Rows``);
- the contrastive loss sees every process's embeddings, gathered with their gradient (``World.gather``), so
  the negatives are the global batch's; every process computes the same global loss;
- gradients are averaged over the processes (``World.average_gradients``). Why that is exact: the gather's
  backward sums each process's gradient of its copy of the loss, so a process's gradient of the global loss
  arrives N times, and the mean over processes divides it back; terms computed on the local slice (a CE
  head, a reconstruction) average to the global batch's mean. A test compares every parameter with a single
  process's after k steps;
- BatchNorm takes the global batch's statistics with ``sync_batchnorm`` (the default: one process's
  numbers); on CUDA ``torch.nn.SyncBatchNorm``, on a CPU ``SyncBatchNorm2d`` below (torch's runs on GPUs
  only);
- rank 0 alone holds the run lock, writes the run's files and runs the monitor, oracles and probes; the
  others wait for it (``World.wait_for``) with a timeout (``FEATDROP_DIST_TIMEOUT`` seconds, default 1800)
  and a message saying what they wait for.
A process that dies stops the others with a ``DistributedError`` naming the rank and epoch; the checkpoint of
the last finished epoch is kept and the same command resumes.
"""
from __future__ import annotations

import datetime
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.nn import functional as dfn

from ..errors import ConfigError, DistributedError

TIMEOUT_ENV = "FEATDROP_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800


def timeout_s() -> float:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise ConfigError(f"environment variable {TIMEOUT_ENV} = {text!r} is invalid: allowed a positive "
                          f"number of seconds")
    return value


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank r of ``size`` processes (1: an ordinary single-process run, where
    every method below is the identity or a no-op)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The process's own device: cuda:LOCAL_RANK on CUDA."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.size > 1 else device

    def rows(self, batch: int) -> tuple[int, int]:
        """This process's rows lo:hi of a global batch."""
        per = batch // self.size
        return self.rank * per, (self.rank + 1) * per

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every process's x (B/N, ...), concatenated in rank order (B, ...), with gradient."""
        return x if self.size == 1 else torch.cat(dfn.all_gather(x), 0)

    def gather_labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if y is None or self.size == 1:
            return y
        out = [torch.empty_like(y) for _ in range(self.size)]
        dist.all_gather(out, y.contiguous())
        return torch.cat(out)

    def average_gradients(self, params) -> None:
        """Each gradient replaced by its mean over the processes, in one all-reduce."""
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            flat = torch._utils._flatten_dense_tensors(grads)
            dist.all_reduce(flat)
            flat /= self.size
            for g, mean in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                g.copy_(mean)

    def mean(self, values: dict) -> dict:
        """{name: 0-d tensor} averaged over the processes (an epoch's statistics), in one all-reduce."""
        if self.size == 1 or not values:
            return values
        stacked = torch.stack([v.float() for v in values.values()])
        dist.all_reduce(stacked)
        return dict(zip(values, stacked / self.size))

    def wait_for(self, what: str, error: BaseException | None = None) -> None:
        """Every process meets here after rank 0 has done ``what`` alone (its files, the monitor, the probes);
        an error rank 0 met there stops every process, named. The wait has the process group's timeout."""
        if self.size == 1:
            if error is not None:
                raise error
            return
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        try:
            dist.broadcast_object_list(box, src=0)
        except Exception as exc:  # a timeout or a lost peer
            raise lost(self, f"waiting for rank 0 to finish {what}", exc) from None
        if error is not None:
            raise error
        if box[0] is not None:
            raise DistributedError(f"rank {self.rank} of {self.size}: rank 0 stopped while {what}: {box[0]}")

    def on_main(self, what: str, fn) -> None:
        """``fn()`` on rank 0 alone (files, the monitor, the probes) while the others wait for it; an error
        there stops every process, named (in a single process: ``fn()``)."""
        error = None
        if self.main:
            if self.size == 1:
                fn()
                return
            try:
                fn()
            except Exception as exc:
                error = exc
        self.wait_for(what, error)

    def share(self, value):
        """Rank 0's ``value`` on every process (any picklable object; in a single process: ``value``)."""
        if self.size == 1:
            return value
        box = [value]
        try:
            dist.broadcast_object_list(box, src=0)
        except Exception as exc:
            raise lost(self, "receiving rank 0's results", exc) from None
        return box[0]

    def check_same(self, config: dict) -> None:
        """ConfigError on every process when the processes were given different configs."""
        if self.size == 1:
            return
        every = [None] * self.size
        dist.all_gather_object(every, config)
        for rank, other in enumerate(every):
            differ = {k: (every[0].get(k), other.get(k)) for k in set(every[0]) | set(other)
                      if every[0].get(k) != other.get(k)}
            if differ:
                raise ConfigError(f"the processes of this torchrun run were given different configs: "
                                  f"rank {rank} differs from rank 0 in (field: rank 0, rank {rank}) "
                                  f"{differ}; give every process the same FIELD=VALUE arguments")


def lost(world: World, what: str, exc: BaseException) -> DistributedError:
    first = (str(exc).splitlines() or [""])[0][:200]
    return DistributedError(
        f"rank {world.rank} of {world.size}: another process stopped or did not answer while {what} "
        f"({type(exc).__name__}: {first}); the run stopped. The checkpoint of the last finished epoch is "
        f"kept: run the same command again to resume (a slow rank 0 may need a larger {TIMEOUT_ENV}, now "
        f"{timeout_s():g} s)")


def requested() -> int:
    """The number of processes torchrun (or any env:// launcher) asks for: WORLD_SIZE, else 1."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable WORLD_SIZE = {text!r} is invalid: allowed a positive "
                          f"integer (torchrun sets it)") from None


def check(cfg, size: int, cuda: bool) -> str:
    """The backend for ``size`` processes, after the checks that need no other process: ConfigError for a
    batch the processes cannot share or NCCL on a CPU."""
    if cfg.batch_size < size:
        raise ConfigError(f"config field 'batch_size' = {cfg.batch_size} is invalid for {size} processes: "
                          f"each process needs at least one item of the global batch; allowed at least "
                          f"{size} (or fewer processes: torchrun --nproc_per_node)")
    if cfg.batch_size % size:
        raise ConfigError(f"config field 'batch_size' = {cfg.batch_size} is invalid for {size} processes: "
                          f"the global batch is split evenly; allowed a multiple of {size}, e.g. "
                          f"{cfg.batch_size // size * size or size}")
    backend = cfg.dist_backend if cfg.dist_backend != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise ConfigError(f"config field 'dist_backend' = 'nccl' is invalid with device={cfg.device!r}: NCCL "
                          f"runs on CUDA GPUs only; allowed gloo or auto on a CPU")
    return backend


def init(cfg, cuda: bool) -> World:
    """This process's World: under torchrun (WORLD_SIZE > 1) the process group is set up here, once per
    process; else the single-process World."""
    size = requested()
    if size <= 1:
        return World()
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), local)
    backend = check(cfg, size, cuda)
    if cuda:
        torch.cuda.set_device(local)
    t = timeout_s()
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=t))
    except Exception as exc:  # the rendezvous never completed (a process missing, a wrong address)
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise DistributedError(
            f"rank {rank} of {size}: the rendezvous at {where} did not complete within {t:g} s "
            f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}): start all {size} processes "
            f"(torchrun --nproc_per_node, and --nnodes with the same --rdzv-endpoint on every machine) or "
            f"raise {TIMEOUT_ENV}") from None
    signal.signal(signal.SIGTERM, _stopped)  # torchrun stops the others when a process dies
    return World(rank, size, local)


def close() -> None:
    """Take this process's process group down before the process exits (a gloo group left to the interpreter's
    shutdown can abort the process: "terminate called without an active exception", seen under load)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _stopped(signum, frame):
    raise DistributedError(f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')}: "
                           f"stopped by torchrun (signal {signum}), because another process of the run "
                           f"failed; the checkpoint of the last finished epoch is kept: run the same command "
                           f"again to resume")


# ---------------------------------------------------------------------------- BatchNorm over the global batch
class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's: the per-channel mean, then the variance
    about it, each summed over the processes with gradient (two all-reduces, as exact as one process's two
    passes). In eval mode, or in a single process, it is BatchNorm2d. For CPU runs: torch.nn.SyncBatchNorm
    runs on GPUs only."""

    def forward(self, x):
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        n = x.numel() // c * dist.get_world_size()
        mean = dfn.all_reduce(x.sum((0, 2, 3))) / n                          # (C,)
        centred = x - mean[None, :, None, None]
        var = dfn.all_reduce((centred * centred).sum((0, 2, 3))) / n         # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(n - 1, 1), alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(module: nn.Module, cuda: bool) -> nn.Module:
    """``module`` with every BatchNorm2d computing the global batch's statistics (the same weights and
    buffers, the same state_dict keys)."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats).to(child.weight.device if child.affine else None)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            sync_batchnorm(child, cuda)
    return module
