"""Benchmarks that print figures (no timed tests): ``python -m featdrop.bench {overlays,train}``.

``overlays``: time to composite each overlay over all 60,000 CIFAR-10 images from the cache.
``train``: images/s of the expert and viewmaker steps (eager, compiled on CUDA, profiled), view generation,
the reference design, k concurrent runs on one device, and projected 200-epoch cell and grid times.
"""
from __future__ import annotations

import argparse
import time

import torch

from . import config, data, overlays


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_overlays(data_dir: str, repeats: int = 3) -> dict[str, float]:
    t = time.perf_counter()
    x, _ = data.load_cifar10(data_dir, "train")
    xt, _ = data.load_cifar10(data_dir, "test")
    load_s = time.perf_counter() - t
    digits, digit_labels = data.load_mnist(data_dir, "train")
    images = torch.cat([x, xt])
    print(f"device cpu, {torch.get_num_threads()} threads; {len(images)} images; cache load {load_s:.2f} s")
    out = {"cache_load_s": load_s}
    for name in overlays.OVERLAY_NAMES[1:]:  # "none" returns its input: nothing to time
        fn = lambda: overlays.apply(name, images, torch.Generator().manual_seed(0),  # noqa: E731
                                    digits=digits, digit_labels=digit_labels)
        fn()  # warm: renders masks / glyph tables once
        out[name] = _best_of(fn, repeats)
        print(f"  {name:8s} {out[name]:6.2f} s   ({len(images) / out[name]:,.0f} images/s)")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("what", choices=["overlays", "train"])
    ap.add_argument("--data-dir", default=config.default_data_dir())
    ap.add_argument("--repeats", type=int, default=3)
    args, rest = ap.parse_known_args(argv)
    if args.what == "overlays":
        bench_overlays(args.data_dir, args.repeats)
    else:
        from .bench_train import main as train_main

        train_main(rest, data_dir=args.data_dir)


if __name__ == "__main__":
    main()
