"""Live views on a run's model: the model cache, attention records, and the ablation playground.

The run's model is loaded once (per spec, device and dtype) and kept. Hooks installed by the
recorder or by an ablation act on the whole model, so computations on one model take its lock
and run one at a time; other views (store reads) never wait for them. Recorded patterns are
kept in a small cache (by model, prompt and layer) so that switching heads of the same layer,
the token view and exports do not run the model again.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.app import patterns as P
from workbench.app.data import TEXT_FAMILIES
from workbench.app.jobs import Progress
from workbench.errors import InputDataError, WorkbenchError

if TYPE_CHECKING:
    from workbench.interventions.ablation import AblationMode
    from workbench.models.model import Model
    from workbench.record import AttentionRecord

MAX_NEW_TOKENS = 64
MAX_TOP_K = 50
#: The playground's ablation mode unless the user picks another: the atlas's own (uniform attention),
#: so a head ablated here does what the atlas's causal checks did to it.
PLAYGROUND_MODE: AblationMode = "uniform"


# -- the model cache --------------------------------------------------------------------------------


@dataclass
class LiveModel:
    model: Model
    key: tuple[str, str, str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    warnings: list[str] = field(default_factory=list)
    load_seconds: float = 0.0


def run_dtype(run: Any) -> str:
    return str((run.config or {}).get("dtype") or "float32")


class ModelCache:
    """Loads each run's model once; keeps at most ``max_models`` (least recently used go first)."""

    def __init__(self, device: str = "auto", max_models: int = 2) -> None:
        self.device = device
        self.max_models = max(1, max_models)
        self._models: OrderedDict[tuple[str, str, str], LiveModel] = OrderedDict()
        self._loading: dict[tuple[str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def key(self, run: Any) -> tuple[str, str, str]:
        return (run.model, self.device, run_dtype(run))

    def loaded(self, run: Any) -> bool:
        with self._lock:
            return self.key(run) in self._models

    def get(self, run: Any, progress: Progress | None = None) -> LiveModel:
        key = self.key(run)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one loader per model; others wait for it
            with self._lock:
                if key in self._models:
                    return self._models[key]
            if progress:
                progress(0.02, f"loading model {run.model} (once; it stays loaded)")
            live = self._load(run, key)
            with self._lock:
                self._models[key] = live
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
            return live

    def _load(self, run: Any, key: tuple[str, str, str]) -> LiveModel:
        from workbench.models import load_model

        t0 = time.perf_counter()
        model = load_model(run.model, device=self.device, dtype=run_dtype(run))
        live = LiveModel(model, key, load_seconds=time.perf_counter() - t0)
        geo = model.geometry
        if run.n_layers and (geo.n_layers, geo.n_heads) != (run.n_layers, run.n_heads):
            raise WorkbenchError(
                f"model {run.model!r} now has {geo.n_layers} x {geo.n_heads} heads, run {run.run_id} recorded "
                f"{run.n_layers} x {run.n_heads}",
                "the model folder changed since the run; live views need the run's model",
            )
        if run.model_hash and run.model_path:
            from workbench.store.runs import model_fingerprint

            now = model_fingerprint(run.model_path)
            if now and now != run.model_hash:
                live.warnings.append(
                    f"the weights in {run.model_path} changed since run {run.run_id} (fingerprint {now[:10]} vs "
                    f"{run.model_hash[:10]}): live views use the current weights"
                )
        return live


@contextlib.contextmanager
def using(live: LiveModel, progress: Progress | None = None) -> Iterator[Model]:
    """Hold the model for one computation (hooks are model-wide)."""
    if not live.lock.acquire(blocking=False):
        if progress:
            progress(0.05, "waiting for the model (another live computation is running)")
        live.lock.acquire()
    try:
        yield live.model
    finally:
        live.lock.release()


@contextlib.contextmanager
def layer_progress(model: Model, progress: Progress | None, start: float, end: float, label: str) -> Iterator[None]:
    """Report progress as each transformer block finishes (plain torch forward hooks, removed after)."""
    if progress is None:
        yield
        return
    blocks = list(model.bridge.blocks)
    handles = []
    for i, block in enumerate(blocks):

        def done(module: Any, args: Any, output: Any, i: int = i) -> None:
            progress(start + (end - start) * (i + 1) / len(blocks), f"{label}: layer {i + 1}/{len(blocks)}")

        handles.append(block.register_forward_hook(done))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# -- prompts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptSpec:
    """What the user chose: ``source`` is "text", "run" (a prompt of the run's file), "atlas" (prompt
    ``index`` of ``family``, rebuilt as the atlas built it) or "random"."""

    source: str = "text"
    text: str = ""
    index: int = 0
    length: int = 64
    seed: int = 0
    family: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PromptSpec:
        d = d or {}

        def as_int(value: Any, default: int) -> int:
            try:
                return int(value)
            except (TypeError, ValueError):
                return default

        family, index = "", as_int(d.get("index"), 0)
        if str(d.get("source")) == "atlas":  # the scored-prompt dropdown's value: "family:index"
            family, _, number = str(d.get("scored") or "").partition(":")
            index = as_int(number, 0)
        return cls(
            source=str(d.get("source") or "text"),
            text=str(d.get("text") or ""),
            index=index,
            length=as_int(d.get("length"), 64),
            seed=as_int(d.get("seed"), 0),
            family=family,
        )

    def key(self) -> str:
        if self.source == "text":
            return "text:" + hashlib.sha256(self.text.encode()).hexdigest()[:16]
        if self.source == "run":
            return f"run:{self.index}"
        if self.source == "atlas":
            return f"atlas:{self.family}:{self.index}"
        return f"random:{self.length}:{self.seed}"


def atlas_prompt(model: Model, run: Any, family: str, index: int, run_texts: list[str]) -> Any:
    """Prompt ``index`` of a text family exactly as the atlas built it: `family_prompts` with the run's
    seed, max tokens, prompt count, prompt file and the family's own options (all kept in the run's config)."""
    from workbench.families.context import RunContext
    from workbench.families.prompts import DEFAULT_N_PROMPTS, family_prompts

    if family not in TEXT_FAMILIES:
        raise InputDataError(
            f"the {family or '(no)'} family's prompts cannot be rebuilt here",
            f"choose a prompt of {' or '.join(TEXT_FAMILIES)}, type text or use random tokens",
        )
    cfg = (run.config if run is not None else None) or {}
    options = dict((cfg.get("family_options") or {}).get(family) or {})
    n_prompts = cfg.get("n_prompts")
    ctx = RunContext(
        seed=int(cfg.get("seed") or 0),
        max_tokens=int(cfg.get("max_tokens") or 256),
        n_prompts=None if n_prompts is None else int(n_prompts),
        prompts=list(run_texts) or None,
    )
    prompts, _ = family_prompts(model, ctx, family, default_n=int(options.get("n_prompts") or DEFAULT_N_PROMPTS))
    if not 0 <= index < len(prompts):
        raise InputDataError(
            f"the {family} family scored {len(prompts)} prompts; there is no prompt {index}",
            f"choose a prompt between 0 and {len(prompts) - 1}",
        )
    return prompts[index]


def prompt_tokens(model: Model, spec: PromptSpec, run_texts: list[str], run: Any = None) -> Any:
    """Token ids [1, N] (CPU) for the chosen prompt, checked against the model's context."""
    import torch

    if spec.source == "run":
        if not run_texts:
            raise InputDataError("this run has no prompt file", "type a prompt, or choose random tokens")
        if not 0 <= spec.index < len(run_texts):
            raise InputDataError(
                f"prompt {spec.index} does not exist; the run has {len(run_texts)}",
                f"choose a prompt between 0 and {len(run_texts) - 1}",
            )
        ids = model.to_tokens(run_texts[spec.index]).cpu()
    elif spec.source == "atlas":
        ids = atlas_prompt(model, run, spec.family, spec.index, run_texts).cpu()
    elif spec.source == "random":
        from workbench.families.prompts import random_token_prompts

        if spec.length < 2:
            raise InputDataError(f"a random prompt needs at least 2 tokens, got {spec.length}", "give a longer length")
        ids = random_token_prompts(model, np.random.default_rng(spec.seed), 1, spec.length)[0].cpu()
    else:
        if not spec.text.strip():
            raise InputDataError("the prompt is empty", "type some text first")
        ids = model.to_tokens(spec.text).cpu()
    ids = ids.view(1, -1).to(torch.long)
    n_ctx = model.geometry.n_ctx
    if n_ctx and ids.shape[1] > n_ctx:
        raise InputDataError(
            f"the prompt has {ids.shape[1]} tokens; the model's context is {n_ctx}", f"use at most {n_ctx} tokens"
        )
    if ids.shape[1] < 1:
        raise InputDataError("the prompt has no tokens", "type some text first")
    return ids


# -- typed prompts: the unknown-token check ----------------------------------------------------------


class _FileTokenizer:
    """The few facts `workbench.models.model.unknown_token_warning` reads, from a folder's tokenizer.json
    (the file load_model keeps faithful to): no transformers, no lock shared with a loading model."""

    def __init__(self, path: Path) -> None:
        import json

        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        spec = json.loads(path.read_text(encoding="utf-8"))
        self.unk_token = (spec.get("model") or {}).get("unk_token")
        self.unk_token_id = self.tokenizer.token_to_id(self.unk_token) if self.unk_token else None
        self.all_special_ids = [int(t["id"]) for t in spec.get("added_tokens") or [] if t.get("special")]

    def __len__(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)


class PromptChecker:
    """Says, as the user types, when a prompt is mostly the model's unknown token (the same message
    `Model.to_tokens` warns with in Python). Reads only the run's tokenizer.json, once per folder."""

    def __init__(self) -> None:
        self._tokenizers: dict[str, _FileTokenizer | None] = {}
        self._lock = threading.Lock()

    def _tokenizer(self, folder: str | None) -> _FileTokenizer | None:
        if not folder:
            return None
        with self._lock:
            if folder not in self._tokenizers:
                path = Path(folder) / "tokenizer.json"
                try:
                    self._tokenizers[folder] = _FileTokenizer(path) if path.is_file() else None
                except Exception:  # an unreadable file: the live view itself will say what is wrong
                    self._tokenizers[folder] = None
            return self._tokenizers[folder]

    def check(self, run: Any, text: str | None) -> str | None:
        """The warning for ``text`` typed on a page of ``run``, or None (also when it cannot tell)."""
        from workbench.models.model import unknown_token_warning

        if not (text or "").strip():
            return None
        tok = self._tokenizer(getattr(run, "model_path", None))
        if tok is None:
            return None
        return unknown_token_warning(tok, tok.ids(text or ""))


# -- recorded patterns ------------------------------------------------------------------------------


@dataclass
class PatternEntry:
    """One recorded layer on one prompt: what the pattern and token views draw from."""

    layer: int
    tokens: list[str]
    kind: str  # "full" (eager, pattern kept) or "pooled" (instrumented, pooled map + q/k kept)
    pattern: np.ndarray | None  # [H, N, N] float32 ("full")
    pooled: np.ndarray | None  # [H, nq_blocks, nk_blocks] float32 ("pooled")
    pool: int
    record: AttentionRecord | None  # q/k for exact rows of long prompts; None for "full"
    seconds: float
    backend: str
    warnings: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def nbytes(self) -> int:
        total = 0
        for arr in (self.pattern, self.pooled):
            if arr is not None:
                total += arr.nbytes
        if self.record is not None:
            for q, k, _ in self.record.qk.values():
                total += q.numel() * q.element_size() + k.numel() * k.element_size()
        return total

    def grid(self, head: int, max_side: int = P.MAX_SIDE) -> P.PatternGrid:
        if self.kind == "full":
            assert self.pattern is not None, "a full entry keeps its pattern"
            return P.grid_from_full(self.pattern[head], max_side)
        assert self.pooled is not None, "a pooled entry keeps its pooled map"
        return P.grid_from_pooled(self.pooled[head], self.pool, self.n_tokens, max_side)

    def row(self, head: int, query: int) -> np.ndarray:
        """Exact attention of ``head`` from position ``query`` to keys 0..query."""
        if not 0 <= query < self.n_tokens:
            raise InputDataError(
                f"position {query} is outside the prompt (0..{self.n_tokens - 1})",
                f"choose a position between 0 and {self.n_tokens - 1}",
            )
        if self.kind == "full":
            assert self.pattern is not None, "a full entry keeps its pattern"
            return self.pattern[head, query, : query + 1].astype(np.float64)
        import torch

        assert self.record is not None, "a pooled entry keeps its record"

        q_pos = torch.full((query + 1,), query, dtype=torch.long)
        k_pos = torch.arange(query + 1, dtype=torch.long)
        return self.record.attention_at(self.layer, q_pos, k_pos)[0, head].double().numpy()


class PatternCache:
    """Recorded layers, least recently used dropped first once over ``max_bytes``."""

    def __init__(self, max_bytes: int = 1 << 30, max_entries: int = 16) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[str, PatternEntry] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(run: Any, model_key: tuple[str, str, str], spec: PromptSpec, layer: int) -> str:
        return f"{run.run_id}|{'|'.join(model_key)}|{spec.key()}|L{layer}"

    def get(self, key: str) -> PatternEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: PatternEntry) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_entries or sum(e.nbytes for e in self._entries.values()) > self.max_bytes
            ):
                self._entries.popitem(last=False)


def record_layer(model: Model, ids: Any, layer: int, progress: Progress | None = None) -> PatternEntry:
    """Run the model once on ``ids`` and keep layer ``layer``: the full pattern for short prompts,
    the pooled map plus post-RoPE queries/keys for long ones (no N x N tensor then)."""
    from workbench.record import record_attention

    n = int(ids.shape[-1])
    tokens = [str(t) for t in model.to_str_tokens(ids[0])]
    t0 = time.perf_counter()
    with layer_progress(model, progress, 0.15, 0.95, f"recording {n} tokens"):
        if n <= P.FULL_LIMIT:
            _, rec = record_attention(model, ids, backend="eager", keep_patterns=True, layers=(layer,))
            pattern = rec.patterns[layer][0].float().numpy()
            return PatternEntry(layer, tokens, "full", pattern, None, 1, None, time.perf_counter() - t0, rec.backend)
        pool = P.recorder_pool(n)
        chunk = max(256, pool)
        _, rec = record_attention(model, ids, backend="auto", layers=(layer,), capture_qk=True, pool=pool, chunk=chunk)
    stats = rec.layer(layer)
    pooled = stats.pooled[0].float().numpy()
    return PatternEntry(layer, tokens, "pooled", None, pooled, int(stats.pool), rec, time.perf_counter() - t0, rec.backend)


# -- the ablation playground --------------------------------------------------------------------------


def _softmax(logits: Any) -> np.ndarray:
    x = logits.double()
    return (x - x.logsumexp(-1)).exp().cpu().numpy()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(np.clip(q[mask], 1e-300, None)))))


def _generate(
    model: Model, ids: Any, n_new: int, stop: list[int], progress: Progress | None, lo: float, hi: float, label: str
) -> list[int]:
    """Greedy continuation, one library call per token so that progress can be shown."""
    import torch

    from workbench.models.generate import greedy_generate

    seq = ids.to(model.device)
    out: list[int] = []
    for i in range(n_new):
        nxt = greedy_generate(model, seq, 1)
        tok = int(nxt[0, 0])
        out.append(tok)
        if progress:
            progress(lo + (hi - lo) * (i + 1) / n_new, f"{label}: token {i + 1}/{n_new}")
        if tok in stop:
            break
        seq = torch.cat([seq, nxt.to(seq.device)], dim=1)
    return out


def run_ablation(
    model: Model, ids: Any, heads: list[Any], mode: AblationMode, top_k: int, n_new: int, progress: Progress | None = None
) -> dict[str, Any]:
    """Next-token distribution and greedy text with and without ``heads`` (ablated by ``mode``)."""
    import torch

    from workbench.interventions.ablation import ablate_heads
    from workbench.record import AttentionRecorder

    top_k = max(1, min(int(top_k), MAX_TOP_K))
    n_new = max(0, min(int(n_new), MAX_NEW_TOKENS))
    ids = ids.to(model.device)
    eos = getattr(model.tokenizer, "eos_token_id", None)
    stop = [int(eos)] if isinstance(eos, int) else []
    reference = ids if mode == "mean" else None
    # Long prompts run through the recorder's O(N)-memory attention (recording nothing): the
    # ablation hooks act there just the same, and no N x N score matrix is built.
    long = int(ids.shape[-1]) > P.FULL_LIMIT
    frugal = AttentionRecorder(model, layers=(), columns=False) if long else contextlib.nullcontext()
    t0 = time.perf_counter()
    with torch.no_grad(), frugal:
        if progress:
            progress(0.1, "next-token distribution without ablation")
        p_base = _softmax(model.logits(ids)[0, -1])
        if progress:
            progress(0.2, f"next-token distribution with {len(heads)} head(s) ablated ({mode})")
        with ablate_heads(model, heads, mode=mode, reference=reference) as parsed:
            p_abl = _softmax(model.logits(ids)[0, -1])
            gen_abl = _generate(model, ids, n_new, stop, progress, 0.3, 0.65, "generating with ablation") if n_new else []
        gen_base = _generate(model, ids, n_new, stop, progress, 0.65, 1.0, "generating without ablation") if n_new else []
    top = list(dict.fromkeys([*np.argsort(-p_base)[:top_k].tolist(), *np.argsort(-p_abl)[:top_k].tolist()]))
    top.sort(key=lambda i: -p_base[i])
    names = model.to_str_tokens([int(i) for i in top])
    rows = [
        {
            "token": str(name),
            "id": int(i),
            "p_without": float(p_base[i]),
            "p_with": float(p_abl[i]),
            "change": float(p_abl[i] - p_base[i]),
        }
        for i, name in zip(top, names)
    ]
    decode = model.tokenizer.decode
    return {
        "heads": [str(h) for h in parsed],
        "mode": mode,
        "n_prompt_tokens": int(ids.shape[-1]),
        "rows": rows,
        "kl": _kl(p_base, p_abl),
        "top1_without": str(model.to_str_tokens([int(np.argmax(p_base))])[0]),
        "top1_with": str(model.to_str_tokens([int(np.argmax(p_abl))])[0]),
        "text_without": decode(gen_base),
        "text_with": decode(gen_abl),
        "tokens_without": [str(t) for t in model.to_str_tokens(gen_base)] if gen_base else [],
        "tokens_with": [str(t) for t in model.to_str_tokens(gen_abl)] if gen_abl else [],
        "seconds": time.perf_counter() - t0,
        "attention": "instrumented (O(N) memory)" if long else "eager",
    }
