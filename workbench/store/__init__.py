"""The results store: SQLite (WAL) for runs and head scores, files beside it for artefacts.

Readers: ``Store.open(folder)``; the batch writer: ``Store.open(folder, write=True)`` with
`workbench.store.runs.RunWriter`. See `db` for the tables and `artefacts` for the files.
"""

from workbench.store.db import SCHEMA_VERSION, StoreError
from workbench.store.store import DEFAULT_RESULTS, FamilyInfo, RunInfo, Store, default_results

__all__ = ["DEFAULT_RESULTS", "SCHEMA_VERSION", "FamilyInfo", "RunInfo", "Store", "StoreError", "default_results"]
