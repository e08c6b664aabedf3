"""Batched safety sweeps equal the slow way: one head at a time, one prompt at a time.

Ragged requests share right-padded batches; rows are (head, request) pairs, a different head ablated
per row (`ablate_rows`). Compared with the per-head, per-prompt loop on `ablate_heads`:

* last-token log-probs and final representations of ragged prompts, padded vs alone, on architectures
  with RoPE + GQA, learned absolute positions, a sliding window shorter than the prompts, soft-capping
  and per-head q norms: 1e-5 absolute (float32 forwards whose sums may run in another order; on CPU
  they agree bitwise at these sizes);
* Ships per (query, head): 1e-5 relative + 1e-6 absolute on the KL, which inherits the log-probs'
  float32 differences (observed: 8e-7 absolute, 6e-6 relative);
* Sahara: the same greedy group, step scores within 1e-3 degrees (observed 4e-5: the angle is an
  arccos of float32-derived cosines, which amplifies their last bits at small angles);
* ASR: identical responses and verdicts (greedy tokens are compared exactly).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from workbench.analysis import safety as S
from workbench.analysis.safety import SafetyConfig
from workbench.interventions import ablate_heads
from workbench.models import load_model
from workbench.models.heads import Head

ARCHS = ["llama", "gpt2", "mistral_window", "gemma2", "qwen3"]
LOGP_TOL = 1e-5
SHIPS_RTOL, SHIPS_ATOL = 1e-5, 1e-6
ANGLE_TOL = 1e-3  # degrees


@pytest.fixture(scope="module")
def arch_model(tiny_model_dir):
    cache: dict[str, object] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_model(tiny_model_dir(arch, peaked=True), device="cpu")
        return cache[arch]

    return get


def _prompts(model, lengths: Sequence[int], seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        p = torch.randint(4, model.geometry.vocab_size, (n,), generator=g)
        p[0] = model.geometry.bos.token_id
        out.append(p)
    return out


# -- the slow way ---------------------------------------------------------------------------------


def _slow_last(model, prompts, heads=()) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs [Q, V], final-norm outputs [Q, d]) one prompt at a time with ``heads`` ablated."""
    logps, reps = [], []
    box = {}

    def grab(t, hook):
        box["h"] = t.detach()[0, -1].double()

    with ablate_heads(model, list(heads), "uniform"), model.bridge.hooks(fwd_hooks=[("ln_final.hook_out", grab)]):
        for p in prompts:
            logps.append(torch.log_softmax(model.logits(p[None])[0, -1].double(), -1))
            reps.append(box["h"])
    return torch.stack(logps), torch.stack(reps)


def _slow_ships(model, prompts, cfg) -> np.ndarray:
    geo = model.geometry
    base, _ = _slow_last(model, prompts)
    out = np.full((len(prompts), geo.n_layers, geo.n_heads), np.nan)
    for head in geo.all_heads():
        ablated, _ = _slow_last(model, prompts, [head])
        out[:, head.layer, head.head] = S.kl_divergence(base, ablated, cfg.kl_eps).numpy()
    return out


def _slow_sahara(model, prompts, cfg) -> tuple[list[Head], list[np.ndarray]]:
    geo = model.geometry
    _, base = _slow_last(model, prompts)
    group: list[Head] = []
    steps = []
    for _ in range(cfg.max_group):
        scores = np.full((geo.n_layers, geo.n_heads), np.nan)
        for head in geo.all_heads():
            if head not in group:
                _, reps = _slow_last(model, prompts, [*group, head])
                scores[head.layer, head.head] = S.subspace_angle(base, reps, cfg.rank)
        best = np.unravel_index(np.nanargmax(scores), scores.shape)
        group.append(Head(int(best[0]), int(best[1])))
        steps.append(scores)
    return group, steps


def _slow_responses(model, prompts, heads, n_new) -> list[str]:
    from workbench.record.decode import generate

    out = []
    with ablate_heads(model, list(heads), "uniform"):
        for p in prompts:
            out.append(model.tokenizer.decode(generate(model, p[None], n_new).tokens[0].tolist(), skip_special_tokens=True))
    return out


# -- padded batches -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_ragged_prompts_in_one_padded_batch_equal_one_at_a_time(arch, arch_model):
    """Right padding under causal attention: prompts of 5..40 tokens (the window is 16) in one batch."""
    model = arch_model(arch)
    prompts = _prompts(model, [5, 40, 17, 9, 33, 16])
    cfg = SafetyConfig(max_rows=64)
    logp = S.last_token_logprobs(model, prompts, cfg)
    reps = S.final_representations(model, prompts, cfg)
    want_logp, want_reps = _slow_last(model, prompts)
    torch.testing.assert_close(logp, want_logp, atol=LOGP_TOL, rtol=0)
    torch.testing.assert_close(reps, want_reps, atol=LOGP_TOL, rtol=0)


def test_the_ragged_batch_is_one_pass_and_chunks_by_max_rows(arch_model, monkeypatch):
    model = arch_model("llama")
    prompts = _prompts(model, [5, 40, 17, 9, 33, 16, 12])
    calls = _count_forwards(model, monkeypatch)
    S.last_token_logprobs(model, prompts, SafetyConfig(max_rows=64))
    assert calls["n"] == 1
    calls["n"] = 0
    S.last_token_logprobs(model, prompts, SafetyConfig(max_rows=3))
    assert calls["n"] == 3  # ceil(7 / 3)


def test_a_bidirectional_model_falls_back_to_equal_length_batches(arch_model, monkeypatch):
    """Padding is refused where a real token could see it: batches then hold equal lengths only."""
    model = arch_model("llama")
    prompts = _prompts(model, [5, 9, 5, 9, 12])
    want = S.last_token_logprobs(model, prompts)
    monkeypatch.setattr(model.bridge.cfg, "attention_dir", "bidirectional")
    assert not S.right_padding_is_exact(model)
    widths: list[int] = []
    monkeypatch.setattr(model.bridge, "forward", _recording_forward(model.bridge.forward, widths))
    got = S.last_token_logprobs(model, prompts)
    assert sorted(widths) == [5, 9, 12]  # one batch per length, never padded
    torch.testing.assert_close(got, want, atol=LOGP_TOL, rtol=0)


def _recording_forward(forward, widths: list[int]):
    def wrapped(*args, **kwargs):
        widths.append(int(args[0].shape[-1]))
        return forward(*args, **kwargs)

    return wrapped


def _count_forwards(model, monkeypatch) -> dict[str, int]:
    calls = {"n": 0}
    forward = model.bridge.forward

    def counted(*args, **kwargs):
        calls["n"] += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(model.bridge, "forward", counted)
    return calls


# -- Ships, Sahara, ASR ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_rows", [64, 5])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "mistral_window"])
def test_batched_ships_and_sahara_equal_the_per_head_loop(arch, max_rows, arch_model):
    model = arch_model(arch)
    prompts = _prompts(model, [6, 20, 11, 6, 18])
    cfg = SafetyConfig(max_group=2, max_rows=max_rows)
    want = _slow_ships(model, prompts, cfg)
    sweep = S.sweep_heads(model, prompts, cfg, angles=True)
    np.testing.assert_allclose(sweep.ships, want, rtol=SHIPS_RTOL, atol=SHIPS_ATOL)
    np.testing.assert_allclose(S.ships_scores(model, prompts, cfg), want, rtol=SHIPS_RTOL, atol=SHIPS_ATOL)
    group, steps = _slow_sahara(model, prompts, cfg)
    got = S.sahara_search(model, prompts, cfg)
    assert got.group == group
    for a, b in zip(got.step_scores, steps):
        np.testing.assert_allclose(a, b, atol=ANGLE_TOL, rtol=0)
    assert sweep.angles is not None
    np.testing.assert_allclose(sweep.angles, steps[0], atol=ANGLE_TOL, rtol=0)  # the sweep's step 1 is Sahara's
    reused = S.sahara_search(model, prompts, cfg, first_step=sweep)
    assert reused.group == group


def test_ships_of_some_heads_and_the_pass_count(arch_model, monkeypatch):
    """Rows are (head, request) pairs: 2 heads x 5 requests at 4 rows per pass -> 3 passes + 1 base."""
    model = arch_model("llama")
    prompts = _prompts(model, [6, 20, 11, 6, 18])
    heads = [Head(1, 3), Head(0, 2)]
    calls = _count_forwards(model, monkeypatch)
    got = S.ships_scores(model, prompts, SafetyConfig(max_rows=4), heads=heads)
    assert calls["n"] == 2 + 3  # base: ceil(5 / 4); heads: ceil(10 / 4)
    calls["n"] = 0
    S.sweep_heads(model, prompts, SafetyConfig(max_rows=4), heads=heads, angles=True)
    assert calls["n"] == 2 + 3  # the base log-probs and representations come from the same passes
    assert np.isnan(got[:, 0, 0]).all() and np.isfinite(got[:, 1, 3]).all() and np.isfinite(got[:, 0, 2]).all()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_asr_equals_one_head_one_prompt_at_a_time(arch, arch_model, monkeypatch):
    model = arch_model(arch)
    prompts = _prompts(model, [6, 9, 6, 9, 7])
    cfg = SafetyConfig(max_new_tokens=5, max_rows=4)
    conditions = [[], [Head(0, 1)], [Head(1, 2), Head(0, 0)], [[Head(1, 0)], [Head(0, 3)], [], [Head(1, 0)], [Head(1, 1)]]]
    got = S.asr_many(model, prompts, conditions, cfg)
    for cond, result in zip(conditions, got):
        per_prompt = cond and isinstance(cond[0], list)
        groups = cond if per_prompt else [cond] * len(prompts)
        want = [_slow_responses(model, [p], g, cfg.max_new_tokens)[0] for p, g in zip(prompts, groups)]
        assert result.responses == want
        assert result.verdicts == [cfg.judge.judge(r) for r in want]
        assert result.heads == [list(g) for g in groups]
    assert len({tuple(r.responses) for r in got}) > 1  # guard: the ablations change some answer
    # one generation per batch of <= 4 equal-length (request, heads) rows: 5 prompts x 4 conditions = 20
    # rows, of which one repeats (prompt 2's empty group is its base row) -> length 6: 7 rows, 9: 8, 7: 4
    prefills = []
    from workbench.models import generate as gen_module

    original = gen_module.greedy_generate

    def counted(model_, tokens, *args, **kwargs):
        prefills.append(tokens.shape[0])
        return original(model_, tokens, *args, **kwargs)

    monkeypatch.setattr("workbench.record.decode.greedy_generate", counted)
    S.asr_many(model, prompts, conditions, cfg)
    assert sorted(prefills) == sorted([4, 3, 4, 4, 4])
