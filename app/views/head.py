"""One head: its scores across families, sink tokens, temporal class with the spectral plot, and
the ablation evidence that mentions it (the live pattern and token views are in `live_views`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.app import blocks as B
from workbench.app import figures as AF
from workbench.app.data import family_artefacts, find_artefact, head_score_rows, mentions, scalars
from workbench.app.views.atlas import class_blocks, run_header
from workbench.report import figures as F


def _sink_section(label: str, layer: int, head: int, artefacts: dict[str, dict[str, Any]], score_rows: list[dict]) -> Any:
    blocks: list[Any] = []
    tables = [(fam, find_artefact(arts, "sink_tokens")) for fam, arts in artefacts.items()]
    tables = [(fam, t) for fam, t in tables if isinstance(t, list)]
    mass = next((r["value"] for r in score_rows if r["metric"] == "first_token_mass"), None)
    if mass is not None:
        blocks.append(B.Text(f"first-token mass of {label}: {B.fmt(mass)}"))
    if not tables:
        blocks.append(B.Text("No sink-token table in this run (run the sinks family to get one).", muted=True))
        return B.Section("Sink tokens", blocks, name="sinks")
    for fam, rows in tables:
        mine = [r for r in rows if r.get("layer") == layer and r.get("head") == head]
        mine.sort(key=lambda r: -(r.get("mean_received") or 0.0))
        if mine:
            blocks.append(
                B.Text(f"{len(mine)} sink token(s) of {label} ({fam}): positions where it parks attention.", muted=True)
            )
            blocks.append(B.Table(mine[:50], ["prompt", "position", "token", "kind", "mean_received"], name="sink-tokens"))
        else:
            blocks.append(B.Text(f"{label} has no sink tokens in the {fam} family's prompts.", muted=True))
    return B.Section("Sink tokens", blocks, name="sinks")


def _class_maps(family: str, rows: list[dict[str, Any]], layer: int, head: int, n_layers: int, n_heads: int) -> list[Any]:
    """The family's temporal class maps (the category colours every figure uses), this head outlined."""
    blocks = class_blocks(family, rows, n_layers, n_heads)
    for block in blocks:
        for fig_block in getattr(block, "blocks", []):
            if isinstance(fig_block, B.Figure):
                fig_block.fig.add_shape(
                    type="rect",
                    x0=head - 0.5,
                    x1=head + 0.5,
                    y0=layer - 0.5,
                    y1=layer + 0.5,
                    line={"color": "#111827", "width": 3},
                )
    return blocks


def _temporal_section(
    label: str, layer: int, head: int, artefacts: dict[str, dict[str, Any]], n_layers: int = 0, n_heads: int = 0
) -> Any:
    from workbench.analysis.temporal import transfer_function

    blocks: list[Any] = []
    found = False
    for arts in artefacts.values():
        classes = find_artefact(arts, "temporal_classes")
        profiles = find_artefact(arts, "offset_profiles")
        shares = find_artefact(arts, "rope_channel_shares")
        periods = find_artefact(arts, "rope_periods")
        if classes is None and profiles is None:
            continue
        found = True
        if isinstance(classes, list):
            mine = [r for r in classes if r.get("layer") == layer and r.get("head") == head]
            if mine:
                cols = [
                    c
                    for c in ["input", "label", "confidence", "offset", "period", "rope_channel", "rope_period", "rope_share"]
                    if any(c in r for r in mine)
                ]
                main = mine[0]
                blocks.append(
                    B.Text(
                        f"{label} is {main.get('label', '?')} (confidence {B.fmt(main.get('confidence'))}) "
                        f"on {main.get('input', 'text')}."
                    )
                )
                blocks.append(B.Table(mine, cols, name="temporal-class"))
            if n_layers and n_heads:
                fam = next((f for f, arts in artefacts.items() if find_artefact(arts, "temporal_classes") is classes), "")
                blocks += _class_maps(fam, classes, layer, head, n_layers, n_heads)
        if isinstance(profiles, np.ndarray) and profiles.ndim == 3 and layer < profiles.shape[0] and head < profiles.shape[1]:
            profile = profiles[layer, head]
            omega, mag, phase = transfer_function(profile)
            blocks.append(
                B.Grid(
                    [
                        B.Figure(AF.offset_profile_figure(profile, f"{label}: mean attention by offset"), "offset-profile"),
                        B.Figure(
                            AF.spectrum_figure(omega, mag, phase, f"{label}: offset profile as a filter (Bode plot)"), "spectrum"
                        ),
                    ]
                )
            )
        if isinstance(shares, np.ndarray) and shares.ndim == 3 and layer < shares.shape[0]:
            per = periods if isinstance(periods, np.ndarray) else None
            if per is not None and per.ndim == 2:  # [L, pairs] since per-layer frequencies; older runs [pairs]
                per = per[layer] if layer < per.shape[0] else None
            blocks.append(
                B.Figure(AF.rope_share_figure(shares[layer, head], per, f"{label}: RoPE channel shares"), "rope-shares")
            )
    if not found:
        blocks.append(
            B.Text("No temporal results in this run (run the temporal family to get the class and spectrum).", muted=True)
        )
    return B.Section("Temporal class and spectrum", blocks, name="temporal")


def _evidence_section(
    label: str, layer: int, head: int, store: Any, run_id: str, artefacts: dict[str, dict[str, Any]], score_rows: list[dict]
) -> Any:
    blocks: list[Any] = []
    fams = store.families(run_id)
    evidence = []
    for fam in fams:
        if fam.evidence_metric:
            row = next((r for r in score_rows if r["family"] == fam.family and r["metric"] == fam.evidence_metric), None)
            if row is not None:
                evidence.append(
                    {
                        "family": fam.family,
                        "check": fam.evidence_metric,
                        "value": row["value"],
                        "rank": row["rank"],
                        "what it measures": row["description"],
                    }
                )
    if evidence:
        blocks.append(
            B.Text(f"Causal checks scored per head (NaN / – means {label} was not among the heads checked):", muted=True)
        )
        blocks.append(B.Table(evidence, name="evidence"))
    claimed = [fam.family for fam in fams if (layer, head) in [tuple(m) for m in fam.members]]
    blocks.append(B.Text(f"Families that claim {label}: {', '.join(claimed) or 'none'}."))
    for fam, arts in artefacts.items():
        for name, value in arts.items():
            if not isinstance(value, dict):
                continue
            where = mentions(value, label)
            if where:
                blocks.append(B.Heading(f"{fam} / {name} (mentions {label} in {', '.join(where[:4])})", 4))
                drawn = F.causal_figures(fam, {name: value})
                if drawn:  # a causal check: drawn with its control, never as raw lists
                    for key, fig, warning in drawn:
                        if warning:
                            blocks.append(B.Notice(warning, "warn"))
                        blocks.append(B.Figure(fig, f"evidence-{fam}-{key}".replace("/", "-")))
                    continue
                blocks.append(
                    B.Table(
                        [{"key": k, "value": v} for k, v in scalars(value).items()],
                        ["key", "value"],
                        name=f"evidence-{fam}-{name}".replace("/", "-"),
                    )
                )
    if not evidence and len(blocks) == 1:
        blocks.append(B.Text("No ablation evidence in this run mentions this head.", muted=True))
    return B.Section("Ablation evidence", blocks, name="evidence")


def _role_section(store: Any, run_id: str, label: str, score_rows: list[dict]) -> Any:
    """What the head does and how sure we are, first on the page: its roles, the score behind each,
    every causal check with baseline, control and p-values, and the verdict (`build_findings`, the
    same reading as the run page's findings and the report)."""
    from workbench.report.findings import build_findings

    blocks: list[Any] = []
    try:
        found = build_findings(store, run_id)
    except Exception as exc:  # a damaged artefact must not hide the scores below
        return B.Section(
            f"What {label} does", [B.Notice(f"the findings cannot be built ({type(exc).__name__}: {exc})", "warn")], name="role"
        )
    mine = next((h for h in found.heads if h.head == label), None)
    if mine is None:
        blocks.append(B.Text(f"No family claims {label}: no role, so no verdict."))
        primary = [r for r in score_rows if r["role"] == "primary"]
        if primary:
            blocks.append(B.Text("Its primary scores (rank among the run's heads):", muted=True))
            blocks.append(B.Table(primary, ["family", "metric", "value", "rank"], name="role-primary"))
        return B.Section(f"What {label} does", blocks, name="role")
    roles = ", ".join(mine.roles) or "none"
    blocks.append(B.Text(f"Role: {roles} · verdict: {mine.verdict}"))
    if mine.scores:
        blocks.append(B.Text("Scores behind the roles: " + "; ".join(mine.scores), muted=True))
    rows = [
        {
            "role": e.role,
            "causal check": e.check,
            "baseline -> ablated (control mean ± spread)": e.effect(),
            "n, p-value (corrected)": e.statistics(),
            "verdict": e.verdict + (f" ({e.reason})" if e.reason else ""),
        }
        for e in mine.evidence
    ]
    if rows:
        blocks.append(B.Table(rows, list(rows[0]), name="role-evidence"))
    else:
        blocks.append(B.Text("No causal check ran for this head.", muted=True))
    blocks += [B.Notice(note, "info") for note in mine.notes]
    return B.Section(f"What {label} does", blocks, name="role")


def head_blocks(store: Any, run_id: str, layer: int, head: int) -> list[Any]:
    """The head page's store-backed part: its roles, verdicts and causal evidence first, then every
    score, then the family details (sinks, temporal, the ablation artefacts that mention it)."""
    info = store.run(run_id)
    label = f"L{layer}H{head}"
    out = run_header(info)
    rows = head_score_rows(store, info.run_id, layer, head)
    out.append(_role_section(store, info.run_id, label, rows))
    scores_blocks: list[Any] = []
    if rows:
        scores_blocks.append(B.Table(rows, ["family", "metric", "value", "rank", "role", "description"], name="head-scores"))
    else:
        scores_blocks.append(B.Text("No family of this run has finished yet.", muted=True))
    out.append(B.Section(f"Scores of {label} across families", scores_blocks, name="scores"))
    artefacts: dict[str, dict[str, Any]] = {}
    for fam in store.families(info.run_id):
        if fam.status == "done":
            arts, problem = family_artefacts(store, info.run_id, fam.family)
            artefacts[fam.family] = arts
            if problem:
                out.append(B.Notice(problem, "warn"))
    out.append(_sink_section(label, layer, head, artefacts, rows))
    out.append(_temporal_section(label, layer, head, artefacts, info.n_layers or 0, info.n_heads or 0))
    out.append(_evidence_section(label, layer, head, store, info.run_id, artefacts, rows))
    return out
