"""Grid planning: the Cartesian product of swept config fields, each cell an ordinary run directory.

A cell is named from the swept fields in command-line order (``overlay-shapes__views-expert__seed-0``) and
lives in ``<runs_dir>/<name>``. Every cell's config is made and resolved here, so bad input fails before
anything runs.
"""
from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import config, fields, rundir
from ..config import Config
from ..errors import ConfigError
from ..train import checkpoint

OWNED = ("out_dir",)        # the grid names every cell's directory


@dataclass
class Cell:
    name: str
    dir: Path
    params: dict            # config fields for pretrain, out_dir included
    config: Config          # resolved (presets filled in), as pretrain will see it

    @property
    def epochs(self) -> int:
        return self.config.epochs


def check_fields(names) -> None:
    """ConfigError for a field the grid cannot sweep or fix (unknown, or one the grid sets itself)."""
    for name in names:
        if name in OWNED:
            raise ConfigError(f"{name} cannot be a grid field: the grid runs every cell in "
                              f"<runs-dir>/<cell name>; "
                              f"choose the directory with --runs-dir (Python: runs_dir)")
        fields.check_field(name)


def _fmt(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "_", str(value))


def plan(runs_dir: str | os.PathLike, sweep: dict[str, list], fixed: dict | None = None) -> list[Cell]:
    """Every cell of the grid, validated (``config.make`` and ``config.resolve``) before anything runs."""
    fixed = dict(fixed or {})
    check_fields([*sweep, *fixed])
    if not sweep:
        raise ConfigError("nothing is swept: give at least one FIELD=V1,V2,... "
                          "(a single run is featdrop train or notebooks/pretrain.ipynb)")
    both = sorted(set(sweep) & set(fixed))
    if both:
        raise ConfigError(f"{both} both swept and fixed; give each field once")
    for name, values in sweep.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{name}: empty list of values; give at least one value")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{name}={list(values)}: a value is repeated")
    fixed["progress"] = False  # one progress display: the launcher's
    cells = []
    for combo in itertools.product(*sweep.values()):
        point = dict(zip(sweep, combo))
        name = "__".join(f"{k}-{_fmt(v)}" for k, v in point.items())
        out = Path(runs_dir) / name
        params = {**fixed, **point, "out_dir": str(out)}
        if str(params.get("device", "auto")).startswith("cuda:"):
            raise ConfigError(f"device={params['device']!r}: the grid places cells on GPUs itself; use "
                              f"device=cuda (or auto) and --gpus to choose the GPUs")
        try:
            cfg = config.make(**params)
            resolved = config.resolve(cfg, cuda_available=torch.cuda.is_available() and cfg.device != "cpu")
        except ConfigError as e:
            raise ConfigError(f"cell {name}: {e}") from None
        _check_no_clash(name, out, resolved)
        cells.append(Cell(name, out, params, resolved))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ConfigError(f"two cells get the same directory name ({names}); use values that differ after "
                          f"replacing characters other than letters, digits and . + - by _")
    return cells


def _check_no_clash(name: str, out: Path, cfg: Config) -> None:
    """ConfigError at planning time when the cell's directory already holds a run of another config (another
    grid over the same --runs-dir whose cells are named alike), instead of every worker failing later."""
    try:
        saved = rundir.read_json(out / "config.json")
    except (OSError, ValueError):  # none yet, or cut: the run itself rewrites it from its checkpoint
        return
    if not isinstance(saved, dict):
        return
    diff = checkpoint.config_diff(saved, cfg)
    done = _history_rows(out)
    if done > cfg.epochs:  # the worker would refuse it (a run is never shortened): say so now
        raise ConfigError(f"cell {name}: {out} holds a run trained for {done} epochs, and this grid asks for "
                          f"epochs={cfg.epochs}; a run is never shortened: use epochs={done} or more, or "
                          f"another --runs-dir")
    if diff:
        field, (there, here) = next(iter(diff.items()))
        more = f" (and {len(diff) - 1} more field(s))" if len(diff) > 1 else ""
        raise ConfigError(f"cell {name} clashes with a run already in {out}: {field} = {there!r} there, "
                          f"{here!r} in this grid{more}; use another --runs-dir, or sweep {field} too so "
                          f"that the cells are named apart")


def shard_cells(cells: list[Cell], i: int, n: int) -> list[Cell]:
    """The i-th of n disjoint slices (round-robin, so each slice gets a mix of cheap and costly cells)."""
    return cells[i::n]


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not int(m[1]) < int(m[2]):
        raise ConfigError(f"--shard {text}: expected i/n with 0 <= i < n, e.g. --shard 0/4 ... --shard 3/4 "
                          f"(with a SLURM array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return int(m[1]), int(m[2])


def finished(cell: Cell) -> bool:
    """The cell's run directory holds the finished run of its config (the trainer's own resume check)."""
    return checkpoint.finished(cell.config)


def _history_rows(run_dir: Path) -> int:
    """Epochs a run directory has finished, by its history.jsonl (0 when there is none)."""
    try:
        return sum(1 for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def epochs_done(cell: Cell) -> int:
    return min(cell.epochs, _history_rows(cell.dir))
