"""The two references of every audio number (issue 30): what a linear probe reads of the spoken digit from
the raw log-mels and from a randomly initialised encoder (the floor), and from the encoder trained supervised
on the digit (the ceiling): the same speaker split, the same 64 × 64 log-mel input, the same fast probe
(``featdrop.probe``: L-BFGS logistic regression on standardised features) as the self-supervised runs.

    python scripts/audio_bounds.py --runs-dir runs/audio30/bounds --noise-volumes 0.05 0.001 \\
        --encoders convnet tcnet --ceiling-epochs 30

- raw log-mel: the clean log-mel's 4,096 values, and the same averaged over 8 × 8 tiles (64 values: a
  coarser input that a linear probe generalises from better across speakers);
- random encoder: the pooled features of the encoder at initialisation (seed 0), as a run would start;
- supervised: ``featdrop train loss=ce supervise=main`` (a label-smoothed CE head on the pooled features,
  trained on the preset's expert views for ``--ceiling-epochs``), then the same probe on its frozen features.

Prints a markdown table (digit and noise-type probe per row) and writes ``<runs-dir>/bounds.json``. The
supervised runs are ordinary run directories under ``--runs-dir``: the same command resumes them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from featdrop import config, probe, train
from featdrop.fields import parse_assignments
from featdrop.train.evaluate import evaluate
from featdrop.train.trainer import Trainer


def raw_floors(trainer) -> dict:
    """The fast probe on clean log-mels, whole (4,096-d) and 8 × 8-tile means (64-d)."""
    d = trainer.data
    split = d.train.draw(0)
    xtr, xte = d.modality.clean(split.images), d.modality.clean(d.test.images)  # (N, 1, 64, 64)
    out = {}
    for name, f in (("log-mel, 4,096 values", lambda x: x.flatten(1)),
                    ("log-mel, 8 × 8 tile means", lambda x: F.avg_pool2d(x, 8).flatten(1))):
        a, b = f(xtr), f(xte)
        out[name] = {label: probe.logistic_regression(a, ytr, b, yte, k)
                     for label, ytr, yte, k in (("digit", split.labels, d.test.labels, d.num_classes),
                                                ("noise", split.alt_labels, d.test.alt_labels,
                                                 d.num_alt_classes))}
    return out


def bounds(runs_dir: Path, volumes, encoders, ceiling_epochs: int | None, preset: str = "quick",
           extra: dict | None = None) -> list[dict]:
    rows = []
    base = dict(overlay="noise", preset=preset, oracles=False, progress=False, **(extra or {}))
    for volume in volumes:
        for i, encoder in enumerate(encoders):
            cfg = config.make(**base, noise_volume=volume, encoder=encoder,
                              out_dir=str(runs_dir / f"init-{encoder}-v{volume:g}"))
            trainer = Trainer(cfg)
            if i == 0:  # the input's floors do not depend on the encoder
                rows += [dict(noise_volume=volume, what=name, digit=v["digit"], noise=v["noise"])
                         for name, v in raw_floors(trainer).items()]
            m = evaluate(trainer)
            rows.append(dict(noise_volume=volume, what=f"random {encoder}", digit=m["probe_main"],
                             noise=m["probe_alt"], knn_digit=m["knn_main"]))
            out = runs_dir / f"ce-{encoder}-v{volume:g}"
            kw = dict(base, noise_volume=volume, encoder=encoder, loss="ce", supervise="main",
                      out_dir=str(out))
            if ceiling_epochs:
                kw["epochs"] = ceiling_epochs
            m = train.pretrain(config.make(**kw))
            rows.append(dict(noise_volume=volume, what=f"supervised {encoder}, {m['epochs']} epochs",
                             digit=m["probe_main"], noise=m["probe_alt"], knn_digit=m["knn_main"],
                             train_s=m["train_s"]))
            print(table(rows[-2:]), flush=True)
    return rows


def table(rows) -> str:
    lines = ["| noise_volume | input / encoder | probe: digit | probe: noise type | kNN digit |",
             "|---|---|---|---|---|"]
    for r in rows:
        knn = f"{r['knn_digit']:.3f}" if "knn_digit" in r else "–"
        lines.append(f"| {r['noise_volume']:g} | {r['what']} | {r['digit']:.3f} | {r['noise']:.3f} | {knn} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", default="runs/audio-bounds", type=Path)
    ap.add_argument("--noise-volumes", nargs="+", type=float, default=[0.05, 0.001])
    ap.add_argument("--encoders", nargs="+", default=["convnet"], choices=config.ENCODERS)
    ap.add_argument("--ceiling-epochs", type=int, default=None,
                    help="epochs of the supervised runs (default: the preset's)")
    ap.add_argument("--preset", default="quick", choices=("quick", "paper"))
    ap.add_argument("fields", nargs="*", metavar="FIELD=VALUE", help="config fields for every run (views...)")
    args = ap.parse_args(argv)
    _, extra = parse_assignments(args.fields, sweep=False)
    torch.manual_seed(0)
    rows = bounds(args.runs_dir, args.noise_volumes, args.encoders, args.ceiling_epochs, args.preset, extra)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    (args.runs_dir / "bounds.json").write_text(json.dumps(rows, indent=1))
    print("\n" + table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
