"""Overlay gallery: ``python -m featdrop.gallery [--data-dir D] [--out docs]`` writes one PNG per overlay."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import config, datasets, overlays, plots, runs


def gallery_figure(overlay: str, data_dir: str, seed: int = 0, n: int = 32, size: float = 1.0,
                   opacity: float = 1.0, download: bool = True):
    ds = datasets.ImageOverlaySet(overlay, "test", data_dir, seed=seed, size=size, opacity=opacity,
                                  subset=n, download=download)
    split = ds.draw()
    return plots.gallery(split.images, split.labels, split.alt_labels, overlay)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=config.default_data_dir(), help="default: $FEATDROP_DATA or ./data")
    ap.add_argument("--out", default="docs", help="folder for gallery_<overlay>.png")
    ap.add_argument("--overlays", nargs="+", default=list(overlays.OVERLAY_NAMES), choices=overlays.OVERLAY_NAMES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=float, default=1.0, help="overlay scale; smaller = harder to see")
    ap.add_argument("--opacity", type=float, default=1.0, help="multiplies the overlay alpha; lower = fainter")
    args = ap.parse_args(argv)
    for name in args.overlays:
        fig = gallery_figure(name, args.data_dir, args.seed, size=args.size, opacity=args.opacity)
        print("wrote", runs.save_figure(fig, Path(args.out) / f"gallery_{name}.png"))


if __name__ == "__main__":
    main()
