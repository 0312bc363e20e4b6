"""The viewmaker step under both games (``game``), side by side in one process: images/s, each step's phases
(views, the encoder's forward and loss, backward, the optimisers' steps, per pass) and the ops that take the
most CPU time. ``featdrop bench train`` prints it after the memory layouts."""
from __future__ import annotations

import time
import warnings

import torch

from .. import config
from ..lab.concurrency import synthetic_trainer
from .timing import side_by_side


def _timed(fn, sync) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def step_phases(trainer, raw, g, sync) -> dict[str, float]:
    """Seconds per phase of one viewmaker step of the trainer's game, with the trainer's own methods: views,
    the encoder's forward and loss, backward, optimiser steps; for the alternating game once per pass."""
    t, out, box = {}, {}, {}

    def phase(name, fn):
        t[name] = t.get(name, 0.0) + _timed(fn, sync)

    if trainer.cfg.game == "simultaneous":
        passes = [("", True)]
    else:  # the encoder pass on views made without gradient, then the viewmaker pass on fresh views
        passes = [("encoder pass: ", False), ("viewmaker pass: ", True)]
    for prefix, vm_grad in passes:
        freeze = prefix.startswith("viewmaker")
        trainer.encoder.requires_grad_(not freeze)
        phase(prefix + "views" + (" (with grad)" if vm_grad else " (no grad)"),
              lambda: box.update(v=trainer.views(raw, g, grad=vm_grad)))
        phase(prefix + "encoder forward + loss", lambda: box.update(loss=trainer.loss(*box["v"])[0]))
        opts = [trainer.vm_opt] if freeze else [trainer.opt] + ([trainer.vm_opt] if vm_grad else [])
        for o in opts:
            o.zero_grad(set_to_none=True)
        phase(prefix + "backward", lambda: (-box["loss"] if freeze else box["loss"]).backward())
        phase(prefix + "optimiser step(s)", lambda: [o.step() for o in opts])
        trainer.encoder.requires_grad_(True)
    out.update(t)
    return out


def top_ops(fn, n: int = 8, steps: int = 2) -> list[tuple[str, float]]:
    """The ``n`` ops with the most self CPU time per step (ms), from a torch.profiler profile."""
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                fn()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return [(e.key, e.self_cpu_time_total / 1000 / steps) for e in rows]


def measure_games(common: dict, raw, g, args) -> dict:
    """The viewmaker step under both games (``game``, channels_last), side by side in this process, and where
    each step's time goes: its phases, and the ops with the most CPU time."""
    trainers = {game: synthetic_trainer(views="viewmaker", game=game, **common, channels_last=True)
                for game in config.GAMES}
    cuda, batch = trainers["alternating"].cuda, len(raw)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fns = {game: (lambda t=t: t.step(raw, g)) for game, t in trainers.items()}
    ips, _ = side_by_side(fns, batch, args.rounds, args.min_seconds, sync)
    r = {f"viewmaker_step_{game}": ips[game] for game in fns}
    r["game_speedup"] = ips["simultaneous"] / ips["alternating"]
    print("\n  viewmaker step by game (channels_last, side by side): "
          + ", ".join(f"{game} {ips[game]:,.0f} images/s" for game in fns)
          + f"; simultaneous / alternating {r['game_speedup']:.2f}x")
    for game, t in trainers.items():
        runs = [step_phases(t, raw, g, sync) for _ in range(3)]
        phases = {k: sorted(run[k] for run in runs)[1] * 1000 for k in runs[0]}  # the median of three, ms
        r[f"phases_{game}_ms"] = phases
        total = sum(phases.values())
        print(f"  {game} step, {total:.0f} ms: " + "; ".join(f"{k} {v:.0f} ({v / total:.0%})"
                                                          for k, v in phases.items()))
        if not cuda:
            ops = top_ops(fns[game])
            r[f"top_ops_{game}_ms"] = ops
            print("    most self CPU time (ms per step): " + ", ".join(f"{k} {v:.0f}" for k, v in ops))
    return r
