"""A screenshot of TensorBoard on a grid's runs: start TensorBoard headless on localhost, open one of its
dashboards in headless Chromium, wait for the charts, save a screenshot.

    pip install -e ".[screenshot]"; apt-get install chromium    # Debian's Chromium, not a download
    featdrop grid --runs-dir runs/tb overlay=shapes views=expert,viewmaker tracker=tensorboard ...
    python scripts/screenshot_tensorboard.py runs/tb --out docs/tensorboard_scalars.png
    python scripts/screenshot_tensorboard.py runs/tb --dashboard hparams --out docs/tensorboard_hparams.png
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from screenshot_views import CHROMIUM_FLAGS, free_port, step

READY = {"scalars": "tf-scalar-card, .scalar-card, canvas", "hparams": "tf-hparams-main, table, vaadin-grid",
         "images": "img", "projector": "canvas"}


def start_tensorboard(logdir: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1", "--port",
           str(port), "--reload_interval", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("TensorBoard did not start within 60 s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("logdir", help="a run or a grid directory (its cells' tensorboard/ folders)")
    ap.add_argument("--dashboard", choices=sorted(READY), default="scalars")
    ap.add_argument("--out", default=None, help="default: docs/tensorboard_<dashboard>.png")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(args.out or Path(__file__).resolve().parents[1] / "docs" / f"tensorboard_{args.dashboard}.png")
    port = free_port()
    step(f"start TensorBoard on {args.logdir}")
    board = start_tensorboard(args.logdir, port)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            try:
                step(f"open the {args.dashboard} dashboard")
                page.goto(f"http://127.0.0.1:{port}/#{args.dashboard}")
                page.wait_for_selector(READY[args.dashboard], timeout=120_000)
                page.wait_for_timeout(6000)  # the charts load their data after the page
                page.screenshot(path=str(out))
            except Exception:
                page.screenshot(path=str(out.with_suffix(".failed.png")))
                raise
            finally:
                browser.close()
        print(f"wrote {out}")
    finally:
        board.terminate()
        board.wait(timeout=30)


if __name__ == "__main__":
    main()
