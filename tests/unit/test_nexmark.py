"""The Nexmark generator: determinism, the spec's proportions and id logic, splits and replay."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from rheostat import sources
from rheostat.connectors import nexmark as nx

N = 20_000  # events; 1 event per ms below, so date_time - base is the event number
BASE = 1_000_000


def table(kind: str, events: int = N, **kwargs) -> pa.Table:
    kwargs = {"first_event_rate": 1000, "base_time_ms": BASE, **kwargs}
    return sources.nexmark(events, kind, **kwargs).to_table(batch_size=4096)


def event_numbers(t: pa.Table) -> np.ndarray:
    return t["date_time"].cast(pa.int64()).to_numpy() - BASE


def read_split(reader) -> list[pa.RecordBatch]:
    batches = []
    while (batch := reader.read()) is not None:
        batches.append(batch)
    return batches


@pytest.mark.parametrize("kind", ["bid", "person", "auction"])
def test_same_seed_same_data_other_seed_other_data(kind):
    assert table(kind).equals(table(kind))
    assert not table(kind).equals(table(kind, seed=1))


@pytest.mark.parametrize("kind", ["bid", "person", "auction"])
@pytest.mark.parametrize("extra_bytes", [8, None])
def test_chunks_made_alone_equal_the_whole(kind, extra_bytes):
    src = sources.nexmark(5_000, kind, extra_bytes=extra_bytes)
    whole = src.to_table(batch_size=1 << 16)
    assert whole.num_rows == nx.count_of(kind, 5_000)
    for batch_size in (1, 37, 1000):
        if batch_size == 1 and kind == "bid":
            continue  # slow, and covered by the other kinds
        assert src.to_table(batch_size=batch_size).equals(whole)


@pytest.mark.parametrize("kind", ["bid", "person", "auction"])
def test_schema_and_types(kind):
    t = table(kind, 2_000)
    assert t.schema == nx.SCHEMAS[kind] == sources.nexmark(1, kind).schema()
    assert t.schema.field("date_time").type == pa.timestamp("ms")
    assert t.column_names[-1] == "extra"


def test_proportions_1_3_46_and_event_types_from_n_mod_50():
    counts = {kind: table(kind).num_rows for kind in ("person", "auction", "bid")}
    assert counts == {"person": N // 50, "auction": 3 * N // 50, "bid": 46 * N // 50}
    assert (event_numbers(table("person")) % 50 == 0).all()
    assert set(event_numbers(table("auction")) % 50) == {1, 2, 3}
    assert set(event_numbers(table("bid")) % 50) == set(range(4, 50))
    for events in range(0, 160):  # counts for partial epochs too
        for kind, offsets in (("person", {0}), ("auction", {1, 2, 3}), ("bid", set(range(4, 50)))):
            assert nx.count_of(kind, events) == sum(n % 50 in offsets for n in range(events))


def test_ids_derive_from_the_event_number():
    people, auctions = table("person"), table("auction")
    assert people["id"].to_pylist() == list(range(1000, 1000 + N // 50))
    assert auctions["id"].to_pylist() == list(range(1000, 1000 + 3 * N // 50))
    n = event_numbers(auctions)
    assert (auctions["id"].to_numpy() - 1000 == n // 50 * 3 + n % 50 - 1).all()


def test_event_time_follows_the_rate():
    t = sources.nexmark(1000, "bid", first_event_rate=10_000_000, base_time_ms=5).to_table()
    assert t["date_time"].cast(pa.int64()).to_pylist() == [5] * t.num_rows  # 1000 events: 0.1 ms
    t = table("bid", 500, first_event_rate=100)  # 100 events/s: event n at n * 10 ms
    assert (t["date_time"].cast(pa.int64()).to_numpy() - BASE).tolist() == [
        n * 10 for n in range(500) if n % 50 >= 4
    ]


def test_bids_reference_existing_auctions_and_people_up_to_the_specs_leads():
    bids, auctions, people = table("bid"), table("auction"), table("person")
    n = event_numbers(bids)
    last_auction = n // 50 * 3 + 2  # a bid comes after its epoch's three auctions
    last_person = n // 50
    auction = bids["auction"].to_numpy() - 1000
    bidder = bids["bidder"].to_numpy() - 1000
    # Each auction is the hot one (the last id rounded down to a multiple of 100) or one of
    # the last 100 in flight, or up to 10 not created yet.
    hot = auction == last_auction // 100 * 100
    in_flight = (auction >= np.maximum(last_auction - nx.NUM_IN_FLIGHT_AUCTIONS, 0)) & (
        auction <= last_auction + nx.AUCTION_ID_LEAD
    )
    assert (hot | in_flight).all()
    assert 0.4 < hot.mean() < 0.6
    # Bidders: active people, a few ids ahead, or the hot bidder (block start + 1).
    assert (bidder >= 0).all() and (bidder <= last_person + nx.PERSON_ID_LEAD).all()
    # Only the spec's "lead" ids are not yet created; most references exist already.
    exists = np.isin(bids["auction"].to_numpy(), auctions["id"].to_numpy())
    assert exists.mean() > 0.9
    assert np.isin(bids["bidder"].to_numpy(), people["id"].to_numpy()).mean() > 0.9
    created_before = auction <= last_auction
    assert exists[created_before].all()


def test_auction_sellers_are_people_and_expire_later():
    auctions = table("auction")
    n = event_numbers(auctions)
    seller = auctions["seller"].to_numpy() - 1000
    assert (seller >= 0).all() and (seller <= n // 50 + nx.PERSON_ID_LEAD).all()
    assert (auctions["expires"].cast(pa.int64()).to_numpy()
            > auctions["date_time"].cast(pa.int64()).to_numpy()).all()
    assert (auctions["reserve"].to_numpy() > auctions["initial_bid"].to_numpy()).all()
    assert set(auctions["category"].to_pylist()) == set(range(10, 15))


def test_hot_auctions_bidders_and_sellers_are_skewed():
    bids = table("bid")
    auction = bids["auction"].to_numpy() - 1000
    bidder = bids["bidder"].to_numpy() - 1000
    # Hot ids: the last id rounded down to a multiple of 100 (+1 for bidders).
    assert 0.45 < (auction % 100 == 0).mean() < 0.6  # hot_auction_ratio 2: about half
    assert 0.7 < (bidder % 100 == 1).mean() < 0.8  # hot_bidders_ratio 4: about three quarters
    counts = np.bincount(auction)
    assert counts.max() > 20 * counts[counts > 0].mean()  # a hot auction gets far more bids
    sellers = table("auction")["seller"].to_numpy() - 1000
    assert 0.7 < (sellers % 100 == 0).mean() < 0.8
    cold = table("bid", hot_auction_ratio=1, hot_bidders_ratio=1)
    assert ((cold["auction"].to_numpy() - 1000) % 100 == 0).mean() < 0.1


def test_fields_look_like_the_spec():
    bids = table("bid", extra_bytes=None)
    price = bids["price"].to_numpy()
    assert price.min() >= 100 and price.max() <= 100_000_000
    lengths = np.array([len(s) for s in bids["extra"].to_pylist()])
    assert lengths.min() >= 54 and lengths.max() < 82  # 100 bytes - 32, +- 20%
    hot = {"Google", "Facebook", "Baidu", "Apple"}
    channels = bids["channel"].to_pylist()
    assert 0.45 < np.mean([c in hot for c in channels]) < 0.55
    assert all(u.startswith("https://www.nexmark.com/") for u in bids["url"].to_pylist()[:100])
    people = table("person", extra_bytes=None)
    cards = people["credit_card"].to_pylist()
    assert all(len(c) == 19 and c.replace(" ", "").isdigit() for c in cards)
    assert all(e.endswith(".com") and "@" in e for e in people["email_address"].to_pylist())
    assert set(people["state"].to_pylist()) <= set(nx.US_STATES)
    assert set(people["city"].to_pylist()) <= set(nx.US_CITIES)
    sizes = [len(s) for s in table("bid", 5000, extra_bytes=10)["extra"].to_pylist()]
    assert min(sizes) >= 8 and max(sizes) <= 12 and 9 < np.mean(sizes) < 11


def test_splits_cover_the_stream_in_interleaved_chunks():
    src = sources.nexmark(10_000, "bid")
    whole = src.to_table(batch_size=500)
    splits = src.splits(3)
    assert splits == [(0, 3), (1, 3), (2, 3)]
    per_split = [read_split(src.open(s, batch_size=500)) for s in splits]
    chunks = {}
    for i, batches in enumerate(per_split):
        for j, batch in enumerate(batches):
            chunks[i + 3 * j] = batch  # split i makes chunks i, i+3, i+6 ...
    assert pa.Table.from_batches([chunks[c] for c in sorted(chunks)]).equals(whole)


def test_reopening_at_a_position_resumes_exactly():
    src = sources.nexmark(10_000, "bid")
    split = src.splits(2)[1]
    straight = read_split(src.open(split, batch_size=300))
    reader = src.open(split, batch_size=300)
    first = [reader.read(), reader.read()]
    position = pickle.loads(pickle.dumps(reader.position()))
    assert position == (5, 300)  # next chunk of split 1 of 2 (chunks 1, 3, 5 ...), chunk size
    rest = read_split(src.open(split, position=position, batch_size=300))
    assert pa.Table.from_batches(first + rest).equals(pa.Table.from_batches(straight))
    # The position keeps its chunk size: resuming with another batch_size is still exact.
    rest = read_split(src.open(split, position=position, batch_size=7))
    assert pa.Table.from_batches(first + rest).equals(pa.Table.from_batches(straight))
    assert src.open(split, position=(1001, 300), batch_size=300).read() is None
    with pytest.raises(ValueError, match="not a chunk of split"):
        src.open(split, position=(2, 300), batch_size=300)


def test_source_pickles_and_can_be_endless():
    src = pickle.loads(pickle.dumps(sources.nexmark(None, "person", seed=3)))
    assert not src.bounded and sources.nexmark(10, "bid").bounded
    reader = src.open(src.splits(1)[0], batch_size=100)
    assert [reader.read().num_rows for _ in range(3)] == [100] * 3
    assert reader.position() == (3, 100)
    with pytest.raises(ValueError, match="unbounded"):
        src.to_table()


def test_empty_stream():
    assert sources.nexmark(0, "bid").to_table().num_rows == 0
    assert sources.nexmark(3, "bid").to_table().num_rows == 0  # events 0-3 are not bids


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"events": 10, "kind": "bids"}, ValueError, "kind must be one of"),
        ({"events": -1}, ValueError, "events must be >= 0"),
        ({"events": 1.5}, TypeError, "events must be an integer"),
        ({"events": 10, "first_event_rate": 0}, ValueError, "first_event_rate"),
        ({"events": 10, "extra_bytes": -1}, ValueError, "extra_bytes"),
        ({"events": 10, "hot_auction_ratio": 0}, ValueError, "hot_auction_ratio"),
        ({"events": 10, "seed": "x"}, TypeError, "seed"),
    ],
)
def test_bad_arguments_say_what_to_do(kwargs, error, match):
    with pytest.raises(error, match=match):
        sources.nexmark(**kwargs)
