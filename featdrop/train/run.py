"""One run, start to finish: ``pretrain(cfg)`` resolves the config, locks ``out_dir``, writes
``config.json``, resumes from ``checkpoint.pt`` when there is one, trains, evaluates and writes
``metrics.json``. ``featdrop train FIELD=VALUE ...`` is the same from the command line.

The run holds ``out_dir``'s lock from before its data is loaded until it returns, so a second run on the
same directory fails at once (RunLockedError). A finished run returns its metrics without work.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

from .. import config as cfgmod
from .. import device as devmod
from .. import fields, rundir, runlock
from ..config import Config
from ..errors import NonFiniteLossError
from ..oracles import store as oracle_store
from . import checkpoint, figures, tracking
from .evaluate import destruction, evaluate
from .trainer import Trainer, say


def pretrain(cfg: Config | None = None, stop_after: int | None = None, **overrides) -> dict:
    """Run (or resume) one pretraining + probe run; returns the metrics dict (also in metrics.json)."""
    cfg = cfgmod.resolve(cfgmod.make(**{**(dataclasses.asdict(cfg) if cfg else {}), **overrides}))
    rundir.check_out_dir(cfg.out_dir)
    new = not Path(cfg.out_dir).exists()
    try:
        with runlock.acquire(cfg.out_dir):
            return _pretrain_locked(cfg, stop_after)
    except BaseException:
        if new:  # a run that never started leaves nothing behind, not even its lock
            rundir.remove_if_unused(cfg.out_dir)
        raise


def _files_agree(trainer, out: Path) -> None:
    """After a resume: config.json and history.jsonl say what the checkpoint holds. A hand-edited config.json
    or a history cut mid-line is rewritten from the checkpoint, with a warning naming what differed."""
    path = out / "config.json"
    if path.exists():
        try:
            edited = checkpoint.config_diff(rundir.read_json(path), trainer.cfg)
        except ValueError:  # not JSON at all
            edited = {"config.json": ("unreadable", "the checkpoint's")}
        if edited:
            warnings.warn(f"{path} disagreed with the checkpoint this run trains from (field: config.json vs "
                          f"checkpoint) {edited}; rewrote it from the checkpoint", stacklevel=3)
    rundir.write_json(path, dataclasses.asdict(trainer.cfg))
    if not rundir.history_intact(out / "history.jsonl", trainer.history):
        warnings.warn(f"{out / 'history.jsonl'} was cut or edited; rewrote its {len(trainer.history)} rows "
                      f"from the checkpoint", stacklevel=3)
        rundir.write_history(out / "history.jsonl", trainer.history)


def _pretrain_locked(cfg: Config, stop_after: int | None) -> dict:
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    out = Path(trainer.cfg.out_dir)
    resumed = checkpoint.resume(trainer)
    if not resumed:
        rundir.write_json(out / "config.json", dataclasses.asdict(trainer.cfg))
    else:
        _files_agree(trainer, out)
        if (out / "metrics.json").exists() and trainer.epoch >= trainer.cfg.epochs:
            return rundir.read_json(out / "metrics.json")
    checkpoint.check_space(trainer)
    prior_s = trainer.wall_prior
    trainer.wall_start = t0
    trainer.tracker = tracking.make(trainer.cfg)
    if trainer.cfg.oracles:  # trained once per overlay configuration, then read every epoch
        # say: under papermill the minutes of a first oracle training show on the terminal, as epochs do
        trainer.oracles = oracle_store.for_run(trainer.cfg, trainer.data, trainer.device, say=say)
    trainer.fit(stop_after)
    if trainer.epoch < trainer.cfg.epochs:
        return {"stopped_at_epoch": trainer.epoch}
    metrics = evaluate(trainer)
    if trainer.oracles:
        metrics.update(destruction(trainer))
    t1 = time.perf_counter()
    found = figures.write(trainer, metrics)  # figures/, and the embedding map
    metrics.update({f"map_knn_{k}": v for k, v in found["scores"].items()})
    metrics["figures_s"] = time.perf_counter() - t1
    final = trainer.history[-1]
    c = trainer.cfg
    metrics.update({"epochs": trainer.epoch, "final_loss": final["loss"], "device": str(trainer.device),
                    **devmod.environment(trainer.device),
                    "train_s": sum(r["epoch_s"] for r in trainer.history),
                    "wall_s": prior_s + time.perf_counter() - t0, "resumed": resumed,
                    "overlay": c.overlay, "views": c.views, "seed": c.seed, "preset": c.preset,
                    "encoder": c.encoder, "loss": c.loss, "supervise": c.supervise})
    if not rundir.all_finite(metrics):
        raise NonFiniteLossError(f"non-finite metrics {metrics}")
    rundir.write_json(out / "metrics.json", metrics)
    if trainer.tracker is not None:  # the projector and the hparams page
        trainer.tracker.end(found["features"], found["labels"], found["names"], metrics)
    return metrics


def load_run(out_dir: str | Path, device: str = "cpu") -> Trainer:
    """Rebuild a trained run (encoder, viewmaker, data) from its directory, for inspection: eager (it makes
    views in batches of any size, where a compiled viewmaker would warm up again for each)."""
    trainer = Trainer(checkpoint.run_config(out_dir, device=device, progress=False, compile=False))
    if not checkpoint.resume(trainer):
        raise FileNotFoundError(f"no checkpoint.pt in {out_dir}")
    return trainer


# ---------------------------------------------------------------------------- featdrop train
EXAMPLES = """examples:
  featdrop train overlay=shapes views=viewmaker seed=1
  featdrop train overlay=digits preset=quick epochs=5 out_dir=runs/digits-try
  featdrop train overlay=none supervise=coarse loss=spread

Fields are the config's (featdrop/config.py), with the notebook's parameter names; a field left out takes
its default (None: the preset's value). Running the same command again resumes from the checkpoint."""


def main(argv=None, prog: str = "featdrop train") -> int:
    ap = argparse.ArgumentParser(prog=prog, description="Pretrain one run (expert or viewmaker views) and "
                                 "probe both labels; prints one line per epoch.", epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fields", nargs="*", metavar="FIELD=VALUE",
                    help="config fields, e.g. overlay=shapes seed=1")
    args = ap.parse_args(argv)
    _, params = fields.parse_assignments(args.fields, sweep=False)
    cfg = cfgmod.resolve(cfgmod.make(**params))
    print(f"featdrop train: overlay={cfg.overlay} views={cfg.views} preset={cfg.preset} loss={cfg.loss} "
          f"seed={cfg.seed} device={cfg.device}; out_dir {cfg.out_dir}", flush=True)
    metrics = pretrain(cfg)
    shown = {k: v for k, v in metrics.items() if k.startswith(("probe_", "knn_", "chance_"))}
    print("  ".join(f"{k} {v:.3f}" for k, v in shown.items()))
    print(f"wall {metrics.get('wall_s', 0):.0f} s; wrote {Path(cfg.out_dir) / 'metrics.json'}")
    return 0
