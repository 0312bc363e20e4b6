"""``featdrop bench overlays``: the time to composite each image overlay over all 60,000 CIFAR-10 images from
the cache (target: under 5 s on a 2-core CPU). Prints figures; there are no timed tests."""
from __future__ import annotations

import argparse
import time

import torch

from .. import config
from ..data import cifar, overlays


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_overlays(data_dir: str, repeats: int = 3) -> dict[str, float]:
    t = time.perf_counter()
    x, _ = cifar.load_cifar10(data_dir, "train")
    xt, _ = cifar.load_cifar10(data_dir, "test")
    load_s = time.perf_counter() - t
    digits, digit_labels = cifar.load_mnist(data_dir, "train")
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


def main(argv=None, prog: str = "featdrop bench overlays") -> dict:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 epilog="example:\n  featdrop bench overlays --repeats 5",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=config.default_data_dir())
    ap.add_argument("--repeats", type=int, default=3, help="each figure is the best of this many")
    args = ap.parse_args(argv)
    return bench_overlays(args.data_dir, args.repeats)
