"""Routers split whole batches by destination without losing or duplicating rows."""

import numpy as np
import pyarrow as pa

from rheostat.plan.keygroups import default_owners
from rheostat.plan.logical import Routing
from rheostat.runtime.keys import key_groups
from rheostat.runtime.routing import HashRouter, make_router


def test_hash_router_sends_each_row_to_the_owner_of_its_key_group():
    owners = default_owners(3, 128)
    router = HashRouter(("k",), owners, 128)
    batch = pa.record_batch({"k": np.arange(1000) % 97, "v": np.arange(1000)})
    parts = router.route(batch)
    seen = []
    for dest, part in parts:
        groups = key_groups(part, ("k",), 128)
        assert all(owners[g] == dest for g in groups)
        seen += part.column("v").to_pylist()
    assert sorted(seen) == list(range(1000))


def test_hash_router_keeps_arrival_order_within_a_destination():
    router = HashRouter(("k",), default_owners(2, 16), 16)
    batch = pa.record_batch({"k": [5, 9, 5, 9, 5], "v": [0, 1, 2, 3, 4]})
    for _, part in router.route(batch):
        v = part.column("v").to_pylist()
        assert v == sorted(v)


def test_owner_table_can_be_replaced_at_run_time():
    router = HashRouter(("k",), [0] * 8, 8)
    batch = pa.record_batch({"k": list(range(50))})
    assert [d for d, _ in router.route(batch)] == [0]
    router.set_owners([1] * 8)
    assert [d for d, _ in router.route(batch)] == [1]


def test_rebalance_round_robins_and_broadcast_copies():
    batch = pa.record_batch({"x": [1]})
    rebalance = make_router(Routing("rebalance"), 1, 3, None, 8)
    assert [rebalance.route(batch)[0][0] for _ in range(4)] == [1, 2, 0, 1]
    broadcast = make_router(Routing("broadcast"), 0, 3, None, 8)
    assert [d for d, _ in broadcast.route(batch)] == [0, 1, 2]


def test_empty_batch_routes_nowhere():
    router = HashRouter(("k",), [0, 1], 2)
    assert router.route(pa.record_batch({"k": pa.array([], pa.int64())})) == []
