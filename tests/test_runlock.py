"""One run per directory: a live holder blocks a second run; a dead one's lock is taken over."""
import os
import signal
import subprocess
import sys
import warnings

import pytest
from conftest import ROOT

from featdrop import errors, runlock

HOLD = "import sys, time; from featdrop import runlock; runlock.acquire(sys.argv[1]); " \
       "print('held', flush=True); time.sleep(120)"


@pytest.fixture
def other_process():
    """Start a process that locks a directory and keeps running; killed at the end."""
    procs = []

    def start(out_dir):
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(out_dir)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stdout.close()


def test_second_run_fails_at_once_naming_dir_and_holder(tmp_path, other_process):
    run = tmp_path / "run"
    p = other_process(run)
    with pytest.raises(errors.RunLockedError) as err:
        runlock.acquire(run)
    msg = str(err.value)
    assert str(run) in msg and f"pid {p.pid}" in msg and "another out_dir" in msg and f"-p {p.pid}" in msg
    info = runlock.holder(run)
    assert info["pid"] == p.pid and "host" in info and "started" in info
    assert runlock.inspect(run)[0] == "held"


def test_lock_of_a_killed_process_is_taken_over_with_a_message(tmp_path, other_process):
    run = tmp_path / "run"
    p = other_process(run)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    state, left = runlock.inspect(run)
    assert runlock.holder(run) is None and state == "stale" and left["pid"] == p.pid
    with pytest.warns(runlock.StaleLockWarning, match=f"left by pid {p.pid} on host"):
        lock = runlock.acquire(run)
    assert runlock.holder(run)["pid"] == os.getpid()
    lock.release()


def test_release_frees_the_directory_for_the_next_run_without_a_takeover(tmp_path):
    run = tmp_path / "new" / "run"
    assert runlock.inspect(run) == ("free", None) and not run.exists()  # a check creates nothing
    with runlock.acquire(run) as lock:
        assert run.is_dir() and lock.held
    assert not lock.held and runlock.holder(run) is None and runlock.inspect(run) == ("free", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cleanly released lock is not "taken over"
        runlock.acquire(run).release()
    # and another process can take it
    out = subprocess.run([sys.executable, "-c", "import sys; from featdrop import runlock; "
                          "runlock.acquire(sys.argv[1]).release(); print('ok')", str(run)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr


def test_nested_acquire_in_one_process_releases_with_the_outermost(tmp_path):
    run = tmp_path / "run"
    outer = runlock.acquire(run)
    inner = runlock.acquire(run)  # e.g. train.pretrain inside a grid worker that holds the cell
    assert inner is outer
    inner.release()
    assert runlock.holder(run)["pid"] == os.getpid()
    outer.release()
    assert runlock.holder(run) is None
