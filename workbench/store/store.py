"""`Store`: the results folder, opened for reading (any number of readers) or writing.

Readers never block the writer (SQLite WAL); every multi-query read runs in one read
transaction, so it sees one consistent snapshot: a family's scores appear all at once, when
its last part is merged, and a finished part never disappears.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.analysis.scores import HeadScores
from workbench.errors import WorkbenchError
from workbench.store import artefacts as art
from workbench.store.db import DB_NAME, StoreError, connect, connect_readonly, transaction
from workbench.store.liveness import effective_status

DEFAULT_RESULTS = Path("wb-results")
RESULTS_ENV = "WORKBENCH_RESULTS"


def default_results() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


@dataclass
class RunInfo:
    run_id: str
    model: str
    model_kind: str | None
    model_path: str | None
    model_revision: str | None
    model_hash: str | None
    n_layers: int | None
    n_heads: int | None
    geometry: dict[str, Any]
    families: list[str]
    config: dict[str, Any]
    versions: dict[str, Any]
    status: str  # effective: a 'running' run whose writer died reads 'interrupted'
    stored_status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    pid: int | None
    host: str | None
    error: str | None
    resumes: int
    parts_done: int = 0
    parts_total: int = 0

    @property
    def incomplete(self) -> bool:
        return self.status != "complete"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FamilyInfo:
    family: str
    idx: int
    status: str
    description: str
    primary_metric: str | None
    evidence_metric: str | None
    options: dict[str, Any]
    summary: dict[str, Any]
    members: list[tuple[int, int]]
    finished_at: float | None
    parts: list[dict[str, Any]] = field(default_factory=list)


def _loads(text: str | None, default: Any) -> Any:
    return default if text in (None, "") else json.loads(text)


class Store:
    """A results folder: ``workbench.sqlite`` plus ``runs/<run_id>/`` folders."""

    def __init__(self, root: Path, conn: sqlite3.Connection, writable: bool) -> None:
        self.root = root
        self.conn = conn
        self.writable = writable
        # One connection per Store; the lock lets threads (a web server) share a Store safely.
        self._lock = threading.RLock()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path | None = None, *, write: bool = False) -> Store:
        """Open a results folder. ``write=True`` creates it (and the database) and checks it is
        writable; readers need an existing store."""
        folder = Path(root) if root is not None else default_results()
        folder = folder.expanduser()
        if write:
            ensure_writable(folder)
            return cls(folder, connect(folder / DB_NAME, create=True), True)
        if not folder.is_dir():
            raise StoreError(
                f"results folder {str(folder)!r} does not exist", "run `workbench atlas MODEL` first, or pass --results FOLDER"
            )
        return cls(folder, connect_readonly(folder / DB_NAME), False)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same committed state."""
        with self._lock:
            if self.conn.in_transaction:
                yield self.conn
                return
            self.conn.execute("BEGIN DEFERRED")
            try:
                yield self.conn
            finally:
                self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT)."""
        if not self.writable:
            raise StoreError("this store was opened for reading")
        with self._lock, transaction(self.conn) as conn:
            yield conn

    # -- runs ----------------------------------------------------------------------------------

    def _run_from_row(self, row: sqlite3.Row | tuple, cols: list[str], now: float) -> RunInfo:
        d = dict(zip(cols, row))
        info = RunInfo(
            run_id=d["run_id"],
            model=d["model"],
            model_kind=d["model_kind"],
            model_path=d["model_path"],
            model_revision=d["model_revision"],
            model_hash=d["model_hash"],
            n_layers=d["n_layers"],
            n_heads=d["n_heads"],
            geometry=_loads(d["geometry"], {}),
            families=_loads(d["families"], []),
            config=_loads(d["config"], {}),
            versions=_loads(d["versions"], {}),
            status=d["status"],
            stored_status=d["status"],
            created_at=d["created_at"],
            started_at=d["started_at"],
            finished_at=d["finished_at"],
            heartbeat_at=d["heartbeat_at"],
            pid=d["pid"],
            host=d["host"],
            error=d["error"],
            resumes=d["resumes"],
            parts_done=d.get("parts_done") or 0,
            parts_total=d.get("parts_total") or 0,
        )
        info.status = effective_status(info, now)
        return info

    _RUNS_SQL = """
        SELECT r.*,
               (SELECT count(*) FROM parts p WHERE p.run_id = r.run_id AND p.status = 'done') AS parts_done,
               (SELECT count(*) FROM parts p WHERE p.run_id = r.run_id) AS parts_total
        FROM runs r
    """

    def runs(self, model: str | None = None, status: str | None = None) -> list[RunInfo]:
        """Every run, newest first (optionally one model's, or one effective status)."""
        with self.snapshot() as c:
            cur = c.execute(
                self._RUNS_SQL + (" WHERE r.model = ?" if model else "") + " ORDER BY r.created_at DESC, r.run_id DESC",
                (model,) if model else (),
            )
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
        now = time.time()
        out = [self._run_from_row(r, cols, now) for r in rows]
        return [r for r in out if status is None or r.status == status]

    def run(self, ref: str) -> RunInfo:
        """A run by id, unique id prefix, or ``latest``."""
        runs = self.runs()
        if not runs:
            raise WorkbenchError(f"no runs in {str(self.root)!r}", "run `workbench atlas MODEL` first, or pass --results")
        if ref in ("latest", "last"):
            return runs[0]
        exact = [r for r in runs if r.run_id == ref]
        if exact:
            return exact[0]
        matches = [r for r in runs if r.run_id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        recent = ", ".join(r.run_id for r in runs[:5])
        if matches:
            raise WorkbenchError(
                f"run id prefix {ref!r} matches {len(matches)} runs", f"give more of the id; recent runs: {recent}"
            )
        raise WorkbenchError(f"no run {ref!r} in {str(self.root)!r}", f"list runs with `workbench runs`; recent: {recent}")

    # -- families, parts, scores ----------------------------------------------------------------

    def families(self, run_id: str) -> list[FamilyInfo]:
        with self.snapshot() as c:
            fams = c.execute(
                "SELECT family, idx, status, description, primary_metric, evidence_metric, options, summary, members, finished_at "
                "FROM families WHERE run_id = ? ORDER BY idx",
                (run_id,),
            ).fetchall()
            parts = c.execute(
                "SELECT family, part, idx, status, finished_at, seconds FROM parts WHERE run_id = ? ORDER BY family, idx",
                (run_id,),
            ).fetchall()
        out = []
        for f in fams:
            info = FamilyInfo(
                family=f[0],
                idx=f[1],
                status=f[2],
                description=f[3] or "",
                primary_metric=f[4],
                evidence_metric=f[5],
                options=_loads(f[6], {}),
                summary=_loads(f[7], {}),
                members=[tuple(m) for m in _loads(f[8], [])],
                finished_at=f[9],
            )
            info.parts = [
                {"part": p[1], "idx": p[2], "status": p[3], "finished_at": p[4], "seconds": p[5]} for p in parts if p[0] == f[0]
            ]
            out.append(info)
        return out

    def scores(self, run_id: str, family: str | None = None) -> dict[str, HeadScores]:
        """family -> HeadScores, read from the head_scores table (NULL reads as NaN)."""
        with self.snapshot() as c:
            run = c.execute("SELECT n_layers, n_heads FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if run is None:
                raise WorkbenchError(f"no run {run_id!r} in {str(self.root)!r}")
            where, args = ("AND family = ?", (run_id, family)) if family else ("", (run_id,))
            metrics = c.execute(
                f"SELECT family, metric, description FROM metrics WHERE run_id = ? {where} ORDER BY family, idx", args
            ).fetchall()
            rows = c.execute(
                f"SELECT family, metric, layer, head, score FROM head_scores WHERE run_id = ? {where}", args
            ).fetchall()
        n_layers, n_heads = run
        arrays: dict[tuple[str, str], np.ndarray] = {}
        for fam, metric, _ in metrics:
            arrays[(fam, metric)] = np.full((n_layers, n_heads), np.nan)
        for fam, metric, layer, head, score in rows:
            arr = arrays.setdefault((fam, metric), np.full((n_layers, n_heads), np.nan))
            arr[layer, head] = np.nan if score is None else score
        out: dict[str, HeadScores] = {}
        descriptions = {(f, m): d for f, m, d in metrics}
        for (fam, metric), arr in arrays.items():
            hs = out.setdefault(fam, HeadScores(fam, n_layers, n_heads))
            hs.add(metric, arr, descriptions.get((fam, metric)) or "")
        return out

    def score_rows(self, run_id: str) -> list[tuple[str, str, int, int, float]]:
        """The tidy table of a run: (family, metric, layer, head, score), NaN for NULL."""
        with self.snapshot() as c:
            rows = c.execute(
                "SELECT h.family, h.metric, h.layer, h.head, h.score FROM head_scores h "
                "LEFT JOIN families f ON f.run_id = h.run_id AND f.family = h.family "
                "LEFT JOIN metrics m ON m.run_id = h.run_id AND m.family = h.family AND m.metric = h.metric "
                "WHERE h.run_id = ? ORDER BY f.idx, m.idx, h.layer, h.head",
                (run_id,),
            ).fetchall()
        return [(f, m, layer, head, float("nan") if s is None else float(s)) for f, m, layer, head, s in rows]

    def artefact_index(self, run_id: str, family: str | None = None, part: str = "") -> list[dict[str, Any]]:
        with self.snapshot() as c:
            where, args = ("AND family = ?", (run_id, part, family)) if family else ("", (run_id, part))
            rows = c.execute(
                f"SELECT family, part, name, kind, path, dtype, shape, bytes FROM artefacts WHERE run_id = ? AND part = ? {where} "
                "ORDER BY family, rowid",
                args,
            ).fetchall()
        return [
            {
                "family": r[0],
                "part": r[1],
                "name": r[2],
                "kind": r[3],
                "path": r[4],
                "dtype": r[5],
                "shape": _loads(r[6], None),
                "bytes": r[7],
            }
            for r in rows
        ]

    def artefacts(self, run_id: str, family: str) -> dict[str, Any]:
        """The merged artefacts of a family, loaded: name -> array / table / JSON."""
        run_dir = self.run_dir(run_id)
        return {a["name"]: art.read_artefact(run_dir, a["kind"], a["path"]) for a in self.artefact_index(run_id, family)}


def ensure_writable(folder: Path) -> None:
    """Create the results folder if needed and prove it is writable by writing a file there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise StoreError(f"results folder {str(folder)!r} exists and is not a folder", "choose another --results path") from exc
    except OSError as exc:
        raise StoreError(
            f"results folder {str(folder)!r} cannot be created: {exc.strerror}", "choose a writable --results folder"
        ) from exc
    probe = folder / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(
            f"results folder {str(folder)!r} is not writable: {exc.strerror}",
            "choose a writable --results folder, or fix its permissions",
        ) from exc
