"""The grid: cells from swept fields, bad input refused before any work, and a launcher that skips
finished cells, resumes partial ones, leaves held ones alone, takes over stale locks and survives a
failing cell."""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import DATA, ROOT, offline_cifar

from featdrop import cli, config, errors, fields, rundir, runlock, train
from featdrop.errors import ConfigError
from featdrop.lab import launch, plan

TINY = dict(overlay="shapes", preset="quick", oracles=False, subset=256, test_subset=128, batch_size=64,
            epochs=2, encoder="convnet", viewmaker_width=8, device="cpu")
HOLD = "import sys, time; from featdrop import runlock; runlock.acquire(sys.argv[1]); " \
       "print('held', flush=True); time.sleep(300)"


# ---------------------------------------------------------------------------- input
def test_values_are_parsed_by_the_fields_type():
    p = fields.parse_value
    assert p("seed", "3") == 3 and p("lr", "3e-2") == 0.03 and p("views", "viewmaker") == "viewmaker"
    assert p("overlay_opacity", "1") == 1.0 and isinstance(p("overlay_opacity", "1"), float)
    assert p("clamp", "True") is True and p("projection_head", "false") is False
    assert p("epochs", "None") is None and p("encoder", "None") is None
    assert p("subset", "5000") == 5000 and p("subset", "all") == "all"  # int | str | None
    for name, text, expected in [("seed", "1.5", "expected int"), ("clamp", "yes", "True or False"),
                                 ("seed", "None", "not optional"), ("epochs", "ten", "expected int or None")]:
        with pytest.raises(ConfigError, match=expected):
            p(name, text)


def test_a_comma_list_sweeps_a_single_value_fixes_and_names_follow_the_command_line():
    sweep, fixed = fields.parse_assignments(["overlay=shapes,none", "views=expert", "seed=0,1",
                                             "preset=quick", "epochs=2"])
    assert sweep == {"overlay": ["shapes", "none"], "seed": [0, 1]}
    assert fixed == {"views": "expert", "preset": "quick", "epochs": 2}
    cells = plan.plan("g", sweep, fixed)
    assert [c.name for c in cells] == ["overlay-shapes__seed-0", "overlay-shapes__seed-1",
                                       "overlay-none__seed-0", "overlay-none__seed-1"]
    c = cells[2]
    assert c.params == {"views": "expert", "preset": "quick", "epochs": 2, "progress": False,
                        "overlay": "none", "seed": 0, "out_dir": os.path.join("g", "overlay-none__seed-0")}
    assert c.epochs == 2


@pytest.mark.parametrize("args,expected", [
    (["overlay"], ["'overlay' is not FIELD=VALUE"]),
    (["overlai=shapes,none"], ["unknown config field 'overlai'", "did you mean 'overlay'"]),
    (["overlay="], ["empty value"]),
    (["overlay=shapes,,none"], ["empty value"]),
    (["seed=0,0"], ["repeated"]),
    (["seed=0,1", "seed=2"], ["seed is given twice"]),
    (["out_dir=a,b"], ["out_dir cannot be a grid field", "--runs-dir"]),
    (["seed=0"], ["nothing is swept"]),
    (["overlay=shapes,bogus"], ["cell overlay-bogus", "'overlay' = 'bogus'", "one of none, shapes"]),
    (["seed=0,1", "overlay_opacity=2"], ["cell seed-0", "'overlay_opacity' = 2.0", "[0, 1]"]),
    (["seed=0,1", "epochs=1.5"], ["epochs='1.5'", "expected int or None"]),
    (["seed=0,1", "device=cuda:1"], ["the grid places cells on GPUs itself"]),
    (["--shard", "3/2", "seed=0,1"], ["--shard 3/2", "0 <= i < n"]),
    (["--shard", "1", "seed=0,1"], ["--shard 1"]),
    (["--workers", "0", "seed=0,1", "device=cpu"], ["--workers 0", "positive integer or auto"]),
])
def test_bad_grid_input_fails_before_any_work_naming_field_value_and_what_is_allowed(tmp_path, capsys, args,
                                                                                     expected):
    runs_dir = tmp_path / "grid"
    assert cli.main(["grid", "--runs-dir", str(runs_dir), *args]) == 2  # the command line: message, exit 2
    err = capsys.readouterr().err
    assert err.startswith("featdrop grid: error: ") and "Traceback" not in err
    for text in expected:
        assert text in err
    assert not runs_dir.exists()  # nothing ran, nothing was created


def test_shards_are_disjoint_and_cover_the_grid():
    cells = plan.plan("g", {"overlay": ["shapes", "digits", "letters", "none"],
                            "views": ["expert", "viewmaker"], "seed": [0, 1, 2]})
    names = [c.name for c in cells]
    assert len(set(names)) == 24
    for n in (1, 2, 5, 24, 30):
        slices = [[c.name for c in plan.shard_cells(cells, i, n)] for i in range(n)]
        assert sorted(sum(slices, [])) == sorted(names)  # every cell, and none twice
        assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_concurrency_choice_is_the_fewest_workers_within_5_percent_of_the_best():
    from featdrop.bench.train import makespan
    from featdrop.lab import concurrency

    assert concurrency.choose_concurrency({1: 100.0, 2: 180.0, 4: 186.0, 8: 187.0}) == 2
    assert concurrency.choose_concurrency({1: 100.0, 2: 90.0}) == 1
    assert makespan([4, 4, 1, 1], 2) == 5  # longest first: 4+1 | 4+1


# ---------------------------------------------------------------------------- the launcher
@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """A 5-cell grid (seed=0..4) over a directory prepared with: seed-0 finished, seed-1 half done
    (1 of 2 epochs), seed-2 a stale lock of a dead process, seed-3 held by a live process, seed-4 a
    damaged checkpoint (its run fails). Then the command line runs it with 2 workers."""
    if not offline_cifar():
        pytest.skip(f"no CIFAR-10 copy under {DATA}")
    runs_dir = tmp_path_factory.mktemp("grid")
    fixed = {**TINY, "data_dir": str(DATA)}
    cells = {c.name: c for c in plan.plan(runs_dir, {"seed": [0, 1, 2, 3, 4]}, fixed)}
    # seed-0: finished with this config (its metrics are made up: the launcher must not touch them)
    c0 = cells["seed-0"]
    rundir.write_json(c0.dir / "config.json", dataclasses.asdict(config.resolve(config.make(**c0.params))))
    rundir.write_json(c0.dir / "metrics.json", {"probe_main": 0.5, "probe_alt": 0.5, "chance_main": 0.1,
                                              "chance_alt": 0.34, "knn_main": 0.5, "knn_alt": 0.5})
    # seed-1: one epoch of two, then "killed"
    assert train.pretrain(**cells["seed-1"].params, stop_after=1) == {"stopped_at_epoch": 1}
    # seed-2: the lock file of a process that died while holding it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True)
    dead_pid = int(dead.stdout)
    cells["seed-2"].dir.mkdir()
    (cells["seed-2"].dir / ".lock").write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(),
                                                           "started": time.time() - 60}))
    # seed-3: a live run holds it
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(cells["seed-3"].dir)], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "held"
    # seed-4: a damaged checkpoint
    cells["seed-4"].dir.mkdir()
    (cells["seed-4"].dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    args = [f"{k}={v}" for k, v in fixed.items()]
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "featdrop", "grid", "--runs-dir", str(runs_dir),
                          "--workers", "2", "seed=0,1,2,3,4", *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    yield dict(cells=cells, out=out, text=out.stdout + out.stderr, dead_pid=dead_pid, holder=holder,
               fixed=fixed, runs_dir=runs_dir, wall=time.perf_counter() - t)
    holder.kill()
    holder.wait()
    holder.stdout.close()


def test_finished_cell_is_skipped_untouched(launched):
    c0 = launched["cells"]["seed-0"]
    assert rundir.read_json(c0.dir / "metrics.json")["probe_main"] == 0.5
    assert not (c0.dir / "grid.log").exists() and not (c0.dir / "checkpoint.pt").exists()
    assert "1 finished before" in launched["out"].stdout


def test_partial_cell_resumes_from_its_checkpoint(launched):
    c1 = launched["cells"]["seed-1"]
    metrics = rundir.read_json(c1.dir / "metrics.json")
    assert metrics["resumed"] is True and metrics["epochs"] == 2
    assert [r["epoch"] for r in rundir.read_history(c1.dir / "history.jsonl")] == [1, 2]


def test_stale_lock_of_a_dead_process_is_taken_over_and_reported(launched):
    c2 = launched["cells"]["seed-2"]
    assert (c2.dir / "metrics.json").exists()
    assert f"seed-2: taking over the lock left by pid {launched['dead_pid']}" in launched["text"]
    assert runlock.inspect(c2.dir) == ("free", None)  # released cleanly after the run


def test_cell_held_by_a_live_process_is_not_run_and_reported(launched):
    c3 = launched["cells"]["seed-3"]
    assert not (c3.dir / "config.json").exists() and not (c3.dir / "grid.log").exists()
    assert f"skip seed-3: running elsewhere (pid {launched['holder'].pid} on host" in launched["text"]
    assert runlock.holder(c3.dir)["pid"] == launched["holder"].pid


def test_failing_cell_records_its_error_does_not_stop_the_others_and_sets_the_exit_code(launched):
    c4 = launched["cells"]["seed-4"]
    assert launched["out"].returncode == 1
    assert "FAILED: seed-4" in launched["out"].stderr
    err = (c4.dir / "error.txt").read_text()
    assert "Traceback" in err and "CheckpointError" in err and "checkpoint.pt" in err
    assert "1 failed" in launched["out"].stdout and "2 cell(s) run" in launched["out"].stdout
    assert "± " in launched["out"].stdout  # the summary over the finished seeds


def test_worker_records_a_failure_in_error_txt_clears_it_on_success_and_leaves_held_cells_alone(
        tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep this process's threads
    out = tmp_path / "cell"
    params = {"out_dir": str(out), "seed": 0}

    def diverge(**kw):
        raise errors.NonFiniteLossError("the loss became non-finite at epoch 3")

    monkeypatch.setattr(launch, "pretrain", diverge)
    assert launch.run_cell(params, threads=1) == 1
    assert "NonFiniteLossError: the loss became non-finite" in (out / "error.txt").read_text()
    monkeypatch.setattr(launch, "pretrain", lambda **kw: {"probe_main": 0.5})
    assert launch.run_cell(params, threads=1) == 0 and not (out / "error.txt").exists()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(launch, "pretrain", diverge)
        assert launch.run_cell(params, threads=1) == launch.LOCKED_EXIT and not (out / "error.txt").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


# ---------------------------------------------------------------------------- the report of a grid
def opacity_runs():
    import pandas as pd

    rows = [dict(run=f"r{i}", overlay="shapes", views=v, seed=s, overlay_opacity=o, epochs=2, device="cpu",
                 probe_main=0.3 + 0.1 * o + 0.01 * s, probe_alt=0.4 + 0.5 * o * (v == "expert"),
                 chance_main=0.1, chance_alt=0.34)
            for i, (v, o, s) in enumerate((v, o, s) for v in ("expert", "viewmaker") for o in (0.25, 0.5, 1.0)
                                          for s in (0, 1))]
    return pd.DataFrame(rows)


def test_summary_groups_by_the_fields_that_vary_other_than_the_seed():
    from featdrop.lab import tables

    df = opacity_runs()
    assert tables.varying_fields(df) == ["views", "overlay_opacity"]
    assert tables.numeric_fields(df) == ["overlay_opacity"]
    table = tables.summary(df)
    assert list(table.index.names) == ["views", "overlay_opacity"] and len(table) == 6
    assert table.loc[("expert", 1.0), "alternate"] == "0.900 ± 0.000 (n=2)"
    assert table.loc[("viewmaker", 0.25), "main"] == "0.330 ± 0.007 (n=2)"


def test_suppression_curve_has_a_line_per_views_type_per_label_and_marks_chance(tmp_path):
    from featdrop.lab import tables

    fig = tables.suppression_curve(opacity_runs(), str(tmp_path))
    assert (tmp_path / "figures" / "suppression_overlay_opacity.png").stat().st_size > 5000
    main, alt = fig.axes
    assert main.get_xlabel() == "overlay_opacity" and "alternate" in alt.get_title()
    labels = [line.get_label() for line in alt.get_lines()]
    assert labels == ["expert", "viewmaker", "chance"]
    expert = alt.get_lines()[0]
    assert list(expert.get_xdata()) == [0.25, 0.5, 1.0]
    assert list(expert.get_ydata()) == pytest.approx([0.525, 0.65, 0.9])
    assert alt.get_lines()[2].get_ydata()[0] == pytest.approx(0.34)
    assert tables.suppression_curve(opacity_runs().assign(overlay_opacity=1.0), str(tmp_path)) is None
