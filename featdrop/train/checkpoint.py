"""Checkpoints and resume: everything a run needs to continue, written atomically after every epoch.

``checkpoint.pt`` holds the encoder, the viewmaker, the supervised heads, both optimisers, the history and
the config. A run resumes only from a checkpoint of the same config (``config_diff``: the one same-config
check, which the grid calls too); the fields in ``RESUME_FREE`` may differ, since they do not change what
is computed. ``load_encoder`` rebuilds a run's frozen encoder from its directory alone, without its data.
"""
from __future__ import annotations

import dataclasses
import io
import shutil
from pathlib import Path

import torch

from .. import config as cfgmod
from .. import rundir
from ..config import Config
from ..errors import CheckpointError, ConfigError, DiskError
from ..models import build_encoder
from ..views import modality

# Fields that may differ when resuming: they do not change what is computed.
RESUME_FREE = {"epochs", "progress", "device", "data_dir", "out_dir", "compile", "download", "preset",
               "oracles", "tracker", "dist_backend", "decode", "loader_workers"}


def state(trainer) -> dict:
    return {"epoch": trainer.epoch, "config": dataclasses.asdict(trainer.cfg), "history": trainer.history,
            "encoder": trainer.encoder.state_dict(), "opt": trainer.opt.state_dict(),
            "viewmaker": trainer.viewmaker.state_dict() if trainer.viewmaker else None,
            "aux": trainer.aux.state_dict(),
            "vm_opt": trainer.vm_opt.state_dict() if trainer.vm_opt else None,
            "moco": trainer.moco.state_dict() if trainer.moco else None,  # key encoder, queue, pointer
            "monitor_probes": trainer.monitor.probes,  # the warm start of the next epoch's health probes
            "torch_rng": torch.get_rng_state()}


def save(trainer) -> None:
    """checkpoint.pt, then history.jsonl, each written whole or not at all; a full disk or a read-only file
    system is named (DiskError), and the previous checkpoint survives it."""
    out = Path(trainer.cfg.out_dir)
    for path, write in ((out / "checkpoint.pt", lambda p: rundir.atomic_save(state(trainer), p)),
                        (out / "history.jsonl", lambda p: rundir.write_history(p, trainer.history))):
        try:
            write(path)
        except (OSError, RuntimeError) as exc:
            kept = (f"the last good checkpoint is {out / 'checkpoint.pt'} (epoch {trainer.epoch - 1}), "
                    f"untouched" if trainer.epoch > 1 else "no checkpoint was written yet")
            raise rundir.disk_error(exc, path, kept + "; free space and run the same command again") or exc


SPACE_MARGIN = 1 << 20  # bytes beside a checkpoint: history.jsonl, the next rows, the monitor's probes


def checkpoint_bytes(trainer) -> int:
    """The size of this run's checkpoint once both optimisers hold their state: serialised now, plus the
    buffers an optimiser that has not stepped yet will add (SGD: a momentum buffer per parameter, unless
    momentum is 0; Adam: two moments per parameter). Before the first step the file is about half of it."""
    buffer = io.BytesIO()
    torch.save(state(trainer), buffer)
    missing = 0
    for opt in (trainer.opt, trainer.vm_opt):
        if opt is None:
            continue
        per_param = 2 if isinstance(opt, torch.optim.Adam) else int(any(g.get("momentum") for g in
                                                                        opt.param_groups))
        missing += per_param * sum(p.numel() * p.element_size() for g in opt.param_groups
                                   for p in g["params"] if not opt.state.get(p))
    return buffer.tell() + missing


def check_space(trainer) -> None:
    """DiskError before training when out_dir's file system cannot hold the next checkpoint at its full size
    (``checkpoint_bytes``). The new one is written beside the previous one and renamed onto it: the previous
    one's space is taken already, so the free space must hold one new checkpoint, not two."""
    out = Path(trainer.cfg.out_dir)
    need, free = checkpoint_bytes(trainer) + SPACE_MARGIN, shutil.disk_usage(out).free
    if free < need:
        raise DiskError(f"no space left on device for {out}: {free / 1e6:.1f} MB free, a checkpoint "
                        f"needs {need / 1e6:.1f} MB (written beside the previous one, then renamed onto it); "
                        f"free space or use another out_dir")


def config_diff(saved: dict, cfg: Config) -> dict:
    """{field: (saved, now)} for every field other than RESUME_FREE whose value differs; a field the saved
    run predates counts as having its default value, and one whose default is None (the preset's: e.g.
    lr_schedule, image_size) as the value it resolves to now: a new field's default keeps the old
    behaviour."""
    defaults, now = dataclasses.asdict(Config()), dataclasses.asdict(cfg)
    saved = {**{k: now[k] if defaults[k] is None else defaults[k] for k in now}, **saved}
    return {k: (saved[k], now[k]) for k in now if k not in RESUME_FREE and saved[k] != now[k]}


def read(path: Path, device) -> dict:
    """A checkpoint's contents; CheckpointError naming the file when it is damaged (nothing is deleted)."""
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
        ck["config"]
    except Exception as exc:  # truncated file, pickle error, not a checkpoint
        raise CheckpointError(
            f"{path} is damaged or unreadable ({type(exc).__name__}: {exc}), "
            f"so this run cannot resume from it. "
            f"To start over, move it aside first (mv {path} {path}.damaged) or use another out_dir; "
            f"nothing was deleted.") from None
    return ck


def resume(trainer) -> bool:
    """Load ``out_dir/checkpoint.pt`` into the trainer when there is one; False when there is none."""
    out = Path(trainer.cfg.out_dir)
    path = out / "checkpoint.pt"
    if not path.exists():
        return False
    ck = read(path, trainer.device)
    diff = config_diff(ck["config"], trainer.cfg)
    if diff:
        raise ConfigError(f"out_dir {str(out)!r} holds a run with a different config "
                          f"(field: saved vs now) {diff}; use another out_dir or the same values")
    if ck["epoch"] > trainer.cfg.epochs:  # its metrics would be another run's: say so instead
        raise ConfigError(f"config field 'epochs' = {trainer.cfg.epochs} is invalid for out_dir "
                          f"{str(out)!r}: it holds this run trained for {ck['epoch']} epochs, and a run is "
                          f"never shortened; allowed epochs={ck['epoch']} or more (to read or continue it), "
                          f"or use another out_dir")
    trainer.encoder.load_state_dict(ck["encoder"])
    trainer.aux.load_state_dict(ck.get("aux") or {})
    trainer.opt.load_state_dict(ck["opt"])
    if trainer.viewmaker is not None:
        trainer.viewmaker.load_state_dict(ck["viewmaker"])
        trainer.vm_opt.load_state_dict(ck["vm_opt"])
    if trainer.moco is not None:
        trainer.moco.load_state_dict(ck["moco"])
    trainer.epoch, trainer.history = ck["epoch"], ck["history"]
    trainer.monitor.probes = ck.get("monitor_probes", {})
    # wall time of the processes before this one (older checkpoints: their epochs' and monitors' time)
    last = trainer.history[-1] if trainer.history else {}
    trainer.wall_prior = last.get("wall_s_total", sum(r.get("epoch_s", 0) + r.get("monitor_s", 0)
                                                         for r in trainer.history))
    return True


def finished(cfg: Config) -> bool:
    """``cfg.out_dir`` holds the finished run of this config: a readable metrics.json, and a config.json that
    differs from ``cfg`` only in RESUME_FREE fields and has as many epochs. A cut file is not finished: the
    run's command rewrites it from the checkpoint."""
    out = Path(cfg.out_dir)
    try:
        saved, metrics = rundir.read_json(out / "config.json"), rundir.read_json(out / "metrics.json")
    except (OSError, ValueError):  # missing, cut or not JSON
        return False
    return (isinstance(saved, dict) and isinstance(metrics, dict) and not config_diff(saved, cfg)
            and saved.get("epochs") == cfg.epochs)


def run_config(run_dir: str | Path, **overrides) -> Config:
    """A run's config from its config.json, with a relative data_dir found from any working directory."""
    saved = rundir.read_json(Path(run_dir) / "config.json")
    data_dir = str(cfgmod.project_path(saved["data_dir"]))
    return cfgmod.make(**{**saved, "out_dir": str(run_dir), "data_dir": data_dir, **overrides})


def load_encoder(run_dir: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, Config]:
    """A run's trained encoder (eval mode, on ``device``) and its config, from config.json and checkpoint.pt
    alone: no data is loaded and no trainer is built."""
    cfg = cfgmod.resolve(run_config(run_dir, device=device))
    kind = modality.record(cfg.overlay)
    encoder = build_encoder(cfg.encoder, kind.in_channels, cfg.embedding_dim, cfg.projection_head,
                            image_size=cfg.image_size or 32,
                            audio=kind.name == "audio")
    ck = read(Path(run_dir) / "checkpoint.pt", device)
    encoder.load_state_dict(ck["encoder"])
    return encoder.to(device).eval(), cfg
