"""Screenshots of the HTML report and the dashboard for the README, from a real atlas run.

    python tools/screenshots.py [--model organism-4l] [--out docs/img]

Runs a small atlas of the model (all four families) through `workbench.Atlas`, writes its report,
serves the dashboard on a free local port, and saves the top of each page (the findings) with
headless Chromium (Debian's `chromium` + `chromium-driver`, as the browser tests use).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _driver(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _wait_for_text(driver, css: str, text: str, timeout: float = 90.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = driver.execute_script("var e = document.querySelector(arguments[0]); return e ? e.textContent : '';", css)
        if text in (found or ""):
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {text!r} in {css}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="organism-4l")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "img")
    ap.add_argument("--n-prompts", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()

    from werkzeug.serving import make_server

    from workbench.app import create_app
    from workbench.atlas import Atlas
    from workbench.report.html import write_report
    from workbench.store import Store

    root = Path(tempfile.mkdtemp(prefix="wb-shots-"))
    result = Atlas(args.model, store=root, n_prompts=args.n_prompts, max_tokens=args.max_tokens).run()
    with Store.open(root) as store:
        html_path, _ = write_report(store, result.run_id)
    args.out.mkdir(parents=True, exist_ok=True)
    driver = _driver(1280, 1400)
    try:
        driver.get(html_path.resolve().as_uri())
        _wait_for_text(driver, "#role-table", "L")
        time.sleep(1.0)
        driver.save_screenshot(str(args.out / "report.png"))
        app = create_app(root, device="cpu")
        server = make_server("127.0.0.1", 0, app.server, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            driver.get(f"http://127.0.0.1:{server.server_port}/run/{result.run_id}")
            _wait_for_text(driver, "#table-role-table", "L")
            time.sleep(2.0)  # let plotly draw the heatmaps below the findings
            driver.save_screenshot(str(args.out / "dashboard.png"))
        finally:
            server.shutdown()
            app.workbench.jobs.shutdown()
    finally:
        driver.quit()
    print(f"wrote {args.out / 'report.png'} and {args.out / 'dashboard.png'} (run {result.run_id} in {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
