"""A cost plan before any work: the passes each family makes, and what they cost on a device.

Each family's model passes are written as a function of the geometry (L layers, H heads), the prompt
length N, and the family's counts (prompts P, needle trials T, requests R, new tokens G). The formulas
follow the family code step by step; tests/atlas/test_plan.py runs the families on a tiny model with a
counter on the bridge's forward and asserts the counts.

Cost of a pass: ``t(n) = overhead + a * n + b * n^2`` seconds for a prefill of n tokens, and
``overhead + a + 2 * b * c`` for a cached decode step at context c. The coefficients come either from
the device (`measure_costs`: three short recorded passes of the model on its device, fitted) or from
stated assumptions (`assumed_costs`: peak matmul throughput times an efficiency, for a device this
machine does not have; every assumption is printed with the plan).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.models.model import Model


@dataclass(frozen=True)
class PlanGeometry:
    """What the formulas need of a model (real or hypothetical: the 8B plan has no weights here)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    n_params: float  # parameters that every token multiplies through (embeddings excluded)
    vocab: int
    d_model: int
    bytes_per_param: int = 2

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads


LLAMA_31_8B = PlanGeometry(n_layers=32, n_heads=32, n_kv_heads=8, d_head=128, n_params=6.98e9, vocab=128256, d_model=4096)
QWEN2_05B = PlanGeometry(n_layers=24, n_heads=14, n_kv_heads=2, d_head=64, n_params=0.36e9, vocab=151936, d_model=896)


def geometry_of(model: Model) -> PlanGeometry:
    geo = model.geometry
    hf = model.hf_model
    total = sum(p.numel() for p in hf.parameters())
    embed = hf.get_input_embeddings().weight.numel() if hf.get_input_embeddings() is not None else 0
    return PlanGeometry(
        geo.n_layers,
        geo.n_heads,
        geo.n_kv_heads,
        geo.d_head,
        float(total - embed),
        geo.vocab_size,
        int(hf.config.hidden_size),
        model.dtype.itemsize,
    )


@dataclass
class Step:
    family: str
    step: str
    passes: int  # prefill forwards
    tokens: int  # tokens per prefill (the length each pass runs at)
    batch: int = 1  # rows per prefill
    decode_steps: int = 0  # cached decode forwards (one token per row each)
    decode_context: int = 0  # mean context length of those steps
    seconds: float = 0.0
    note: str = ""
    conditional: bool = False  # runs only when an earlier step's outcome asks for it (counted as if it does)


@dataclass
class Plan:
    steps: list[Step]
    device: str
    assumptions: list[str] = field(default_factory=list)
    peak_bytes: float = 0.0

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def passes(self, family: str | None = None) -> int:
        return sum(s.passes + s.decode_steps for s in self.steps if family is None or s.family == family)

    def by_family(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.steps:
            out[s.family] = out.get(s.family, 0.0) + s.seconds
        return out

    def table(self) -> str:
        """Markdown table: one row per step, then the total."""
        rows = [
            "| family | step | passes | tokens/pass | batch | decode steps | est. time |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for s in self.steps:
            rows.append(
                f"| {s.family} | {s.step} | {s.passes} | {s.tokens} | {s.batch} | {s.decode_steps} | {_fmt_time(s.seconds)} |"
            )
        rows.append(
            f"| **total** | | {sum(s.passes for s in self.steps)} | | | {sum(s.decode_steps for s in self.steps)} | **{_fmt_time(self.seconds)}** |"
        )
        return "\n".join(rows)


def _fmt_time(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# -- pass counts per family (the code's structure) -----------------------------------------------------


def sinks_steps(geo: PlanGeometry, cfg: Any, n_prompts: int, n_tokens: int, act_metric_passes: int | None = None) -> list[Step]:
    """`families/sinks.py`: record P prompts (their LM loss comes with the recording); the per-head
    evidence and both top/bottom checks as kernel-side key removal, one edited variant per batch row
    (R rows per pass: ``check_batch`` within ``check_batch_tokens``), k + 4 variants per prompt; ACT at
    its calibration length n_a: one recorded pass per calibration sequence (sinks and base metric), the
    candidate heads R_a per pass, the held-out base, and, when heads are kept, one pass per kept layer
    on both sets. Candidates without a sink are skipped at no cost: the plan counts every candidate."""
    k = geo.n_total_heads if cfg.evidence_heads < 0 else min(cfg.evidence_heads, geo.n_total_heads)
    p, n = n_prompts, n_tokens

    def rows(tokens: int) -> int:
        return max(1, min(int(cfg.check_batch), int(cfg.check_batch_tokens) // max(tokens, 1)))

    r = rows(n)
    steps = [
        Step("sinks", "record prompts (+ base LM loss)", p, n),
        Step(
            "sinks",
            f"sink removal: {k} heads one at a time + top/bottom sink and first-token checks",
            p * math.ceil((k + 4) / r),
            n,
            batch=r,
            note="a variant whose heads have no sink on a prompt takes no row (fewer passes)",
        ),
    ]
    if cfg.act:
        n_layers = max(0, geo.n_layers - cfg.act_skip_first_layers - cfg.act_skip_last_layers)
        candidates = n_layers * geo.n_heads
        n_act = n if int(cfg.act_context) <= 0 else min(int(cfg.act_context), n)
        ra = rows(n_act)
        m = act_metric_passes if act_metric_passes is not None else max(1, p // 2)
        held = act_metric_passes if act_metric_passes is not None else p - max(1, p // 2) or m
        steps.append(
            Step(
                "sinks",
                f"ACT search, {candidates} candidate heads at {n_act} tokens, held-out base",
                m + m * math.ceil(candidates / ra) + held,
                n_act,
                batch=ra,
                note="candidates without a sink are skipped (fewer passes)",
            )
        )
        steps.append(
            Step(
                "sinks",
                "ACT kept heads on both sets, per kept layer",
                m + held,
                n_act,
                note="when a head is kept",
                conditional=True,
            )
        )
    return steps


def retrieval_steps(geo: PlanGeometry, cfg: Any, n_trials: int, context: int, new_tokens: int, probe_tokens: int) -> list[Step]:
    """`families/retrieval.py`: each trial decoded with the cache (1 prefill + G - 1 steps, recorded);
    echo/induction and the detectors on the repeated probe; then one batched sweep of the causal checks
    per trial: U conditions (base, each evidence head and control, the top-k and random sets, every KV
    budget ranked and random; `check_conditions`), one per batch row, R rows per pass, teacher-forced."""
    from workbench.families.retrieval import check_conditions

    t = n_trials
    u = check_conditions(cfg, geo.n_total_heads, geo.n_layers * geo.n_kv_heads)
    n = context + 1
    r = max(1, min(int(cfg.check_batch), int(cfg.check_batch_tokens) // max(n, 1)))
    return [
        Step(
            "retrieval",
            "retrieval score: cached decoding",
            t,
            context,
            decode_steps=t * max(0, new_tokens - 1),
            decode_context=context + new_tokens // 2,
        ),
        Step("retrieval", "echo/induction + detectors", 2, probe_tokens),
        Step(
            "retrieval",
            f"needle outcomes: {u} conditions (base, heads, controls, top vs random, KV budgets), one per row",
            t * math.ceil(u / r),
            n,
            batch=r,
            note="equal conditions run once (fewer passes)",
        ),
    ]


def safety_steps(
    geo: PlanGeometry, cfg: Any, n_requests: int, n_benign: int, request_tokens: int, new_tokens: int, length_groups: int
) -> list[Step]:
    """`families/safety.py` (one part): one sweep of (head, request) rows, R = ``max_rows`` per pass in
    right-padded ragged batches, gives Ships and Sahara's first step; Sahara's later steps are one
    sweep each over the heads not yet chosen; then every ASR condition (each tested head, each control,
    base, top-per-query, random-per-query, the Sahara group) as cached generations of (condition,
    request) rows sharing batches within each request length, and the benign set."""
    lh, g, q = geo.n_total_heads, length_groups, n_requests
    r = max(1, int(getattr(cfg, "max_rows", 64)))
    k = lh if cfg.asr_heads < 0 else min(cfg.asr_heads, lh)
    conditions = k + cfg.asr_controls + 4
    sweeps = math.ceil(q / r) + sum(math.ceil((lh - s) * q / r) for s in range(min(cfg.max_group, lh)))
    per_group = max(1, math.ceil(q / max(g, 1)))
    gens = g * math.ceil(per_group * conditions / r)
    steps = [
        Step(
            "safety",
            f"Ships + Sahara ({cfg.max_group} greedy steps) over {lh} heads, (head, request) rows",
            sweeps,
            request_tokens,
            batch=min(r, lh * q),
            note="the base rows, then one sweep per Sahara step",
        ),
        Step(
            "safety",
            f"ASR generations: {k} heads + {cfg.asr_controls} controls + 4 conditions",
            gens,
            request_tokens,
            batch=min(r, per_group * conditions),
            decode_steps=gens * max(0, new_tokens - 1),
            decode_context=request_tokens + new_tokens // 2,
            note="rows batched within a request length; a repeated (request, heads) row runs once",
        ),
    ]
    if n_benign:
        per_benign = max(1, math.ceil(n_benign / max(g, 1)))
        b = g * math.ceil(per_benign / r)
        steps.append(
            Step(
                "safety",
                "benign refusals",
                b,
                request_tokens,
                batch=min(r, per_benign),
                decode_steps=b * max(0, new_tokens - 1),
                decode_context=request_tokens + new_tokens // 2,
            )
        )
    return steps


def temporal_steps(
    cfg: Any, n_prompts: int, n_tokens: int, periodic: bool, repeated_tokens: int, tappa_passes: int = 0
) -> list[Step]:
    """`families/temporal.py`: one recorded pass (queries and keys kept) per prompt, per periodic prompt
    (a model with a periodic set), per repeated random sequence; TAPPA's budget decision when the model
    has a needle task."""
    steps = [Step("temporal", "record text prompts", n_prompts, n_tokens)]
    if periodic:
        steps.append(Step("temporal", "record periodic prompts", cfg.n_periodic, min(cfg.periodic_tokens, n_tokens)))
    if repeated_tokens:
        steps.append(Step("temporal", "record repeated sequences", cfg.n_repeated, repeated_tokens))
    if tappa_passes:
        steps.append(Step("temporal", "TAPPA budget decision", tappa_passes, n_tokens))
    return steps


# -- what a pass costs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PassCost:
    """``t(n) = overhead + a * n + b * n^2`` seconds for a prefill of n tokens (one row)."""

    overhead: float
    per_token: float
    per_token_sq: float
    source: str

    def prefill(self, n: int, batch: int = 1) -> float:
        return self.overhead + batch * (self.per_token * n + self.per_token_sq * n * n)

    def decode(self, context: int, batch: int = 1) -> float:
        return self.overhead + batch * (self.per_token + 2 * self.per_token_sq * context)


#: the issue's stated H200 assumptions: bf16 dense peak, 50% of it for the matmuls, 35% for the Triton
#: attention kernels (not measured yet), 50 ms of host time per bridge pass
H200 = {"peak_flops": 989e12, "matmul_efficiency": 0.5, "attention_efficiency": 0.35, "overhead_s": 0.05, "memory_bytes": 141e9}


def assumed_costs(geo: PlanGeometry, device: dict[str, float] = H200) -> tuple[PassCost, list[str]]:
    """Cost coefficients from FLOPs: 2 * params per token (the matmuls), 2 * L * H * d * n^2 for causal
    attention (QK^T and PV, half the square each)."""
    a = 2 * geo.n_params / (device["peak_flops"] * device["matmul_efficiency"])
    b = 2 * geo.n_layers * geo.n_heads * geo.d_head / (device["peak_flops"] * device["attention_efficiency"])
    notes = [
        f"peak {device['peak_flops'] / 1e12:.0f} TFLOP/s; matmuls at {device['matmul_efficiency']:.0%}, "
        f"attention kernels at {device['attention_efficiency']:.0%} (Triton, not yet measured on a GPU)",
        f"{device['overhead_s'] * 1e3:.0f} ms of host time per bridge pass",
        f"{geo.n_params / 1e9:.2f}B non-embedding parameters, {geo.n_layers} layers x {geo.n_heads} heads x d {geo.d_head}",
    ]
    return PassCost(device["overhead_s"], a, b, "assumed"), notes


def measure_costs(model: Model, n_tokens: int = 256) -> tuple[PassCost, list[str]]:
    """Fit the cost coefficients from three recorded passes of this model on its device (1, n/2 and n
    tokens, after a warm-up), so the plan prices passes as this machine runs them."""
    import torch

    from workbench.record import AttentionRecorder

    def timed(n: int) -> float:
        ids = torch.randint(0, model.geometry.vocab_size, (1, n), device=model.device)
        with AttentionRecorder(model, columns=False, layers=()), torch.no_grad():
            model.bridge(ids)  # warm-up (and the self-check, once)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.bridge(ids)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start

    half = max(2, n_tokens // 2)
    t1, th, tn = timed(1), timed(half), timed(n_tokens)
    # t(n) - t(1) = a (n - 1) + b (n^2 - 1): two equations for a, b
    x1, y1 = half - 1, half * half - 1
    x2, y2 = n_tokens - 1, n_tokens * n_tokens - 1
    r1, r2 = max(th - t1, 0.0), max(tn - t1, 0.0)
    det = x1 * y2 - x2 * y1
    b = max((x1 * r2 - x2 * r1) / det, 0.0) if det else 0.0
    a = max((r1 - b * y1) / x1, 0.0) if x1 else 0.0
    notes = [
        f"measured on {model.device}: {t1 * 1e3:.1f} ms at 1 token, {th * 1e3:.1f} ms at {half}, {tn * 1e3:.1f} ms at {n_tokens}"
    ]
    return PassCost(t1, a, b, f"measured ({model.device})"), notes


def price(steps: list[Step], cost: PassCost) -> list[Step]:
    for s in steps:
        s.seconds = s.passes * cost.prefill(s.tokens, s.batch)
        if s.decode_steps:
            s.seconds += s.decode_steps * cost.decode(s.decode_context, 1 if s.batch < 1 else s.batch)
    return steps


def peak_memory(geo: PlanGeometry, n_tokens: int, chunk: int = 256) -> float:
    """Bytes at the longest pass: weights, the KV cache of one row, the recorder's per-query statistics
    (6 floats per head and query) and the column sums, and the chunked kernel's scores (chunk x N)."""
    weights = (geo.n_params + 2 * geo.vocab * geo.d_model) * geo.bytes_per_param  # embeddings and unembedding
    kv = 2 * geo.n_layers * geo.n_kv_heads * geo.d_head * n_tokens * geo.bytes_per_param
    stats = geo.n_total_heads * n_tokens * (6 * 4 + 8 + 4)
    scores = 2 * geo.n_heads * chunk * n_tokens * 4
    residual = 4 * n_tokens * geo.d_model * 4  # a few activations of the whole sequence
    return weights + kv + stats + scores + residual


# -- the whole atlas ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """The sizes the families run at (the atlas's options resolved for one model)."""

    n_tokens: int = 256  # --max-tokens: prompts, needle contexts
    n_prompts: int | None = None  # --n-prompts (None: each family's default)
    request_tokens: int = 40  # a templated harmful request
    length_groups: int = 9  # distinct request lengths (one batch each; the shipped set has 9)
    n_benign: int = 40
    safety_new_tokens: int = 128
    needle_new_tokens: int = 50  # text needles: up to 50 tokens to the newline (the reference)
    n_ctx: int = 0  # the model's context (0: unknown, nothing is cut)


def atlas_steps(geo: PlanGeometry, families: list[str], options: dict[str, dict[str, Any]], work: Workload) -> list[Step]:
    """Every family's steps at the family defaults (overridden by ``options``, as ``--set`` does)."""
    from workbench.families.registry import build_family

    steps: list[Step] = []
    n = work.n_tokens
    for name in families:
        cfg = build_family(name, options.get(name)).config
        if name == "sinks":
            steps += sinks_steps(geo, cfg, work.n_prompts or 8, n)
        elif name == "retrieval":
            from workbench.families.retrieval import fit_needle_context

            context = fit_needle_context(cfg.context, n, work.n_ctx, work.needle_new_tokens)[0] - 1
            probe = 1 + min(cfg.segment, max(8, (n - 1) // cfg.repeats)) * cfg.repeats
            steps += retrieval_steps(geo, cfg, work.n_prompts or cfg.n_trials, context, work.needle_new_tokens, probe)
        elif name == "safety":
            requests = work.n_prompts or cfg.n_prompts
            groups = min(work.length_groups, requests)  # at most one batch per request
            steps += safety_steps(geo, cfg, requests, work.n_benign, work.request_tokens, work.safety_new_tokens, groups)
        elif name == "temporal":
            rep = min(cfg.repeat_len, cfg.max_offset - 1, (n - 1) // 2)
            steps += temporal_steps(cfg, work.n_prompts or cfg.n_prompts, n, False, 2 * rep + 1 if rep >= 4 else 0)
    return steps


def plan_atlas(
    geo: PlanGeometry,
    families: list[str],
    cost: PassCost,
    notes: list[str],
    options: dict[str, dict[str, Any]] | None = None,
    work: Workload = Workload(),
    device: str = "",
) -> Plan:
    steps = price(atlas_steps(geo, families, options or {}, work), cost)
    return Plan(steps, device or cost.source, list(notes), peak_memory(geo, work.n_tokens))
