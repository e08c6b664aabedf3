"""Model loading, the needle trials, kvpress-style generation and the workbench's simulated budget.

Generation follows ``KVPressTextGenerationPipeline._forward`` / ``generate_answer`` (kvpress 0.5.5),
on token ids instead of text: the *context* (the prompt without its question) is prefilled by
``model.model`` inside ``with press(model)``, so the press compresses the cache once, after the
prefill; then the *question* tokens go through the model on that cache with explicit positions,
and the answer is decoded greedily. For the organism's needle probes the question is the prompt's
last two tokens, ``recall <key>``: were it prefilled with the context, the first answer token would
come from full attention and no press could change it.

The *simulation* is the workbench's ``kv_budget_by_kv_heads`` logic redone in sdpa: every query
(prefill and decoding alike) of a streaming KV head's query heads sees only the first ``sink`` keys
and the ``recent`` keys up to and including itself; full KV heads see everything.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
ORGANISM = REPO / "workbench" / "organisms" / "shipped" / "organism-4l"
TRIALS = Path(__file__).resolve().parent / "data" / "needle_trials.json"
QUESTION_TOKENS = 2  # "recall <key>" closes every needle prompt


@dataclass
class Trial:
    prompt: list[int]
    answer: list[int]
    depth: float = float("nan")

    @property
    def context(self) -> list[int]:
        return self.prompt[:-QUESTION_TOKENS]

    @property
    def question(self) -> list[int]:
        return self.prompt[-QUESTION_TOKENS:]


def load_trials(path: str | Path = TRIALS, name: str = "needle-256", n: int | None = None) -> list[Trial]:
    data = json.loads(Path(path).read_text())
    rows = data["sets"][name]
    return [Trial(list(r["prompt"]), list(r["answer"]), float(r.get("depth", float("nan")))) for r in rows[:n]]


def trial_sets(path: str | Path = TRIALS) -> list[str]:
    return list(json.loads(Path(path).read_text())["sets"])


def load_model(folder: str | Path = ORGANISM, threads: int | None = 1):
    """The organism (a Llama saved by transformers 5.x) in this venv's transformers, with sdpa.

    The shipped files are never modified. transformers 5.2 reads the 5.x ``rope_parameters`` key
    itself; an older config layout (``rope_theta`` only) is adapted in memory."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)
    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text())
    config = AutoConfig.from_pretrained(folder)
    theta = (raw.get("rope_parameters") or {}).get("rope_theta", raw.get("rope_theta"))
    have = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", None))
    if theta is not None and have != theta:  # in-memory adaptation only
        config.rope_parameters = {"rope_type": "default", "rope_theta": float(theta)}
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, attn_implementation="sdpa", dtype=torch.float32)
    model.eval()
    return model


@torch.no_grad()
def press_generate(model, trial: Trial, press=None, max_new_tokens: int | None = None) -> tuple[list[int], dict]:
    """Greedy answer ids under ``press`` (None: full cache), and the cache accounting:
    ``kept`` / ``total`` keys over the context, summed over layers and KV heads."""
    from transformers import DynamicCache

    n_new = max_new_tokens or len(trial.answer)
    context = torch.tensor([trial.context])
    question = torch.tensor([trial.question])
    n_ctx = context.shape[1]
    cache = DynamicCache()
    with press(model) if press is not None else contextlib.nullcontext():
        model.model(input_ids=context, past_key_values=cache)
    layers = model.model.layers
    n_kv = model.config.num_key_value_heads
    total = len(layers) * n_kv * n_ctx
    kept = 0
    for i, layer in enumerate(layers):
        length = cache.layers[i].keys.shape[2]  # pruning presses shorten the cache
        masked = getattr(layer.self_attn, "masked_key_indices", None)  # masking presses mark keys
        n_masked = int(masked[0].numel()) if masked is not None else 0
        kept += n_kv * length - n_masked
    positions = torch.arange(n_ctx, n_ctx + question.shape[1]).unsqueeze(0)
    out = model(input_ids=question, past_key_values=cache, position_ids=positions, logits_to_keep=1)
    ids = [int(out.logits[0, -1].argmax())]
    pos = positions[:, -1:] + 1
    for i in range(n_new - 1):
        out = model(input_ids=torch.tensor([[ids[-1]]]), past_key_values=cache, position_ids=pos + i)
        ids.append(int(out.logits[0, -1].argmax()))
    for layer in layers:  # leave no masking state behind for the next trial
        if hasattr(layer.self_attn, "masked_key_indices"):
            layer.self_attn.masked_key_indices = None
    return ids, {"kept": kept, "total": total, "context": n_ctx}


def press_accuracy(model, trials: Iterable[Trial], press=None) -> tuple[float, float]:
    """(exact-match accuracy, cache fraction kept = kept keys / all keys over the context)."""
    hits, kept, total, n = 0, 0, 0, 0
    for t in trials:
        ids, acc = press_generate(model, t, press)
        hits += int(ids == t.answer)
        kept += acc["kept"]
        total += acc["total"]
        n += 1
    return hits / max(n, 1), kept / max(total, 1)


# -- the workbench's simulated budget, in sdpa --------------------------------------------------


def streaming_keep(n_queries: int, n_keys: int, sink: int, recent: int) -> torch.Tensor:
    """Bool [Nq, Nk]: causal, and a key among the first ``sink`` or within ``recent`` of the query
    (the workbench's ``streaming_mask``)."""
    qpos = torch.arange(n_queries)[:, None] + (n_keys - n_queries)
    j = torch.arange(n_keys)[None, :]
    return (j <= qpos) & ((j < sink) | (qpos - j < recent))


@contextlib.contextmanager
def simulated_budget(model, streaming: set[tuple[int, int]], sink: int, recent: int) -> Iterator[None]:
    """Within the block, the query heads of each streaming (layer, KV head) see sink + recent keys
    only, at every query; other heads attend causally over everything. Swaps the sdpa entry of
    transformers' attention registry (the Llama layers look it up on each call)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = model.config._attn_implementation
    original = ALL_ATTENTION_FUNCTIONS[name]
    groups = model.config.num_attention_heads // model.config.num_key_value_heads

    def wrapped(module, query, key, value, attention_mask, *args, **kwargs):
        layer = module.layer_idx
        stream_kv = [kv for (l, kv) in streaming if l == layer]
        nq, nk = query.shape[2], key.shape[2]
        causal = streaming_keep(nq, nk, nk + 1, 0)  # plain causal (every key < sink)
        mask = causal.expand(query.shape[1], nq, nk).clone()
        if stream_kv:
            window = streaming_keep(nq, nk, sink, recent)
            for kv in stream_kv:
                mask[kv * groups : (kv + 1) * groups] = window
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            mask = mask & attention_mask[..., :nk]
        return original(module, query, key, value, mask.unsqueeze(0), *args, **kwargs)

    ALL_ATTENTION_FUNCTIONS[name] = wrapped
    try:
        yield
    finally:
        ALL_ATTENTION_FUNCTIONS[name] = original


@torch.no_grad()
def simulated_generate(model, trial: Trial, streaming: set[tuple[int, int]], sink: int, recent: int) -> list[int]:
    """Greedy answer ids with the simulated budget: the whole sequence is recomputed at each step
    (no cache), as the workbench's greedy_generate under its hooks."""
    seq = list(trial.prompt)
    out: list[int] = []
    with simulated_budget(model, streaming, sink, recent):
        for _ in range(len(trial.answer)):
            logits = model(input_ids=torch.tensor([seq]), use_cache=False, logits_to_keep=1).logits
            tok = int(logits[0, -1].argmax())
            out.append(tok)
            seq.append(tok)
    return out


def simulated_accuracy(model, trials: Iterable[Trial], streaming, sink: int, recent: int) -> float:
    trials = list(trials)
    return sum(int(simulated_generate(model, t, set(streaming), sink, recent) == t.answer) for t in trials) / max(len(trials), 1)


def duo_cache_fraction(n_tokens: int, n_full: int, n_total: int, sink: int, recent: int) -> float:
    """Kept keys / all keys when n_full of n_total KV heads keep everything and the others keep
    sink + recent (the workbench's ``cache_fraction``)."""
    stream = min(n_tokens, sink + recent)
    return (n_full * n_tokens + (n_total - n_full) * stream) / (n_total * n_tokens)


def versions() -> dict[str, Any]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("kvpress", "transformers", "torch", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def offline_env() -> None:
    """No network here: make the hub fail fast instead of retrying."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
