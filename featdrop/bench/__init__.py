"""Benchmarks that print figures (no timed tests): overlay compositing (``overlays``) and training
throughput against the reference design (``train``)."""
