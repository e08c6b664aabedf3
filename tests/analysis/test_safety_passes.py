"""The safety family's passes on a tiny model, counted on the bridge's forward, against the formulas.

With right padding exact (causal attention), Q requests, R = ``max_rows``, L·H heads, G = ``max_group``:

* sweep prefills (no KV cache): ceil(Q/R) for the base, then one sweep per Sahara step over
  (candidate, request) rows, the first of which is Ships: sum_{s=0}^{G-1} ceil((L·H - s)·Q / R);
* generations: the distinct (request, heads) rows of every ASR condition, batched per request length
  ℓ: sum_ℓ ceil(U_ℓ / R), U_ℓ <= n_ℓ·(k + c + 4) (k tested heads, c controls, base, top per query,
  random per query, Sahara group); each is one prefill and T - 1 cached decode steps.

On the tiny Llama (8 heads) the defaults test every head, so the controls and the per-query heads are
rows already run and U_ℓ = n_ℓ·(8 + 2) exactly.
"""

from __future__ import annotations

import collections
import math

import torch

from workbench.families import RunContext
from workbench.families.safety import SafetyFamily, SafetyFamilyConfig, safety_prompts
from workbench.record import record_attention

R, T = 8, 3


def test_safety_family_passes_are_the_formula(tiny_llama, tmp_path):
    model = tiny_llama
    harmful = tmp_path / "harmful.txt"
    harmful.write_text(
        "\n".join(" ".join(f"w{4 + (i * 7 + j) % 56}" for j in range(n)) for i, n in enumerate([3, 5, 3, 7, 5, 4]))
    )
    cfg = SafetyFamilyConfig(harmful_file=str(harmful), max_new_tokens=T, min_chars=8, max_rows=R)
    ctx = RunContext(n_prompts=6)
    prompts, benign, _ = safety_prompts(model, ctx, cfg)
    assert benign == [] and len(prompts) == 6
    record_attention(model, torch.randint(4, 60, (1, 8)))  # the core's self-check runs (and is cached) first
    counts: collections.Counter = collections.Counter()

    def pre(module, args, kwargs):
        cache = kwargs.get("past_key_values")
        if cache is None:
            counts["sweep"] += 1
        else:
            counts["step" if cache.get_seq_length() > 0 else "generation"] += 1

    handle = model.bridge.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        result = SafetyFamily(cfg).run_part(model, ctx, "group")
    finally:
        handle.remove()
    q, lh, g = len(prompts), model.geometry.n_total_heads, cfg.max_group
    assert lh == 8 and len(result.summary["asr_evaluated_heads"]) == lh  # every head tested: rows are known
    sweeps = math.ceil(q / R) + sum(math.ceil((lh - s) * q / R) for s in range(g))
    by_length = collections.Counter(int(p.numel()) for p in prompts)
    assert len(by_length) >= 3
    generations = sum(math.ceil(n * (lh + 2) / R) for n in by_length.values())
    assert counts == {"sweep": sweeps, "generation": generations, "step": generations * (T - 1)}, counts
    # the per-head loop this replaces: (1 + L·H) + (1 + sum_s (L·H - s)) + (1 + L·H) prefills per length
    # group, and one generation per condition and length
    before = len(by_length) * ((1 + lh) + (1 + sum(lh - s for s in range(g))) + (1 + lh))
    assert sweeps * 4 < before
    # the cost plan's safety steps use the same formulas (one length group per request length)
    from workbench.atlas.plan import geometry_of, safety_steps

    planned = safety_steps(geometry_of(model), cfg, q, 0, 8, T, len(by_length))
    assert planned[0].passes == sweeps
    assert planned[1].decode_steps == planned[1].passes * (T - 1)
    assert planned[1].passes >= generations - len(by_length)  # even split of requests over lengths: an estimate
