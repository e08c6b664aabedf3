"""Options of an atlas run: command line, config file (YAML or TOML) and defaults, merged.

A config file holds the same keys as the command-line options, plus one section per family
with that family's options::

    model: organism-4l
    families: [sinks, retrieval]      # or "sinks,retrieval", or "all"
    results: wb-results
    prompts: prompts.txt              # optional; .txt (one per line), .json list, .jsonl or .csv
    prompt_field: text                # optional; the field holding the prompt in .jsonl/.json/.csv
    n_prompts: 8
    max_tokens: 256
    seed: 0
    device: auto
    dtype: float32
    quiet: false
    executor: local                   # or ray (pip install 'attention-workbench[ray]')
    ray_address: null                 # Ray cluster address (default: RAY_ADDRESS or a local instance)
    ray_workers: null                 # Ray actors (default: one per GPU, else one per CPU)
    sinks:
      eps: 0.3
      evidence_heads: 4

Precedence: command line > config file > defaults. Relative paths are relative to the current
folder. An unknown key is an error naming it and listing the valid ones.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import InputDataError
from workbench.families.base import make_config
from workbench.families.registry import family_class, family_names, resolve_families

OPTION_KEYS: dict[str, str] = {
    "model": "model spec: shipped name, local folder or cached Hugging Face id",
    "families": "families to run, comma separated or a list (default: all)",
    "results": "results folder (default: ./wb-results, or $WORKBENCH_RESULTS)",
    "prompts": "prompt file (.txt one per line, .json list, .jsonl or .csv); default: each family's own data",
    "prompt_field": "field holding the prompt in a .jsonl/.json/.csv prompt file (default: prompt, input, text ...)",
    "n_prompts": "prompts per family (default: the family's default, or the whole prompt file)",
    "max_tokens": "longest prompt in tokens (default 256)",
    "seed": "random seed (default 0)",
    "device": "cpu, cuda, cuda:N or auto",
    "dtype": "float32, float16 or bfloat16",
    "quiet": "no progress bars or messages",
    "executor": "local (this process, default) or ray (Ray actors on this machine or a cluster)",
    "ray_address": "Ray cluster address for --executor ray (default: $RAY_ADDRESS, else a local Ray instance)",
    "ray_workers": "number of Ray actors, each with one model copy (default: one per GPU, else one per CPU)",
}

DEFAULTS: dict[str, Any] = {
    "model": None,
    "families": "all",
    "results": None,
    "prompts": None,
    "prompt_field": None,
    "n_prompts": None,
    "max_tokens": 256,
    "seed": 0,
    "device": "auto",
    "dtype": "float32",
    "quiet": False,
    "executor": "local",
    "ray_address": None,
    "ray_workers": None,
}

# Keys that change the numbers of a run (checked against the recorded run on --resume).
RESULT_KEYS = ("families", "n_prompts", "max_tokens", "seed", "dtype")


@dataclass
class AtlasOptions:
    model: str | None
    families: list[str]
    results: Path
    prompts: Path | None
    n_prompts: int | None
    max_tokens: int
    seed: int
    device: str
    dtype: str
    quiet: bool
    family_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    given: set[str] = field(default_factory=set)  # keys set on the command line or in the file
    executor: str = "local"
    ray_address: str | None = None
    ray_workers: int | None = None
    prompt_field: str | None = None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file into a mapping."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputDataError(f"config file {str(path)!r} does not exist", "check the path given to --config") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"config file {str(path)!r} cannot be read: {exc}", "give a readable YAML or TOML file") from exc
    suffix = p.suffix.lower()
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputDataError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    elif suffix in (".yaml", ".yml", ""):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputDataError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    else:
        raise InputDataError(f"config file {str(path)!r} has suffix {suffix!r}", "use a .yaml, .yml or .toml file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputDataError(f"config file {str(path)!r} must hold a mapping of option names to values", "write key: value lines")
    return data


def parse_set_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["sinks.eps=0.2", ...]`` -> ``{"sinks": {"eps": "0.2"}}`` (values coerced later)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        family, dot, name = key.strip().partition(".")
        if not sep or not dot or not family or not name:
            raise InputDataError(
                f"cannot read --set {item!r}", "write --set FAMILY.OPTION=VALUE, for example --set sinks.eps=0.2"
            )
        out.setdefault(family, {})[name] = value.strip()
    return out


def _check_keys(data: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    known_families = family_names()
    options, sections = {}, {}
    for key, value in data.items():
        if key in OPTION_KEYS:
            options[key] = value
        elif key in known_families:
            if not isinstance(value, dict):
                raise InputDataError(
                    f"config key {key!r} in {source} must be a section of {key} options", f"for example  {key}: {{...}}"
                )
            sections[key] = value
        else:
            raise InputDataError(
                f"unknown key {key!r} in {source}",
                f"valid keys: {', '.join(OPTION_KEYS)}; family sections: {', '.join(known_families)}",
            )
    return options, sections


def _int(value: Any, key: str, minimum: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputDataError(f"option {key!r} must be an integer, got {value!r}")
    try:
        out = int(value)
    except ValueError as exc:
        raise InputDataError(f"option {key!r} must be an integer, got {value!r}") from exc
    if minimum is not None and out < minimum:
        raise InputDataError(f"option {key!r} must be at least {minimum}, got {out}")
    return out


def resolve_options(
    cli: dict[str, Any],
    config: str | Path | None = None,
    set_options: list[str] | None = None,
    family_options: dict[str, dict[str, Any]] | None = None,
) -> AtlasOptions:
    """Merge command-line (or API) values (None = not given), the config file and the defaults; validate.
    ``family_options`` (``{"sinks": {"eps": 0.2}}``, from the Python API) override the file's sections."""
    from workbench.store.store import default_results

    file_opts: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    source = "the config file"
    if config is not None:
        source = f"config file {str(config)!r}"
        file_opts, sections = _check_keys(load_config_file(config), source)
    unknown_cli = set(cli) - set(OPTION_KEYS)
    if unknown_cli:
        raise InputDataError(f"unknown option(s) {sorted(unknown_cli)}")
    given = {k for k, v in cli.items() if v is not None} | set(file_opts)
    merged = {k: (cli[k] if cli.get(k) is not None else file_opts.get(k, DEFAULTS[k])) for k in OPTION_KEYS}

    families = resolve_families(
        merged["families"] if not isinstance(merged["families"], (list, tuple)) else list(merged["families"])
    )
    merged_options: dict[str, dict[str, Any]] = {}
    for name, section in sections.items():
        merged_options.setdefault(name, {}).update(section)
    for name, section in (family_options or {}).items():
        if not isinstance(section, dict):
            raise InputDataError(
                f"options for family {name!r} must be a mapping of option names to values", f"e.g. {{'{name}': {{...}}}}"
            )
        family_class(name)
        merged_options.setdefault(name, {}).update(section)
    family_options = merged_options
    for name, section in parse_set_options(set_options or []).items():
        family_class(name)  # unknown family -> error listing the known ones
        family_options.setdefault(name, {}).update(section)
    for name, section in family_options.items():
        make_config(family_class(name).config_class, section, name)  # unknown option -> error listing valid ones

    quiet = merged["quiet"]
    if not isinstance(quiet, bool):
        raise InputDataError(f"option 'quiet' must be true or false, got {quiet!r}")
    from workbench.executors.base import EXECUTORS

    if merged["executor"] not in EXECUTORS:
        raise InputDataError(
            f"option 'executor' must be one of {', '.join(EXECUTORS)}, got {merged['executor']!r}",
            "use --executor local (default) or --executor ray",
        )
    for key in ("model", "device", "dtype", "ray_address", "prompt_field"):
        if merged[key] is not None and not isinstance(merged[key], str):
            raise InputDataError(f"option {key!r} must be a string, got {merged[key]!r}")
    return AtlasOptions(
        model=merged["model"],
        families=families,
        results=Path(merged["results"]).expanduser() if merged["results"] is not None else default_results(),
        prompts=Path(merged["prompts"]).expanduser() if merged["prompts"] is not None else None,
        n_prompts=None if merged["n_prompts"] is None else _int(merged["n_prompts"], "n_prompts", 1),
        max_tokens=_int(merged["max_tokens"], "max_tokens", 2),
        seed=_int(merged["seed"], "seed", 0),
        device=str(merged["device"]),
        dtype=str(merged["dtype"]),
        quiet=quiet,
        family_options=family_options,
        given=given,
        executor=merged["executor"],
        ray_address=merged["ray_address"],
        ray_workers=None if merged["ray_workers"] is None else _int(merged["ray_workers"], "ray_workers", 1),
        prompt_field=merged["prompt_field"],
    )
