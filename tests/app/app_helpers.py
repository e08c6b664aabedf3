"""Helpers for the dashboard tests: synthetic runs written through the store API, the app served
from a thread, and a headless Chromium driven by Selenium (the system chromium + chromedriver)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]


# -- synthetic runs ----------------------------------------------------------------------------------


def write_run(
    results: Path,
    model_dir: Path,
    n_layers: int,
    n_heads: int,
    *,
    seed: int = 0,
    max_tokens: int = 64,
    prompts: list[str] | None = None,
    temporal: bool = True,
    run_id: str | None = None,
) -> str:
    """A complete run with a sinks-like and (optionally) a temporal-like family, written through
    `RunWriter` exactly as the atlas runner writes one. Returns the run id."""
    from workbench.analysis.scores import HeadScores
    from workbench.families.base import FamilyResult, PartResult
    from workbench.store import Store
    from workbench.store.runs import RunWriter, model_fingerprint, new_run_id

    rng = np.random.default_rng(seed)
    model = {
        "spec": str(model_dir),
        "kind": "folder",
        "path": str(model_dir),
        "hash": model_fingerprint(model_dir),
        "n_layers": n_layers,
        "n_heads": n_heads,
        "geometry": {},
    }
    fams = [
        {
            "name": "sinks",
            "description": "synthetic sinks",
            "primary_metric": "first_token_mass",
            "evidence_metric": "removal_loss_delta",
            "parts": ["all"],
        }
    ]
    if temporal:
        fams.append(
            {
                "name": "temporal",
                "description": "synthetic temporal",
                "primary_metric": "q_sim_prune",
                "evidence_metric": None,
                "parts": ["all"],
            }
        )
    config = {"model": str(model_dir), "max_tokens": max_tokens, "seed": seed, "dtype": "float32", "device": "cpu"}
    rid = run_id or new_run_id(str(model_dir)) + f"-s{seed}"
    with Store.open(results, write=True) as store:
        writer = RunWriter.create(store, rid, model, fams, config, {"workbench": "test"})
        try:
            if prompts is not None:
                from workbench.store.artefacts import atomic_write_text, dumps

                atomic_write_text(writer.run_dir / "prompts.json", dumps(prompts))
            sinks = HeadScores("sinks", n_layers, n_heads)
            sinks.add("first_token_mass", rng.random((n_layers, n_heads)), "mean attention on the first token")
            delta = np.full((n_layers, n_heads), np.nan)
            delta[0, :2] = rng.normal(size=2)
            sinks.add("removal_loss_delta", delta, "LM loss change without the first token")
            tokens = [{"prompt": 0, "layer": 0, "head": 1, "position": 3, "token": "w7", "mean_received": 0.42, "kind": "hidden"}]
            arts = {"sink_tokens": tokens, "removal_check": {"top_heads": ["L0H1", "L0H0"], "top_delta": 0.5, "base_loss": 3.0}}
            part = PartResult(sinks, arts, {"n_prompts": 2})
            writer.commit_part("sinks", "all", part, 0.1)
            writer.commit_family("sinks", FamilyResult(sinks, arts, {"n_prompts": 2, "sink_rate_percent": 12.5}, [(0, 1)]))
            if temporal:
                temp = HeadScores("temporal", n_layers, n_heads)
                temp.add("q_sim_prune", rng.random((n_layers, n_heads)), "q similarity")
                classes = [
                    {
                        "input": "text",
                        "layer": layer,
                        "head": h,
                        "label": ["re-access", "sequential"][(layer + h) % 2],
                        "confidence": 0.8,
                        "offset": 1,
                        "period": None,
                    }
                    for layer in range(n_layers)
                    for h in range(n_heads)
                ]
                profiles = rng.random((n_layers, n_heads, 16))
                tarts = {"temporal_classes": classes, "offset_profiles": profiles}
                writer.commit_part("temporal", "all", PartResult(temp, tarts, {}), 0.1)
                writer.commit_family("temporal", FamilyResult(temp, tarts, {}, []))
            writer.finish()
        except BaseException:
            writer.mark_failed("test helper failed")
            raise
    return rid


# -- serving the app -----------------------------------------------------------------------------------


@contextlib.contextmanager
def running_app(results: Path, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """The dashboard on a free localhost port in a background thread: yields (base url, app)."""
    from werkzeug.serving import make_server

    from workbench.app import create_app

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("refresh_ms", 1000)
    app = create_app(results, **kwargs)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="wb-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        thread.join(timeout=10)
        app.workbench.jobs.shutdown()


# -- the browser -----------------------------------------------------------------------------------------


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: run `make browser` (apt-get install chromium chromium-driver)"
    return None


def make_driver(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


def wait_for(driver: Any, condition: Any, timeout: float = 30.0, what: str = "") -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Dash re-renders parts of the page: an element found a moment ago may be gone (stale).
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(condition)
    except Exception as exc:
        body = driver.find_element("tag name", "body").text[:3000]
        raise AssertionError(f"timed out waiting for {what or condition}; page text:\n{body}") from exc


def text_present(driver: Any, css: str, text: str) -> Any:
    def check(d: Any) -> Any:
        els = d.find_elements("css selector", css)
        return els[0] if els and text in els[0].text else False

    return check


def element(css: str) -> Any:
    def check(d: Any) -> Any:
        els = d.find_elements("css selector", css)
        return els[0] if els and els[0].is_displayed() else False

    return check


def figure_drawn(graph_id: str) -> Any:
    """The plotly figure inside the dcc.Graph with this id has been drawn."""
    script = (
        f"var g = document.querySelector('#{graph_id} .js-plotly-plot');"
        "return !!(g && g._fullLayout && g.querySelector('.main-svg'));"
    )
    return lambda d: d.execute_script(script)


def text_of(driver: Any, css: str) -> str:
    """The visible text of an element, read in one script call (Dash may redraw it at any moment,
    which makes a held element reference stale)."""
    return driver.execute_script("var e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css)


def click_heatmap_cell(driver: Any, graph_css: str, x: int, y: int, attempts: int = 3) -> None:
    """A real mouse click on the heatmap cell (x = head, y = layer) of the graph matched by ``graph_css``
    (retried when the page redraws the graph under the pointer)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for i in range(attempts):
        try:
            _click_cell(driver, graph_css, x, y)
            return
        except StaleElementReferenceException:
            if i == attempts - 1:
                raise
            time.sleep(0.5)


def _click_cell(driver: Any, graph_css: str, x: int, y: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    pos = driver.execute_script(
        """
        var g = document.querySelector(arguments[0] + ' .js-plotly-plot');
        var fl = g._fullLayout, drag = g.querySelector('.nsewdrag'), box = drag.getBoundingClientRect();
        var px = fl.xaxis.l2p(arguments[1]) + fl.xaxis._offset, py = fl.yaxis.l2p(arguments[2]) + fl.yaxis._offset;
        var gb = g.getBoundingClientRect();
        return {dx: gb.left + px - (box.left + box.width / 2), dy: gb.top + py - (box.top + box.height / 2)};
        """,
        graph_css,
        x,
        y,
    )
    drag = driver.find_element("css selector", f"{graph_css} .nsewdrag")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", drag)
    ActionChains(driver).move_to_element_with_offset(drag, int(pos["dx"]), int(pos["dy"])).pause(0.3).click().perform()


def screenshot(driver: Any, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 5000, f"screenshot {path} is suspiciously small"
    return path


def screenshot_folder(default: Path) -> Path:
    env = os.environ.get("WB_SCREENSHOT_DIR")
    return Path(env) if env else default


def fresh_profile() -> Path:
    return Path(tempfile.mkdtemp(prefix="wb-chromium-"))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
