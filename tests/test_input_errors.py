"""No bad input gets past the door (issue 20): each case that used to be accepted silently, end in a raw
traceback, or fail late now gets a one-line error naming the field (or file), the value and what is allowed,
before any work; and a run directory's files agree with what the run did."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import DATA, ROOT, NotebookFailed, needs_cifar, needs_papermill, offline_cifar, run_notebook

from featdrop import cli, config, errors, rundir, runlock, train
from featdrop.lab import plan
from featdrop.probing import suppression

TINY = dict(overlay="shapes", preset="quick", oracles=False, subset=256, test_subset=128, batch_size=64,
            epochs=2, encoder="convnet", knn_k=20, progress=False, device="cpu")


# ---------------------------------------------------------------------------- config values
@pytest.mark.parametrize("field,value,says", [
    ("seed", 1.5, "'seed' = 1.5 is invalid: allowed int"),
    ("seed", "0", "'seed' = '0' is invalid: allowed int"),
    ("seed", -3, "'seed' = -3 is invalid: allowed an integer from 0"),
    ("temperature", float("inf"), "'temperature' = inf is invalid: allowed a finite float"),
    ("lr", float("inf"), "'lr' = inf is invalid: allowed a finite float"),
    ("budget", float("nan"), "'budget' = nan is invalid: allowed a finite float"),
    ("clamp", 1, "'clamp' = 1 is invalid: allowed bool"),
    ("epochs", True, "'epochs' = True is invalid: allowed int or None"),
])
def test_every_field_is_checked_for_type_and_finiteness(field, value, says):
    with pytest.raises(errors.ConfigError) as err:
        config.make(**{field: value})
    assert says in str(err.value)


@pytest.mark.parametrize("field,value,says", [
    ("audio_mask_width", 65, "'audio_mask_width' = 65 is invalid: allowed an integer from 0 to 64 or None"),
    ("audio_mask_width", -1, "'audio_mask_width' = -1 is invalid: allowed an integer from 0 to 64"),
    ("audio_mask_width", 8.0, "'audio_mask_width' = 8.0 is invalid: allowed int or None"),
    ("audio_db_noise", -0.1, "'audio_db_noise' = -0.1 is invalid: allowed a number from 0 to 4 or None"),
    ("audio_time_shift", 1.5, "'audio_time_shift' = 1.5 is invalid: allowed a number from 0 to 1 or None"),
    ("audio_time_stretch", -0.2, "'audio_time_stretch' = -0.2 is invalid: allowed a number from 0 to 1"),
    ("audio_pitch_shift", 40, "'audio_pitch_shift' = 40 is invalid: allowed a number from 0 to 32 or None"),
    ("audio_gain_db", 41.0, "'audio_gain_db' = 41.0 is invalid: allowed a number from 0 to 40 or None"),
])
def test_audio_view_strengths_outside_their_range_are_named(field, value, says):
    with pytest.raises(errors.ConfigError) as err:
        config.make(overlay="noise", **{field: value})
    assert says in str(err.value)


def test_the_time_convolution_encoder_is_for_log_mels_only():
    with pytest.raises(errors.ConfigError) as err:
        config.make(overlay="shapes", encoder="tcnet")
    assert ("'encoder' = 'tcnet' is invalid: allowed one of resnet18, resnet50, convnet for overlay='shapes'"
            in str(err.value))
    assert config.make(overlay="noise", encoder="tcnet").encoder == "tcnet"


def test_a_new_field_is_type_checked_without_a_rule_of_its_own():
    # the check reads the annotations: a field of any type is covered the moment it is declared
    for f in config.fields(config.Config):
        hint = config._types(f.name)
        bad = "text" if str not in hint else 3.5
        with pytest.raises(errors.ConfigError, match=repr(f.name)):
            config.make(**{f.name: bad})


@needs_cifar
def test_knn_k_beyond_the_monitors_items_is_refused_before_training(tmp_path, data_dir):
    with pytest.raises(errors.ConfigError, match=r"'knn_k' = 100000 is invalid: allowed at most 256"):
        train.pretrain(**{**TINY, "knn_k": 100000}, data_dir=data_dir, out_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # a run that never started leaves nothing behind


@needs_papermill
def test_a_bad_seed_through_papermill_names_the_field(tmp_path):
    with pytest.raises(NotebookFailed) as err:
        run_notebook("pretrain", tmp_path / "out.ipynb", seed=1.5, out_dir=str(tmp_path / "run"))
    assert "ConfigError" in str(err.value) and "'seed' = 1.5 is invalid: allowed int" in str(err.value)


# ---------------------------------------------------------------------------- out_dir and data_dir
def test_an_out_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(errors.ConfigError, match="'out_dir' = .*taken' is invalid: it is a file"):
        train.pretrain(**TINY, out_dir=str(tmp_path / "taken"), data_dir=str(DATA))


def test_an_out_dir_on_a_read_only_file_system_is_refused(tmp_path, monkeypatch):
    # a read-only mount, faked: the check asks access(2), which answers EROFS there
    monkeypatch.setattr(os, "access", lambda p, mode: not str(p).startswith(str(tmp_path)))
    monkeypatch.setattr(rundir, "_read_only", lambda p: True)
    with pytest.raises(errors.ConfigError, match="cannot be written \\(a read-only file system\\)"):
        train.pretrain(**TINY, out_dir=str(tmp_path / "new" / "run"), data_dir=str(DATA))
    assert not (tmp_path / "new").exists()


def test_a_failed_start_leaves_neither_out_dir_nor_a_missing_data_dir(tmp_path):
    nowhere = tmp_path / "no-data"
    with pytest.raises(errors.DataNotFoundError):
        train.pretrain(**{**TINY, "download": True}, out_dir=str(tmp_path / "run"), data_dir=str(nowhere))
    assert not (tmp_path / "run").exists() and not nowhere.exists()


# ---------------------------------------------------------------------------- the files of a run
@needs_cifar
def test_a_hand_edited_config_json_is_rewritten_from_the_checkpoint(tmp_path, data_dir):
    kw = dict(TINY, data_dir=data_dir, out_dir=str(tmp_path))
    train.pretrain(stop_after=1, **kw)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "lr": 0.5}))
    with pytest.warns(UserWarning, match=r"disagreed with the checkpoint .*'lr': \(0.5, 0.03\)"):
        train.pretrain(**kw)
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 0.03


@needs_cifar
def test_a_cut_history_of_a_finished_run_is_rewritten_from_the_checkpoint(tmp_path, data_dir):
    kw = dict(TINY, data_dir=data_dir, out_dir=str(tmp_path))
    first = train.pretrain(**kw)
    text = (tmp_path / "history.jsonl").read_text()
    (tmp_path / "history.jsonl").write_text(text[: len(text) * 2 // 3])  # cut mid-line
    with pytest.raises(errors.CheckpointError, match="line 2 is cut or not JSON"):
        rundir.read_history(tmp_path / "history.jsonl")
    with pytest.warns(UserWarning, match="was cut or edited; rewrote its 2 rows"):
        assert train.pretrain(**kw) == first
    assert (tmp_path / "history.jsonl").read_text() == text


@needs_cifar
def test_wall_s_sums_every_process(tmp_path, data_dir, monkeypatch):
    kw = dict(TINY, data_dir=data_dir, out_dir=str(tmp_path))
    t = time.perf_counter()
    train.pretrain(stop_after=1, **kw)
    first = time.perf_counter() - t
    row = rundir.read_history(tmp_path / "history.jsonl")[0]
    assert 0 < row["wall_s_total"] <= first
    m = train.pretrain(**kw)
    last = rundir.read_history(tmp_path / "history.jsonl")[-1]
    assert m["wall_s"] > last["wall_s_total"] > row["wall_s_total"] and m["wall_s"] >= row["wall_s_total"]


@needs_cifar
def test_a_full_disk_at_a_checkpoint_is_named_and_the_previous_checkpoint_survives(tmp_path, data_dir,
                                                                                  monkeypatch):
    kw = dict(TINY, data_dir=data_dir, out_dir=str(tmp_path), epochs=3)
    train.pretrain(stop_after=1, **kw)
    good = (tmp_path / "checkpoint.pt").read_bytes()
    real = rundir.atomic_save

    def full(obj, path):  # what torch.save raises when the disk fills mid-write
        with rundir.atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(rundir, "atomic_save", full)
    with pytest.raises(errors.DiskError) as err:
        train.pretrain(**kw)
    msg = str(err.value)
    assert msg.startswith("no space left on device: writing") and "checkpoint.pt" in msg
    assert "the last good checkpoint is" in msg and "(epoch 1), untouched" in msg
    assert (tmp_path / "checkpoint.pt").read_bytes() == good and not list(tmp_path.glob(".checkpoint.tmp*"))
    monkeypatch.setattr(rundir, "atomic_save", real)
    assert train.pretrain(**kw)["epochs"] == 3  # and the run resumes once there is room


@needs_cifar
def test_too_little_free_space_is_named_before_training(tmp_path, data_dir, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(errors.DiskError, match="0.0 MB free, a checkpoint needs"):
        train.pretrain(**TINY, data_dir=data_dir, out_dir=str(tmp_path))
    assert not (tmp_path / "checkpoint.pt").exists()


@needs_cifar
def test_a_non_finite_loss_in_the_first_epoch_says_no_checkpoint_exists(tmp_path, data_dir, monkeypatch):
    from featdrop import losses

    monkeypatch.setattr(losses, "contrastive_loss", lambda *a, **k: torch.tensor(float("nan"),
                                                                                 requires_grad=True))
    with pytest.raises(errors.NonFiniteLossError, match="epoch 1, step 1.*No checkpoint was written"):
        train.pretrain(**TINY, data_dir=data_dir, out_dir=str(tmp_path))
    assert not (tmp_path / "checkpoint.pt").exists()


@needs_cifar
def test_reprobe_of_a_damaged_checkpoint_is_one_line(tmp_path, data_dir, capsys):
    train.pretrain(**TINY, data_dir=data_dir, out_dir=str(tmp_path))
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["reprobe", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt is damaged or unreadable" in err and "Traceback" not in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- grids
def test_workers_0_is_refused_even_when_every_cell_is_finished(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plan, "finished", lambda cell: True)
    assert cli.main(["grid", "--runs-dir", str(tmp_path), "--workers", "0", "seed=0,1", "device=cpu"]) == 2
    assert "--workers 0: expected a positive integer or auto" in capsys.readouterr().err


def test_two_grids_in_one_directory_clash_at_planning_time(tmp_path):
    first = plan.plan(tmp_path, {"seed": [0, 1]}, {**TINY, "views": "expert"})
    rundir.write_json(first[0].dir / "config.json", config.dataclasses.asdict(first[0].config))
    with pytest.raises(errors.ConfigError) as err:
        plan.plan(tmp_path, {"seed": [0, 1]}, {**TINY, "views": "viewmaker"})
    assert str(err.value).startswith("cell seed-0 clashes with a run already in")
    assert "views = 'expert' there, 'viewmaker' in this grid" in str(err.value)
    plan.plan(tmp_path, {"seed": [0, 1]}, {**TINY, "views": "expert", "epochs": 5})  # more epochs: a resume


@needs_cifar
def test_a_worker_dies_with_its_killed_launcher_and_the_cell_resumes(tmp_path):
    fields = [f"{k}={v}" for k, v in {**TINY, "epochs": 30, "data_dir": str(DATA)}.items()]
    cmd = [sys.executable, "-m", "featdrop", "grid", "--runs-dir", str(tmp_path), "seed=0,1", *fields]
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cell = tmp_path / "seed-0"
    deadline = time.monotonic() + 120
    while runlock.holder(cell) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    worker = runlock.holder(cell)["pid"]
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its launcher")
    assert runlock.holder(cell) is None  # released: the next launch takes the cell up


# ---------------------------------------------------------------------------- foreign encoders
class Images(torch.nn.Module):       # returns its input: a (B, 3, 32, 32) "feature"
    def forward(self, x):
        return x * 1


class Scalar(torch.nn.Module):       # one number per image, (B,)
    def forward(self, x):
        return x.mean(dim=(1, 2, 3))


class OneRow(torch.nn.Module):       # one row for the whole batch, (1, D)
    def forward(self, x):
        return x.mean(dim=(0, 2, 3))[None]


@pytest.mark.parametrize("module,says", [(Images, "returned (2, 3, 32, 32) for a batch of 2 images"),
                                         (Scalar, "returned (2,) for a batch of 2 images"),
                                         (OneRow, "returned (1, 3) for a batch of 2 images")])
def test_a_file_encoder_of_the_wrong_output_shape_is_refused_before_data_is_read(tmp_path, module, says):
    path = tmp_path / "odd.pt"
    torch.jit.script(module()).save(str(path))
    with pytest.raises(errors.SpecError, match=r"allowed \(B, D\) features") as err:
        suppression.report(f"file:{path}", device="cpu", data_dir=str(tmp_path / "no-data"))
    assert says in str(err.value)


# ---------------------------------------------------------------------------- the theory's command line
@pytest.mark.parametrize("args,says", [(["--k", "0"], "k = 0 is invalid"), (["--k", "100"],
                                                                            "k = 100 is invalid"),
                                       (["--ps", "-0.5"], "ps = [-0.5] is invalid"),
                                       (["--p", "2"], "unrecognized arguments: --p 2"),
                                       (["--batch", "1"], "batch = 1 is invalid"),
                                       (["--tau", "0"],
                                        "tau = 0.0 is invalid: allowed a positive temperature")])
def test_the_theory_script_refuses_settings_that_mean_nothing(tmp_path, args, says):
    out = subprocess.run([sys.executable, "theory/linear_model.py", *args, "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "results.json").exists()


def test_disk_error_recognises_a_full_disk_and_a_read_only_file_system(tmp_path):
    full = rundir.disk_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "x", "kept")
    ro = rundir.disk_error(OSError(errno.EROFS, "Read-only file system"), tmp_path / "x", "kept")
    assert str(full).startswith("no space left on device: writing")
    assert str(ro).startswith("read-only file system: writing")
    assert rundir.disk_error(ValueError("other"), tmp_path / "x", "kept") is None


# ---------------------------------------------------------------------------- issue 28
# every command's last line, every file the report reads, and what a run says about itself
NONE = {**TINY, "overlay": "none"}


def _args(fields: dict) -> list[str]:
    return [f"{k}={v}" for k, v in fields.items()]


@pytest.fixture(scope="module")
def none_run(tmp_path_factory):
    """One finished 2-epoch run of plain photos (overlay=none: no alternate label), made by the command
    line as a user makes it; tests that change it work on a copy."""
    import contextlib
    import io

    if not offline_cifar():
        pytest.skip(f"no CIFAR-10 copy under {DATA}")
    run = tmp_path_factory.mktemp("none") / "run"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["train", *_args({**NONE, "data_dir": DATA, "out_dir": run})])
    return dict(dir=run, rc=rc, out=out.getvalue(), err=err.getvalue())


def _copy(run, to):
    import shutil

    shutil.copytree(run, to)
    return to


def test_train_overlay_none_ends_with_exit_0_and_a_dash_for_the_label_it_lacks(none_run):
    assert none_run["rc"] == 0, none_run["err"]
    last = none_run["out"].splitlines()[-2:]
    assert "probe_main " in last[0] and "probe_alt –" in last[0] and "chance_alt –" in last[0]
    assert "probe_s" not in last[0]  # a time is not an accuracy
    assert last[1].startswith("wall ") and last[1].endswith(f"wrote {none_run['dir'] / 'metrics.json'}")


def test_a_rerun_of_a_finished_run_says_where_its_metrics_are_and_writes_nothing(none_run, tmp_path,
                                                                                  capsys):
    run = _copy(none_run["dir"], tmp_path / "run")
    before = (run / "metrics.json").stat().st_mtime_ns
    assert cli.main(["train", *_args({**NONE, "data_dir": DATA, "out_dir": run})]) == 0
    out = capsys.readouterr().out
    assert "the run had finished before (2 epochs" in out
    assert f"its metrics are in {run / 'metrics.json'}" in out
    assert "wrote" not in out and (run / "metrics.json").stat().st_mtime_ns == before


def test_the_notebook_says_when_its_run_had_finished_before(none_run, tmp_path, capsys):
    from featdrop import notebook

    run = _copy(none_run["dir"], tmp_path / "run")
    cfg = config.resolve(config.make(**NONE, data_dir=str(DATA), out_dir=str(run)))
    assert notebook.run(cfg)["epochs"] == 2
    assert f"the run had finished before (2 epochs): nothing was trained or written; its metrics are in " \
           f"{run / 'metrics.json'}" in capsys.readouterr().out


def test_a_finished_run_is_never_shortened_by_a_rerun_with_fewer_epochs(none_run, tmp_path, capsys):
    run = _copy(none_run["dir"], tmp_path / "run")
    before = (run / "metrics.json").read_text()
    assert cli.main(["train", *_args({**NONE, "epochs": 1, "data_dir": DATA, "out_dir": run})]) == 2
    err = capsys.readouterr().err
    assert "config field 'epochs' = 1 is invalid for out_dir" in err and "trained for 2 epochs" in err
    assert "allowed epochs=2 or more" in err and err.count("\n") == 1
    assert (run / "metrics.json").read_text() == before


def test_a_hand_added_key_in_config_json_is_named_when_it_is_dropped(none_run, tmp_path):
    run = _copy(none_run["dir"], tmp_path / "run")
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "note": "lr sweep"}))
    with pytest.warns(UserWarning, match=r"held key\(s\) that are not config fields, \{'note': 'lr sweep'\}"):
        train.pretrain(**NONE, data_dir=str(DATA), out_dir=str(run))
    assert "note" not in json.loads((run / "config.json").read_text())


def test_a_cut_metrics_json_of_a_finished_run_is_evaluated_again(none_run, tmp_path):
    run = _copy(none_run["dir"], tmp_path / "run")
    first = json.loads((run / "metrics.json").read_text())
    text = (run / "metrics.json").read_text()
    (run / "metrics.json").write_text(text[: len(text) // 2])
    with pytest.warns(UserWarning, match="metrics.json is cut or not a JSON object; evaluating the finished"):
        again = train.pretrain(**NONE, data_dir=str(DATA), out_dir=str(run))
    assert again["probe_main"] == first["probe_main"] and again["epochs"] == 2
    assert json.loads((run / "metrics.json").read_text())["probe_main"] == first["probe_main"]


def test_a_finished_run_continued_sets_its_earlier_metrics_aside(none_run, tmp_path):
    from featdrop.train import checkpoint

    run = _copy(none_run["dir"], tmp_path / "run")
    kw = dict(NONE, epochs=4, data_dir=str(DATA), out_dir=str(run))
    with pytest.warns(UserWarning, match="held the result after 2 epochs; this run goes on to 4, so it was "
                                         "moved to metrics_epochs2.json"):
        assert train.pretrain(stop_after=1, **kw) == {"stopped_at_epoch": 3}
    assert not (run / "metrics.json").exists() and (run / "metrics_epochs2.json").exists()
    assert not checkpoint.finished(config.resolve(config.make(**kw)))  # a grid runs it on


def test_metrics_json_records_what_decides_whether_two_runs_agree(none_run):
    m = json.loads((none_run["dir"] / "metrics.json").read_text())
    for key in ("git_commit", "featdrop_version", "torch_version", "numpy_version", "opentsne_version",
                "threads", "cpu_capability", "float32_matmul_precision", "deterministic_algorithms",
                "bf16_autocast", "device", "resumed"):
        assert key in m, key
    assert m["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    assert m["bf16_autocast"] is False and m["git_commit"]
    # and every config field, presets filled in, is beside it
    assert set(json.loads((none_run["dir"] / "config.json").read_text())) == set(config.field_names())


def test_report_reports_the_intact_runs_and_names_each_damaged_one(none_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    _copy(none_run["dir"], runs / "ok")
    cut = _copy(none_run["dir"], runs / "cut")
    text = (cut / "metrics.json").read_text()
    (cut / "metrics.json").write_text(text[: len(text) // 2])
    (_copy(none_run["dir"], runs / "no-config") / "config.json").unlink()
    assert cli.main(["report", str(runs)]) == 0
    captured = capsys.readouterr()
    assert "1 finished run(s)" in captured.out and "Traceback" not in captured.err
    skipped = [line for line in captured.out.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2
    assert f"skipped {cut}: its metrics.json is cut or not JSON (JSONDecodeError" in skipped[0]
    assert f"skipped {runs / 'no-config'}: no config.json; running its command again rewrites" in skipped[1]


def test_report_reads_a_config_json_that_predates_a_field_as_its_default(none_run, tmp_path, capsys):
    old = _copy(none_run["dir"], tmp_path / "runs" / "old")
    saved = json.loads((old / "config.json").read_text())
    del saved["overlay_opacity"]  # as written before that field existed
    (old / "config.json").write_text(json.dumps(saved))
    assert cli.main(["report", str(tmp_path / "runs")]) == 0  # no KeyError: 'overlay_opacity'
    assert "1 finished run(s)" in capsys.readouterr().out


def test_report_by_an_unknown_field_is_one_line_naming_the_fields_allowed(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path), "--by", "nosuchfield"]) == 2
    err = capsys.readouterr().err
    assert "--by nosuchfield: not a config field; allowed: overlay, views," in err and err.count("\n") == 1


def test_the_grid_done_line_of_a_run_without_an_alternate_label(tmp_path):
    from featdrop.lab import launch

    rundir.write_json(tmp_path / "metrics.json", {"probe_main": 0.3, "probe_alt": None, "wall_s": 5.0})
    lines = []
    bar = type("Bar", (), {"write": staticmethod(lines.append)})
    assert launch._finish(plan.Cell("overlay-none", tmp_path, {}, None), 0, bar) == "done"
    assert lines == ["  done overlay-none: probe main 0.300, alt – (5 s)"]


def test_the_reprobe_table_shows_a_dash_for_the_chance_of_a_label_a_run_lacks():
    import pandas as pd

    from featdrop.probing import reprobe

    df = pd.DataFrame([dict(run="a", overlay="none", probe_main=0.3, probe_alt=None, chance_main=0.1,
                            chance_alt=None),
                       dict(run="b", overlay="shapes", probe_main=0.3, probe_alt=0.5, chance_main=0.1,
                            chance_alt=1 / 3)])
    shown = reprobe.table(df).splitlines()
    assert "0.100/–" in shown[1] and "0.100/0.333" in shown[2] and "nan" not in "".join(shown)


def test_a_grid_plans_over_a_cell_whose_files_are_cut(tmp_path):
    cell = plan.plan(tmp_path, {"seed": [0, 1]}, TINY)[0]
    cell.dir.mkdir()
    (cell.dir / "config.json").write_text('{"overlay": "sha')
    (cell.dir / "metrics.json").write_text("{}")
    again = plan.plan(tmp_path, {"seed": [0, 1]}, TINY)[0]  # no JSONDecodeError
    assert not plan.finished(again)  # the cell runs; the run rewrites config.json from its checkpoint


def test_a_grid_refuses_at_planning_time_a_cell_it_would_shorten(tmp_path):
    cell = plan.plan(tmp_path, {"seed": [0, 1]}, TINY)[0]
    rundir.write_json(cell.dir / "config.json", config.dataclasses.asdict(cell.config))
    rundir.write_history(cell.dir / "history.jsonl", [{"epoch": 1}, {"epoch": 2}])
    with pytest.raises(errors.ConfigError, match="cell seed-0: .* holds a run trained for 2 epochs, and this "
                                                 "grid asks for epochs=1; a run is never shortened"):
        plan.plan(tmp_path, {"seed": [0, 1]}, {**TINY, "epochs": 1})


@needs_cifar
def test_a_run_never_loses_its_metrics_to_a_figure(tmp_path, data_dir, capsys, monkeypatch):
    from featdrop.train import figures

    def broken(*a, **k):
        raise RuntimeError("no display")

    monkeypatch.setattr(figures, "probes", broken)
    with pytest.warns(UserWarning, match=r"figure 'probes' failed \(RuntimeError: no display\); left out"):
        m = train.pretrain(**{**TINY, "epochs": 1, "test_subset": 1}, data_dir=data_dir,
                           out_dir=str(tmp_path))
    assert "embedding map skipped: 1 test item(s), and a map needs at least 31 (raise test_subset)" in \
        capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(m))
    assert not any(k.startswith("map_knn_") for k in m)
    figs = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {"inputs.png", "views.png", "loss_curves.png"} <= figs
    assert not figs & {"embedding.png", "embedding.npz", "probes.png"}


def test_the_notebook_shows_a_figure_the_run_left_out_as_one_line(tmp_path, capsys):
    from types import SimpleNamespace

    from featdrop import notebook

    assert notebook.figure(SimpleNamespace(out_dir=str(tmp_path)), "embedding") is None
    path = tmp_path / "figures" / "embedding.png"
    assert capsys.readouterr().out == f"no {path}: the run did not draw it (its output above says why)\n"


def test_the_suppression_report_skips_a_map_its_test_set_is_too_small_for(tmp_path, capsys):
    row = {"overlay": "shapes"}
    features = (torch.randn(1, 8), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    suppression._map(tmp_path, row, features, "file:x.pt", 0)
    assert "shapes: embedding map skipped: 1 test item(s)" in capsys.readouterr().out
    assert row == {"overlay": "shapes"} and not list(tmp_path.iterdir())


@needs_cifar
def test_a_subset_larger_than_the_split_is_one_line_before_any_work(tmp_path, capsys):
    fields = dict(subset=60000, oracles=False, device="cpu", data_dir=DATA, out_dir=tmp_path / "run")
    assert cli.main(["train", *_args(fields)]) == 2
    err = capsys.readouterr().err
    assert err == ("featdrop train: error: config field 'subset' = 60000 is invalid: allowed at most the "
                   "50000 train images, or \"all\"\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not (DATA / "fsdd" / "recordings").is_dir(), reason=f"no FSDD copy under {DATA}")
def test_a_test_subset_larger_than_the_audio_split_names_the_field(tmp_path):
    with pytest.raises(errors.ConfigError, match="'test_subset' = 5000 is invalid: allowed at most the 1000 "
                                                 "test clips"):
        train.pretrain(overlay="noise", preset="quick", oracles=False, test_subset=5000, device="cpu",
                       progress=False, data_dir=str(DATA), out_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@needs_cifar
def test_a_failure_before_training_leaves_no_new_out_dir(tmp_path, data_dir, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(errors.DiskError):
        train.pretrain(**TINY, data_dir=data_dir, out_dir=str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()  # not its config.json, not its lock


@needs_cifar
def test_a_freed_disk_that_holds_one_new_checkpoint_lets_the_run_go_on(tmp_path, data_dir, monkeypatch):
    import shutil

    from featdrop.train import checkpoint

    kw = dict(TINY, data_dir=data_dir, out_dir=str(tmp_path))
    train.pretrain(stop_after=1, **kw)
    size = (tmp_path / "checkpoint.pt").stat().st_size
    # room for one more checkpoint of this size: the new one replaces the old one, it is not kept beside it
    free = size + checkpoint.SPACE_MARGIN + 200_000
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**10, 10**10 - free, free))
    assert train.pretrain(**kw)["epochs"] == 2


@needs_cifar
def test_the_space_check_before_the_first_step_counts_the_optimisers_state(tmp_path, data_dir, monkeypatch):
    import re
    import shutil

    kw = dict(TINY, views="viewmaker", epochs=1, data_dir=data_dir, out_dir=str(tmp_path))
    with monkeypatch.context() as m:
        m.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
        with pytest.raises(errors.DiskError) as err:
            train.pretrain(**kw)
    need = float(re.search(r"a checkpoint needs ([0-9.]+) MB", str(err.value))[1]) * 1e6
    train.pretrain(stop_after=1, **kw)  # the checkpoint once SGD's momentum and Adam's moments are in it
    size = (tmp_path / "checkpoint.pt").stat().st_size
    assert size <= need <= size + 2e6


@pytest.mark.parametrize("alpha,beta", [(1, 2), (1, 1)])
def test_the_theory_script_refuses_a_weak_feature_that_is_not_weaker(tmp_path, alpha, beta):
    out = subprocess.run([sys.executable, "theory/linear_model.py", "--alpha", str(alpha), "--beta",
                          str(beta), "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"alpha, beta = ({alpha:.1f}, {beta:.1f}) is invalid: allowed positive feature scales with β < α" \
        in out.stderr
    assert not (tmp_path / "results.json").exists()


def test_the_suppression_report_says_which_image_counts_were_given():
    from types import SimpleNamespace

    run = SimpleNamespace(run_config={"subset": 5000, "test_subset": 2000, "seed": 3})
    cpu = torch.device("cpu")
    assert suppression.default_settings(run, cpu, 1000, 500) == ((1000, 500, 3), "as given")
    assert suppression.default_settings(run, cpu, 1000) == ((1000, 2000, 3),
                                                            "train as given, test the run's own")
    assert suppression.default_settings(run, cpu) == ((5000, 2000, 3), "the run's own")
    foreign = SimpleNamespace(run_config=None)
    assert suppression.default_settings(foreign, cpu, None, 50) == ((400, 50, 0),
                                                                     "train the CPU default, test as given")


def test_the_epoch_line_and_the_loss_curves_show_the_viewmaker_step_with_one_sign_and_name():
    from featdrop.train.trainer import epoch_line
    from featdrop.viz import plots

    row = {"epoch": 1, "loss": 4.7, "viewmaker_loss": -4.636, "images_per_s": 100.0, "knn_main": 0.3,
           "pos_acc": 0.9}  # as history.jsonl stores it
    line = epoch_line(row, 1)
    assert "vm_step_loss 4.636" in line and "-4.636" not in line
    curve = plots.loss_curves([row]).axes[0].lines[1]
    assert list(curve.get_ydata()) == [4.636]
    assert curve.get_label() == "vm_step_loss: L on the viewmaker's step (it maximises L)"


@needs_cifar
@needs_papermill
def test_a_progress_line_appears_once_in_the_notebook_and_once_on_papermills_terminal(tmp_path):
    # outside pytest's own environment variable: ipykernel captures the kernel's stderr only then, as a user's
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    params = dict(subset=256, test_subset=128, batch_size=64, epochs=1, oracles=False, device="cpu",
                  data_dir=str(DATA), out_dir=str(tmp_path / "run"))
    out = tmp_path / "out.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "pretrain.ipynb"), str(out),
           "-y", json.dumps(params), "-k", "python3", "--cwd", str(ROOT), "--no-progress-bar"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    streams = [o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])
               if o["output_type"] == "stream"]
    in_notebook = sum("".join(o["text"]).count("epoch 1/1:") for o in streams)
    assert in_notebook == 1 and done.stderr.count("epoch 1/1:") == 1


def test_train_help_lists_every_config_field_and_a_dashed_field_gets_its_syntax(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert all(f"{name}=" in shown for name in config.field_names()) and "featdrop/config.py" in shown
    assert cli.main(["train", "--epochs", "1"]) == 2
    assert "'--epochs 1' is not an option: config fields are given as FIELD=VALUE, here epochs=1" in \
        capsys.readouterr().err
    assert cli.main(["grid", "--runs-dir", str(tmp_path), "--seed=0,1"]) == 2
    assert "here seed=0,1" in capsys.readouterr().err


def test_the_readme_says_where_the_offline_data_is_and_what_the_tests_need():
    readme = (ROOT / "README.md").read_text()
    assert "../shared/data" in readme and ".ci/run" in readme
    assert "tests need CIFAR-10 in `./data` or `$FEATDROP_DATA`" in readme
    assert "../shared/data" in (ROOT / "docs" / "data.md").read_text()


# ---------------------------------------------------------------------------- the label readers' cache
def _oracle_cfg(tmp_path):
    from featdrop.oracles import shipped, store

    cfg = config.resolve(config.make(overlay="shapes", device="cpu", data_dir=str(tmp_path)))
    assert shipped.find(store.key(cfg, "main"), store.recipe(cfg, "main")) is None  # none shipped at 10 steps
    return cfg, store


def _reader_blob(cfg, store, accuracy=0.5):
    from featdrop.oracles import reader

    torch.manual_seed(0)
    return {"label": "main", "state": reader.Reader(3, 10).state_dict(), "accuracy": accuracy,
            "num_classes": 10, "in_channels": 3, "side": 32, "meta": {"key": store.key(cfg, "main")}}


@needs_cifar
def test_a_damaged_cached_reader_is_named_moved_aside_and_trained_again(tmp_path, data_dir, monkeypatch):
    cfg, store = _oracle_cfg(tmp_path)
    cfg = config.resolve(config.make(overlay="shapes", device="cpu", data_dir=data_dir))
    file = store.path(cfg, "main")
    file.parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_save(_reader_blob(cfg, store), file)
    file.write_bytes(file.read_bytes()[:5000])  # cut, as a full disk or a broken copy leaves it
    said = []
    oracle = store.load_or_train(cfg, "main", None, torch.device("cpu"), say=said.append)
    text = "\n".join(said)
    assert f"oracle cache {file} is damaged or unreadable" in text
    assert "moved aside to" in text and file.with_name(file.name + ".damaged").exists()
    assert "training" in text and file.exists() and oracle.meta["steps"] == 10  # trained again, 10 steps


def test_a_read_only_cache_that_holds_the_reader_is_read_without_a_lock(tmp_path, monkeypatch):
    cfg, store = _oracle_cfg(tmp_path)
    file = store.path(cfg, "main")
    file.parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_save(_reader_blob(cfg, store, accuracy=0.7), file)

    def read_only(*a, **k):  # what creating the lock file does on a read-only mount
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(runlock, "waiting_lock", read_only)
    said = []
    assert store.load_or_train(cfg, "main", None, torch.device("cpu"), say=said.append).accuracy == 0.7
    assert "cached" in said[0]
    # an empty read-only cache: named, with the fixes, before any training
    file.unlink()
    with pytest.raises(errors.ConfigError) as err:
        store.load_or_train(cfg, "main", None, torch.device("cpu"), say=said.append)
    msg = str(err.value)
    assert f"the label-oracle cache {file.parent} cannot be written (Read-only file system)" in msg
    assert "does not hold" in msg and "FEATDROP_DATA" in msg and "oracles=False" in msg


def test_a_run_waiting_for_another_runs_reader_says_what_it_waits_for(tmp_path, monkeypatch):
    import fcntl
    import threading

    cfg, store = _oracle_cfg(tmp_path)
    monkeypatch.setattr(store, "WAIT_SAY_S", 0.3)
    file = store.path(cfg, "main")
    file.parent.mkdir(parents=True, exist_ok=True)
    # another process trains it: it holds the lock and names itself in the lock file
    fd = os.open(file.with_suffix(".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": 4242, "host": "elsewhere", "started": time.time()}).encode())
    said, done = [], {}
    waiter = threading.Thread(target=lambda: done.update(
        o=store.load_or_train(cfg, "main", None, torch.device("cpu"), say=said.append)))
    waiter.start()
    deadline = time.time() + 20
    while not any("waiting for" in s for s in said) and time.time() < deadline:
        time.sleep(0.05)
    rundir.atomic_save(_reader_blob(cfg, store, accuracy=0.8), file)  # the other run finishes and caches it
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    waiter.join(20)
    line = next(s for s in said if "waiting for" in s)
    assert "pid 4242 on host elsewhere" in line
    assert f"training the main oracle {store.key(cfg, 'main')}" in line
    assert done["o"].accuracy == 0.8 and not any("training plain" in s for s in said)  # loaded, not trained
