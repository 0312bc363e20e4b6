"""Figures: every function builds and returns a matplotlib figure; ``featdrop.rundir.save_figure`` is the one
place that writes them. ``plots``: per-run and comparison figures; ``gallery``: the overlay galleries."""
