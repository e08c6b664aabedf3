"""Attention patterns made small enough for a browser (pure numpy; no model here).

Short prompts (up to `FULL_LIMIT` tokens) are recorded with the eager backend, which keeps the
full N x N pattern; longer ones with the instrumented backend, which keeps only the block-pooled
map (sums of attention over query block x key block). Either way, what reaches the browser is at
most `MAX_SIDE` x `MAX_SIDE` cells of float32: block sums divided by the queries in the block, i.e.
the share of a query's attention that goes to each key block (every row sums to 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FULL_LIMIT = 1024  # tokens: eager recording with the full pattern kept
MAX_SIDE = 128  # cells per side sent to the browser
LABEL_LIMIT = 64  # token labels on the axes up to this many tokens
MIN_POOL = 64  # the recorder's pooled-map block for long prompts (triton needs a multiple of 16)


def recorder_pool(n_tokens: int, max_side: int = MAX_SIDE) -> int:
    """Pooled-map block size for a long prompt: a power of two >= MIN_POOL giving <= max_side blocks."""
    need = max(1, math.ceil(n_tokens / max_side))
    return max(MIN_POOL, 1 << (need - 1).bit_length())


def block_pool(sums: np.ndarray, factor: int) -> np.ndarray:
    """Sum-pool the last two axes by ``factor`` (zero-padded at the end)."""
    if factor <= 1:
        return sums
    *lead, nq, nk = sums.shape
    pq, pk = -(-nq // factor) * factor, -(-nk // factor) * factor
    padded = np.zeros((*lead, pq, pk), dtype=np.float64)
    padded[..., :nq, :nk] = sums
    return padded.reshape(*lead, pq // factor, factor, pk // factor, factor).sum(axis=(-3, -1))


@dataclass
class PatternGrid:
    """One head's pattern as the browser gets it."""

    values: np.ndarray  # [rows, cols] float32, NaN where no query of the row block sees the key block
    block: int  # tokens per cell (1 = the full pattern)
    n_tokens: int
    kind: str  # "full" or "pooled"
    source_block: int  # block size of the map this grid was made from (1 for a full pattern)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)


def _finish(sums: np.ndarray, block: int, n_tokens: int, kind: str, source_block: int) -> PatternGrid:
    nq = sums.shape[0]
    rows = np.array([min(block, n_tokens - i * block) for i in range(nq)], dtype=np.float64)
    share = sums / rows[:, None]
    qb = np.arange(nq)[:, None]
    kb = np.arange(sums.shape[1])[None, :]
    share = np.where(kb <= qb, share, np.nan)  # causal: later key blocks are never seen
    return PatternGrid(share.astype(np.float32), block, n_tokens, kind, source_block)


def grid_from_full(pattern: np.ndarray, max_side: int = MAX_SIDE) -> PatternGrid:
    """[N, N] probabilities -> the full grid (N <= max_side) or a block-pooled one."""
    n = int(pattern.shape[-1])
    factor = max(1, math.ceil(n / max_side))
    if factor == 1:
        vals = np.where(np.tril(np.ones((n, n), dtype=bool)), pattern, np.nan).astype(np.float32)
        return PatternGrid(vals, 1, n, "full", 1)
    return _finish(block_pool(pattern.astype(np.float64), factor), factor, n, "pooled", 1)


def grid_from_pooled(pooled: np.ndarray, pool: int, n_tokens: int, max_side: int = MAX_SIDE) -> PatternGrid:
    """The recorder's [nq_blocks, nk_blocks] block sums -> a grid of at most max_side per side."""
    nblocks = max(pooled.shape)
    factor = max(1, math.ceil(nblocks / max_side))
    sums = block_pool(pooled.astype(np.float64), factor)
    return _finish(sums, pool * factor, n_tokens, "pooled", pool)


def axis_labels(tokens: list[str], block: int) -> list[str]:
    """Unique axis labels: ``"12 tok"`` per token, or ``"1280–1407"`` per block."""
    n = len(tokens)
    if block == 1:
        return [f"{i} {tok.replace(chr(10), '⏎')}" for i, tok in enumerate(tokens)]
    out = []
    for start in range(0, n, block):
        end = min(n, start + block) - 1
        head = " ".join(t.replace("\n", "⏎") for t in tokens[start : start + 3])
        out.append(f"{start}–{end} {head[:24]}")
    return out


def label_position(label: str) -> int | None:
    """The query position a clicked axis label stands for (the last token of a block)."""
    first = str(label).split(" ", 1)[0]
    try:
        if "–" in first:
            return int(first.split("–")[1])
        return int(first)
    except ValueError:
        return None


def payload_cells(grid: PatternGrid) -> int:
    return int(grid.values.size)


def token_window(n_tokens: int, query: int, width: int = 300) -> tuple[int, int]:
    """[start, end) of the tokens shown in the token view: up to ``width`` tokens ending at the query
    (short prompts: all of them)."""
    if n_tokens <= width:
        return 0, n_tokens
    end = query + 1
    return max(0, end - width), end


def top_positions(row: np.ndarray, k: int = 10) -> list[int]:
    finite = np.where(np.isfinite(row), row, -np.inf)
    order = np.argsort(-finite, kind="stable")[:k]
    return [int(i) for i in order if np.isfinite(finite[i])]
