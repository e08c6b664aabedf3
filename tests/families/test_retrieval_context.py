"""Lengths that scale with the model: the needle context follows --max-tokens, --context N reaches every
family's prompts, and a length the model cannot hold, or a bad haystack, is refused before any work.

No forward pass: trials and prompts are built and checked, not run.
"""

from __future__ import annotations

import pytest

from workbench.atlas.options import resolve_options
from workbench.families.context import RunContext
from workbench.families.prompts import family_prompts
from workbench.families.registry import build_family
from workbench.families.retrieval import RetrievalFamilyConfig, needle_setup
from workbench.models import load_model
from workbench.models.tiny import build_tiny_model


@pytest.fixture(scope="module")
def long_llama(tmp_path_factory):
    """The tiny random Llama with room for 40k positions (RoPE: no weights grow)."""
    return load_model(build_tiny_model(tmp_path_factory.mktemp("long-llama"), "llama", n_ctx=40000), device="cpu")


def context_of(opts) -> RunContext:
    """The RunContext an atlas run builds from resolved options (as `workbench.atlas.api` does)."""
    return RunContext(
        seed=opts.seed,
        max_tokens=opts.max_tokens,
        context=opts.context,
        n_prompts=opts.n_prompts,
        family_options=opts.family_options,
    )


def family(name, opts):
    return build_family(name, opts.family_options.get(name))


@pytest.mark.parametrize("max_tokens", [64, 1000, 4096])
def test_the_needle_context_follows_max_tokens(long_llama, max_tokens):
    setup = needle_setup(long_llama, RunContext(max_tokens=max_tokens, n_prompts=2), RetrievalFamilyConfig())
    assert setup.context == max_tokens and [t.context_len for t in setup.trials] == [max_tokens] * 2
    assert setup.notes == () and setup.haystack.startswith("generated from vocabulary words (seed 0;")


def test_the_needle_context_is_cut_to_the_model_with_a_note(tiny_llama):
    # n_ctx 256, Wu et al.'s 50-token answer: 206 tokens fit
    setup = needle_setup(tiny_llama, RunContext(max_tokens=256, n_prompts=1), RetrievalFamilyConfig())
    assert setup.context == 206 == setup.trials[0].context_len
    assert setup.notes == ("needle context 206 tokens, not --max-tokens 256: the model holds 256 tokens and the answer needs 50",)
    (warning,) = build_family("retrieval").check_inputs(tiny_llama, RunContext(max_tokens=256, n_prompts=1))[1:]
    assert not warning.fatal and "needle context 206 tokens" in warning.message


def test_an_explicit_needle_context_wins_over_max_tokens(long_llama):
    setup = needle_setup(long_llama, RunContext(max_tokens=64, n_prompts=1), RetrievalFamilyConfig(context=2000))
    assert setup.context == 2000 == setup.trials[0].context_len


@pytest.mark.parametrize("n", [2048, 32768])
def test_context_reaches_every_familys_prompts(long_llama, n):
    opts = resolve_options({"model": "x", "context": n, "n_prompts": 2})
    assert opts.max_tokens == n and opts.context == n and "max_tokens" in opts.given
    ctx = context_of(opts)
    retrieval = family("retrieval", opts)
    assert retrieval.config.context == n
    assert [t.context_len for t in needle_setup(long_llama, ctx, retrieval.config).trials] == [n, n]
    assert family("temporal", opts).config.periodic_tokens == n
    for name in ("temporal", "sinks"):  # text prompts through family_prompts
        prompts, _ = family_prompts(long_llama, ctx, name)
        assert [p.shape[1] for p in prompts] == [n, n]
    assert ctx.context == n  # for a family whose own length is not a CONTEXT_OPTIONS option (sinks' ACT)


def test_an_explicit_family_option_wins_over_context():
    opts = resolve_options({"model": "x", "context": 512}, set_options=["retrieval.context=128"])
    assert opts.max_tokens == 512
    assert family("retrieval", opts).config.context == 128 and family("temporal", opts).config.periodic_tokens == 512
    only = resolve_options({"model": "x", "context": 512, "families": "sinks"})
    assert "retrieval" not in only.family_options  # only the families that run are given options


def test_context_longer_than_the_model_is_refused_with_the_fix(tiny_llama):
    # n_ctx 256: the needle (N) and its 50-token answer must fit
    opts = resolve_options({"model": "x", "context": 230, "n_prompts": 1})
    (problem,) = family("retrieval", opts).check_inputs(tiny_llama, context_of(opts))[1:]
    assert problem.fatal
    assert "needle context of 230 tokens (--context or retrieval.context) plus its 50-token answer" in problem.message
    assert "model's context of 256 tokens" in problem.message and "--context 206 or less" in problem.fix
    # beyond n_ctx itself: the atlas's preflight refuses it for every family (max_tokens is explicit)
    from workbench.atlas.preflight import PreflightError, preflight

    far = resolve_options({"model": "x", "context": 1000, "families": "sinks"})
    with pytest.raises(PreflightError, match="max_tokens 1000 is longer than the model's context of 256 tokens"):
        preflight(tiny_llama, {"sinks": family("sinks", far)}, context_of(far), explicit_max_tokens="max_tokens" in far.given)


def test_a_user_text_file_is_the_haystack(tiny_llama, tmp_path):
    book = tmp_path / "book.txt"
    book.write_text(" ".join(f"w{i % 40}" for i in range(300)) + "\n", encoding="utf-8")
    cfg = RetrievalFamilyConfig(haystack=str(book))
    setup = needle_setup(tiny_llama, RunContext(max_tokens=128, n_prompts=2), cfg)
    assert setup.haystack == str(book) and setup.source == f"text-needle (haystack {book})"
    assert [t.context_len for t in setup.trials] == [128, 128] and setup.notes == ()
    body = setup.trials[0].prompt.tolist()[1:20]
    assert tiny_llama.tokenizer.convert_ids_to_tokens(body)[:5] == ["w0", "w1", "w2", "w3", "w4"]
    # too short for the asked context: repeated, and said (a warning in the run, a note in the summary)
    small = tmp_path / "small.txt"
    small.write_text("w1 w2 w3 w4 w5 w6 w7 w8", encoding="utf-8")
    short = needle_setup(tiny_llama, RunContext(max_tokens=128, n_prompts=1), RetrievalFamilyConfig(haystack=str(small)))
    assert short.trials[0].context_len == 128
    assert short.notes == (f"the haystack ({small}) has 8 tokens: repeated to fill the 128-token context",)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "neither a registered set nor an existing file"),
        (lambda p: p.write_text(" \n", encoding="utf-8"), "empty"),
        (lambda p: p.write_text("the river is wide and old .", encoding="utf-8"), "unknown tokens for this tokenizer"),
    ],
    ids=["missing", "empty", "unknown-words"],
)
def test_bad_haystacks_are_refused_before_any_work(tiny_llama, tmp_path, make, message):
    path = tmp_path / "hay.txt"
    make(path)
    fam = build_family("retrieval", {"haystack": str(path)})
    problems = fam.check_inputs(tiny_llama, RunContext(max_tokens=64, n_prompts=1))
    assert [p.fatal for p in problems] == [True]
    assert message in problems[0].message and "retrieval.haystack=" in problems[0].message


def test_generated_needles_are_fixed_by_the_seed(long_llama):
    def prompts(seed):
        setup = needle_setup(long_llama, RunContext(seed=seed, max_tokens=4096, n_prompts=2), RetrievalFamilyConfig())
        return [t.prompt.tolist() for t in setup.trials]

    assert prompts(1) == prompts(1) and prompts(1) != prompts(2)


def test_the_needle_context_rule_without_a_model():
    """`fit_needle_context` is the rule the cost plan can share: follow, cut with a note, or refuse."""
    from workbench.errors import InputDataError
    from workbench.families.retrieval import fit_needle_context

    assert fit_needle_context(0, 131072, 131072 * 2, 50) == (131072, "")
    assert fit_needle_context(0, 131072, 131072, 50)[0] == 131022
    assert fit_needle_context(4096, 256, 0, 50) == (4096, "")  # a model that states no length: as asked
    with pytest.raises(InputDataError, match="does not fit the model's context of 131072 tokens"):
        fit_needle_context(131072, 131072, 131072, 50)
    with pytest.raises(InputDataError, match="leaves no room"):
        fit_needle_context(0, 256, 40, 50)
