"""`workbench app`: the interactive dashboard over a results folder."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.cli.common import err_console


def dashboard(
    results: Path = typer.Option(None, "--results", "-r", help="results folder (default ./wb-results or $WORKBENCH_RESULTS)"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (default: this machine only)"),
    port: int = typer.Option(8050, "--port", "-p", min=1, max=65535, help="port to listen on"),
    device: str = typer.Option("auto", "--device", help="device for live views: cpu, cuda, cuda:N or auto"),
    export_dir: Path = typer.Option(None, "--export-dir", help="folder for exported views (default <results>/exports)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="do not log every request"),
) -> None:
    """Browse the head atlas and poke at the model live (a Dash app in your browser)."""
    from workbench.app.server import serve
    from workbench.store import default_results

    folder = results if results is not None else default_results()
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"[bold yellow]note:[/] listening on {host}: anyone who can reach it can run the model", highlight=False
        )
    err_console.print("starting the dashboard (loading the model libraries once, before the first page)...", highlight=False)

    def ready() -> None:
        err_console.print(
            f"Attention Workbench dashboard: http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}/ "
            f"(results: {folder}); Ctrl+C stops it",
            highlight=False,
        )

    serve(folder, host=host, port=port, device=device, export_dir=export_dir, quiet=quiet, on_ready=ready)
