"""The instrumented core checked against the bridge's own attention, on the model at hand.

Adapters are tested on the architectures in the test matrix; a model nobody has tried could still
compute something the adapter does not know about. So before the recorder trusts its core on a model,
it runs a short probe through both, layer by layer: each layer's attention gets the *same* input in
both runs (the plain run's input is fed to the instrumented layer), so a difference is that layer's own
and does not compound. Any layer beyond tolerance raises `CoreMismatchError`; a pass is cached on the
`Model` per (backend, dtype, device).

Tolerance, relative to the largest |output| of the layer: 1e-4 in float32/float64 (the core sums the
softmax in another order than the bridge's dense matmuls: observed ~1e-6 on the test matrix; a missing
RoPE or mask is O(0.1-1)); 1e-2 in float16 and 5e-2 in bfloat16 (the bridge rounds the scores to the
model dtype before its softmax, 2**-11 / 2**-8 relative, which moves peaked rows; observed worst on the
test matrix 1.8e-3 and 1.2e-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from workbench.errors import UnsupportedModelError
from workbench.models.attention_spec import LayerAttention
from workbench.models.hooks import temporary_hooks
from workbench.models.model import Model

DEFAULT_PROBE_TOKENS = 48
MAX_PROBE_TOKENS = 1024


class CoreMismatchError(UnsupportedModelError):
    """The instrumented core disagrees with the model's own attention on this model."""


@dataclass(frozen=True)
class CoreCheck:
    """Outcome of one self-check: the per-layer relative errors and what the probe covered."""

    backend: str
    dtype: str
    n_tokens: int
    tolerance: float
    errors: tuple[float, ...]  # per layer: max |instrumented - bridge| / max |bridge|
    windows_exercised: bool  # the probe was longer than every sliding window

    @property
    def worst(self) -> tuple[int, float]:
        layer = max(range(len(self.errors)), key=lambda i: self.errors[i])
        return layer, self.errors[layer]


def tolerance_for(dtype: torch.dtype) -> float:
    """Observed worst on the 17-model matrix: 3e-7 (fp32), 1.8e-3 (fp16), 1.2e-2 (bf16)."""
    if dtype in (torch.float32, torch.float64):
        return 1e-4
    return 1e-2 if dtype == torch.float16 else 5e-2


def probe_length(specs: list[LayerAttention]) -> tuple[int, bool]:
    """Long enough to cross every sliding window (up to `MAX_PROBE_TOKENS`); whether it does."""
    windows = [s.sliding_window for s in specs if s.sliding_window is not None]
    if not windows:
        return DEFAULT_PROBE_TOKENS, True
    n = max(DEFAULT_PROBE_TOKENS, max(windows) + 16)
    return min(n, MAX_PROBE_TOKENS), n <= MAX_PROBE_TOKENS


def probe_tokens(model: Model, n: int) -> torch.Tensor:
    """Seeded random ids avoiding special tokens (after a BOS when the tokenizer prepends one)."""
    special = set(getattr(model.tokenizer, "all_special_ids", []) or [])
    vocab = model.geometry.vocab_size
    allowed = torch.tensor([i for i in range(min(vocab, len(model.tokenizer))) if i not in special] or [0])
    g = torch.Generator().manual_seed(0)
    ids = allowed[torch.randint(len(allowed), (1, n), generator=g)]
    bos = model.geometry.bos
    if bos.prepends and bos.token_id is not None:
        ids[0, 0] = bos.token_id
    return ids.to(model.device)


def _attn_points(model: Model) -> list[Any]:
    return [block.attn for block in model.bridge.blocks]


@torch.no_grad()
def run_self_check(model: Model, backend: str, install: Any) -> CoreCheck:
    """Compare every layer of the instrumented core (installed by ``install()``) with the bridge.

    ``install`` is a context-manager factory that patches the model's attention (the recorder's
    `instrumented_attention` with a plain core). Raises `CoreMismatchError` on a mismatch.
    """
    from workbench.record.patch import layer_specs

    specs = layer_specs(model.bridge)
    n, exercised = probe_length(specs)
    tokens = probe_tokens(model, n)
    attns = _attn_points(model)
    inputs: dict[int, torch.Tensor] = {}
    plain: dict[int, torch.Tensor] = {}
    mine: dict[int, torch.Tensor] = {}

    def keep(box: dict, layer: int, replace: bool = False):
        def fn(t: torch.Tensor, hook: Any) -> torch.Tensor:
            if replace:
                return inputs[layer]
            box[layer] = t.detach().clone()
            return t

        return fn

    points = [(a.hook_in, keep(inputs, i)) for i, a in enumerate(attns)]
    points += [(a.hook_out, keep(plain, i)) for i, a in enumerate(attns)]
    try:
        with temporary_hooks(points):
            model.bridge(tokens)
    except RuntimeError as exc:
        raise CoreMismatchError(
            f"the self-check could not run the model's own attention on a {n}-token probe "
            f"({type(exc).__name__}: {exc}), so the instrumented core cannot be checked",
            "try --dtype float32 (some bridges fail in half precision), or self_check=False at your own risk",
        ) from exc
    points = [(a.hook_in, keep(inputs, i, replace=True)) for i, a in enumerate(attns)]
    points += [(a.hook_out, keep(mine, i)) for i, a in enumerate(attns)]
    with install(), temporary_hooks(points):
        model.bridge(tokens)
    missing = [i for i in range(len(attns)) if i not in plain or i not in mine]
    if missing:
        raise CoreMismatchError(
            f"the self-check could not read the attention output of layers {missing}",
            "report this model; meanwhile use AttentionRecorder(backend='eager') or self_check=False at your own risk",
        )
    errors = []
    for i in range(len(attns)):
        ref, got = plain[i].double(), mine[i].double()
        errors.append(float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30)))
    check = CoreCheck(backend, str(model.dtype).removeprefix("torch."), n, tolerance_for(model.dtype), tuple(errors), exercised)
    layer, err = check.worst
    if err > check.tolerance or err != err:  # NaN counts as a mismatch
        raise CoreMismatchError(
            f"the instrumented attention ({backend}) differs from the model's own attention at layer {layer}: "
            f"relative error {err:.3g} > tolerance {check.tolerance:g} on a {n}-token probe "
            f"({type(attns[layer]).__name__}, {specs[layer].describe()}); its numbers would be wrong",
            "use AttentionRecorder(backend='eager') on short prompts for this model and report the architecture",
        )
    return check


def ensure_checked(model: Model, backend: str, install: Any) -> CoreCheck | None:
    """Run the self-check once per (backend, dtype, device) on ``model``; later calls reuse the pass.

    Kernel edits in force (a recorder opened inside `kernel_edits`) and the workbench's eager pattern
    edits are suspended during the check: it compares the core with the model's own, unedited attention.
    """
    from workbench.models.generate import EDITS_ATTR

    cache = getattr(model, "core_checks", None)
    key = (backend, str(model.dtype), str(model.device))
    if isinstance(cache, dict) and key in cache:
        return cache[key]
    from workbench.models.hooks import SELF_CHECK_ATTR

    edits = model.bridge.__dict__.pop(EDITS_ATTR, None)
    model.bridge.__dict__[SELF_CHECK_ATTR] = True
    try:
        check = run_self_check(model, backend, install)
    finally:
        model.bridge.__dict__.pop(SELF_CHECK_ATTR, None)
        if edits is not None:
            model.bridge.__dict__[EDITS_ATTR] = edits
    if isinstance(cache, dict):
        cache[key] = check
    return check
