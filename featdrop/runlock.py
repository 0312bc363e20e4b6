"""One run per directory: the run lock, and a waiting lock for work done once.

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
import os
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .errors import RunLockedError


@contextmanager
def waiting_lock(path: str | os.PathLike, what: str = "", say=None, every_s: float = 60.0):
    """An exclusive flock on ``path`` (created if needed) that waits for another holder: for work that must
    happen once however many processes need it at the same time (training a cached oracle). While it waits it
    calls ``say`` every ``every_s`` seconds with what it waits for (``what``) and who holds it; the holder
    writes its pid, host and start into the file. An OSError creating the file (a read-only folder) is the
    caller's to name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = last = time.monotonic()
        while not _try_flock(fd, fcntl.LOCK_EX, path.parent):
            time.sleep(0.25)
            if say is not None and time.monotonic() - last >= every_s:
                last = time.monotonic()
                say(f"waiting for {describe(_read(fd))} to finish {what or path.name} "
                    f"({(last - start) / 60:.0f} min so far); it will be loaded, not trained again")
        _write(fd, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "what": what})
        try:
            yield
        finally:
            _write(fd, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
