"""Blocks for the live views: a head's pattern, the token view, and the ablation playground."""

from __future__ import annotations

from typing import Any

from workbench.app import blocks as B
from workbench.app import figures as AF
from workbench.app import patterns as P


def pattern_blocks(entry: Any, layer: int, head: int, log_scale: bool = False) -> tuple[list[Any], dict[str, Any]]:
    """The pattern heatmap of one head and a line saying what it shows; also facts for tests/exports."""
    grid = entry.grid(head)
    labels = P.axis_labels(entry.tokens, grid.block)
    label = f"L{layer}H{head}"
    if grid.kind == "full":
        what = f"full pattern ({entry.n_tokens} x {entry.n_tokens})"
    elif grid.source_block == 1:
        what = f"pooled from the full pattern: blocks of {grid.block} tokens ({grid.shape[0]} x {grid.shape[1]} cells)"
    else:
        what = (
            f"pooled map from the recorder: blocks of {grid.block} tokens ({grid.shape[0]} x {grid.shape[1]} cells; "
            f"recorded with blocks of {grid.source_block})"
        )
    fig = AF.pattern_figure(grid, labels, f"{label}: attention on {entry.n_tokens} tokens", log_scale)
    info = {
        "kind": grid.kind,
        "block": grid.block,
        "cells": P.payload_cells(grid),
        "rows": grid.shape[0],
        "cols": grid.shape[1],
        "n_tokens": entry.n_tokens,
        "seconds": entry.seconds,
        "backend": entry.backend,
    }
    text = f"{entry.n_tokens} tokens · {what} · recorded in {entry.seconds:.1f} s ({entry.backend} backend)." + (
        "" if grid.block == 1 else " Each cell: the share of a query's attention that goes to the key block."
    )
    blocks: list[Any] = [B.Text(text, muted=True)]
    blocks += [B.Notice(w, "warn") for w in entry.warnings]
    blocks.append(B.Figure(fig, "pattern", graph_id="pattern-graph"))
    return blocks, info


def token_blocks(entry: Any, layer: int, head: int, query: int) -> list[Any]:
    """The prompt coloured by the attention ``head`` gives from position ``query``."""
    row = entry.row(head, query)
    n = entry.n_tokens
    start, end = P.token_window(n, query)
    weights: list[float | None] = [float(row[i]) if i <= query else None for i in range(start, end)]
    label = f"L{layer}H{head}"
    shown = "all tokens" if (start, end) == (0, n) else f"tokens {start}–{end - 1} of {n}"
    out: list[Any] = [
        B.Text(
            f"Attention of {label} from position {query} ({entry.tokens[query]!r}); {shown}; darker = more attention. "
            "Tokens after the query are grey (it cannot see them).",
            muted=True,
        ),
        B.Tokens(entry.tokens[start:end], weights, list(range(start, end)), query - start, name="view"),
    ]
    top = P.top_positions(row, 10)
    out.append(
        B.Table(
            [{"position": i, "token": entry.tokens[i], "attention": float(row[i])} for i in top],
            ["position", "token", "attention"],
            name="top-keys",
        )
    )
    return out


def playground_blocks(result: dict[str, Any]) -> list[Any]:
    heads = ", ".join(result["heads"]) or "no heads"
    out: list[Any] = [
        B.Text(
            f"Ablated: {heads} ({result['mode']}) · prompt {result['n_prompt_tokens']} tokens · "
            f"computed in {result['seconds']:.2f} s ({result.get('attention', 'eager')} attention)",
            muted=True,
        ),
        B.Table(
            [
                {
                    "KL(without || with)": result["kl"],
                    "top token without": result["top1_without"],
                    "top token with": result["top1_with"],
                }
            ],
            name="play-summary",
        ),
        B.Figure(AF.next_token_figure(result["rows"], "Next-token distribution"), "next-token", graph_id="play-graph"),
        B.Table(result["rows"], ["token", "id", "p_without", "p_with", "change"], name="play-tokens"),
        B.Heading("Generated text (greedy)", 3),
        B.Text("without ablation:", muted=True),
        B.Text(result["text_without"] or "(nothing)"),
        B.Text("with ablation:", muted=True),
        B.Text(result["text_with"] or "(nothing)"),
    ]
    out[1:1] = [B.Notice(w, "warn") for w in result.get("warnings", [])]
    diverge = next((i for i, (a, b) in enumerate(zip(result["tokens_without"], result["tokens_with"])) if a != b), None)
    if diverge is not None:
        out.append(B.Text(f"The two continuations part at generated token {diverge}.", muted=True))
    elif result["tokens_without"]:
        out.append(B.Text("The two continuations are identical.", muted=True))
    return out
