"""A whitespace word-level tokenizer built with the `tokenizers` library.

Used by the tiny random models and by the model organisms: one word is one token, so
positions in the analyses line up with words a reader can see.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<unk>", "<bos>", "<eos>", "<pad>")


def build_word_tokenizer(words: Sequence[str], prepend_bos: bool = True) -> PreTrainedTokenizerFast:
    """Special tokens take ids 0-3 (unk, bos, eos, pad); ``words`` follow in order."""
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *words):
        if token in vocab:
            raise ValueError(f"duplicate token {token!r} in the vocabulary")
        if not token or any(c.isspace() for c in token):
            raise ValueError(f"token {token!r} must be non-empty and contain no whitespace")
        vocab[token] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if prepend_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )
    return fast


def save_word_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> None:
    tokenizer.save_pretrained(str(folder))
