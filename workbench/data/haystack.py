"""Haystacks for needle trials, of any length.

The default is generated: the sentences of a text set (the shipped prose, or the model's own text
set) in an order drawn from the run's seeded generator, a new permutation for every pass over the
pool, until the text has the asked number of tokens. So a 128k-token haystack needs no download,
is the same for the same seed, and differs across seeds. A tokenizer that cannot read the prose
(a tiny test vocabulary) gets sentences of its own vocabulary's words instead.

Sentences holding the needle or its answer are left out, and the answer's token ids are checked
not to occur in the result, so the needle is found only where it is inserted. A user's haystack
(`load_haystack`) is any text file or any dataset `workbench.data.registry.get_dataset` knows
(a registered text set, a file, ``hf:NAME[:SPLIT[:FIELD]]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import InputDataError

#: a sentence ends at ., ! or ? followed by white space
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Haystack:
    """Haystack text, its length in tokens (no special tokens) and where it came from."""

    text: str
    n_tokens: int
    source: str
    note: str = ""  # what a reader of the summary should know (sentences reused, text repeated)


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def split_sentences(texts: Sequence[str]) -> list[str]:
    """The sentences of the passages, white space collapsed (paragraph breaks do not matter to a haystack)."""
    out: list[str] = []
    for text in texts:
        out += [s.strip() for s in _SENTENCE_END.split(" ".join(str(text).split())) if s.strip()]
    return out


def occurs(ids: Sequence[int], sub: Sequence[int]) -> int:
    """First position of ``sub`` in ``ids`` as a contiguous run, or -1."""
    seq, part = list(ids), list(sub)
    n = len(part)
    if n == 0:
        return -1
    first = part[0]
    for i in range(len(seq) - n + 1):
        if seq[i] == first and seq[i : i + n] == part:
            return i
    return -1


def vocabulary_sentences(tokenizer: Any, vocab_size: int, rng: np.random.Generator, n: int = 256) -> list[str]:
    """``n`` sentences of 8-20 words of the tokenizer's own vocabulary (special tokens left out), ended by
    " ." when the tokenizer knows the full stop: a haystack for a tokenizer that reads no prose."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = [i for i in range(vocab_size) if i not in special]
    if len(ids) > 4096:  # a large vocabulary: a seeded sample of it is words enough
        ids = sorted(int(i) for i in rng.choice(ids, 4096, replace=False))
    words = []
    for i in ids:
        word = tokenizer.decode([i]).strip()
        if word and not any(c.isspace() for c in word) and word not in ".!?":
            words.append(word)
    if not words:
        raise InputDataError("the tokenizer's vocabulary has no plain words to build a haystack from", "give a haystack file")
    unk = getattr(tokenizer, "unk_token_id", None)
    stop = tokenizer(" .", add_special_tokens=False)["input_ids"]
    end = " ." if stop and unk not in stop else ""
    pool = np.array(words, dtype=object)
    return [" ".join(pool[rng.integers(0, len(pool), int(rng.integers(8, 21)))]) + end for _ in range(n)]


def generated_haystack(
    tokenizer: Any,
    n_tokens: int,
    rng: np.random.Generator,
    sentences: Sequence[str],
    avoid: Sequence[str] = (),
    avoid_ids: Sequence[Sequence[int]] = (),
    source: str = "generated",
) -> Haystack:
    """At least ``n_tokens`` tokens of ``sentences`` in seeded shuffled order (each pass a new permutation).

    Sentences containing any string of ``avoid`` (case-insensitive: the needle, its answer) are left
    out; the result is checked to hold none of ``avoid_ids`` (the answer's token ids), so a needle
    inserted into it occurs exactly once. The text overshoots ``n_tokens`` by less than one sentence.
    """
    if n_tokens < 1:
        raise InputDataError(f"a haystack of {n_tokens} tokens was asked for", "ask for at least one token")
    lowered = [a.lower() for a in avoid if a.strip()]
    pool = [s for s in sentences if s.strip() and not any(a in s.lower() for a in lowered)]
    lengths = [count_tokens(tokenizer, " " + s) for s in pool]
    pool = [s for s, n in zip(pool, lengths) if n > 0]
    lengths = [n for n in lengths if n > 0]
    if not pool:
        raise InputDataError(
            f"no sentence is left to generate a haystack from ({len(sentences)} given, all empty or holding the needle)",
            "give a haystack file with --set retrieval.haystack=FILE",
        )
    chosen: list[int] = []
    total = 0
    while True:
        while total < n_tokens:
            for i in rng.permutation(len(pool)):
                chosen.append(int(i))
                total += lengths[i]
                if total >= n_tokens:
                    break
        text = " ".join(pool[i] for i in chosen)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= n_tokens:
            break
        total = len(ids)  # joined, the sentences tokenise a little shorter than apart: draw more
    for bad in avoid_ids:
        where = occurs(ids, bad)
        if where >= 0:  # the answer formed across a sentence boundary: refuse rather than plant a twin
            raise InputDataError(
                f"the generated haystack holds the needle's answer tokens at token {where}", "run with another --seed"
            )
    reuse = len(chosen) / len(pool)
    note = f"{len(pool)} sentences, each used about {reuse:.1f} times" if reuse > 1 else f"{len(chosen)} of {len(pool)} sentences"
    return Haystack(text, len(ids), source, note)


def load_haystack(spec: str, tokenizer: Any) -> Haystack:
    """A user's haystack: a text file (one passage), or a dataset name `get_dataset` knows (its items
    joined by blank lines). Missing, unreadable or empty input is an `InputDataError` naming it."""
    from workbench.data.registry import Dataset, get_dataset

    fix = "give a UTF-8 text file with some content, a registered text set (e.g. prose) or hf:NAME[:SPLIT[:FIELD]]"
    try:
        data = get_dataset(spec, "text")
    except InputDataError as exc:
        raise InputDataError(f"retrieval.haystack={spec!r}: {exc.message}", exc.hint or fix) from exc
    if not isinstance(data, Dataset) or data.tokenized:
        raise InputDataError(f"retrieval.haystack={spec!r} is not a set of texts", fix)
    text = "\n\n".join(str(x) for x in data.items if str(x).strip())
    n = count_tokens(tokenizer, text) if text.strip() else 0
    if n == 0:
        raise InputDataError(f"retrieval.haystack={spec!r} ({data.source}) holds no text", fix)
    return Haystack(text, n, data.source)
