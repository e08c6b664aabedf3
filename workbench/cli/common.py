"""Options and output helpers shared by the CLI commands."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto")
DtypeOpt = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16")
