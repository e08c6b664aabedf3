from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kvpress_bench.runner import offline_env  # noqa: E402  (the repo root must be on sys.path first)

offline_env()


@pytest.fixture(scope="session")
def model():
    from kvpress_bench.runner import load_model

    return load_model()


@pytest.fixture(scope="session")
def trials():
    from kvpress_bench.runner import load_trials

    return load_trials(name="needle-256", n=8)
