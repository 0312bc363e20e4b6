"""Overlay galleries: ``featdrop gallery [--data-dir D] [--out docs]`` writes one PNG per image overlay."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import config, rundir
from ..data.images import ImageOverlaySet
from ..data.records import IMAGE_OVERLAYS
from . import plots


def gallery_figure(overlay: str, data_dir: str, seed: int = 0, n: int = 32, size: float = 1.0,
                   opacity: float = 1.0, download: bool = True):
    ds = ImageOverlaySet(overlay, "test", data_dir, seed=seed, size=size, opacity=opacity, subset=n,
                         download=download)
    split = ds.draw()
    return plots.gallery(split.images, split.labels, split.alt_labels, overlay)


EXAMPLES = """examples:
  featdrop gallery                                 # docs/gallery_<overlay>.png for every image overlay
  featdrop gallery --overlays shapes --opacity 0.3 --out runs/faint"""


def main(argv=None, prog: str = "featdrop gallery") -> int:
    ap = argparse.ArgumentParser(prog=prog, description="Draw 32 test images of each overlay, titled with "
                                 "both labels.", epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=config.default_data_dir(), help="default: $FEATDROP_DATA or ./data")
    ap.add_argument("--out", default="docs", help="folder for gallery_<overlay>.png")
    ap.add_argument("--overlays", nargs="+", default=list(IMAGE_OVERLAYS), choices=IMAGE_OVERLAYS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=float, default=1.0, help="overlay scale; smaller = harder to see")
    ap.add_argument("--opacity", type=float, default=1.0,
                    help="multiplies the overlay alpha; lower = fainter")
    args = ap.parse_args(argv)
    for name in args.overlays:
        fig = gallery_figure(name, args.data_dir, args.seed, size=args.size, opacity=args.opacity)
        print("wrote", rundir.save_figure(fig, Path(args.out) / f"gallery_{name}.png"))
    return 0
