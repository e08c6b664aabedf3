"""Every bad model spec gives one clear error naming the value and the fix."""

from __future__ import annotations

import shutil

import pytest
import torch

from workbench.errors import ModelNotFoundError, UnsupportedModelError, WorkbenchError
from workbench.models import load_model
from workbench.models.loading import parse_device, parse_dtype


def test_missing_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError) as err:
        load_model(str(missing))
    assert str(missing) in err.value.message and "does not exist" in err.value.message


def test_hub_id_not_cached_while_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        load_model("some-org/not-a-cached-model")
    assert "'some-org/not-a-cached-model'" in err.value.message
    assert "HF_HUB_OFFLINE" in err.value.message
    assert "hf download some-org/not-a-cached-model" in err.value.hint


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        load_model(tmp_path)


def test_folder_without_weights(tiny_model_dir, tmp_path):
    shutil.copy(tiny_model_dir("llama") / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelNotFoundError, match=r"no weights \(\*\.safetensors"):
        load_model(tmp_path)


def test_unsupported_architecture(tmp_path):
    from transformers import BioGptConfig, BioGptForCausalLM

    cfg = BioGptConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BioGptForCausalLM(cfg).save_pretrained(str(tmp_path))
    with pytest.raises(UnsupportedModelError) as err:
        load_model(tmp_path)
    assert "BioGptForCausalLM" in err.value.message and "no adapter" in err.value.message


def test_bad_device_and_dtype():
    with pytest.raises(WorkbenchError, match="unknown dtype 'float8'"):
        parse_dtype("float8")
    assert parse_dtype("bf16") is torch.bfloat16
    with pytest.raises(WorkbenchError, match="unknown device 'gpu9'"):
        parse_device("gpu9")
    if not torch.cuda.is_available():
        with pytest.raises(WorkbenchError, match="no CUDA GPU is visible"):
            parse_device("cuda")
