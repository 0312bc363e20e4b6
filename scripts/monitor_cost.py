"""What the label oracles add to an epoch: a quick shapes run's epoch, and its monitor with and without
the oracles, timed side by side in one process (issue 19: within 10 % of an idle quick epoch).

    python scripts/monitor_cost.py [views] [repeats]      # views: expert (default) or viewmaker

Needs the shapes oracles of opacity 1 in the data cache (a quick shapes run trains them once). Prints the
epoch's steps, the whole monitor with and without the oracles, and the oracles' share of an epoch.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import torch

from featdrop import config
from featdrop.oracles import store
from featdrop.train.trainer import Trainer


def main(views: str = "expert", repeats: int = 3) -> None:
    cfg = config.make(overlay="shapes", preset="quick", views=views, progress=False,
                      out_dir=tempfile.mkdtemp(prefix="featdrop-monitor-cost-"))
    trainer = Trainer(cfg)
    oracles = store.for_run(trainer.cfg, trainer.data, trainer.device, train=False)
    if set(oracles) != {"alt", "main"}:
        raise SystemExit(f"the shapes oracles of opacity 1 are not cached in {store.path(cfg, 'alt').parent}:"
                         f" run a quick shapes run first (it trains them once)")
    print(f"{views} views, quick preset, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}")
    split = trainer.data.train.draw(0)
    trainer.oracles = oracles
    trainer.train_epoch(0)  # warm-up: the first epoch reads the clean items once and fits cold probes
    times = {"epoch steps": [], "monitor, oracles on": [], "monitor, oracles off": []}
    for epoch in range(1, repeats + 1):
        row = trainer.train_epoch(epoch)
        times["epoch steps"].append(row["epoch_s"])
        for label, on in (("monitor, oracles on", oracles), ("monitor, oracles off", {})):
            trainer.oracles = on
            t = time.perf_counter()
            trainer.monitor(split, epoch)
            times[label].append(time.perf_counter() - t)
        trainer.oracles = oracles
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:22s} median {med[k]:6.2f} s   ({', '.join(f'{x:.2f}' for x in v)})")
    extra = med["monitor, oracles on"] - med["monitor, oracles off"]
    whole = med["epoch steps"] + med["monitor, oracles on"]
    print(f"  the oracles add {extra:.2f} s: {100 * extra / whole:.1f} % of an epoch with its monitor "
          f"({whole:.1f} s)")


if __name__ == "__main__":
    main(*sys.argv[1:2], *[int(a) for a in sys.argv[2:3]])
