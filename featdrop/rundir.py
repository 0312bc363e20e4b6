"""Run directories: every file a run writes goes through here, atomically, and one run per directory.

Layout of ``out_dir``: ``config.json``, ``history.jsonl`` (one line per epoch), ``metrics.json``,
``checkpoint.pt`` (everything needed to resume), ``figures/*.png`` and ``.lock``.

Files are written to a temporary beside their target and renamed onto it in one step, so a crash or a kill
never leaves a half-written file.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on ``<out_dir>/.lock``. The kernel drops it when the holding process
dies (a killed kernel, an OOM kill, a reboot), so a lock can never outlive its process and there is no race
between two runs starting together: exactly one gets it. The file itself stays (deleting it would let two
processes lock two different files of the same name); while held it names the holder (pid, host, start
time, command) for the messages. A file that names a process but is not locked is what a dead run leaves
behind: the next run takes it over and says which process left it. On a shared file system (NFS v4,
Lustre/BeeGFS mounted with flock support) the lock works across machines too.
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError, DiskError, RunLockedError


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


def remove_if_unused(out_dir: str | os.PathLike) -> None:
    """Remove ``out_dir`` when it holds nothing but its released lock: what a run that never started left."""
    out = Path(out_dir)
    if out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_NAME} and holder(out) is None:
        (out / LOCK_NAME).unlink(missing_ok=True)
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


@contextmanager
def waiting_lock(path: str | os.PathLike):
    """An exclusive flock on ``path`` (created if needed) that waits for another holder: for work that must
    happen once however many processes need it at the same time (training a cached oracle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def all_finite(d: dict) -> bool:
    return all(math.isfinite(v) for v in d.values()
               if isinstance(v, (int, float)) and not isinstance(v, bool))


# ---------------------------------------------------------------------------- the lock

LOCK_NAME = ".lock"
_HELD: dict[str, "RunLock"] = {}  # realpath(out_dir) → the lock this process holds (nesting, see acquire)


class StaleLockWarning(UserWarning):
    """A lock left by a dead process was taken over."""


def describe(info: dict) -> str:
    """'pid 123 on host h, started … (… min ago)': for messages about a holder."""
    started = info.get("started")
    age = ""
    if isinstance(started, (int, float)):
        age = f", started {datetime.fromtimestamp(started).isoformat(' ', 'seconds')} " \
              f"({(time.time() - started) / 60:.1f} min ago)"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}{age}"


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode(errors="replace").strip()
    try:
        info = json.loads(text) if text else {}
    except json.JSONDecodeError:  # a holder died halfway through writing its line
        info = {"pid": "?", "note": text[:200]}
    return info if isinstance(info, dict) else {}


def _write(fd: int, info: dict | None) -> None:
    os.ftruncate(fd, 0)
    if info:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode())


def _open(out_dir: Path, create: bool) -> int | None:
    path = out_dir / LOCK_NAME
    try:
        return os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        return None


def _try_flock(fd: int, kind: int, out_dir: Path) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise RunLockedError(f"cannot lock {out_dir}: this file system does not support flock ({e}); "
                                 f"use an out_dir on a local disk or a file system mounted with flock "
                                 f"support") from e
        raise


class RunLock:
    """The lock on one run directory; release it, or use it as a context manager."""

    def __init__(self, out_dir: Path, fd: int, info: dict):
        self.out_dir, self.path, self.info = out_dir, out_dir / LOCK_NAME, info
        self._fd: int | None = fd
        self._depth = 1

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (the outermost handle of a nested acquire does). Idempotent."""
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        _HELD.pop(os.path.realpath(self.out_dir), None)
        fd, self._fd = self._fd, None
        try:
            _write(fd, None)  # an empty file: released cleanly, nothing to take over
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.out_dir)!r}, {'held' if self.held else 'released'})"


def acquire(out_dir: str | os.PathLike, retry_s: float = 0.2) -> RunLock:
    """Lock ``out_dir`` (created if needed) for this process.

    Raises RunLockedError, naming the directory and the holder, if a live process holds it. A lock
    left by a dead process is taken over with a StaleLockWarning naming that process. Within one
    process a second acquire of a directory it already holds returns the same lock, nested (a grid
    worker holds its cell's lock around ``train.pretrain``, which locks it too).
    ``retry_s``: how long to retry first, so that a concurrent ``holder()`` probe is not mistaken
    for a run."""
    out_dir = Path(out_dir)
    key = os.path.realpath(out_dir)
    mine = _HELD.get(key)
    if mine is not None and mine.held and mine.info.get("pid") == os.getpid():
        mine._depth += 1
        return mine
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = _open(out_dir, create=True)
    deadline = time.monotonic() + retry_s
    try:
        while not _try_flock(fd, fcntl.LOCK_EX, out_dir):
            if time.monotonic() >= deadline:
                info = _read(fd)
                raise RunLockedError(
                    f"{out_dir} is in use by another run: {describe(info)}"
                    + (f", command: {info['command']}" if info.get("command") else "") + ".\n"
                    f"Wait for it to finish, or use another out_dir. To check the process: "
                    f"`ps -o pid,etime,args -p {info.get('pid', '<pid>')}` on "
                    f"{info.get('host', 'its host')}; "
                    f"a finished or killed run releases the lock by itself.")
            time.sleep(0.02)
        previous = _read(fd)
        if previous:
            warnings.warn(f"taking over the lock of {out_dir}: it was left by {describe(previous)}, which no "
                          f"longer holds it (killed or crashed)", StaleLockWarning, stacklevel=2)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(sys.argv)[:300]}
        _write(fd, info)
    except BaseException:
        os.close(fd)
        raise
    lock = RunLock(out_dir, fd, info)
    _HELD[key] = lock
    return lock


def inspect(out_dir: str | os.PathLike) -> tuple[str, dict | None]:
    """("free", None), ("held", holder info) or ("stale", what the dead holder left). The check takes
    a shared lock for an instant only, and never creates the directory or the file."""
    out_dir = Path(out_dir)
    mine = _HELD.get(os.path.realpath(out_dir))
    if mine is not None and mine.held:
        return "held", dict(mine.info)
    fd = _open(out_dir, create=False)
    if fd is None:
        return "free", None
    try:
        info = _read(fd)
        if not _try_flock(fd, fcntl.LOCK_SH, out_dir):
            return "held", _read(fd) or info
        fcntl.flock(fd, fcntl.LOCK_UN)
        return ("stale", info) if info else ("free", None)
    finally:
        os.close(fd)


def holder(out_dir: str | os.PathLike) -> dict | None:
    """The live holder of ``out_dir``'s lock (pid, host, started, command), or None if it is free
    or only a dead process's lock is left."""
    state, info = inspect(out_dir)
    return info if state == "held" else None
