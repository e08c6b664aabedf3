"""KV-cached recorded decoding is the uncached loop, token for token, on every architecture of the matrix.

The reference is the loop the workbench used before (every step re-runs the whole sequence on the
bridge's own eager attention, hooks and pattern edits included). Compared: the greedy tokens (exact),
with no ablation, uniform, zero and mean ablation, a streaming window (KV budget), first-token removal
and ACT reweighting; and the per-step statistics against the rows of one recorded pass over the same
tokens (1e-4, the architecture matrix's statistics tolerance: float32 in another order).
"""

from __future__ import annotations

import contextlib
from typing import cast

import pytest
import torch

from workbench.interventions import ablate_heads, head_means
from workbench.interventions.ablation import AblationMode
from workbench.interventions.attention_edits import removed_first_token
from workbench.interventions.kernel_edits import kernel_edits
from workbench.interventions.kv_budget import streaming_heads
from workbench.kernels import HeadEdit
from workbench.models import load_model
from workbench.models.attention_spec import bridge_kind
from workbench.models.generate import greedy_generate
from workbench.models.tiny import TINY_ARCHS
from workbench.record import AttentionRecorder, RecorderConfig, record_attention
from workbench.record.decode import generate

N_PROMPT, N_NEW = 20, 10
TOL = 1e-4
HEADS = ["L0H1", "L1H0"]


@pytest.fixture(scope="module")
def arch_model(tiny_model_dir):
    cache: dict[str, object] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_model(tiny_model_dir(arch, peaked=True), device="cpu")
        return cache[arch]

    return get


def _prompt(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, model.geometry.vocab_size, (2, N_PROMPT), generator=g)
    ids[:, 0] = model.geometry.bos.token_id
    return ids


def _ablation(model, mode: str, prompt: torch.Tensor):
    if mode == "none":
        return contextlib.nullcontext()
    means = head_means(model, prompt) if mode == "mean" else None
    return ablate_heads(model, HEADS, cast(AblationMode, mode), means=means)


@pytest.mark.parametrize("mode", ["none", "uniform", "zero", "mean"])
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_cached_generation_is_the_uncached_loop(arch, mode, arch_model):
    model = arch_model(arch)
    prompt = _prompt(model)
    with _ablation(model, mode, prompt):
        want = greedy_generate(model, prompt, N_NEW, cache=False)  # eager bridge, whole sequence per step
        got = generate(model, prompt, N_NEW).tokens
    assert torch.equal(got, want)
    if mode != "none":  # the ablation changes the generation somewhere in the matrix (checked per arch below)
        assert got.shape == (2, N_NEW)


def test_the_ablations_change_the_generations(arch_model):
    """Guard for the test above: on most architectures each ablation changes some generated token."""
    changed = {mode: 0 for mode in ("uniform", "zero", "mean")}
    for arch in TINY_ARCHS:
        model = arch_model(arch)
        prompt = _prompt(model)
        base = generate(model, prompt, N_NEW).tokens
        for mode in changed:
            with _ablation(model, mode, prompt):
                changed[mode] += int(not torch.equal(generate(model, prompt, N_NEW).tokens, base))
    assert all(n >= len(TINY_ARCHS) // 2 for n in changed.values()), changed


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_each_decode_step_records_the_rows_of_a_full_pass(arch, arch_model):
    model = arch_model(arch)
    prompt = _prompt(model, seed=1)
    cfg = RecorderConfig(backend="torch", columns=False, chunk=8)
    result = generate(model, prompt, N_NEW, record=cfg)
    assert result.prefill is not None and len(result.steps) == N_NEW - 1  # the last token is never fed back
    full = torch.cat([prompt, result.tokens[:, :-1]], dim=1)
    _, whole = record_attention(model, full, cfg)
    for layer in range(model.geometry.n_layers):
        ref = whole.layers[layer]
        pre = result.prefill.layers[layer]
        for name in ("lse", "entropy", "pmax", "first_k_mass", "window_mass"):
            torch.testing.assert_close(getattr(pre, name), getattr(ref, name)[..., :N_PROMPT], atol=TOL, rtol=0)
            step_rows = torch.cat([getattr(s.layers[layer], name) for s in result.steps], dim=-1)
            torch.testing.assert_close(
                step_rows, getattr(ref, name)[..., N_PROMPT:], atol=TOL, rtol=0, msg=f"{arch} L{layer} {name}"
            )
        step_argmax = torch.cat([s.layers[layer].argmax for s in result.steps], dim=-1)
        assert torch.equal(step_argmax, ref.argmax[..., N_PROMPT:])
        assert all(s.layers[layer].q_offset == N_PROMPT + k for k, s in enumerate(result.steps))


def _streaming(model):
    return streaming_heads(model, {h: (2, 5) for h in HEADS})


def _removal(model):
    return removed_first_token(model, HEADS)


@pytest.mark.parametrize("edit", ["streaming", "first-token removal"])
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_cached_generation_with_key_masks_is_the_eager_masked_loop(arch, edit, arch_model):
    """The eager loop applies the mask as a hook on the full scores/pattern; the cached loop as a kernel edit."""
    model = arch_model(arch)
    prompt = _prompt(model, seed=2)
    install = _streaming if edit == "streaming" else _removal
    delegating = bridge_kind(model.bridge.blocks[0].attn) == "delegating"
    with install(model):
        if delegating:
            # GPT-J's bridge runs the HF module and discards edits of hook_attn_scores / hook_pattern
            # (TransformerLens warns): the eager loop was never masked there, so the reference is the
            # uncached loop on the instrumented core
            with AttentionRecorder(model, layers=(), columns=False):
                want = greedy_generate(model, prompt, N_NEW, cache=False)
        else:
            want = greedy_generate(model, prompt, N_NEW, cache=False)
        got = generate(model, prompt, N_NEW).tokens
    assert torch.equal(got, want)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_cached_generation_with_act_is_the_uncached_instrumented_loop(arch, arch_model):
    """ACT's sink set comes from a recorded prefill; with the set fixed, cached and uncached decoding agree."""
    model = arch_model(arch)
    prompt = _prompt(model, seed=3)
    edits = {
        0: [HeadEdit(head=1, act_sinks=(0, 3), act_beta=0.2)],
        1: [HeadEdit(head=0, rows=(1,), act_sinks=(0,), act_beta=0.4)],
    }
    with kernel_edits(model, edits):
        with AttentionRecorder(model, layers=(), columns=False):
            want = greedy_generate(model, prompt, N_NEW, cache=False)
        got = generate(model, prompt, N_NEW).tokens
    assert torch.equal(got, want)


def test_kernel_edits_refuse_the_eager_attention(arch_model):
    from workbench.errors import WorkbenchError

    model = arch_model("llama")
    with (
        kernel_edits(model, {0: [HeadEdit(head=0, removed=(0,))]}),
        pytest.raises(WorkbenchError, match="instrumented attention"),
    ):
        model.logits(_prompt(model))
    model.logits(_prompt(model))  # the refusal hook is gone after the block


def test_cached_decoding_outside_the_instrumented_core_is_refused(arch_model):
    from workbench.errors import WorkbenchError

    model = arch_model("llama")
    with pytest.raises(WorkbenchError, match="instrumented attention"):
        greedy_generate(model, _prompt(model), 2, cache=True)
