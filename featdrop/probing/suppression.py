"""Bring your own encoder: does it still see the photo's class when an easy feature sits on top?

Feature suppression (Tamkin, Glasgow, He & Goodman, "Feature Dropout", NeurIPS 2023; Chen, Luo &
Li, "Intriguing properties of contrastive losses", NeurIPS 2021): an easy feature present in every
input can crowd a harder one out of a representation. ``report`` probes a frozen encoder (any
module, or a spec of ``featdrop.probing.encoders``: ``run:``, ``torchvision:``, ``file:``) on CIFAR-10 under
each overlay: linear probes for the CIFAR-10 class (main), the overlay (alternate) and vehicles vs
animals (coarse), and

    suppression_main = probe_main(none) − probe_main(overlay)

the class accuracy that the overlay's presence costs. ``featdrop suppression SPEC`` prints
the table and writes ``suppression.csv`` and a bar chart.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .. import config as cfgmod
from .. import device as devmod
from .. import rundir
from ..data.images import Source, class_names
from ..data.records import OVERLAYS as RECORDS
from ..viz import embedding
from ..viz.compare import suppression_bars
from .encoders import SPEC_HELP, Encoder, load_encoder
from .overlay_probes import OVERLAYS, _check, report

__all__ = ["OVERLAYS", "report", "run", "figure", "main"]
# CLI defaults (train, test images per overlay). CPU: 4 overlays × 600 images through a ResNet-18 at 224 px
# cost 137 CPU-seconds (measured, one thread), about 2.5 min on an idle 2-core machine. GPU: 10k + 10k.
CPU_SUBSETS, CUDA_SUBSETS = (400, 200), (10_000, 10_000)
PARAMETERS = ("spec", "overlays")              # the notebook's parameters that are not config fields


# ------------------------------------------------------------------------------- figure, CLI, notebook
def default_settings(encoder: Encoder, device: torch.device, subset=None, test_subset=None, seed=None):
    """CLI defaults: a run's own seed and subsets (its probe numbers come back); else by device. Returns the
    settings and where the two image counts came from: "as given", "the run's own", "the CPU default", or
    one for each ("train as given, test the run's own")."""
    run = encoder.run_config
    if run is not None:
        defaults = (cfgmod.size(run["subset"]), cfgmod.size(run["test_subset"]), run["seed"])  # "all": None
        source = "the run's own"
    else:
        n_train, n_test = CUDA_SUBSETS if device.type == "cuda" else CPU_SUBSETS
        defaults, source = (n_train, n_test, 0), f"the {device.type.upper()} default"
    chosen = tuple(d if v is None else v for d, v in zip(defaults, (subset, test_subset, seed)))
    train_from, test_from = ("as given" if v is not None else source for v in (subset, test_subset))
    return chosen, train_from if train_from == test_from else f"train {train_from}, test {test_from}"


def slug(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in spec.replace(":", "-")).strip("-")[:80]


def _finished_before(out: Path, settings: dict) -> dict:
    """Rows of suppression.csv from an earlier (perhaps interrupted) report with the same settings."""
    import pandas as pd

    if not (out / "suppression.csv").exists() or not (out / "settings.json").exists():
        return {}
    if rundir.read_json(out / "settings.json") != settings:
        print(f"note: {out} holds a report with other settings; starting over", flush=True)
        return {}
    return {r["overlay"]: r for r in pd.read_csv(out / "suppression.csv").to_dict("records")}


def _map(out: Path, row: dict, features, spec: str, seed: int, source: Source = Source()) -> None:
    """The overlay's embedding map (embedding_<overlay>.png) and its scores into the row."""
    fte, y_main, y_alt = features
    skipped = embedding.too_few(len(fte), field="--test-subset")
    if skipped:
        print(f"{row['overlay']}: {skipped}", flush=True)
        return
    idx = embedding.items(len(fte), seed)
    points = embedding.map_2d(fte[idx.to(fte.device)], seed)
    record = RECORDS[row["overlay"]]
    labels = {"main": y_main[idx].cpu().numpy()}
    if record.has_alt_label():
        labels["alt"] = y_alt[idx].cpu().numpy()
    names = {"main": class_names(source), "alt": record.alt_class_names()}
    fig = embedding.figure(points, labels, names, f"{spec}, overlay {row['overlay']}: t-SNE of {len(idx)} "
                                                  f"test images' features")
    rundir.save_figure(fig, out / f"embedding_{row['overlay']}.png")
    row.update({f"map_knn_{k}": v for k, v in embedding.scores(points, labels).items()})


def run(spec: str, *, overlays=OVERLAYS, subset=None, test_subset=None, probe="fast", device="auto",
        seed=None, data_dir=None, out_dir=None, batch_size=None, maps: bool = True,
        source: Source | None = None):
    """What the CLI and the notebook do: report, print each overlay's accuracies as soon as they exist and
    write ``out_dir``/suppression.csv as it goes (a report stopped half-way keeps its finished overlays, and
    the same command skips them), an embedding map per overlay, then the bar chart. ``source``: the photos
    (default: a run's own, else CIFAR-10 at 32 px)."""
    import pandas as pd

    overlays = [overlays] if isinstance(overlays, str) else list(overlays)
    dev = devmod.resolve(device)
    t0 = time.perf_counter()
    encoder = load_encoder(spec, str(dev), seed=0 if seed is None else seed)
    if source is None:
        run_cfg = encoder.run_config or {}
        source = (Source(run_cfg.get("dataset") or "cifar10", run_cfg.get("data_path"),
                         run_cfg.get("image_size") or 32) if run_cfg else Source())
    _check(overlays, subset, test_subset, probe, 0 if seed is None else seed, source)
    (n_train, n_test, seed), why = default_settings(encoder, dev, subset, test_subset, seed)
    out = Path(out_dir or Path("runs") / "suppression" / slug(spec))
    settings = dict(spec=spec, subset=n_train, test_subset=n_test, seed=seed, probe=probe,
                    **({} if source == Source() else {"photos": f"{source.dataset} {source.data_path or ''} "
                                                                f"{source.image_size}px"}))
    done = {k: v for k, v in _finished_before(out, settings).items() if k in overlays}
    print(f"encoder: {encoder.description}\ndevice {dev}; overlays {', '.join(overlays)}; probe {probe}; "
          f"seed {seed}\n"
          f"images per overlay: {n_train or 'all'} train + {n_test or 'all'} test ({why}"
          + ("" if why == "as given" else "; set --subset / --test-subset") + f")\nout_dir {out}"
          + (f"\nfinished before, skipped: {', '.join(done)}" if done else ""), flush=True)
    rows = dict(done)

    def finished(row, features):  # print, map, and rewrite the CSV after every overlay
        if maps:
            _map(out, row, features, spec, seed, source)
        rows[row["overlay"]] = row
        shown = "  ".join(f"{k} {row[k]:.3f}" for k in ("probe_main", "probe_alt", "probe_coarse")
                          if row.get(k) == row.get(k))
        print(f"{row['overlay']}: {shown}  ({row['n_train']} + {row['n_test']} images, "
              f"{row['time_s']:.0f} s)", flush=True)
        rundir.write_json(out / "settings.json", settings)
        rundir.atomic_write_text(out / "suppression.csv",
                                 pd.DataFrame(list(rows.values())).to_csv(index=False))

    table = report(encoder, overlays=overlays, subset=n_train, test_subset=n_test, probe=probe,
                   device=str(dev), seed=seed, data_dir=data_dir, batch_size=batch_size, done=done,
                   on_row=finished, source=source)
    table.attrs.update(spec=spec, total_s=time.perf_counter() - t0, out_dir=str(out))
    rundir.atomic_write_text(out / "suppression.csv", table.to_csv(index=False))
    figure(table)
    print(table.round(3).to_string(index=False))
    print(f"total {table.attrs['total_s']:.0f} s; wrote {out / 'suppression.csv'} and "
          f"{out / 'suppression.png'}")
    return table


def figure(table):
    """The bar chart of a ``run`` table, saved as ``suppression.png`` in its out_dir; returns the figure."""
    a, r = table.attrs, table.iloc[0]
    fig = suppression_bars(table, f"{a.get('spec', '')}: {r.n_train} train / {r.n_test} test images per "
                           f"overlay, {a['probe']} probe")
    if a.get("out_dir"):
        rundir.save_figure(fig, Path(a["out_dir"]) / "suppression.png")  # closed: shown once in a notebook
    return fig


EXAMPLES = """examples:
  featdrop suppression torchvision:resnet18:none --out runs/suppression/resnet18-none
  featdrop suppression run:runs/shapes-expert-seed0
  featdrop suppression file:my_encoder.pt --overlays none shapes --subset 5000 --test-subset 2000

Probes are noisy on small subsets: with 200 test images one accuracy has a standard error of about 0.03;
use --subset 5000 --test-subset 2000 or more (a GPU) before reading small suppressions."""


def main(argv=None, prog: str = "featdrop suppression") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help=SPEC_HELP)
    p.add_argument("--subset", type=int, help=f"training images per overlay (default: a run's own; CPU "
                   f"{CPU_SUBSETS[0]}, CUDA {CUDA_SUBSETS[0]})")
    p.add_argument("--test-subset", type=int,
                   help=f"test images per overlay (CPU {CPU_SUBSETS[1]}, CUDA {CUDA_SUBSETS[1]})")
    p.add_argument("--overlays", nargs="+", default=list(OVERLAYS),
                   help="include none: suppression is relative to it")
    p.add_argument("--probe", default="fast", choices=cfgmod.PROBES,
                   help="fast: logistic regression on cached features; reference: 100 SGD epochs on expert "
                        "views")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, help="overlay draws (default: a run's own seed, else 0)")
    p.add_argument("--batch-size", type=int,
                   help="images per forward pass (default 64 on CPU at ImageNet size)")
    p.add_argument("--data-dir", help="default: $FEATDROP_DATA, else ./data")
    p.add_argument("--out", help="output folder (default runs/suppression/<spec>)")
    a = p.parse_args(argv)
    run(a.spec, overlays=a.overlays, subset=a.subset, test_subset=a.test_subset, probe=a.probe,
        device=a.device, seed=a.seed, data_dir=a.data_dir, out_dir=a.out, batch_size=a.batch_size)
    return 0
