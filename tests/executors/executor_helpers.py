"""Test doubles for the executors: a countdown family that logs which process computed each part
(and can be slowed down or made to fail by its config, which travels to Ray workers with it),
a picklable loader of the fake model, and a torch thread-count guard."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from atlas_helpers import CountdownFamily, FakeModel

from workbench.errors import InputDataError

HERE = Path(__file__).resolve().parent
TESTS_DIR = HERE.parent


@dataclass(frozen=True)
class PidConfig:
    n_parts: int = 4
    threshold: float = 0.8
    seconds: float = 0.0  # sleep per part
    markers: str = ""  # file: a line "<part> <pid>" is appended when a part starts
    fail_part: str = ""  # this part raises InputDataError


class PidCountdown(CountdownFamily):
    """The countdown family's seeded numbers, plus a log of (part, process) and a controllable pace."""

    name = "pidcountdown"
    config_class = PidConfig

    def run_part(self, model, ctx, part):
        cfg = self.config
        if cfg.markers:
            with open(cfg.markers, "a") as f:
                f.write(f"{part} {os.getpid()}\n")
        if part == cfg.fail_part:
            raise InputDataError(f"part {part} cannot be computed", "this is a test failure")
        deadline = time.monotonic() + cfg.seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return super().run_part(model, ctx, part)


def read_markers(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    return [(p, int(pid)) for p, pid in (line.split() for line in path.read_text().splitlines() if line.strip())]


@dataclass(frozen=True)
class FakeLoader:
    """``loader(device)`` for Ray workers: the geometry-only fake model (no weights to load)."""

    n_layers: int = 3
    n_heads: int = 4

    def __call__(self, device: str) -> FakeModel:
        return FakeModel(self.n_layers, self.n_heads)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def same_tree(a, b, path: str = "") -> list[str]:
    """Where two nested results differ (dicts, lists, floats with NaN equal to NaN); [] if nowhere."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return [f"{path}: keys {list(a)} != {list(b)}"]
        return [d for k in a for d in same_tree(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same_tree(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return []
    return [] if type(a) is type(b) and a == b else [f"{path}: {a!r} != {b!r}"]
