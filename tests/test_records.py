"""One record per overlay and per objective: config validation, the gallery, the plots, the view explorer and
the suppression report all read it, so changing the record changes every one of them."""
import dataclasses
from types import SimpleNamespace

import matplotlib
import pytest
import torch
from conftest import needs_cifar

from featdrop import config, losses
from featdrop.data import records
from featdrop.errors import ConfigError
from featdrop.probing import suppression
from featdrop.probing.explorer import ViewExplorer
from featdrop.viz import plots

matplotlib.use("Agg")
NAMES = ("SQ", "TRI", "RND", "STAR")  # four made-up shape names: not the built-in three


@pytest.fixture
def four_shapes(monkeypatch):
    """The shapes record with other names, size bound and budget: what every reader must pick up."""
    record = dataclasses.replace(records.OVERLAYS["shapes"], alt_names=NAMES, size_max=1.25, budget=0.0625)
    monkeypatch.setitem(records.OVERLAYS, "shapes", record)
    return record


def test_config_validation_and_defaults_read_the_record(four_shapes):
    assert config.resolve(config.make(overlay="shapes"), cuda_available=False).budget == 0.0625
    config.make(overlay="shapes", overlay_size=1.25)  # the record's bound is allowed
    with pytest.raises(ConfigError, match=r"'overlay_size' = 1.3 .*1.25\]"):
        config.make(overlay="shapes", overlay_size=1.3)
    # its own record
    assert config.resolve(config.make(overlay="letters"), cuda_available=False).budget == 0.1


def test_the_gallery_titles_read_the_record(four_shapes):
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    fig = plots.gallery(images, torch.arange(4), torch.tensor([0, 1, 2, 3]), "shapes", rows=1, cols=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert [t.split("\n")[1] for t in titles] == list(NAMES)          # alternate label: the record's names
    assert titles[0].split("\n")[0] == records.OVERLAYS["shapes"].main_names[0] == "airplane"


def test_the_noise_class_names_come_from_the_config_not_a_hard_coded_list():
    noise = records.get("noise")
    assert noise.alt_class_names() == ("babble", "traffic", "machinery")  # the default noise_classes
    assert noise.alt_class_names("rain,wind") == ("rain", "wind") and noise.num_alt_classes("rain,wind") == 2
    explorer = SimpleNamespace(cfg=SimpleNamespace(overlay="noise", noise_classes="rain, wind,sea"))
    assert ViewExplorer.alt_names(explorer) == ("rain", "wind", "sea")
    explorer.cfg.overlay = "letters"
    assert ViewExplorer.alt_names(explorer) == records.OVERLAYS["letters"].alt_names


@needs_cifar
def test_the_suppression_report_reads_the_record(four_shapes, data_dir):
    t = suppression.report(lambda x: x.mean(dim=(2, 3)), overlays=["shapes"], subset=64, test_subset=32,
                           data_dir=data_dir, device="cpu")
    assert t.loc[0, "alt_classes"] == len(NAMES)  # 4 from the record, where the compositing draws 3


def test_config_validation_and_the_default_temperature_read_the_objective_record(monkeypatch):
    mine = losses.Objective(lambda z1, z2, y, hp: losses.nt_xent(z1, z2, hp.temperature), temperature=0.3)
    monkeypatch.setitem(losses.OBJECTIVES, "mine", mine)  # what one new entry in losses.py does
    assert config.resolve(config.make(loss="mine"), cuda_available=False).temperature == 0.3
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    assert losses.contrastive_loss("mine", z, z.flip(0), SimpleNamespace(temperature=0.3)) == \
        losses.nt_xent(z, z.flip(0), 0.3)
