"""Issue 27, TransformerLens habits: `to_str_tokens` gives decoded strings (' cat', not the raw
byte-level BPE piece 'Ġcat'), and a typed prompt that is mostly unknown tokens warns."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from workbench.models.model import UnknownTokensWarning, unknown_token_warning

CORPUS = ["the cat sat on the mat", "a cat and a dog", "the dog sat", "cats and dogs on mats"] * 20


def _byte_level_bpe(folder: Path, vocab_size: int) -> None:
    """A GPT-2 style byte-level BPE tokenizer trained on a few sentences (no download), saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    fast.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory):
    from workbench.models import load_model
    from workbench.models.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2-bpe"), "gpt2", vocab_size=320)
    _byte_level_bpe(folder, 300)
    return load_model(folder, device="cpu")


def test_byte_level_bpe_tokens_are_decoded_strings(bpe_model):
    tok = bpe_model.tokenizer
    text = "the cat sat"
    raw = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert any(piece.startswith("Ġ") for piece in raw)  # the tokenizer really is byte-level BPE
    got = bpe_model.to_str_tokens(text)
    assert "Ġ" not in "".join(got) and " cat" in got
    assert "".join(t for t in got if t != "<|endoftext|>") == text  # pieces join back to the text
    assert (
        got
        == bpe_model.to_str_tokens(bpe_model.to_tokens(text))
        == bpe_model.to_str_tokens(bpe_model.to_tokens(text)[0].tolist())
    )
    assert got == list(bpe_model.bridge.to_str_tokens(bpe_model.to_tokens(text)[0]))  # what TransformerLens gives


def test_byte_level_bpe_never_warns(bpe_model):
    """No unknown token in a byte-level vocabulary: any text is readable."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownTokensWarning)
        bpe_model.to_tokens("zqxj wvk ñ")
    assert bpe_model.unknown_tokens("zqxj wvk") is None


def test_word_tokenizer_tokens_match_transformer_lens(tiny_llama):
    text = "w1 w2 w3"
    got = tiny_llama.to_str_tokens(text)
    assert got == ["<bos>", "w1", "w2", "w3"]
    assert got == list(tiny_llama.bridge.to_str_tokens(tiny_llama.to_tokens(text)[0]))


def test_a_mostly_unknown_prompt_warns_where_it_is_typed(tiny_llama):
    english = "The quick brown fox jumps over the lazy dog"
    for call in (tiny_llama.to_tokens, tiny_llama.to_str_tokens, tiny_llama.run_with_cache):
        with pytest.warns(UnknownTokensWarning, match=r"9 of the prompt's 9 tokens are the unknown token '<unk>'") as caught:
            call(english)
        assert caught[0].filename == __file__  # points at the user's line, not into the library
    message = tiny_llama.unknown_tokens(english)
    assert message is not None and "vocabulary" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownTokensWarning)
        tiny_llama.to_tokens("w1 w2 w3 fox")  # one unknown word in four: fine
    assert tiny_llama.unknown_tokens("w1 w2 w3 fox") is None


def test_library_callers_do_not_warn(tiny_llama):
    """The atlas and the dashboard check their own inputs; only the user's typed prompts warn in Python."""
    from workbench.app.live import PromptSpec, prompt_tokens

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownTokensWarning)
        prompt_tokens(tiny_llama, PromptSpec("text", "The quick brown fox"), [])


def test_the_helper_counts_only_ordinary_tokens(tiny_llama):
    tok = tiny_llama.tokenizer
    unk, bos = tok.unk_token_id, tok.bos_token_id
    assert unknown_token_warning(tok, [bos, unk, unk, 5]) is not None  # 2 of 3 (BOS not counted)
    assert unknown_token_warning(tok, [bos, unk, 5]) is None  # 1 of 2 is not "mostly"
    assert unknown_token_warning(tok, [bos]) is None
