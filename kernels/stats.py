"""The statistics container shared by every backend, and helpers to merge query chunks.

All per-query tensors are ``[B, Hq, Nq]``; per-key tensors are ``[B, Hq, Nk]``; the pooled map is
``[B, Hq, ceil(Nq / pool), ceil(Nk / pool)]`` with *query* blocks counted from the first query of the
call (local index) and *key* blocks counted from key 0 (keys always carry absolute indices).

Chunked prefill: calling ``attention_with_stats`` once per query chunk (with ``q_offset``) and merging
the chunks with :func:`merge_stats` (or :class:`StatsAccumulator`) gives the same statistics as one call
over all queries, provided every chunk offset is a multiple of ``pool`` (so that local query blocks line
up with global ones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = ["AttentionStats", "StatsAccumulator", "merge_stats", "column_count"]


def column_count(
    n_queries: int,
    n_keys: int,
    *,
    causal: bool,
    q_offset: int = 0,
    device=None,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Number of queries (positions ``q_offset .. q_offset + n_queries - 1``) that can see each key.

    Causal: key ``j`` is visible to query ``i`` when ``j <= q_offset + i``, so the count is
    ``clamp(q_offset + n_queries - j, 0, n_queries)``. With a sliding window ``W`` the key is also
    invisible from query ``j + W`` on, so the visible queries are ``max(j, q_offset) .. min(j + W,
    q_offset + n_queries) - 1``. Non-causal: every query sees every key. Returns int64 ``[n_keys]``.
    """
    j = torch.arange(n_keys, device=device, dtype=torch.int64)
    if not causal:
        return torch.full_like(j, n_queries)
    end = torch.full_like(j, q_offset + n_queries)
    if sliding_window is not None:
        end = torch.minimum(end, j + int(sliding_window))
    return (end - torch.clamp(j, min=q_offset)).clamp(min=0, max=n_queries)


@dataclass
class AttentionStats:
    """Per-head attention statistics from one ``attention_with_stats`` call (or merged chunks).

    Float tensors are float32; ``argmax`` is int64 (earliest key on ties).
    ``col_sum``, ``col_max`` and ``pooled`` are ``None`` when the call used ``columns=False``.
    """

    lse: torch.Tensor  # [B, Hq, Nq] natural-log logsumexp of the scaled, masked scores
    entropy: torch.Tensor  # [B, Hq, Nq] nats
    argmax: torch.Tensor  # [B, Hq, Nq] int64 key index
    pmax: torch.Tensor  # [B, Hq, Nq] probability of the argmax key
    first_k_mass: torch.Tensor  # [B, Hq, Nq] mass on keys j < first_k
    window_mass: torch.Tensor  # [B, Hq, Nq] mass on keys q_pos - window < j <= q_pos
    col_sum: torch.Tensor | None  # [B, Hq, Nk] attention received per key (sum over queries)
    col_max: torch.Tensor | None  # [B, Hq, Nk] max over queries of the probability on the key
    pooled: torch.Tensor | None  # [B, Hq, ceil(Nq/pool), ceil(Nk/pool)] block sums of p
    # metadata needed to interpret and merge the tensors
    n_keys: int = 0
    q_offset: int = 0
    causal: bool = True
    first_k: int = 1
    window: int = 16
    pool: int = 64
    sliding_window: int | None = None  # query i saw only keys i - W < j <= i (None: every earlier key)
    softcap: float | None = None  # scores were softcap * tanh(scores / softcap) before the softmax

    @property
    def n_queries(self) -> int:
        return int(self.lse.shape[-1])

    @property
    def col_count(self) -> torch.Tensor:
        """int64 ``[Nk]``: how many of the covered queries can see each key (the divisor of the mean)."""
        return column_count(
            self.n_queries,
            self.n_keys,
            causal=self.causal,
            q_offset=self.q_offset,
            device=self.lse.device,
            sliding_window=self.sliding_window,
        )

    @property
    def col_mean(self) -> torch.Tensor | None:
        """``[B, Hq, Nk]`` mean attention received per key over the queries that can see it (0 if none)."""
        if self.col_sum is None:
            return None
        count = self.col_count.to(self.col_sum.dtype)
        return torch.where(count > 0, self.col_sum / count.clamp(min=1), torch.zeros_like(self.col_sum))

    def _map(self, fn) -> AttentionStats:
        changes = {}
        for f in dataclasses.fields(self):
            val = getattr(self, f.name)
            if isinstance(val, torch.Tensor):
                changes[f.name] = fn(val)
        return dataclasses.replace(self, **changes)

    def to(self, device) -> AttentionStats:
        return self._map(lambda t: t.to(device))

    def cpu(self) -> AttentionStats:
        return self.to("cpu")


class StatsAccumulator:
    """Accumulates :class:`AttentionStats` from consecutive query chunks of one sequence.

    Usage::

        acc = StatsAccumulator()
        for start in range(0, n, chunk):
            _, st = attention_with_stats(q[..., start:start+chunk, :], k[..., :start+chunk, :], ...,
                                         q_offset=start)
            acc.add(st)
        stats = acc.result()

    Per-query statistics are concatenated, column sums and pooled maps are added (zero-padded to the
    longest key range), column maxima are maxed. Chunks must be added in order and be contiguous
    (``q_offset`` of a chunk = previous ``q_offset`` + previous number of queries) and share
    ``causal``, ``first_k``, ``window`` and ``pool``. Pooled maps additionally need every chunk offset
    (relative to the first) to be a multiple of ``pool``.
    """

    def __init__(self) -> None:
        self._parts: list[AttentionStats] = []

    def add(self, stats: AttentionStats) -> None:
        if self._parts:
            prev = self._parts[-1]
            first = self._parts[0]
            expected = prev.q_offset + prev.n_queries
            if stats.q_offset != expected:
                raise ValueError(
                    f"chunks must be contiguous and in order: got q_offset={stats.q_offset}, expected "
                    f"{expected} (previous chunk q_offset={prev.q_offset} with {prev.n_queries} queries)"
                )
            for name in ("causal", "first_k", "window", "pool", "sliding_window", "softcap"):
                if getattr(stats, name) != getattr(first, name):
                    raise ValueError(f"chunks disagree on {name}: {getattr(first, name)!r} vs {getattr(stats, name)!r}")
            if (stats.col_sum is None) != (first.col_sum is None):
                raise ValueError("chunks disagree on columns=True/False")
            if stats.pooled is not None and (stats.q_offset - first.q_offset) % stats.pool != 0:
                raise ValueError(
                    f"cannot merge pooled maps: chunk q_offset={stats.q_offset} is not a multiple of "
                    f"pool={stats.pool} after the first chunk (offset {first.q_offset}); use query chunks "
                    f"whose length is a multiple of pool"
                )
            lead = tuple(stats.lse.shape[:2])
            if lead != tuple(first.lse.shape[:2]):
                raise ValueError(f"chunks disagree on [B, Hq]: {tuple(first.lse.shape[:2])} vs {lead}")
        self._parts.append(stats)

    def result(self) -> AttentionStats:
        if not self._parts:
            raise ValueError("no chunks were added")
        parts = self._parts
        first = parts[0]
        if len(parts) == 1:
            return first

        def cat(name: str) -> torch.Tensor:
            return torch.cat([getattr(p, name) for p in parts], dim=-1)

        n_keys = max(p.n_keys for p in parts)
        col_sum = col_max = pooled = None
        if first.col_sum is not None:
            b, h = first.lse.shape[:2]
            dev = first.lse.device
            col_sum = torch.zeros(b, h, n_keys, dtype=torch.float32, device=dev)
            col_max = torch.zeros(b, h, n_keys, dtype=torch.float32, device=dev)
            n_q = sum(p.n_queries for p in parts)
            pool = first.pool
            pooled = torch.zeros(b, h, -(-n_q // pool), -(-n_keys // pool), dtype=torch.float32, device=dev)
            for p in parts:
                # add() saw columns=True on every chunk, which fills all three column fields
                assert p.col_sum is not None and p.col_max is not None and p.pooled is not None
                nk = p.col_sum.shape[-1]
                col_sum[..., :nk] += p.col_sum
                col_max[..., :nk] = torch.maximum(col_max[..., :nk], p.col_max)
                r0 = (p.q_offset - first.q_offset) // pool
                nr, nc = p.pooled.shape[-2:]
                pooled[..., r0 : r0 + nr, :nc] += p.pooled
        return dataclasses.replace(
            first,
            lse=cat("lse"),
            entropy=cat("entropy"),
            argmax=cat("argmax"),
            pmax=cat("pmax"),
            first_k_mass=cat("first_k_mass"),
            window_mass=cat("window_mass"),
            col_sum=col_sum,
            col_max=col_max,
            pooled=pooled,
            n_keys=n_keys,
        )


def merge_stats(chunks: Iterable[AttentionStats]) -> AttentionStats:
    """Merge the statistics of consecutive query chunks of one sequence (see :class:`StatsAccumulator`)."""
    acc = StatsAccumulator()
    for st in chunks:
        acc.add(st)
    return acc.result()
