"""Per-row head masks: batch row r ablating head set S_r is `ablate_heads(S_r)` on that row alone.

Compared on a few architectures of the matrix (GQA + RoPE, learned absolute positions with fused QKV,
per-head q norms, a sliding window, a delegating bridge), for zero, mean and uniform ablation, on the
bridge's eager attention and under the instrumented core (prefill logits and cached generation).
Tolerance 1e-5 on float32 logits: each row's edit is the same element-wise operation as
`ablate_heads`, so the only difference is the order of float32 sums in a batch of R rows against a
batch of 1 (on CPU the tiny models give bitwise-equal logits; a GPU may pick other kernels per batch
size); generated tokens must be identical.
"""

from __future__ import annotations

from typing import cast

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.interventions import ablate_heads, head_means
from workbench.interventions.ablation import AblationMode, ablate_rows
from workbench.models import load_model
from workbench.record import AttentionRecorder
from workbench.record.decode import NO_RECORD, generate

ARCHS = ["llama", "gpt2", "qwen3", "mistral_window", "gptj"]
ROWS = [["L0H1"], ["L1H0", "L1H3"], [], ["L0H0", "L1H2", "L0H3"]]
TOL = 1e-5
N = 24


@pytest.fixture(scope="module")
def arch_model(tiny_model_dir):
    cache: dict[str, object] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_model(tiny_model_dir(arch, peaked=True), device="cpu")
        return cache[arch]

    return get


def _tokens(model, rows: int = len(ROWS)) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, model.geometry.vocab_size, (rows, N), generator=g)
    ids[:, 0] = model.geometry.bos.token_id
    return ids


def _one_at_a_time(model, tokens, mode, means, run) -> list[torch.Tensor]:
    out = []
    for r, heads in enumerate(ROWS):
        with ablate_heads(model, heads, cast(AblationMode, mode), means=means):
            out.append(run(tokens[r : r + 1])[0])
    return out


@pytest.mark.parametrize("mode", ["zero", "mean", "uniform"])
@pytest.mark.parametrize("arch", ARCHS)
def test_each_row_is_its_own_ablation(arch, mode, arch_model):
    model = arch_model(arch)
    tokens = _tokens(model)
    means = head_means(model, tokens) if mode == "mean" else None
    with ablate_rows(model, ROWS, cast(AblationMode, mode), means=means) as parsed:
        got = model.logits(tokens)
    assert [len(p) for p in parsed] == [len(r) for r in ROWS]
    want = _one_at_a_time(model, tokens, mode, means, model.logits)
    base = model.logits(tokens)
    for r, heads in enumerate(ROWS):
        torch.testing.assert_close(got[r], want[r], atol=TOL, rtol=TOL, msg=f"{arch} {mode} row {r}")
        if heads:  # guard: the ablation does change the row
            assert (got[r] - base[r]).abs().max() > 100 * TOL, (arch, mode, r)
    torch.testing.assert_close(got[2], base[2], atol=TOL, rtol=TOL)  # the empty row is the baseline


@pytest.mark.parametrize("mode", ["zero", "mean", "uniform"])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "gptj"])
def test_rows_under_the_instrumented_core_prefill_and_cached_decode(arch, mode, arch_model):
    model = arch_model(arch)
    tokens = _tokens(model)
    means = head_means(model, tokens) if mode == "mean" else None
    with AttentionRecorder(model, NO_RECORD):
        with ablate_rows(model, ROWS, cast(AblationMode, mode), means=means):
            got = model.logits(tokens)
        want = _one_at_a_time(model, tokens, mode, means, model.logits)
    for r in range(len(ROWS)):
        torch.testing.assert_close(got[r], want[r], atol=TOL, rtol=TOL, msg=f"{arch} {mode} row {r}")
    with ablate_rows(model, ROWS, cast(AblationMode, mode), means=means):
        gen = generate(model, tokens, 6).tokens
    alone = _one_at_a_time(model, tokens, mode, means, lambda t: generate(model, t, 6).tokens)
    for r in range(len(ROWS)):
        assert torch.equal(gen[r], alone[r]), (arch, mode, r)


def test_a_batch_of_the_wrong_size_is_refused_and_hooks_are_removed(arch_model):
    model = arch_model("llama")
    tokens = _tokens(model)
    base = model.logits(tokens)
    with pytest.raises(WorkbenchError, match="4 batch rows"):
        with ablate_rows(model, ROWS, "zero"):
            model.logits(tokens[:2])
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_rows(model, ROWS, "uniform"):
            raise RuntimeError("boom")
    assert all(not hp.fwd_hooks for hp in model.bridge.hook_points())
    torch.testing.assert_close(model.logits(tokens), base)
    with ablate_rows(model, [[], [], [], []], "zero"):  # no head anywhere: no hook, any batch size
        torch.testing.assert_close(model.logits(tokens), base)
    with pytest.raises(WorkbenchError, match="reference"):
        with ablate_rows(model, ROWS, "mean"):
            pass
    with pytest.raises(WorkbenchError, match="epsilon"):
        with ablate_rows(model, ROWS, "uniform", epsilon=0.0):
            pass


def test_rows_opened_before_the_core_self_check(tiny_model_dir):
    """A fresh model runs the core's one-row self-check inside the first generate: the row mask stands
    aside for it, and the generation is still each row's own."""
    model = load_model(tiny_model_dir("llama", peaked=True), device="cpu")
    tokens = _tokens(model)
    with ablate_rows(model, ROWS, "uniform"):
        gen = generate(model, tokens, 4).tokens
    alone = _one_at_a_time(model, tokens, "uniform", None, lambda t: generate(model, t, 4).tokens)
    for r in range(len(ROWS)):
        assert torch.equal(gen[r], alone[r]), r
