"""Run directories: every file a run writes goes through here, atomically, and one run per directory.

Layout of ``out_dir``: ``config.json``, ``history.jsonl`` (one line per epoch), ``metrics.json``,
``checkpoint.pt`` (everything needed to resume), ``figures/*.png`` and ``.lock``.

Files are written to a temporary beside their target and renamed onto it in one step, so a crash or a kill
never leaves a half-written file.

One run per directory: :mod:`featdrop.runlock`.
"""
from __future__ import annotations

import errno
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError, DiskError
from .runlock import LOCK_NAME, holder


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; after the block, rename it onto ``path`` in one step,
    so a crash or a kill never leaves a half-written file (the temporary is removed on error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")  # keeps the suffix (savefig's format)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_history(path: str | os.PathLike, rows: list[dict]) -> None:
    """Rewrite history.jsonl with exactly ``rows`` (one per finished epoch): a resumed run never
    duplicates or loses a line, whatever moment the previous process died at."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in rows))


def read_history(path: str | os.PathLike) -> list[dict]:
    """The rows of history.jsonl; CheckpointError naming the line when one is cut or not JSON."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise CheckpointError(f"{path} line {n} is cut or not JSON (a full disk, an editor?): run "
                                      f"the same command again to rewrite it from the run's checkpoint.pt"
                                      ) from None
    return rows


def history_intact(path: str | os.PathLike, rows: list[dict]) -> bool:
    """history.jsonl holds exactly ``rows`` (the checkpoint's history)."""
    try:
        return read_history(path) == json.loads(json.dumps(rows, default=_jsonable))
    except CheckpointError:
        return False


def check_out_dir(out_dir: str | os.PathLike) -> None:
    """ConfigError before any work when ``out_dir`` cannot hold a run: it is a file, or it (or the folder it
    would be made in) cannot be written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"config field 'out_dir' = {str(out)!r} is invalid: it is a file; allowed a "
                          f"directory, existing or new")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        why = "a read-only file system" if _read_only(parent) else "no write permission"
        raise ConfigError(f"config field 'out_dir' = {str(out)!r} is invalid: {parent} cannot be written "
                          f"({why}); allowed a directory this process can write")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def remove_if_unused(out_dir: str | os.PathLike, written: tuple[str, ...] = ()) -> None:
    """Remove ``out_dir`` when it holds nothing but its released lock and the files ``written`` (the caller
    made the directory and wrote them): what a run that never trained left."""
    out = Path(out_dir)
    if out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_NAME, *written} and holder(out) is None:
        for name in (*written, LOCK_NAME):
            (out / name).unlink(missing_ok=True)
        out.rmdir()


def disk_error(exc: BaseException, path: Path, kept: str) -> DiskError | None:
    """A DiskError naming ``path`` and what is ``kept`` when ``exc`` is a failed write for lack of space or a
    read-only file system (torch.save reports a full disk as a RuntimeError); None for other errors."""
    text = str(exc)
    full = getattr(exc, "errno", None) == errno.ENOSPC or "unexpected pos" in text or "No space left" in text
    ro = getattr(exc, "errno", None) == errno.EROFS
    if not (full or ro):
        return None
    what = "no space left on device" if full else "read-only file system"
    return DiskError(f"{what}: writing {path} failed; {kept}")


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """The one place figures are written (PNG, atomically); closes the figure."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def all_finite(d: dict) -> bool:
    return all(math.isfinite(v) for v in d.values()
               if isinstance(v, (int, float)) and not isinstance(v, bool))
