"""ImageNet-100 as the IFM code uses it (Robinson et al., NeurIPS 2021; the 100-class subset of Tian et al.'s
CMC, ``imagenet100.txt`` beside this file: 100 WordNet ids), built from a user's ImageNet by links:

    featdrop imagenet100 --imagenet /data/imagenet --out /data/imagenet100

makes ``<out>/train/<wnid>`` and ``<out>/val/<wnid>`` symbolic links to the class folders of
``<imagenet>/train`` and ``<imagenet>/val`` (nothing is copied), the layout ``dataset=imagefolder
data_path=<out>`` reads. A ``val/`` of 50,000 loose files (as ImageNet ships it) is sorted into class folders of
links with ``--val-labels FILE``: lines ``<file> <wnid>``, or Kaggle's ``LOC_val_solution.csv``.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from ..errors import ConfigError, DataNotFoundError

CLASSES_FILE = Path(__file__).with_name("imagenet100.txt")


def classes() -> list[str]:
    """The 100 WordNet ids, in the file's order."""
    return [line.strip() for line in CLASSES_FILE.read_text().splitlines() if line.strip()]


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        raise ConfigError(f"--out: {link} exists and is not a link to {target}; use an empty --out folder")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=target.is_dir())


def read_val_labels(path: Path) -> dict[str, str]:
    """{file name: wnid} from ``<file> <wnid>`` lines or Kaggle's LOC_val_solution.csv."""
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        return {r[0] + ".JPEG": r[1].split()[0] for r in rows[1:] if r}
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def build(imagenet: str | os.PathLike, out: str | os.PathLike, val_labels: str | None = None) -> dict:
    """Link the 100 classes' folders (and val files) of ``imagenet`` into ``out``; returns the counts."""
    src, dst = Path(imagenet), Path(out)
    wnids = classes()
    if not (src / "train").is_dir():
        raise DataNotFoundError(f"--imagenet {src}: no train/ folder; allowed an ImageNet folder with train/ and "
                                f"val/ (train/<wnid>/*.JPEG)")
    missing = [w for w in wnids if not (src / "train" / w).is_dir()]
    if missing:
        raise DataNotFoundError(f"--imagenet {src}: {len(missing)} of the 100 classes are not in train/: "
                                f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    for w in wnids:
        _link((src / "train" / w).resolve(), dst / "train" / w)
    counts = {"classes": len(wnids), "train": sum(sum(1 for _ in (src / "train" / w).iterdir()) for w in wnids)}
    if all((src / "val" / w).is_dir() for w in wnids):  # val in class folders already
        for w in wnids:
            _link((src / "val" / w).resolve(), dst / "val" / w)
        counts["val"] = sum(sum(1 for _ in (src / "val" / w).iterdir()) for w in wnids)
    elif val_labels:
        labels, keep = read_val_labels(Path(val_labels)), set(wnids)
        n = 0
        for name, w in labels.items():
            if w in keep and (src / "val" / name).exists():
                _link((src / "val" / name).resolve(), dst / "val" / w / name)
                n += 1
        counts["val"] = n
    else:
        raise DataNotFoundError(f"--imagenet {src}: val/ is not in class folders; give --val-labels FILE (lines "
                                f"'<file> <wnid>', or Kaggle's LOC_val_solution.csv) to sort it")
    return counts


EXAMPLES = """examples:
  featdrop imagenet100 --imagenet /data/imagenet --out /data/imagenet100
  featdrop imagenet100 --imagenet /data/imagenet --out /data/imagenet100 --val-labels LOC_val_solution.csv

then: torchrun --nproc_per_node 8 -m featdrop train preset=imagenet100 dataset=imagefolder \\
          data_path=/data/imagenet100 loss=moco_ifm overlay=none        (docs/running.md)"""


def main(argv=None, prog: str = "featdrop imagenet100") -> int:
    ap = argparse.ArgumentParser(prog=prog, description="Build ImageNet-100 (the IFM code's 100 classes) from "
                                 "your ImageNet, by links.", epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imagenet", required=True, help="ImageNet's folder, with train/<wnid>/ and val/")
    ap.add_argument("--out", required=True, help="the ImageNet-100 folder to make (links only)")
    ap.add_argument("--val-labels", help="for a flat val/: lines '<file> <wnid>', or LOC_val_solution.csv")
    args = ap.parse_args(argv)
    counts = build(args.imagenet, args.out, args.val_labels)
    print(f"linked {counts['classes']} classes into {args.out}: {counts['train']} train and {counts['val']} val "
          f"images (nothing copied)")
    return 0
