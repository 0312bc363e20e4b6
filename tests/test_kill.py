"""A run killed with SIGKILL in the middle of an epoch resumes to exactly the numbers of an uninterrupted run.

test_train.py's ``stop_after`` stops a run cleanly between two epochs, in-process. Here a real process is
killed at an arbitrary point of its second epoch (mid-step, mid-monitor or mid-checkpoint write; nothing
runs on its way out), and the run is resumed in this process from what it left on disk. On the CPU (fp32)
the resumed run is bit-equal to an uninterrupted one; on CUDA it is only close (tests/test_cuda.py).
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, needs_cifar, untimed

from featdrop import rundir, train

# a few seconds an epoch on two CPU cores (8 steps of 64, then the monitor); the whole test about a minute
FIELDS = dict(overlay="shapes", views="expert", preset="quick", oracles=False, subset=512, test_subset=256,
              batch_size=64, epochs=3, encoder="convnet", knn_k=20, progress=False, device="cpu")
FIRST_EPOCH_TIMEOUT = 600  # s: interpreter start, imports, data load and one epoch, on a busy machine
KILL_AFTER = 0.3           # into epoch 2, as a fraction of epoch 1's training time
KEYS = ("probe_main", "probe_alt", "knn_main", "knn_alt", "final_loss")

# The killed run, in a fresh interpreter, with this process's thread count: CPU kernels sum in an order that
# depends on the number of threads, and bit-equality needs the same order in both processes.
CHILD = ("import json, sys, torch; torch.set_num_threads(int(sys.argv[2])); from featdrop import train; "
         "train.pretrain(**json.loads(sys.argv[1]))")


def wait_for_epochs(history_path, n, proc, log, timeout):
    """Poll history.jsonl (written atomically after every checkpoint) until it has n rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = rundir.read_history(history_path)
        if len(rows) >= n:
            return rows
        if proc.poll() is not None:
            pytest.fail(f"the run exited with code {proc.returncode} before epoch {n} finished:\n"
                        f"{log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"epoch {n} did not finish within {timeout} s:\n{log.read_text()}")


@needs_cifar
def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_numbers(tmp_path, data_dir):
    fields = dict(FIELDS, data_dir=data_dir)
    full = train.pretrain(out_dir=str(tmp_path / "full"), **fields)  # also leaves the data cache warm

    run, log = tmp_path / "killed", tmp_path / "killed.log"
    killed = dict(fields, out_dir=str(run))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(killed),
                                 str(torch.get_num_threads())],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        first = wait_for_epochs(run / "history.jsonl", 1, proc, log, FIRST_EPOCH_TIMEOUT)
        time.sleep(KILL_AFTER * first[0]["epoch_s"])  # epoch 2 began when epoch 1's row was written
        assert proc.poll() is None, f"the run ended before it could be killed:\n{log.read_text()}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)

    # Usually the kill lands in epoch 2 (1 row on disk); on a busy machine epoch 2 may have finished just
    # before it (2 rows). Either way the run resumes from its last checkpoint and must end the same.
    at_kill = len(rundir.read_history(run / "history.jsonl"))
    assert at_kill in (1, 2), f"the kill was meant to land in epoch 2 or 3, but {at_kill} epochs were done"
    assert not (run / "metrics.json").exists()

    resumed = train.pretrain(**killed)  # may warn that it takes over the dead process's lock: tolerated
    assert resumed["resumed"] is True
    for key in KEYS:
        assert resumed[key] == full[key], (key, resumed[key], full[key], f"killed after {at_kill} epoch(s)")
    history = rundir.read_history(run / "history.jsonl")
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert untimed(history) == untimed(rundir.read_history(tmp_path / "full" / "history.jsonl"))
