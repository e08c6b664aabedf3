"""The cost plan's pass counts are the passes the families make.

Each family runs through `Atlas` on the tiny random Llama with a counter on the bridge's forward (a
prefill is a forward without a filled KV cache; a decode step is one with it); the plan's formulas for
the same geometry and sizes must give the same numbers.
"""

from __future__ import annotations

import collections

import pytest
import torch

from workbench import Atlas
from workbench.atlas.plan import LLAMA_31_8B, Workload, assumed_costs, atlas_steps, geometry_of, plan_atlas
from workbench.record import record_attention

N_PROMPTS, MAX_TOKENS = 2, 64


@pytest.fixture
def counted(tiny_llama):
    record_attention(tiny_llama, torch.randint(4, 60, (1, 8)))  # the self-check runs (and is cached) before counting
    counts: collections.Counter = collections.Counter()

    def pre(module, args, kwargs):
        cache = kwargs.get("past_key_values")
        counts["step" if cache is not None and cache.get_seq_length() > 0 else "prefill"] += 1

    handle = tiny_llama.bridge.register_forward_pre_hook(pre, with_kwargs=True)
    yield tiny_llama, counts
    handle.remove()


@pytest.mark.parametrize("family", ["sinks", "retrieval", "temporal"])
def test_planned_passes_are_the_counted_passes(family, counted, tmp_path):
    model, counts = counted
    result = Atlas(model, families=[family], store=tmp_path / "s", n_prompts=N_PROMPTS, max_tokens=MAX_TOKENS).run()
    steps = atlas_steps(geometry_of(model), [family], {}, Workload(n_tokens=MAX_TOKENS, n_prompts=N_PROMPTS))
    # the conditional step (ACT's kept heads) runs once per distinct layer of the kept heads
    selected = result.artefacts("sinks")["act_calibration"]["selected"] if family == "sinks" else []
    kept_layers = len({h.split("H")[0] for h in selected})
    planned_prefills = sum(s.passes * (kept_layers if s.conditional else 1) for s in steps)
    assert counts["prefill"] == planned_prefills, [(s.step, s.passes) for s in steps]
    assert counts["step"] == sum(s.decode_steps for s in steps)
    assert counts["prefill"] > 0


def test_the_8b_plan_prices_every_family_and_names_its_assumptions():
    cost, notes = assumed_costs(LLAMA_31_8B)
    plan = plan_atlas(LLAMA_31_8B, ["sinks", "retrieval", "safety", "temporal"], cost, notes, work=Workload(n_tokens=131072))
    assert set(plan.by_family()) == {"sinks", "retrieval", "safety", "temporal"}
    assert all(s.seconds > 0 for s in plan.steps) and len(plan.assumptions) == 3
    # a 128k prefill: 2 * 7e9 * 131072 matmul FLOPs plus 2 * 32 * 32 * 128 * 131072^2 attention FLOPs
    longest = max(plan.steps, key=lambda s: s.tokens)
    one = longest.seconds / longest.passes
    assert 10 < one < 30, one


def test_atlas_plan_is_measured_on_the_model_and_prices_every_family(tiny_llama):
    plan = Atlas(tiny_llama, families=["sinks", "temporal"], n_prompts=N_PROMPTS, max_tokens=MAX_TOKENS).plan(measure_tokens=32)
    expected = atlas_steps(geometry_of(tiny_llama), ["sinks", "temporal"], {}, Workload(n_tokens=MAX_TOKENS, n_prompts=N_PROMPTS))
    assert [(s.step, s.passes) for s in plan.steps] == [(s.step, s.passes) for s in expected]
    assert set(plan.by_family()) == {"sinks", "temporal"} and plan.seconds > 0
    assert any("measured on cpu" in note for note in plan.assumptions), plan.assumptions


def test_a_plan_over_the_budget_is_a_warning_of_the_run(tiny_llama, tmp_path):
    atlas = Atlas(tiny_llama, families=["temporal"], store=tmp_path / "s", n_prompts=1, max_tokens=32, budget_minutes=1e-9)
    result = atlas.run()
    over = [w for w in result.warnings if "over the budget" in w]
    assert over and "temporal" in over[0], result.warnings
    generous = Atlas(tiny_llama, families=["temporal"], store=tmp_path / "s", n_prompts=1, max_tokens=32, budget_minutes=1e6)
    assert not [w for w in generous.run().warnings if "over the budget" in w]
    with pytest.raises(Exception, match="budget_minutes must be > 0"):
        Atlas(tiny_llama, budget_minutes=0)


def test_workbench_atlas_budget_says_before_the_work_that_the_plan_is_over(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from workbench.cli.main import app

    args = ["atlas", str(tiny_model_dir()), "-f", "temporal", "--n-prompts", "1", "--max-tokens", "32", "-r", str(tmp_path / "s")]
    out = CliRunner().invoke(app, [*args, "--budget", "1e-9"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    said = next(i for i, line in enumerate(lines) if "over the budget" in line)
    started = next(i for i, line in enumerate(lines) if "part all" in line and "started" in line)
    assert said < started, out.output  # said before any work, not only in the findings at the end
    bad = CliRunner().invoke(app, [*args, "--budget", "0"])
    assert bad.exit_code == 2 and "budget must be > 0" in bad.output, bad.output
