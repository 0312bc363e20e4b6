"""Run directories: every file a run writes goes through here, atomically.

Layout of ``out_dir``: ``config.json``, ``history.jsonl`` (one line per epoch), ``metrics.json``,
``checkpoint.pt`` (everything needed to resume) and ``figures/*.png``.
"""
from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; after the block, rename it onto ``path`` in one step,
    so a crash or a kill never leaves a half-written file (the temporary is removed on error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")  # keeps the suffix (savefig's format)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_history(path: str | os.PathLike, rows: list[dict]) -> None:
    """Rewrite history.jsonl with exactly ``rows`` (one per finished epoch): a resumed run never
    duplicates or loses a line, whatever moment the previous process died at."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in rows))


def read_history(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """The one place figures are written (PNG, atomically); closes the figure."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def all_finite(d: dict) -> bool:
    return all(math.isfinite(v) for v in d.values() if isinstance(v, (int, float)) and not isinstance(v, bool))
