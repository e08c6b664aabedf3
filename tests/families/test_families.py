"""The family seam: registry, options, default merge, prompts, and the sinks family on a tiny Llama."""

from __future__ import annotations

import numpy as np
import pytest
from atlas_helpers import PLUGIN, CountdownFamily, FakeModel

from workbench.analysis.scores import HeadScores
from workbench.data.prompts import load_prompts
from workbench.errors import InputDataError, WorkbenchError
from workbench.families import RunContext, build_family, family_names, resolve_families
from workbench.families.base import Family, PartResult, make_config
from workbench.families.prompts import family_prompts
from workbench.families.sinks import SinksFamily, SinksFamilyConfig


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(WorkbenchError, match="unknown family 'nope'") as err:
        resolve_families("sinks,nope")
    assert "sinks" in err.value.hint
    with pytest.raises(WorkbenchError, match="unknown families 'a', 'b'"):
        resolve_families(["a", "b"])


def test_all_means_every_registered_family(monkeypatch):
    assert resolve_families("all") == resolve_families(None) == family_names()
    assert "sinks" in family_names() and "countdown" not in family_names()
    monkeypatch.setenv("WORKBENCH_FAMILY_PLUGINS", PLUGIN)
    assert resolve_families("all")[-1] == "countdown"
    assert resolve_families("countdown, sinks,countdown") == ["countdown", "sinks"]


def test_options_are_checked_and_coerced():
    cfg = make_config(SinksFamilyConfig, {"eps": "0.25", "evidence_heads": "2"}, "sinks")
    assert cfg.eps == 0.25 and cfg.evidence_heads == 2
    with pytest.raises(InputDataError, match="unknown option 'epsilon' for family 'sinks'") as err:
        make_config(SinksFamilyConfig, {"epsilon": 1}, "sinks")
    assert "eps" in err.value.hint and "tau" in err.value.hint
    with pytest.raises(InputDataError, match="'sinks.eps' must be float"):
        make_config(SinksFamilyConfig, {"eps": "lots"}, "sinks")
    with pytest.raises(InputDataError, match="'sinks.first_k' must be int"):
        make_config(SinksFamilyConfig, {"first_k": 1.5}, "sinks")


def test_default_merge_fills_each_head_from_its_part():
    fam, model, ctx = CountdownFamily(), FakeModel(2, 5), RunContext(seed=3)
    parts = {p: fam.run_part(model, ctx, p) for p in fam.parts(model, ctx)}
    merged = fam.merge(parts)
    for res in parts.values():
        mask = np.isfinite(res.scores["value"])
        assert mask.sum() == 2
        np.testing.assert_array_equal(merged.scores["value"][mask], res.scores["value"][mask])
    assert np.isfinite(merged.scores["value"]).all()
    assert set(merged.artefacts) == {f"{p}/{k}" for p in parts for k in ("trace", "rows")}
    assert merged.summary == {"parts": {p: r.summary for p, r in parts.items()}}
    single = fam.merge({"p0": parts["p0"]})
    assert set(single.artefacts) == {"trace", "rows"} and single.summary == parts["p0"].summary


def test_merge_of_one_part_keeps_its_descriptions():
    class Plain(Family):
        name = "plain"

        def run_part(self, model, ctx, part):  # never called: the test only merges given parts
            raise NotImplementedError

    hs = HeadScores("plain", 1, 2)
    hs.add("m", np.array([[1.0, np.nan]]), "a metric")
    out = Plain().merge({"all": PartResult(hs)})
    assert out.scores.descriptions == {"m": "a metric"} and out.members == [] and out.scores.family == "plain"
    np.testing.assert_array_equal(out.scores["m"], hs["m"])


def test_prompt_files_go_through_the_one_reader(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\nsecond prompt\n")
    (tmp_path / "p.jsonl").write_text('{"text": "a b"}\n"c d"\n')
    (tmp_path / "p.json").write_text('["x y", {"text": "z w"}]')
    (tmp_path / "p.csv").write_text("id,question\n1,what is up\n2,how are you\n")
    (tmp_path / "bad.json").write_text('{"text": 1}')
    assert load_prompts(tmp_path / "p.txt") == ["first prompt", "second prompt"]
    assert load_prompts(tmp_path / "p.jsonl") == ["a b", "c d"]
    assert load_prompts(tmp_path / "p.json") == ["x y", "z w"]
    assert load_prompts(tmp_path / "p.csv", "question") == ["what is up", "how are you"]  # the header is not a prompt
    with pytest.raises(InputDataError, match="must hold a JSON list"):
        load_prompts(tmp_path / "bad.json")
    with pytest.raises(InputDataError, match="--prompt-field"):
        load_prompts(tmp_path / "p.csv")  # no usual prompt column: name it


def test_organism_text_is_their_filler_through_the_registry():
    from workbench.data.registry import GeneratedSet, model_dataset
    from workbench.models import load_model

    organism = load_model("organism-4l", device="cpu")
    own = model_dataset("text", organism)
    assert isinstance(own, GeneratedSet) and own.source == "organism-filler"
    prompts = own.make(organism, np.random.default_rng(0), 3, 40)
    assert [p.shape for p in prompts] == [(1, 40)] * 3
    assert all(int(p[0, 0]) == organism.geometry.bos.token_id for p in prompts)  # BOS
    assert len({tuple(p[0].tolist()) for p in prompts}) == 3


@pytest.fixture(scope="module")
def sinks_result(tiny_llama):
    fam = SinksFamily(SinksFamilyConfig(evidence_heads=3, check_k=2))
    ctx = RunContext(seed=5, max_tokens=32, n_prompts=2)
    return fam, fam.run_part(tiny_llama, ctx, "all")


def test_sinks_family_scores_and_evidence(sinks_result, tiny_llama):
    fam, res = sinks_result
    scores = res.scores
    assert scores.family == "sinks" and (scores.n_layers, scores.n_heads) == (2, 4)
    assert {"first_token_mass", "sink_head", "hidden_sink_count", "hidden_sink_mass", "removal_loss_delta"} <= set(scores.metrics)
    delta = scores["removal_loss_delta"]
    top3 = {tuple(h) for h in scores.top("first_token_mass", 3)}
    assert {tuple(x) for x in zip(*np.nonzero(np.isfinite(delta)))} == top3  # evidence for the 3 strongest heads
    assert res.artefacts["sink_rate_per_layer"].shape == (2,)
    check = res.artefacts["removal_check"]
    assert check["top_delta"] == check["top_loss"] - check["base_loss"] and len(check["top_heads"]) == 2
    assert res.summary["prompt_source"].startswith("random-tokens (shipped:prose is") and res.summary["prompt_tokens"] == [32, 32]
    merged = fam.merge({"all": res})
    assert merged.members == [tuple(h) for h in zip(*np.nonzero(scores["sink_head"] > 0.5))]


def test_prompts_follow_the_seed(tiny_llama):
    a, _ = family_prompts(tiny_llama, RunContext(seed=1, max_tokens=16, n_prompts=2), "sinks")
    b, _ = family_prompts(tiny_llama, RunContext(seed=1, max_tokens=16, n_prompts=2), "sinks")
    c, _ = family_prompts(tiny_llama, RunContext(seed=2, max_tokens=16, n_prompts=2), "sinks")
    assert [x.tolist() for x in a] == [x.tolist() for x in b] != [x.tolist() for x in c]
    special = set(tiny_llama.tokenizer.all_special_ids)
    bos = tiny_llama.geometry.bos.token_id
    assert all(int(x[0, 0]) == bos and not (set(x[0, 1:].tolist()) & special) for x in a)
    texts, source = family_prompts(tiny_llama, RunContext(max_tokens=4, prompts=["w1 w2 w3 w4 w5 w6", "w7 w8"]), "sinks")
    assert source == "file" and [t.shape[1] for t in texts] == [4, 3]


def test_build_family_with_options():
    fam = build_family("sinks", {"tau": 0.2})
    assert isinstance(fam, SinksFamily) and fam.config.tau == 0.2


def test_the_safety_family_samples_its_prompts_with_the_run_seed():
    """Two seeds, two prompt samples (a fixed generator made every seed look perfectly stable)."""
    from workbench.families.safety import SafetyFamilyConfig, safety_prompts
    from workbench.models import load_model

    model = load_model("organism-4l", device="cpu")
    cfg = SafetyFamilyConfig()

    def sample(seed):
        harmful, benign, source = safety_prompts(model, RunContext(seed=seed, n_prompts=8), cfg)
        assert source == "organism-refusal-test" and len(harmful) == 8
        return [tuple(t.tolist()) for t in harmful], [tuple(t.tolist()) for t in benign]

    assert sample(1) == sample(1)
    assert sample(1)[0] != sample(2)[0] and sample(1)[1] != sample(2)[1]
