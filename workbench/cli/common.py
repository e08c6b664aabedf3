"""Options and output helpers shared by the CLI commands."""

from __future__ import annotations

import typer
from rich.console import Console

# Width: rich asks the terminal on every print (so a resized window is followed), COLUMNS
# overrides it, and 80 columns is the default when there is no terminal to ask. Tables are laid
# out to fit it (`workbench runs` drops columns rather than split a run id or a model name).
# Whether stderr is a terminal decides how a run shows progress (`workbench.cli.progress`).
console = Console()
err_console = Console(stderr=True)

DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto")
DtypeOpt = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16")
