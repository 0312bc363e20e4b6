"""Grid launching: every unfinished cell of a planned grid (``featdrop.lab.plan``) in its own worker process.

    featdrop grid --runs-dir runs/grid overlay=shapes,digits,letters,none views=expert,viewmaker \\
        seed=0,1,2 preset=paper [--workers N|auto] [--gpus all|0,1] [--shard i/n]

``FIELD=V1,V2,...`` sweeps a config field, ``FIELD=V`` fixes it for every cell. Each cell runs ``pretrain``
in its own worker process, in ``<runs-dir>/<name>``. Workers run several per GPU and are spread over the
GPUs (``CUDA_VISIBLE_DEVICES``, round-robin); on a CPU they share the cores. Re-running the command skips
finished cells and resumes partial ones; the cell's lock (``featdrop.rundir``) keeps two launchers from
running one cell, so launchers on several machines can share a grid on a shared file system (``--shard
i/n`` splits it into n disjoint slices). A failing cell leaves its traceback in ``error.txt`` and does not
stop the others; the command then exits 1 and names it. At the end: mean ± sd over seeds of the probes,
grouped by the other swept fields.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import device as devmod
from .. import fields, rundir, runlock
from ..errors import ConfigError, RunLockedError
from ..train import pretrain
from . import concurrency, tables
from .plan import Cell, epochs_done, finished, parse_shard, plan, shard_cells

LOCKED_EXIT = 3             # a worker found its cell held by another process
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- one cell, in its own process
def run_cell(params: dict, threads: int) -> int:
    """The worker: hold the cell's lock, pretrain, record a failure in error.txt. Returns the exit code."""
    torch.set_num_threads(threads)
    out = Path(params["out_dir"])
    try:
        lock = runlock.acquire(out)
    except RunLockedError as e:
        print(e, file=sys.stderr, flush=True)
        return LOCKED_EXIT
    with lock:
        print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {json.dumps(params)}", flush=True)
        try:
            metrics = pretrain(**params)
        except KeyboardInterrupt:
            return 130
        except BaseException:
            rundir.atomic_write_text(out / "error.txt", traceback.format_exc())
            traceback.print_exc()
            return 1
        (out / "error.txt").unlink(missing_ok=True)
        print(f"--- done: {json.dumps(metrics, default=str)}", flush=True)
    return 0


# ---------------------------------------------------------------------------- the launcher
@dataclass
class GridResult:
    cells: list[Cell]                       # this shard's cells
    status: dict[str, str]                  # name → finished | done | held | failed | interrupted
    runs: Any = None                        # tables.collect over the whole grid's finished cells
    table: Any = None                       # tables.summary of it
    workers: int = 1
    wall_s: float = 0.0
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def run(runs_dir: str | os.PathLike, sweep: dict[str, list], fixed: dict | None = None,
        workers: int | str = 1, gpus: str | list | None = "all", shard: tuple[int, int] = (0, 1),
        poll_s: float = 1.0) -> GridResult:
    """Run (or resume) every unfinished cell of this shard of the grid; returns statuses and the table.

    ``workers``: worker processes per GPU (on a CPU: in all), or "auto" to measure how many raise the
    total throughput. Bad input raises ConfigError before anything runs."""
    cores = concurrency.cores

    t0 = time.perf_counter()
    concurrency.check_workers(workers)  # before planning: bad input fails whether or not work is queued
    every = plan(runs_dir, sweep, fixed)
    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
        raise ConfigError(f"shard {shard}: expected (i, n) with 0 <= i < n")
    mine = shard_cells(every, i, n)
    gpu_ids = devmod.visible_gpus(gpus, needs_gpu=any(c.params.get("device", "auto") != "cpu" for c in mine))
    print(f"grid {runs_dir}: {len(every)} cells" + (f", shard {i}/{n}: {len(mine)} of them" if n > 1 else ""),
          flush=True)
    status, queue = _triage(mine)
    k = concurrency.choose_workers(workers, queue, gpu_ids, print) if queue else 1
    slots = [(gpu_ids[s % len(gpu_ids)] if gpu_ids else None) for s in range(k * max(1, len(gpu_ids)))]
    slots = slots[:max(1, len(queue))]
    threads = max(1, cores() // len(slots))
    if queue:
        where = f"{len(gpu_ids)} GPU(s) ({', '.join(gpu_ids)})" if gpu_ids else f"the CPU ({cores()} cores)"
        print(f"  running {len(queue)} cell(s): {len(slots)} worker(s) on {where}, {threads} thread(s) each; "
              f"logs in <cell>/grid.log", flush=True)
        _drive(queue, slots, threads, status, poll_s)
    result = GridResult(mine, status, workers=k, wall_s=time.perf_counter() - t0,
                        failed=[c.name for c in mine if status.get(c.name) == "failed"])
    result.runs, result.table = _summary(every, sweep)
    return result


def _triage(cells: list[Cell]) -> tuple[dict[str, str], list[Cell]]:
    """Skip finished cells and cells a live process holds (reported); the rest is the queue."""
    status: dict[str, str] = {}
    queue = []
    for c in cells:
        state, info = runlock.inspect(c.dir)
        if finished(c):
            status[c.name] = "finished"
        elif state == "held":
            status[c.name] = "held"
            print(f"  skip {c.name}: running elsewhere ({runlock.describe(info)})", flush=True)
        else:
            if state == "stale":
                print(f"  {c.name}: taking over the lock left by {runlock.describe(info)} "
                      "(no longer running)", flush=True)
            queue.append(c)
    if "finished" in status.values():
        print(f"  {sum(s == 'finished' for s in status.values())} cell(s) finished before: skipped",
              flush=True)
    return status, queue


def _drive(queue: list[Cell], slots: list[str | None], threads: int, status: dict[str, str], poll_s: float):
    """Keep every slot busy with the next cell; poll the workers and the cells' history for one
    progress bar (epochs done of all the queue's epochs, cells done / running / failed)."""

    running: dict[int, tuple[Cell, subprocess.Popen, Any]] = {}
    pending = list(queue)
    # a cell counts its epochs plus one step for its probes and figures: 100 % only when every metrics.json
    # is written
    bar = tqdm(total=sum(c.epochs + 1 for c in queue), initial=sum(epochs_done(c) for c in queue),
               unit="step", desc="grid (epochs + probes)", mininterval=1.0 if sys.stderr.isatty() else 30.0)
    try:
        while pending or running:
            for s in range(len(slots)):
                while s not in running and pending:
                    c = pending.pop(0)
                    holder = runlock.holder(c.dir)
                    if finished(c) or holder:  # another launcher got there since the triage
                        status[c.name] = "held" if holder else "finished"
                        bar.write(f"  skip {c.name}: " + (f"running elsewhere ({runlock.describe(holder)})"
                                                          if holder else "finished elsewhere"))
                        continue
                    running[s] = (c, *_launch(c, slots[s], threads))
            time.sleep(poll_s)
            for s, (c, proc, log) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[s]
                    status[c.name] = _finish(c, proc.returncode, bar)
            bar.n = sum(c.epochs + 1 if status.get(c.name) == "done" else epochs_done(c) for c in queue)
            done, failed = (sum(status.get(c.name) == s for c in queue) for s in ("done", "failed"))
            bar.set_postfix_str(f"cells {done}/{len(queue)} done, {len(running)} running, {failed} failed",
                                refresh=False)
            bar.update(0)  # redraws at most every mininterval (1 s on a terminal, 30 s in a log file)
    except KeyboardInterrupt:
        for c, proc, log in running.values():
            proc.terminate()
            proc.wait()
            log.close()
            status[c.name] = "interrupted"
        bar.write("interrupted: run the same command again to resume (finished epochs are checkpointed)")
        raise
    finally:
        bar.close()


def _launch(c: Cell, gpu: str | None, threads: int):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    c.dir.mkdir(parents=True, exist_ok=True)
    log = open(c.dir / "grid.log", "a")
    job = json.dumps({"params": c.params, "threads": threads})
    proc = subprocess.Popen([sys.executable, "-m", "featdrop", "grid", "--run-cell", job], stdout=log,
                            stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent)
    return proc, log


def _die_with_parent() -> None:
    """In the worker, before it starts: ask the kernel to send it SIGTERM when the launcher dies, however it
    dies (kill -9 included), so no worker is left running as an orphan; its cell resumes on the next launch.
    Linux only (prctl PR_SET_PDEATHSIG); elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _finish(c: Cell, rc: int, bar) -> str:
    if rc == 0:
        (c.dir / "error.txt").unlink(missing_ok=True)
        m = rundir.read_json(c.dir / "metrics.json")

        def acc(key):  # None: a label the run does not have (overlay=none: alt)
            v = m.get(key, float("nan"))
            return "–" if v is None else f"{v:.3f}"

        bar.write(f"  done {c.name}: probe main {acc('probe_main')}, alt {acc('probe_alt')} "
                  f"({m.get('wall_s') or 0:.0f} s)")
        return "done"
    if rc == LOCKED_EXIT:
        bar.write(f"  skip {c.name}: another launcher took it first")
        return "held"
    err = c.dir / "error.txt"
    if not err.exists():  # the worker died without a traceback (killed, out of memory, segfault)
        tail = (c.dir / "grid.log").read_text(errors="replace").splitlines()[-40:]
        rundir.atomic_write_text(err, f"worker exited with code {rc} (negative: killed by that signal) "
                                    f"without a Python traceback; last lines of grid.log:\n"
                                    + "\n".join(tail) + "\n")
    last = [line for line in err.read_text(errors="replace").splitlines() if line.strip()][-1:]
    bar.write(f"  FAILED {c.name}: {last[0] if last else rc} (see {err})")
    return "failed"


def _summary(cells: list[Cell], sweep: dict):
    dirs = [c.dir for c in cells if (c.dir / "metrics.json").exists()]
    if not dirs:
        return None, None
    df = tables.collect(None, run_dirs=dirs)
    return df, tables.summary(df, by=[k for k in sweep if k != "seed"])


def launch_grid(runs_dir: str, overlays, views, seeds, workers: int | str = 1, **fixed):
    """Run the missing cells of overlays × views × seeds under ``runs_dir`` (the grid; cells
    are ``overlay-<o>__views-<v>__seed-<s>``); ``fixed``: config fields for every cell (None: not set).
    Returns the grid's result; raises RuntimeError naming the failed cells."""
    sweep = {"overlay": list(overlays), "views": list(views), "seed": list(seeds)}
    result = run(runs_dir, sweep, {k: v for k, v in fixed.items() if v is not None and k not in sweep},
                 workers=workers)
    if result.failed:
        raise RuntimeError(f"grid cells failed: {', '.join(result.failed)}; tracebacks in <cell>/error.txt "
                           f"under {runs_dir}")
    return result


# ---------------------------------------------------------------------------- command line
def _interrupt(signum, frame):
    raise KeyboardInterrupt


EXAMPLES = """examples:
  featdrop grid --runs-dir runs/opacity overlay_opacity=0.5,1.0 views=expert,viewmaker seed=0,1,2 preset=quick
  featdrop grid --runs-dir runs/grid overlay=shapes,digits views=expert,viewmaker preset=paper --workers auto
  featdrop grid --runs-dir /shared/runs/grid --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT overlay=...

Re-running the same command skips finished cells and resumes the others."""


def main(argv=None, prog: str = "featdrop grid") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", help="the grid's directory: one run directory per cell below it")
    ap.add_argument("--workers", default="1", help="worker processes per GPU (on a CPU: in all), or auto: "
                    "measure the throughput of 1, 2, 4, ... concurrent runs (about 10 s each) and take the "
                    "fewest within 5%% of the best. Small models gain from several per GPU")
    ap.add_argument("--gpus", default="all", help="GPUs to use: all (every visible one) or indices, e.g. 0,1")
    ap.add_argument("--shard", default="0/1", help="run only slice i of n (0 <= i < n) of the cells: "
                    "one slice per machine or per job of an array")
    ap.add_argument("--run-cell", help=argparse.SUPPRESS)
    ap.add_argument("fields", nargs="*", metavar="FIELD=V1,V2,...",
                    help="config fields (see featdrop/config.py; featdrop train --help lists them): a comma "
                         "list sweeps, one value fixes")
    argv = list(argv) if argv is not None else sys.argv[1:]
    fields.check_not_options(argv)  # --epochs 1: ConfigError saying epochs=1
    args = ap.parse_intermixed_args(argv)
    if not args.runs_dir and not args.run_cell:
        raise ConfigError("--runs-dir is required: the grid's directory, one run directory per cell below it")
    # scancel, kill: stop the workers too, as Ctrl-C does
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.run_cell:
            job = json.loads(args.run_cell)
            return run_cell(job["params"], job["threads"])
        sweep, fixed = fields.parse_assignments(args.fields)
        result = run(args.runs_dir, sweep, fixed, workers=args.workers, gpus=args.gpus,
                     shard=parse_shard(args.shard))
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = {s: sum(v == s for v in result.status.values()) for s in ("done", "finished", "held", "failed")}
    print(f"\ngrid: {counts['done']} cell(s) run, {counts['finished']} finished before, "
          f"{counts['held']} running elsewhere, {counts['failed']} failed; wall {result.wall_s:.1f} s")
    if result.table is not None:
        print("\nlinear-probe accuracy, mean ± sd over seeds (finished cells of the whole grid):")
        print(result.table.to_string())
        paired = tables.paired_suppression(result.runs)
        if len(paired):
            print("\nsuppression = control − run, seed by seed (control: overlay=none or overlay_opacity=0; "
                  "audio: the lowest noise_volume):")
            print(tables.format_paired(paired).to_string(index=False))
    if result.failed:
        print(f"\nFAILED: {', '.join(result.failed)} (tracebacks in <cell>/error.txt under {args.runs_dir})",
              file=sys.stderr)
        return 1
    return 0
