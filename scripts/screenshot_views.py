"""Check an interactive notebook (views.ipynb, maps.ipynb) in a real JupyterLab: start JupyterLab headless on
localhost, open the notebook in headless Chromium, run all cells, wait for the widgets and the figure, use
one control, save a screenshot.

    pip install -e ".[screenshot]"; apt-get install chromium    # Debian's Chromium, not a download
    python scripts/screenshot_views.py --run-dir runs/quick-shapes-viewmaker --out docs/views_jupyterlab.png
    python scripts/screenshot_views.py --notebook maps --run-dir RUN_A --run-dir RUN_B  # maps_jupyterlab.png

The notebook is opened as a copy with its parameters injected the way papermill does.
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


def step(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, token: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
           "--ServerApp.ip=127.0.0.1",
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


# per notebook: its parameters from the command line, the control that shows the widgets are live (clicked
# once before the screenshot), and the figures to wait for
NOTEBOOKS = {
    "views": dict(params=lambda dirs, index: {"run_dir": dirs[0] if dirs else None, "index": index,
                                              "n_views": 4},
                  control="button:has-text('resample noise')", figures=2),
    "maps": dict(params=lambda dirs, index: {"run_dirs": dirs or None, "label": "main",
                                             "select_x": [0.0, 0.3], "select_y": [0.0, 0.3]},
                 control="button:has-text('overlay')", figures=2),
}


def parameterized_copy(notebook: str, run_dirs: list[str], index: int) -> Path:
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(ROOT / "notebooks" / f"{notebook}.ipynb"))
    dirs = [str(Path(d).resolve()) for d in run_dirs]  # the kernel starts in the notebook's folder
    nb = parameterize_notebook(nb, NOTEBOOKS[notebook]["params"](dirs, index))
    out = ROOT / "notebooks" / f"_{notebook}_screenshot.ipynb"  # opened where users open the notebook
    nbformat.write(nb, out)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--notebook", choices=sorted(NOTEBOOKS), default="views")
    ap.add_argument("--run-dir", action="append", default=[],
                    help="a trained run (maps: give it once per map); default: views trains a demo run, maps "
                         "shows the first two runs with maps under runs/")
    ap.add_argument("--index", type=int, default=3)
    ap.add_argument("--out", default=None, help="default: docs/<notebook>_jupyterlab.png")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for all cells")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    nb = parameterized_copy(args.notebook, args.run_dir, args.index)
    spec = NOTEBOOKS[args.notebook]
    args.out = args.out or str(ROOT / "docs" / f"{args.notebook}_jupyterlab.png")
    port, token = free_port(), secrets.token_hex(16)
    step("start JupyterLab")
    lab = start_lab(port, token)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1560})
            wait_ms = args.timeout * 1000
            try:
                step("open the notebook")
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{nb.relative_to(ROOT)}?token={token}")
                page.wait_for_selector(".jp-Notebook", timeout=60_000)
                step("wait for the kernel")
                select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
                try:  # a fresh JupyterLab may ask which kernel to start
                    select.wait_for(timeout=5_000)
                    select.click()
                except Exception:
                    pass
                page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
                no_news = page.get_by_role("button", name="No", exact=True)
                if no_news.count():  # JupyterLab's "get notified about news?" toast
                    no_news.first.click()
                step("Run > Run All Cells")
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_text("Run All Cells", exact=True).click()
                step("wait for the widgets and the live figure")
                error = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] .ansi-red-fg"
                button = spec["control"]
                page.wait_for_selector(f"{button}, {error}", timeout=wait_ms)
                if page.locator(error).count():
                    raise RuntimeError("a cell failed: see the .failed.png screenshot")
                step("wait for the kernel to finish")
                page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=wait_ms)
                page.wait_for_function("document.querySelectorAll('.jp-OutputArea-output img').length >= "
                                       f"{spec['figures']}", timeout=wait_ms)
                step("use a control (a live widget redraws the figure)")
                page.locator(button).first.click()
                page.wait_for_timeout(4000)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.out)
                n_imgs = page.locator(".jp-OutputArea-output img").count()
            except Exception:
                page.screenshot(path=str(Path(args.out).with_suffix(".failed.png")))
                raise
            finally:
                browser.close()
        print(f"wrote {args.out} ({n_imgs} figures rendered)")
    finally:
        lab.terminate()
        lab.wait(timeout=30)
        nb.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
