"""``RecorderConfig(pooled=False)``: the record keeps every statistic but the pooled map, on every backend
(eager, torch, triton), and the rest is exactly what a record with the map holds."""

from __future__ import annotations

import pytest
import torch

from workbench.analysis.sinks import SINK_RECORDING
from workbench.models import load_model
from workbench.record import record_attention

FIELDS = ("lse", "entropy", "argmax", "pmax", "first_k_mass", "window_mass", "col_sum", "col_max")


@pytest.mark.parametrize("backend", ["eager", "torch", "triton"])
def test_records_without_the_pooled_map(backend, tiny_model_dir, request):
    if backend == "triton":
        request.getfixturevalue("triton_ok")
    model = load_model(tiny_model_dir("llama"), device="cpu")
    tokens = torch.randint(4, 60, (1, 48), generator=torch.Generator().manual_seed(0))
    logits_with, with_map = record_attention(model, tokens, backend=backend, pool=16)
    logits_without, without = record_attention(model, tokens, backend=backend, pool=16, pooled=False)
    torch.testing.assert_close(logits_without, logits_with, atol=0, rtol=0)
    for layer in range(model.geometry.n_layers):
        kept, dropped = with_map.layer(layer), without.layer(layer)
        assert kept.pooled is not None and dropped.pooled is None
        for name in FIELDS:
            assert torch.equal(getattr(dropped, name), getattr(kept, name)), (layer, name)
        assert torch.equal(dropped.col_mean, kept.col_mean)


def test_the_sink_family_records_without_it():
    assert SINK_RECORDING.columns and not SINK_RECORDING.pooled
