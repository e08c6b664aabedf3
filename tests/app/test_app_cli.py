"""`workbench app`: options, localhost by default, a taken port is a readable error, and it serves."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

from workbench.cli.main import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_lists_the_options(capsys):
    assert main(["app", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--results", "--host", "--port", "--device", "--export-dir"):
        assert option in out


def test_defaults_bind_to_localhost(monkeypatch, tmp_path):
    seen = {}

    def fake_serve(results, host, port, device, export_dir, quiet, on_ready=None):
        seen.update(results=results, host=host, port=port, device=device)

    monkeypatch.setattr("workbench.app.server.serve", fake_serve)
    assert main(["app", "--results", str(tmp_path)]) == 0
    assert seen == {"results": tmp_path, "host": "127.0.0.1", "port": 8050, "device": "auto"}


def test_taken_port_is_a_readable_error(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["app", "--results", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port}" in err and "already in use" in err and "--port" in err and "Traceback" not in err


def test_the_command_serves_the_dashboard(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "app", "--results", str(tmp_path / "none"), "--port", str(port), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, page = time.time() + 60, None
        while time.time() < deadline and page is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    page = resp.read().decode()
            except OSError:
                assert proc.poll() is None, proc.communicate()[0]
                time.sleep(0.3)
        assert page is not None and "<title>Attention Workbench</title>" in page
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_dash-layout", timeout=5) as resp:
            layout = resp.read().decode()
        assert "results-path" in layout and "does not exist" in layout  # the store's state is in the page
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "http://localhost:" in out and "Traceback" not in out
