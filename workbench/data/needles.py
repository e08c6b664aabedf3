"""Needle-in-a-haystack trials: a prompt, the expected answer, and where the answer sits.

Two sources: the organisms' needle probes (key/value pairs with distractors, exact token
spans known), and any text haystack a user gives (a needle sentence inserted at a depth,
a question appended, the answer span located in tokens as in Wu et al.'s find_needle_idx).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.data.haystack import occurs
from workbench.errors import InputDataError


@dataclass(frozen=True)
class NeedleTrial:
    prompt: torch.Tensor  # [N] token ids, BOS first when the model uses one
    answer: torch.Tensor  # [A] the ids the model should generate
    answer_span: tuple[int, int]  # [start, end) positions in the prompt holding the answer tokens
    context_len: int
    depth: float
    meta: dict[str, Any] = field(default_factory=dict)


def from_organism_probes(probes: Iterable[Any]) -> list[NeedleTrial]:
    """Organism needle probes (workbench.organisms) as trials."""
    trials = []
    for p in probes:
        start, end = p.meta["needle_span"]
        trials.append(
            NeedleTrial(
                prompt=torch.as_tensor(np.asarray(p.prompt), dtype=torch.long),
                answer=torch.as_tensor(np.asarray(p.answer), dtype=torch.long),
                answer_span=(int(start), int(end)),
                context_len=len(p.prompt),
                depth=float(p.meta.get("depth", float("nan"))),
                meta={k: v for k, v in p.meta.items() if k != "needle_span"},
            )
        )
    return trials


def locate_span(prompt_ids: Sequence[int], answer_ids: Sequence[int], min_overlap: float = 0.9) -> tuple[int, int]:
    """First window of the prompt whose unique tokens overlap the answer's by more than
    ``min_overlap`` (Wu et al.'s find_needle_idx); exact matches win."""
    prompt = list(prompt_ids)
    answer = list(answer_ids)
    n = len(answer)
    if n == 0:
        raise InputDataError("the needle answer is empty", "give an answer of at least one token")
    want = set(answer)
    for i in range(len(prompt) - n + 1):
        if prompt[i : i + n] == answer:
            return i, i + n
    for i in range(len(prompt) - n + 1):
        if len(set(prompt[i : i + n]) & want) / len(want) > min_overlap:
            return i, i + n
    raise InputDataError("the needle answer was not found in the prompt", "check that the needle contains the answer text")


def own_token_span(tokenizer: Any, prompt_ids: Sequence[int], span: tuple[int, int]) -> tuple[int, int]:
    """The part of ``span`` that holds the answer's own tokens: a leading or trailing token that
    decodes to whitespace only (a byte-level BPE's separate space before digits) is left out, so each
    copied answer token is worth 1/|answer tokens| in the retrieval score."""
    start, end = span
    ids = list(prompt_ids)

    def blank(i: int) -> bool:
        return not tokenizer.decode([int(ids[i])]).strip()

    while start < end and blank(start):
        start += 1
    while end > start and blank(end - 1):
        end -= 1
    return (start, end) if end > start else span


#: Wu et al.'s prompt tail (retrieval_head_detection.py): the question, then an answer cue
REFERENCE_QUESTION = "\nBased on the content of the book, Question: {question}\nAnswer:"
#: Wu et al. decode up to 50 tokens and stop at the first newline
REFERENCE_MAX_NEW_TOKENS = 50


def newline_ids(tokenizer: Any) -> list[int]:
    """Token ids that mean "newline" for this tokenizer (the reference stops decoding there)."""
    ids = set()
    encoded = tokenizer("\n", add_special_tokens=False)["input_ids"]
    if encoded:
        ids.add(int(encoded[-1]))
    for name in ("<0x0A>", "\u010a", "\n"):
        tid = tokenizer.convert_tokens_to_ids(name) if hasattr(tokenizer, "convert_tokens_to_ids") else None
        if isinstance(tid, int) and tid != getattr(tokenizer, "unk_token_id", None):
            ids.add(tid)
    return sorted(ids)


def text_needle_trials(
    tokenizer: Any,
    haystack: str | Path,  # the text itself, or a Path to a UTF-8 text file
    needle: str,
    question: str,
    answer: str,
    context_lengths: Sequence[int],
    depths: Sequence[float],
    question_template: str = REFERENCE_QUESTION,
    max_new_tokens: int = REFERENCE_MAX_NEW_TOKENS,
) -> list[NeedleTrial]:
    """Trials from a text haystack: the needle inserted at each depth (moved to a sentence
    boundary), truncated so each prompt has the given token length, the question appended in Wu et
    al.'s form ending with the answer cue. A haystack that already holds the answer's tokens is refused
    (the copied span would be ambiguous); one shorter than a context is repeated. Each trial asks for up to ``max_new_tokens`` (50) of
    greedy decoding stopped at a newline, as the reference does."""
    text = haystack.read_text(encoding="utf-8") if isinstance(haystack, Path) else str(haystack)
    if not text.strip():
        raise InputDataError("the haystack text is empty", "give a text file with some content")
    hay_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    needle_ids = tokenizer(" " + needle.strip(), add_special_tokens=False)["input_ids"]
    question_ids = tokenizer(question_template.format(question=question.strip()), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
    period_ids = set(tokenizer(".", add_special_tokens=False)["input_ids"])
    meta = {"kind": "text", "max_new_tokens": int(max_new_tokens), "stop_ids": newline_ids(tokenizer)}
    trials = []
    for length in context_lengths:
        budget = length - len(bos) - len(needle_ids) - len(question_ids)
        if budget <= 0:
            raise InputDataError(f"context length {length} is too short for the needle and question", "use longer contexts")
        if budget > len(hay_ids):
            reps = budget // max(len(hay_ids), 1) + 1
            base = (hay_ids * reps)[:budget]
        else:
            base = hay_ids[:budget]
        twin = occurs(base, answer_ids)
        if twin >= 0:  # the span would be ambiguous: a head copying the haystack's copy is not retrieving the needle
            raise InputDataError(
                f"the haystack already holds the needle's answer {answer.strip()!r} (token {twin} of the haystack)",
                "use a haystack without that text, or another answer",
            )
        for depth in depths:
            want = int(len(base) * float(depth))
            # back to a sentence end; a haystack with none (a vocabulary-word haystack) keeps the depth
            cut = next((c for c in range(want, 0, -1) if base[c - 1] in period_ids), want)
            ids = bos + base[:cut] + needle_ids + base[cut:] + question_ids
            at = len(bos) + cut  # the answer is searched inside the inserted needle only
            span = locate_span(ids[at : at + len(needle_ids)], answer_ids)
            start, end = own_token_span(tokenizer, ids, (span[0] + at, span[1] + at))
            trials.append(
                NeedleTrial(torch.tensor(ids), torch.tensor(answer_ids), (start, end), len(ids), float(depth), dict(meta))
            )
    return trials
