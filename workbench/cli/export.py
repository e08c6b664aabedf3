"""`workbench export RUN --format parquet|csv|duo-attention|headkv|json`: a run for other tools.

``parquet``/``csv``: the run's tables for pandas, DuckDB, spreadsheets: ``head_scores`` (long format:
run_id, model, family, metric, layer, head, kv_head, score), ``runs`` (one row: the run's metadata)
and every table artefact (``<family>__<name>``). Parquet needs pyarrow.

``duo-attention``/``headkv``/``json``: the retrieval family's head labels for KV-cache compression
engines (DuoAttention's pattern folder, read by kvpress; HeadKV's score JSON; the project's own
JSON), with ``--full-fraction`` the share of KV heads kept whole (`workbench.report.kv_export`).

``--out`` is a folder for every format (default ``<run folder>/export``): the table formats write
their files into it, ``duo-attention`` its pattern files, ``headkv`` ``headkv.json`` and ``json``
``head_labels.json``. Nothing heavier than the store is imported unless a label format is asked for.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import typer

from workbench.cli.common import console
from workbench.errors import WorkbenchError

#: The table formats, then the head-label formats (`workbench.report.kv_export.FORMATS`, kept equal by a
#: test; listed here so that the table formats never import it).
TABLE_FORMATS = ("parquet", "csv")
LABEL_FORMATS = ("duo-attention", "headkv", "json")
#: What a label format writes inside the --out folder (duo-attention: its files straight into it).
LABEL_FILES = {"headkv": "headkv.json", "json": "head_labels.json"}


def _write_csv(path: Path, columns: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else v) for v in row])


def _write_parquet(path: Path, columns: list[str], rows: list[list[Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = {c: [(json.dumps(r[i]) if isinstance(r[i], (dict, list)) else r[i]) for r in rows] for i, c in enumerate(columns)}
    pq.write_table(pa.table(data), path)


def export(
    run: str = typer.Argument("latest", help="run id, unique id prefix, or 'latest'"),
    fmt: str = typer.Option(
        "parquet", "--format", help="parquet or csv (tables); duo-attention, headkv or json (KV-head labels)"
    ),
    results: Path = typer.Option(None, "--results", "-r", help="results folder (default ./wb-results or $WORKBENCH_RESULTS)"),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="output folder, for every format (default: <run folder>/export, duo-attention: .../export/duo-attention)",
    ),
    full_fraction: float = typer.Option(
        0.25, "--full-fraction", help="head-label formats: share of KV heads kept on the full cache (the rest stream)"
    ),
) -> None:
    """Export a run's tables (Parquet, CSV) or its KV-head labels (duo-attention, headkv, json)."""
    from workbench.store import Store

    fmt = fmt.lower()
    if fmt in LABEL_FORMATS:
        _export_labels(run, fmt, results, out, full_fraction)
        return
    if fmt not in TABLE_FORMATS:
        raise WorkbenchError(
            f"unknown export format {fmt!r}", f"use --format {', '.join(TABLE_FORMATS)}, {', '.join(LABEL_FORMATS)}"
        )
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise WorkbenchError(
                "Parquet export needs pyarrow, which is not installed", "pip install pyarrow, or use --format csv"
            ) from exc
    write = _write_parquet if fmt == "parquet" else _write_csv
    with Store.open(results) as store:
        info = store.run(run)
        folder = _folder(out if out is not None else store.run_dir(info.run_id) / "export")
        kv = info.geometry.get("head_to_kv") if isinstance(info.geometry, dict) else None
        rows = [
            [info.run_id, info.model, f, m, layer, h, (kv[h] if kv and h < len(kv) else None), s if s == s else None]
            for f, m, layer, h, s in store.score_rows(info.run_id)
        ]
        written = []
        path = folder / f"head_scores.{fmt}"
        write(path, ["run_id", "model", "family", "metric", "layer", "head", "kv_head", "score"], rows)
        written.append(path)
        meta = {k: v for k, v in info.to_dict().items() if k not in ("geometry",)}
        path = folder / f"runs.{fmt}"
        write(path, list(meta), [list(meta.values())])
        written.append(path)
        for fam in store.families(info.run_id):
            loaded = store.artefacts(info.run_id, fam.family) if fam.status == "done" else {}
            for a in store.artefact_index(info.run_id, fam.family):
                if a["kind"] != "table":
                    continue
                table = loaded[a["name"]]
                columns = list(dict.fromkeys(k for r in table for k in r))
                path = folder / f"{fam.family}__{a['name'].replace('/', '__')}.{fmt}"
                write(path, columns, [[r.get(c) for c in columns] for r in table])
                written.append(path)
    for p in written:
        console.print(str(p), highlight=False, soft_wrap=True)


def _folder(folder: Path) -> Path:
    """Create the export folder (``--out`` is a folder for every format) or say why it cannot be."""
    if folder.exists() and not folder.is_dir():
        raise WorkbenchError(f"--out {str(folder)!r} is a file; --out names a folder", "give a folder (it is created)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkbenchError(f"cannot create export folder {str(folder)!r}: {exc.strerror}", "choose a writable --out") from exc
    return folder


def _export_labels(run: str, fmt: str, results: Path | None, out: Path | None, full_fraction: float) -> None:
    from workbench.report.kv_export import export_labels, head_labels
    from workbench.store import Store

    with Store.open(results) as store:
        labels = head_labels(store, run, full_fraction)
        export = store.run_dir(labels.run_id) / "export"
    folder = _folder(out if out is not None else (export / "duo-attention" if fmt == "duo-attention" else export))
    target = folder / LABEL_FILES[fmt] if fmt in LABEL_FILES else folder
    try:
        written = export_labels(labels, fmt, target)
    except OSError as exc:
        raise WorkbenchError(f"cannot write {str(target)!r}: {exc.strerror}", "choose a writable --out") from exc
    for p in written:
        console.print(str(p), highlight=False, soft_wrap=True)
    console.print(
        f"{len(labels.full_kv_heads)} of {labels.n_layers * labels.n_kv_heads} KV heads full "
        f"(sink {labels.sink} + recent {labels.recent} for the others), ranked by {labels.metric} ({labels.reduce}); "
        f"pass sparsity={labels.sparsity:.6g} to DuoAttention's loader and head_compression_ratio={labels.sparsity:.6g} "
        "to kvpress",
        highlight=False,
    )
