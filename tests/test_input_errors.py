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
from conftest import DATA, ROOT, NotebookFailed, needs_cifar, needs_papermill, run_notebook

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
