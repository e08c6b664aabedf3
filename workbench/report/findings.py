"""Findings first: what each head does, how sure we are, and what went wrong, from one stored run.

The report, the dashboard's run page and the end of `workbench atlas` all show this, so the three
never disagree. For every head any family claims it gives the role(s), the score behind each role,
the causal check with its baseline and its random-head control, and a verdict:

* **confirmed**: the head's own causal check, tested against several random-head control draws
  (`workbench.analysis.verdicts`: an exact binomial test against the draws' flip rate and McNemar's
  exact test against the baseline for per-trial checks, a permutation test for loss changes), is
  significant at alpha 0.05 after Holm's correction over the heads the family tested, and its effect
  reaches a floor; each row shows n, the control draws' mean and spread, and the p-values;
* **not confirmed by its causal check**: the check ran and the head did not stand out;
* **no causal check for this head**: the family checks a few top heads only, or has no per-head
  check (temporal classes).

A family whose baseline makes its check meaningless claims nothing and says why in its headline:
safety on a model that already answers the harmful requests (base ASR >= 0.5), retrieval on a model
that fails the needle with nothing ablated (accuracy < 0.5).

Warnings list what should make a reader doubt the numbers: failed checks, calibrations that made
the held-out score worse, prompts that were random tokens, families that did not run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from workbench.analysis.verdicts import (
    DEFAULT as VERDICTS,
)
from workbench.analysis.verdicts import (
    HeadTest,
    VerdictConfig,
    correct,
    per_trial_test,
    permutation_test,
    retrieval_refusal,
    safety_refusal,
)
from workbench.models.heads import Head
from workbench.store.store import Store

CONFIRMED = "confirmed"
NOT_CONFIRMED = "not confirmed by its causal check"
NO_CHECK = "no causal check for this head"
VERDICT_ORDER = {CONFIRMED: 0, NOT_CONFIRMED: 1, NO_CHECK: 2}

#: smallest needle-accuracy drop / ASR rise that counts as an effect (one trial in 16 is 0.0625)
MIN_RATE_EFFECT = VERDICTS.min_rate_effect
#: smallest LM-loss rise (relative to the base loss) that counts as a sink head's effect
MIN_LOSS_EFFECT = VERDICTS.min_loss_effect
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
    control_sd: float | None = None  # spread (standard deviation) of the control draws
    n: int | None = None  # trials (or prompts) the test counts
    p_value: float | None = None
    p_corrected: float | None = None
    correction: str = ""
    test: str = ""
    reason: str = ""  # why the verdict is not "confirmed" (when the test says)

    def effect(self) -> str:
        """The numbers alone: "1 -> 0 (8 random heads: 0.938 ± 0.177)", or why there are none."""
        if self.baseline is None and self.ablated is None and self.control is None:
            return "no per-head check"
        if self.ablated is None:
            return "not run for this head"
        out = f"{_num(self.baseline)} -> {_num(self.ablated)}"
        if self.control is not None:
            spread = f" ± {_num(self.control_sd)}" if self.control_sd is not None else ""
            out += f" ({self.control_label or 'random heads'}: {_num(self.control)}{spread})"
        return out

    def statistics(self) -> str:
        """n and the p-values: "n 16, p 1.5e-05 (holm 6.1e-05)", or "-" without a test."""
        if self.p_value is None:
            return "-"
        out = f"n {self.n}, p {_p(self.p_value)}"
        if self.p_corrected is not None:
            out += f" ({self.correction.split(' ')[0] or 'corrected'} {_p(self.p_corrected)})"
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
                "causal effect (baseline -> ablated, control mean ± spread)": "; ".join(e.text() for e in h.evidence) or "-",
                "n, p-value (corrected)": "; ".join(e.statistics() for e in h.evidence) or "-",
                "verdict": h.verdict + (f" ({'; '.join(h.notes)})" if h.notes else ""),
            }
            for h in self.heads
        ]


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _p(value: float) -> str:
    return f"{value:.2g}"


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class _Builder:
    def __init__(self, verdicts: VerdictConfig = VERDICTS) -> None:
        self.heads: dict[tuple[int, int], HeadFinding] = {}
        self.verdicts = verdicts
        self.refused: dict[str, str] = {}  # family -> why it claims nothing
        self.tested: dict[str, int] = {}  # family -> heads its correction ran over

    def get(self, layer: int, head: int) -> HeadFinding:
        key = (int(layer), int(head))
        if key not in self.heads:
            self.heads[key] = HeadFinding(str(Head(*key)), key[0], key[1])
        return self.heads[key]


def _apply(ev: Evidence, test: HeadTest) -> None:
    """Copy a head's test into its evidence row and set the verdict from it."""
    ev.n, ev.p_value, ev.p_corrected = test.n, test.p_value, test.p_corrected
    ev.correction, ev.test, ev.reason, ev.control_sd = test.correction, test.test, test.reason, test.control_sd
    ev.verdict = CONFIRMED if test.confirmed else NOT_CONFIRMED


def _per_trial_tests(b: _Builder, family: str, checks: Any) -> dict[str, HeadTest]:
    """The family's per-trial head checks (``head_checks``: base / heads / controls outcomes) as
    tests, corrected over every head the family tested; {} for runs stored without them."""
    if not isinstance(checks, dict) or not checks.get("base"):
        return {}
    base = [bool(v) for v in checks["base"]]
    controls = {str(k): [bool(v) for v in c] for k, c in (checks.get("controls") or {}).items()}
    tests = [
        per_trial_test(
            str(name), base, [bool(v) for v in ok], [c for k, c in controls.items() if k != name], b.verdicts.min_rate_effect
        )
        for name, ok in (checks.get("heads") or {}).items()
    ]
    correct(tests, b.verdicts)
    b.tested[family] = len(tests)
    return {t.head: t for t in tests}


#: a head whose check ran before per-trial outcomes were stored cannot be tested
UNTESTED = "no per-trial outcomes in this run (stored before the verdict tests): rerun it"


def _sinks(b: _Builder, members: list[tuple[int, int]], metrics: dict[str, np.ndarray], summary: dict, art: dict) -> list[str]:
    warnings = []
    first = metrics.get("first_token_mass")
    delta = metrics.get("removal_loss_delta")
    base = _finite(summary.get("base_loss"))
    check = art.get("removal_check") or {}
    control = _finite(check.get("bottom_delta"))
    # the control draws: random-head draws when the family stored them, else its bottom-k group alone
    draws = [d for d in (_finite(x) for x in check.get("random_deltas") or []) if d is not None]
    label = f"{len(draws)} random heads" if draws else "bottom sink heads' group"
    if not draws and control is not None:
        draws = [control]
    evaluated = [(int(l), int(h)) for l, h in zip(*np.nonzero(np.isfinite(delta)))] if delta is not None else []
    tests: dict[tuple[int, int], HeadTest] = {}
    if base is not None and delta is not None:
        floor = b.verdicts.min_loss_effect * abs(base)
        n = int(summary.get("n_prompts") or 0)
        found = [permutation_test(str(Head(l, h)), float(delta[l, h]), draws, n, floor) for l, h in evaluated]
        correct(found, b.verdicts)
        b.tested["sinks"] = len(found)
        tests = dict(zip(evaluated, found))
    control_mean = float(np.mean(draws)) if draws else None
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
            None if control_mean is None or base is None else base + control_mean,
            label,
            role="sink",
        )
        test = tests.get((layer, head))
        if test is not None:
            _apply(ev, test)
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


def _rate_evidence(check: str, base: float | None, test: HeadTest | None, rise: bool, role: str) -> Evidence:
    """A per-trial check's row: the rate at baseline, with the head ablated and with the random heads
    (``rise``: the shown rate is the failure rate, e.g. ASR, so the effect adds to it)."""
    if test is None:
        return Evidence(check, base, None, None, role=role)
    sign = 1.0 if rise else -1.0
    ablated = None if base is None else base + sign * test.effect
    control = None if base is None or test.control_mean is None else base + sign * test.control_mean
    ev = Evidence(check, base, ablated, control, f"{test.n_controls} random heads", role=role)
    _apply(ev, test)
    return ev


def _retrieval(
    b: _Builder, members: list[tuple[int, int]], metrics: dict[str, np.ndarray], summary: dict, art: dict
) -> list[str]:
    warnings = []
    score = metrics.get("retrieval_score")
    drop = metrics.get("ablation_accuracy_drop")
    # TransformerLens's detector score (workbench.analysis.retrieval.TL_INDUCTION); runs stored before
    # the two induction scores had their own names kept the detector's value as "induction_score"
    induction = metrics.get("tl_induction_score", metrics.get("induction_score"))
    razor = metrics.get("razor_induction_score")
    base = _finite(summary.get("needle_accuracy"))
    refusal = summary.get("claim_refused") or retrieval_refusal(base, b.verdicts)
    comp = art.get("ablation_comparison") or {}
    randoms = [a for a in comp.get("random_accuracies", []) if _finite(a) is not None]
    random_acc = float(np.mean(randoms)) if randoms else None
    k = comp.get("k")
    checks = art.get("head_checks")
    tests = _per_trial_tests(b, "retrieval", checks)
    check_base = float(np.mean([bool(v) for v in checks["base"]])) if tests and isinstance(checks, dict) else base
    if refusal:
        b.refused["retrieval"] = str(refusal)
        members = []
    for layer, head in members:
        f = b.get(layer, head)
        f.roles.append("retrieval")
        if score is not None:
            f.scores.append(f"retrieval_score {_num(_finite(score[layer, head]))}")
        test = tests.get(str(Head(layer, head)))
        if test is not None:
            ev = _rate_evidence("needle accuracy", check_base, test, rise=False, role="retrieval")
        else:
            d = _finite(drop[layer, head]) if drop is not None else None
            ablated = None if d is None or base is None else base - d
            ev = Evidence(
                "needle accuracy", base, ablated, random_acc, f"{k} random heads" if k else "random heads", role="retrieval"
            )
            if ablated is not None:
                ev.verdict, ev.reason = NOT_CONFIRMED, UNTESTED
        f.evidence.append(ev)
    if induction is not None:
        for layer, head in zip(*np.nonzero(np.nan_to_num(induction) >= MIN_INDUCTION)):
            f = b.get(int(layer), int(head))
            f.roles.append("induction")
            f.scores.append(f"tl_induction_score {_num(_finite(induction[layer, head]))}")
            if razor is not None:
                f.scores.append(f"razor_induction_score {_num(_finite(razor[layer, head]))}")
    top_acc = _finite(comp.get("top_accuracy"))
    if not refusal and top_acc is not None and random_acc is not None and base is not None and top_acc >= random_acc:
        warnings.append(
            f"retrieval: ablating the top-{k} retrieval heads (accuracy {_num(top_acc)}) hurt no more than "
            f"random heads ({_num(random_acc)})"
        )
    return warnings


def _safety(b: _Builder, members: list[tuple[int, int]], metrics: dict[str, np.ndarray], summary: dict, art: dict) -> list[str]:
    parts = summary.get("parts")
    group = parts.get("group", summary) if isinstance(parts, dict) else summary
    asr_map = metrics.get("asr_when_ablated")
    ships = metrics.get("ships_mean")
    base = _finite(group.get("base_asr"))
    control = _finite(group.get("asr_random_head"))
    base_refusal = _finite(
        group.get("base_refusal_harmful", (art.get("asr") or art.get("group/asr") or {}).get("base_refusal_harmful"))
    )
    refusal = summary.get("claim_refused") or safety_refusal(base, base_refusal, b.verdicts)
    checks = art.get("head_checks", art.get("group/head_checks"))
    tests = _per_trial_tests(b, "safety", checks)
    check_base = 1.0 - float(np.mean([bool(v) for v in checks["base"]])) if tests and isinstance(checks, dict) else base
    if refusal:
        b.refused["safety"] = str(refusal)
        members = []
    for layer, head in members:
        f = b.get(layer, head)
        f.roles.append("safety")
        if ships is not None:
            f.scores.append(f"ships_mean {_num(_finite(ships[layer, head]))}")
        test = tests.get(str(Head(layer, head)))
        if test is not None:
            ev = _rate_evidence("attack success rate", check_base, test, rise=True, role="safety")
        else:
            a = _finite(asr_map[layer, head]) if asr_map is not None else None
            ev = Evidence("attack success rate", base, a, control, "one random head per request", role="safety")
            if a is not None:
                ev.verdict, ev.reason = NOT_CONFIRMED, UNTESTED
        f.evidence.append(ev)
    return []


def _temporal(b: _Builder, members: list[tuple[int, int]], metrics: dict[str, np.ndarray], summary: dict, art: dict) -> list[str]:
    """Claimed heads (the family's `claim_rule`, stored in its summary) get their class as role; the
    heads its period-copy and induction-lag summaries name get a role of their own (listed, not
    claimed), so each name in a summary has its row in the table."""
    rows = {(r["layer"], r["head"]): r for r in art.get("temporal_classes", []) if r.get("input") == "text"}
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
    for role, score, names in _temporal_listed(summary):
        for name, value in names.items():
            f = b.get(*(int(x) for x in name[1:].split("H")))
            f.roles.append(role)
            if value is not None:
                f.scores.append(f"{score} {_num(_finite(value))}")
    return []


def _temporal_listed(summary: dict) -> list[tuple[str, str, dict[str, float | None]]]:
    """(role, score name, {head: score}) of the heads the temporal summaries name (older runs: names only)."""
    out = []
    copy, lag = summary.get("period_copy") or {}, summary.get("induction_lag") or {}
    copy_heads = copy.get("heads") or dict.fromkeys(summary.get("period_copy_heads") or [])
    if copy_heads:
        role = f"temporal, listed: period copy on periodic text (P = {summary.get('planted_period', '?')})"
        out.append((role, "period-copy share", copy_heads))
    lag_heads = lag.get("heads") or dict.fromkeys(summary.get("induction_lag_heads") or [])
    if lag_heads:
        repeat = summary.get("repeat_len")
        role = f"temporal, listed: induction lag {repeat - 1 if isinstance(repeat, int) else '?'} on repeated text"
        out.append((role, "lag confidence", lag_heads))
    return out


def _temporal_headline(summary: dict) -> str:
    """The claim rule and the listed heads, after the temporal headline's count."""
    parts = []
    claimed = {c: heads for c, heads in (summary.get("claimed") or {}).items() if heads}
    if claimed:
        parts.append("; ".join(f"{c}: {', '.join(h[:6])}{' ...' if len(h) > 6 else ''}" for c, h in claimed.items()))
    for role, _, names in _temporal_listed(summary):
        heads = list(names)
        parts.append(f"{role.removeprefix('temporal, listed: ')}: {', '.join(heads[:8])}{' ...' if len(heads) > 8 else ''}")
    rule = summary.get("claim_rule")
    return (f" ({' | '.join(parts)})" if parts else "") + (f"; rule: the family {rule}" if rule else "")


FAMILY_FINDINGS = {"sinks": _sinks, "retrieval": _retrieval, "safety": _safety, "temporal": _temporal}


def _headline(name: str, b: _Builder, role: str, summary: dict) -> str:
    if name in b.refused:
        return f"{name}: no heads claimed: {b.refused[name]}"
    heads = [f for f in b.heads.values() if any(r == role or r.startswith(role + ":") for r in f.roles)]
    confirmed = [f.head for f in heads if any(e.verdict == CONFIRMED and e.role == role for e in f.evidence)]
    text = f"{name}: {len(heads)} head{'s' if len(heads) != 1 else ''} claimed"
    if name == "temporal":
        text += _temporal_headline(summary)
    else:
        text += f", {len(confirmed)} confirmed by {'its' if len(confirmed) == 1 else 'their'} causal check"
        if confirmed:
            text += f" ({', '.join(confirmed[:6])}{' ...' if len(confirmed) > 6 else ''})"
        if name in b.tested:
            v = b.verdicts
            text += f"; test: p <= {v.alpha:g} after {v.correction} over {b.tested[name]} tested heads, effect >= floor"
    return text


def build_findings(store: Store, run_ref: str, verdicts: VerdictConfig = VERDICTS) -> Findings:
    """The findings of one stored run (complete or not: finished families only); ``verdicts``: the
    significance level, correction, effect floors and refusal baselines (`VerdictConfig`)."""
    from workbench.families.registry import family_names

    info = store.run(run_ref)
    families = store.families(info.run_id)
    scores = store.scores(info.run_id)
    b = _Builder(verdicts)
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
