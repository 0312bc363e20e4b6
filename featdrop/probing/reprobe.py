"""Probe finished runs again, without retraining: ``featdrop reprobe RUN_DIR ... --probe fast|reference``.

The fast and the reference protocol (``featdrop.probe``) may rank methods differently: the paper's
probe sees 8192-d pre-pool features and trains on the method's own views. Running both on the same
encoders shows whether a conclusion depends on the protocol. Each run's result goes to
``RUN_DIR/probes/<protocol>.json`` (the keys of ``metrics.json`` plus protocol, probe_epochs,
device and time); a table with one row per run is printed.

``--concat`` probes the concatenation of several runs' frozen features (fast protocol): the
two-backbone evaluation of "Perfectly Balanced" (Chen, Fu et al., ICML 2022), where the embeddings
of two frozen encoders are concatenated and a linear classifier is fitted on top, on every label.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import config as cfgmod
from .. import device as devmod
from .. import probe as probemod
from .. import rundir, runlock
from ..errors import ConfigError
from ..train import load_run
from ..train.evaluate import evaluate, probe_features

PROTOCOLS = cfgmod.PROBES  # ("fast", "reference")
# config.json fields that decide which data items (and labels) a run sees: concatenated features
# must describe the same items, row for row. Image fields matter for image overlays, audio ones for audio.
DATA_FIELDS = ("overlay", "seed", "subset", "test_subset")
IMAGE_DATA_FIELDS = ("overlay_size", "overlay_opacity")
AUDIO_DATA_FIELDS = ("audio_dataset", "noise_classes", "noise_volume", "noise_draw")
RUN_DIR_HOLDS = ("a run directory (pretrain's out_dir) holds config.json, history.jsonl, checkpoint.pt "
                 "(written after every epoch) and, once finished, metrics.json")


# ---------------------------------------------------------------------------------------- checks
def check_run_dir(path: str | Path) -> Path:
    """A directory that pretrain has trained at least one epoch in (config.json and checkpoint.pt)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"run directory {str(path)!r} does not exist; {RUN_DIR_HOLDS}")
    if not path.is_dir():
        raise ConfigError(f"{str(path)!r} is not a directory; {RUN_DIR_HOLDS}")
    for name, why in (("config.json", "not a run directory"),
                      ("checkpoint.pt", "a run that has not trained yet")):
        if not (path / name).is_file():
            raise ConfigError(f"no {name} in {str(path)!r} ({why}); {RUN_DIR_HOLDS}")
    return path


def check_args(run_dirs, probe: str, probe_epochs: int | None, concat: bool, device: str) -> list[Path]:
    if probe not in PROTOCOLS:
        raise ConfigError(f"unknown probe protocol {probe!r}; allowed: {', '.join(PROTOCOLS)}")
    if probe_epochs is not None:
        if not isinstance(probe_epochs, int) or isinstance(probe_epochs, bool) or probe_epochs <= 0:
            raise ConfigError(f"probe_epochs = {probe_epochs!r} is invalid: allowed a positive integer")
        if probe != "reference":
            raise ConfigError("probe_epochs applies to the reference protocol only (the fast probe fits a "
                               "logistic regression to convergence); drop it or probe with the reference "
                               "protocol")
    devmod.resolve(device)  # a bad name, or CUDA asked for where there is none: ConfigError now
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    dirs = [check_run_dir(d) for d in run_dirs]
    if not dirs:
        raise ConfigError("no run directory given")
    if concat:
        if probe != "fast":
            raise ConfigError("concat works with the fast protocol only: the reference protocol trains the "
                               "probe on the method's own augmentations, which is undefined for a "
                               "concatenation of several methods' encoders")
        if len(dirs) < 2:
            raise ConfigError(f"concat needs at least two run directories, got one ({str(dirs[0])!r})")
        check_same_data(dirs)
    return dirs


def check_same_data(dirs: list[Path]) -> None:
    """Concatenated features must be of the same items: the data fields of config.json must agree."""
    def data_fields(cfg: dict) -> dict:
        names = DATA_FIELDS + (AUDIO_DATA_FIELDS if cfg.get("overlay") in cfgmod.AUDIO_OVERLAYS else
                               IMAGE_DATA_FIELDS if cfg.get("overlay") != "none" else ())
        values = {n: cfg.get(n) for n in names}
        for n in ("subset", "test_subset"):  # "all" and None both mean every item
            values[n] = cfgmod.size(values[n])
        return values

    first = data_fields(rundir.read_json(dirs[0] / "config.json"))
    for d in dirs[1:]:
        other = data_fields(rundir.read_json(d / "config.json"))
        for name in {**first, **other}:
            a, b = first.get(name), other.get(name)
            if a != b:
                raise ConfigError(f"concat needs runs on the same data items, but config field {name!r} "
                                   f"differs: {a!r} in {str(dirs[0])!r}, {b!r} in {str(d)!r}")


# ---------------------------------------------------------------------------------------- probes
def _describe(trainer, run_dir: Path) -> dict:
    """Who the run is: the fields of the printed table."""
    c = trainer.cfg
    return {"run": str(run_dir), "overlay": c.overlay, "views": c.views, "loss": c.loss,
            "supervise": c.supervise, "seed": c.seed, "encoder": c.encoder, "epochs": trainer.epoch}


def _stamp(protocol: str, probe_epochs: int | None, device: str, t0: float) -> dict:
    return {"protocol": protocol, "probe_epochs": probe_epochs, "device": device,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_s": time.perf_counter() - t0}


def _load(run_dir: Path, device: str):
    trainer = load_run(run_dir, device=device)
    if trainer.epoch < trainer.cfg.epochs:
        live = runlock.holder(run_dir)  # checkpoints are written atomically: reading one mid-run is safe
        state = f"is training now ({runlock.describe(live)})" if live else "stopped"
        print(f"note: {run_dir} {state} at epoch {trainer.epoch} of {trainer.cfg.epochs}; "
              f"probing that checkpoint", file=sys.stderr)
    return trainer


def probe_run(run_dir: Path, probe: str, probe_epochs: int | None, device: str) -> dict:
    """Probe one run with ``probe``; writes ``RUN_DIR/probes/<probe>.json`` and returns its contents
    plus ``file``, the path written."""
    t0 = time.perf_counter()
    trainer = _load(run_dir, device)
    metrics = evaluate(trainer, probe=probe, probe_epochs=probe_epochs)
    epochs = (probe_epochs or trainer.cfg.probe_epochs) if probe == "reference" else None
    result = {**_describe(trainer, run_dir), **metrics, **_stamp(probe, epochs, device, t0)}
    if probe == "reference" and "probe_coarse" in metrics:
        result["probe_coarse_protocol"] = "fast"  # evaluate() probes the coarse label the fast way
    path = run_dir / "probes" / f"{probe}.json"
    rundir.write_json(path, result)
    return {**result, "file": str(path)}


def probe_concat(dirs: list[Path], device: str, out: str | Path | None = None) -> dict:
    """Fast probe on the features of all runs, concatenated along the feature axis; written to ``out``
    (default ``<first run>/probes/concat-fast.json``); returns the result plus ``file``."""
    t0 = time.perf_counter()
    feats_tr, feats_te, dims, described, labelsets, knn_k = [], [], [], [], None, None
    for d in dirs:
        trainer = _load(d, device)
        ftr, fte, sets = probe_features(trainer)  # (N, D_i), (M, D_i)
        if labelsets is None:
            labelsets, knn_k = sets, trainer.cfg.knn_k
        else:
            _check_same_labels(labelsets, sets, dirs[0], d)
        feats_tr.append(ftr)
        feats_te.append(fte)
        dims.append(ftr.shape[1])
        described.append(_describe(trainer, d))
        del trainer  # one run's data and models in memory at a time
    ftr, fte = torch.cat(feats_tr, 1), torch.cat(feats_te, 1)  # (N, ΣD_i), (M, ΣD_i)
    metrics = probemod.fast_metrics(ftr, fte, labelsets, knn_k)
    first = described[0]
    result = {"run": " + ".join(r["run"] for r in described), "runs": described,
              "overlay": first["overlay"], "seed": first["seed"],
              "views": "+".join(r["views"] for r in described),
              "loss": "+".join(r["loss"] for r in described),
              "encoder": "+".join(str(r["encoder"]) for r in described),
              "feature_dim": ftr.shape[1], "feature_dims": dims, "knn_k": knn_k,
              **metrics, **_stamp("fast", None, device, t0)}
    path = Path(out) if out is not None else dirs[0] / "probes" / "concat-fast.json"
    rundir.write_json(path, result)
    return {**result, "file": str(path)}


def _check_same_labels(ref, sets, first: Path, other: Path) -> None:
    """Belt and braces after check_same_data: the label tensors themselves must agree row for row."""
    names = [s[0] for s in ref]
    if [s[0] for s in sets] != names:
        raise ConfigError(f"runs {str(first)!r} and {str(other)!r} have different label sets: "
                           f"{names} vs {[s[0] for s in sets]}")
    for (name, ytr, yte, k), (_, ytr2, yte2, k2) in zip(ref, sets):
        if k != k2 or not torch.equal(ytr.cpu(), ytr2.cpu()) or not torch.equal(yte.cpu(), yte2.cpu()):
            raise ConfigError(f"runs {str(first)!r} and {str(other)!r} label their data items differently "
                               f"({name!r}); concat needs the same items in the same order")


def reprobe(run_dirs, probe: str = "fast", probe_epochs: int | None = None, concat: bool = False,
            device: str = "auto", out: str | Path | None = None, say=print):
    """Probe finished runs again; one row per run (or one row for ``concat``) as a pandas DataFrame.

    ``probe``: "fast" | "reference"; ``probe_epochs``: the reference protocol's epochs (None: each
    run's own ``probe_epochs``); ``concat``: one fast probe on all runs' features side by side;
    ``device``: auto (CUDA when available) | cpu | cuda; ``out``: where the concat result goes; ``say``:
    where the progress lines go (print).
    All input is checked before any model is loaded.
    """
    import pandas as pd

    dirs = check_args(run_dirs, probe, probe_epochs, concat, device)
    if out is not None and not concat:
        raise ConfigError("out applies to concat only; single runs are written to "
                          "RUN_DIR/probes/<protocol>.json")
    dev = str(devmod.resolve(device))
    if concat:
        say(f"reprobe: one fast probe on the features of {len(dirs)} runs, concatenated ...")
        rows = [probe_concat(dirs, dev, out)]
    else:
        rows = []
        for i, d in enumerate(dirs, 1):  # a line before and after each run: a reference probe takes minutes
            say(f"reprobe {i}/{len(dirs)}: {d} ({probe} protocol) ...")
            rows.append(probe_run(d, probe, probe_epochs, dev))
            shown = "  ".join(f"{k} {rows[-1][k]:.3f}" for k in ("probe_main", "probe_alt", "probe_coarse")
                              if rows[-1].get(k) is not None)
            say(f"  {shown}  ({rows[-1]['wall_s']:.0f} s)")
    return pd.DataFrame([{k: v for k, v in r.items() if k != "runs"} for r in rows])


# ---------------------------------------------------------------------------------------- table
def table(df) -> str:
    """The printed table: run, overlay, views, loss (and supervise, when set), seed, protocol, probe
    accuracies, chance levels; columns that no row has are left out."""
    cols = [c for c in ("run", "overlay", "views", "loss", "supervise", "seed", "protocol", "probe_epochs",
                        "feature_dim", "probe_main", "probe_alt", "probe_coarse")
            if c in df and df[c].notna().any()]
    shown = df[cols].copy()
    chance = [c for c in ("chance_main", "chance_alt", "chance_coarse") if c in df and df[c].notna().any()]
    shown["chance (" + "/".join(c[len("chance_"):] for c in chance) + ")"] = [
        "/".join("–" if row[c] is None or row[c] != row[c] else f"{row[c]:.3f}" for c in chance)
        for _, row in df.iterrows()]  # "–": a label the run does not have (overlay=none: alt)
    for c in ("probe_main", "probe_alt", "probe_coarse"):
        if c in shown:
            shown[c] = shown[c].map(lambda v: "–" if v is None or v != v else f"{v:.4f}")
    for c in ("probe_epochs", "feature_dim"):
        if c in shown:
            shown[c] = shown[c].map(lambda v: "" if v != v or v is None else str(int(v)))
    return shown.to_string(index=False)


EXAMPLES = """examples:
  featdrop reprobe runs/shapes-expert-seed0 runs/shapes-viewmaker-seed0 --probe reference
  featdrop reprobe runs/study13/loss-spread__seed-0 runs/study13/loss-ae__seed-0 --concat"""


def main(argv=None, prog: str = "featdrop reprobe") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                    help="finished run directories (pretrain's out_dir)")
    ap.add_argument("--probe", choices=PROTOCOLS, default="fast",
                    help="fast: L-BFGS logistic regression on pooled clean features (on a CPU it reproduces "
                         "a CPU run's metrics.json exactly); reference: the paper's SGD probe on pre-pool "
                         "features, trained on the method's own views (each probe epoch runs the frozen "
                         "encoder, and viewmaker, over the whole training split)")
    ap.add_argument("--probe-epochs", type=int, default=None,
                    help="reference protocol only: its epochs (default: each run's own probe_epochs, 100 in "
                         "both presets, as in the paper); fewer is cheaper and noisier")
    ap.add_argument("--concat", action="store_true",
                    help="one fast probe on all runs' features concatenated (runs on the same data items)")
    ap.add_argument("--out", default=None,
                    help="with --concat: the JSON file (default <first run>/probes/concat-fast.json)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    args = ap.parse_args(argv)
    df = reprobe(args.run_dirs, args.probe, args.probe_epochs, args.concat, args.device, args.out)
    print(table(df))
    for path in df["file"]:
        print(f"wrote {path}")
    return 0
