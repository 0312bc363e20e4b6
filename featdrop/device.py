"""The one place that turns a device name into a ``torch.device`` and knows what CUDA changes.

On CUDA featdrop runs bf16 autocast and channels_last (tensor cores); on a CPU everything is fp32 in the
default memory format. Every module that puts work on a device goes through here.
"""
from __future__ import annotations

import os
import re
from contextlib import nullcontext

import torch

from .errors import ConfigError

DEVICES = "auto, cpu, cuda or cuda:N"


def check(name, field: str = "device") -> None:
    """Raise ConfigError unless ``name`` is a device name (without asking whether CUDA is there)."""
    if not (isinstance(name, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", name)):
        raise ConfigError(f"{field} = {name!r} is invalid: allowed {DEVICES}")


def resolve(name: str = "auto", field: str = "device") -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda[:N]`` must exist here."""
    check(name, field)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{field} = {name!r} is invalid: CUDA is not available here; "
                              f"allowed auto or cpu")
        index = int(name[5:] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{field} = {name!r} is invalid: there are {torch.cuda.device_count()} CUDA "
                              f"device(s) here, cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


def describe(device: torch.device) -> str:
    """The device's name for metrics and logs: the GPU's model, or 'cpu'."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def environment(device: torch.device) -> dict:
    """What decides a run's last digits besides its config (config.json), for metrics.json: the code
    (featdrop's version and git commit, "-dirty" with uncommitted changes), package versions (openTSNE: the
    map's scores), threads, the CPU kernels' instruction set (torch picks AVX-512 or AVX2 kernels by the
    CPU; oneDNN does too), the float32 matmul precision and deterministic-algorithms switch, and on CUDA the
    CUDA and cuDNN versions, TF32, cuDNN autotuning and bf16 autocast (always on there)."""
    import platform

    import numpy
    import PIL
    import scipy

    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = platform.processor()
    env = {"featdrop_version": _version("featdrop"), "git_commit": _git_commit(),
           "torch_version": torch.__version__, "numpy_version": numpy.__version__,
           "scipy_version": scipy.__version__, "opentsne_version": _version("openTSNE"),
           "pillow_version": PIL.__version__, "python_version": platform.python_version(),
           "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cpu_model": model, "device_name": describe(device),
           "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
           "bf16_autocast": device.type == "cuda"}
    if device.type == "cuda":
        env.update(cuda_version=torch.version.cuda, cudnn_version=torch.backends.cudnn.version(),
                   cudnn_benchmark=torch.backends.cudnn.benchmark)
        try:  # the legacy flags; torch refuses to read them after the new fp32_precision API set them
            env.update(tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                       tf32_cudnn=torch.backends.cudnn.allow_tf32)
        except RuntimeError:
            env.update(tf32_matmul=str(torch.backends.cuda.matmul.fp32_precision),
                       tf32_cudnn=str(torch.backends.cudnn.fp32_precision))
    return env


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The checkout's commit ("-dirty" when tracked files differ from it), or None outside a git checkout.
    --no-optional-locks: reading it never takes the index lock of a checkout others work in."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "describe", "--always",
                              "--dirty", "--abbrev=12"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU runs are fp32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def channels_last(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """A 4-d tensor in channels_last (what cuDNN's and oneDNN's fast convolutions want) when ``enabled``;
    anything else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.dim() == 4 else x


def sync(device: torch.device) -> None:
    """Wait for the device (timing on CUDA); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def visible_gpus(gpus: str | list | None, needs_gpu: bool = True) -> list[str]:
    """The CUDA_VISIBLE_DEVICES value of each chosen GPU: ``gpus`` is all (None) or indices like "0,1";
    [] for the CPU (``needs_gpu`` False, or "none")."""
    if not needs_gpu or gpus in ("none", "cpu"):
        return []
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in parent.split(",")][:count] if parent else [str(i) for i in range(count)]
    if gpus in (None, "all"):
        return ids
    try:
        chosen = [int(x) for x in (gpus.split(",") if isinstance(gpus, str) else gpus)]
    except ValueError:
        raise ConfigError(f"--gpus {gpus}: expected all or GPU indices like 0,1") from None
    bad = [i for i in chosen if not 0 <= i < count]
    if bad:
        raise ConfigError(f"--gpus {gpus}: no GPU {bad}; visible: " + (", ".join(map(str, range(count))) or
                        "none (CUDA is not available here; leave --gpus out to run on the CPU)"))
    return [ids[i] for i in chosen]
