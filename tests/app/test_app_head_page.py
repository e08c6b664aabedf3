"""Issue 27, the head page: it leads with the head's roles, verdict and causal checks (above the
metric table), opens its pattern on the prompt the atlas scored the head on (rebuilt from the run's
seed when the run had no prompt file), and warns beside the prompt box when the typed text is
mostly the model's unknown token."""

from __future__ import annotations

import pytest
import torch
from app_helpers import running_app, text_of, wait_for
from selenium.webdriver.common.keys import Keys

from workbench.app.data import scored_prompts
from workbench.app.live import PromptChecker, PromptSpec, prompt_tokens
from workbench.store import Store

ENGLISH = "The quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def default_data_run(tiny_model_dir, tmp_path_factory):
    """A real atlas run of the sinks family on its own data (no prompt file): (folder, run id)."""
    from workbench.atlas import Atlas

    results = tmp_path_factory.mktemp("app-head-page")
    options = {"sinks": {"act": False, "evidence_heads": 2}}
    run = Atlas(str(tiny_model_dir("llama")), ["sinks"], results, n_prompts=2, max_tokens=32, options=options).run()
    return results, run.run_id


def test_the_scored_prompt_is_rebuilt_exactly(default_data_run, tiny_llama):
    results, rid = default_data_run
    with Store.open(results) as store:
        run = store.run(rid)
        scored = scored_prompts(store, rid, 0, 0)
        summary = next(f.summary for f in store.families(rid) if f.family == "sinks")
        sink_tokens = store.artefacts(rid, "sinks")["sink_tokens"]
    assert [(s["family"], s["n"]) for s in scored] == [("sinks", 2)]
    rebuilt = [prompt_tokens(tiny_llama, PromptSpec("atlas", family="sinks", index=i), [], run) for i in range(2)]
    assert [int(ids.shape[1]) for ids in rebuilt] == summary["prompt_tokens"]  # the lengths the family recorded
    for row in sink_tokens:  # every sink token the family stored sits where the rebuilt prompt has it
        assert tiny_llama.to_str_tokens(rebuilt[row["prompt"]][0])[row["position"]] == row["token"]
    assert not torch.equal(rebuilt[0], rebuilt[1])
    spec = PromptSpec.from_dict({"source": "atlas", "scored": "sinks:1"})
    assert (spec.family, spec.index) == ("sinks", 1) and spec.key() == "atlas:sinks:1"
    with pytest.raises(Exception, match="there is no prompt 5"):
        prompt_tokens(tiny_llama, PromptSpec("atlas", family="sinks", index=5), [], run)


def test_the_prompt_checker_says_what_the_model_warns(default_data_run, tiny_llama):
    results, rid = default_data_run
    with Store.open(results) as store:
        run = store.run(rid)
    checker = PromptChecker()
    assert checker.check(run, ENGLISH) == tiny_llama.unknown_tokens(ENGLISH) is not None
    assert checker.check(run, "w1 w2 w3") is None and checker.check(run, "") is None


@pytest.mark.slow
def test_head_page_leads_with_the_verdict_and_opens_on_the_scored_prompt(default_data_run, browser):
    results, rid = default_data_run
    with Store.open(results) as store:
        claimed = next(f.members for f in store.families(rid) if f.family == "sinks")
    layer, head = claimed[0] if claimed else (0, 0)
    label = f"L{layer}H{head}"
    d = browser
    with running_app(results) as (base, _):
        d.get(f"{base}/run/{rid}/head/{label}")
        wait_for(d, lambda x: x.find_elements("css selector", "#section-role #table-head-scores, #section-scores"), 60, "body")
        order = d.execute_script("return Array.from(document.querySelectorAll('#page-body section')).map(s => s.id);")
        assert order.index("section-role") < order.index("section-scores"), order
        role = text_of(d, "#section-role")
        assert "verdict" in role if claimed else "No family claims" in role
        # the pattern opens by itself on the sinks family's prompt 0, not on random tokens
        assert d.execute_script("return document.querySelector('#prompt-source input:checked').value;") == "atlas"
        wait_for(d, lambda x: x.find_elements("css selector", "#pattern-graph .main-svg"), 90, "the pattern")
        assert "sinks prompt 0" in text_of(d, "#section-pattern")

        # typed English: mostly <unk> for this vocabulary, a warning beside the box; known words clear it
        box = d.find_element("id", "prompt-text")
        box.send_keys(ENGLISH)
        wait_for(d, lambda x: "unknown token" in text_of(x, "#prompt-warning"), 30, "the unknown-token warning")
        assert d.find_elements("css selector", "#prompt-warning .notice-warn")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)  # (clear() does not reach Dash: React never sees the change)
        box.send_keys("w1 w2 w3")
        wait_for(d, lambda x: text_of(x, "#prompt-warning").strip() == "", 30, "the warning to go")

        d.get(f"{base}/run/{rid}/playground")
        play = wait_for(d, lambda x: x.find_elements("id", "play-prompt"), 60, "the playground")[0]
        play.send_keys(ENGLISH)
        wait_for(d, lambda x: "unknown token" in text_of(x, "#play-prompt-warning"), 30, "the playground's warning")
