"""The SQLite file behind the results store.

One file, ``<results>/workbench.sqlite``, in WAL mode so that readers (the dashboard, `workbench
runs`) read while one writer writes. The schema is versioned with ``PRAGMA user_version``.

Tables
------
runs         one row per run: model spec, kind, path, revision and fingerprint, geometry,
             families (JSON list), config (JSON), versions (JSON), status, times, pid/host/heartbeat.
parts        the resumable units of every family of a run, 'pending' or 'done'.
families     per family of a run: 'pending' or 'done', primary and evidence metric, summary,
             members (JSON), written once all parts are done.
metrics      metric descriptions per (run, family, metric).
head_scores  the tidy table: (run_id, family, metric, layer, head) -> score (NULL = NaN).
artefacts    index of the files beside the run: (run_id, family, part, name) -> kind, path
             (relative to the run folder), dtype, shape, bytes. ``part`` is '' for merged artefacts.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from workbench.errors import WorkbenchError

SCHEMA_VERSION = 1
DB_NAME = "workbench.sqlite"
BUSY_TIMEOUT_MS = 30_000

RUN_STATUSES = ("running", "interrupted", "complete", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id         TEXT PRIMARY KEY,
    model          TEXT NOT NULL,
    model_kind     TEXT,
    model_path     TEXT,
    model_revision TEXT,
    model_hash     TEXT,
    n_layers       INTEGER,
    n_heads        INTEGER,
    geometry       TEXT,
    families       TEXT NOT NULL,
    config         TEXT NOT NULL,
    versions       TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('running', 'interrupted', 'complete', 'failed')),
    created_at     REAL NOT NULL,
    started_at     REAL,
    finished_at    REAL,
    heartbeat_at   REAL,
    pid            INTEGER,
    host           TEXT,
    error          TEXT,
    resumes        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS parts (
    run_id      TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    family      TEXT NOT NULL,
    part        TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'done')),
    finished_at REAL,
    seconds     REAL,
    PRIMARY KEY (run_id, family, part)
);
CREATE TABLE IF NOT EXISTS families (
    run_id          TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    family          TEXT NOT NULL,
    idx             INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'done')),
    description     TEXT,
    primary_metric  TEXT,
    evidence_metric TEXT,
    options         TEXT,
    summary         TEXT,
    members         TEXT,
    finished_at     REAL,
    PRIMARY KEY (run_id, family)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id      TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    family      TEXT NOT NULL,
    metric      TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    description TEXT,
    PRIMARY KEY (run_id, family, metric)
);
CREATE TABLE IF NOT EXISTS head_scores (
    run_id TEXT NOT NULL,
    family TEXT NOT NULL,
    metric TEXT NOT NULL,
    layer  INTEGER NOT NULL,
    head   INTEGER NOT NULL,
    score  REAL,
    PRIMARY KEY (run_id, family, metric, layer, head)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artefacts (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    family TEXT NOT NULL,
    part   TEXT NOT NULL DEFAULT '',
    name   TEXT NOT NULL,
    kind   TEXT NOT NULL CHECK (kind IN ('array', 'table', 'json')),
    path   TEXT NOT NULL,
    dtype  TEXT,
    shape  TEXT,
    bytes  INTEGER,
    PRIMARY KEY (run_id, family, part, name)
);
CREATE INDEX IF NOT EXISTS runs_by_model ON runs (model, created_at);
"""


class StoreError(WorkbenchError):
    """The results store cannot be opened, read or written."""


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open the store's database; with ``create`` make it (WAL, schema) when missing.

    Connections are in autocommit mode; writes go through `transaction`.
    """
    if not create and not path.is_file():
        raise StoreError(
            f"no results store at {str(path.parent)!r}", "run `workbench atlas MODEL --results FOLDER` first, or pass --results"
        )
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        _configure(conn)
        if create:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"could not switch {str(path)!r} to WAL mode (got {mode})", "put the results folder on a local disk"
                )
            conn.execute("PRAGMA synchronous = FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"results store {str(path)!r} has schema version {version}; this workbench reads up to {SCHEMA_VERSION}",
                "upgrade attention-workbench, or use another --results folder",
            )
        if version < SCHEMA_VERSION:
            if not create:
                # An older store (or one whose creator died before writing the schema): upgrade on write only.
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "runs" not in tables:
                    raise StoreError(f"{str(path)!r} is not a workbench results store (no runs table)")
            else:
                with transaction(conn):
                    for statement in _statements(SCHEMA):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return conn
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"cannot open results store {str(path)!r}: {exc}", "check the folder, or use another --results folder"
        ) from exc


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A reader's connection. Falls back to ``immutable`` when the folder is read-only and no
    writer is active (WAL readers need to create the shared-memory file otherwise)."""
    try:
        return connect(path, create=False)
    except StoreError as first:
        if not isinstance(first.__cause__, sqlite3.OperationalError):
            raise
        try:
            conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("SELECT count(*) FROM runs").fetchone()
            return conn
        except sqlite3.DatabaseError:
            raise first from None


def _statements(script: str) -> Iterator[str]:
    for chunk in script.split(";"):
        if chunk.strip():
            yield chunk.strip()


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: all or nothing, and the write lock is taken up front."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
