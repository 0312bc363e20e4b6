"""Check views.ipynb in a real JupyterLab: start JupyterLab headless on localhost, open the notebook
in headless Chromium, run all cells, wait for the widgets and the figure, save a screenshot.

    pip install -e ".[screenshot]"; apt-get install chromium    # Debian's Chromium, not a download
    python scripts/screenshot_views.py --run-dir runs/quick-shapes-viewmaker --out docs/views_jupyterlab.png

The notebook is opened as a copy with ``run_dir`` (and ``index``) injected the way papermill does.
"""
from __future__ import annotations

import argparse
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, token: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}", "--allow-root",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("JupyterLab did not start within 60 s")


def parameterized_copy(run_dir: str | None, index: int) -> Path:
    import nbformat
    from papermill.parameterize import parameterize_notebook

    nb = nbformat.read(ROOT / "notebooks" / "views.ipynb", as_version=4)
    nb = parameterize_notebook(nb, {"run_dir": run_dir, "index": index, "n_views": 4})
    out = ROOT / "docs" / "_views_screenshot.ipynb"
    nbformat.write(nb, out)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run-dir", default=None, help="a trained run; default: the notebook trains a demo run")
    ap.add_argument("--index", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "views_jupyterlab.png"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for all cells")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    nb = parameterized_copy(args.run_dir, args.index)
    port, token = free_port(), secrets.token_hex(16)
    lab = start_lab(port, token)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{nb.relative_to(ROOT)}?token={token}")
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            # the widget box (dropdown, slider, button) and the live figure inside its output
            page.wait_for_selector(".widget-dropdown", timeout=args.timeout * 1000)
            page.wait_for_selector(".jupyter-widgets-output-area img", timeout=args.timeout * 1000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=args.timeout * 1000)
            page.locator(".widget-dropdown").first.scroll_into_view_if_needed()
            page.wait_for_timeout(1500)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            n_imgs = page.locator(".jp-OutputArea-output img").count()
            browser.close()
        print(f"wrote {args.out} ({n_imgs} figures rendered)")
    finally:
        lab.terminate()
        lab.wait(timeout=30)
        nb.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
