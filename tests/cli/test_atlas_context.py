"""`workbench atlas --context N`: every family at N tokens, recorded for resume; lengths the model
cannot hold are refused before any work, with the fix."""

from __future__ import annotations

from workbench.cli.main import main
from workbench.store import Store


def test_context_runs_every_family_at_n_tokens_and_is_recorded(tiny_model_dir, tmp_path):
    results = tmp_path / "r"
    args = ["atlas", str(tiny_model_dir("llama")), "--results", str(results), "-f", "temporal", "--n-prompts", "1"]
    assert main([*args, "--context", "48", "--quiet"]) == 0
    with Store.open(results) as store:
        (run,) = store.runs()
        assert run.config["max_tokens"] == 48
        (fam,) = store.families(run.run_id)
        assert fam.options["periodic_tokens"] == 48
        assert fam.summary["n_prompts"] == 1


def test_a_context_the_model_cannot_hold_is_refused_with_the_fix(tiny_model_dir, tmp_path, capsys):
    model = str(tiny_model_dir("llama"))  # n_ctx 256; a text needle's answer takes 50 tokens
    r = ["--results", str(tmp_path / "r")]
    assert main(["atlas", model, "-f", "retrieval", "--context", "230", *r]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "needle context of 230 tokens (--context or retrieval.context) plus its 50-token answer" in err
    assert "give --context 206 or less" in err and "Traceback" not in err
    assert main(["atlas", model, "-f", "sinks", "--context", "1000", *r]) == 2
    assert "max_tokens 1000 is longer than the model's context of 256 tokens" in " ".join(capsys.readouterr().err.split())
    assert main(["atlas", model, "--context", "64", "--max-tokens", "32", *r]) == 2
    assert "--context 64 and --max-tokens 32 disagree" in capsys.readouterr().err
    assert not (tmp_path / "r" / "workbench.sqlite").exists()  # refused before a run was written


def test_the_help_says_how_context_and_max_tokens_relate(capsys):
    assert main(["atlas", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.replace("\u2502", " ").split())  # rich's help box, unwrapped
    assert "--context" in out and "sets --max-tokens N" in out
