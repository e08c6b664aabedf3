"""Wu et al.'s success gate on text: ROUGE-1 recall of the decoded answer's words in the decoded
generation (as the reference's ``rouge_score`` scorer), not on token ids; the needle span holds the
answer's own tokens. Checked with a byte-level BPE whose digits are single tokens and whose space
before a number is a token of its own."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from workbench.analysis import retrieval as retrieval_mod
from workbench.analysis.retrieval import RetrievalConfig, answer_recall, retrieval_scores, rouge1_recall
from workbench.data.needles import NeedleTrial, text_needle_trials

ALPHABET = ["\u0120", "\u010a", *"abcdefghijklmnopqrstuvwxyz0123456789.?:"]  # Ġ (space), Ċ (newline)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A byte-level BPE (GPT-2 style pre-tokenizer and decoder) with single-character tokens and two
    merges for "the"; no merge joins a digit to the space before it. Saved and read back from a folder."""
    vocab = {"<unk>": 0, "<bos>": 1, **{c: i + 2 for i, c in enumerate(ALPHABET)}}
    vocab.update({"th": len(vocab), "the": len(vocab) + 1})
    tok = Tokenizer(models.BPE(vocab, [("t", "h"), ("th", "e")], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    folder = tmp_path_factory.mktemp("bpe")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>").save_pretrained(str(folder))
    out = PreTrainedTokenizerFast.from_pretrained(str(folder))
    assert len(out) <= 64  # the ids fit the tiny test models' vocabulary
    return out


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _token_id_rouge(reference: list[int], response: list[int]) -> float:
    """The old gate (ROUGE-1 recall on token ids), to show the cases below separate the two."""
    ref, got = Counter(reference), Counter(response)
    return sum(min(c, got[t]) for t, c in ref.items()) / sum(ref.values())


def test_wrong_numbers_fail_the_gate_on_words_where_token_ids_let_them_through(bpe):
    answer = _ids(bpe, " 4821")
    assert bpe.convert_ids_to_tokens(answer) == ["\u0120", "4", "8", "2", "1"]  # the space is a token of its own
    wrong, short, right = _ids(bpe, " 1284"), _ids(bpe, " 12"), _ids(bpe, " 4821\n")
    assert _token_id_rouge(answer, wrong) == 1.0 and _token_id_rouge(answer, short) == pytest.approx(0.6)
    gate = RetrievalConfig().success_gate
    assert answer_recall(bpe, answer, wrong) == 0.0 <= gate
    assert answer_recall(bpe, answer, short) == 0.0 <= gate
    assert answer_recall(bpe, answer, right) == 1.0 > gate


def test_rouge1_recall_on_words_lowercased():
    assert rouge1_recall("The code is 4821", "the CODE is: 4821!") == 1.0
    assert rouge1_recall("The code is 4821", "the CODE: 4821!") == pytest.approx(3 / 4)
    assert rouge1_recall("alpha beta beta gamma", "beta alpha") == pytest.approx(2 / 4)  # counts clipped
    assert rouge1_recall("...", "anything") == 0.0  # no words in the reference


def test_the_needle_span_covers_the_answers_own_tokens(bpe):
    (trial,) = text_needle_trials(bpe, "the hay is dry. " * 30, "the code is 4821 .", "what is the code ?", "4821", [120], [0.5])
    start, end = trial.answer_span
    assert bpe.convert_ids_to_tokens(trial.prompt[start:end].tolist()) == ["4", "8", "2", "1"]
    assert trial.answer.tolist() == _ids(bpe, " 4821")  # the expected generation keeps its space


def _forced(tokens: torch.Tensor):
    """`generate` with its tokens replaced by ``tokens`` (its records are of as many real decode steps)."""
    from workbench.record import decode

    def fake(model, prompt, n, stop_ids=(), record=None):
        real = decode.generate(model, prompt, tokens.shape[1], record=record)
        real.tokens = tokens
        return real

    return fake


def test_retrieval_scores_gate_decoded_text(bpe, tiny_llama, monkeypatch):
    """The family's scoring path: a generation with the answer's digits in the wrong order is not a
    recalled trial (before: token-id ROUGE 1.0, counted), the right one is."""
    (trial,) = text_needle_trials(bpe, "the hay is dry. " * 30, "the code is 4821 .", "what is the code ?", "4821", [120], [0.5])
    trial = NeedleTrial(trial.prompt, trial.answer, trial.answer_span, trial.context_len, trial.depth, {"max_new_tokens": 6})
    monkeypatch.setattr(tiny_llama, "tokenizer", bpe)
    for text, counted in ((" 1284", 0), (" 12", 0), (" 4821", 1)):
        generated = torch.tensor([_ids(bpe, text)])
        monkeypatch.setattr(retrieval_mod, "generate", _forced(generated))
        report = retrieval_scores(tiny_llama, [trial], RetrievalConfig())
        assert report.n_counted == counted, text
        assert report.trials[0].recall == float(counted)
