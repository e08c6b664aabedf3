"""Turn a model spec into a loaded `Model`.

A spec is, in this order: the name of a shipped model, a local folder in Hugging Face
format, or a Hugging Face hub id already in the local cache (downloads only happen when the
user is online and has not set HF_HUB_OFFLINE). Every failure is a `WorkbenchError` naming
the spec and what to do.

A model already in memory (a transformers ``PreTrainedModel`` or a TransformerLens
``TransformerBridge``) has no folder to fingerprint: `weights_fingerprint` hashes its parameters
instead, and `memory_name` gives it a stable, readable name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from workbench.errors import ModelNotFoundError, UnsupportedModelError, WorkbenchError
from workbench.models.registry import shipped_models

SpecKind = Literal["shipped", "folder", "hub", "memory"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "fp64": torch.float64,
}


@dataclass(frozen=True)
class ResolvedSpec:
    spec: str
    kind: SpecKind
    path: Path
    revision: str | None = None


@dataclass(frozen=True)
class MemorySource:
    """Where a model given in Python came from: ``path`` is the folder its tokenizer was read from (or
    None), ``fingerprint`` the hash of its weights (`weights_fingerprint`)."""

    spec: str
    fingerprint: str
    path: Path | None = None
    kind: SpecKind = "memory"
    revision: str | None = None


#: elements of each parameter that `weights_fingerprint` reads (a strided sample past this)
FINGERPRINT_SAMPLE = 1 << 16

#: what `load_model` accepts, for the message that refuses anything else
ACCEPTED_MODELS = (
    "a shipped model name, a Hugging Face folder or cached hub id, a transformers PreTrainedModel "
    "(tokenizer= when its name_or_path is not a folder or cached id), a TransformerLens TransformerBridge, "
    "or a workbench Model"
)


@torch.no_grad()
def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over a model's parameters, read where they are (no copy of the whole model).

    Each parameter gives its shape, dtype and its elements (all of them up to `FINGERPRINT_SAMPLE`, else
    that many at an even stride, plus the last); the per-parameter digests are hashed sorted, so the
    fingerprint does not depend on parameter names or order: a model wrapped in a TransformerBridge (which
    renames its submodules) has the fingerprint it had before. Like the folder fingerprint it is cheap for
    large models and changes when the weights change (an edit to a single unsampled element of a large
    matrix is the one change it can miss).
    """
    digests = []
    for param in module.parameters():  # shared (tied) parameters once
        flat = param.detach().reshape(-1)
        n = flat.numel()
        if n > FINGERPRINT_SAMPLE:
            step = math.ceil(n / FINGERPRINT_SAMPLE)
            flat = torch.cat([flat[::step], flat[-1:]])
        data = flat.to("cpu").contiguous().view(torch.uint8).numpy().tobytes()
        h = hashlib.sha256(f"{tuple(param.shape)}:{str(param.dtype).removeprefix('torch.')}\n".encode())
        h.update(data)
        digests.append(h.hexdigest())
    total = hashlib.sha256()
    for digest in sorted(digests):
        total.update(digest.encode())
    return total.hexdigest()


def memory_name(hf_model: Any, fingerprint: str) -> str:
    """The name of a model given in memory: its ``name_or_path`` (a folder as an absolute path), else its
    class name and the first 8 characters of its weights' fingerprint ("LlamaForCausalLM-1a2b3c4d")."""
    name = str(getattr(hf_model, "name_or_path", "") or getattr(getattr(hf_model, "config", None), "_name_or_path", "") or "")
    if name.strip():
        path = Path(name).expanduser()
        return str(path.resolve()) if path.is_dir() else name.strip()
    return f"{type(hf_model).__name__}-{fingerprint[:8]}"


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise WorkbenchError(f"unknown dtype {dtype!r}", f"use one of {sorted(set(_DTYPES))}")
    return _DTYPES[key]


def parse_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise WorkbenchError(f"unknown device {device!r}", "use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"device {device!r} asked for but no CUDA GPU is visible", "use --device cpu")
    return dev


def check_model_folder(folder: Path, spec: str) -> None:
    """A Hugging Face folder needs a config and weights; say which is missing."""
    if not folder.is_dir():
        raise ModelNotFoundError(f"model path {spec!r} is not a folder", "give the folder that holds config.json")
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"model folder {str(folder)!r} has no config.json",
            "point at a Hugging Face model folder (config.json + *.safetensors), e.g. one saved with save_pretrained",
        )
    if not any(any(folder.glob(p)) for p in _WEIGHT_PATTERNS):
        raise ModelNotFoundError(
            f"model folder {str(folder)!r} has a config but no weights (*.safetensors or pytorch_model*.bin)",
            "copy the weight files into the folder, or save the model with save_pretrained",
        )


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def resolve_spec(spec: str | os.PathLike, revision: str | None = None) -> ResolvedSpec:
    text = str(spec).strip()
    if not text:
        raise ModelNotFoundError("empty model spec", "name a shipped model, a folder, or a Hugging Face id")
    shipped = shipped_models()
    if text in shipped:
        return ResolvedSpec(text, "shipped", shipped[text])
    path = Path(text).expanduser()
    if path.exists():
        check_model_folder(path, text)
        return ResolvedSpec(text, "folder", path.resolve())
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path or not _HUB_ID.match(text):
        raise ModelNotFoundError(
            f"model path {text!r} does not exist",
            "check the path, or name a shipped model (" + (", ".join(shipped) or "none yet") + ") or a Hugging Face id",
        )
    return ResolvedSpec(text, "hub", _hub_snapshot(text, revision), revision)


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        pass
    except Exception as exc:  # malformed cache entries and the like
        raise ModelNotFoundError(f"could not read {repo_id!r} from the local Hugging Face cache: {exc}") from exc
    if _hf_offline():
        raise ModelNotFoundError(
            f"{repo_id!r} is not a shipped model or a folder, and it is not in the local Hugging Face cache "
            "(HF_HUB_OFFLINE is set, so nothing is downloaded)",
            f"download it where there is network (`hf download {repo_id}`) and copy the cache, "
            "point HF_HOME at a cache that has it, or give a local folder",
        )
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} is not in the local Hugging Face cache and could not be downloaded ({type(exc).__name__})",
            "check the id and your network, or set HF_HUB_OFFLINE=1 and use a cached model or a local folder",
        ) from exc


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise ModelNotFoundError(f"{folder / 'config.json'} is not valid JSON: {exc}", "fix or re-save the config") from exc


#: text the tokenizer check encodes: words, digits, punctuation, spacing and non-ASCII
_TOKENIZER_PROBE = "The quick brown fox, 12 w1 w2 w3 -- naive cafe\nsecond line  two spaces"


def faithful_tokenizer(folder: Path, tokenizer: Any):
    """A tokenizer that encodes like the folder's own tokenizer.json, or None if ``tokenizer`` does.

    Transformers 5 forces its own tokenizer class on some model types (Qwen2: ``Qwen2Tokenizer``) and
    rebuilds the pre-tokenizer from scratch, whatever tokenizer.json says; a folder whose tokenizer.json
    was written differently (the tiny models' word-level tokenizer: "w1 w2 w3" became one token) would
    be tokenised wrongly without a word of warning. When the loaded ``tokenizer`` disagrees with the file
    on a probe text, the file's own pipeline is used (``TokenizersBackend`` keeps it as saved).
    """
    path = folder / "tokenizer.json"
    if tokenizer is None or not path.is_file():
        return None
    from tokenizers import Tokenizer
    from transformers import TokenizersBackend

    try:
        expected = Tokenizer.from_file(str(path)).encode(_TOKENIZER_PROBE, add_special_tokens=False).ids
    except Exception:  # a tokenizer.json the tokenizers library cannot read: keep what transformers loaded
        return None
    if tokenizer(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"] == expected:
        return None
    kept = TokenizersBackend.from_pretrained(str(folder))
    if kept(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"] != expected:
        return None
    return kept


def check_supported(config: dict, spec: str) -> str:
    """The architecture must have a TransformerLens 4 adapter; name it or say it is missing."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    archs = config.get("architectures") or []
    for arch in archs:
        if arch in SUPPORTED_ARCHITECTURES:
            return arch
    raise UnsupportedModelError(
        f"model {spec!r} has architecture {archs or config.get('model_type')!r}, which TransformerLens 4 has no adapter for",
        "use a supported architecture (Llama, Qwen2, Mistral, GPT-2, Gemma, ...); "
        "see transformer_lens.factories.architecture_adapter_factory.SUPPORTED_ARCHITECTURES",
    )
