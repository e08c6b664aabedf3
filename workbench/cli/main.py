"""Entry point of the `workbench` command.

User errors (`WorkbenchError`, bad options) print one clear message and exit non-zero;
a traceback is shown only with --debug.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from workbench.cli.app import dashboard
from workbench.cli.atlas import atlas
from workbench.cli.common import err_console
from workbench.cli.compare import compare
from workbench.cli.export import export
from workbench.cli.info import info
from workbench.cli.plan import plan
from workbench.cli.report import report
from workbench.cli.runs import runs
from workbench.errors import WorkbenchError

app = typer.Typer(
    name="workbench",
    help="Attention Workbench: find out what each attention head does.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show full tracebacks for errors")) -> None:
    """Attention Workbench: find out what each attention head does."""


app.command("info")(info)
app.command("atlas")(atlas)
app.command("runs")(runs)
app.command("report")(report)
app.command("compare")(compare)
app.command("export")(export)
app.command("plan")(plan)
app.command("app")(dashboard)
from workbench.cli.organisms import organisms_app  # noqa: E402

app.add_typer(organisms_app, name="organisms")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # Standalone mode lets typer print usage errors (exit 2) itself; our errors propagate.
        app(args=args, prog_name="workbench", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except WorkbenchError as exc:
        if debug:
            raise
        # Messages are plain text: escape them, or rich would eat "[ray]" in "pip install pkg[ray]".
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            err_console.print(f"  [bold]fix:[/] {escape(exc.hint)}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


def run() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
