"""A grid of runs: the Cartesian product of swept config fields, each cell an ordinary run directory.

    python -m featdrop.grid --runs-dir runs/grid overlay=shapes,digits,letters,none views=expert,viewmaker \\
        seed=0,1,2 preset=paper [--workers N|auto] [--gpus all|0,1] [--shard i/n]

``FIELD=V1,V2,...`` sweeps a config field, ``FIELD=V`` fixes it for every cell. Each cell runs
``train.pretrain`` in its own worker process, in ``<runs-dir>/<name>``, the name made of the swept
fields in command-line order (``overlay-shapes__views-expert__seed-0``). Workers run several per GPU
and are spread over the GPUs (``CUDA_VISIBLE_DEVICES``, round-robin); on a CPU they share the cores.
Re-running the command skips finished cells and resumes partial ones; the cell's lock
(``featdrop.runlock``) keeps two launchers from running one cell, so launchers on several machines can
share a grid on a shared file system (``--shard i/n`` splits it into n disjoint slices). A failing
cell leaves its traceback in ``error.txt`` and does not stop the others; the command then exits 1 and
names it. At the end: mean ± sd over seeds of the probes, grouped by the other swept fields.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config, runlock, runs
from .config import Config, ConfigError

OWNED = ("out_dir",)        # the grid names every cell's directory
LOCKED_EXIT = 3             # a worker found its cell held by another process
ROOT = Path(__file__).resolve().parents[1]


class GridError(ValueError):
    """Bad grid input; the message names the field, the value and what is allowed."""


# ---------------------------------------------------------------------------- input
def _types(name: str) -> tuple:
    hint = typing.get_type_hints(Config)[name]
    return typing.get_args(hint) or (hint,)


def _type_names(types: tuple) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def parse_value(name: str, text: str) -> Any:
    """A command-line value as the field's annotated type: True/False, None, int, float or str
    (tried in the annotation's order, so ``subset`` (int | str | None) reads "5000" as 5000 and
    "all" as "all")."""
    check_field(name)
    types, t = _types(name), text.strip()
    if t == "None":
        if type(None) in types:
            return None
        raise GridError(f"{name}=None is invalid: {name} is {_type_names(types)}, not optional")
    for typ in types:
        if typ is bool and t in ("True", "False", "true", "false"):
            return t in ("True", "true")
        if typ is int and re.fullmatch(r"[+-]?\d+", t):
            return int(t)
        if typ is float:
            try:
                return float(t)
            except ValueError:
                pass
        if typ is str and t:
            return t
    allowed = "True or False" if bool in types else _type_names(types)
    raise GridError(f"{name}={text!r} is invalid: expected {allowed}")


def check_field(name: str) -> None:
    if name in OWNED:
        raise GridError(f"{name} cannot be a grid field: the grid runs every cell in <runs-dir>/<cell name>; "
                        f"choose the directory with --runs-dir (Python: runs_dir)")
    if name not in config.field_names():
        close = difflib.get_close_matches(name, config.field_names(), n=1)
        raise GridError(f"unknown config field {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                        + f"; known fields: {', '.join(config.field_names())}")


def parse_assignments(args: list[str]) -> tuple[dict[str, list], dict[str, Any]]:
    """``FIELD=V1,V2`` → sweep[FIELD] = [V1, V2]; ``FIELD=V`` → fixed[FIELD] = V (in argument order)."""
    sweep: dict[str, list] = {}
    fixed: dict[str, Any] = {}
    for arg in args:
        name, eq, text = arg.partition("=")
        name = name.strip()
        if not eq or not name:
            raise GridError(f"{arg!r} is not FIELD=V1,V2,...: e.g. overlay=shapes,digits (sweeps) or epochs=10 (fixes)")
        check_field(name)
        if name in sweep or name in fixed:
            raise GridError(f"{name} is given twice; give it once, with all its values: {name}=V1,V2,...")
        parts = text.split(",")
        if not text.strip() or any(not p.strip() for p in parts):
            raise GridError(f"{arg!r}: empty value; give {name}=V1,V2,... with no empty entries")
        values = [parse_value(name, p) for p in parts]
        if len(values) == 1:
            fixed[name] = values[0]
        else:
            sweep[name] = values
    return sweep, fixed


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not int(m[1]) < int(m[2]):
        raise GridError(f"--shard {text}: expected i/n with 0 <= i < n, e.g. --shard 0/4 ... --shard 3/4 "
                        f"(with a SLURM array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return int(m[1]), int(m[2])


# ---------------------------------------------------------------------------- cells
@dataclass
class Cell:
    name: str
    dir: Path
    params: dict            # config fields for train.pretrain, out_dir included
    epochs: int             # resolved


def _fmt(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "_", str(value))


def plan(runs_dir: str | os.PathLike, sweep: dict[str, list], fixed: dict | None = None) -> list[Cell]:
    """Every cell of the grid, validated (``config.make`` and ``config.resolve``) before anything runs."""
    fixed = dict(fixed or {})
    for name in [*sweep, *fixed]:
        check_field(name)
    if not sweep:
        raise GridError("nothing is swept: give at least one FIELD=V1,V2,... (a single run is train.pretrain or "
                        "notebooks/pretrain.ipynb)")
    both = sorted(set(sweep) & set(fixed))
    if both:
        raise GridError(f"{both} both swept and fixed; give each field once")
    for name, values in sweep.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise GridError(f"{name}: empty list of values; give at least one value")
        if len({repr(v) for v in values}) != len(values):
            raise GridError(f"{name}={list(values)}: a value is repeated")
    fixed["progress"] = False  # one progress display: the launcher's
    cells = []
    for combo in itertools.product(*sweep.values()):
        point = dict(zip(sweep, combo))
        name = "__".join(f"{k}-{_fmt(v)}" for k, v in point.items())
        out = Path(runs_dir) / name
        params = {**fixed, **point, "out_dir": str(out)}
        if str(params.get("device", "auto")).startswith("cuda:"):
            raise GridError(f"device={params['device']!r}: the grid places cells on GPUs itself; use "
                            f"device=cuda (or auto) and --gpus to choose the GPUs")
        try:
            cfg = config.make(**params)
            resolved = config.resolve(cfg, cuda_available=_cuda_available() and cfg.device != "cpu")
        except ConfigError as e:
            raise GridError(f"cell {name}: {e}") from None
        cells.append(Cell(name, out, params, resolved.epochs))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise GridError(f"two cells get the same directory name ({names}); use values that differ after "
                        f"replacing characters other than letters, digits and . + - by _")
    return cells


def shard_cells(cells: list[Cell], i: int, n: int) -> list[Cell]:
    """The i-th of n disjoint slices (round-robin, so each slice gets a mix of cheap and costly cells)."""
    return cells[i::n]


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _resume_free() -> set[str]:
    from . import train

    return set(getattr(train, "RESUME_FREE", ()))


def finished(cell: Cell) -> bool:
    """metrics.json exists for the same config (as train.pretrain would see it) and enough epochs."""
    if not (cell.dir / "metrics.json").exists() or not (cell.dir / "config.json").exists():
        return False
    saved = {**dataclasses.asdict(Config()), **runs.read_json(cell.dir / "config.json")}
    cfg = config.make(**cell.params)
    now = dataclasses.asdict(config.resolve(cfg, cuda_available=_cuda_available() and cfg.device != "cpu"))
    free = _resume_free()
    same = all(saved.get(k) == v for k, v in now.items() if k not in free)
    return same and (saved.get("epochs") or 0) >= cell.epochs


def epochs_done(cell: Cell) -> int:
    path = cell.dir / "history.jsonl"
    try:
        return min(cell.epochs, sum(1 for line in path.read_text().splitlines() if line.strip()))
    except OSError:
        return 0


# ---------------------------------------------------------------------------- one cell, in its own process
def run_cell(params: dict, threads: int) -> int:
    """The worker: hold the cell's lock, pretrain, record a failure in error.txt. Returns the exit code."""
    import torch

    from . import train

    torch.set_num_threads(threads)
    out = Path(params["out_dir"])
    try:
        lock = runlock.acquire(out)
    except runlock.RunLockedError as e:
        print(e, file=sys.stderr, flush=True)
        return LOCKED_EXIT
    with lock:
        print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {json.dumps(params)}", flush=True)
        try:
            metrics = train.pretrain(**params)
        except KeyboardInterrupt:
            return 130
        except BaseException:
            runs.atomic_write_text(out / "error.txt", traceback.format_exc())
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
    runs: Any = None                        # report.collect over the whole grid's finished cells
    table: Any = None                       # report.summary of it
    workers: int = 1
    wall_s: float = 0.0
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _gpu_ids(gpus: str | list | None, needs_gpu: bool) -> list[str]:
    """The CUDA_VISIBLE_DEVICES value of each chosen GPU ([] for the CPU)."""
    if not needs_gpu or gpus in ("none", "cpu"):
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in parent.split(",")][:count] if parent else [str(i) for i in range(count)]
    if gpus in (None, "all"):
        return ids
    try:
        chosen = [int(x) for x in (gpus.split(",") if isinstance(gpus, str) else gpus)]
    except ValueError:
        raise GridError(f"--gpus {gpus}: expected all or GPU indices like 0,1") from None
    bad = [i for i in chosen if not 0 <= i < count]
    if bad:
        raise GridError(f"--gpus {gpus}: no GPU {bad}; visible: " + (", ".join(map(str, range(count))) or
                        "none (CUDA is not available here; leave --gpus out to run on the CPU)"))
    return [ids[i] for i in chosen]


def _workers(workers, queue: list[Cell], gpu_ids: list[str], say) -> int:
    if workers != "auto":
        if isinstance(workers, bool) or not str(workers).isdigit() or int(workers) < 1:
            raise GridError(f"--workers {workers}: expected a positive integer or auto")
        return int(workers)
    from . import bench_train

    per_device = math.ceil(len(queue) / max(1, len(gpu_ids)))
    ks = bench_train.default_ks(bool(gpu_ids), limit=per_device)
    if len(ks) == 1:
        say("--workers auto: 1 worker per device (no more cells than devices)")
        return 1
    probe = next((c for c in queue if c.params.get("views") == "viewmaker"), queue[0])
    fields = {k: v for k, v in probe.params.items() if k != "out_dir"}
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": gpu_ids[0]} if gpu_ids else {})}
    say(f"--workers auto: measuring the throughput of k concurrent {probe.name} runs on one "
        f"{'GPU' if gpu_ids else 'CPU'} ...")
    rates = bench_train.concurrent_throughput(fields, ks, seconds=3.0, env=env, log=say)
    k = bench_train.choose_concurrency(rates)
    say(f"--workers auto: chose {k} worker(s) per device (the fewest within 5% of the best throughput)")
    return k


def run(runs_dir: str | os.PathLike, sweep: dict[str, list], fixed: dict | None = None, workers: int | str = 1,
        gpus: str | list | None = "all", shard: tuple[int, int] = (0, 1), poll_s: float = 1.0) -> GridResult:
    """Run (or resume) every unfinished cell of this shard of the grid; returns statuses and the table.

    ``workers``: worker processes per GPU (on a CPU: in all), or "auto" to measure how many raise the
    total throughput. Bad input raises GridError before anything runs."""
    from .bench_train import cores

    t0 = time.perf_counter()
    every = plan(runs_dir, sweep, fixed)
    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
        raise GridError(f"shard {shard}: expected (i, n) with 0 <= i < n")
    mine = shard_cells(every, i, n)
    gpu_ids = _gpu_ids(gpus, needs_gpu=any(c.params.get("device", "auto") != "cpu" for c in mine))
    print(f"grid {runs_dir}: {len(every)} cells" + (f", shard {i}/{n}: {len(mine)} of them" if n > 1 else ""),
          flush=True)
    status, queue = _triage(mine)
    k = _workers(workers, queue, gpu_ids, print) if queue else 1
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
                print(f"  {c.name}: taking over the lock left by {runlock.describe(info)} (no longer running)",
                      flush=True)
            queue.append(c)
    if "finished" in status.values():
        print(f"  {sum(s == 'finished' for s in status.values())} cell(s) finished before: skipped", flush=True)
    return status, queue


def _drive(queue: list[Cell], slots: list[str | None], threads: int, status: dict[str, str], poll_s: float):
    """Keep every slot busy with the next cell; poll the workers and the cells' history for one
    progress bar (epochs done of all the queue's epochs, cells done / running / failed)."""
    from tqdm.auto import tqdm

    running: dict[int, tuple[Cell, subprocess.Popen, Any]] = {}
    pending = list(queue)
    bar = tqdm(total=sum(c.epochs for c in queue), initial=sum(epochs_done(c) for c in queue), unit="epoch",
               desc="grid", mininterval=1.0 if sys.stderr.isatty() else 30.0)
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
            bar.n = sum(c.epochs if status.get(c.name) == "done" else epochs_done(c) for c in queue)
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
    proc = subprocess.Popen([sys.executable, "-m", "featdrop.grid", "--run-cell", job], stdout=log,
                            stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    return proc, log


def _finish(c: Cell, rc: int, bar) -> str:
    if rc == 0:
        (c.dir / "error.txt").unlink(missing_ok=True)
        m = runs.read_json(c.dir / "metrics.json")
        bar.write(f"  done {c.name}: probe main {m.get('probe_main', float('nan')):.3f}, "
                  f"alt {m.get('probe_alt', float('nan')):.3f} ({m.get('wall_s', 0):.0f} s)")
        return "done"
    if rc == LOCKED_EXIT:
        bar.write(f"  skip {c.name}: another launcher took it first")
        return "held"
    err = c.dir / "error.txt"
    if not err.exists():  # the worker died without a traceback (killed, out of memory, segfault)
        tail = (c.dir / "grid.log").read_text(errors="replace").splitlines()[-40:]
        runs.atomic_write_text(err, f"worker exited with code {rc} (negative: killed by that signal) without a "
                                    f"Python traceback; last lines of grid.log:\n" + "\n".join(tail) + "\n")
    last = [line for line in err.read_text(errors="replace").splitlines() if line.strip()][-1:]
    bar.write(f"  FAILED {c.name}: {last[0] if last else rc} (see {err})")
    return "failed"


def _summary(cells: list[Cell], sweep: dict):
    from . import report

    dirs = [c.dir for c in cells if (c.dir / "metrics.json").exists()]
    if not dirs:
        return None, None
    df = report.collect(None, run_dirs=dirs)
    return df, report.summary(df, by=[k for k in sweep if k != "seed"])


# ---------------------------------------------------------------------------- command line
def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m featdrop.grid", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", help="the grid's directory: one run directory per cell below it")
    ap.add_argument("--workers", default="1", help="worker processes per GPU (on a CPU: in all), or auto: "
                    "measure the throughput of 1, 2, 4, ... concurrent runs (about 10 s each) and take the "
                    "fewest within 5%% of the best. Small models gain from several per GPU")
    ap.add_argument("--gpus", default="all", help="GPUs to use: all (every visible one) or indices, e.g. 0,1")
    ap.add_argument("--shard", default="0/1", help="run only slice i of n (0 <= i < n) of the cells: one slice "
                    "per machine or per job of an array")
    ap.add_argument("--run-cell", help=argparse.SUPPRESS)
    ap.add_argument("fields", nargs="*", metavar="FIELD=V1,V2,...",
                    help="config fields (see featdrop/config.py): a comma list sweeps, one value fixes")
    args = ap.parse_intermixed_args(argv)
    if not args.runs_dir and not args.run_cell:
        ap.error("--runs-dir is required")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # scancel, kill: stop the workers too, as Ctrl-C does
    try:
        if args.run_cell:
            job = json.loads(args.run_cell)
            return run_cell(job["params"], job["threads"])
        sweep, fixed = parse_assignments(args.fields)
        result = run(args.runs_dir, sweep, fixed, workers=args.workers, gpus=args.gpus, shard=parse_shard(args.shard))
    except GridError as e:
        ap.error(str(e))
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = {s: sum(v == s for v in result.status.values()) for s in ("done", "finished", "held", "failed")}
    print(f"\ngrid: {counts['done']} cell(s) run, {counts['finished']} finished before, {counts['held']} running "
          f"elsewhere, {counts['failed']} failed; wall {result.wall_s:.1f} s")
    if result.table is not None:
        print("\nlinear-probe accuracy, mean ± sd over seeds (finished cells of the whole grid):")
        print(result.table.to_string())
    if result.failed:
        print(f"\nFAILED: {', '.join(result.failed)} (tracebacks in <cell>/error.txt under {args.runs_dir})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
