"""The Nexmark benchmark's queries, written with rheostat's public API.

``QUERIES`` maps a name (``"q0"`` ... ``"q11"``) to its :class:`~.common.Query`: the flow
(see the modules :mod:`.stateless`, :mod:`.joins`, :mod:`.winning_bids` and
:mod:`.windows`), the same query in DuckDB SQL, and what to compare. :mod:`.runner` runs
them and measures them; :mod:`.reference` runs the SQL.

>>> sorted(QUERIES, key=lambda q: int(q[1:]))
['q0', 'q1', 'q2', 'q3', 'q4', 'q5', 'q7', 'q8', 'q11']
"""

from rheostat.bench.nexmark import joins, stateless, windows, winning_bids
from rheostat.bench.nexmark.common import NexmarkConfig, Query, build_flow

QUERIES: dict[str, Query] = {
    q.name: q
    for module in (stateless, joins, winning_bids, windows)
    for q in module.QUERIES
}
ORDER = ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "q11"]

__all__ = ["ORDER", "QUERIES", "NexmarkConfig", "Query", "build_flow"]
