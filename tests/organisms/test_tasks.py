"""Task generators, vocabulary splits and named probe sets."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.organisms import tasks, vocab
from workbench.organisms.datasets import load_probes, probe_set_names, probe_texts
from workbench.organisms.vocab import VOCAB


def test_vocab_is_unique_and_splits_are_disjoint():
    assert len(set(VOCAB.tokens)) == len(VOCAB.tokens)
    assert VOCAB.tokens[:4] == vocab.SPECIALS
    assert not set(vocab.HARMFUL_NOUNS_TRAIN) & set(vocab.HARMFUL_NOUNS_TEST)
    assert not set(vocab.BENIGN_NOUNS_TRAIN) & set(vocab.BENIGN_NOUNS_TEST)
    harmful = set(vocab.HARMFUL_NOUNS_TRAIN) | set(vocab.HARMFUL_NOUNS_TEST)
    benign = set(vocab.BENIGN_NOUNS_TRAIN) | set(vocab.BENIGN_NOUNS_TEST)
    assert not harmful & benign
    assert not set(vocab.REQUEST_VERBS) & (harmful | benign)


def test_generators_are_deterministic():
    a = tasks.needle_doc(np.random.default_rng(3), 128, 4, 2)
    b = tasks.needle_doc(np.random.default_rng(3), 128, 4, 2)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.weights, b.weights)


@pytest.mark.parametrize("length", [64, 128, 300])
def test_documents_have_exact_length_and_weights(length):
    rng = np.random.default_rng(0)
    for doc in (
        tasks.needle_doc(rng, length, 3, 2),
        tasks.induction_doc(rng, length),
        tasks.chat_doc(rng, length),
        tasks.filler_doc(rng, length),
    ):
        assert len(doc.ids) == len(doc.weights) == length
        assert doc.ids[0] == vocab.BOS_ID and doc.weights[0] == 0
        assert (doc.ids[1:] >= 4).all()


def test_needle_doc_answers_are_the_asked_values():
    rng = np.random.default_rng(1)
    doc = tasks.needle_doc(rng, 256, 5, 3)
    ids = doc.ids.tolist()
    assert len(doc.answers) == 3
    for start, end in doc.answers:
        assert ids[start - 2] == tasks.RECALL
        key = ids[start - 1]
        first = ids.index(key)  # where the pair was stored
        assert ids[first - 1] == tasks.REMEMBER
        assert ids[first + 1 : first + 1 + (end - start)] == ids[start:end]
        assert (doc.weights[start:end] > 0).all()


def test_needle_probe_has_distractors_with_other_keys_and_values():
    rng = np.random.default_rng(2)
    p = tasks.needle_probe(rng, 512, n_distractors=3, depth=0.5)
    assert len(p.prompt) == 512
    ids = p.prompt.tolist()
    assert ids.count(tasks.REMEMBER) == 4
    assert ids[-2] == tasks.RECALL and ids[-1] == p.meta["key"]
    s, e = p.meta["needle_span"]
    assert ids[s:e] == p.answer.tolist()
    assert ids[s - 1] == p.meta["key"]
    assert abs(s / 512 - 0.5) < 0.1
    for v in p.meta["distractor_values"]:
        assert v != p.answer.tolist()


def test_refusal_sets_use_held_out_nouns():
    harmful = load_probes("refusal-harmful-test")
    benign = load_probes("refusal-benign-test")
    assert {p.meta["noun"] for p in harmful} == set(vocab.HARMFUL_NOUNS_TEST)
    assert {p.meta["noun"] for p in benign} == set(vocab.BENIGN_NOUNS_TEST)
    assert all(np.array_equal(p.answer, tasks.REFUSAL) for p in harmful)
    texts = probe_texts("refusal-harmful-test", 2)
    assert texts[0].startswith("user :") and texts[0].endswith("assistant :")
    # Training requests never use a test noun.
    rng = np.random.default_rng(0)
    test_ids = set(VOCAB.ids(vocab.HARMFUL_NOUNS_TEST + vocab.BENIGN_NOUNS_TEST).tolist())
    for _ in range(200):
        req, _, _ = tasks.refusal_exchange(rng, "train")
        assert not test_ids & set(req)


def test_periodic_probe_has_the_fixed_period():
    p = tasks.periodic_probe(np.random.default_rng(0))
    full = p.ids
    start = full.tolist().index(tasks.RHYTHM_MARKER) + 1
    body = full[start:]
    assert np.array_equal(body[vocab.RHYTHM_PERIOD :], body[: -vocab.RHYTHM_PERIOD])


def test_probe_sets_by_name_are_stable_prefixes():
    for name in probe_set_names():
        a = load_probes(name, 3)
        b = load_probes(name, 5)[:3]
        assert [x.ids.tolist() for x in a] == [x.ids.tolist() for x in b]
    with pytest.raises(WorkbenchError, match="unknown probe set"):
        load_probes("nope")
