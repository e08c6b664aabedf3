"""Text needles are prompted and decoded as Wu et al.'s reference does: the question in its form
ending with an answer cue, up to 50 greedy tokens, stopped at the first newline."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from workbench.analysis import retrieval as retrieval_mod
from workbench.analysis.retrieval import RetrievalConfig, retrieval_scores
from workbench.data.needles import NeedleTrial, newline_ids, text_needle_trials


def _newline_tokenizer():
    """Words split at spaces, newlines kept as their own token (as in real BPE vocabularies)."""
    words = [
        "<unk>",
        "<bos>",
        "\n",
        ".",
        "Based",
        "on",
        "the",
        "content",
        "of",
        "book,",
        "Question:",
        "Answer:",
        "What",
        "is",
        "code",
        "?",
        "The",
        "secret",
        "1234",
        "hay",
        "stack",
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Split(" ", "removed")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>")


def test_text_needle_prompts_end_with_the_answer_cue_and_ask_for_50_tokens_to_a_newline():
    tok = _newline_tokenizer()
    (trial,) = text_needle_trials(
        tok, "hay stack . " * 20, "The secret code is 1234 .", "What is the secret code ?", "1234", [60], [0.5]
    )
    text = tok.convert_ids_to_tokens(trial.prompt.tolist())
    assert text[-3:] == ["?", "\n", "Answer:"] and "Question:" in text
    assert trial.meta["max_new_tokens"] == 50 and trial.meta["stop_ids"] == newline_ids(tok) == [2]
    assert tok.convert_ids_to_tokens(trial.prompt[trial.answer_span[0] : trial.answer_span[1]].tolist()) == ["1234"]


def test_decoding_runs_to_the_newline_and_scores_what_came_before(tiny_llama, monkeypatch):
    calls = []

    from workbench.record import decode

    def fake_generate(model, prompt, n_new, stop_ids=(), record=None):
        calls.append((n_new, list(stop_ids)))
        real = decode.generate(model, prompt, 5, record=record)  # records of 5 decoded positions
        real.tokens = torch.tensor([[11, 12, 7, 9, 9]])  # the answer, a newline (7), then anything
        return real

    monkeypatch.setattr(retrieval_mod, "generate", fake_generate)
    prompt = torch.randint(4, 60, (40,), generator=torch.Generator().manual_seed(0))
    prompt[20:22] = torch.tensor([11, 12])
    trial = NeedleTrial(prompt, torch.tensor([11, 12]), (20, 22), 40, 0.5, {"max_new_tokens": 50, "stop_ids": [7]})
    report = retrieval_scores(tiny_llama, [trial], RetrievalConfig())
    assert calls == [(50, [7])]
    assert report.trials[0].generated == [11, 12] and report.trials[0].recall == 1.0 and report.trials[0].exact


def test_teacher_forced_needle_outcomes_are_the_greedy_exact_matches(tiny_llama):
    """One teacher-forced pass decides exact match as the greedy loop does: trials whose answer is the
    model's own greedy continuation (also with its last token changed) and random answers."""
    from workbench.analysis.retrieval import needle_outcomes
    from workbench.interventions import ablate_heads
    from workbench.models.generate import greedy_generate

    g = torch.Generator().manual_seed(3)
    trials = []
    for i in range(6):
        prompt = torch.randint(4, tiny_llama.geometry.vocab_size, (30,), generator=g)
        own = greedy_generate(tiny_llama, prompt.view(1, -1), 4, cache=False)[0].cpu()
        if i % 3 == 1:
            own = own.clone()
            own[-1] = (own[-1] + 1) % tiny_llama.geometry.vocab_size  # right until the last token
        answer = own if i % 3 != 2 else torch.randint(4, tiny_llama.geometry.vocab_size, (4,), generator=g)
        trials.append(NeedleTrial(prompt, answer, (5, 9), 30, 0.5, {}))
    for heads in ([], ["L0H0", "L1H1"]):
        with ablate_heads(tiny_llama, heads, "uniform"):
            greedy = [
                greedy_generate(tiny_llama, t.prompt.view(1, -1), 4, cache=False)[0].cpu().tolist() == t.answer.tolist()
                for t in trials
            ]
            assert needle_outcomes(tiny_llama, trials) == greedy
            # the trial set must hold both outcomes, or the comparison above could not tell a wrong rule
            assert True in greedy and False in greedy
