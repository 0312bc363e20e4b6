"""The ``featdrop`` command (also ``python -m featdrop``): one subcommand per tool.

``featdrop --help`` answers before torch is imported: each subcommand's module is imported by name only when
that subcommand runs. Every error a user can cause
(``featdrop.errors.FeatdropError``) is printed as one line, without a traceback, and exits 2.
"""
from __future__ import annotations

import importlib
import sys

from .errors import FeatdropError  # plain Python: importing it does not import torch

# subcommand → (module whose main(argv, prog) runs it, one line of help)
COMMANDS = {
    "train": ("featdrop.train.run",
              "pretrain one run and probe both labels: featdrop train overlay=shapes seed=1"),
    "grid": ("featdrop.lab.launch",
             "a grid of runs over worker processes, GPUs and machines, resumable"),
    "report": ("featdrop.lab.tables",
               "tables (mean ± sd over seeds) and figures of the finished runs under a folder"),
    "reprobe": ("featdrop.probing.reprobe",
                "probe finished runs again (fast or the paper's protocol; --concat)"),
    "suppression": ("featdrop.probing.suppression",
                    "the suppression report for any encoder (run:, torchvision:, file:)"),
    "bench": (None, "benchmarks that print figures: featdrop bench overlays | train | loader | ranks"),
    "gallery": ("featdrop.viz.gallery", "draw each overlay on test images, titled with both labels"),
    "oracles": ("featdrop.oracles.command",
                "list, train and check the label oracles (the readers shipped and those cached)"),
    "imagenet100": ("featdrop.data.imagenet100",
                    "build ImageNet-100 (the IFM code's 100 classes) from your ImageNet, by links"),
}
BENCHES = {"overlays": "featdrop.bench.overlays", "train": "featdrop.bench.train",
           "loader": "featdrop.bench.loader", "ranks": "featdrop.bench.ranks"}
USAGE = "usage: featdrop [--help] COMMAND [ARGS ...]   (featdrop COMMAND --help: its options and an example)"


def _help() -> str:
    rows = "\n".join(f"  {name:12s} {about}" for name, (_, about) in COMMANDS.items())
    return (f"{USAGE}\n\nWhich features does contrastive learning keep, and which does it suppress?\n\n"
            f"commands:\n{rows}\n\n`python -m featdrop ...` is the same command. Config fields are given as "
            f"FIELD=VALUE,\nwith the names of notebooks/pretrain.ipynb's parameters (featdrop/config.py).")


def _target(argv: list[str]) -> tuple[str, str, list[str]]:
    """(module, prog, remaining argv) for a command line; ValueError with the message to print."""
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name!r}: allowed {', '.join(COMMANDS)} (featdrop --help)")
    if name != "bench":
        return COMMANDS[name][0], f"featdrop {name}", rest
    if not rest or rest[0] in ("-h", "--help"):
        raise LookupError("usage: featdrop bench {overlays,train,loader} [--help]\n"
                          "  overlays  compositing time of each overlay over all of CIFAR-10\n"
                          "  train     training throughput, the reference design, concurrent runs\n"
                          "  loader    decoding a folder of images against the training step\n"
                          "  ranks     torchrun processes against one process with their threads")
    if rest[0] not in BENCHES:
        raise ValueError(f"unknown benchmark {rest[0]!r}: allowed {', '.join(BENCHES)}")
    return BENCHES[rest[0]], f"featdrop bench {rest[0]}", rest[1:]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_help())
        return 0
    try:
        module, prog, rest = _target(argv)
    except LookupError as e:  # featdrop bench --help
        print(e)
        return 0
    except ValueError as e:
        print(f"featdrop: error: {e}", file=sys.stderr)
        return 2
    try:  # the subcommand's module is imported only now: `featdrop --help` does not wait for torch
        result = importlib.import_module(module).main(rest, prog=prog)
    except FeatdropError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
