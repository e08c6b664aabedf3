"""Temporary TransformerLens hooks that are always removed, and only ours.

`bridge.hooks(...)` and `reset_hooks()` remove every hook at a level, which would also drop
a user's own hooks; this removes exactly the handles it added, also when an exception escapes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

HookFn = Callable[..., Any]


@contextlib.contextmanager
def temporary_hooks(points: Sequence[tuple[Any, HookFn]], prepend: bool = False) -> Iterator[None]:
    """Add ``fn`` to each TransformerLens ``HookPoint`` for the duration of the block."""
    added: list[tuple[Any, Any]] = []
    try:
        for point, fn in points:
            handle = point.add_hook(fn, prepend=prepend)
            added.append((point, handle))
        yield
    finally:
        for point, handle in reversed(added):
            remove_hook(point, handle)


def remove_hook(point: Any, handle: Any) -> None:
    handle.hook.remove()
    point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]
