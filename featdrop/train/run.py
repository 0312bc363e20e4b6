"""One run, start to finish: ``pretrain(cfg)`` resolves the config, locks ``out_dir``, writes
``config.json``, resumes from ``checkpoint.pt`` when there is one, trains, evaluates and writes
``metrics.json``. ``featdrop train FIELD=VALUE ...`` is the same from the command line.

The run holds ``out_dir``'s lock from before its data is loaded until it returns, so a second run on the
same directory fails at once (RunLockedError). A finished run returns its metrics without work.

Under torchrun (``torchrun --nproc_per_node N -m featdrop train ...``) every process trains its rows of each
batch (``featdrop.train.distributed``); rank 0 alone holds the lock, writes the files and runs the oracles,
probes and figures, while the others wait for it, and every process returns rank 0's metrics.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
import time
import warnings
from pathlib import Path

from .. import config as cfgmod
from .. import device as devmod
from .. import fields, rundir, runlock
from ..config import Config
from ..errors import NonFiniteLossError
from ..oracles import store as oracle_store
from . import checkpoint, distributed, figures, tracking
from .evaluate import destruction, evaluate
from .trainer import Trainer, say


def pretrain(cfg: Config | None = None, stop_after: int | None = None, **overrides) -> dict:
    """Run (or resume) one pretraining + probe run; returns the metrics dict (also in metrics.json)."""
    cfg = cfgmod.resolve(cfgmod.make(**{**(dataclasses.asdict(cfg) if cfg else {}), **overrides}))
    world = distributed.init(cfg, cuda=cfg.device.startswith("cuda"))  # a single process unless torchrun
    world.check_same(dataclasses.asdict(cfg))
    held: dict = {}

    def lock():  # rank 0 alone
        rundir.check_out_dir(cfg.out_dir)
        held["new"] = not Path(cfg.out_dir).exists()
        held["lock"] = runlock.acquire(cfg.out_dir)

    world.on_main("locking the run directory", lock)
    try:
        metrics = _pretrain_locked(cfg, stop_after, world)
    except BaseException:
        if "lock" in held:
            held["lock"].release()
        if held.get("new"):  # a run that never trained leaves nothing behind: its config.json, its lock
            rundir.remove_if_unused(cfg.out_dir, written=("config.json",))
        raise
    if "lock" in held:
        held["lock"].release()
    return metrics


def _files_agree(trainer, out: Path) -> None:
    """After a resume: config.json and history.jsonl say what the checkpoint holds. A hand-edited config.json
    or a history cut mid-line is rewritten from the checkpoint, with a warning naming what differed."""
    path = out / "config.json"
    if path.exists():
        try:
            saved = rundir.read_json(path)
            edited = checkpoint.config_diff(saved, trainer.cfg)
            extra = {k: v for k, v in saved.items() if k not in cfgmod.field_names()}
        except (ValueError, TypeError, AttributeError):  # not JSON at all, or not a JSON object
            edited, extra = {"config.json": ("unreadable", "the checkpoint's")}, {}
        if edited:
            warnings.warn(f"{path} disagreed with the checkpoint this run trains from (field: config.json vs "
                          f"checkpoint) {edited}; rewrote it from the checkpoint", stacklevel=3)
        if extra:  # config.json holds config fields only: a note would make run_config refuse the file
            warnings.warn(f"{path} held key(s) that are not config fields, {extra}; rewrote it without them "
                          f"(keep notes in another file of the run directory, e.g. notes.md)", stacklevel=3)
    rundir.write_json(path, dataclasses.asdict(trainer.cfg))
    if not rundir.history_intact(out / "history.jsonl", trainer.history):
        warnings.warn(f"{out / 'history.jsonl'} was cut or edited; rewrote its {len(trainer.history)} rows "
                      f"from the checkpoint", stacklevel=3)
        rundir.write_history(out / "history.jsonl", trainer.history)


def _pretrain_locked(cfg: Config, stop_after: int | None, world: distributed.World) -> dict:
    t0 = time.perf_counter()
    trainer = Trainer(cfg, world=world)
    out = Path(trainer.cfg.out_dir)
    resumed = checkpoint.resume(trainer)  # ConfigError when the checkpoint has more epochs than asked
    found: dict = {}

    def files():  # rank 0 alone: config.json, and a finished run's metrics
        if not resumed:
            rundir.write_json(out / "config.json", dataclasses.asdict(trainer.cfg))
        else:
            _files_agree(trainer, out)
            found["finished"] = _finished_metrics(trainer, out)

    world.on_main("writing config.json", files)
    finished = world.share(found.get("finished"))
    if finished is not None:
        return finished
    prior_s = trainer.wall_prior
    trainer.wall_start = t0

    def prepare():  # rank 0 alone: the disk, the oracles (trained once per configuration), the tracker
        checkpoint.check_space(trainer)
        if trainer.cfg.oracles:
            # say: under papermill the minutes of a first oracle training show on the terminal, as epochs do
            trainer.oracles = oracle_store.for_run(trainer.cfg, trainer.data, trainer.device, say=say)
        trainer.tracker = tracking.make(trainer.cfg)  # after the oracles: a run that never trains logs none

    world.on_main("loading the label oracles", prepare)
    trainer.fit(stop_after)
    if trainer.epoch < trainer.cfg.epochs:
        return {"stopped_at_epoch": trainer.epoch}
    world.on_main("the probes, figures and metrics.json", lambda: found.update(
        metrics=_finish(trainer, out, t0, prior_s, resumed)))
    return world.share(found.get("metrics"))


def _finish(trainer, out: Path, t0: float, prior_s: float, resumed: bool) -> dict:
    """The final probes, label destruction, figures and metrics.json (rank 0 alone under torchrun)."""
    metrics = evaluate(trainer)
    if trainer.oracles:
        metrics.update(destruction(trainer))
    t1 = time.perf_counter()
    found = figures.write(trainer, metrics, say=say)  # figures/, and the embedding map (None: none drawn)
    if found is not None:
        metrics.update({f"map_knn_{k}": v for k, v in found["scores"].items()})
    metrics["figures_s"] = time.perf_counter() - t1
    final = trainer.history[-1]
    c = trainer.cfg
    metrics.update({"epochs": trainer.epoch, "final_loss": final["loss"], "device": str(trainer.device),
                    **devmod.environment(trainer.device),
                    "train_s": sum(r["epoch_s"] for r in trainer.history),
                    "wall_s": prior_s + time.perf_counter() - t0, "resumed": resumed,
                    "overlay": c.overlay, "views": c.views, "seed": c.seed, "preset": c.preset,
                    "encoder": c.encoder, "loss": c.loss, "supervise": c.supervise,
                    "processes": trainer.world.size})
    if not rundir.all_finite(metrics):
        raise NonFiniteLossError(f"non-finite metrics {metrics}")
    rundir.write_json(out / "metrics.json", metrics)
    if trainer.tracker is not None and found is not None:  # the projector and the hparams page
        trainer.tracker.end(found["features"], found["labels"], found["names"], metrics)
    return metrics


def _finished_metrics(trainer, out: Path) -> dict | None:
    """After a resume: the metrics of a run that had finished before, or None when it trains (on). A
    metrics.json that is cut, or is the earlier result of a run now continued to more epochs, is set aside
    with a warning: the run evaluates again and writes a new one."""
    path = out / "metrics.json"
    if not path.exists():
        return None
    if trainer.epoch >= trainer.cfg.epochs:
        try:
            metrics = rundir.read_json(path)
            if isinstance(metrics, dict):
                return metrics
        except ValueError:
            pass
        warnings.warn(f"{path} is cut or not a JSON object; evaluating the finished run again from its "
                      f"checkpoint to rewrite it", stacklevel=3)
        return None
    aside = out / f"metrics_epochs{trainer.epoch}.json"
    path.replace(aside)  # featdrop report reads metrics.json only: no stale row while the run goes on
    warnings.warn(f"{path} held the result after {trainer.epoch} epochs; this run goes on to "
                  f"{trainer.cfg.epochs}, so it was moved to {aside.name} and a new one is written at the "
                  f"end", stacklevel=3)
    return None


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

Fields are the config's, with the notebook's parameter names, given as FIELD=VALUE (epochs=5, not
--epochs 5); a field left out takes its default (None: the preset's value). Running the same command again
resumes from the checkpoint. What each field means: the comments in featdrop/config.py, or the parameters
cell of notebooks/pretrain.ipynb. The fields and their defaults:
"""


def _fields_help() -> str:
    """Every config field as FIELD=DEFAULT, wrapped: the end of ``featdrop train --help``."""
    items = [f"{k}={v}" for k, v in dataclasses.asdict(Config()).items()]
    return textwrap.fill(" ".join(items), width=110, initial_indent="  ", subsequent_indent="  ",
                         break_long_words=False, break_on_hyphens=False)


def _metric(v) -> str:
    return "–" if v is None else f"{v:.3f}"  # None: a label the run does not have (overlay=none: alt)


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def main(argv=None, prog: str = "featdrop train") -> int:
    ap = argparse.ArgumentParser(prog=prog, description="Pretrain one run (expert or viewmaker views) and "
                                 "probe both labels; prints one line per epoch.",
                                 epilog=EXAMPLES + _fields_help(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fields", nargs="*", metavar="FIELD=VALUE",
                    help="config fields, e.g. overlay=shapes seed=1 (all of them: below)")
    argv = list(argv) if argv is not None else sys.argv[1:]
    fields.check_not_options(argv)  # --epochs 1: ConfigError saying epochs=1
    args = ap.parse_args(argv)
    _, params = fields.parse_assignments(args.fields, sweep=False)
    cfg = cfgmod.resolve(cfgmod.make(**params))
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun the other processes print nothing
    processes = distributed.requested()
    if rank0:
        print(f"featdrop train: overlay={cfg.overlay} views={cfg.views} preset={cfg.preset} loss={cfg.loss} "
              f"seed={cfg.seed} device={cfg.device}" + (f", {processes} processes" if processes > 1 else "")
              + f"; out_dir {cfg.out_dir}", flush=True)
    path = Path(cfg.out_dir) / "metrics.json"
    before = _mtime(path)
    try:
        metrics = pretrain(cfg)
    finally:
        distributed.close()
    if not rank0:
        return 0
    shown = {k: v for k, v in metrics.items() if k.startswith(("probe_", "knn_", "chance_"))
             and not k.endswith("_s")}
    print("  ".join(f"{k} {_metric(v)}" for k, v in shown.items()))
    if before is not None and _mtime(path) == before:  # returned without work: nothing was written
        print(f"the run had finished before ({metrics.get('epochs')} epochs, wall "
              f"{metrics.get('wall_s') or 0:.0f} s then); nothing was trained or written; its metrics are in "
              f"{path}")
    else:
        print(f"wall {metrics.get('wall_s', 0):.0f} s; wrote {path}")
    return 0
