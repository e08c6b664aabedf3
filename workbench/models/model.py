"""`Model`: a TransformerBridge, its tokenizer, and its head geometry, loaded once."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.errors import UnsupportedModelError, WorkbenchError
from workbench.models.geometry import HeadGeometry, geometry_from_config
from workbench.models.loading import (
    ACCEPTED_MODELS,
    MemorySource,
    ResolvedSpec,
    check_supported,
    faithful_tokenizer,
    memory_name,
    parse_device,
    parse_dtype,
    read_config,
    resolve_spec,
    weights_fingerprint,
)

#: longest input `Model.run_with_cache` accepts (its cache stores N x N patterns per layer and head)
CACHE_MAX_TOKENS = 4096
#: a typed prompt whose (non-special) tokens are more than this share the unknown token gets a warning
MOSTLY_UNKNOWN = 0.5


class UnknownTokensWarning(UserWarning):
    """A prompt is mostly the tokenizer's unknown token: the model sees `<unk>`, not the text."""


def _typed_by_user(frame: Any) -> bool:
    """Whether a prompt comes from the user's code (a script, a notebook), not from the library: the
    atlas and the families check their own data sets (`workbench.families.prompts.usable_text`) and the
    dashboard shows its own notice, so only typed prompts warn in Python."""
    name = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
    return not (name == "workbench" or name.startswith("workbench."))


def unknown_token_warning(tokenizer: Any, ids: Sequence[int], threshold: float = MOSTLY_UNKNOWN) -> str | None:
    """Why a prompt will mislead (more than ``threshold`` of its non-special tokens are unknown), or
    None. Byte-level tokenizers have no unknown token and never warn. One place for the message, so
    Python and the dashboard say the same thing."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return None
    special = set(getattr(tokenizer, "all_special_ids", []) or []) - {unk}
    body = [int(i) for i in ids if int(i) not in special]
    n_unk = sum(i == unk for i in body)
    if not body or n_unk / len(body) <= threshold:
        return None
    unk_text = getattr(tokenizer, "unk_token", None) or "<unk>"
    return (
        f"{n_unk} of the prompt's {len(body)} tokens are the unknown token {unk_text!r}: the model does not know most "
        f"of these words (its vocabulary has {len(tokenizer)} tokens), so it sees {unk_text!r}, not the text; "
        "type text in the model's own vocabulary (see model.tokenizer.get_vocab())"
    )


@dataclass
class Model:
    """What every analysis receives: the hooked model plus the facts needed to address heads."""

    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    geometry: HeadGeometry
    source: ResolvedSpec | MemorySource
    device: torch.device
    dtype: torch.dtype
    #: passed instrumented-core self-checks, per (backend, dtype, device) (see workbench.record.self_check)
    core_checks: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.source.spec

    @property
    def hf_model(self) -> Any:
        """The wrapped Hugging Face model (same weights as the bridge)."""
        return self.bridge.original_model

    def to_tokens(self, text: str | list[str], prepend_bos: bool | None = None) -> torch.Tensor:
        """Token ids [batch, seq] on the model's device; BOS follows the tokenizer unless told.
        A text typed by the user that is mostly unknown tokens gives an `UnknownTokensWarning`."""
        return self._encode(text, prepend_bos)

    def _encode(self, text: str | list[str], prepend_bos: bool | None = None) -> torch.Tensor:
        """`to_tokens`, called only by the public methods (the caller two frames up is the user's code)."""
        texts = [text] if isinstance(text, str) else list(text)
        enc = self.tokenizer(texts, add_special_tokens=True, return_tensors="pt", padding=True)
        ids = enc["input_ids"]
        if _typed_by_user(sys._getframe(2)):
            for row in ids.tolist():
                message = unknown_token_warning(self.tokenizer, row)
                if message:
                    warnings.warn(message, UnknownTokensWarning, stacklevel=3)
                    break
        bos = self.geometry.bos.token_id
        if prepend_bos is True and not self.geometry.bos.prepends and bos is not None:
            ids = torch.cat([torch.full((ids.shape[0], 1), bos, dtype=ids.dtype), ids], dim=1)
        if prepend_bos is False and self.geometry.bos.prepends:
            ids = ids[:, 1:]
        return ids.to(self.device)

    def unknown_tokens(self, text: str | torch.Tensor | list[int]) -> str | None:
        """Why ``text`` (or token ids) would mislead, when it is mostly the unknown token; else None.
        The dashboard shows the same message next to its prompt box."""
        if isinstance(text, str):
            ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        else:
            ids = text.flatten().tolist() if isinstance(text, torch.Tensor) else list(text)
        return unknown_token_warning(self.tokenizer, ids)

    def to_str_tokens(self, tokens: str | torch.Tensor | list[int]) -> list[str]:
        """Token strings of a text (tokenised as `to_tokens` does, BOS included) or of token ids, decoded
        one token at a time as TransformerLens does: ``' cat'``, not the raw BPE piece ``'Ġcat'``."""
        if isinstance(tokens, str):
            tokens = self._encode(tokens)
        ids = tokens.flatten().tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        return list(self.tokenizer.batch_decode([[int(i)] for i in ids], clean_up_tokenization_spaces=False))

    def run_with_cache(self, text_or_tokens: str | torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        """TransformerLens's ``logits, cache = model.run_with_cache(...)``; ``cache["pattern", layer]`` is
        [batch, head, query, key]. The cache holds every N x N pattern, so it is refused past
        `CACHE_MAX_TOKENS`; long prompts go through `workbench.record.record_attention` instead."""
        tokens = self._encode(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens.to(self.device)
        if tokens.shape[-1] > CACHE_MAX_TOKENS:
            raise WorkbenchError(
                f"run_with_cache on {tokens.shape[-1]} tokens would hold every N x N attention pattern in memory",
                f"use workbench.record.record_attention (O(N) memory) beyond {CACHE_MAX_TOKENS} tokens",
            )
        with torch.no_grad():
            return self.bridge.run_with_cache(tokens, **kwargs)

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.bridge(tokens.to(self.device))


def _keep_folder_tokenizer(bridge: Any, folder: Path) -> None:
    """Swap in the folder's own tokenizer when transformers rebuilt it differently (see `faithful_tokenizer`).

    Done after booting: TransformerLens reloads a tokenizer through AutoTokenizer to switch BOS on,
    which would bring the rebuilt class back.
    """
    kept = faithful_tokenizer(folder, bridge.tokenizer)
    if kept is not None:
        _set_tokenizer(bridge, kept)


def _set_tokenizer(bridge: Any, kept: Any) -> None:
    # Not through the bridge's tokenizer setter: it re-runs TransformerLens' tokenizer setup, which
    # reloads through AutoTokenizer (the rebuilt class again) and resizes cfg.d_vocab to the tokenizer.
    bridge._tokenizer = kept
    driver = getattr(bridge, "driver", None) or getattr(bridge, "_driver", None)
    if driver is not None and hasattr(driver, "tokenizer"):
        driver.tokenizer = kept
    from transformer_lens.model_bridge.sources._bridge_builder import detect_tokenizer_bos_eos

    bridge.cfg.tokenizer_prepends_bos, bridge.cfg.tokenizer_appends_eos = detect_tokenizer_bos_eos(kept)


def load_model(
    spec: str | Path | Any,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    tokenizer: Any = None,
) -> Model:
    """Load a shipped model, a local Hugging Face folder, or a cached hub id as a `Model`; or wrap a model
    already in memory: a transformers ``PreTrainedModel`` (its tokenizer given as ``tokenizer=``, else read
    from its ``name_or_path`` when that is a folder or a cached hub id) or a TransformerLens
    ``TransformerBridge`` (its own tokenizer unless ``tokenizer=`` is given). A `Model` is returned as it is.

    An in-memory model stays where it is unless ``device`` / ``dtype`` are given (then it is moved in
    place); wrapping a ``PreTrainedModel`` in a bridge switches it to eager attention and eval mode, as
    loading from a folder does. Anything else is refused with a `WorkbenchError` naming what is accepted.
    """
    if isinstance(spec, Model):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        if tokenizer is not None:
            raise WorkbenchError(
                "tokenizer= is for a model given in memory", "a folder, hub id or shipped model brings its own tokenizer"
            )
        return _load_spec(spec, device, dtype, revision)
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel

    if isinstance(spec, TransformerBridge):
        return _from_bridge(spec, tokenizer, device, dtype)
    if isinstance(spec, PreTrainedModel):
        return _from_hf(spec, tokenizer, device, dtype)
    raise WorkbenchError(f"cannot analyse a {type(spec).__module__}.{type(spec).__qualname__}", f"give {ACCEPTED_MODELS}")


def _load_spec(
    spec: str | os.PathLike, device: str | torch.device | None, dtype: str | torch.dtype | None, revision: str | None
) -> Model:
    from transformer_lens.model_bridge import TransformerBridge

    dev = parse_device(device)  # cheap checks first, before any file is read
    dt = parse_dtype(dtype)
    resolved = resolve_spec(spec, revision)
    folder = resolved.path
    config = read_config(folder)
    check_supported(config, resolved.spec)
    try:
        with _quiet_loading():
            bridge = TransformerBridge.boot_transformers(str(folder), device=str(dev), dtype=dt)
            _keep_folder_tokenizer(bridge, folder)
    except (OSError, ValueError, KeyError) as exc:
        raise WorkbenchError(
            f"could not load model {resolved.spec!r} from {folder}: {type(exc).__name__}: {exc}",
            "check that the folder is a complete Hugging Face checkpoint (config, weights, tokenizer)",
        ) from exc
    return _wrap(bridge, resolved, dev, dt)


@contextlib.contextmanager
def _quiet_loading() -> Any:
    """TransformerLens' and transformers' loading chatter (logs, progress bars, prints) silenced."""
    quiet = io.StringIO()
    tl_logger = logging.getLogger("transformer_lens")
    previous = tl_logger.level
    tl_logger.setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(quiet):
            yield
    finally:
        tl_logger.setLevel(previous)
        if bars_were_on:
            hf_logging.enable_progress_bar()


def _wrap(bridge: Any, source: ResolvedSpec | MemorySource, dev: torch.device, dt: torch.dtype) -> Model:
    bridge.eval()
    tokenizer = bridge.tokenizer
    if tokenizer is None:
        hint = (
            "add tokenizer.json (and tokenizer_config.json) to the folder"
            if source.kind != "memory"
            else "give its tokenizer: load_model(model, tokenizer=...) / Atlas(model, tokenizer=...)"
        )
        raise UnsupportedModelError(f"model {source.spec!r} has no tokenizer", hint)
    geometry = geometry_from_config(bridge.original_model.config, tokenizer, bridge.cfg, hf_model=bridge.original_model)
    return Model(bridge=bridge, tokenizer=tokenizer, geometry=geometry, source=source, device=dev, dtype=dt)


def _placement(
    module: torch.nn.Module, device: str | torch.device | None, dtype: str | torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """Where an in-memory model's weights are, or the device / dtype asked for ("auto": where they are)."""
    first = next(module.parameters(), None)
    here_dev = first.device if first is not None else torch.device("cpu")
    here_dt = first.dtype if first is not None else torch.float32
    dev = here_dev if device is None or str(device) == "auto" else parse_device(device)
    dt = here_dt if dtype is None else parse_dtype(dtype)
    return dev, dt


def _memory_source(hf_model: Any, tokenizer_folder: Path | None) -> MemorySource:
    fingerprint = weights_fingerprint(hf_model)
    return MemorySource(memory_name(hf_model, fingerprint), fingerprint, tokenizer_folder)


def _architecture(hf_model: Any) -> dict:
    """The architecture of a model in memory, as `check_supported` reads a config; a model built with
    ``from_config`` has no ``config.architectures`` until saved: it gets its class name, as saving gives it."""
    config = getattr(hf_model, "config", None)
    if config is not None and not getattr(config, "architectures", None):
        config.architectures = [type(hf_model).__name__]
    archs = [type(hf_model).__name__, *(getattr(config, "architectures", None) or [])]
    return {"architectures": archs, "model_type": getattr(config, "model_type", None)}


def _from_hf(hf_model: Any, tokenizer: Any, device: str | torch.device | None, dtype: str | torch.dtype | None) -> Model:
    """Wrap a transformers model given in memory in a TransformerBridge (same weights, no copy)."""
    from transformer_lens.model_bridge import TransformerBridge

    dev, dt = _placement(hf_model, device, dtype)
    name_or_path = str(getattr(hf_model, "name_or_path", "") or "")
    check_supported(_architecture(hf_model), name_or_path or type(hf_model).__name__)
    folder: Path | None = None
    if tokenizer is None:
        try:
            resolved = resolve_spec(name_or_path) if name_or_path.strip() else None
        except WorkbenchError:
            resolved = None
        if resolved is None or not _has_tokenizer(resolved.path):
            where = (
                f"its name_or_path {name_or_path!r} is not a folder or cached hub id with a tokenizer"
                if name_or_path
                else "it has no name_or_path"
            )
            raise WorkbenchError(
                f"no tokenizer for the {type(hf_model).__name__} given in memory ({where})",
                "give it: load_model(model, tokenizer=tok) / Atlas(model, tokenizer=tok), "
                "e.g. tok = AutoTokenizer.from_pretrained(FOLDER)",
            )
        folder = resolved.path
    if next(hf_model.parameters()).device != dev or next(hf_model.parameters()).dtype != dt:
        hf_model.to(device=dev, dtype=dt)
    source = _memory_source(hf_model, folder)  # before the bridge renames the submodules
    try:
        with _quiet_loading():
            bridge = _cached_bridge(hf_model)
            if bridge is None:
                bridge = TransformerBridge.boot_transformers(
                    str(folder) if folder is not None else (name_or_path or type(hf_model).__name__),
                    hf_model=hf_model,
                    tokenizer=tokenizer,
                    device=str(dev),
                    dtype=dt,
                )
                _BRIDGES[id(hf_model)] = bridge
            elif tokenizer is not None:
                _use_tokenizer(bridge, tokenizer)
            if folder is not None:
                _keep_folder_tokenizer(bridge, folder)
    except (OSError, ValueError, KeyError) as exc:
        raise WorkbenchError(
            f"could not wrap the {type(hf_model).__name__} given in memory in a TransformerBridge: {type(exc).__name__}: {exc}",
            "give a causal language model of a supported architecture, with its tokenizer",
        ) from exc
    return _wrap(bridge, source, dev, dt)


#: bridges built around in-memory models, by id of the model: wrapping one model twice reuses its bridge
_BRIDGES: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def _cached_bridge(hf_model: Any) -> Any:
    bridge = _BRIDGES.get(id(hf_model))
    return bridge if bridge is not None and bridge.original_model is hf_model else None


def _has_tokenizer(folder: Path) -> bool:
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    return any((folder / n).is_file() for n in names)


def _use_tokenizer(bridge: Any, tokenizer: Any) -> None:
    from transformer_lens.model_bridge.sources._bridge_builder import configure_tokenizer

    _set_tokenizer(bridge, configure_tokenizer(tokenizer, bridge.cfg))


def _from_bridge(bridge: Any, tokenizer: Any, device: str | torch.device | None, dtype: str | torch.dtype | None) -> Model:
    """Use a TransformerBridge given in memory as it is (its Hugging Face model, its tokenizer)."""
    hf_model = bridge.original_model
    _architecture(hf_model)
    dev, dt = _placement(hf_model, device, dtype)
    first = next(hf_model.parameters())
    if first.device != dev or first.dtype != dt:
        raise WorkbenchError(
            f"the TransformerBridge given is on {first.device} in {first.dtype}, not {dev} in {dt}",
            "move it first (bridge.to(device, dtype)), or leave device / dtype unset to use it where it is",
        )
    if tokenizer is not None:
        _use_tokenizer(bridge, tokenizer)
    return _wrap(bridge, _memory_source(hf_model, None), dev, dt)
