"""The Nexmark auction benchmark's event generator, vectorised.

Follows the generator of the Apache Beam / Flink Nexmark benchmarks: out of every 50 event
numbers, one is a new person (``n % 50 == 0``), three are new auctions (1-3) and 46 are bids
(4-49). Ids derive from the event number; auctions pick sellers among the last 1,000 active
people (plus 10 not yet created), bids pick auctions among the last 100 in flight (plus 10
ahead); hot sellers/bidders/auctions are the last id rounded down to a multiple of 100 and
are chosen with probability ``1 - 1/ratio``. Event ``n`` happens at
``base_time_ms + n * 1000 // first_event_rate``.

Each event is a pure function of ``(seed, event number)``, so ``nexmark(N, "person")`` and
``nexmark(N, "bid")`` with one seed describe the same world, and any chunk can be made alone.
A chunk is ``batch_size`` consecutive events *of the stream's kind* (so batches are full);
split ``i`` of ``n`` makes chunks ``i, i+n, ...``; its position is (next chunk, chunk size).
``splits=n`` fixes ``n`` (the step can then be rescaled); without it, ``n`` is the parallelism.
Strings come from small vocabularies and a fixed pool of random letters; ``extra`` is
filler whose lengths repeat every 4,096 rows, so a batch's filler is one zero-copy slice.

>>> bids = nexmark(1_000, "bid").to_table()
>>> bids.num_rows, bids.column_names[:3]
(920, ['auction', 'bidder', 'price'])
>>> nexmark(1_000, "person").to_table().num_rows, nexmark(1_000, "auction").to_table().num_rows
(20, 60)
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rheostat.connectors.synthetic import (
    DEFAULT_START_MS,
    SLICE,
    ChunkedSource,
    Randomness,
    below,
    chance,
    check_int,
    check_splits,
    gather,
    unit,
)

Kind = Literal["bid", "person", "auction"]

# The specification's constants.
PERSON_PROPORTION, AUCTION_PROPORTION, BID_PROPORTION = 1, 3, 46
TOTAL_PROPORTION = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION  # 50
FIRST_PERSON_ID = FIRST_AUCTION_ID = 1000
FIRST_CATEGORY_ID = 10
NUM_CATEGORIES = 5
PERSON_ID_LEAD = AUCTION_ID_LEAD = 10
HOT_ID_BLOCK = 100  # hot ids are the last id rounded down to a multiple of this
NUM_ACTIVE_PEOPLE = 1000
NUM_IN_FLIGHT_AUCTIONS = 100
AVG_BYTES = {"person": 200, "auction": 500, "bid": 100}
HOT_CHANNELS = ("Google", "Facebook", "Baidu", "Apple")
NUM_CHANNELS = 10_000
FIRST_NAMES = ("Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah",
               "Deiter", "Walter")
LAST_NAMES = ("Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones",
              "Noris")
US_CITIES = ("Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond",
             "Seattle", "Kent", "Cheyenne")
US_STATES = ("AZ", "CA", "ID", "OR", "WA", "WY")

_FIRST = {"person": 0, "auction": PERSON_PROPORTION, "bid": PERSON_PROPORTION + AUCTION_PROPORTION}
_COUNT = {"person": PERSON_PROPORTION, "auction": AUCTION_PROPORTION, "bid": BID_PROPORTION}
_TS = pa.timestamp("ms")

SCHEMAS: dict[str, pa.Schema] = {
    "person": pa.schema([
        ("id", pa.int64()), ("name", pa.string()), ("email_address", pa.string()),
        ("credit_card", pa.string()), ("city", pa.string()), ("state", pa.string()),
        ("date_time", _TS), ("extra", pa.string()),
    ]),
    "auction": pa.schema([
        ("id", pa.int64()), ("item_name", pa.string()), ("description", pa.string()),
        ("initial_bid", pa.int64()), ("reserve", pa.int64()), ("date_time", _TS),
        ("expires", _TS), ("seller", pa.int64()), ("category", pa.int64()),
        ("extra", pa.string()),
    ]),
    "bid": pa.schema([
        ("auction", pa.int64()), ("bidder", pa.int64()), ("price", pa.int64()),
        ("channel", pa.string()), ("url", pa.string()), ("date_time", _TS),
        ("extra", pa.string()),
    ]),
}


# ---------------------------------------------------------------- id arithmetic (vectorised)


def count_of(kind: str, events: int) -> int:
    """How many of event numbers ``0..events-1`` are of ``kind``."""
    epochs, rest = divmod(events, TOTAL_PROPORTION)
    return epochs * _COUNT[kind] + min(max(rest - _FIRST[kind], 0), _COUNT[kind])


def epochs_and_offsets(kind: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """For the ``start..stop-1``-th events of ``kind``: their event numbers' ``divmod(n, 50)``."""
    count = _COUNT[kind]
    first_epoch, skip = divmod(start, count)
    epochs = np.arange(first_epoch, (stop - 1) // count + 1, dtype=np.int64)
    offsets = np.arange(_FIRST[kind], _FIRST[kind] + count, dtype=np.int64)
    shape, rows = (len(epochs), count), slice(skip, skip + stop - start)
    epoch = np.broadcast_to(epochs[:, None], shape).ravel()[rows]  # ravel copies
    return epoch, np.broadcast_to(offsets[None, :], shape).ravel()[rows]


def event_numbers(kind: str, rows: np.ndarray) -> np.ndarray:
    """The event numbers of the ``rows``-th events of ``kind`` (0-based, int64)."""
    epoch, offset = np.divmod(rows, _COUNT[kind])
    return epoch * TOTAL_PROPORTION + _FIRST[kind] + offset


def last_person_id(epoch: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The last person id (base 0) created at or before event ``epoch * 50 + offset``."""
    if PERSON_PROPORTION == 1:
        return epoch
    return epoch * PERSON_PROPORTION + np.minimum(offset, PERSON_PROPORTION - 1)


def last_auction_id(epoch: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The last auction id (base 0) created at or before event ``epoch * 50 + offset``."""
    in_epoch = np.clip(offset - PERSON_PROPORTION, -1, AUCTION_PROPORTION - 1)
    return epoch * AUCTION_PROPORTION + in_epoch


def _active_person(last_person: np.ndarray, h: np.ndarray) -> np.ndarray:
    """A random person among the last ``NUM_ACTIVE_PEOPLE`` (and ``PERSON_ID_LEAD`` ahead)."""
    people = last_person + 1
    active = np.minimum(people, NUM_ACTIVE_PEOPLE)
    people -= active
    people += below(h, active + PERSON_ID_LEAD)
    return people


def _in_flight_auction(last_auction: np.ndarray, h: np.ndarray) -> np.ndarray:
    """A random auction among the last ``NUM_IN_FLIGHT_AUCTIONS`` (and a few ahead)."""
    low = np.maximum(last_auction - NUM_IN_FLIGHT_AUCTIONS, 0)
    span = last_auction - low
    span += 1 + AUCTION_ID_LEAD
    low += below(h, span)
    return low


def _hot_or(hot: np.ndarray, other: np.ndarray, is_hot: np.ndarray) -> np.ndarray:
    np.copyto(other, hot, where=is_hot)
    return other


def _price(h: np.ndarray) -> np.ndarray:
    """The spec's price in cents: ``round(10 ** (6 u) * 100)``, log-uniform in 1 .. 1 M dollars."""
    x = np.exp(unit(h) * (6.0 * np.log(10.0)))
    x *= 100.0
    x += 0.5
    return np.floor(x, out=x).astype(np.int64)


# ---------------------------------------------------------------- strings (vectorised)


@functools.lru_cache(maxsize=4)
def _pool(size: int, spaces: bool) -> np.ndarray:
    """A fixed pool of random lowercase letters (with a space in ~1 of 13 if ``spaces``)."""
    rng = np.random.default_rng(0x4E45584D41524B)
    pool = rng.integers(ord("a"), ord("z") + 1, size=size, dtype=np.uint8)
    if spaces:
        pool[rng.random(size) < 1 / 13] = ord(" ")
    return pool


_POOL = 1 << 20
_LONGEST = 4096  # the longest string _pool_strings cuts (the spec's longest is 500 bytes)


def _pool_strings(h: np.ndarray, lengths: np.ndarray, spaces: bool = False) -> pa.Array:
    """Strings of ``lengths`` cut from the letter pool at offsets drawn from ``h``'s high bits."""
    lengths = np.clip(lengths, 0, _LONGEST)
    starts = below(h, _POOL)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.arange(offsets[-1], dtype=np.int64)
    index += np.repeat(starts - offsets[:-1], lengths)
    data = _pool(_POOL + _LONGEST, spaces)[index]
    return pa.StringArray.from_buffers(
        len(lengths), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)
    )


def _next_string(h: np.ndarray, max_length: int) -> pa.Array:
    """The spec's ``nextString``: 3 to ``max_length - 1`` letters and spaces, trimmed."""
    lengths = 3 + below(h, max_length - 3, high=False)
    return pc.utf8_trim_whitespace(_pool_strings(h, lengths, spaces=True))


def _extra(h: np.ndarray, average: np.ndarray) -> pa.Array:
    """The spec's ``nextExtra``: random letters, length uniform in ``average`` +- 20%."""
    average = np.maximum(average, 0)
    delta = np.floor(average * 0.2 + 0.5).astype(np.int64)
    lengths = average - delta + below(h, np.maximum(2 * delta, 1), high=False)
    return _pool_strings(h, lengths)


_FILLER_PERIOD = 4096
_stream = np.empty(0, dtype=np.uint8)


def _letter_stream(length: int) -> np.ndarray:
    """At least ``length`` letters of the pool repeated end to end (kept, and grown on demand)."""
    global _stream
    if len(_stream) < length:
        pool = _pool(_POOL, False)
        _stream = np.tile(pool, -(-max(length, 2 * _POOL) // _POOL))
    return _stream


@functools.lru_cache(maxsize=16)
def _filler_prefix(average: int, seed: int) -> np.ndarray:
    """Prefix sums of a repeating pattern of ``_FILLER_PERIOD`` lengths around ``average``."""
    delta = int(average * 0.2 + 0.5)
    h = Randomness(np.arange(_FILLER_PERIOD), seed).draw(99)
    lengths = average - delta + below(h, max(2 * delta, 1))
    return np.concatenate([[0], np.cumsum(lengths)])


def _filler(start: int, stop: int, average: int, seed: int) -> pa.Array:
    """Fast ``extra`` for rows ``start..stop-1`` when the average size is one number.

    Lengths repeat with period ``_FILLER_PERIOD`` rows, so where row ``k``'s text begins in an
    endless letter stream is known in closed form, and a batch is one contiguous slice.
    """
    prefix = _filler_prefix(average, seed)
    period, total_per_period = _FILLER_PERIOD, int(prefix[-1])

    def where(row: int) -> int:  # where row `row`'s text starts in the endless letter stream
        return row // period * total_per_period + int(prefix[row % period])

    first = where(start)
    total = where(stop) - first
    if total >= 1 << 31:
        raise ValueError("extra_bytes * batch_size is too large; use a smaller batch_size")
    offsets_buffer = pa.allocate_buffer(4 * (stop - start + 1))
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)
    row = start
    while row <= stop:  # one slice of the prefix sums per period
        within = row % period
        count = min(period - within, stop + 1 - row)
        shift = row // period * total_per_period - first
        offsets[row - start : row - start + count] = prefix[within : within + count] + shift
        row += count
    begin = (first + seed) % _POOL
    data = _letter_stream(begin + total)[begin : begin + total]
    return pa.StringArray.from_buffers(stop - start, pa.py_buffer(offsets), pa.py_buffer(data))


_BID_TYPES = (pa.int64(), pa.int64(), pa.int64(), pa.int64(), _TS)


def _lengths(strings: pa.Array) -> np.ndarray:
    return pc.utf8_length(strings).to_numpy().astype(np.int64)


def _fixed_width(matrix: np.ndarray) -> pa.Array:
    """Rows of a 2-D ``uint8`` matrix as strings of equal length."""
    rows, width = matrix.shape
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(
        rows, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(matrix))
    )


def _credit_cards(groups: list[np.ndarray]) -> pa.Array:
    """Four groups of four digits separated by spaces (``"0123 4567 8901 2345"``)."""
    matrix = np.full((len(groups[0]), 19), ord(" "), dtype=np.uint8)
    for g, values in enumerate(groups):
        for d in range(4):
            matrix[:, g * 5 + d] = ord("0") + values // 10 ** (3 - d) % 10
    return _fixed_width(matrix)


@functools.cache
def _channels() -> tuple[pa.Array, pa.Array]:
    """Channel names and urls: 4 hot channels, then ``channel-0 .. channel-9999``."""
    rng = np.random.default_rng(0xC4A77E1)

    def segment() -> str:
        letters = rng.integers(ord("a"), ord("z") + 1, size=3 + int(rng.integers(2)))
        letters[rng.random(len(letters)) < 1 / 13] = ord("_")
        return bytes(letters.astype(np.uint8)).decode()

    def base_url() -> str:
        return f"https://www.nexmark.com/{segment()}/{segment()}/{segment()}/item.htm?query=1"

    names, urls = list(HOT_CHANNELS), [base_url() for _ in HOT_CHANNELS]
    for k in range(NUM_CHANNELS):
        names.append(f"channel-{k}")
        url = base_url()
        if rng.integers(10) > 0:
            reverse = int(f"{k:032b}"[::-1], 2)  # Java's Integer.reverse, then Math.abs
            url += f"&channel_id={abs(reverse - (1 << 32) if reverse >= 1 << 31 else reverse)}"
        urls.append(url)
    return pa.array(names, pa.string()), pa.array(urls, pa.string())


@functools.cache
def _vocab(words: tuple[str, ...]) -> pa.Array:
    return pa.array(words, pa.string())


_FULL_NAMES = tuple(f"{f} {s}" for f in FIRST_NAMES for s in LAST_NAMES)


# ---------------------------------------------------------------- the source


class Nexmark(ChunkedSource):
    """The ``kind`` events among Nexmark event numbers ``0..events-1`` (see :func:`nexmark`)."""

    def __init__(
        self,
        events: int | None,
        kind: str,
        seed: int,
        first_event_rate: int,
        base_time_ms: int,
        extra_bytes: int | None,
        hot_ratios: tuple[int, int, int],
        splits: int | None = None,
    ) -> None:
        self.n_splits = splits
        self.events = events
        self.kind = kind
        self.seed = seed
        self.first_event_rate = first_event_rate
        self.base_time_ms = base_time_ms
        self.extra_bytes = extra_bytes
        self.hot_auction_ratio, self.hot_bidders_ratio, self.hot_sellers_ratio = hot_ratios

    @property
    def num_rows(self) -> int | None:
        return None if self.events is None else count_of(self.kind, self.events)

    def schema(self) -> pa.Schema:
        return SCHEMAS[self.kind]

    def make_batch(self, start: int, stop: int) -> pa.RecordBatch:
        if self.kind == "bid":
            columns = self._bids(start, stop)
        else:
            epoch, offset = epochs_and_offsets(self.kind, start, stop)
            n = epoch * TOTAL_PROPORTION + offset
            make = self._auctions if self.kind == "auction" else self._persons
            columns = make(n, epoch, offset, Randomness(n, self.seed))
        average = self.extra_bytes
        if average is None and self.kind == "bid":  # a bid's other fields are always 32 bytes
            average = AVG_BYTES["bid"] - 8 * 4
        if average is not None:
            columns.append(_filler(start, stop, average, self.seed))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema())

    def timestamps(self, n: np.ndarray) -> np.ndarray:
        """Event time in ms of event numbers ``n``."""
        ts = n * 1000
        ts //= self.first_event_rate
        ts += self.base_time_ms
        return ts

    def _bids(self, start: int, stop: int) -> list[pa.Array]:
        # Numbers are made in slices small enough that numpy's temporaries are recycled by
        # malloc instead of being fresh pages from the kernel, and gathered into buffers from
        # Arrow's memory pool, which keeps its pages: about twice as fast as one big slice.
        parts = [self._bid_numbers(a, min(a + SLICE, stop)) for a in range(start, stop, SLICE)]
        auction, bidder, price, channel, ts = (
            gather(list(column), type_) for column, type_ in zip(zip(*parts), _BID_TYPES)
        )
        names, urls = _channels()
        return [auction, bidder, price, names.take(channel), urls.take(channel), ts]

    def _bid_numbers(self, start: int, stop: int) -> tuple[np.ndarray, ...]:
        epoch, offset = epochs_and_offsets("bid", start, stop)
        n = epoch * TOTAL_PROPORTION + offset
        rnd = Randomness(n, self.seed)
        last = last_auction_id(epoch, offset)
        h = rnd.draw(0)
        auction = _hot_or(last // HOT_ID_BLOCK * HOT_ID_BLOCK, _in_flight_auction(last, h),
                          chance(h, self.hot_auction_ratio))
        last = last_person_id(epoch, offset)
        h = rnd.draw(1)
        bidder = _hot_or(last // HOT_ID_BLOCK * HOT_ID_BLOCK + 1, _active_person(last, h),
                         chance(h, self.hot_bidders_ratio))
        h = rnd.draw(3)
        channel = below(h, NUM_CHANNELS)
        channel += len(HOT_CHANNELS)
        np.copyto(channel, below(h, len(HOT_CHANNELS)), where=chance(h, 2))
        auction += FIRST_AUCTION_ID
        bidder += FIRST_PERSON_ID
        return auction, bidder, _price(rnd.draw(2)), channel, self.timestamps(n)

    def _auctions(self, n: np.ndarray, epoch: np.ndarray, offset: np.ndarray,
                  rnd: Randomness) -> list[pa.Array]:
        last = last_person_id(epoch, offset)
        h = rnd.draw(0)
        seller = _hot_or(last // HOT_ID_BLOCK * HOT_ID_BLOCK, _active_person(last, h),
                         chance(h, self.hot_sellers_ratio))
        ts = self.timestamps(n)
        # Auctions last on average until NUM_IN_FLIGHT_AUCTIONS more auctions have been created.
        ahead = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION // AUCTION_PROPORTION
        horizon = self.timestamps(n + ahead) - ts
        h = rnd.draw(1)
        expires = ts + 1 + below(h, np.maximum(2 * horizon, 1))
        initial_bid = _price(rnd.draw(2))
        item_name, description = _next_string(rnd.draw(4), 20), _next_string(rnd.draw(5), 100)
        columns = [
            pa.array(last_auction_id(epoch, offset) + FIRST_AUCTION_ID),
            item_name,
            description,
            pa.array(initial_bid),
            pa.array(initial_bid + _price(rnd.draw(3))),
            pa.array(ts, _TS),
            pa.array(expires, _TS),
            pa.array(seller + FIRST_PERSON_ID),
            pa.array(FIRST_CATEGORY_ID + below(h, NUM_CATEGORIES, high=False)),
        ]
        if self.extra_bytes is None:
            size = 8 * 6 + _lengths(item_name) + _lengths(description)
            columns.append(_extra(rnd.draw(6), AVG_BYTES["auction"] - size))
        return columns

    def _persons(self, n: np.ndarray, epoch: np.ndarray, offset: np.ndarray,
                 rnd: Randomness) -> list[pa.Array]:
        h = rnd.draw(0)
        name = _vocab(_FULL_NAMES).take(below(h, len(_FULL_NAMES)))
        email = pc.binary_join_element_wise(
            _next_string(rnd.draw(1), 7), _next_string(rnd.draw(2), 5), "@"
        )
        email = pc.binary_join_element_wise(email, pa.scalar(".com"), "")
        h3, h4 = rnd.draw(3), rnd.draw(4)
        card = _credit_cards([below(h3, 10_000), below(h3, 10_000, high=False),
                              below(h4, 10_000), below(h4, 10_000, high=False)])
        h = rnd.draw(5)
        city = _vocab(US_CITIES).take(below(h, len(US_CITIES)))
        state = _vocab(US_STATES).take(below(h, len(US_STATES), high=False))
        columns = [
            pa.array(last_person_id(epoch, offset) + FIRST_PERSON_ID),
            name, email, card, city, state,
            pa.array(self.timestamps(n), _TS),
        ]
        if self.extra_bytes is None:
            size = 8 + 19 + sum(_lengths(a) for a in (name, email, city, state))
            columns.append(_extra(rnd.draw(6), AVG_BYTES["person"] - size))
        return columns

    def __repr__(self) -> str:
        return f"nexmark(events={self.events}, kind={self.kind!r}, seed={self.seed})"


def nexmark(
    events: int | None,
    kind: Kind = "bid",
    seed: int = 0,
    first_event_rate: int = 10_000_000,
    base_time_ms: int = DEFAULT_START_MS,
    extra_bytes: int | None = 8,
    hot_auction_ratio: int = 2,
    hot_bidders_ratio: int = 4,
    hot_sellers_ratio: int = 4,
    splits: int | None = None,
) -> Nexmark:
    """Nexmark ``kind`` events (``"bid"``, ``"person"`` or ``"auction"``) among ``events`` events.

    ``events=None`` never ends. Event ``n`` occurs at ``base_time_ms + n * 1000 //
    first_event_rate`` (events per second of event time), so a stream of 50 M events at the
    default rate spans 5 s of event time. ``extra`` holds ``extra_bytes`` letters on average
    (``None``: pad each event to the spec's average size: person 200, auction 500, bid 100
    bytes). Columns follow Flink's Nexmark tables; ``date_time`` is the event time.
    ``splits=N`` makes N splits whatever the parallelism, so the source step can be
    rescaled (to at most N tasks) and resumed at another parallelism.

    >>> nexmark(100, "bid", seed=1).to_table().equals(nexmark(100, "bid", seed=1).to_table())
    True
    """
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise ValueError(f"kind must be one of 'bid', 'person', 'auction', got {kind!r}")
    if events is not None:
        check_int("events", events, 0, "Pass how many Nexmark events, or None for no end.")
    check_int("seed", seed)
    check_int("first_event_rate", first_event_rate, 1, "Pass events per second of event time.")
    check_int("base_time_ms", base_time_ms, None, "Pass ms since the epoch.")
    if extra_bytes is not None:
        check_int("extra_bytes", extra_bytes, 0, "Pass None for the spec's event sizes.")
    ratios = tuple(
        check_int(name, value, 1, "1 means no hot ids; the spec uses 2, 4 and 4.")
        for name, value in (("hot_auction_ratio", hot_auction_ratio),
                            ("hot_bidders_ratio", hot_bidders_ratio),
                            ("hot_sellers_ratio", hot_sellers_ratio))
    )
    return Nexmark(events, kind, int(seed), int(first_event_rate), int(base_time_ms),
                   extra_bytes, ratios, check_splits(splits))  # type: ignore[arg-type]
