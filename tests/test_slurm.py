"""featdrop under a real SLURM: a one-node slurm-wlm cluster on this machine (scripts/slurm_cluster.sh), the
sbatch files of docs/running.md (scripts/slurm/): a grid as a job array, one shard per task, each cell run
once; an array task cancelled mid-run with scancel and the array submitted again, the cell resuming from its
checkpoint; one run over two processes with srun + torchrun.

Skipped when SLURM is not installed (bash scripts/slurm_cluster.sh install) or no controller answers and
none can be started here. CI (.ci/run) installs and starts the cluster first; run them alone with
`python -m pytest -m slurm`. A few minutes on a 2-core CPU."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DATA, ROOT, offline_cifar

pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(not offline_cifar(), reason=f"no CIFAR-10 copy under {DATA} (run .ci/run)")]

CLUSTER = ROOT / "scripts" / "slurm_cluster.sh"
SBATCH = ROOT / "scripts" / "slurm"
TINY = ["preset=quick", "oracles=False", "subset=256", "test_subset=128", "batch_size=64", "encoder=convnet",
        "viewmaker_width=8", "device=cpu", f"data_dir={DATA}"]
START = re.compile(r"^--- \d{4}-\d\d-\d\d \d\d:\d\d:\d\d pid \d+: ", re.M)
DONE = re.compile(r"^--- done: ", re.M)
JOB_TIMEOUT_S = 480


# ---------------------------------------------------------------------------- the cluster
def _sinfo(env) -> subprocess.CompletedProcess:
    return subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="session")
def slurm_env():
    """The environment for SLURM's clients and the jobs: SLURM_CONF of a cluster that answers (the one
    running, else one started here with scripts/slurm_cluster.sh start and stopped at the end), this
    Python's bin folder first on PATH (the jobs inherit it: featdrop, torchrun), one thread per process."""
    missing = [c for c in ("sbatch", "sinfo", "squeue", "scancel", "scontrol") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} not on PATH): "
                    f"bash scripts/slurm_cluster.sh install")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VIRTUAL_ENV": sys.prefix,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    started = False
    if _sinfo(env).returncode != 0:  # no SLURM_CONF, or its controller is down: ours running, or start it
        status = subprocess.run(["bash", str(CLUSTER), "status"], env=env, capture_output=True, text=True,
                                timeout=60)
        conf = re.search(r"^export SLURM_CONF=(\S+)$", status.stdout, re.M)
        if status.returncode == 0 and conf:
            env["SLURM_CONF"] = conf[1]
    if _sinfo(env).returncode != 0:
        start = subprocess.run(["bash", str(CLUSTER), "start"], env=env, capture_output=True, text=True,
                               timeout=180)
        conf = re.search(r"^export SLURM_CONF=(\S+)$", start.stdout, re.M)
        if start.returncode != 0 or not conf:
            pytest.skip(f"no SLURM controller answers (sinfo failed) and `bash scripts/slurm_cluster.sh "
                        f"start` could not start one: {(start.stderr or start.stdout).strip()[-600:]}")
        env["SLURM_CONF"] = conf[1]
        started = True
        if _sinfo(env).returncode != 0:
            pytest.skip(f"no SLURM controller answers after scripts/slurm_cluster.sh start: "
                        f"{_sinfo(env).stderr.strip()[-600:]}")
    yield env
    if started:
        subprocess.run(["bash", str(CLUSTER), "stop"], env=env, capture_output=True, timeout=120)


def _run(env, *cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=60, **kw)


def submit(env, script: str, args: list[str], logs: Path, runs: Path | None = None) -> str:
    """sbatch one of scripts/slurm/ from the project's root; returns the job id."""
    logs.mkdir(parents=True, exist_ok=True)
    out = logs / ("slurm-%A_%a.out" if "array" in script else "slurm-%j.out")
    job_env = {**env, "RUNS": str(runs)} if runs else env
    done = _run(job_env, "sbatch", "--parsable", "--chdir", ROOT, "--output", out, SBATCH / script, *args)
    assert done.returncode == 0, f"sbatch {script}: {done.stderr}"
    return done.stdout.strip().split(";")[0]


def queued(env, job: str) -> list[str]:
    """The job's array tasks (or the job) still pending or running: squeue -j (no accounting here)."""
    done = _run(env, "squeue", "-h", "-j", job, "-o", "%i %T")
    return [line for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def wait_gone(env, job: str, logs: Path, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Wait until no task of the job is pending or running; on timeout cancel it and fail."""
    t0 = time.monotonic()
    while queued(env, job):
        if time.monotonic() - t0 > timeout_s:
            _run(env, "scancel", job)
            pytest.fail(f"job {job} still queued after {timeout_s} s: {queued(env, job)}\n{job_logs(logs)}")
        time.sleep(1)


def states(env, job: str) -> dict[str, tuple[str, str]]:
    """Each finished task's JobState and ExitCode, from the controller's memory (scontrol show job; kept
    MinJobAge = 300 s after the end): {"12_0": ("COMPLETED", "0:0"), ...}."""
    done = _run(env, "scontrol", "-o", "show", "job", job)
    out = {}
    for line in done.stdout.splitlines():
        f = dict(re.findall(r"(\w+)=(\S*)", line))
        name = f"{f['ArrayJobId']}_{f['ArrayTaskId']}" if f.get("ArrayTaskId") else f.get("JobId")
        out[name] = (f.get("JobState"), f.get("ExitCode"))
    return out


def job_logs(logs: Path) -> str:
    return "\n".join(f"--- {p.name}:\n" + p.read_text(errors="replace")[-3000:]
                     for p in sorted(logs.glob("slurm-*.out")))


def starts_and_dones(cell: Path) -> tuple[int, int]:
    text = (cell / "grid.log").read_text(errors="replace")
    return len(START.findall(text)), len(DONE.findall(text))


def complete_lines(path: Path) -> int:
    """Lines written in full (a writer may be half-way through the next one)."""
    try:
        return path.read_text().count("\n")
    except OSError:
        return 0


def history(cell: Path) -> list[dict]:
    path = cell / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------- the tests
def test_grid_as_a_job_array_runs_every_cell_once(slurm_env, tmp_path):
    """4 cells, 2 array tasks of 1 CPU side by side: shard i/2 each, every cell run exactly once."""
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    t0 = time.monotonic()
    job = submit(slurm_env, "grid_array.sbatch", ["overlay=shapes,none", "seed=0,1", "epochs=1", *TINY],
                 logs, runs)
    wait_gone(slurm_env, job, logs)
    wall = time.monotonic() - t0
    assert states(slurm_env, job) == {f"{job}_0": ("COMPLETED", "0:0"), f"{job}_1": ("COMPLETED", "0:0")}, \
        job_logs(logs)
    cells = sorted(p.name for p in runs.iterdir() if (p / "grid.log").exists())
    assert cells == [f"overlay-{o}__seed-{s}" for o in ("none", "shapes") for s in (0, 1)]
    for name in cells:
        assert starts_and_dones(runs / name) == (1, 1), (name, (runs / name / "grid.log").read_text())
        assert (runs / name / "metrics.json").exists(), name
    for i in (0, 1):  # each task ran its own shard: 2 of the 4 cells, disjoint (each cell started once)
        assert f"shard {i}/2: 2 of them" in (logs / f"slurm-{job}_{i}.out").read_text()
    report = subprocess.run([sys.executable, "-m", "featdrop", "report", str(runs)], env=slurm_env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "4 finished run(s)" in report.stdout
    print(f"grid of 4 cells as a 2-task array: {wall:.0f} s")


def test_cancelled_array_task_resumes_when_the_array_is_submitted_again(slurm_env, tmp_path):
    """scancel one task after its cell's first epoch; the same array again: the cell resumes from its
    checkpoint (a second start in grid.log, the first epochs' rows kept as they were, no epoch twice), the
    other cell is skipped as finished, nothing is lost."""
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    epochs = 3
    args = ["overlay=shapes", "seed=0,1", f"epochs={epochs}", *TINY]
    victim = runs / "seed-0"            # shard 0 of 2: task 0
    t0 = time.monotonic()
    job = submit(slurm_env, "grid_array.sbatch", args, logs, runs)
    while not complete_lines(victim / "history.jsonl"):
        if time.monotonic() - t0 > JOB_TIMEOUT_S or not queued(slurm_env, job) \
                or (victim / "metrics.json").exists():
            _run(slurm_env, "scancel", job)
            pytest.fail(f"task {job}_0 wrote no epoch of {victim}\n{job_logs(logs)}")
        time.sleep(0.1)
    assert _run(slurm_env, "scancel", f"{job}_0").returncode == 0
    wait_gone(slurm_env, job, logs)
    ended = states(slurm_env, job)
    assert (ended[f"{job}_0"][0], ended[f"{job}_1"]) == ("CANCELLED", ("COMPLETED", "0:0")), job_logs(logs)
    before = history(victim)
    assert not (victim / "metrics.json").exists(), f"the cell finished before scancel reached it: {before}"
    assert 1 <= len(before) < epochs and starts_and_dones(victim) == (1, 0)

    job2 = submit(slurm_env, "grid_array.sbatch", args, logs, runs)
    wait_gone(slurm_env, job2, logs)
    wall = time.monotonic() - t0
    assert states(slurm_env, job2) == {f"{job2}_{i}": ("COMPLETED", "0:0") for i in (0, 1)}, job_logs(logs)
    after = history(victim)
    assert [row["epoch"] for row in after] == list(range(1, epochs + 1))
    assert after[:len(before)] == before  # resumed: the rows from before the cancel, timings and all
    assert starts_and_dones(victim) == (2, 1), (victim / "grid.log").read_text()
    assert starts_and_dones(runs / "seed-1") == (1, 1)
    assert "1 cell(s) finished before: skipped" in (logs / f"slurm-{job2}_1.out").read_text()
    for cell in (victim, runs / "seed-1"):
        assert (cell / "metrics.json").exists() and len(history(cell)) == epochs, cell
    print(f"cancelled after {len(before)} of {epochs} epochs, resumed: {wall:.0f} s in all")


def test_torchrun_over_two_processes_through_srun(slurm_env, tmp_path):
    """scripts/slurm/torchrun.sbatch: srun + torchrun --nproc_per_node 2 + featdrop train, on the CPU."""
    out, logs = tmp_path / "run", tmp_path / "logs"
    t0 = time.monotonic()
    job = submit(slurm_env, "torchrun.sbatch", ["overlay=shapes", "epochs=1", *TINY, f"out_dir={out}"], logs)
    wait_gone(slurm_env, job, logs)
    assert states(slurm_env, job) == {job: ("COMPLETED", "0:0")}, job_logs(logs)
    assert (out / "metrics.json").exists(), job_logs(logs)
    assert len(history(out)) == 1
    # one run over both processes: rank 0 wrote it, and says so; the log has rank 0's lines only
    assert json.loads((out / "metrics.json").read_text())["processes"] == 2
    assert job_logs(logs).count("featdrop train:") == 1
    print(f"torchrun, 2 processes: {time.monotonic() - t0:.0f} s")
