"""Running the head atlas: the `Atlas` API, its options, the preflight checks and the runner.

This layer sits above the store (it writes runs there) and below the report, the dashboard and
the CLI, which all run atlases through `Atlas`.
"""

from workbench.atlas.api import Atlas, AtlasProgress, AtlasResult
from workbench.atlas.preflight import PreflightError

__all__ = ["Atlas", "AtlasProgress", "AtlasResult", "PreflightError"]
