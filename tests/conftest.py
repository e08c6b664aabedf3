"""Shared fixtures: tiny random Hugging Face models written to temporary folders."""

from __future__ import annotations

import os

# No test may reach the network: models come from temp folders, the shipped organisms or a fake cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest

from workbench.models.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory: folder of a tiny random model of the given architecture (built once per session);
    ``peaked=True`` for the sharper weights of the architecture matrix."""
    cache: dict[str, object] = {}

    def make(arch: str = "llama", peaked: bool = False):
        key = f"{arch}-peaked" if peaked else arch
        if key not in cache:
            cache[key] = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{key}"), arch, seed=0, peaked=peaked)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_dir):
    from workbench.models import load_model

    return load_model(tiny_model_dir("llama"), device="cpu")
