"""Random draws for the views of a batch, per item, so that every item gets the same views however the batch
is split across processes (torchrun).

Every random draw of a view is a tensor whose first dimension is the batch: one row of parameters (or noise)
per item. In one process the draws come straight from the epoch's ``torch.Generator``. A process that holds
only rows ``lo:hi`` of a global batch of ``n`` passes a ``Rows``: each draw is made for all ``n`` rows, so the
generator advances exactly as in one process with the whole batch, and the process keeps its rows. Item i's
views are then bit for bit those of a single process (a draw of n rows is a few kilobytes; the views
themselves are computed for the held rows only).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rows:
    """Rows ``lo:hi`` of a global batch of ``n`` items, drawn from ``generator``; ``copies`` > 1: a draw for
    that many batches stacked (the viewmaker's noise for both views at once, 2n rows), of which the process
    holds rows lo:hi of each."""
    generator: torch.Generator
    n: int
    lo: int
    hi: int
    copies: int = 1

    def index(self, device) -> torch.Tensor:
        return torch.cat([torch.arange(c * self.n + self.lo, c * self.n + self.hi, device=device)
                          for c in range(self.copies)])


def stacked(g, copies: int):
    """The draws of ``copies`` batches stacked along the first dimension: a Rows held by this process gets
    its rows of each; a torch.Generator stays itself (a draw of copies × B rows)."""
    return Rows(g.generator, g.n, g.lo, g.hi, g.copies * copies) if isinstance(g, Rows) else g


def _draw(fn, g, shape, device, dtype):
    if isinstance(g, Rows):
        if shape[0] != g.copies * (g.hi - g.lo):
            raise ValueError(f"a draw of {shape[0]} rows from the rows {g.lo}:{g.hi} (x{g.copies}) of {g.n}")
        full = fn((g.copies * g.n, *shape[1:]), generator=g.generator, device=device, dtype=dtype)
        return full[g.index(full.device)] if g.copies > 1 else full[g.lo:g.hi]
    return fn(tuple(shape), generator=g, device=device, dtype=dtype)


def uniform(g, *shape, device=None, dtype=None) -> torch.Tensor:
    """U[0, 1) of ``shape`` (its first dimension the batch) from a torch.Generator or a Rows."""
    return _draw(torch.rand, g, shape, device, dtype)


def normal(g, *shape, device=None, dtype=None) -> torch.Tensor:
    """N(0, 1) of ``shape`` (its first dimension the batch) from a torch.Generator or a Rows."""
    return _draw(torch.randn, g, shape, device, dtype)
