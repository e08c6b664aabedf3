"""`--context N` in the options layer: it sets max_tokens and the families' own lengths; explicit options win."""

from __future__ import annotations

import pytest

from workbench.atlas.options import CONTEXT_OPTIONS, context_set_options, resolve_options
from workbench.errors import InputDataError


def test_context_sets_max_tokens_and_the_family_lengths():
    opts = resolve_options({"model": "m", "context": 4096})
    assert (opts.context, opts.max_tokens) == (4096, 4096) and {"context", "max_tokens"} <= opts.given
    assert opts.family_options["retrieval"] == {"context": 4096}
    assert opts.family_options["temporal"] == {"periodic_tokens": 4096}
    plain = resolve_options({"model": "m", "max_tokens": 300})
    assert plain.context is None and "retrieval" not in plain.family_options  # the needle follows max_tokens


def test_context_in_a_config_file_and_family_sections_that_win(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: m\ncontext: 2048\nretrieval:\n  context: 1024\n", encoding="utf-8")
    opts = resolve_options({}, config)
    assert opts.max_tokens == 2048 and opts.family_options["retrieval"] == {"context": 1024}
    assert opts.family_options["temporal"] == {"periodic_tokens": 2048}
    # the command line's --context beats the file's, and leaves out what the file's sections set
    assert context_set_options(512, config, []) == ["temporal.periodic_tokens=512"]
    assert context_set_options(512, None, ["temporal.periodic_tokens=64"]) == ["retrieval.context=512"]
    assert len(context_set_options(512, None, [])) == sum(len(v) for v in CONTEXT_OPTIONS.values())


def test_context_and_a_different_max_tokens_disagree():
    with pytest.raises(InputDataError, match="--context 512 and --max-tokens 256 disagree") as info:
        resolve_options({"model": "m", "context": 512, "max_tokens": 256})
    assert "give only --context 512" in str(info.value)
    assert resolve_options({"model": "m", "context": 512, "max_tokens": 512}).max_tokens == 512
    with pytest.raises(InputDataError, match="'context' must be at least 2"):
        resolve_options({"model": "m", "context": 1})
    with pytest.raises(InputDataError, match="'context' must be an integer"):
        resolve_options({"model": "m", "context": "long"})
