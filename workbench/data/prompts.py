"""Prompt files: harmful/harmless request lists in JSONL, CSV or plain text, and templates.

Every problem (missing file, wrong encoding, empty file, a line that is not JSON, a missing
field) is an `InputDataError` naming the file, the line and what to do.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import InputDataError

if TYPE_CHECKING:
    from workbench.models.model import Model

DEFAULT_FIELDS = ("prompt", "input", "instruction", "goal", "text", "query", "request")


def _read_text(path: Path) -> str:
    if not path.exists():
        raise InputDataError(f"prompt file {str(path)!r} does not exist", "check the path")
    if path.is_dir():
        raise InputDataError(f"prompt file {str(path)!r} is a folder", "give a .txt, .json, .jsonl or .csv file")
    if not path.is_file():
        raise InputDataError(f"prompt file {str(path)!r} is not a file", "give a .txt, .json, .jsonl or .csv file")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputDataError(
            f"prompt file {str(path)!r} is not UTF-8 (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r})",
            "re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`",
        ) from exc
    except OSError as exc:
        raise InputDataError(f"cannot read prompt file {str(path)!r}: {exc.strerror}", "check the file's permissions") from exc


def _pick(record: dict[str, Any], field: str | None, where: str, path: Path) -> str:
    if field is not None:
        if field not in record:
            raise InputDataError(
                f"{where} of {str(path)!r} has no field {field!r} (fields: {sorted(record)})",
                f"add the field or choose one with --prompt-field; available: {', '.join(sorted(record))}",
            )
        value = record[field]
    else:
        found = [f for f in DEFAULT_FIELDS if f in record]
        if not found:
            raise InputDataError(
                f"{where} of {str(path)!r} has none of the prompt fields {list(DEFAULT_FIELDS)} (fields: {sorted(record)})",
                "name the field holding the prompt with --prompt-field",
            )
        value = record[found[0]]
    if not isinstance(value, str) or not value.strip():
        raise InputDataError(f"{where} of {str(path)!r} has an empty or non-text prompt: {value!r}", "fix or remove that line")
    return value


def load_prompts(path: str | Path, field: str | None = None) -> list[str]:
    """Prompts from a .jsonl (one object or string per line), .json (a list), .csv (with a header row) or
    .txt (one per line) file: the one reader for every prompt file (``--prompts``, the safety family's
    request files, registered file sets). ``field`` names the column or key holding the prompt."""
    path = Path(path)
    text = _read_text(path)
    suffix = path.suffix.lower()
    prompts: list[str] = []
    if suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputDataError(f"{str(path)!r} is not valid JSON: {exc.msg} (line {exc.lineno})", "fix the JSON") from exc
        if not isinstance(records, list):
            raise InputDataError(f"{str(path)!r} must hold a JSON list", 'write ["first prompt", ...] or [{"prompt": ...}, ...]')
        for number, record in enumerate(records):
            if isinstance(record, str):
                record = {"prompt": record}
            if not isinstance(record, dict):
                raise InputDataError(
                    f"item {number} of {str(path)!r} is neither a string nor an object", "give strings or objects"
                )
            prompts.append(_pick(record, field, f"item {number}", path))
    elif suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputDataError(
                    f"line {number} of {str(path)!r} is not valid JSON: {exc.msg}", "one JSON object per line"
                ) from exc
            if isinstance(record, str):
                record = {"prompt": record}
            if not isinstance(record, dict):
                raise InputDataError(f"line {number} of {str(path)!r} is not a JSON object", 'write lines like {"prompt": "..."}')
            prompts.append(_pick(record, field, f"line {number}", path))
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise InputDataError(f"CSV file {str(path)!r} has no header row", "add a header such as `prompt`")
        for number, row in enumerate(reader, 2):
            prompts.append(_pick({k: v for k, v in row.items() if k is not None}, field, f"row {number}", path))
    elif suffix in (".txt", ""):
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        raise InputDataError(f"unknown prompt file type {suffix!r} for {str(path)!r}", "use .jsonl, .json, .csv or .txt")
    if not prompts:
        raise InputDataError(f"prompt file {str(path)!r} holds no prompts", "add at least one prompt")
    return prompts


def apply_template(prompts: Sequence[str], tokenizer: Any, template: str = "raw") -> list[str]:
    """ "raw" keeps prompts as they are; "chat" uses the tokenizer's chat template (it must have
    one); any other string is a format string with ``{prompt}``, e.g. "## Query:{prompt}\\n## Answer:"."""
    if template == "raw":
        return list(prompts)
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise InputDataError("the tokenizer has no chat template", "use --template raw or a format string with {prompt}")
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    if "{prompt}" not in template:
        raise InputDataError(f"template {template!r} has no {{prompt}} placeholder", 'use "raw", "chat" or e.g. "Q: {prompt} A:"')
    return [template.format(prompt=p) for p in prompts]


def chat_ids(tokenizer: Any, prompt: str, bos_prepends: bool) -> list[int]:
    """Token ids of one user turn through the tokenizer's chat template, with exactly one BOS.

    Rendering the template to text and tokenising it again adds the tokenizer's BOS in front of
    the BOS the template already wrote (Llama 3, Gemma): two BOS, and every position shifted. The
    template is tokenised as ids instead; a doubled BOS is collapsed, and a tokenizer that always
    starts with BOS gets one when the template writes none (Qwen-style templates).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise InputDataError("the tokenizer has no chat template", "use --template raw or a format string with {prompt}")
    out = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True)
    if hasattr(out, "keys") and "input_ids" in out:
        out = out["input_ids"]
    ids = [int(i) for i in (out.tolist() if hasattr(out, "tolist") else out)]
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        while len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        if bos_prepends and (not ids or ids[0] != bos):
            ids = [bos, *ids]
    return ids


def encode_prompts(prompts: Sequence[str], model: Model, template: str = "raw") -> list[Any]:
    """Token id tensors [N] of prompts under a template ("raw", "chat" or a ``{prompt}`` format string)."""
    import torch

    if template == "chat":
        return [torch.tensor(chat_ids(model.tokenizer, p, model.geometry.bos.prepends)) for p in prompts]
    return [model.to_tokens(t)[0].cpu() for t in apply_template(prompts, model.tokenizer, template)]
