"""Sink analysis: planted sink head and token found; statistics equal the naive definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.analysis.sinks import (
    SinkConfig,
    analyze_sink_records,
    analyze_sinks,
    massive_activations,
    mean_received,
    overlap_with_sinks,
)
from workbench.interventions.attention_edits import act_calibrate, remove_keys
from workbench.models import load_model
from workbench.models.heads import Head
from workbench.record import record_attention

SINK_TOKEN = 40  # token id planted as a hidden sink
MASSIVE_TOKEN = 41
PLANTED = Head(1, 2)


def plant_sink(model, head: Head, token_id: int) -> None:
    """Make one head attend to ``token_id`` wherever it appears (built here, not trained).

    Every embedding gets a constant component on dim 0 and the sink token also one on dim 1;
    the planted head's query reads dim 0 and its key reads dim 1, both into the lowest-frequency
    RoPE pair, whose rotation is negligible over a few hundred positions.
    """
    hf = model.hf_model
    cfg = hf.config
    d = cfg.head_dim
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    slot = d // 2 - 1  # lowest-frequency rotary pair (slot, slot + d/2)
    with torch.no_grad():
        emb = hf.model.embed_tokens.weight
        emb[:, 0] = 1.0
        emb[:, 1] = 0.0  # only the sink token carries dim 1, so the head ignores every other key
        emb[token_id, 1] = 1.0
        attn = hf.model.layers[head.layer].self_attn
        q_rows = slice(head.head * d, (head.head + 1) * d)
        attn.q_proj.weight[q_rows] = 0.0
        attn.q_proj.weight[head.head * d + slot, 0] = 4.0
        kv = head.head // group
        k_rows = slice(kv * d, (kv + 1) * d)
        attn.k_proj.weight[k_rows] = 0.0
        attn.k_proj.weight[kv * d + slot, 1] = 4.0
        attn.v_proj.weight[k_rows] *= 50.0  # make what the head reads matter for the loss


@pytest.fixture(scope="module")
def planted(tiny_model_dir):
    model = load_model(tiny_model_dir("llama"), device="cpu")
    plant_sink(model, PLANTED, SINK_TOKEN)
    with torch.no_grad():
        model.hf_model.model.embed_tokens.weight[MASSIVE_TOKEN, 5] = 4000.0
    return model


def _prompt(n=96, seed=0, sink_at=(30, 60)):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 40, (1, n), generator=g)
    tokens[0, 0] = 1  # BOS
    for pos in sink_at:
        tokens[0, pos] = SINK_TOKEN
    return tokens


def test_planted_sink_head_and_tokens_are_found(planted):
    prompts = [_prompt(seed=s) for s in range(3)]
    report = analyze_sinks(planted, prompts, recorder=None)
    ranked = report.scores.ranked("hidden_sink_mass")
    assert ranked[0][0] == PLANTED, ranked[:3]
    hidden = report.hidden_sinks(PLANTED)
    assert {(t.prompt, t.position) for t in hidden} == {(p, pos) for p in range(3) for pos in (30, 60)}
    assert all(t.token == planted.to_str_tokens([SINK_TOKEN])[0] for t in hidden)
    sunk, seen = report.token_sink_frequency[hidden[0].token]
    assert sunk == seen == 6
    assert 0.0 <= report.sink_rate <= 100.0 and report.sink_rate_per_layer.shape == (2,)


def test_statistics_equal_the_naive_definitions(tiny_model_dir):
    """First-token mass, Gu's alpha_1 and ACT's column mean, from the recorder vs the full pattern."""
    model = load_model(tiny_model_dir("llama"), device="cpu")
    tokens = torch.randint(4, 60, (1, 80), generator=torch.Generator().manual_seed(3))
    _, fast = record_attention(model, tokens, backend="torch", chunk=16)
    _, eager = record_attention(model, tokens, backend="eager", keep_patterns=True)
    got = mean_received(fast)[0]  # [L, H, N]
    for layer, pattern in eager.patterns.items():
        p = pattern[0].double()  # [H, N, N]
        n = p.shape[-1]
        naive_alpha = p.sum(-2) / torch.arange(n, 0, -1, dtype=torch.float64)  # Gu / ACT column mean
        assert np.allclose(got[layer], naive_alpha.numpy(), atol=1e-5)
        naive_first = p[:, :, 0].mean(-1)
        assert np.allclose(fast.layers[layer].first_k_mass[0].double().mean(-1).numpy(), naive_first.numpy(), atol=1e-5)
    cfg = SinkConfig()
    report = analyze_sinks(model, [tokens], cfg)
    alpha1 = np.stack([eager.patterns[l][0, :, :, 0].double().mean(-1).numpy() for l in range(2)])
    assert np.allclose(report.scores["first_token_mass"], alpha1, atol=1e-5)
    assert np.allclose(report.sink_rate_per_layer, 100 * (alpha1 > cfg.eps).mean(-1))


def test_massive_activation_found_and_overlaps_the_sink(planted):
    tokens = _prompt()
    tokens[0, 30] = MASSIVE_TOKEN  # the massive token replaces the first planted sink
    report = massive_activations(planted, tokens)
    assert report.massive and {m.position for m in report.massive} == {30}
    assert {m.dim for m in report.massive} == {5}
    assert report.top_values.shape == (2, 3) and (report.top_values[:, 0] > 1000 * report.medians).all()
    sinks = analyze_sinks(planted, [_prompt()])
    assert overlap_with_sinks(report, sinks) == 1.0


def test_remove_keys_and_act_keep_rows_normalised():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 12, 12, generator=g)
    scores[:, :, 5] += 4.0  # a hidden sink at key 5
    causal = torch.ones(12, 12).tril().bool()
    p = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1)
    r = remove_keys(p, [0])
    assert torch.allclose(r.sum(-1), torch.ones(2, 12))
    assert (r[:, 1:, 0] == 0).all() and torch.equal(r[:, 0], p[:, 0])
    a = act_calibrate(p, beta=0.4, tau=0.1)
    assert torch.allclose(a.sum(-1), torch.ones(2, 12), atol=1e-6)
    assert torch.allclose(a[:, 6:, 5], 0.4 * p[:, 6:, 5])  # the hidden sink is scaled by beta
    assert torch.equal(a[:, :, 0] >= p[:, :, 0], torch.ones(2, 12, dtype=torch.bool))  # first token gains mass


def test_first_token_removal_and_act_search_bookkeeping(planted):
    from workbench.analysis.metrics import lm_loss
    from workbench.analysis.sinks import act_head_search, first_token_removal_check
    from workbench.interventions.attention_edits import act_calibrated, removed_first_token

    # three planted sink tokens: ACT spares its first detected sink (here the one at 10, since this
    # head ignores key 0) and calibrates the others
    prompts = [_prompt(64, seed=s, sink_at=(10, 30, 45)) for s in range(2)]
    report = analyze_sinks(planted, prompts)
    check = first_token_removal_check(planted, report, prompts, k=2)
    assert check.top_heads == report.scores.top("first_token_mass", 2)
    with removed_first_token(planted, check.top_heads):
        assert lm_loss(planted, prompts) == pytest.approx(check.top_loss)
    assert check.base_loss == pytest.approx(lm_loss(planted, prompts))  # hooks are gone again

    cal, held_out = prompts[:1], prompts[1:]
    result = act_head_search(
        planted, lambda: -lm_loss(planted, cal), lambda: -lm_loss(planted, held_out), candidates=[PLANTED, Head(0, 0)]
    )
    assert set(result.single_head_gain) == {PLANTED, Head(0, 0)}
    assert result.selected == [h for h in result.candidates if result.single_head_gain[h] > 0]
    if result.selected:
        with act_calibrated(planted, result.selected):
            assert -lm_loss(planted, held_out) == pytest.approx(result.evaluation_after)
    # the planted head's hidden sinks are real, so calibrating it must change the loss
    assert result.single_head_gain[PLANTED] != 0.0


@pytest.mark.slow
def test_sinks_run_at_8k_tokens_on_cpu(tmp_path):
    from workbench.models.tiny import build_tiny_model

    model = load_model(build_tiny_model(tmp_path, "llama", n_ctx=8192), device="cpu")
    tokens = torch.randint(4, 60, (1, 8192), generator=torch.Generator().manual_seed(0))
    tokens[0, 0] = 1
    report = analyze_sinks(model, [tokens])
    assert report.scores["first_token_mass"].shape == (2, 4)
    assert np.isfinite(report.scores["first_token_mass"]).all()


def test_act_rows_entirely_on_a_sink_share_the_freed_mass_uniformly():
    p = torch.zeros(1, 6, 6)
    p[0, 0, 0] = 1.0
    p[0, 1, :2] = 0.5
    p[0, 2:, 2] = 1.0  # every later query looks only at key 2: rest mass is exactly zero
    a = act_calibrate(p, beta=0.4, tau=0.1)
    assert torch.allclose(a.sum(-1), torch.ones(1, 6))
    assert torch.allclose(a[0, 5, 2], torch.tensor(0.4))
    # the freed 0.6 goes uniformly to the 5 visible non-sink keys of query 5
    assert torch.allclose(a[0, 5, [0, 1, 3, 4, 5]], torch.full((5,), 0.12))


def test_sink_removal_check_hits_the_planted_head(planted):
    from workbench.analysis.sinks import loss_without_sinks, sink_removal_check

    prompts = [_prompt(64, seed=s, sink_at=(20,)) for s in range(2)]
    report = analyze_sinks(planted, prompts)
    assert report.scores.top("sink_attention_share", 1) == [PLANTED]
    assert report.scores.score("sink_attention_share", PLANTED) > 0.5
    check = sink_removal_check(planted, report, prompts, k=1)
    assert check.top_heads == [PLANTED]
    # removing the planted head's sink changes the loss; the weakest head's (few or no sinks) barely
    assert abs(check.top_delta) > 10 * abs(check.bottom_delta)
    assert loss_without_sinks(planted, report, prompts, []) == pytest.approx(check.base_loss)


def _hand_record(pattern: torch.Tensor):
    """An AttentionRecord of one layer and one head whose full pattern is ``pattern`` [N, N]."""
    from workbench.record.eager import stats_from_pattern
    from workbench.record.record import AttentionRecord

    n = pattern.shape[-1]
    stats = stats_from_pattern(None, pattern[None, None], first_k=1, window=16, columns=True, pool=16)
    return AttentionRecord(tokens=torch.arange(n)[None], layers=[stats], backend="eager")


def _pattern_with(n: int, weights: dict[int, float]) -> torch.Tensor:
    """Causal rows: each query puts weights[j] on key j (once it can see it), the rest uniformly."""
    p = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        fixed = {j: w for j, w in weights.items() if j <= i}
        free = [j for j in range(i + 1) if j not in fixed]
        rest = 1.0 - sum(fixed.values())
        for j, w in fixed.items():
            p[i, j] = w if free else w / sum(fixed.values())
        for j in free:
            p[i, j] = rest / len(free)
    return p


def test_hidden_sinks_need_a_quarter_of_the_queries_and_acts_own_count_is_kept():
    """Key 10 gets 0.3 from every later query (a sink); key 56 gets 0.9 from the last 8 queries only
    (a tail artefact: mean 0.9 over 8 queries). Only key 10 is a hidden sink; ACT's own rule finds
    both and spares its first detected one (key 10), so its count is 1."""
    record = _hand_record(_pattern_with(64, {10: 0.3, 56: 0.9}))
    report = analyze_sink_records([record], [[f"t{i}" for i in range(64)]], 1, 1)
    assert [t.position for t in report.hidden_sinks()] == [10]
    assert report.scores.score("hidden_sink_count", Head(0, 0)) == 1.0
    assert report.scores.score("act_hidden_sink_count", Head(0, 0)) == 1.0


def test_act_spares_its_first_detected_sink_not_key_0():
    """Key 0 is no sink here; ACT (indices[1:]) spares key 5, its first detected sink, and calibrates 20."""
    p = _pattern_with(48, {5: 0.3, 20: 0.3})[None].float()
    a = act_calibrate(p, beta=0.4, tau=0.1)
    assert a[0, 30, 5] > p[0, 30, 5]  # spared: not scaled by beta, it even gets its share of the freed mass
    torch.testing.assert_close(a[0, 30, 20], 0.4 * p[0, 30, 20])  # calibrated
    torch.testing.assert_close(a.sum(-1), torch.ones(1, 48))


def test_act_searches_the_layers_acts_code_calibrates():
    from workbench.analysis.sinks import act_head_search
    from workbench.interventions.attention_edits import act_layers

    assert act_layers(32) == list(range(2, 31))  # Llama-2-7B in ACT's code: layers 2..30
    model = load_model("organism-4l", device="cpu")
    result = act_head_search(model, lambda: 0.0, lambda: 0.0)
    assert {h.layer for h in result.candidates} == {2}
    assert (
        act_head_search(model, lambda: 0.0, lambda: 0.0, skip_first_layers=0, skip_last_layers=0).candidates
        == model.geometry.all_heads()
    )
