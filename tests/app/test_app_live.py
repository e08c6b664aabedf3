"""Live views on a tiny model: recorded patterns (full and pooled agree), exact token-view rows,
the ablation playground, and jobs with progress that reuse the cached model and pattern."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from workbench.app import patterns as P
from workbench.app.live import PromptSpec, prompt_tokens, record_layer, run_ablation
from workbench.app.server import AppState
from workbench.record import record_attention


def random_ids(n: int, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(4, 64, (1, n), generator=torch.Generator().manual_seed(seed))
    ids[0, 0] = 1
    return ids


def test_short_prompt_keeps_the_full_pattern(tiny_llama):
    ids = random_ids(30)
    entry = record_layer(tiny_llama, ids, 1)
    assert entry.kind == "full" and entry.pattern.shape == (4, 30, 30) and len(entry.tokens) == 30
    grid = entry.grid(2)
    assert grid.kind == "full" and grid.shape == (30, 30)
    np.testing.assert_allclose(entry.row(2, 29), entry.pattern[2, 29], rtol=1e-6)
    np.testing.assert_allclose(np.nansum(grid.values, 1), 1.0, rtol=1e-4)


def test_long_prompt_gives_the_pooled_map_and_exact_rows(tiny_llama, monkeypatch):
    monkeypatch.setattr(P, "FULL_LIMIT", 100)  # make 200 tokens "long" (the real limit is 1024)
    ids = random_ids(200, 1)
    entry = record_layer(tiny_llama, ids, 1)
    assert entry.kind == "pooled" and entry.pattern is None and entry.pool == 64
    _, rec = record_attention(tiny_llama, ids, backend="eager", keep_patterns=True, layers=(1,))
    full = rec.patterns[1][0].double().numpy()  # [H, N, N], the reference
    for head in range(4):
        want = P.grid_from_pooled(P.block_pool(full[head], 64), 64, 200)
        np.testing.assert_allclose(entry.grid(head).values, want.values, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(entry.row(head, 150), full[head, 150, :151], rtol=1e-4, atol=1e-7)


def test_prompts(tiny_llama):
    ids = prompt_tokens(tiny_llama, PromptSpec("random", length=50, seed=3), [])
    assert ids.shape == (1, 50)
    assert torch.equal(ids, prompt_tokens(tiny_llama, PromptSpec("random", length=50, seed=3), []))
    assert prompt_tokens(tiny_llama, PromptSpec("run", index=1), ["w1 w2", "w3 w4 w5"]).shape[1] >= 3
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="context"):
        prompt_tokens(tiny_llama, PromptSpec("random", length=10_000), [])
    with pytest.raises(WorkbenchError, match="empty"):
        prompt_tokens(tiny_llama, PromptSpec("text", text="  "), [])
    with pytest.raises(WorkbenchError, match="no prompt file"):
        prompt_tokens(tiny_llama, PromptSpec("run"), [])


def test_ablation_playground_numbers(tiny_llama):
    ids = tiny_llama.to_tokens("w1 w2 w3 w4 w5 w6")
    same = run_ablation(tiny_llama, ids, [], "zero", 5, 3)
    assert same["kl"] == 0.0 and same["text_with"] == same["text_without"]
    res = run_ablation(tiny_llama, ids, ["L0H0", "L0H1", "L1H2"], "zero", 5, 3)
    probs = torch.softmax(tiny_llama.logits(ids)[0, -1].double(), -1)
    for row in res["rows"]:
        assert row["p_without"] == pytest.approx(float(probs[row["id"]]), abs=1e-9)
    assert res["kl"] > 0 and res["heads"] == ["L0H0", "L0H1", "L1H2"]
    assert len(res["rows"]) >= 5 and len(res["tokens_without"]) == 3
    from workbench.interventions.ablation import ablate_heads

    with ablate_heads(tiny_llama, ["L0H0", "L0H1", "L1H2"], mode="zero"):
        ablated = torch.softmax(tiny_llama.logits(ids)[0, -1].double(), -1)
    assert res["rows"][0]["p_with"] == pytest.approx(float(ablated[res["rows"][0]["id"]]), abs=1e-9)
    mean = run_ablation(tiny_llama, ids, ["L1H0"], "mean", 3, 0)
    assert mean["text_with"] == "" and mean["kl"] >= 0


def test_long_playground_prompts_use_the_instrumented_attention(tiny_llama, monkeypatch):
    ids = tiny_llama.to_tokens("w1 w2 w3 w4 w5 w6 w7 w8 w9")
    eager = run_ablation(tiny_llama, ids, ["L0H1", "L1H2"], "mean", 5, 2)
    monkeypatch.setattr(P, "FULL_LIMIT", 4)  # these 10 tokens now count as long
    frugal = run_ablation(tiny_llama, ids, ["L0H1", "L1H2"], "mean", 5, 2)
    assert frugal["attention"].startswith("instrumented") and eager["attention"] == "eager"
    assert frugal["tokens_with"] == eager["tokens_with"] and frugal["tokens_without"] == eager["tokens_without"]
    for a, b in zip(eager["rows"], frugal["rows"]):
        assert a["id"] == b["id"] and a["p_with"] == pytest.approx(b["p_with"], abs=1e-6)
    assert frugal["kl"] == pytest.approx(eager["kl"], rel=1e-3, abs=1e-9)


def wait_job(state: AppState, job_id: str, timeout: float = 120.0):
    end = time.time() + timeout
    seen = []
    while time.time() < end:
        job = state.jobs.get(job_id)
        seen.append((job.state, round(job.fraction, 2)))
        if job.state in ("done", "error"):
            return job, seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {seen[-5:]}")


def test_jobs_load_the_model_once_and_cache_patterns(synthetic_results):
    from workbench.store import Store

    results, a, _ = synthetic_results
    state = AppState(results, device="cpu")
    with Store.open(results) as store:
        run = store.run(a)
    job, seen = wait_job(state, state.start_pattern(run, PromptSpec("random", length=40), 1, []))
    assert job.state == "done", job.error
    assert any(0 < f < 1 for s, f in seen if s == "running") or job.seconds < 0.5  # progress was reported
    entry = state.patterns.get(job.result)
    assert entry is not None and entry.n_tokens == 40 and entry.layer == 1
    again, _ = wait_job(state, state.start_pattern(run, PromptSpec("random", length=40), 1, []))
    assert again.result == job.result and again.seconds < 0.5  # cached: no model run
    play, _ = wait_job(state, state.start_playground(run, ["L0H1"], "uniform", "w1 w2 w3", 4, 2))
    assert play.state == "done", play.error
    assert play.result["heads"] == ["L0H1"] and state.models.loaded(run)
    bad, _ = wait_job(state, state.start_pattern(run, PromptSpec("text", text=""), 0, []))
    assert bad.state == "error" and "empty" in bad.error and bad.hint
    state.jobs.shutdown()
