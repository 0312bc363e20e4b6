"""How many runs share one device well: the aggregate images/s of k concurrent runs.

``concurrent_throughput`` starts max(k) processes that each build the training code's own Trainer on
synthetic batches and time ``Trainer.step``; for each k, k of them run together from a common start signal
and their rates are summed. ``featdrop grid --workers auto`` takes the fewest workers within 5 % of the
best; ``featdrop bench train`` prints the whole curve and projects grid times from it.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import torch

from .. import config
from .. import device as devmod
from ..data.base import Data
from ..errors import ConfigError
from ..train import Trainer
from ..views.modality import image_modality


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def synthetic_trainer(**fields) -> Trainer:
    """The training code's Trainer on synthetic data (nothing loaded), e.g. views="viewmaker"."""
    fields.setdefault("out_dir", tempfile.mkdtemp(prefix="featdrop-bench-"))
    fields["progress"] = False
    return Trainer(config.make(**fields), data=Data(image_modality(), None, None, 10, 1))


def synthetic_batch(batch: int, device, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed)).to(device)


def _worker(job: dict) -> None:
    """One process of ``concurrent_throughput``: build and warm up, say "ready"; then for every line
    "THREADS SECONDS" on stdin, time steps for that long and answer with a JSON line."""
    torch.set_num_threads(job["threads"])
    trainer = synthetic_trainer(**job["fields"])
    batch = trainer.cfg.batch_size
    raw = synthetic_batch(batch, trainer.device, seed=os.getpid())
    g = torch.Generator(device=trainer.device).manual_seed(0)
    for _ in range(job["warmup"]):
        trainer.step(raw, g)
    devmod.sync(trainer.device)
    print("ready", flush=True)
    for line in sys.stdin:
        threads, seconds = line.split()
        torch.set_num_threads(int(threads))
        n, t = 0, time.perf_counter()
        while n < 1 or time.perf_counter() - t < float(seconds):
            trainer.step(raw, g)
            devmod.sync(trainer.device)
            n += 1
        print(json.dumps({"images": n * batch, "seconds": time.perf_counter() - t}), flush=True)


def concurrent_throughput(fields: dict, ks: Sequence[int], seconds: float = 3.0, warmup: int | None = None,
                          env: dict | None = None,
                          log: Callable[[str], None] | None = print) -> dict[int, float]:
    """Aggregate images/s of k processes on one device, for each k in ``ks``. max(ks) processes each
    build a Trainer from the config ``fields`` (its ``views`` picks the expert or the viewmaker step)
    and warm up, once; then, for each k, k of them time ``Trainer.step`` for ``seconds`` from a common
    start signal and their rates are summed. On a CPU the k share the cores (cores // k torch threads
    each). ``env``: the processes' environment (e.g. CUDA_VISIBLE_DEVICES pinning one GPU)."""
    ks = sorted(set(ks))
    on_gpu = fields.get("device") != "cpu" and torch.cuda.is_available()
    job = {"fields": {**fields, "progress": False}, "threads": max(1, cores() // ks[-1]),
           "warmup": warmup if warmup is not None else (3 if on_gpu else 1)}
    procs, errs = [], []
    out: dict[int, float] = {}
    try:
        for _ in range(ks[-1]):
            errs.append(tempfile.TemporaryFile("w+"))
            procs.append(subprocess.Popen([sys.executable, "-m", "featdrop.lab.concurrency", json.dumps(job)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errs[-1],
                                          text=True, env=env))
        for p, err in zip(procs, errs):
            if p.stdout.readline().strip() != "ready":
                p.wait()
                err.seek(0)
                raise RuntimeError(f"a throughput worker failed (exit {p.returncode}):\n{err.read()[-3000:]}")
        for k in ks:
            threads = max(1, cores() // k)
            for p in procs[:k]:  # the start signal
                p.stdin.write(f"{threads} {seconds}\n")
                p.stdin.flush()
            out[k] = sum(r["images"] / r["seconds"]
                         for r in (json.loads(p.stdout.readline()) for p in procs[:k]))
            if log:
                log(f"  {k} concurrent run(s) ({threads} thread(s) each): {out[k]:9,.0f} images/s in all")
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()  # the worker's loop ends
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()
        for err in errs:
            err.close()
    return out


def default_ks(cuda: bool, limit: int | None = None) -> list[int]:
    """k = 1, 2, 4, … : up to 8 per GPU, up to the number of cores on a CPU; at most ``limit``."""
    top = min(8 if cuda else cores(), limit or 10**6)
    ks = [1]
    while ks[-1] * 2 <= top:
        ks.append(ks[-1] * 2)
    return ks


def choose_concurrency(rates: dict[int, float], tolerance: float = 0.05) -> int:
    """The smallest k whose aggregate throughput is within ``tolerance`` of the best."""
    best = max(rates.values())
    return min(k for k, r in rates.items() if r >= (1 - tolerance) * best)


def check_workers(workers) -> None:
    """ConfigError unless ``workers`` is a positive integer or "auto"."""
    if workers != "auto" and (isinstance(workers, bool) or not str(workers).isdigit() or int(workers) < 1):
        raise ConfigError(f"--workers {workers}: expected a positive integer or auto")


def choose_workers(workers, queue: list, gpu_ids: list[str], say) -> int:
    """Worker processes per device for a grid's ``queue`` of cells: ``workers`` as given, or for "auto" the
    fewest whose aggregate throughput is within 5 % of the best (measured on the queue's first viewmaker
    cell, the costliest kind)."""
    check_workers(workers)
    if workers != "auto":
        return int(workers)
    per_device = math.ceil(len(queue) / max(1, len(gpu_ids)))
    ks = default_ks(bool(gpu_ids), limit=per_device)
    if len(ks) == 1:
        say("--workers auto: 1 worker per device (no more cells than devices)")
        return 1
    probe = next((c for c in queue if c.params.get("views") == "viewmaker"), queue[0])
    params = {k: v for k, v in probe.params.items() if k != "out_dir"}
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": gpu_ids[0]} if gpu_ids else {})}
    say(f"--workers auto: measuring the throughput of k concurrent {probe.name} runs on one "
        f"{'GPU' if gpu_ids else 'CPU'} ...")
    rates = concurrent_throughput(params, ks, seconds=3.0, env=env, log=say)
    k = choose_concurrency(rates)
    say(f"--workers auto: chose {k} worker(s) per device (the fewest within 5% of the best throughput)")
    return k


if __name__ == "__main__":  # one worker process of concurrent_throughput
    _worker(json.loads(sys.argv[1]))
