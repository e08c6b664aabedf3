"""Family names -> implementations.

To add a family, add one line to ``FAMILIES`` (``"name": "module:Class"``; imported lazily).
Families outside the package (plugins, test doubles) are named in the environment variable
``WORKBENCH_FAMILY_PLUGINS`` as a comma-separated list of ``module:Class``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable

from workbench.errors import WorkbenchError
from workbench.families.base import Family

FAMILIES: dict[str, str] = {
    "sinks": "workbench.families.sinks:SinksFamily",
    "retrieval": "workbench.families.retrieval:RetrievalFamily",
    "safety": "workbench.families.safety:SafetyFamily",
    "temporal": "workbench.families.temporal:TemporalFamily",
}

PLUGIN_ENV = "WORKBENCH_FAMILY_PLUGINS"


class UnknownFamilyError(WorkbenchError):
    """A family name that is not registered."""


def _import(target: str) -> type[Family]:
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise WorkbenchError(f"cannot import family {target!r}: {exc}", "check the module:Class path") from exc
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        raise WorkbenchError(f"{target!r} is not a workbench Family subclass")
    return cls


def _plugins() -> dict[str, str]:
    out: dict[str, str] = {}
    for target in filter(None, (t.strip() for t in os.environ.get(PLUGIN_ENV, "").split(","))):
        out[_import(target).name] = target
    return out


def registered() -> dict[str, str]:
    """Every known family name -> ``module:Class``, built-ins first."""
    return {**FAMILIES, **_plugins()}


def family_names() -> list[str]:
    return list(registered())


def family_class(name: str) -> type[Family]:
    known = registered()
    if name not in known:
        raise UnknownFamilyError(f"unknown family {name!r}", f"choose from: {', '.join(known)} (or 'all')")
    return _import(known[name])


def resolve_families(spec: str | Iterable[str] | None) -> list[str]:
    """``"all"``/None -> every registered family; else the listed names, checked, in order, without repeats."""
    if spec is None:
        return family_names()
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    if not items or items == ["all"]:
        return family_names()
    known = registered()
    unknown = [s for s in items if s not in known]
    if unknown:
        raise UnknownFamilyError(
            f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(repr(u) for u in unknown)}",
            f"choose from: {', '.join(known)} (or 'all')",
        )
    out: list[str] = []
    for s in items:
        if s not in out:
            out.append(s)
    return out


def build_family(name: str, options: dict | None = None) -> Family:
    return family_class(name).from_options(options)
