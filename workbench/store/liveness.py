"""Is a run's writer still alive? A ``running`` run whose writer is gone reads as ``interrupted``.

Kept apart from `workbench.store.runs` (which writes runs) so that reading the store never needs the
writer's module.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.store.store import RunInfo

HEARTBEAT_S = 5.0
STALE_S = 60.0


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (Linux /proc, else kill(pid, 0))."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def writer_alive(run: RunInfo, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if run.pid and run.host == socket.gethostname() and not pid_alive(run.pid):
        return False
    return run.heartbeat_at is not None and now - run.heartbeat_at < STALE_S


def effective_status(run: RunInfo, now: float | None = None) -> str:
    if run.stored_status == "running" and not writer_alive(run, now):
        return "interrupted"
    return run.stored_status
