"""Timing several ways of doing one step side by side, so that a drifting machine hurts each alike."""
from __future__ import annotations

import time


def side_by_side(fns: dict, batch: int, rounds: int, min_s: float, sync) -> tuple[dict, dict]:
    """Warm each of ``fns`` up (two calls, timed: compilation happens here), then time them in alternating
    blocks of at least ``min_s`` seconds, ``rounds`` times (ABCABC...), so a drifting machine hurts each
    alike. Returns (images/s per name, warm-up seconds per name)."""
    warm = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn()
        fn()
        sync()
        warm[name] = time.perf_counter() - t
    done = {name: [0, 0.0] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n, t = 0, time.perf_counter()
            while n < 1 or time.perf_counter() - t < min_s:
                fn()
                sync()
                n += 1
            done[name][0] += n
            done[name][1] += time.perf_counter() - t
    return {name: batch * n / s for name, (n, s) in done.items()}, warm
