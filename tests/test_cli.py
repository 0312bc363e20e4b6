"""The `featdrop` command: help before torch, an example in every subcommand's help, one-line errors that exit
2; and two promises of the rebuilt house: the view explorer never changes a trained model, and the
suppression report reads a run's encoder without its data."""
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, needs_cifar

from featdrop import cli, config, train
from featdrop.data.base import Data
from featdrop.probing import explorer
from featdrop.views import modality
from featdrop.views.modality import image_modality

SUBCOMMANDS = ("train", "grid", "report", "reprobe", "suppression", "bench", "gallery", "oracles",
               "imagenet100")


def test_help_lists_every_subcommand_before_torch_is_imported():
    code = "import sys; from featdrop import cli; cli.main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout
    lines = out.splitlines()
    assert lines[-1] == "False"  # torch was never imported
    listed = [line.split()[0] for line in lines if line.startswith("  ") and line.split()]
    assert listed == list(SUBCOMMANDS)


def test_python_dash_m_featdrop_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "featdrop", "--help"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0 and all(f"  {name} " in out.stdout for name in SUBCOMMANDS)


@pytest.mark.parametrize("argv", [["train"], ["grid"], ["report"], ["reprobe"], ["suppression"], ["gallery"],
                                  ["bench", "train"], ["bench", "overlays"], ["bench", "loader"],
                                  ["bench", "ranks"], ["oracles"],
                                  ["imagenet100"]])
def test_every_subcommand_help_gives_an_example(argv, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: featdrop {' '.join(argv)}") and "example" in text
    assert f"featdrop {' '.join(argv)} " in text.split("example", 1)[1]  # the example is a command line


@pytest.mark.parametrize("argv,says", [
    (["train", "epoch=3"], "unknown config field 'epoch' (did you mean 'epochs'?)"),
    (["train", "overlay=shapes,digits"], "one run takes one value per field"),
    (["train", "lr=fast"], "lr='fast' is invalid: expected float or None"),
    (["train", "views=handmade"],
     "config field 'views' = 'handmade' is invalid: allowed one of expert, viewmaker"),
    (["grid", "seed=0,1"], "--runs-dir is required"),
    (["report", "/no/such/folder"], "no runs (metrics.json) under '/no/such/folder'"),
    (["bogus"], "unknown command 'bogus'"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(argv, says, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and err.count("\n") == 1


def test_the_view_explorer_never_changes_the_trained_viewmaker(tmp_path):
    cfg = config.make(views="viewmaker", preset="quick", device="cpu", out_dir=str(tmp_path), progress=False)
    trainer = train.Trainer(cfg, data=Data(image_modality(), None, None, 10, 3))
    raw = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in trainer.viewmaker.state_dict().items()}
    _, deltas, _ = explorer.draw_views(trainer, raw, 2, torch.Generator().manual_seed(1), budget=0.2)
    assert all(d.abs().mean(dim=(1, 2, 3)).sub(0.2).abs().max() < 1e-3 for d in deltas)  # ε = 0.2 was used
    assert trainer.viewmaker.budget == 0.05
    # and when drawing fails half-way, the model is still as it was
    class Boom(torch.nn.Module):
        def forward(self, h):
            raise RuntimeError("boom")

    decoder, trainer.viewmaker.decoder = trainer.viewmaker.decoder, Boom()
    with pytest.raises(RuntimeError, match="boom"):
        explorer.draw_views(trainer, raw, 2, torch.Generator().manual_seed(1), budget=0.3)
    trainer.viewmaker.decoder = decoder
    assert trainer.viewmaker.budget == 0.05
    assert all(torch.equal(v, trainer.viewmaker.state_dict()[k]) for k, v in before.items())


@needs_cifar
def test_a_runs_encoder_loads_without_its_data_or_a_trainer(tmp_path, data_dir, monkeypatch):
    from featdrop.probing.encoders import load_encoder

    run = tmp_path / "run"
    train.pretrain(overlay="shapes", preset="quick", oracles=False, knn_k=20, subset=128, test_subset=64,
                   batch_size=64, epochs=1, progress=False, device="cpu", data_dir=data_dir, out_dir=str(run))
    trained = torch.load(run / "checkpoint.pt", weights_only=False)["encoder"]

    def no_data(*a, **k):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(modality, "load", no_data)
    monkeypatch.setattr(train.Trainer, "__init__", no_data)
    enc = load_encoder(f"run:{run}", "cpu")
    weights = enc.model.encoder.state_dict()
    assert weights.keys() == trained.keys() and all(torch.equal(weights[k], trained[k]) for k in trained)
    assert enc.run_config["subset"] == 128 and not enc.model.encoder.training
