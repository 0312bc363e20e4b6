"""Training throughput on the current device, against the reference design, and how many runs share it.

``featdrop bench train`` measures, on synthetic uint8 batches and with the training code's
own steps (``Trainer.step``, ``Trainer.encoder_step``, ``Trainer.views``; nothing re-implemented):
- images/s of the expert step (two expert views + one encoder step) and of the viewmaker step
  (encoder step + viewmaker step), contiguous, channels_last and compiled by inductor (the viewmaker,
  ``compile=True``; for the expert step the encoder, which training leaves eager), each next to a
  short ``torch.profiler`` profile: the GPU-busy time per step on CUDA (the sum of kernel times), the
  profiled self CPU time per step on a CPU;
- view generation alone (expert, viewmaker);
- the viewmaker step under both games (``game``: alternating, the reference's two passes, and simultaneous,
  one pass), side by side, with each step's phases and the ops that take the most CPU time;
- the reference design in the same process: per-sample torchvision transforms on PIL images through a
  DataLoader, fp32, timed in steady state (warm workers, a minimum number of batches and seconds);
- the aggregate images/s of k concurrent runs on one device (k processes timing the same step,
  summed): ``featdrop.lab.concurrency``, which ``featdrop grid --workers auto`` uses too;
- projections: one 200-epoch cell of 50,000 images, and the 8-cell grid (4 overlays × 2 view types)
  at the best concurrency.
"""
from __future__ import annotations

import argparse
import dataclasses
import heapq
import os
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from .. import config
from .. import device as devmod
from ..lab.concurrency import concurrent_throughput, cores, default_ks, synthetic_batch, synthetic_trainer
from ..views.expert import CIFAR_MEAN, CIFAR_STD
from .games import measure_games
from .timing import side_by_side

EPOCHS, IMAGES = 200, 50_000  # the paper's schedule: one cell = 200 epochs of the 50,000 CIFAR-10 images
GRID_CELLS = {"expert": 4, "viewmaker": 4}  # 4 overlays × 2 view types


def rate(fn: Callable, batch: int, cuda: bool, warmup: int = 1, min_steps: int = 3,
         min_s: float = 2.0) -> float:
    """images/s of ``fn`` (one batch per call): ``warmup`` untimed calls (compilation, allocator,
    cuDNN autotuning), then at least ``min_steps`` calls and ``min_s`` seconds."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    n, t = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - t < min_s:
        fn()
        n += 1
        sync()
    return batch * n / (time.perf_counter() - t)


def profile_ms(fn: Callable, cuda: bool, steps: int = 3) -> float:
    """A short torch.profiler profile of ``steps`` calls (already warm): on CUDA the GPU-busy time per
    step (the sum of every kernel's time), on a CPU the total self CPU time of the ops per step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Profiler clears events at the end of each cycle": one cycle here
        with profile(activities=acts) as prof:
            for _ in range(steps):
                fn()
            if cuda:
                torch.cuda.synchronize()
        events = prof.events()
    if cuda:
        total_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)
    else:
        total_us = sum(e.self_cpu_time_total for e in events)
    return total_us / 1000 / steps


# ---------------------------------------------------------------------------- the reference design
class _PILPairs(torch.utils.data.Dataset):
    """The reference's data path: a PIL image → two independent torchvision transform draws."""

    def __init__(self, images):
        import torchvision.transforms as T
        from PIL import Image, ImageFilter

        self.images = images.permute(0, 2, 3, 1).numpy()
        self.Image = Image

        class Blur:  # PIL GaussianBlur with σ ~ U[0.1, 2], as the reference
            def __call__(self, im):
                return im.filter(ImageFilter.GaussianBlur(radius=float(torch.empty(1).uniform_(0.1, 2.0))))

        self.t = T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0)),
                            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                            T.RandomGrayscale(p=0.2),
                            T.RandomApply([Blur()], p=0.5), T.RandomHorizontalFlip(), T.ToTensor(),
                            T.Normalize(CIFAR_MEAN, CIFAR_STD)])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        im = self.Image.fromarray(self.images[i])
        return self.t(im), self.t(im)


def pil_rate(images: torch.Tensor, batch: int, workers: int, step: Callable | None = None,
             min_batches: int = 8, min_s: float = 3.0) -> float:
    """images/s of the reference's loader (optionally feeding ``step(v1, v2)``), in steady state.

    The workers start together, so the first batches arrive in a burst of ``workers`` after one
    batch time, and more are prefetched while the consumer is busy; timing from the first batch
    counts that burst as throughput (on 16 workers over 20 batches, "views + step" came out faster
    than views alone). So: discard 2 × workers batches (at least 3), then time at least
    max(min_batches, 4 × workers) batches and ``min_s`` seconds."""
    sampler = torch.utils.data.RandomSampler(range(len(images)), replacement=True, num_samples=10**9)
    loader = torch.utils.data.DataLoader(_PILPairs(images), batch_size=batch, sampler=sampler,
                                         num_workers=workers, drop_last=True)
    it = iter(loader)
    for _ in range(max(3, 2 * workers)):
        v1, v2 = next(it)
        if step:
            step(v1, v2)
    need = max(min_batches, 4 * workers)
    n, t = 0, time.perf_counter()
    while n < need or time.perf_counter() - t < min_s:
        v1, v2 = next(it)
        if step:
            step(v1, v2)
        n += 1
    dt = time.perf_counter() - t
    del it, loader  # stops the workers
    return batch * n / dt


def makespan(durations: Sequence[float], slots: int) -> float:
    """Wall time of independent jobs on ``slots`` parallel slots, longest first (LPT scheduling)."""
    loads = [0.0] * slots
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + d)
    return max(loads)


def grid_projection(rates_by_kind: dict[str, dict[int, float]], cells: dict[str, int] = GRID_CELLS,
                    images: int = EPOCHS * IMAGES) -> dict[int, float]:
    """Seconds (steps only) for the grid at each measured concurrency k: each of the k processes runs
    at the k-aggregate rate / k of its cell's kind, and cells are scheduled longest first."""
    ks = set.intersection(*(set(r) for r in rates_by_kind.values()))
    return {k: makespan([images * k / rates_by_kind[kind][k] for kind, n in cells.items()
                         for _ in range(n)], k)
            for k in sorted(ks)}


def _hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


# ---------------------------------------------------------------------------- the benchmark
def _device_line(trainer, batch: int) -> str:
    cfg, dev = trainer.cfg, trainer.device
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    name = devmod.describe(dev) if trainer.cuda else \
        f"cpu ({torch.get_num_threads()} threads, {cores()} cores, load average {load:.1f}" + \
        (": other processes share these cores, so every figure is low)" if load > cores() - 0.5 else ")")
    return (f"device {name}; preset {cfg.preset}: encoder {cfg.encoder}, "
            f"viewmaker width {cfg.viewmaker_width}, "
            f"batch {batch}, {'bf16 autocast' if trainer.cuda else 'fp32'}")


# the memory layouts and compile settings measured side by side; compile: the viewmaker, by inductor (the
# expert step's "compiled" row compiles the encoder instead: see compiled_encoder)
MODES = {"contiguous": dict(channels_last=False), "channels_last": dict(channels_last=True),
         "compiled": dict(channels_last=True, compile=True)}


def compiled_encoder(trainer):
    """``trainer`` with its encoder's ``embed`` compiled by inductor: what ``compile`` could do for an
    expert step, which has no viewmaker. Measured here only (the training code leaves the encoder eager:
    compiling it made the expert step slower on an H100)."""
    trainer.encoder.embed = torch.compile(trainer.encoder.embed)
    return trainer


def measure_steps(trainers: dict, raw, g, args, expert_trainers: dict | None = None) -> dict:
    """images/s of view generation and of both full steps in each memory/compile mode (``MODES``), side by
    side, with the compile warm-up; a profile of the default mode; and the steps of one quick run.
    ``expert_trainers``: those to time for the expert step, if not ``trainers``."""
    cuda, batch = next(iter(trainers.values())).cuda, len(raw)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    default = trainers["channels_last"]
    m = default.data.modality
    r = {"expert_views": rate(lambda: (m.expert(raw, g), m.expert(raw, g)), batch, cuda,
                              min_s=args.min_seconds),
         "viewmaker_views": rate(lambda: default.views(raw, g, grad=False), batch, cuda,
                                 min_s=args.min_seconds)}
    quick = config.PRESETS["quick"]
    steps_per_run = quick["epochs"] * (quick["subset"] // batch)
    prof_label = "GPU busy" if cuda else "profiled self CPU"
    print(f"\n  {'step':15s} {'mode':14s} {'images/s':>9s} {'x contiguous':>12s} {'warm-up s':>10s}   "
          f"a quick run's {steps_per_run} steps, warm-up included")
    for kind in ("expert", "viewmaker"):
        chosen = expert_trainers if kind == "expert" and expert_trainers else trainers
        fns = {name: (lambda t=t: _step(t, kind, raw, g)) for name, t in chosen.items()}
        ips, warm = side_by_side(fns, batch, args.rounds, args.min_seconds, sync)
        for name in fns:
            run_s = warm[name] + steps_per_run * batch / ips[name]
            r[f"{kind}_step_{name}"], r[f"{kind}_step_{name}_warmup_s"] = ips[name], warm[name]
            r[f"{kind}_quick_run_steps_{name}_s"] = run_s
            ratio = ips[name] / ips["contiguous"]
            print(f"  {kind + ' step':15s} {name:14s} {ips[name]:9,.0f} {ratio:11.2f}x {warm[name]:10.1f}   "
                  f"{run_s:7.0f} s")
        busy = profile_ms(fns["channels_last"], cuda)
        r[f"{kind}_step_profile_ms"] = busy
        print(f"  {'':15s} {prof_label} ms per channels_last step (torch.profiler): {busy:.1f}")
    r["expert_step"], r["viewmaker_step"] = r["expert_step_channels_last"], r["viewmaker_step_channels_last"]
    return r


def _step(trainer, kind: str, raw, g):
    """One training step of ``kind``, with the trainer's own code (an expert step: two expert views and the
    encoder step; a viewmaker step: Trainer.step)."""
    if kind == "expert":
        m = trainer.data.modality
        return trainer.encoder_step(trainer.cl(m.expert(raw, g)), trainer.cl(m.expert(raw, g)))
    return trainer.step(raw, g)


def measure_reference(trainer, batch: int, workers: int) -> dict:
    """The reference design in the same process, timed after our own paths (its workers would otherwise
    run in the background): PIL views alone, and feeding the expert step in fp32."""
    pool = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))
    trainer.amp = False  # the reference trained in fp32
    dev = trainer.device
    r = {"pil_views": pil_rate(pool, batch, workers),
         "pil_expert_step": pil_rate(pool, batch, workers,
                                     step=lambda v1, v2: trainer.encoder_step(v1.to(dev), v2.to(dev)))}
    trainer.amp = trainer.cuda
    return r


def print_paths(r: dict, workers: int) -> None:
    print(f"\n  {'path':40s} {'images/s':>10s}")
    for label, key, base in [("expert view generation (2 views)", "expert_views", "pil_views"),
                             ("viewmaker view generation (2 views)", "viewmaker_views", None),
                             ("full expert step", "expert_step", "pil_expert_step"),
                             ("full viewmaker step", "viewmaker_step", None),
                             (f"reference: PIL views, DataLoader x{workers}", "pil_views", None),
                             ("reference: PIL views + expert step (fp32)", "pil_expert_step", None)]:
        ratio = f"   {r[key] / r[base]:5.1f}x the reference design" if base else ""
        print(f"  {label:40s} {r[key]:10,.0f}{ratio}")


def print_projection(r: dict, cfg, ks) -> None:
    """Steps-only projections: one 200-epoch cell per kind, and the 8-cell grid at each measured k."""
    print(f"\n  projected, steps only (no kNN monitor or probes), encoder {cfg.encoder}, "
          f"{EPOCHS} epochs x {IMAGES:,} images:")
    for kind in ("expert", "viewmaker"):
        fast = r.get(f"{kind}_step_compiled")
        also = f" (compiled: {_hours(EPOCHS * IMAGES / fast)})" if fast else ""
        print(f"    one {kind} cell, alone on the device: "
              f"{_hours(EPOCHS * IMAGES / r[f'{kind}_step'])}{also}")
    if ks:
        proj = grid_projection({kind: r[f"concurrent_{kind}"] for kind in GRID_CELLS})
        best = min(proj, key=proj.get)
        r["grid_projection_s"], r["grid_best_k"] = proj, best
        print("    the 8-cell grid (4 expert + 4 viewmaker cells) on one device: "
              + ", ".join(f"k={k}: {_hours(s)}" for k, s in proj.items())
              + f"; best k={best}: {_hours(proj[best])}")


EXAMPLES = """examples:
  featdrop bench train                          # this device, preset auto (quick on a CPU, paper on a GPU)
  featdrop bench train --preset paper --concurrency 1,2,4,8
  featdrop bench train --concurrency 0 --min-seconds 5"""


def main(argv=None, prog: str = "featdrop bench train") -> dict:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="auto", choices=config.PRESET_NAMES)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timed blocks per mode")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="seconds per timed block, at least")
    ap.add_argument("--workers", type=int, default=cores(), help="DataLoader workers of the PIL baseline "
                    "(default: every core, as a reference run would use)")
    ap.add_argument("--concurrency", default="auto", help="k values for the concurrent-runs measurement, "
                    "e.g. 1,2,4 (auto: powers of 2 up to 8 on a GPU, up to the cores on a CPU); 0: skip")
    ap.add_argument("--concurrency-seconds", type=float, default=3.0, help="timed seconds per k")
    ap.add_argument("--no-compile", action="store_true",
                    help="skip the compiled mode (its warm-up takes minutes on a CPU)")
    ap.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    common = dict(preset=args.preset, device=args.device, data_dir=args.data_dir, batch_size=args.batch)
    modes = {k: v for k, v in MODES.items() if not (args.no_compile and k == "compiled")}
    # the training code on synthetic batches, once per mode
    trainers = {name: synthetic_trainer(views="viewmaker", **common, **fields)
                for name, fields in modes.items()}
    trainer = trainers["channels_last"]
    print(_device_line(trainer, args.batch))
    raw = synthetic_batch(args.batch, trainer.device)
    g = torch.Generator(device=trainer.device).manual_seed(0)
    expert_trainers = None
    if "compiled" in trainers:  # the expert step has no viewmaker: its compiled row compiles the encoder
        expert_trainers = {**trainers, "compiled": compiled_encoder(
            synthetic_trainer(views="viewmaker", **common, **modes["channels_last"]))}
    r = measure_steps(trainers, raw, g, args, expert_trainers)
    r.update(measure_games(common, raw, g, args))
    r.update(measure_reference(trainer, args.batch, args.workers))
    print_paths(r, args.workers)
    ks = default_ks(trainer.cuda) if args.concurrency == "auto" else \
        [int(k) for k in args.concurrency.split(",") if int(k)]
    if ks:
        print(f"\n  concurrent runs on one {'GPU' if trainer.cuda else 'CPU'} "
              f"(k processes, each timing Trainer.step "
              f"for {args.concurrency_seconds:g} s; images/s summed):")
        fields = {k: v for k, v in dataclasses.asdict(trainer.cfg).items() if k != "out_dir"}
        for kind in ("expert", "viewmaker"):
            print(f"  {kind} step:")
            r[f"concurrent_{kind}"] = concurrent_throughput({**fields, "views": kind}, ks,
                                                            args.concurrency_seconds)
    print_projection(r, trainer.cfg, ks)
    return r
