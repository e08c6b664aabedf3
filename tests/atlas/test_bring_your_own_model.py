"""Bring your own model: an in-memory transformers model, a TransformerBridge and the folder they were
saved to give the same atlas scores; anything else is refused with one message naming what is accepted."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from workbench import Atlas
from workbench.errors import WorkbenchError
from workbench.models import load_model
from workbench.models.loading import weights_fingerprint
from workbench.models.tiny import tiny_config, tiny_vocab
from workbench.models.word_tokenizer import build_word_tokenizer

ATLAS = {"families": ["sinks", "temporal"], "n_prompts": 1, "max_tokens": 32, "options": {"sinks": {"act": False}}}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama built in memory (seed 0) and the folder it was saved to, with its tokenizer."""
    from transformers import AutoModelForCausalLM

    config = tiny_config("llama")
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config)
    folder = tmp_path_factory.mktemp("byom")
    hf.save_pretrained(str(folder), safe_serialization=True)
    build_word_tokenizer(tiny_vocab(config.vocab_size)).save_pretrained(str(folder))
    torch.manual_seed(0)
    fresh = AutoModelForCausalLM.from_config(tiny_config("llama"))  # never saved: no name_or_path
    return fresh, folder


def _scores(model, store, **kwargs) -> pd.DataFrame:
    result = Atlas(model, store=store, device="cpu", **ATLAS, **kwargs).run()
    assert result.status == "complete"
    return result.scores().sort_values(["family", "metric", "layer", "head"]).reset_index(drop=True)


def test_in_memory_bridge_and_folder_give_identical_scores(saved, tmp_path):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    hf, folder = saved
    fingerprint = weights_fingerprint(hf)
    from_folder = _scores(str(folder), tmp_path / "folder")
    in_memory = _scores(hf, tmp_path / "memory", tokenizer=AutoTokenizer.from_pretrained(str(folder)))
    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu")
    as_bridge = _scores(bridge, tmp_path / "bridge")
    assert len(from_folder) > 0 and set(from_folder["family"]) == {"sinks", "temporal"}
    # Same weights, same tokens, same eager attention kernels on the same CPU: the numbers are bit-identical.
    pd.testing.assert_frame_equal(in_memory, from_folder, check_exact=True)
    pd.testing.assert_frame_equal(as_bridge, from_folder, check_exact=True)
    # the runs record the weights' fingerprint, the same for the in-memory model and the bridge
    runs = {}
    for name in ("memory", "bridge"):
        from workbench.store.store import Store

        with Store.open(tmp_path / name) as store:
            (runs[name],) = store.runs()
    assert runs["memory"].model_kind == runs["bridge"].model_kind == "memory"
    assert runs["memory"].model_hash == runs["bridge"].model_hash == fingerprint
    assert runs["memory"].model == f"LlamaForCausalLM-{fingerprint[:8]}"
    assert weights_fingerprint(hf) == fingerprint  # wrapping in a bridge renamed submodules, not the weights


def test_tokenizer_is_found_from_name_or_path(saved):
    from transformers import AutoModelForCausalLM

    _, folder = saved
    hf = AutoModelForCausalLM.from_pretrained(str(folder))
    model = load_model(hf)
    assert model.source.kind == "memory" and model.name == str(folder.resolve())
    assert model.source.fingerprint == weights_fingerprint(load_model(folder, device="cpu").hf_model)
    assert model.tokenizer("w1 w2")["input_ids"] == load_model(folder, device="cpu").tokenizer("w1 w2")["input_ids"]


def test_in_memory_model_without_tokenizer_asks_for_one():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_config("llama"))
    with pytest.raises(WorkbenchError, match="tokenizer=") as err:
        load_model(hf)
    assert "no tokenizer" in str(err.value)


@pytest.mark.parametrize("wrong", [3, torch.nn.Linear(2, 2), object()])
def test_wrong_type_gets_one_clear_message(wrong):
    for call in (lambda: load_model(wrong), lambda: Atlas(wrong, families=["sinks"])):
        with pytest.raises(WorkbenchError) as err:
            call()
        text = str(err.value)
        assert "cannot analyse a" in text and type(wrong).__name__ in text
        for accepted in ("PreTrainedModel", "TransformerBridge", "workbench Model", "Hugging Face folder"):
            assert accepted in text


def test_a_run_of_an_in_memory_model_resumes_with_the_same_weights(saved, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, folder = saved
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_config("llama"))
    tok = AutoTokenizer.from_pretrained(str(folder))
    atlas = Atlas(hf, store=tmp_path / "r", device="cpu", tokenizer=tok, **ATLAS)

    def stop(*_):
        raise KeyboardInterrupt

    atlas.progress.on_part = stop  # stop before the first part, as Ctrl-C would
    with pytest.raises(KeyboardInterrupt):
        atlas.run()
    with pytest.raises(WorkbenchError, match="given in memory"):
        Atlas(store=tmp_path / "r").resume()  # a fresh process has no such model to load
    other = AutoModelForCausalLM.from_config(tiny_config("llama"))  # other weights, other fingerprint and name
    with pytest.raises(WorkbenchError, match="no interrupted run of 'LlamaForCausalLM-"):
        Atlas(other, store=tmp_path / "r", tokenizer=tok).resume()
    result = Atlas(hf, store=tmp_path / "r", tokenizer=tok).resume()
    assert result.status == "complete" and result.model == f"LlamaForCausalLM-{weights_fingerprint(hf)[:8]}"
