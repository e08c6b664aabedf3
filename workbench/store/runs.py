"""Run lifecycle: create, heartbeat, commit parts and families, finish, interrupt, resume.

A run's row says ``running`` while its writer works; the writer records its pid and host and
refreshes ``heartbeat_at`` every few seconds from a background thread. A run whose status is
``running`` but whose writer is gone (the pid no longer exists on this host, or the heartbeat
is older than ``STALE_S``) reads as ``interrupted`` (SIGKILL, power loss). SIGINT/SIGTERM mark it
``interrupted`` directly. Resuming claims the run in one write transaction and re-runs only
the parts that are not ``done``.

Durability: each finished part is written as files (renamed into place) and then recorded in
one transaction, so a kill loses at most the part in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError
from workbench.store import artefacts as art
from workbench.store.db import connect
from workbench.store.liveness import HEARTBEAT_S
from workbench.store.store import Store

if TYPE_CHECKING:
    from workbench.models.model import Model


# -- identity of a run -------------------------------------------------------------------------------


def new_run_id(model: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(model.rstrip("/")).name or model).strip("-").lower()[:24] or "model"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


def model_fingerprint(folder: str | Path | None) -> str | None:
    """sha256 over config/tokenizer files and, for each weight file, its name, size and first
    and last MiB: cheap for large checkpoints, and it changes when the weights change."""
    if folder is None:
        return None
    root = Path(folder)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".model", ".txt"})
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}\n".encode())
        with open(p, "rb") as f:
            if p.suffix in {".safetensors", ".bin"} and size > 2 * 2**20:
                h.update(f.read(2**20))
                f.seek(size - 2**20)
                h.update(f.read(2**20))
            else:
                h.update(f.read())
    return h.hexdigest()


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def collect_versions() -> dict[str, Any]:
    from importlib import metadata

    from workbench.version import __version__

    versions: dict[str, Any] = {"workbench": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("torch", "transformers", "transformer-lens", "numpy", "safetensors", "plotly"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    commit = _git_commit()
    if commit:
        versions["git_commit"] = commit
    return versions


# -- signals -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a commit runs; raise KeyboardInterrupt after it if one came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda s, f: received.append(s))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


# -- the writer --------------------------------------------------------------------------------------


class RunClaimError(WorkbenchError):
    """A run cannot be resumed (it is complete, or another process is writing it)."""


class RunWriter:
    """The one process writing a run."""

    def __init__(self, store: Store, run_id: str) -> None:
        if not store.writable:
            raise WorkbenchError("the store was opened for reading; open it with write=True to run")
        self.store = store
        self.run_id = run_id
        self.run_dir = store.run_dir(run_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # creation and claiming

    @classmethod
    def create(
        cls,
        store: Store,
        run_id: str,
        model: dict[str, Any],
        families: list[dict[str, Any]],
        config: dict[str, Any],
        versions: dict[str, Any],
    ) -> RunWriter:
        """Insert a run with its families and their parts (all pending) in one transaction.

        ``model``: spec, kind, path, revision, hash, n_layers, n_heads, geometry. ``families``: per
        family in run order: name, description, primary_metric, evidence_metric, options, parts.
        """
        now = time.time()
        writer = cls(store, run_id)
        writer.run_dir.mkdir(parents=True, exist_ok=True)
        with store.transaction() as c:
            c.execute(
                "INSERT INTO runs (run_id, model, model_kind, model_path, model_revision, model_hash, n_layers, n_heads, "
                "geometry, families, config, versions, status, created_at, started_at, heartbeat_at, pid, host) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (
                    run_id,
                    model["spec"],
                    model.get("kind"),
                    model.get("path"),
                    model.get("revision"),
                    model.get("hash"),
                    model.get("n_layers"),
                    model.get("n_heads"),
                    art.dumps(model.get("geometry", {})),
                    json.dumps([f["name"] for f in families]),
                    art.dumps(config),
                    art.dumps(versions),
                    now,
                    now,
                    now,
                    os.getpid(),
                    socket.gethostname(),
                ),
            )
            for i, fam in enumerate(families):
                c.execute(
                    "INSERT INTO families (run_id, family, idx, status, description, primary_metric, evidence_metric, options) "
                    "VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
                    (
                        run_id,
                        fam["name"],
                        i,
                        fam.get("description", ""),
                        fam.get("primary_metric"),
                        fam.get("evidence_metric"),
                        art.dumps(fam.get("options", {})),
                    ),
                )
                for j, part in enumerate(fam["parts"]):
                    c.execute(
                        "INSERT INTO parts (run_id, family, part, idx, status) VALUES (?, ?, ?, ?, 'pending')",
                        (run_id, fam["name"], part, j),
                    )
        writer.start_heartbeat()
        return writer

    @classmethod
    def claim(cls, store: Store, run_id: str) -> RunWriter:
        """Take over an interrupted or failed run for resuming (atomically: two resumers cannot both win)."""
        with store.transaction():
            info = next((r for r in store.runs() if r.run_id == run_id), None)
            if info is None:
                raise RunClaimError(f"no run {run_id!r} in {str(store.root)!r}", "list runs with `workbench runs`")
            if info.status == "complete":
                raise RunClaimError(f"run {run_id} is already complete", "start a new run instead of --resume")
            if info.status == "running":
                raise RunClaimError(
                    f"run {run_id} is still being written by process {info.pid} on {info.host}",
                    "wait for it, or stop that process first (it is marked interrupted when it stops)",
                )
            now = time.time()
            store.conn.execute(
                "UPDATE runs SET status = 'running', pid = ?, host = ?, heartbeat_at = ?, started_at = ?, finished_at = NULL, "
                "error = NULL, resumes = resumes + 1 WHERE run_id = ?",
                (os.getpid(), socket.gethostname(), now, now, run_id),
            )
        writer = cls(store, run_id)
        writer.run_dir.mkdir(parents=True, exist_ok=True)
        writer.remove_temporaries()
        writer.start_heartbeat()
        return writer

    def remove_temporaries(self) -> None:
        """Delete temporary files and folders a killed writer left (never read; safe once we own the run)."""
        import shutil

        for path in sorted(self.run_dir.rglob("*.tmp-*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    # heartbeat

    def start_heartbeat(self, interval: float = HEARTBEAT_S) -> None:
        db_path, run_id, pid, stop = self.store.db_path, self.run_id, os.getpid(), self._stop

        def beat() -> None:
            try:
                conn = connect(db_path, create=False)
            except Exception:
                return
            try:
                while not stop.wait(interval):
                    with contextlib.suppress(Exception):
                        conn.execute(
                            "UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND pid = ? AND status = 'running'",
                            (time.time(), run_id, pid),
                        )
            finally:
                conn.close()

        self._thread = threading.Thread(target=beat, name=f"wb-heartbeat-{run_id}", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * HEARTBEAT_S)
            self._thread = None

    # reading the plan

    def parts(self, family: str) -> list[tuple[str, str]]:
        """(part, status) in order."""
        rows = self.store.conn.execute(
            "SELECT part, status FROM parts WHERE run_id = ? AND family = ? ORDER BY idx", (self.run_id, family)
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def family_done(self, family: str) -> bool:
        row = self.store.conn.execute(
            "SELECT status FROM families WHERE run_id = ? AND family = ?", (self.run_id, family)
        ).fetchone()
        return row is not None and row[0] == "done"

    def set_family_options(self, family: str, options: dict[str, Any]) -> None:
        """Record a family's options again (a resumed run given an input it was missing)."""
        with self.store.transaction() as c:
            c.execute(
                "UPDATE families SET options = ? WHERE run_id = ? AND family = ?", (art.dumps(options), self.run_id, family)
            )

    # commits

    def commit_part(self, family: str, part: str, result: Any, seconds: float) -> None:
        """Write the part's files, then mark it done and index its artefacts in one transaction."""
        with deferred_signals():
            records = art.write_part(self.run_dir, family, part, result)
            with self.store.transaction() as c:
                c.execute("DELETE FROM artefacts WHERE run_id = ? AND family = ? AND part = ?", (self.run_id, family, part))
                for r in records:
                    c.execute(
                        "INSERT INTO artefacts (run_id, family, part, name, kind, path, dtype, shape, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            self.run_id,
                            family,
                            part,
                            r.name,
                            r.kind,
                            r.path,
                            r.dtype,
                            None if r.shape is None else json.dumps(r.shape),
                            r.bytes,
                        ),
                    )
                cur = c.execute(
                    "UPDATE parts SET status = 'done', finished_at = ?, seconds = ? WHERE run_id = ? AND family = ? AND part = ?",
                    (time.time(), seconds, self.run_id, family, part),
                )
                if cur.rowcount != 1:
                    raise WorkbenchError(f"run {self.run_id} has no part {family}/{part}")
                c.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", (time.time(), self.run_id))

    def read_part(self, family: str, part: str) -> Any:
        return art.read_part(self.run_dir, family, part)

    def commit_family(self, family: str, result: Any) -> None:
        """Write the merged artefacts, then the scores, metrics, summary and members in one transaction."""
        with deferred_signals():
            records = [
                art.write_artefact(self.run_dir, art.safe_name(family), name, value) for name, value in result.artefacts.items()
            ]
            rows = [(self.run_id, f, m, layer, h, None if s != s else s) for f, m, layer, h, s in result.scores.rows()]
            wrong = {r[1] for r in rows if r[1] != family}
            if wrong:
                raise ValueError(f"family {family!r} returned scores labelled {sorted(wrong)}")
            with self.store.transaction() as c:
                for table in ("head_scores", "metrics"):
                    c.execute(f"DELETE FROM {table} WHERE run_id = ? AND family = ?", (self.run_id, family))
                c.execute("DELETE FROM artefacts WHERE run_id = ? AND family = ? AND part = ''", (self.run_id, family))
                for i, metric in enumerate(result.scores.metrics):
                    c.execute(
                        "INSERT INTO metrics (run_id, family, metric, idx, description) VALUES (?, ?, ?, ?, ?)",
                        (self.run_id, family, metric, i, result.scores.descriptions.get(metric, "")),
                    )
                c.executemany(
                    "INSERT INTO head_scores (run_id, family, metric, layer, head, score) VALUES (?, ?, ?, ?, ?, ?)", rows
                )
                for r in records:
                    c.execute(
                        "INSERT INTO artefacts (run_id, family, part, name, kind, path, dtype, shape, bytes) VALUES (?, ?, '', ?, ?, ?, ?, ?, ?)",
                        (
                            self.run_id,
                            family,
                            r.name,
                            r.kind,
                            r.path,
                            r.dtype,
                            None if r.shape is None else json.dumps(r.shape),
                            r.bytes,
                        ),
                    )
                c.execute(
                    "UPDATE families SET status = 'done', summary = ?, members = ?, finished_at = ? WHERE run_id = ? AND family = ?",
                    (art.dumps(result.summary), art.dumps([list(m) for m in result.members]), time.time(), self.run_id, family),
                )

    # endings

    def _set_status(self, status: str, error: str | None = None) -> None:
        self.stop_heartbeat()
        now = time.time()
        with self.store.transaction() as c:
            c.execute(
                "UPDATE runs SET status = ?, finished_at = ?, heartbeat_at = ?, error = ? WHERE run_id = ?",
                (status, now if status == "complete" else None, now, error, self.run_id),
            )

    def finish(self) -> None:
        pending = self.store.conn.execute(
            "SELECT count(*) FROM families WHERE run_id = ? AND status != 'done'", (self.run_id,)
        ).fetchone()[0]
        if pending:
            raise WorkbenchError(f"run {self.run_id} still has {pending} unfinished families")
        self._set_status("complete")

    def mark_interrupted(self, reason: str = "interrupted") -> None:
        self._set_status("interrupted", reason)

    def mark_failed(self, error: str) -> None:
        self._set_status("failed", error)


def model_identity(model: Model) -> dict[str, Any]:
    """What a run records of its model. A model given in memory (kind "memory") has no folder: its name,
    no path, and the fingerprint of its weights (`workbench.models.loading.weights_fingerprint`)."""
    src = model.source
    memory = src.kind == "memory"
    path = str(src.path) if getattr(src, "path", None) is not None and not memory else None
    revision = getattr(src, "revision", None)
    if revision is None and src.kind == "hub" and path:
        revision = path.rstrip("/").rsplit("/", 1)[-1]  # the snapshot folder is the commit hash
    geo = model.geometry
    # A folder is recorded by its absolute path, so the run can be resumed from any folder.
    spec = path if src.kind == "folder" and path else src.spec
    return {
        "spec": spec,
        "kind": src.kind,
        "path": path,
        "revision": revision,
        "hash": getattr(src, "fingerprint", None) if memory else model_fingerprint(path),
        "n_layers": geo.n_layers,
        "n_heads": geo.n_heads,
        "geometry": geo.to_dict() if hasattr(geo, "to_dict") else {},
    }
