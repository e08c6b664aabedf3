"""Issue 27: `workbench export --out DIR` is a folder for every format (headkv and json used to write
a file named like the folder), and the help lists every format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.cli.main import main


@pytest.fixture(scope="module")
def labelled_run(tiny_model_dir, tmp_path_factory) -> tuple[Path, str]:
    """A finished retrieval family written through the store API (what the KV-label export reads)."""
    from workbench.analysis.scores import HeadScores
    from workbench.families.base import FamilyResult, PartResult
    from workbench.store import Store
    from workbench.store.runs import RunWriter, model_fingerprint

    results = tmp_path_factory.mktemp("export-out")
    model_dir = tiny_model_dir("llama")
    model = {
        "spec": str(model_dir),
        "kind": "folder",
        "path": str(model_dir),
        "hash": model_fingerprint(model_dir),
        "n_layers": 2,
        "n_heads": 4,
        "geometry": {"n_kv_heads": 2, "head_to_kv": [0, 0, 1, 1]},
    }
    fams = [
        {
            "name": "retrieval",
            "description": "synthetic retrieval",
            "primary_metric": "retrieval_score",
            "evidence_metric": None,
            "parts": ["all"],
        }
    ]
    with Store.open(results, write=True) as store:
        writer = RunWriter.create(store, "run-kv", model, fams, {"seed": 0}, {"workbench": "test"})
        scores = HeadScores("retrieval", 2, 4)
        scores.add("retrieval_score", np.arange(8, dtype=np.float64).reshape(2, 4) / 8, "synthetic")
        writer.commit_part("retrieval", "all", PartResult(scores, {}, {}), 0.1)
        writer.commit_family("retrieval", FamilyResult(scores, {}, {}, [(1, 3)]))
        writer.finish()
    return results, "run-kv"


@pytest.mark.parametrize("fmt, name", [("headkv", "headkv.json"), ("json", "head_labels.json")])
def test_label_files_go_into_the_out_folder(labelled_run, tmp_path, fmt, name):
    results, rid = labelled_run
    out = tmp_path / "labels"
    assert main(["export", rid, "--results", str(results), "--format", fmt, "--out", f"{out}/"]) == 0
    assert out.is_dir() and (out / name).is_file()
    json.loads((out / name).read_text())
    # an existing folder is used as it is, like the table formats
    assert main(["export", rid, "--results", str(results), "--format", fmt, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_duo_attention_and_tables_use_the_out_folder_too(labelled_run, tmp_path):
    results, rid = labelled_run
    assert main(["export", rid, "--results", str(results), "--format", "duo-attention", "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "config.json").is_file() and (tmp_path / "d" / "full_attention_heads.tsv").is_file()
    assert main(["export", rid, "--results", str(results), "--format", "csv", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "head_scores.csv").is_file()


def test_default_folders_are_unchanged(labelled_run):
    from workbench.store import Store

    results, rid = labelled_run
    assert main(["export", rid, "--results", str(results), "--format", "headkv"]) == 0
    assert main(["export", rid, "--results", str(results), "--format", "duo-attention"]) == 0
    with Store.open(results) as store:
        export = store.run_dir(rid) / "export"
    assert (export / "headkv.json").is_file() and (export / "duo-attention" / "config.json").is_file()


def test_an_out_that_is_a_file_is_refused(labelled_run, tmp_path, capsys):
    results, rid = labelled_run
    (tmp_path / "f.json").write_text("{}")
    assert main(["export", rid, "--results", str(results), "--format", "json", "--out", str(tmp_path / "f.json")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is a file; --out names a folder" in err


def test_help_lists_every_format(capsys):
    assert main(["export", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for fmt in ("parquet", "csv", "duo-attention", "headkv", "json"):
        assert fmt in out
