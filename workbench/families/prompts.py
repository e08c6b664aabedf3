"""Prompts for families that need plain text: the user's file, organism filler, or the shipped prose.

Every family that reads "some text" goes through `family_prompts`, so the same run options give
the same token ids in every family and on resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import InputDataError
from workbench.families.context import RunContext

DEFAULT_N_PROMPTS = 8


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a file: ``.jsonl`` (objects with "text", or strings), ``.json`` (a list of
    strings or of objects with "text"), otherwise plain text with one prompt per line."""
    p = Path(path).expanduser()
    try:
        raw = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputDataError(f"prompt file {str(path)!r} does not exist", "check the path given to --prompts") from exc
    except IsADirectoryError as exc:
        raise InputDataError(f"prompt file {str(path)!r} is a folder", "give a text, .json or .jsonl file") from exc
    except PermissionError as exc:
        raise InputDataError(f"prompt file {str(path)!r} cannot be read (permission denied)", "make it readable") from exc
    except UnicodeDecodeError as exc:
        raise InputDataError(f"prompt file {str(path)!r} is not UTF-8 text ({exc.reason})", "save it as UTF-8 text") from exc
    except OSError as exc:
        raise InputDataError(f"prompt file {str(path)!r} cannot be read: {exc.strerror}") from exc
    suffix = p.suffix.lower()
    try:
        if suffix == ".jsonl":
            items: list[Any] = [json.loads(line) for line in raw.splitlines() if line.strip()]
        elif suffix == ".json":
            items = json.loads(raw)
            if not isinstance(items, list):
                raise InputDataError(f"prompt file {str(path)!r} must hold a JSON list", 'write ["first prompt", ...]')
        else:
            items = [line for line in raw.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise InputDataError(f"prompt file {str(path)!r} is not valid JSON: {exc}", "fix the JSON or use plain text") from exc
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            item = item["text"]
        if not isinstance(item, str):
            raise InputDataError(f"prompt {i} in {str(path)!r} is not a string", 'give strings or {"text": ...} objects')
        texts.append(item)
    if not texts:
        raise InputDataError(f"prompt file {str(path)!r} has no prompts", "write one prompt per line")
    return texts


def is_organism(model: Any) -> bool:
    """Shipped models are the project's organisms, trained on the organism vocabulary."""
    return getattr(getattr(model, "source", None), "kind", None) == "shipped"


def prompt_length(model: Any, ctx: RunContext) -> int:
    n_ctx = int(getattr(model.geometry, "n_ctx", 0) or 0)
    return max(2, min(ctx.max_tokens, n_ctx) if n_ctx > 0 else ctx.max_tokens)


def _special_ids(model: Any) -> set[int]:
    tok = getattr(model, "tokenizer", None)
    return set(getattr(tok, "all_special_ids", []) or [])


def random_token_prompts(model: Any, rng: np.random.Generator, n: int, length: int) -> list[torch.Tensor]:
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


def organism_prompts(model: Any, rng: np.random.Generator, n: int, length: int) -> list[torch.Tensor]:
    """Filler documents of the organism grammar (BOS first), ``length`` tokens each."""
    from workbench.organisms.tasks import filler_doc

    out = []
    for _ in range(n):
        ids = np.asarray(filler_doc(rng, length).ids, dtype=np.int64)[:length]
        if ids.size and int(ids.max()) >= model.geometry.vocab_size:
            raise InputDataError(f"organism filler ids exceed the vocabulary of {model.name}")
        out.append(torch.from_numpy(ids).view(1, -1))
    return out


def text_windows(model: Any, texts: list[str] | tuple[str, ...], rng: np.random.Generator, n: int, length: int) -> list[torch.Tensor]:
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


def family_prompts(model: Any, ctx: RunContext, family: str, default_n: int = DEFAULT_N_PROMPTS) -> tuple[list[torch.Tensor], str]:
    """Token-id prompts [1, N] for a family and where they came from ("file", "organism-filler",
    or the registered text set, "shipped:prose" by default)."""
    length = prompt_length(model, ctx)
    if ctx.prompts is not None:
        texts = ctx.prompts if ctx.n_prompts is None else ctx.prompts[: ctx.n_prompts]
        prompts = []
        for i, text in enumerate(texts):
            ids = model.to_tokens(text)[:, :length].cpu()
            if ids.shape[1] < 2:
                raise InputDataError(f"prompt {i} of the prompt file has {ids.shape[1]} token(s)", "give prompts of at least 2 tokens")
            prompts.append(ids)
        return prompts, "file"
    n = default_n if ctx.n_prompts is None else ctx.n_prompts
    rng = ctx.rng(family, "prompts")
    if is_organism(model):
        return organism_prompts(model, rng, n, length), "organism-filler"
    text, why = usable_text(model)
    if text is None:
        return random_token_prompts(model, rng, n, length), f"random-tokens ({why})"
    return text_windows(model, text.items, rng, n, length), text.source


#: a text set whose tokens are more than this share "unknown" for the model's tokenizer is not used
MAX_UNKNOWN_SHARE = 0.5


def usable_text(model: Any) -> tuple[Any, str]:
    """(the registered text set, "") when the model's tokenizer can read it; (None, reason) when it
    is mostly unknown tokens (a tiny test vocabulary), so callers fall back to random tokens and say so."""
    from workbench.data.registry import default_dataset

    text = default_dataset("text")
    unk = getattr(model.tokenizer, "unk_token_id", None)
    if unk is None:
        return text, ""
    ids = model.tokenizer(text.items[0][:5000], add_special_tokens=False)["input_ids"]
    share = sum(i == unk for i in ids) / max(len(ids), 1)
    if share > MAX_UNKNOWN_SHARE:
        return None, f"{text.source} is {share:.0%} unknown tokens for this tokenizer"
    return text, ""
