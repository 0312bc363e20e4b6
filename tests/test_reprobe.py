"""Re-probing finished runs: the fast protocol reproduces metrics.json exactly, the reference protocol
runs on the same encoder, a concatenation of runs probes the features side by side, and bad input
fails before any model is loaded."""
import json

import pytest
from conftest import DATA, needs_cifar

from featdrop import cli, rundir, train
from featdrop.errors import ConfigError
from featdrop.probing import reprobe

TINY = dict(overlay="shapes", preset="quick", oracles=False, subset=256, test_subset=128, batch_size=64,
            epochs=1, encoder="convnet", viewmaker_width=8, knn_k=20, progress=False, device="cpu")
CONVNET_WIDTH = 256  # the ConvNet's pooled features


@pytest.fixture(scope="module")
def runs_(tmp_path_factory):
    """Two tiny finished runs on the same data items: expert and viewmaker views."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for views in ("expert", "viewmaker"):
        out[views] = root / views
        train.pretrain(views=views, data_dir=str(DATA), out_dir=str(out[views]), **TINY)
    return out


@pytest.fixture
def no_loading(monkeypatch):
    """Bad input must fail before any work: loading a run is an error here."""
    def refuse(*a, **k):
        raise AssertionError("a run was loaded before the input was checked")
    monkeypatch.setattr(train, "load_run", refuse)


@needs_cifar
def test_fast_reprobe_from_the_command_line_reproduces_metrics_json_exactly(runs_, capsys):
    a, b = runs_["expert"], runs_["viewmaker"]
    assert reprobe.main([str(a), str(b), "--probe", "fast", "--device", "cpu"]) == 0
    for run in (a, b):
        saved, written = (rundir.read_json(run / "metrics.json"),
                          rundir.read_json(run / "probes" / "fast.json"))
        keys = [k for k in saved if k.startswith(("probe_", "knn_", "chance_")) and k != "probe_s"]
        assert {"probe_main", "probe_alt", "probe_coarse", "chance_main", "chance_alt",
                "chance_coarse"} <= set(keys)
        assert {k: written[k] for k in keys} == {k: saved[k] for k in keys}  # bit for bit on a CPU
        assert (written["protocol"] == "fast" and written["probe_epochs"] is None
                and written["device"] == "cpu")
        assert written["run"] == str(run) and written["seed"] == 0 and "time" in written
    # the table: one row per run, probe accuracies and chance levels
    out = capsys.readouterr().out
    # a progress line before each run and its accuracies after it, then the table
    progress = [line for line in out.splitlines() if line.startswith("reprobe ")]
    assert progress == [f"reprobe 1/2: {a} (fast protocol) ...", f"reprobe 2/2: {b} (fast protocol) ..."]
    lines = out.splitlines()[4:]
    assert all(w in lines[0] for w in ("run", "overlay", "views", "loss", "seed", "protocol", "probe_main",
                                       "probe_alt", "probe_coarse", "chance (main/alt/coarse)"))
    assert str(a) in lines[1] and "expert" in lines[1] and str(b) in lines[2] and "viewmaker" in lines[2]
    assert f"{rundir.read_json(a / 'metrics.json')['probe_main']:.4f}" in lines[1]
    assert f"wrote {b / 'probes' / 'fast.json'}" in out


@needs_cifar
def test_reference_protocol_on_the_same_encoder(runs_):
    run = runs_["viewmaker"]  # the probe trains on the frozen viewmaker's views
    before = (run / "metrics.json").read_text()
    row = reprobe.reprobe(run, probe="reference", probe_epochs=2, device="cpu").iloc[0]
    written = rundir.read_json(run / "probes" / "reference.json")
    assert written["protocol"] == "reference" and written["probe_epochs"] == 2
    for name in ("main", "alt"):
        acc, chance = written[f"probe_{name}"], written[f"chance_{name}"]
        assert acc == row[f"probe_{name}"]
        assert 0 <= acc <= 1 and acc >= chance - 0.1, (name, acc, chance)
    assert (run / "metrics.json").read_text() == before  # a re-probe never rewrites the run's own metrics


@needs_cifar
def test_concat_width_is_the_sum_and_self_concat_keeps_accuracy(runs_, tmp_path):
    a, b = runs_["expert"], runs_["viewmaker"]
    both = reprobe.reprobe([a, b], concat=True, device="cpu").iloc[0]
    assert both["feature_dim"] == 2 * CONVNET_WIDTH
    written = rundir.read_json(a / "probes" / "concat-fast.json")
    assert written["feature_dims"] == [CONVNET_WIDTH, CONVNET_WIDTH]
    assert [r["run"] for r in written["runs"]] == [str(a), str(b)] and written["views"] == "expert+viewmaker"
    assert (0 <= written["probe_main"] <= 1
            and written["chance_alt"] == rundir.read_json(a / "metrics.json")["chance_alt"])
    # a run concatenated with itself: the same features twice, at least as separable
    single = rundir.read_json(a / "metrics.json")
    twice = reprobe.reprobe([a, a], concat=True, device="cpu", out=tmp_path / "twice.json").iloc[0]
    assert twice["feature_dim"] == 2 * CONVNET_WIDTH and (tmp_path / "twice.json").exists()
    for name in ("main", "alt"):
        assert twice[f"probe_{name}"] >= single[f"probe_{name}"] - 0.03, name


# ------------------------------------------------------------------ bad input, before any work
def fake_run(path, **changes):
    """A directory that looks like a run to the checks (config.json, checkpoint.pt); never loaded."""
    path.mkdir(parents=True)
    cfg = {"overlay": "shapes", "seed": 0, "subset": 256, "test_subset": 128, "views": "expert", **changes}
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "checkpoint.pt").write_bytes(b"")
    return path


def test_missing_run_directory(tmp_path, no_loading):
    with pytest.raises(ConfigError, match="does not exist.*config.json.*checkpoint.pt"):
        reprobe.reprobe([fake_run(tmp_path / "a"), tmp_path / "nope"])


def test_directory_without_checkpoint_is_a_run_that_has_not_trained(tmp_path, no_loading):
    run = fake_run(tmp_path / "a")
    (run / "checkpoint.pt").unlink()
    with pytest.raises(ConfigError, match=f"no checkpoint.pt in '{run}'.*not trained"):
        reprobe.reprobe(run)


def test_unknown_protocol_and_bad_epochs(tmp_path, no_loading, capsys):
    run = fake_run(tmp_path / "a")
    with pytest.raises(ConfigError, match="unknown probe protocol 'linear'; allowed: fast, reference"):
        reprobe.reprobe(run, probe="linear")
    with pytest.raises(ConfigError, match="positive integer"):
        reprobe.reprobe(run, probe="reference", probe_epochs=0)
    with pytest.raises(ConfigError, match="reference protocol only"):
        reprobe.reprobe(run, probe="fast", probe_epochs=5)
    with pytest.raises(ConfigError, match="device = 'tpu' is invalid: allowed auto, cpu, cuda or cuda:N"):
        reprobe.reprobe(run, device="tpu")
    with pytest.raises(SystemExit) as e:
        cli.main(["reprobe", str(run), "--probe", "linear"])
    assert e.value.code == 2 and "invalid choice: 'linear'" in capsys.readouterr().err
    assert cli.main(["reprobe", str(run), "--probe", "reference", "--probe-epochs", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("featdrop reprobe: error: probe_epochs = -1") and "Traceback" not in err


def test_concat_needs_the_fast_protocol_and_two_runs(tmp_path, no_loading):
    a, b = fake_run(tmp_path / "a"), fake_run(tmp_path / "b", views="viewmaker")
    with pytest.raises(ConfigError, match="fast protocol only.*own augmentations"):
        reprobe.reprobe([a, b], probe="reference", concat=True)
    with pytest.raises(ConfigError, match="at least two run directories"):
        reprobe.reprobe([a], concat=True)


@pytest.mark.parametrize("field, value", [("seed", 1), ("subset", 512), ("overlay", "digits")])
def test_concat_of_runs_on_different_data_names_the_field(tmp_path, no_loading, field, value):
    a, b = fake_run(tmp_path / "a"), fake_run(tmp_path / "b", **{field: value})
    with pytest.raises(ConfigError, match=f"config field '{field}' differs"):
        reprobe.reprobe([a, b], concat=True)
