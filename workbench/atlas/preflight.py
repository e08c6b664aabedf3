"""Preflight: resolve and check every input of every family before any work starts.

One message per problem, all at once, so a user fixes everything in one go instead of meeting the
third family's missing set after the first two ran for an hour. Fatal problems refuse the run
(`PreflightError`, nothing is written); warnings (a fallback to random tokens) are recorded with
the run and shown in its report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from workbench.errors import InputDataError
from workbench.families.base import Family, InputProblem
from workbench.families.context import RunContext
from workbench.families.prompts import MAX_UNKNOWN_SHARE, unknown_share

if TYPE_CHECKING:
    from workbench.models.model import Model


class PreflightError(InputDataError):
    """One or more inputs of an atlas run are missing or unusable; ``problems`` lists each."""

    def __init__(self, problems: Sequence[InputProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p.family}: {p.message}" + (f"\n    fix: {p.fix}" if p.fix else "") for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} with the run's inputs (nothing was run):\n{lines}")


def prompt_problems(model: Model, texts: Sequence[str], max_tokens: int) -> list[InputProblem]:
    """A user's prompts: at least 2 tokens each, mostly known tokens."""
    problems = []
    for i, text in enumerate(texts):
        n = int(model.to_tokens(text).shape[1])
        if n < 2:
            problems.append(
                InputProblem("prompts", f"prompt {i} ({text[:40]!r}) has {n} token(s)", "give prompts of at least 2 tokens")
            )
    share = unknown_share(model, list(texts)[:50])
    if share > MAX_UNKNOWN_SHARE:
        problems.append(
            InputProblem(
                "prompts",
                f"the prompts are {share:.0%} unknown tokens for this tokenizer",
                "give prompts in the model's language",
            )
        )
    return problems


def context_problems(model: Model, max_tokens: int, explicit: bool) -> list[InputProblem]:
    """A context longer than the model's: refused when asked for explicitly (otherwise the model's
    own length caps the default quietly)."""
    n_ctx = int(getattr(model.geometry, "n_ctx", 0) or 0)
    if explicit and n_ctx > 0 and max_tokens > n_ctx:
        return [
            InputProblem(
                "run",
                f"max_tokens {max_tokens} is longer than the model's context of {n_ctx} tokens",
                f"give --max-tokens {n_ctx} or less",
            )
        ]
    return []


def preflight(
    model: Model, families: Mapping[str, Family], ctx: RunContext, explicit_max_tokens: bool = False
) -> list[InputProblem]:
    """Every problem of every family's inputs; raises `PreflightError` if any is fatal, returns the warnings."""
    problems = context_problems(model, ctx.max_tokens, explicit_max_tokens)
    if ctx.prompts is not None:
        problems += prompt_problems(model, ctx.prompts, ctx.max_tokens)
    for fam in families.values():
        problems += fam.check_inputs(model, ctx)
    fatal = [p for p in problems if p.fatal]
    if fatal:
        raise PreflightError(fatal)
    warnings: list[InputProblem] = []
    for p in problems:  # one line per message (the text families share the same fallback)
        same = [w for w in warnings if w.message == p.message]
        if same:
            warnings[warnings.index(same[0])] = InputProblem(f"{same[0].family}, {p.family}", p.message, p.fix, False)
        else:
            warnings.append(p)
    return warnings
