"""KV-cached recorded decoding: one prefill, then one token per step against the cache.

    result = generate(model, prompt, 16, record=RecorderConfig(columns=False))
    result.tokens          # [B, n] generated ids
    result.prefill         # AttentionRecord of the prompt (N queries)
    result.steps[k]        # AttentionRecord of step k: 1 query at position N + k against N + k + 1 keys

This is what the Retrieval_Head reference does (flash prefill, then attention rows only for the decoded
tokens), and what every generation path of the workbench runs: needles, attack-success answers, the
playground. A step costs O(N) attention and one token's MLPs instead of a whole forward. Hooks (uniform,
zero and mean ablation) fire on each step's new token, and kernel-side edits
(`workbench.interventions.kernel_edits`) apply to the cached keys, so an ablated or masked generation is
token-for-token the uncached one (tests/record/test_decode.py, on the architecture matrix).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from workbench.models.generate import greedy_generate
from workbench.models.model import Model
from workbench.record.config import RecorderConfig
from workbench.record.record import AttentionRecord
from workbench.record.recorder import AttentionRecorder

#: record nothing, compute attention with the instrumented O(N)-memory core (decoding only)
NO_RECORD = RecorderConfig(layers=(), columns=False)


@dataclass
class DecodeResult:
    tokens: torch.Tensor  # [B, n_new] generated ids (rows that stopped are padded with their stop id)
    prefill: AttentionRecord | None = None
    steps: list[AttentionRecord] = field(default_factory=list)

    @property
    def records(self) -> list[AttentionRecord]:
        """Prefill, then one record per decode step (the step that produced token k + 1 is ``steps[k]``)."""
        return ([self.prefill] if self.prefill is not None else []) + list(self.steps)


@torch.no_grad()
def generate(
    model: Model,
    tokens: torch.Tensor,
    max_new_tokens: int,
    stop_ids: Iterable[int] = (),
    record: RecorderConfig | None = None,
) -> DecodeResult:
    """Greedy cached decoding under the instrumented attention; ``record`` keeps per-step statistics
    (default: nothing recorded). A recorder already installed by the caller is reused, not nested."""
    cfg = NO_RECORD if record is None else record
    with AttentionRecorder(model, cfg) as rec:
        out = greedy_generate(model, tokens, max_new_tokens, stop_ids, cache=True)
    records = rec.records if cfg.layers != () else []
    if not records:
        return DecodeResult(tokens=out)
    return DecodeResult(tokens=out, prefill=records[0], steps=list(records[1:]))
