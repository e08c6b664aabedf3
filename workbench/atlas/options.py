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
    context: null                     # N: every family's length (sets max_tokens: N; see CONTEXT_OPTIONS)
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

``context: N`` (``--context N``) runs every family at N tokens: it sets ``max_tokens`` to N (giving
both with different values is an error) and each family's own length option listed in
`CONTEXT_OPTIONS` (the needle context ``retrieval.context``, temporal's periodic prompts
``temporal.periodic_tokens``) to N; a family option given explicitly (``--set retrieval.context=M``,
a family section in the file) still wins. Without it, prompts are capped by ``max_tokens`` and the
needle context follows ``max_tokens``. A length the model cannot hold is refused before any work.

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
    "max_tokens": "longest prompt in tokens, also the needle context (default 256)",
    "context": (
        "every family's length in tokens: sets max_tokens to N and the families' own lengths "
        "(retrieval.context, temporal.periodic_tokens) to N; an explicit --set FAMILY.KEY still wins"
    ),
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
    "context": None,
    "seed": 0,
    "device": "auto",
    "dtype": "float32",
    "quiet": False,
    "executor": "local",
    "ray_address": None,
    "ray_workers": None,
}

# Keys that change the numbers of a run (checked against the recorded run on --resume). ``context``
# is not among them: it is recorded through what it sets (max_tokens and the family options).
RESULT_KEYS = ("families", "n_prompts", "max_tokens", "seed", "dtype")

#: the family options that ``--context N`` sets to N (unless given explicitly): each family's own
#: length that is not already ``max_tokens``. A family whose length should follow ``--context`` adds
#: its option here (sinks' ``act_context`` is its owner's choice: ACT calibrates with one pass per head).
CONTEXT_OPTIONS: dict[str, tuple[str, ...]] = {"retrieval": ("context",), "temporal": ("periodic_tokens",)}


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
    context: int | None = None  # --context N (already applied to max_tokens and CONTEXT_OPTIONS)


def context_family_options(context: int, families: list[str]) -> dict[str, dict[str, int]]:
    """The family options ``--context N`` sets (`CONTEXT_OPTIONS`), for the families that run."""
    return {name: {key: context for key in keys} for name, keys in CONTEXT_OPTIONS.items() if name in families}


def apply_context(context: Any, max_tokens: Any, max_tokens_given: bool) -> tuple[int | None, Any]:
    """``(context, max_tokens)`` once ``--context`` is applied: N and N, or (None, max_tokens) when no
    context is asked. Giving both with different values is an error naming both."""
    if context is None:
        return None, max_tokens
    n = _int(context, "context", 2)
    if max_tokens_given and max_tokens is not None and _int(max_tokens, "max_tokens", 2) != n:
        raise InputDataError(
            f"--context {n} and --max-tokens {max_tokens} disagree (--context sets max_tokens)",
            f"give only --context {n}, or only --max-tokens",
        )
    return n, n


def context_set_options(context: int, config: str | Path | None, set_options: list[str]) -> list[str]:
    """``--set`` items that give every `CONTEXT_OPTIONS` option the value N, leaving out those given
    explicitly in ``set_options`` or in the config file's family sections (they win). For a caller that
    hands options to `workbench.Atlas` as ``--set`` items (the CLI, while `Atlas` takes no context)."""
    given = {(f, k) for f, section in parse_set_options(set_options).items() for k in section}
    if config is not None:
        _, sections = _check_keys(load_config_file(config), f"config file {str(config)!r}")
        given |= {(f, k) for f, section in sections.items() for k in section}
    return [f"{f}.{k}={context}" for f, keys in CONTEXT_OPTIONS.items() for k in keys if (f, k) not in given]


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

    context, merged["max_tokens"] = apply_context(merged["context"], merged["max_tokens"], "max_tokens" in given)
    if context is not None:
        given.add("max_tokens")  # asked for explicitly: a length the model cannot hold is refused, not capped
        for name, section in context_family_options(context, families).items():
            for key, value in section.items():
                family_options.setdefault(name, {}).setdefault(key, value)  # an explicit family option wins

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
        context=context,
    )
