"""`workbench info` prints geometry; user errors give one message and a non-zero exit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from workbench.cli.main import main


def _run(args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, env=full_env, timeout=300)


def test_info_json(tiny_model_dir, capsys):
    assert main(["info", str(tiny_model_dir("llama")), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_layers"] == 2 and data["n_heads"] == 4 and data["n_kv_heads"] == 2
    assert data["head_to_kv"] == [0, 0, 1, 1]
    assert data["positional"]["kind"] == "rope" and data["bos"]["prepends"] is True


def test_info_table(tiny_model_dir, capsys):
    assert main(["info", str(tiny_model_dir("gpt2"))]) == 0
    out = capsys.readouterr().out
    assert "GPT2LMHeadModel" in out and "learned absolute position embeddings" in out


def test_info_from_hub_cache(tiny_model_dir, tmp_path):
    """A hub id resolves from a local Hugging Face cache with HF_HUB_OFFLINE=1 (real cache layout)."""
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--tiny-org--tiny-llama"
    snap = repo / "snapshots" / commit
    shutil.copytree(tiny_model_dir("llama"), snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    result = _run(["info", "tiny-org/tiny-llama", "--json"], env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "hub" and data["path"] == str(snap) and data["n_layers"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "/definitely/not/here"], "model path '/definitely/not/here' does not exist"),
        (["info", "nobody/uncached-model"], "'nobody/uncached-model' is not a shipped model or a folder"),
        (["info", "x", "--dtype", "float8"], "unknown dtype 'float8'"),
    ],
)
def test_user_errors_exit_nonzero_without_traceback(args, message):
    result = _run(args, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback():
    result = _run(["--debug", "info", "/definitely/not/here"])
    assert result.returncode != 0 and "Traceback" in result.stderr and "ModelNotFoundError" in result.stderr


def test_usage_error_exits_nonzero():
    result = _run(["info"])
    assert result.returncode == 2 and "Missing argument" in result.stderr


def test_folder_errors_through_cli(tmp_path, tiny_model_dir):
    shutil.copy(tiny_model_dir("llama") / "config.json", tmp_path / "config.json")
    result = _run(["info", str(tmp_path)])
    assert result.returncode == 2 and "no weights" in result.stderr


def test_info_names_a_single_kv_head_mqa(tiny_model_dir, capsys):
    """Falcon's multi_query (n_kv_heads == 1) is MQA, not GQA; Llama's groups are GQA; GPT-2 is MHA."""
    assert main(["info", str(tiny_model_dir("falcon")), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_kv_heads"] == 1 and data["n_heads"] > 1 and data["attention_kind"] == "MQA"
    assert main(["info", str(tiny_model_dir("falcon"))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"MQA, all {data['n_heads']} query heads share it" in out and "GQA" not in out
    assert main(["info", str(tiny_model_dir("llama"))]) == 0
    assert "GQA, 2 query heads each" in " ".join(capsys.readouterr().out.split())
    assert main(["info", str(tiny_model_dir("gpt2")), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["attention_kind"] == "MHA"
