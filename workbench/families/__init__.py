"""Analysis families for the batch path: the interface (`Family`), the registry and the runner.

See `workbench.families.base` for how to add a family.
"""

from workbench.families.base import Family, FamilyResult, PartResult
from workbench.families.context import RunContext
from workbench.families.registry import build_family, family_class, family_names, resolve_families

__all__ = [
    "Family",
    "FamilyResult",
    "PartResult",
    "RunContext",
    "build_family",
    "family_class",
    "family_names",
    "resolve_families",
]
