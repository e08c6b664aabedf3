"""Prompts for families that need plain text: the user's file, the model's own text set, or the shipped prose.

Every family that reads "some text" goes through `family_prompts`, so the same run options give
the same token ids in every family and on resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from workbench.data.registry import Dataset, GeneratedSet, PromptSet, default_dataset, model_dataset
from workbench.errors import InputDataError
from workbench.families.base import InputProblem
from workbench.families.context import RunContext

if TYPE_CHECKING:
    from workbench.models.model import Model

DEFAULT_N_PROMPTS = 8


def prompt_length(model: Model, ctx: RunContext) -> int:
    n_ctx = int(getattr(model.geometry, "n_ctx", 0) or 0)
    return max(2, min(ctx.max_tokens, n_ctx) if n_ctx > 0 else ctx.max_tokens)


def _special_ids(model: Model) -> set[int]:
    tok = getattr(model, "tokenizer", None)
    return set(getattr(tok, "all_special_ids", []) or [])


def random_token_prompts(model: Model, rng: np.random.Generator, n: int, length: int) -> list[torch.Tensor]:
    """Uniform token ids from the vocabulary (special tokens excluded), BOS first when the model has one."""
    vocab = int(model.geometry.vocab_size)
    special = _special_ids(model)
    pool = np.array([i for i in range(vocab) if i not in special], dtype=np.int64)
    if pool.size == 0:
        raise InputDataError("the model's vocabulary has only special tokens", "give prompts with --prompts")
    bos = model.geometry.bos.token_id
    out = []
    for _ in range(n):
        body = pool[rng.integers(0, pool.size, size=length - (1 if bos is not None else 0))]
        ids = np.concatenate([[bos], body]) if bos is not None else body
        out.append(torch.from_numpy(ids.astype(np.int64)).view(1, -1))
    return out


def text_windows(
    model: Model, texts: list[str] | tuple[str, ...], rng: np.random.Generator, n: int, length: int
) -> list[torch.Tensor]:
    """``n`` windows of ``length`` tokens cut at random offsets from the texts (joined; repeated when
    shorter), BOS first when the tokenizer prepends one."""
    ids = model.tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputDataError("the text set tokenises to nothing", "give a text set with some content")
    bos = model.geometry.bos
    lead = [bos.token_id] if bos.prepends and bos.token_id is not None else []
    body = max(1, length - len(lead))
    if len(ids) < body:
        ids = ids * (body // len(ids) + 1)
    starts = rng.integers(0, len(ids) - body + 1, size=n)
    return [torch.tensor(lead + ids[s : s + body], dtype=torch.long).view(1, -1) for s in starts]


def family_prompts(
    model: Model, ctx: RunContext, family: str, default_n: int = DEFAULT_N_PROMPTS
) -> tuple[list[torch.Tensor], str]:
    """Token-id prompts [1, N] for a family and where they came from ("file", the model's own text set
    such as "organism-filler", or the default text set, "shipped:prose")."""
    length = prompt_length(model, ctx)
    if ctx.prompts is not None:
        texts = ctx.prompts if ctx.n_prompts is None else ctx.prompts[: ctx.n_prompts]
        prompts = []
        for i, text in enumerate(texts):
            ids = model.to_tokens(text)[:, :length].cpu()
            if ids.shape[1] < 2:
                raise InputDataError(
                    f"prompt {i} of the prompt file has {ids.shape[1]} token(s)", "give prompts of at least 2 tokens"
                )
            prompts.append(ids)
        return prompts, "file"
    n = default_n if ctx.n_prompts is None else ctx.n_prompts
    rng = ctx.rng(family, "prompts")
    own = model_dataset("text", model)
    if isinstance(own, GeneratedSet):
        return own.make(model, rng, n, length), own.source
    text_set, why = usable_text(model, own)
    if text_set is None:
        return random_token_prompts(model, rng, n, length), f"random-tokens ({why})"
    return text_windows(model, text_set.items, rng, n, length), text_set.source


def text_input_problems(model: Model, ctx: RunContext, family: str) -> list[InputProblem]:
    """The text a family will read: a warning when the default set is unreadable for this tokenizer
    (the family falls back to random tokens). A user's prompt file is checked once by the atlas."""
    if ctx.prompts is not None:
        return []
    own = model_dataset("text", model)
    if isinstance(own, GeneratedSet):
        return []
    text, why = usable_text(model, own)
    if text is None:
        return [
            InputProblem(
                family,
                f"{why}; the family uses uniformly random tokens instead",
                "give text in the model's language with --prompts FILE",
                fatal=False,
            )
        ]
    return []


#: a text set whose tokens are more than this share "unknown" for the model's tokenizer is not used
MAX_UNKNOWN_SHARE = 0.5


def unknown_share(model: Model, texts: Sequence[str]) -> float:
    """Share of the tokens of ``texts`` (the first 5000 characters of each) that are the tokenizer's
    unknown token (0.0 for byte-level tokenizers, which have none)."""
    unk = getattr(model.tokenizer, "unk_token_id", None)
    if unk is None:
        return 0.0
    ids = [i for t in texts for i in model.tokenizer(t[:5000], add_special_tokens=False)["input_ids"]]
    return sum(i == unk for i in ids) / max(len(ids), 1)


def usable_text(model: Model, own: PromptSet | None = None) -> tuple[Dataset | None, str]:
    """(the text set, "") when the model's tokenizer can read it; (None, reason) when it is mostly
    unknown tokens (a tiny test vocabulary), so callers fall back to random tokens and say so."""
    text = own if isinstance(own, Dataset) else default_dataset("text")
    share = unknown_share(model, text.items[:1])
    if share > MAX_UNKNOWN_SHARE:
        return None, f"{text.source} is {share:.0%} unknown tokens for this tokenizer"
    return text, ""
