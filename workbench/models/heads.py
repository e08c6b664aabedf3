"""Head addressing, parsed in one place.

A head is written ``L5H3`` (layer 5, query head 3) or given as a ``(layer, head)`` tuple.
Lists are comma separated: ``L0H1,L2H3``. ``L2`` alone means every head of layer 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from workbench.errors import HeadIndexError

_HEAD_RE = re.compile(r"^\s*[Ll](\d+)\s*(?:[Hh](\d+))?\s*$")


class Head(NamedTuple):
    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"


HeadLike = Head | tuple[int, int] | str


def parse_head(spec: HeadLike, n_layers: int | None = None, n_heads: int | None = None) -> Head:
    """Parse one head address and, when the geometry is given, check it is in range."""
    if isinstance(spec, str):
        m = _HEAD_RE.match(spec)
        if m is None or m.group(2) is None:
            raise HeadIndexError(
                f"cannot read head address {spec!r}",
                "write a head as L<layer>H<head>, for example L5H3 (both count from 0)",
            )
        head = Head(int(m.group(1)), int(m.group(2)))
    else:
        try:
            layer, h = spec
            head = Head(int(layer), int(h))
        except (TypeError, ValueError) as exc:
            raise HeadIndexError(
                f"cannot read head address {spec!r}", "give a (layer, head) pair of integers or a string like L5H3"
            ) from exc
    _check_range(head, n_layers, n_heads)
    return head


def parse_heads(spec: str | Iterable[HeadLike], n_layers: int | None = None, n_heads: int | None = None) -> list[Head]:
    """Parse a list of heads (``"L0H1,L2H3"``, ``"L2"`` for a whole layer, or an iterable)."""
    items: Iterable[HeadLike]
    if isinstance(spec, str):
        items = [s for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    out: list[Head] = []
    for item in items:
        if isinstance(item, str):
            m = _HEAD_RE.match(item)
            if m is not None and m.group(2) is None:
                if n_heads is None:
                    raise HeadIndexError(
                        f"{item!r} names a whole layer but the number of heads is unknown",
                        "name single heads (L2H0,L2H1) or pass the model's geometry",
                    )
                layer = int(m.group(1))
                _check_range(Head(layer, 0), n_layers, n_heads)
                out.extend(Head(layer, h) for h in range(n_heads))
                continue
        out.append(parse_head(item, n_layers, n_heads))
    # Keep the order the user gave but drop repeats.
    return list(dict.fromkeys(out))


def _check_range(head: Head, n_layers: int | None, n_heads: int | None) -> None:
    if n_layers is not None and not 0 <= head.layer < n_layers:
        raise HeadIndexError(
            f"layer {head.layer} in {head} is out of range: the model has {n_layers} layers",
            f"use a layer between 0 and {n_layers - 1}",
        )
    if n_heads is not None and not 0 <= head.head < n_heads:
        raise HeadIndexError(
            f"head {head.head} in {head} is out of range: each layer has {n_heads} query heads",
            f"use a head between 0 and {n_heads - 1}",
        )
