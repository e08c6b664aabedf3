"""The dataset registry and the shipped real-model sets: a real model gets real language, no flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.data.registry import Dataset, dataset_names, default_dataset, get_dataset, load_file, register_dataset
from workbench.errors import InputDataError
from workbench.families import RunContext


def test_the_shipped_sets_are_registered_by_kind():
    prose, harmful, harmless = default_dataset("text"), default_dataset("harmful"), default_dataset("harmless")
    assert prose.source == "shipped:prose" and len(" ".join(prose.items).split()) > 2000
    assert len(harmful.items) == len(harmless.items) == 100 and len(set(harmful.items)) == 100
    assert not set(harmful.items) & set(harmless.items)
    # the organisms register their own request sets through their plugin, for their models only
    assert dataset_names("harmful") == ["harmful-requests", "refusal-harmful-test"]


def test_files_load_through_the_same_reader(tmp_path):
    jsonl = tmp_path / "reqs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"query": q}) for q in ["a b", "c d"]) + "\n")
    data = get_dataset(str(jsonl), "harmful", field="query")
    assert data.items == ("a b", "c d") and data.kind == "harmful"
    text = tmp_path / "story.txt"
    text.write_text("one line\nanother line\n")
    assert load_file(text, "text").items == ("one line\nanother line",)  # a text set is one passage


def test_bad_dataset_specs_are_refused(tmp_path):
    with pytest.raises(InputDataError, match="neither a registered set nor an existing file"):
        get_dataset("no-such-set")
    with pytest.raises(InputDataError, match="holds harmful items, but text items are needed"):
        get_dataset("harmful-requests", "text")
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    with pytest.raises(InputDataError, match="empty"):
        load_file(empty, "text")
    with pytest.raises(InputDataError, match="kind"):
        register_dataset("x", "poems", lambda: Dataset("x", "poems", ("a",), "here"))


@pytest.fixture(scope="module")
def prose_model_dirs(tmp_path_factory):
    """Tiny random Llama and GPT-2 whose word tokenizer knows every word of the shipped sets, standing
    in for a real model's tokenizer (the usual tiny vocabulary w0..w59 reads the prose as unknown)."""
    from workbench.models.tiny import build_tiny_model
    from workbench.models.word_tokenizer import build_word_tokenizer

    texts = [*default_dataset("text").items, *default_dataset("harmful").items, *default_dataset("harmless").items]
    extra = [
        "Based",
        "on",
        "the",
        "content",
        "of",
        "the",
        "book,",
        "Question:",
        "What",
        "is",
        "the",
        "secret",
        "code",
        "?",
        "Answer:",
        "The",
        "is",
    ]
    words = sorted({w for t in texts for w in t.split()} | set(extra) | {str(i) for i in range(1000, 10000)})
    out = {}
    for arch in ("llama", "gpt2"):
        folder = build_tiny_model(tmp_path_factory.mktemp(f"prose-{arch}"), arch, vocab_size=len(words) + 4)
        build_word_tokenizer(words).save_pretrained(str(folder))
        out[arch] = folder
    return out


def test_real_models_get_prose_windows_and_shipped_requests(prose_model_dirs, tiny_llama):
    from workbench.families.prompts import family_prompts
    from workbench.families.safety import SafetyFamilyConfig, safety_prompts
    from workbench.models import load_model

    model = load_model(prose_model_dirs["llama"], device="cpu")
    prompts, source = family_prompts(model, RunContext(max_tokens=40, n_prompts=3), "sinks")
    assert source == "shipped:prose" and [p.shape[1] for p in prompts] == [40, 40, 40]
    assert all(int(p[0, 0]) == model.geometry.bos.token_id for p in prompts)
    assert len({tuple(p[0].tolist()) for p in prompts}) == 3  # three different windows
    words = model.to_str_tokens(prompts[0][0, 1:])
    assert " ".join(words) in " ".join(default_dataset("text").items[0].split())
    harmful, benign, source = safety_prompts(model, RunContext(n_prompts=5), SafetyFamilyConfig())
    assert source == "shipped:harmful-requests" and len(harmful) == len(benign) == 5
    # a tokenizer that cannot read the prose says so and falls back to random tokens
    _, source = family_prompts(tiny_llama, RunContext(max_tokens=40, n_prompts=2), "sinks")
    assert source.startswith("random-tokens (shipped:prose is") and "unknown tokens" in source


def test_needle_prompts_leave_room_for_the_answer_inside_the_context(prose_model_dirs):
    """GPT-2 has learned positions up to n_ctx: a 256-token needle prompt plus Wu et al.'s 50-token
    answer would index past them (it crashed before), so the haystack is cut to leave the room."""
    from workbench.families.retrieval import RetrievalFamilyConfig, needle_trials
    from workbench.models import load_model

    model = load_model(prose_model_dirs["gpt2"], device="cpu")
    trials, source = needle_trials(model, RunContext(n_prompts=2), RetrievalFamilyConfig())
    assert source == "text-needle (shipped:prose)"
    assert max(t.context_len for t in trials) + 50 <= model.geometry.n_ctx == 256


@pytest.mark.slow
def test_atlas_with_no_flags_on_real_models_runs_every_family_on_the_shipped_sets(prose_model_dirs, tmp_path):
    """`workbench atlas FOLDER` and nothing else, on a plain Hugging Face Llama and GPT-2 folder: all
    four families at their full defaults (before: random tokens, then a safety error). The two runs go
    in parallel subprocesses (about 5 minutes each on 2 cores, most of it safety's 128-token answers)."""
    import os
    import subprocess
    import sys

    from workbench.store import Store

    procs = {}
    for arch in ("llama", "gpt2"):
        env = {**os.environ, "WORKBENCH_RESULTS": str(tmp_path / arch), "OMP_NUM_THREADS": "1"}
        procs[arch] = subprocess.Popen(
            [sys.executable, "-m", "workbench", "atlas", str(prose_model_dirs[arch]), "--quiet"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for arch, proc in procs.items():
        out, err = proc.communicate(timeout=1500)
        assert proc.returncode == 0, err[-3000:]
        with Store.open(tmp_path / arch) as store:
            (run,) = store.runs()
            sources = {f.family: f.summary for f in store.families(run.run_id)}
        assert out.strip() == run.run_id  # --quiet still prints the run id
        assert run.status == "complete" and set(sources) == {"sinks", "retrieval", "safety", "temporal"}
        assert sources["sinks"]["prompt_source"] == sources["temporal"]["prompt_source"] == "shipped:prose"
        assert sources["retrieval"]["trial_source"] == "text-needle (shipped:prose)"
        group = sources["safety"]["parts"]["group"]
        assert (
            group["prompt_source"] == "shipped:harmful-requests" and group["n_harmful"] == 40 and group["max_new_tokens"] == 128
        )
        # the only warning: the default needle context (--max-tokens 256) cut to what the 256-position
        # model holds with its 50-token answer room
        assert np.isfinite(group["base_asr"])
        assert [w for w in run.config["warnings"] if "needle context 206 tokens" not in w] == [], run.config["warnings"]
