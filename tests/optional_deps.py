"""One rule for tests that need an optional piece (Ray, Triton, the Debian browser).

Plain `pytest` skips them with the reason when the piece is missing. `make test` (what CI runs)
installs every piece and sets WB_REQUIRE_OPTIONAL=1, which turns such a skip into a failure, so a
missing dependency can never hide a feature there.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ENV = "WB_REQUIRE_OPTIONAL"


def missing(why: str) -> None:
    """Skip (or, under WB_REQUIRE_OPTIONAL, fail) the current test because ``why``."""
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{why}, but {REQUIRE_ENV} is set: `make test` installs it")
    # Only a bare `pytest` without the optional extra gets here; `make test` (and so CI) sets
    # WB_REQUIRE_OPTIONAL, so no feature is hidden behind this skip there.
    pytest.skip(why)
