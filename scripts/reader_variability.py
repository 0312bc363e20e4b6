"""How much do two shape readers of the same recipe but other weights disagree on a run's ``alt_destroyed``?
(issue 27, "numbers that stay"). Trains a second shapes reader (opacity 1, the shipped recipe) at 1 thread,
where the shipped one was trained at 2 (so other weights), into ``--out``, then reads every finished opacity-1
run under RUNS_DIR with the shipped reader and with the second one, on the same views:

    python scripts/reader_variability.py runs/study29-game --out runs/readers

About 3 min to train the reader on the 2-core CPU, then about 30 s per run.
"""
from __future__ import annotations

import argparse
import glob
from pathlib import Path

import torch

from featdrop import config
from featdrop.oracles import store
from featdrop.train import load_run
from featdrop.train.evaluate import destruction


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs_dir")
    ap.add_argument("--out", default="runs/readers", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = config.resolve(config.make(overlay="shapes", device="cpu"))
    path = args.out / f"{store.key(cfg, 'alt')}.pt"
    try:
        blob = torch.load(path, weights_only=False)
    except FileNotFoundError:
        blob = store.train(cfg, "alt", None, torch.device("cpu"), store.steps_for(cfg, "alt"), say=print)
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(blob, path)
    second = store._oracle(blob, torch.device("cpu"))
    print(f"second reader: clean test accuracy {blob['accuracy']:.4f}")
    for metrics in sorted(glob.glob(f"{args.runs_dir}/*overlay_opacity-1.0*/metrics.json")):
        t = load_run(metrics.rsplit("/", 1)[0])
        t.oracles = store.for_run(t.cfg, t.data, t.device, say=lambda s: None, train=False)
        shipped = destruction(t)["alt_destroyed"]
        t.oracles = {**t.oracles, "alt": second}
        other = destruction(t)["alt_destroyed"]
        print(f"{Path(metrics).parent.name}: alt_destroyed {shipped:.4f} (shipped reader), "
              f"{other:.4f} (second)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
