"""One run over processes against one process with the threads: ``featdrop bench ranks`` times the training
step (``Trainer.step``, synthetic batches of the preset's global batch) as N processes of a torchrun run with
T threads each, and as one process with N × T threads, in the same command, one after the other, each
alone on the machine: images/s of the global batch, for the expert and the viewmaker step.

    featdrop bench ranks                      # 2 processes x 1 thread against 1 process x 2 threads, CPU
    featdrop bench ranks --processes 4 --threads 4 --device cuda   # on a machine with 4 GPUs
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import torch

from ..lab.concurrency import cores


def worker(kind: str, steps: int, out: str, device: str, preset: str) -> None:
    """One process of the measurement (under torchrun or alone): warm up, time ``steps`` steps of the global
    batch (this process's rows of it), and (rank 0) write images/s of the global batch to ``out``."""
    from .. import config
    from ..data.base import Data
    from ..lab.concurrency import synthetic_batch
    from ..train import Trainer, distributed
    from ..views import draws
    from ..views.modality import image_modality

    cfg = config.resolve(config.make(views=kind, device=device, preset=preset, progress=False,
                                     out_dir=tempfile.mkdtemp(prefix="featdrop-ranks-")))
    world = distributed.init(cfg, cuda=cfg.device.startswith("cuda"))
    trainer = Trainer(cfg, data=Data(image_modality(), None, None, 10, 3), world=world)
    batch, (lo, hi) = cfg.batch_size, world.rows(cfg.batch_size)
    raw = synthetic_batch(batch, trainer.device)[lo:hi]
    g = torch.Generator(device=trainer.device).manual_seed(0)
    rows = g if world.size == 1 else draws.Rows(g, batch, lo, hi)
    sync = torch.cuda.synchronize if trainer.cuda else (lambda: None)
    trainer.step(raw, rows)
    sync()
    if world.size > 1:
        torch.distributed.barrier()
    t = time.perf_counter()
    for _ in range(steps):
        trainer.step(raw, rows)
    sync()
    seconds = time.perf_counter() - t
    if world.main:
        with open(out, "w") as f:
            json.dump({"images_per_s": steps * batch / seconds, "threads": torch.get_num_threads()}, f)
    distributed.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(kind: str, processes: int, threads: int, steps: int, device: str, preset: str) -> float:
    """images/s of ``processes`` × ``threads`` (processes 1: a plain process)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rate.json")
        env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        env["OMP_NUM_THREADS"] = str(threads)
        args = ["-m", "featdrop.bench.ranks", "--worker", kind, str(steps), out, device, preset]
        cmd = [sys.executable, *args] if processes == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(_free_port()), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        with open(out) as f:
            return json.load(f)["images_per_s"]


EXAMPLES = """examples:
  featdrop bench ranks
  featdrop bench ranks --processes 2 --threads 1 --steps 20 --kinds expert"""


def main(argv=None, prog: str = "featdrop bench ranks") -> dict:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per process (the plain process gets "
                    "processes x threads)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--kinds", nargs="+", default=["expert", "viewmaker"], choices=("expert", "viewmaker"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (ABAB), the median is shown")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        kind, steps, out, device, preset = args.worker
        worker(kind, int(steps), out, device, preset)
        return {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"{args.device}, {cores()} cores, load average {load:.1f}; preset {args.preset}; {args.steps} "
          f"steps after one warm-up, {args.rounds} round(s) alternating", flush=True)
    results = {}
    for kind in args.kinds:
        rates = {"ranks": [], "one": []}
        for _ in range(args.rounds):
            rates["ranks"].append(measure(kind, args.processes, args.threads, args.steps, args.device,
                                          args.preset))
            rates["one"].append(measure(kind, 1, args.processes * args.threads, args.steps, args.device,
                                        args.preset))
        med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
        results[kind] = med
        each = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(rates["ranks"], rates["one"]))
        print(f"  {kind} step: {args.processes} processes x {args.threads} thread(s) {med['ranks']:8.1f} "
              f"images/s; 1 process x {args.processes * args.threads} threads {med['one']:8.1f}; ratio "
              f"{med['ranks'] / med['one']:.2f} (rounds: {each})", flush=True)
    return results


if __name__ == "__main__":
    main()
