"""A local Ray instance (2 CPUs, no dashboard) shared by the Ray tests, shut down at the end.

Ray is an optional extra. `make test` installs it (``.[test,ray]``) and sets WB_REQUIRE_OPTIONAL=1,
so there a missing Ray fails these tests; a plain `pytest` without Ray skips them, saying why.
"""

from __future__ import annotations

import os

import pytest
from atlas_helpers import INTERRUPT_ENV, MARKERS_ENV, SECONDS_ENV
from executor_helpers import HERE, TESTS_DIR
from optional_deps import missing


def _ray_or_skip():
    try:
        import ray
    except ImportError:
        missing("ray is not installed (pip install -e '.[ray]')")
    return ray


@pytest.fixture(scope="session")
def ray_session():
    ray = _ray_or_skip()
    # Workers are new processes: they import the test families from these folders, and must not
    # inherit the countdown family's knobs from some other test.
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", INTERRUPT_ENV, SECONDS_ENV, MARKERS_ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(HERE), saved["PYTHONPATH"] or ""]).rstrip(os.pathsep)
    for key in (INTERRUPT_ENV, SECONDS_ENV, MARKERS_ENV):
        os.environ.pop(key, None)
    # address="local": a new instance even if /tmp/ray names another (or a stale) cluster.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
