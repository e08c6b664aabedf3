"""Haystacks of any length: generated from the run seed (no download, no forward pass), or a user's text.

The generated haystack must have the asked length in the model's tokens, be the same for the same
seed and differ across seeds, and never hold the needle's answer except where it is inserted.
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.data.haystack import (
    count_tokens,
    generated_haystack,
    load_haystack,
    occurs,
    split_sentences,
    vocabulary_sentences,
)
from workbench.data.needles import text_needle_trials
from workbench.data.registry import default_dataset
from workbench.errors import InputDataError
from workbench.models.tiny import tiny_vocab
from workbench.models.word_tokenizer import build_word_tokenizer


@pytest.fixture(scope="module")
def tiny_tok():
    """The tiny models' tokenizer (words w0..w59): it reads the shipped prose as unknown tokens."""
    return build_word_tokenizer(tiny_vocab(64))


@pytest.fixture(scope="module")
def prose_tok():
    """A word tokenizer that knows every word of the shipped prose (a real tokenizer's stand-in)."""
    words = sorted({w for t in default_dataset("text").items for w in t.split()} | {str(i) for i in range(1000, 10000)})
    return build_word_tokenizer(words)


def prose_sentences():
    return split_sentences(default_dataset("text").items)


@pytest.mark.parametrize("n_tokens", [4096, 32768])
def test_a_generated_haystack_has_the_asked_length_in_tokens(prose_tok, tiny_tok, n_tokens):
    prose = generated_haystack(prose_tok, n_tokens, np.random.default_rng(0), prose_sentences())
    longest = max(count_tokens(prose_tok, " " + s) for s in prose_sentences())
    assert prose.n_tokens == count_tokens(prose_tok, prose.text)
    assert n_tokens <= prose.n_tokens < n_tokens + longest  # at most one sentence over
    assert "used about" in prose.note  # the ~3k-token prose is reused: the note says so
    words = vocabulary_sentences(tiny_tok, 64, np.random.default_rng(1))
    vocab = generated_haystack(tiny_tok, n_tokens, np.random.default_rng(0), words)
    assert n_tokens <= vocab.n_tokens < n_tokens + 21
    assert tiny_tok.unk_token_id not in tiny_tok(vocab.text[:5000], add_special_tokens=False)["input_ids"]


def test_a_generated_haystack_is_fixed_by_the_seed_and_differs_across_seeds(prose_tok):
    def make(seed):
        return generated_haystack(prose_tok, 4096, np.random.default_rng(seed), prose_sentences()).text

    assert make(3) == make(3)
    assert make(3) != make(4)
    # the same sentences, in another order
    assert sorted(set(split_sentences([make(3)]))) == sorted(set(split_sentences([make(4)])))


def test_sentences_holding_the_needle_are_left_out(prose_tok):
    sentences = [*prose_sentences(), "The secret code is 4821 .", "Her locker number was 4821."]
    hay = generated_haystack(prose_tok, 4096, np.random.default_rng(0), sentences, avoid=("4821", "secret code"))
    assert "4821" not in hay.text and "secret code" not in hay.text.lower()
    with pytest.raises(InputDataError, match="no sentence is left"):
        generated_haystack(prose_tok, 100, np.random.default_rng(0), ["code 4821 here."], avoid=("4821",))
    # a token-level twin of the answer is refused rather than planted twice
    with pytest.raises(InputDataError, match="answer tokens"):
        generated_haystack(
            prose_tok,
            50,
            np.random.default_rng(0),
            ["the river ran."],
            avoid_ids=(prose_tok(" river", add_special_tokens=False)["input_ids"],),
        )


def test_a_needle_in_a_generated_haystack_occurs_once_at_its_depth(prose_tok):
    hay = generated_haystack(prose_tok, 4096, np.random.default_rng(0), prose_sentences(), avoid=("4821",))
    trials = text_needle_trials(
        prose_tok, hay.text, "The secret code is 4821 .", "What is the secret code ?", "4821", [4096], [0.1, 0.5, 0.9]
    )
    answer = prose_tok(" 4821", add_special_tokens=False)["input_ids"]
    for trial in trials:
        ids = trial.prompt.tolist()
        assert trial.context_len == len(ids) == 4096
        start, end = trial.answer_span
        assert ids[start:end] == answer and occurs(ids, answer) == start
        assert ids.count(answer[0]) == 1
    assert [t.answer_span[0] for t in trials] == sorted(t.answer_span[0] for t in trials)


def test_a_haystack_holding_the_answer_is_refused(prose_tok):
    with pytest.raises(InputDataError, match="already holds the needle's answer '4821'"):
        text_needle_trials(
            prose_tok, "the river 4821 ran. " * 50, "The secret code is 4821 .", "What is the secret code ?", "4821", [80], [0.5]
        )


def test_a_user_text_file_is_a_haystack(tmp_path, prose_tok):
    path = tmp_path / "book.txt"
    path.write_text("The river is old.\n\nThe mill is older.\n", encoding="utf-8")
    hay = load_haystack(str(path), prose_tok)
    assert hay.text == "The river is old.\n\nThe mill is older." and hay.n_tokens == 8 and hay.source == str(path)
    assert load_haystack("prose", prose_tok).source == "shipped:prose"  # a registered text set by name


def test_missing_empty_and_unreadable_haystacks_are_clear_errors(tmp_path, prose_tok):
    with pytest.raises(InputDataError, match=r"retrieval.haystack='.*nope.txt'.*neither a registered set nor an existing file"):
        load_haystack(str(tmp_path / "nope.txt"), prose_tok)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n", encoding="utf-8")
    with pytest.raises(InputDataError, match="empty") as info:
        load_haystack(str(empty), prose_tok)
    assert "retrieval.haystack=" in info.value.message
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InputDataError, match="UTF-8"):
        load_haystack(str(latin), prose_tok)
    with pytest.raises(InputDataError, match="harmful items, but text items are needed"):
        load_haystack("harmful-requests", prose_tok)
