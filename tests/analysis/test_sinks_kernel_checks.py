"""The sink family's causal checks at scale: chunked-logit losses, kernel-side key removal and ACT, batched
one variant per row, against the eager references they replace.

References (written here, as the code was before): the LM loss from the model's full float32 logits; key
removal as a `hook_pattern` hook applying `remove_keys` on the bridge's eager N x N pattern; ACT as the
eager `act_calibrated` hooks with metric callables (`act_head_search`'s reference path).

Tolerances: losses 2e-5 absolute (float32 attention on both paths, chunked vs eager; observed <= 5e-7 on
removal, 1.2e-6 on ACT gains);
chunked vs full-logit cross-entropy 1e-6 relative (float64 log-softmax vs float32; observed <= 7e-8).
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from workbench.analysis import metrics
from workbench.analysis.metrics import Targets, lm_loss
from workbench.analysis.sinks import (
    BatchLimits,
    act_head_search,
    analyze_sinks,
    first_token_removal_check,
    loss_without_sinks,
    sink_evidence,
    sink_removal,
    sink_removal_check,
)
from workbench.interventions.attention_edits import act_calibrated, remove_keys
from workbench.models import load_model
from workbench.models.heads import Head
from workbench.models.hooks import temporary_hooks

TOL = 2e-5
ARCHS = ["llama", "qwen2", "gpt2"]  # GQA + RoPE, GQA + RoPE + biases, absolute positions


def full_logit_loss(model, prompts) -> float:
    """The LM loss as it was: every position's float32 logits at once."""
    total, count = 0.0, 0
    for prompt in prompts:
        tokens = prompt.view(1, -1)
        logits = model.logits(tokens)[0, :-1].float()
        total += float(F.cross_entropy(logits, tokens[0, 1:], reduction="sum"))
        count += tokens.shape[1] - 1
    return total / max(count, 1)


def eager_loss_without_sinks(model, report, prompts, heads) -> float:
    """The eager reference: a hook_pattern edit per prompt (remove_keys of each head's own sinks)."""
    total, count = 0.0, 0
    removal = sink_removal(report, len(prompts), heads)
    for p, prompt in enumerate(prompts):
        points = []
        for layer in sorted({h.layer for h in removal[p]}):
            per_head = {h.head: keys for h, keys in removal[p].items() if h.layer == layer}

            def hook(pattern: torch.Tensor, hook: Any, per_head: dict = per_head) -> torch.Tensor:
                out = pattern.clone()
                for h, keys in per_head.items():
                    out[:, h] = remove_keys(pattern[:, h].float(), keys).to(pattern.dtype)
                return out

            points.append((model.bridge.blocks[layer].attn.hook_pattern, hook))
        with temporary_hooks(points):
            loss = full_logit_loss(model, [prompt])
        total += loss * (prompt.numel() - 1)
        count += prompt.numel() - 1
    return total / count


def _prompts(n: int = 2, length: int = 40, vocab: int = 60) -> list[torch.Tensor]:
    return [torch.randint(4, vocab, (1, length), generator=torch.Generator().manual_seed(s)) for s in range(n)]


@pytest.fixture(scope="module", params=ARCHS)
def peaked(request, tiny_model_dir):
    return load_model(tiny_model_dir(request.param, peaked=True), device="cpu")


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "cohere"])
def test_chunked_lm_loss_equals_the_full_logit_loss(arch, tiny_model_dir, monkeypatch):
    """Gemma 2 soft-caps its final logits and Cohere scales them: the chunked path applies both. No
    unembedding call sees more than the chunk's positions."""
    model = load_model(tiny_model_dir(arch), device="cpu")
    prompts = _prompts(3, 30) + [torch.tensor([[1, 5]])]
    vocab = model.hf_model.config.vocab_size
    monkeypatch.setattr(metrics, "LOGIT_CHUNK_ELEMENTS", 4 * vocab)
    widths: list[int] = []
    head = model.hf_model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda mod, args: widths.append(int(args[0].shape[-2])))
    try:
        got = lm_loss(model, prompts)
    finally:
        handle.remove()
    want = full_logit_loss(model, prompts)
    assert got == pytest.approx(want, rel=1e-6)
    assert max(widths) <= 4  # the model's own call is logits_to_keep=1; ours are chunks of 4 positions


def test_removal_checks_equal_the_eager_pattern_hooks(peaked):
    prompts = _prompts()
    report = analyze_sinks(peaked, prompts)
    assert report.base_loss == pytest.approx(full_logit_loss(peaked, prompts), abs=TOL)
    heads = peaked.geometry.all_heads()
    evidence = sink_evidence(peaked, report, prompts, heads, k=2, limits=BatchLimits(rows=3))
    moved = 0.0
    for head in heads:
        want = eager_loss_without_sinks(peaked, report, prompts, [head])
        assert evidence.head_loss[head] == pytest.approx(want, abs=TOL), head
        moved = max(moved, abs(want - report.base_loss))
    assert moved > 50 * TOL  # some removal changes the loss far beyond the tolerance
    sink = sink_removal_check(peaked, report, prompts, k=2)
    assert sink.top_loss == pytest.approx(eager_loss_without_sinks(peaked, report, prompts, sink.top_heads), abs=TOL)
    assert sink.bottom_loss == pytest.approx(eager_loss_without_sinks(peaked, report, prompts, sink.bottom_heads), abs=TOL)
    assert (sink.top_loss, sink.bottom_loss) == pytest.approx(
        (evidence.sink_check.top_loss, evidence.sink_check.bottom_loss), abs=1e-6
    )
    assert loss_without_sinks(peaked, report, prompts, sink.top_heads) == pytest.approx(sink.top_loss, abs=1e-6)


def test_first_token_check_equals_the_eager_hook(peaked):
    from workbench.interventions.attention_edits import edited_patterns

    prompts = _prompts()
    report = analyze_sinks(peaked, prompts)
    check = first_token_removal_check(peaked, report, prompts, k=2)
    for heads, loss in ((check.top_heads, check.top_loss), (check.bottom_heads, check.bottom_loss)):
        with edited_patterns(peaked, heads, lambda p: remove_keys(p, [0])):
            assert loss == pytest.approx(full_logit_loss(peaked, prompts), abs=TOL)


def test_batched_variants_equal_one_at_a_time_and_the_passes_are_counted(tiny_model_dir):
    model = load_model(tiny_model_dir("llama", peaked=True), device="cpu")
    prompts = _prompts(3)
    report = analyze_sinks(model, prompts)
    heads = model.geometry.all_heads()
    counts: collections.Counter = collections.Counter()

    def pre(module, args, kwargs):
        counts[int(args[0].shape[0]) if args else int(kwargs["input_ids"].shape[0])] += 1

    one = sink_evidence(model, report, prompts, heads, k=2, limits=BatchLimits(rows=1))
    handle = model.bridge.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        batched = sink_evidence(model, report, prompts, heads, k=2, limits=BatchLimits(rows=5))
    finally:
        handle.remove()
    for head in heads:
        assert batched.head_loss[head] == pytest.approx(one.head_loss[head], abs=1e-6)
    # 8 heads + 4 group variants, every one edits something on every prompt here: ceil(12 / 5) = 3
    # passes per prompt (rows 5, 5, 2); the base comes from the recording, no pass of its own
    assert dict(counts) == {5: 2 * len(prompts), 2: len(prompts)}
    # the token cap bounds the rows too: 40-token prompts, 100 tokens -> 2 rows
    assert BatchLimits(rows=8, tokens=100).rows_for(40) == 2 and BatchLimits(rows=8, tokens=10).rows_for(40) == 1


ACT_HEADS = [Head(1, 0), Head(1, 4), Head(2, 3), Head(3, 1), Head(2, 0), Head(3, 5)]


@pytest.fixture(scope="module")
def organism():
    return load_model("organism-4l", device="cpu")


def _organism_prompts(model, n: int, length: int = 48) -> list[torch.Tensor]:
    out = []
    for seed in range(n):
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(4, model.hf_model.config.vocab_size, (1, length), generator=g)
        tokens[0, 0] = model.tokenizer.bos_token_id
        out.append(tokens)
    return out


@pytest.mark.parametrize("rule", ["act", "guarded"])
def test_act_as_kernel_edits_equals_the_eager_search(organism, rule):
    """Gains per head, the kept set and the before/after metrics on both sets: the kernel path against
    the eager hooks. The kept heads span layers, so each layer's sinks are found with the earlier
    layers calibrated, as ACT does."""
    prompts = _organism_prompts(organism, 4)
    cal, held = prompts[:2], prompts[2:]
    kernel = act_head_search(
        organism,
        [Targets.next_tokens(p) for p in cal],
        [Targets.next_tokens(p) for p in held],
        candidates=ACT_HEADS,
        sink_rule=rule,
        limits=BatchLimits(rows=4),
    )
    eager = act_head_search(
        organism,
        lambda: -full_logit_loss(organism, cal),
        lambda: -full_logit_loss(organism, held),
        candidates=ACT_HEADS,
        sink_rule=rule,
    )
    for head in ACT_HEADS:
        assert kernel.single_head_gain[head] == pytest.approx(eager.single_head_gain[head], abs=TOL), head
    assert kernel.selected == eager.selected and len({h.layer for h in kernel.selected}) > 1
    for name in ("calibration_before", "calibration_after", "evaluation_before", "evaluation_after"):
        assert getattr(kernel, name) == pytest.approx(getattr(eager, name), abs=TOL), name
    assert max(abs(g) for g in eager.single_head_gain.values()) > 50 * TOL


def test_act_skips_heads_without_sinks_and_they_truly_have_no_effect(organism):
    """With the guarded rule some organism heads have no sink besides the spared one at 48 tokens: they
    are skipped (gain 0, a reason recorded, no pass), and calibrating one eagerly changes nothing."""
    prompts = _organism_prompts(organism, 2)
    cal = [Targets.next_tokens(p) for p in prompts[:1]]
    result = act_head_search(
        organism, cal, [Targets.next_tokens(p) for p in prompts[1:]], skip_first_layers=0, sink_rule="guarded"
    )
    assert result.skipped and set(result.skipped) < set(result.candidates)
    head = next(iter(result.skipped))
    assert "no key above tau" in result.skipped[head] and "48 tokens" in result.skipped[head]
    assert result.single_head_gain[head] == 0.0 and head not in result.selected
    base = lm_loss(organism, prompts[:1])
    with act_calibrated(organism, [head], sink_rule="guarded"):
        assert lm_loss(organism, prompts[:1]) == base  # exactly: ACT moves nothing on this head
    tried = [h for h in result.candidates if h not in result.skipped]
    with act_calibrated(organism, tried[:1], sink_rule="guarded"):
        assert lm_loss(organism, prompts[:1]) != base
    # passes: 1 recorded calibration pass, ceil(tried / 8) scoring passes, then the kept set (or the base)
    # on the held-out sequence
    layers = len({h.layer for h in result.selected})
    expected = 1 + -(-len(tried) // 8) + (1 + 2 * layers if result.selected else 1)
    assert result.passes == expected


def test_a_long_sequence_is_scored_under_the_chunked_core_not_eager_attention(tiny_llama, monkeypatch):
    """Past EAGER_LOSS_MAX_TOKENS the loss forward runs under the instrumented core (no N x N scores);
    the loss equals the eager one (float32 attention in both, summed in float64)."""
    import workbench.analysis.metrics as metrics
    from workbench.models.generate import is_instrumented

    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, 60, (40,), generator=g)
    eager = metrics.lm_loss(tiny_llama, [prompt])
    seen = []
    original = metrics._forward_hidden

    def spy(model, tokens):
        seen.append(is_instrumented(model))
        return original(model, tokens)

    monkeypatch.setattr(metrics, "_forward_hidden", spy)
    monkeypatch.setattr(metrics, "EAGER_LOSS_MAX_TOKENS", 16)
    chunked = metrics.lm_loss(tiny_llama, [prompt])
    assert seen == [True]
    assert abs(chunked - eager) < 1e-5 * abs(eager)
