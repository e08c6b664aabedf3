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


#: bridge attribute set while the instrumented core's self-check runs the model's own attention
SELF_CHECK_ATTR = "_workbench_self_check"


def edits_paused(bridge: Any) -> bool:
    """True while the self-check runs: hooks that edit the eager scores or pattern must then leave them
    alone, or the check would compare the edited eager attention with the unedited core."""
    return bool(bridge.__dict__.get(SELF_CHECK_ATTR, False))
