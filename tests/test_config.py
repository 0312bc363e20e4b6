"""Bad values fail before any work, naming the field, the value and what is allowed."""
import pytest
from conftest import needs_cifar

from featdrop import config, train
from featdrop.config import ConfigError


@pytest.mark.parametrize("field,value,allowed", [
    ("overlay", "stripes", "shapes"), ("views", "manual", "viewmaker"), ("loss", "byol", "ifm"),
    ("preset", "huge", "quick"), ("epochs", 0, "positive integer"), ("batch_size", -4, "positive integer"),
    ("budget", 0.0, "positive number"), ("budget", -0.1, "positive number"), ("device", "tpu", "cuda"),
    ("overlay_opacity", 1.5, "[0, 1]"), ("probe", "svm", "fast"),
])
def test_invalid_values_name_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as err:
        config.make(**{field: value})
    msg = str(err.value)
    assert repr(field) in msg and repr(value) in msg and allowed in msg


def test_unknown_field_lists_known_fields():
    with pytest.raises(ConfigError) as err:
        config.make(epoch=3)
    assert "'epoch'" in str(err.value) and "epochs" in str(err.value)


def test_presets_resolve_by_device():
    cpu = config.resolve(config.make(), cuda_available=False)
    gpu = config.resolve(config.make(), cuda_available=True)
    assert cpu.preset == "quick" and cpu.encoder == "convnet" and cpu.device == "cpu"
    assert gpu.preset == "paper" and gpu.encoder == "resnet18" and gpu.epochs == 200 and gpu.batch_size == 256
    assert (gpu.lr == 0.03 and gpu.temperature == 0.07 and gpu.viewmaker_lr == 1e-3
            and gpu.weight_decay == 1e-4)
    explicit = config.resolve(config.make(epochs=3, preset="paper"), cuda_available=False)
    assert explicit.epochs == 3 and explicit.encoder == "resnet18"


@pytest.mark.parametrize("overlay,budget", [("shapes", 0.05), ("digits", 0.05), ("none", 0.05),
                                            ("letters", 0.1), ("noise", 0.125)])
def test_default_budget_per_overlay(overlay, budget):
    assert config.resolve(config.make(overlay=overlay), cuda_available=False).budget == budget


def test_cuda_requested_without_cuda_fails_early(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="'device'"):
        train.pretrain(device="cuda", out_dir=str(tmp_path), data_dir=str(tmp_path / "nodata"))


@needs_cifar
def test_batch_larger_than_data_fails_before_training(tmp_path, data_dir):
    with pytest.raises(ConfigError, match="'batch_size' = 512.*at most the 300"):
        train.pretrain(subset=300, batch_size=512, oracles=False, out_dir=str(tmp_path), data_dir=data_dir)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_relative_project_paths_resolve_from_another_working_directory(tmp_path, monkeypatch):
    # JupyterLab starts kernels in notebooks/: "data" and "runs" must still find the project's folders
    monkeypatch.chdir(tmp_path)
    (config.PROJECT_ROOT / "runs").mkdir(exist_ok=True)
    assert config.project_path("runs") == config.PROJECT_ROOT / "runs"
    (tmp_path / "runs").mkdir()
    assert config.project_path("runs") == config.Path("runs")  # the working directory's own wins
    assert config.project_path("no-such-folder") == config.Path("no-such-folder")
    assert config.project_path("/abs/path") == config.Path("/abs/path")
