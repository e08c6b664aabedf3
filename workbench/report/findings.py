"""Findings first: what each head does, how sure we are, and what went wrong, from one stored run.

The report, the dashboard's run page and the end of `workbench atlas` all show this, so the three
never disagree. For every head any family claims it gives the role(s), the score behind each role,
the causal check with its baseline and its random-head control, and a verdict:

* **confirmed**: the head's own causal check moved the outcome by more than the random control
  (and by more than a floor that rules out noise);
* **not confirmed by its causal check**: the check ran and the head did not stand out;
* **no causal check for this head**: the family checks a few top heads only, or has no per-head
  check (temporal classes).

Warnings list what should make a reader doubt the numbers: failed checks, calibrations that made
the held-out score worse, prompts that were random tokens, families that did not run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from workbench.models.heads import Head
from workbench.store.store import Store

CONFIRMED = "confirmed"
NOT_CONFIRMED = "not confirmed by its causal check"
NO_CHECK = "no causal check for this head"
VERDICT_ORDER = {CONFIRMED: 0, NOT_CONFIRMED: 1, NO_CHECK: 2}

#: smallest needle-accuracy drop / ASR rise that counts as an effect (one trial in 16 is 0.0625)
MIN_RATE_EFFECT = 0.125
#: smallest LM-loss rise (relative to the base loss) that counts as a sink head's effect
MIN_LOSS_EFFECT = 0.01
#: induction score (attention on the token after the earlier copy) that makes an induction head
MIN_INDUCTION = 0.3


@dataclass
class Evidence:
    """One causal check of one head: the outcome with the head ablated vs the baseline and a control."""

    check: str
    baseline: float | None
    ablated: float | None
    control: float | None  # the same check with random heads ablated (None: no control)
    control_label: str = ""
    verdict: str = NO_CHECK
    role: str = ""

    def effect(self) -> str:
        """The numbers alone: "1 -> 0 (3 random heads: 0.833)", or why there are none."""
        if self.baseline is None and self.ablated is None and self.control is None:
            return "no per-head check"
        if self.ablated is None:
            return "not run for this head"
        out = f"{_num(self.baseline)} -> {_num(self.ablated)}"
        if self.control is not None:
            out += f" ({self.control_label or 'random heads'}: {_num(self.control)})"
        return out

    def text(self) -> str:
        """The check and its numbers: "needle accuracy: 1 -> 0 (3 random heads: 0.833)"."""
        if self.baseline is None and self.ablated is None and self.control is None:
            return self.check
        return f"{self.check}: {self.effect()}"


@dataclass
class HeadFinding:
    head: str  # "L2H7"
    layer: int
    index: int
    roles: list[str] = field(default_factory=list)
    scores: list[str] = field(default_factory=list)  # "retrieval_score 1.00" per role
    evidence: list[Evidence] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        verdicts = [e.verdict for e in self.evidence] or [NO_CHECK]
        return min(verdicts, key=VERDICT_ORDER.__getitem__)


@dataclass
class Findings:
    run_id: str
    model: str
    heads: list[HeadFinding]
    headlines: list[str]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "headlines": self.headlines,
            "warnings": self.warnings,
            "heads": [
                {
                    "head": h.head,
                    "roles": h.roles,
                    "scores": h.scores,
                    "causal": [e.text() for e in h.evidence],
                    "evidence": [asdict(e) for e in h.evidence],
                    "verdict": h.verdict,
                    "notes": h.notes,
                }
                for h in self.heads
            ],
        }

    def rows(self) -> list[dict[str, str]]:
        """The head role table as plain rows (head, roles, score, causal effect, verdict)."""
        return [
            {
                "head": h.head,
                "role": ", ".join(h.roles),
                "score": "; ".join(h.scores),
                "causal effect (baseline -> ablated, control)": "; ".join(e.text() for e in h.evidence) or "-",
                "verdict": h.verdict + (f" ({'; '.join(h.notes)})" if h.notes else ""),
            }
            for h in self.heads
        ]


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class _Builder:
    def __init__(self) -> None:
        self.heads: dict[tuple[int, int], HeadFinding] = {}

    def get(self, layer: int, head: int) -> HeadFinding:
        key = (int(layer), int(head))
        if key not in self.heads:
            self.heads[key] = HeadFinding(str(Head(*key)), key[0], key[1])
        return self.heads[key]


def _sinks(b: _Builder, members: list[tuple[int, int]], metrics: dict[str, np.ndarray], summary: dict, art: dict) -> list[str]:
    warnings = []
    first = metrics.get("first_token_mass")
    delta = metrics.get("removal_loss_delta")
    base = _finite(summary.get("base_loss"))
    check = art.get("removal_check") or {}
    control = _finite(check.get("bottom_delta"))
    for layer, head in members:
        f = b.get(layer, head)
        f.roles.append("sink")
        if first is not None:
            f.scores.append(f"first_token_mass {_num(_finite(first[layer, head]))}")
        d = _finite(delta[layer, head]) if delta is not None else None
        ev = Evidence(
            "LM loss without its sink tokens",
            base,
            None if d is None or base is None else base + d,
            None if control is None or base is None else base + control,
            "bottom sink heads' group",
            role="sink",
        )
        if d is not None and base is not None:
            floor = MIN_LOSS_EFFECT * abs(base)
            ev.verdict = CONFIRMED if d > floor and d > (control or 0.0) else NOT_CONFIRMED
        f.evidence.append(ev)
    top, bottom = _finite(check.get("top_delta")), _finite(check.get("bottom_delta"))
    if top is not None and bottom is not None and top <= bottom:
        warnings.append(
            f"sinks: removing the top sink heads' sinks changed the loss no more than the bottom heads' "
            f"({_num(top)} vs {_num(bottom)} nats): sink scores are not backed by the removal check"
        )
    act = art.get("act_calibration") or summary.get("act")
    if isinstance(act, dict):
        before, after = _finite(act.get("evaluation_before")), _finite(act.get("evaluation_after"))
        if before is not None and after is not None and after < before:
            warnings.append(
                f"sinks: ACT's calibration made the held-out {act.get('metric', 'score')} worse "
                f"({_num(before)} -> {_num(after)}; heads {', '.join(act.get('selected', [])) or 'none'})"
            )
    return warnings


def _retrieval(
    b: _Builder, members: list[tuple[int, int]], metrics: dict[str, np.ndarray], summary: dict, art: dict
) -> list[str]:
    warnings = []
    score = metrics.get("retrieval_score")
    drop = metrics.get("ablation_accuracy_drop")
    induction = metrics.get("induction_score")
    base = _finite(summary.get("needle_accuracy"))
    comp = art.get("ablation_comparison") or {}
    randoms = [a for a in comp.get("random_accuracies", []) if _finite(a) is not None]
    random_acc = float(np.mean(randoms)) if randoms else None
    k = comp.get("k")
    for layer, head in members:
        f = b.get(layer, head)
        f.roles.append("retrieval")
        if score is not None:
            f.scores.append(f"retrieval_score {_num(_finite(score[layer, head]))}")
        d = _finite(drop[layer, head]) if drop is not None else None
        ablated = None if d is None or base is None else base - d
        ev = Evidence(
            "needle accuracy", base, ablated, random_acc, f"{k} random heads" if k else "random heads", role="retrieval"
        )
        if ablated is not None and base is not None:
            control_drop = (base - random_acc) if random_acc is not None else 0.0
            ev.verdict = CONFIRMED if d is not None and d >= MIN_RATE_EFFECT and d > control_drop else NOT_CONFIRMED
        f.evidence.append(ev)
    if induction is not None:
        for layer, head in zip(*np.nonzero(np.nan_to_num(induction) >= MIN_INDUCTION)):
            f = b.get(int(layer), int(head))
            f.roles.append("induction")
            f.scores.append(f"induction_score {_num(_finite(induction[layer, head]))}")
    if base is not None and base < 0.5:
        warnings.append(
            f"retrieval: the model finds the needle in only {base:.0%} of trials: retrieval scores and their ablations say little"
        )
    top_acc = _finite(comp.get("top_accuracy"))
    if top_acc is not None and random_acc is not None and base is not None and base >= 0.5 and top_acc >= random_acc:
        warnings.append(
            f"retrieval: ablating the top-{k} retrieval heads (accuracy {_num(top_acc)}) hurt no more than "
            f"random heads ({_num(random_acc)})"
        )
    return warnings


def _safety(b: _Builder, members: list[tuple[int, int]], metrics: dict[str, np.ndarray], summary: dict, art: dict) -> list[str]:
    warnings = []
    group = summary.get("parts", {}).get("group", summary) if isinstance(summary.get("parts"), dict) else summary
    asr_map = metrics.get("asr_when_ablated")
    ships = metrics.get("ships_mean")
    base = _finite(group.get("base_asr"))
    control = _finite(group.get("asr_random_head"))
    for layer, head in members:
        f = b.get(layer, head)
        f.roles.append("safety")
        if ships is not None:
            f.scores.append(f"ships_mean {_num(_finite(ships[layer, head]))}")
        a = _finite(asr_map[layer, head]) if asr_map is not None else None
        ev = Evidence("attack success rate", base, a, control, "one random head per request", role="safety")
        if a is not None and base is not None:
            rise = a - base
            ev.verdict = CONFIRMED if rise >= MIN_RATE_EFFECT and rise > ((control or base) - base) else NOT_CONFIRMED
        f.evidence.append(ev)
    if base is not None and base >= 0.5:
        warnings.append(
            f"safety: the model answers {base:.0%} of the harmful requests without any ablation: there is "
            "little refusal for a head to carry"
        )
    return warnings


def _temporal(b: _Builder, members: list[tuple[int, int]], metrics: dict[str, np.ndarray], summary: dict, art: dict) -> list[str]:
    rows = {(r["layer"], r["head"]): r for r in art.get("temporal_classes", []) if r.get("input") == "text"}
    lag_heads = set(summary.get("induction_lag_heads") or [])
    for layer, head in members:
        row = rows.get((layer, head))
        if row is None:
            continue
        f = b.get(layer, head)
        f.roles.append(f"temporal: {row['label']}")
        f.scores.append(f"class confidence {_num(_finite(row.get('confidence')))}")
        f.evidence.append(
            Evidence("no per-head causal check (a temporal class)", None, None, None, role=f"temporal: {row['label']}")
        )
    for label in lag_heads:
        layer, head = (int(x) for x in label[1:].split("H"))
        if (layer, head) in b.heads:
            b.heads[(layer, head)].notes.append("attends at the induction lag on repeated text")
    return []


FAMILY_FINDINGS = {"sinks": _sinks, "retrieval": _retrieval, "safety": _safety, "temporal": _temporal}


def _headline(name: str, b: _Builder, role: str, summary: dict) -> str:
    heads = [f for f in b.heads.values() if any(r == role or r.startswith(role + ":") for r in f.roles)]
    confirmed = [f.head for f in heads if any(e.verdict == CONFIRMED for e in f.evidence)]
    text = f"{name}: {len(heads)} head{'s' if len(heads) != 1 else ''} claimed"
    if name != "temporal":
        text += f", {len(confirmed)} confirmed by {'its' if len(confirmed) == 1 else 'their'} causal check"
        if confirmed:
            text += f" ({', '.join(confirmed[:6])}{' ...' if len(confirmed) > 6 else ''})"
    return text


def build_findings(store: Store, run_ref: str) -> Findings:
    """The findings of one stored run (complete or not: finished families only)."""
    from workbench.families.registry import family_names

    info = store.run(run_ref)
    families = store.families(info.run_id)
    scores = store.scores(info.run_id)
    b = _Builder()
    warnings: list[str] = [str(w) for w in (info.config or {}).get("warnings", [])]
    headlines = []
    for fam in families:
        if fam.status != "done":
            warnings.append(f"{fam.family}: not finished ({fam.status}); its heads are not in the table")
            continue
        metrics = dict(scores[fam.family].metrics) if fam.family in scores else {}
        art = store.artefacts(info.run_id, fam.family)
        summary = fam.summary or {}
        source = summary.get("prompt_source") or summary.get("trial_source") or ""
        if isinstance(source, str) and source.startswith("random-tokens"):
            msg = f"{fam.family}: prompts were uniformly random tokens ({source})"
            if not any(source in w for w in warnings):
                warnings.append(msg)
        fn = FAMILY_FINDINGS.get(fam.family)
        if fn is None:  # a plugin family: its members, without a causal reading
            for layer, head in fam.members:
                b.get(layer, head).roles.append(fam.family)
            headlines.append(f"{fam.family}: {len(fam.members)} heads claimed")
            continue
        warnings += fn(b, [(int(m[0]), int(m[1])) for m in fam.members], metrics, summary, art)
        headlines.append(_headline(fam.family, b, {"sinks": "sink"}.get(fam.family, fam.family), summary))
    skipped = [n for n in family_names() if n not in info.families]
    if skipped:
        warnings.append(f"not run: {', '.join(skipped)} (run them with --families)")
    heads = sorted(b.heads.values(), key=lambda f: (VERDICT_ORDER[f.verdict], f.layer, f.index))
    return Findings(info.run_id, info.model, heads, headlines, warnings)
