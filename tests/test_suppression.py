"""Suppression report: encoders built so that the answer is known, the encoder specs, the CLI, the
notebook."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import needs_cifar, run_notebook

from featdrop import cli, errors
from featdrop.probing import suppression

# The shapes overlay lives in the centred box [W/3, 2W/3]² (pixels 10.7 to 21.3); this box holds it with a
# margin.
BOX = slice(9, 24)
SMALL = dict(overlays=("none", "shapes"), subset=500, test_subset=300, device="cpu")


def sees_only_the_overlay(x):
    """(B, 3, 32, 32) → (B, 199): edge strength inside the box (the shape's outline, whatever its colour)
    and the box's mean colour. Nothing outside the box, where most of the photo is."""
    b = x[:, :, BOX, BOX]
    gx = (b[..., 1:] - b[..., :-1]).abs().sum(1)[:, 1:, :]
    gy = (b[..., 1:, :] - b[..., :-1, :]).abs().sum(1)[:, :, 1:]
    return torch.cat([(gx + gy).flatten(1), b.mean((2, 3))], 1)


def blanks_the_overlay(x):
    """(B, 3, 32, 32) → (B, 192): the photo with the box set to black, 4×4 average-pooled."""
    x = x.clone()
    x[:, :, BOX, BOX] = 0
    return F.avg_pool2d(x, 4).flatten(1)


class PooledPixels(nn.Module):
    def forward(self, x):
        return F.avg_pool2d(x, 4).flatten(1)  # (B, 192)


@needs_cifar
def test_an_encoder_that_sees_only_the_overlay_reads_it_and_not_the_class(data_dir):
    t = suppression.report(sees_only_the_overlay, data_dir=data_dir, **SMALL).set_index("overlay")
    assert t.loc["shapes", "probe_alt"] > 0.9                      # chance 1/3
    assert t.loc["shapes", "probe_main"] < t.loc["shapes", "chance_main"] + 0.1
    assert math.isnan(t.loc["none", "probe_alt"]) and math.isnan(t.loc["none", "chance_alt"])
    assert t.loc["none", "suppression_main"] == 0
    assert (t.feature_dim == 199).all() and (t.n_train == 500).all() and (t.n_test == 300).all()
    assert 0.5 < t.loc["shapes", "chance_coarse"] < 0.7           # 4 vehicle classes of 10


@needs_cifar
def test_an_encoder_that_blanks_the_overlay_keeps_the_class_and_misses_the_overlay(data_dir):
    t = suppression.report(blanks_the_overlay, data_dir=data_dir, **SMALL).set_index("overlay")
    # outside the box the overlaid photo is the plain one: the same features, the same class accuracy
    assert t.loc["shapes", "probe_main"] == t.loc["none", "probe_main"] > t.loc["none", "chance_main"] + 0.05
    assert t.loc["shapes", "suppression_main"] == 0 and t.loc["shapes", "suppression_coarse"] == 0
    assert t.loc["shapes", "probe_alt"] < t.loc["shapes", "chance_alt"] + 0.1


@needs_cifar
def test_run_spec_reproduces_the_runs_own_probe_numbers_through_the_cli(tmp_path, data_dir, capsys):
    from featdrop import train

    run = tmp_path / "run"
    metrics = train.pretrain(overlay="shapes", views="expert", preset="quick", oracles=False, subset=256,
                             test_subset=128, batch_size=64, epochs=1, encoder="convnet", progress=False,
                             device="cpu", data_dir=data_dir, out_dir=str(run))
    out = tmp_path / "report"
    assert cli.main(["suppression", f"run:{run}", "--overlays", "none", "shapes", "--out", str(out),
                     "--data-dir", data_dir]) == 0
    printed = capsys.readouterr().out
    assert "256 train + 128 test (the run's own" in printed and "seed 0" in printed
    written = pd.read_csv(out / "suppression.csv").set_index("overlay")
    for key in ("probe_main", "probe_alt", "probe_coarse", "chance_main", "chance_alt"):
        # the same data, the same batches of 1024, the same probe: equal up to the CSV's digits
        if key in metrics:
            assert written.loc["shapes", key] == pytest.approx(metrics[key], abs=1e-12), key
    assert (out / "suppression.png").stat().st_size > 5000


def test_torchvision_spec_removes_the_head_and_applies_the_weights_preprocessing():
    x = torch.rand(2, 3, 32, 32)
    for spec, dim in (("torchvision:mobilenet_v3_small:none", 1024), ("torchvision:resnet18:none", 512)):
        enc = suppression.load_encoder(spec)
        inputs = enc.preprocess(x)
        assert inputs.shape == (2, 3, 224, 224)
        assert abs(inputs.mean().item()) < 1.5  # ImageNet-normalised, not [0, 1] or [0, 255]
        with torch.no_grad():
            assert enc.model(inputs).shape == (2, dim)
    with torch.no_grad():  # a random initialisation from the seed: the same features every time
        f1, f2 = (suppression.load_encoder("torchvision:resnet18:none").model(inputs[:1]) for _ in range(2))
    assert torch.equal(f1, f2)


@pytest.mark.parametrize("spec,words", [
    ("foo:bar", ["'foo:bar'", "run:RUN_DIR", "torchvision:NAME[:WEIGHTS]", "file:PATH.pt"]),
    ("resnet18", ["'resnet18'", "torchvision:NAME[:WEIGHTS]"]),
    ("file:{tmp}/missing.pt", ["missing.pt", "no file", "TorchScript"]),
    ("file:{tmp}/state_dict.pt", ["state_dict.pt", "not a TorchScript module", "torch.jit.script"]),
    ("run:{tmp}", ["not a featdrop run directory", "config.json", "checkpoint.pt"]),
    ("torchvision:resnet19", ["unknown torchvision classifier 'resnet19'", "resnet18"]),
    ("torchvision:resnet18:IMAGENET", ["unknown weights 'IMAGENET'", "IMAGENET1K_V1", "none"]),
    ("torchvision:squeezenet1_0:none", ["no Linear classifier head", "report("]),
])
def test_bad_specs_fail_with_a_clear_error(tmp_path, spec, words):
    torch.save({"w": torch.zeros(1)}, tmp_path / "state_dict.pt")
    with pytest.raises(errors.SpecError) as err:
        suppression.load_encoder(spec.format(tmp=tmp_path))
    for word in words:
        assert word in str(err.value)


def test_absent_weights_without_network_name_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):  # no network: refused at once
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(errors.WeightsNotFoundError) as err:
        suppression.load_encoder("torchvision:resnet18")  # WEIGHTS defaults to DEFAULT
    msg = str(err.value)
    assert Path(torchvision.models.ResNet18_Weights.DEFAULT.url).name in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg and "torchvision:resnet18:none" in msg
    assert err.value.__suppress_context__  # one error, not a download traceback chained to it


def test_bad_arguments_fail_before_any_data_is_read(tmp_path, capsys):
    nowhere = str(tmp_path / "no-data")
    for kw, words in ((dict(overlays=("shapes", "stripes")), ["'stripes'", "none, shapes, digits, letters"]),
                      (dict(subset=0), ["subset=0", "from 1 to 50000"]),
                      (dict(probe="knn"), ["probe='knn'", "fast, reference"]),
                      (dict(device="tpu"), ["device = 'tpu'", "auto, cpu"])):
        with pytest.raises(errors.ConfigError) as err:
            suppression.report(PooledPixels(), data_dir=nowhere, **kw)
        assert all(w in str(err.value) for w in words), str(err.value)
    assert cli.main(["suppression", "foo:bar"]) == 2
    assert "featdrop suppression: error: encoder spec 'foo:bar' is invalid" in capsys.readouterr().err


@needs_cifar
def test_notebook_runs_with_tiny_parameters_on_a_torchscript_file(tmp_path, data_dir):
    pytest.importorskip("papermill")
    model = tmp_path / "pixels.pt"
    torch.jit.script(PooledPixels()).save(str(model))
    out, executed = tmp_path / "report", tmp_path / "suppression.out.ipynb"
    run_notebook("suppression", executed, spec=f"file:{model}", overlays=["none", "shapes"], subset=200,
                 test_subset=100, data_dir=data_dir, out_dir=str(out))
    t = pd.read_csv(out / "suppression.csv")
    assert list(t.overlay) == ["none", "shapes"] and (t.feature_dim == 192).all() and (t.n_test == 100).all()
    assert (out / "suppression.png").stat().st_size > 5000
    cells = json.loads(executed.read_text())["cells"]
    # shown once
    assert sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", [])) == 1


@needs_cifar
def test_reference_probe_trains_on_expert_views_of_a_foreign_encoder(data_dir):
    t = suppression.report(PooledPixels(), overlays=("shapes",), subset=128, test_subset=64,
                           probe="reference", probe_epochs=2, device="cpu",
                           data_dir=data_dir).set_index("overlay")
    for label in ("main", "alt", "coarse"):
        assert 0 <= t.loc["shapes", f"probe_{label}"] <= 1
    assert math.isnan(t.loc["shapes", "suppression_main"])  # no "none" row to compare with


@needs_cifar
def test_an_interrupted_report_keeps_its_finished_overlays_and_a_rerun_skips_them(tmp_path, data_dir,
                                                                                  monkeypatch, capsys):
    from featdrop.probing import overlay_probes

    model = tmp_path / "pixels.pt"
    torch.jit.script(PooledPixels()).save(str(model))
    out = tmp_path / "report"
    kw = dict(overlays=("none", "shapes", "digits"), subset=200, test_subset=100, device="cpu",
              data_dir=data_dir, out_dir=str(out))
    real, computed = overlay_probes._one_overlay, []

    def stopped_at_digits(feats, name, *a, **k):
        if name == "digits":
            raise KeyboardInterrupt  # Ctrl-C during the third overlay
        computed.append(name)
        return real(feats, name, *a, **k)

    monkeypatch.setattr(overlay_probes, "_one_overlay", stopped_at_digits)
    with pytest.raises(KeyboardInterrupt):
        suppression.run(f"file:{model}", **kw)
    kept = pd.read_csv(out / "suppression.csv")
    assert list(kept.overlay) == ["none", "shapes"] and computed == ["none", "shapes"]
    assert all((out / f"embedding_{o}.png").exists() for o in ("none", "shapes"))
    said = capsys.readouterr().out
    assert "shapes: probe_main" in said and "probe_alt" in said.split("shapes: ")[1].splitlines()[0]
    # the same command again computes only what is missing, and its table has all three
    monkeypatch.setattr(overlay_probes, "_one_overlay", lambda feats, name, *a, **k:
                        computed.append(name) or real(feats, name, *a, **k))
    table = suppression.run(f"file:{model}", **kw)
    assert computed == ["none", "shapes", "digits"] and list(table.overlay) == ["none", "shapes", "digits"]
    assert "finished before, skipped: none, shapes" in capsys.readouterr().out
    again = pd.read_csv(out / "suppression.csv").set_index("overlay")
    assert again.loc["shapes", "probe_main"] == pytest.approx(kept.set_index("overlay").loc["shapes",
                                                                                           "probe_main"])
