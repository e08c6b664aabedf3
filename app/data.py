"""Reading the results store for the dashboard.

Every request opens the store read-only, reads one consistent snapshot and closes it again, so
the app never holds a lock and sees what a running `workbench atlas` has committed so far.
Anything that stops a read (no folder, no database, a damaged file) becomes `StoreUnavailable`
with a message and a hint that a page can show.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

#: The families whose prompts are plain text built by `workbench.families.prompts.family_prompts` from
#: the run's seed and options: the dashboard can rebuild exactly the prompt they scored a head on.
TEXT_FAMILIES = ("sinks", "temporal")


class StoreUnavailable(Exception):
    """The results store cannot be read; ``message`` and ``hint`` are for the page."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@contextlib.contextmanager
def reading(root: Path) -> Iterator[Any]:
    """``with reading(results) as store:``; read errors become `StoreUnavailable`."""
    from workbench.store import Store

    try:
        store = Store.open(root)
    except WorkbenchError as exc:
        raise StoreUnavailable(exc.message, exc.hint) from exc
    except (sqlite3.DatabaseError, OSError) as exc:
        raise StoreUnavailable(
            f"cannot open the results store in {str(root)!r}: {exc}", "check the folder, or start the app with --results FOLDER"
        ) from exc
    try:
        yield store
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailable(
            f"the results store in {str(root)!r} cannot be read: {exc}",
            "the database may be damaged; run `workbench atlas` into a new --results folder",
        ) from exc
    except OSError as exc:
        raise StoreUnavailable(
            f"a file of the results store in {str(root)!r} cannot be read: {exc}",
            "the run's files may be damaged or still being written; reload in a moment",
        ) from exc
    finally:
        with contextlib.suppress(Exception):
            store.close()


# -- runs ------------------------------------------------------------------------------------------


def run_rows(store: Any) -> list[dict[str, Any]]:
    import time

    rows = []
    for r in store.runs():
        took = (r.finished_at or r.heartbeat_at or r.created_at) - (r.started_at or r.created_at)
        rows.append(
            {
                "run": r.run_id,
                "href": f"/run/{r.run_id}",
                "model": r.model,
                "status": r.status,
                "parts": f"{r.parts_done}/{r.parts_total}",
                "families": ", ".join(r.families),
                "heads": f"{r.n_layers} x {r.n_heads}" if r.n_layers else None,
                "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at)),
                "seconds": round(float(took), 1) if took is not None else None,
            }
        )
    return rows


def signature(store: Any) -> str:
    """What changes when the store's content changes (runs, their status and parts, finished
    families), not the writer's heartbeat: pages re-render only when this changes."""
    runs = [f"{r.run_id}:{r.status}:{r.parts_done}/{r.parts_total}" for r in store.runs()]
    with store.snapshot() as c:
        done = c.execute("SELECT count(*) FROM families WHERE status = 'done'").fetchone()[0]
    return f"{len(runs)}|{done}|" + "|".join(runs)


def current_signature(root: Path) -> str:
    try:
        with reading(root) as store:
            return signature(store)
    except StoreUnavailable as exc:
        return f"unavailable:{exc.message}"
    except Exception as exc:  # any failure is a state the page shows
        return f"error:{type(exc).__name__}:{exc}"


# -- scores ---------------------------------------------------------------------------------------


def grid(values: np.ndarray) -> list[list[float | None]]:
    """[layer][head] floats with None for NaN (what the report's heatmap builder takes)."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(values, dtype=np.float64)]


def rank_of(values: np.ndarray, layer: int, head: int) -> tuple[int | None, int]:
    """Rank of one head (1 = highest) among the heads with a finite value, and how many there are."""
    arr = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(arr)
    n = int(finite.sum())
    v = arr[layer, head]
    if not np.isfinite(v):
        return None, n
    return int((arr[finite] > v).sum()) + 1, n


def head_score_rows(store: Any, run_id: str, layer: int, head: int) -> list[dict[str, Any]]:
    """One row per (family, metric): this head's value, its rank and the metric's role."""
    fams = {f.family: f for f in store.families(run_id)}
    rows = []
    for family, hs in store.scores(run_id).items():
        info = fams.get(family)
        for metric, values in hs.metrics.items():
            rank, n = rank_of(values, layer, head)
            role = (
                "primary"
                if info and metric == info.primary_metric
                else "evidence"
                if info and metric == info.evidence_metric
                else ""
            )
            rows.append(
                {
                    "family": family,
                    "metric": metric,
                    "value": float(values[layer, head]),
                    "rank": f"{rank}/{n}" if rank is not None else "–",
                    "role": role,
                    "description": hs.descriptions.get(metric, ""),
                }
            )
    return rows


def family_artefacts(store: Any, run_id: str, family: str) -> tuple[dict[str, Any], str | None]:
    """A finished family's artefacts, or ({}, why) when its files cannot be read."""
    try:
        return store.artefacts(run_id, family), None
    except sqlite3.DatabaseError:
        raise
    except Exception as exc:  # a damaged artefact file must not take the page down
        return {}, f"the {family} artefacts of run {run_id} cannot be read ({type(exc).__name__}: {exc})"


def find_artefact(artefacts: dict[str, Any], name: str) -> Any:
    """An artefact by name, also when a multi-part family prefixed it (``<part>/<name>``)."""
    if name in artefacts:
        return artefacts[name]
    for key, value in artefacts.items():
        if key.endswith("/" + name):
            return value
    return None


def mentions(value: Any, label: str, path: str = "") -> list[str]:
    """Paths inside a JSON artefact where the head label occurs (as a string or in a list)."""
    found: list[str] = []
    if isinstance(value, str):
        if value == label:
            found.append(path or "(value)")
    elif isinstance(value, dict):
        for k, v in value.items():
            found += mentions(v, label, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        hits = [i for i, v in enumerate(value) if v == label]
        if hits:
            found.append(f"{path}[{hits[0]}]" if path else f"[{hits[0]}]")
        for i, v in enumerate(value):
            if isinstance(v, (dict, list)):
                found += mentions(v, label, f"{path}[{i}]")
    return found


def scalars(value: dict[str, Any]) -> dict[str, Any]:
    """The plain fields of a JSON artefact (numbers, short strings, short lists of those)."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        plain = isinstance(v, (int, float, str, bool)) or v is None
        short_list = isinstance(v, list) and len(v) <= 12 and all(isinstance(x, (int, float, str)) or x is None for x in v)
        if plain or short_list:
            out[k] = v
    return out


def run_prompts(store: Any, run_id: str) -> list[str]:
    """The texts of the run's prompt file, when it was started with --prompts."""
    import json

    path = store.run_dir(run_id) / "prompts.json"
    if not path.is_file():
        return []
    try:
        texts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [t for t in texts if isinstance(t, str)] if isinstance(texts, list) else []


def scored_prompts(store: Any, run_id: str, layer: int | None = None, head: int | None = None) -> list[dict[str, Any]]:
    """The text prompts the run's finished text families scored every head on, one entry per family
    (family, n, source: the data set as the family's summary names it), the family that claims
    (layer, head) first. The texts themselves are rebuilt live (`workbench.app.live.atlas_prompt`)."""
    out = []
    for fam in store.families(run_id):
        if fam.family not in TEXT_FAMILIES or fam.status != "done":
            continue
        summary = fam.summary or {}
        n = summary.get("n_prompts")
        if not isinstance(n, int) or n < 1:
            continue
        claims = layer is not None and [layer, head] in [list(m) for m in fam.members]
        out.append({"family": fam.family, "n": n, "source": str(summary.get("prompt_source") or ""), "claims": bool(claims)})
    out.sort(key=lambda r: not r["claims"])
    return out
