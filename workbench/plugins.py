"""Plugins: packages that register models and datasets with the library without the library importing them.

A plugin is an entry point in the ``workbench.plugins`` group naming a function with no arguments;
the registries call every plugin once, on first use. The project's own model organisms register
their shipped models and probe sets this way (``workbench.organisms.plugin:register``), so the
batch path never imports the organisms' training code.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from workbench.errors import WorkbenchError

GROUP = "workbench.plugins"
_state = {"loaded": False}


def load_plugins() -> None:
    """Call every registered plugin once per process."""
    if _state["loaded"]:
        return
    _state["loaded"] = True
    for ep in entry_points(group=GROUP):
        try:
            ep.load()()
        except Exception as exc:
            _state["loaded"] = False
            raise WorkbenchError(
                f"plugin {ep.name!r} ({ep.value}) failed to register: {type(exc).__name__}: {exc}",
                "fix or uninstall the package providing it",
            ) from exc
