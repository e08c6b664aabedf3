"""Verdicts as statistical tests: a head is "confirmed" only when its causal check beats random heads.

Two tests, chosen by the shape of the check:

* **Per-trial checks** (needle answered / request refused, one success or failure per trial):
  among the ``n`` trials that succeed with nothing ablated, the head's ablation breaks ``k``.
  Two exact one-sided tests must both reject; the verdict's p-value is the larger of the two
  (an intersection-union test, valid at the stated level):

  - against the random heads: ``k`` against Binomial(n, r), with r the flip rate of the random-head
    control draws on the same trials, pooled over the draws and add-one smoothed,
    r = (flips + 1) / (n * draws + 2), so a control that never flips still leaves a rate above 0;
  - against the baseline: McNemar's exact test on the paired outcomes (trials broken vs trials
    fixed by the ablation), P(Binomial(broken + fixed, 1/2) >= broken).

* **Continuous checks** (an LM-loss change): the empirical permutation test against the control
  draws, p = (1 + #{controls >= effect}) / (1 + n_controls). With one control draw p >= 0.5: a
  single draw can never confirm a head.

The p-values of the heads tested in one family are corrected for multiple testing (Holm by default,
or Bonferroni) and a head is confirmed when its corrected p-value is at most ``alpha`` (0.05) and its
effect reaches the family's floor. Families whose baseline makes the check meaningless refuse to
claim (`safety_refusal`, `retrieval_refusal`).

Pure functions (no model, no torch): the families store the per-trial outcomes, the findings call
these.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

#: the multiple-testing corrections `correct` knows
CORRECTIONS = ("holm", "bonferroni")


@dataclass(frozen=True)
class VerdictConfig:
    """Significance level and correction (the usual alpha 0.05, Holm 1979); the effect floors (one
    trial in 8 of a rate; 1% of the base LM loss); the baselines at which a family refuses to claim:
    safety when the model already answers at least half of the harmful requests, or refuses fewer than
    half of them (a model that babbles has no refusal either), retrieval when it finds the needle in
    fewer than half of the trials (the paper-style success gate of 0.5)."""

    alpha: float = 0.05
    correction: str = "holm"
    min_rate_effect: float = 0.125
    min_loss_effect: float = 0.01  # relative to the base loss
    max_base_asr: float = 0.5  # safety refuses at or above
    min_base_refusal: float = 0.5  # safety refuses below (share of harmful requests the judge calls a refusal)
    min_base_accuracy: float = 0.5  # retrieval refuses below


DEFAULT = VerdictConfig()


@dataclass
class HeadTest:
    """One head's causal check as a test against its random-head controls."""

    head: str
    test: str  # which test gave ``p_value``
    effect: float  # rate drop (per-trial checks: success rate at baseline minus with the head ablated) or loss rise
    floor: float  # the smallest effect that may be confirmed
    n: int  # trials the test counts (per-trial: the trials that succeed at baseline; continuous: prompts)
    n_controls: int  # random-head draws
    control_mean: float | None  # the draws' mean effect
    control_sd: float | None  # their spread (sample standard deviation; None with fewer than 2 draws)
    p_value: float
    flips: int | None = None  # per-trial: trials the head's ablation broke
    control_rate: float | None = None  # per-trial: the smoothed flip rate of the draws
    p_control: float | None = None  # per-trial: the binomial test against the draws
    p_baseline: float | None = None  # per-trial: McNemar's exact test against the baseline
    min_p: float | None = None  # the smallest p-value this design can reach (all trials flipped / above every draw)
    p_corrected: float | None = None
    correction: str = ""
    alpha: float = DEFAULT.alpha
    confirmed: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- exact tails ----------------------------------------------------------------------------------


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact (summed in log space)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def mcnemar_exact(broken: int, fixed: int) -> float:
    """One-sided exact McNemar (sign) test on paired outcomes: P(Binomial(broken + fixed, 1/2) >= broken)."""
    return binomial_sf(broken, broken + fixed, 0.5)


def permutation_p(effect: float, controls: Sequence[float]) -> float:
    """Empirical p-value of ``effect`` among the control draws: (1 + #{c >= effect}) / (1 + n)."""
    return (1 + sum(1 for c in controls if c >= effect)) / (1 + len(controls))


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# -- the tests ------------------------------------------------------------------------------------


def per_trial_test(
    head: str,
    base_ok: Sequence[bool],
    head_ok: Sequence[bool],
    controls_ok: Sequence[Sequence[bool]],
    floor: float = DEFAULT.min_rate_effect,
) -> HeadTest:
    """Test a per-trial check: ``base_ok[t]`` the trial succeeds with nothing ablated, ``head_ok[t]``
    with the head ablated, ``controls_ok[j][t]`` with random head j ablated (the same trials)."""
    t = len(base_ok)
    if len(head_ok) != t or any(len(c) != t for c in controls_ok):
        raise ValueError(
            f"per-trial outcomes of different lengths: base {t}, head {len(head_ok)}, controls {[len(c) for c in controls_ok]}"
        )
    ok = [i for i in range(t) if base_ok[i]]
    n = len(ok)
    flips = sum(1 for i in ok if not head_ok[i])
    fixed = sum(1 for i in range(t) if not base_ok[i] and head_ok[i])
    base_rate = sum(map(bool, base_ok)) / t if t else 0.0
    effect = base_rate - (sum(map(bool, head_ok)) / t if t else 0.0)
    control_effects = [base_rate - sum(map(bool, c)) / t for c in controls_ok] if t else []
    mean, sd = _mean_sd(control_effects)
    control_flips = sum(1 for c in controls_ok for i in ok if not c[i])
    rate = (control_flips + 1) / (n * len(controls_ok) + 2)
    p_control = binomial_sf(flips, n, rate) if n else 1.0
    p_baseline = mcnemar_exact(flips, fixed) if n else 1.0
    out = HeadTest(
        head,
        "exact binomial vs the random heads' flip rate, and McNemar's exact test vs the baseline (the larger p)",
        effect,
        floor,
        n,
        len(controls_ok),
        mean,
        sd,
        max(p_control, p_baseline),
        flips=flips,
        control_rate=rate,
        p_control=p_control,
        p_baseline=p_baseline,
        min_p=max(binomial_sf(n, n, rate), mcnemar_exact(n, 0)) if n else 1.0,
    )
    if n == 0:
        out.reason = "no trial succeeds with nothing ablated"
    elif not controls_ok:
        out.reason = "no random-head control was drawn"
    return out


def permutation_test(head: str, effect: float, controls: Sequence[float], n: int, floor: float) -> HeadTest:
    """Test a continuous check (e.g. an LM-loss rise) against the random-head draws' effects."""
    mean, sd = _mean_sd(list(controls))
    out = HeadTest(
        head,
        "permutation vs the random-head draws",
        effect,
        floor,
        n,
        len(controls),
        mean,
        sd,
        permutation_p(effect, controls),
        min_p=1 / (1 + len(controls)),
    )
    if not controls:
        out.reason = "no random-head control was drawn"
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    return [min(1.0, len(pvalues) * p) for p in pvalues]


def correct(tests: Sequence[HeadTest], cfg: VerdictConfig = DEFAULT) -> list[HeadTest]:
    """Correct the p-values of the heads tested in one family, and decide each verdict: confirmed
    when the corrected p-value is at most alpha and the effect reaches the floor."""
    if cfg.correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {cfg.correction!r}; use one of {', '.join(CORRECTIONS)}")
    adjusted = (holm if cfg.correction == "holm" else bonferroni)([t.p_value for t in tests])
    for test, p in zip(tests, adjusted):
        test.p_corrected = p
        test.correction = f"{cfg.correction} over {len(tests)} head{'s' if len(tests) != 1 else ''}"
        test.alpha = cfg.alpha
        significant = p <= cfg.alpha
        big = test.effect >= test.floor
        test.confirmed = significant and big and not test.reason
        if not test.reason and not test.confirmed:
            why = []
            if not significant:
                why.append(f"p {p:.2g} > {cfg.alpha:g} after {cfg.correction}")
                if test.min_p is not None and test.min_p * len(tests) > cfg.alpha:
                    why.append(f"the smallest p this check can reach is {test.min_p:.2g} (n {test.n}, {test.n_controls} draws)")
            if not big:
                why.append(f"effect {test.effect:.3g} < floor {test.floor:.3g}")
            test.reason = "; ".join(why)
    return list(tests)


# -- baselines that make a check meaningless ----------------------------------------------------------


def safety_refusal(base_asr: float | None, base_refusal: float | None = None, cfg: VerdictConfig = DEFAULT) -> str | None:
    """Why the safety family must not claim heads on this model (None: it may): it already answers
    the harmful requests (base ASR), or it does not refuse them (base refusal rate: the judge's
    "refusal" verdicts; the rest of a random model's answers are "degenerate")."""
    if base_asr is not None and math.isfinite(base_asr) and base_asr >= cfg.max_base_asr:
        return (
            f"the model answers {base_asr:.0%} of the harmful requests with nothing ablated (base ASR >= {cfg.max_base_asr:g}): "
            "there is no refusal for a head to carry"
        )
    if base_refusal is not None and math.isfinite(base_refusal) and base_refusal < cfg.min_base_refusal:
        return (
            f"the model refuses only {base_refusal:.0%} of the harmful requests with nothing ablated "
            f"(refusal rate < {cfg.min_base_refusal:g}; base ASR {base_asr if base_asr is not None else float('nan'):.2f}, "
            "the rest judged degenerate): there is no refusal for a head to carry"
        )
    return None


def retrieval_refusal(base_accuracy: float | None, cfg: VerdictConfig = DEFAULT) -> str | None:
    """Why the retrieval family must not claim heads on this model (None: it may)."""
    if base_accuracy is None or not math.isfinite(base_accuracy):
        return None
    if base_accuracy < cfg.min_base_accuracy:
        return (
            f"the model finds the needle in only {base_accuracy:.0%} of the trials with nothing ablated "
            f"(< {cfg.min_base_accuracy:.0%}): ablating a head cannot show that it retrieves"
        )
    return None


# -- control draws -------------------------------------------------------------------------------------

H = TypeVar("H")


def draw_controls(
    heads: Sequence[H], n: int, rng: random.Random, exclude: Sequence[H] = (), same_layer_as: H | None = None
) -> list[H]:
    """``n`` distinct random heads (fewer if there are not enough), none of ``exclude``; with
    ``same_layer_as`` only heads of that head's layer (heads have a ``layer`` attribute or are
    (layer, head) pairs), for checks whose method fixes the layer."""

    def layer(h: Any) -> int:
        return int(h.layer) if hasattr(h, "layer") else int(h[0])

    skip = set(exclude)
    pool = [h for h in heads if h not in skip and (same_layer_as is None or layer(h) == layer(same_layer_as))]
    return rng.sample(pool, min(n, len(pool)))
