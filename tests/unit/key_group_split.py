"""Test helper: replay events into two operators that each own half of the key groups."""

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from rheostat.runtime.keys import key_groups


def feed_split_by_parity(
    events: list[tuple[str, Any]], even: Any, odd: Any,
    run: Callable[..., Any], max_parallelism: int, keys: tuple[str, ...] = ("k",),
) -> None:
    """Watermarks (``"W"``) go to both operators; each batch's rows go to the operator
    owning their key group (even groups to ``even``, odd to ``odd``)."""
    for kind, item in events:
        if kind == "W":
            run(even, [(kind, item)], end=False)
            run(odd, [(kind, item)], end=False)
            continue
        groups = key_groups(item, keys, max_parallelism)
        for op, parity in ((even, 0), (odd, 1)):
            part = item.filter(pa.array(groups % 2 == parity))
            if part.num_rows:
                run(op, [(kind, part)], end=False)
