"""Issue 27: the head page is the first page opened on a freshly started `workbench app`.

The pages used to import heavy modules lazily from several server threads at once; the first head
page then failed with "partially initialized module 'pandas'" (the live pattern's job thread was
importing transformer_lens, which imports pandas, while the page thread drew plotly figures, which
use pandas when it is in ``sys.modules``). The in-process browser tests never saw it: their process
had imported everything already. This one starts the real command in a new process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from app_helpers import text_of, wait_for

pytestmark = pytest.mark.slow


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(results: Path) -> tuple[subprocess.Popen, str, Path]:
    port = _free_port()
    log = results.parent / f"app-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench", "app", "--results", str(results), "--port", str(port), "--device", "cpu"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(base + "/_dash-layout", timeout=5):
                return proc, base, log
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise AssertionError(f"the dashboard did not start:\n{log.read_text()}")


def _errors(d) -> list[str]:
    return d.execute_script(
        "return Array.from(document.querySelectorAll('.notice-error, #progress-error')).map(e => e.innerText);"
    )


def _pattern_finished(d) -> bool:
    """The live pattern (started by itself on open) is drawn, or its job said why not."""
    return bool(d.execute_script("return !!document.querySelector('#pattern-graph .main-svg, #pattern-output .notice');"))


def _reader(base: str, key: dict, stop: threading.Event, failures: list[str]) -> None:
    """Asks for the head page's body (the request its page sends) again and again, as more readers
    opening the dashboard at the same time would; keeps every failure it sees."""
    payload = {
        "output": "page-body.children",
        "outputs": {"id": "page-body", "property": "children"},
        "inputs": [{"id": "page-key", "property": "data", "value": key}, {"id": "store-sig", "property": "data", "value": None}],
        "changedPropIds": ["page-key.data"],
        "state": [],
    }
    data = json.dumps(payload).encode()
    while not stop.is_set():
        req = urllib.request.Request(base + "/_dash-update-component", data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                text = resp.read().decode()
        except OSError as exc:
            failures.append(f"request failed: {exc}")
            return
        if "Something went wrong" in text or "section-scores" not in text:
            failures.append(text[:600])


def test_head_page_opened_first_on_a_fresh_server(synthetic_results, browser):
    results, run_a, _ = synthetic_results
    d = browser
    proc, base, log = _start(results)
    stop, failures = threading.Event(), []
    key = {"view": "head", "run": run_a, "head": "L1H2", "query": {}}
    readers = [threading.Thread(target=_reader, args=(base, key, stop, failures), daemon=True) for _ in range(2)]
    try:
        d.get(f"{base}/run/{run_a}/head/L1H2")  # the first page of this server
        for t in readers:
            t.start()
        found = lambda x: _errors(x) or x.find_elements("css selector", "#section-scores #table-head-scores")
        wait_for(d, found, 90, "the head's scores section (or an error box)")
        errors = _errors(d)
        # the live pattern starts by itself (its job loads the model libraries): wait until it is done
        wait_for(d, _pattern_finished, 120, "the live pattern")
        stop.set()
        for t in readers:
            t.join(timeout=60)
        errors += _errors(d)
        assert errors == [], f"error boxes on the first open: {errors}\nserver log:\n{log.read_text()[-4000:]}"
        assert failures == [], f"{len(failures)} failed reads of the head page, the first:\n{failures[0]}"
        for section in ("#section-role", "#section-scores", "#section-temporal", "#section-evidence"):
            assert d.find_elements("css selector", section), f"{section} missing; page:\n{text_of(d, 'body')[:2000]}"
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)
    assert "partially initialized" not in log.read_text()
