"""Bucketed per-card streaming state for the nearline fraud stream: the window sums of
gold/transaction_features, incrementally.

``applyInPandasWithState`` is keyed by a card *bucket* (``card_bucket``: xxhash64 of the card token
mod ``nearline.fraud_alerts.state_buckets``), not by the card: Spark calls :func:`card_window_step`
once per bucket and micro-batch with the new rows of all the bucket's cards, so a micro-batch costs
a fixed number of Python calls (at most the number of buckets), not one pandas/Arrow round trip per
distinct card. Keyed by card, that per-group setup (~40 ms a card under load) was the bottleneck.

A bucket's state is one value: its cards' transactions of the longest window before the watermark
(time, id, amount, merchant, country, location), as numpy columns sorted by (card, time), with the
bucket count it was built under. The event strings (id, merchant, country; silver has them non-null)
are fixed-width numpy byte columns holding their UTF-8, so the value pickles and unpickles as a few
buffer copies, not one object per string (measured under load: 300k events took 1.6 s + 1.3 s as
object columns), at a byte a character (numpy's unicode columns take four: the state, and what every
micro-batch moves through Arrow, pickle and the state store, was twice as big). UTF-8's byte order is
the code point order, so sorts and ties order them as the strings. Everything a window ``[t - w, t)`` of
a transaction that is not
late can reach is there, so each new transaction's sums are exact whatever order its card's
transactions arrive in. The sorting and ranking run over the micro-batch's cards only (their
events cut out of the bucket, merged, put back), not the whole bucket. Window bounds are found for
all new rows at once (``searchsorted`` on a (card, time-rank) key); the sums leave under the column
names the batch features compute them under (``_n_<w>``, ``_s_<w>``, ``_ss_30d``, the previous
transaction), and the batch's own ``with_derived_features`` turns them into features: one
definition of every derived feature.

Per row, ``_status`` says what the stream does with it:

- ``scored``: a new transaction; its window sums are set;
- ``duplicate``: its txn_id is in its card's state already (a re-delivery): not scored again;
- ``late``: its event time is before the watermark the micro-batch started with: its windows may
  reach past the state, so it is not scored; it goes to ops/quarantine with ``LATE_REASON``;
- ``rejected``: silver's contract rejected it (grouped under ``REJECTED_BUCKET``, never in any state).

Why no state timeout: with ``GroupStateTimeout.EventTimeTimeout`` Spark drops rows older than the
watermark before the function sees them (measured on pyspark 4.0.1: a late row vanished without a
trace), which would be a silent drop; processing-time timeouts make an ``availableNow`` query run
no-data batches forever. So a bucket's state is pruned to the longest window whenever any of its
cards trades (with many cards per bucket: nearly every micro-batch), and a card with nothing left
in the window leaves the state (see README).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming.state import GroupState

from lakeml.domains.banking.features import DISTINCT_WINDOW, VELOCITY_WINDOWS
from lakeml.errors import JobFailed
from lakeml.transforms.windows import MICROS_PER_HOUR

BUCKET_KEY = "_state_bucket"
STATUS = "_status"
REJECTED_BUCKET = -1  # buckets are >= 0: no card is in this one
LATE_REASON = (
    "late event: event time before the stream watermark (nearline.fraud_alerts.watermark_minutes); "
    "not scored nearline, the daily batch still loads it"
)
STATE_SCHEMA = T.StructType([T.StructField("events", T.BinaryType(), False)])
_EVENT_FIELDS = ("t", "id", "amount", "merchant", "country", "lat", "lon")
_TEXT_FIELDS = ("id", "merchant", "country")  # stored as UTF-8 bytes (numpy "S" columns)


def card_bucket(card_token: Column, buckets: int) -> Column:
    """The state bucket of a card: xxhash64 of its token mod ``buckets`` (stable across restarts)."""
    return F.pmod(F.xxhash64(card_token), F.lit(buckets).cast("long"))


def window_columns() -> list[T.StructField]:
    """The columns :func:`card_window_step` adds to its input rows."""
    return [
        T.StructField(STATUS, T.StringType(), False),
        T.StructField("_ts_us", T.LongType(), True),
        T.StructField("_amount", T.DoubleType(), True),
        *[T.StructField(f"_n_{w}", T.LongType(), True) for w in VELOCITY_WINDOWS],
        *[T.StructField(f"_s_{w}", T.DoubleType(), True) for w in VELOCITY_WINDOWS],
        T.StructField(f"distinct_merchants_{DISTINCT_WINDOW}", T.IntegerType(), True),
        T.StructField(f"distinct_countries_{DISTINCT_WINDOW}", T.IntegerType(), True),
        T.StructField("_ss_30d", T.DoubleType(), True),
        T.StructField("_prev_t", T.LongType(), True),
        T.StructField("_prev_id", T.StringType(), True),
        T.StructField("_prev_lat", T.DoubleType(), True),
        T.StructField("_prev_lon", T.DoubleType(), True),
    ]


def empty_bucket(buckets: int) -> dict[str, Any]:
    """A bucket's state with no card: ``cards`` sorted, card ``k``'s events at ``start[k]:start[k + 1]``."""
    return {
        "buckets": buckets,
        "cards": np.empty(0, str),
        "start": np.zeros(1, np.int64),
        "t": np.empty(0, np.int64),
        "id": np.empty(0, bytes),
        "amount": np.empty(0, np.float64),
        "merchant": np.empty(0, bytes),
        "country": np.empty(0, bytes),
        "lat": np.empty(0, np.float64),
        "lon": np.empty(0, np.float64),
    }


def load_bucket(blob: bytes, buckets: int) -> dict[str, Any]:
    """A bucket's state from its stored value; a different bucket count is an error (cards would move)."""
    saved = pickle.loads(blob)
    if saved["buckets"] != buckets:
        raise JobFailed(
            f"the stream's state was built with nearline.fraud_alerts.state_buckets={saved['buckets']}, "
            f"not {buckets}: set it back (or start from a new checkpoint)"
        )
    for f in _TEXT_FIELDS:  # a state written before the byte columns: same strings, as UTF-8
        if saved[f].dtype.kind == "U":
            saved[f] = utf8(saved[f])
    return saved


def utf8(values: np.ndarray) -> np.ndarray:
    """Strings as a fixed-width numpy byte column of their UTF-8 (the state's string layout)."""
    return np.char.encode(values.astype(str), "utf-8") if len(values) else np.empty(0, bytes)


def card_window_step(hours: Mapping[str, float], buckets: int) -> Any:
    """The ``applyInPandasWithState`` function for windows ``hours`` (name -> length) over ``buckets``
    buckets."""
    lengths = {name: int(h * MICROS_PER_HOUR) for name, h in hours.items()}
    longest_name = max(lengths, key=lambda k: lengths[k])
    longest = lengths[longest_name]

    def step(
        key: tuple[Any, ...], batches: Iterator[pd.DataFrame], state: GroupState
    ) -> Iterator[pd.DataFrame]:
        frames = list(batches)
        rows = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        if key[0] == REJECTED_BUCKET:
            none = np.full(len(rows), None, dtype=object)
            yield _with_columns(rows, {STATUS: np.full(len(rows), "rejected", dtype=object),
                                       **{f.name: none for f in window_columns()[1:]}})  # fmt: skip
            return
        watermark_us = state.getCurrentWatermarkMs() * 1000
        saved = load_bucket(state.get[0], buckets) if state.exists else empty_bucket(buckets)
        ts_us = rows["ts"].astype("datetime64[us]").astype(np.int64).to_numpy()
        cards = rows["card_token"].to_numpy(object)
        late = ts_us < watermark_us
        status = _statuses(rows, saved, late)
        new = np.flatnonzero(status == "scored")
        # Sorts, window bounds and distinct counts over the cards of the new rows only (a card's
        # windows see its own events alone); the bucket's other cards are only copied and pruned.
        touched = _cards_of(saved, np.array(sorted(set(cards[new].tolist())), dtype=str))
        merged = _merged(touched, rows, new, ts_us)
        amount = rows["amount_eur"].astype(float).to_numpy()
        sums = _window_sums(len(rows), new, ts_us, cards[new], merged, lengths, longest_name)
        # Nothing before (watermark - longest window) can be in the window of a row that is not late.
        kept = _pruned(_replaced(saved, merged), watermark_us - longest, buckets)
        if kept is None:
            state.remove()
        else:
            state.update((pickle.dumps(kept, protocol=5),))
        yield _with_columns(rows, {STATUS: status, "_ts_us": ts_us, "_amount": amount, **sums})

    return step


def _statuses(rows: pd.DataFrame, saved: Mapping[str, Any], late: np.ndarray) -> np.ndarray:
    """``late`` / ``duplicate`` / ``scored`` per row: first delivery wins (the state's copy, then by source
    file)."""
    cards = rows["card_token"].to_numpy(object)
    ids = rows["txn_id"].to_numpy(object)
    order = np.lexsort((ids.astype(str), rows["_source_file"].astype(str).to_numpy()))
    position = {c: k for k, c in enumerate(saved["cards"].tolist())}
    start = saved["start"]
    known: dict[Any, set[Any]] = {}  # a card's txn ids: built only for the cards of this batch
    status = np.where(late, "late", "scored").astype(object)
    for i in order:
        if late[i]:
            continue
        card = cards[i]
        seen = known.get(card)
        if seen is None:
            k = position.get(card)
            seen = known[card] = set() if k is None else set(saved["id"][start[k] : start[k + 1]].tolist())
        txn_id = str(ids[i]).encode("utf-8")  # the state's ids are UTF-8 bytes
        if txn_id in seen:
            status[i] = "duplicate"
        else:
            seen.add(txn_id)
    return status


def _merged(
    saved: Mapping[str, Any], rows: pd.DataFrame, new: np.ndarray, ts_us: np.ndarray
) -> dict[str, Any]:
    """The bucket's events and the batch's new ones, sorted by (card code, time); codes index ``cards``."""
    new_cards = rows["card_token"].to_numpy(object)[new]
    cards = np.array(sorted(set(saved["cards"].tolist()) | set(new_cards.tolist())), dtype=str)
    code_of = {c: k for k, c in enumerate(cards.tolist())}
    old_codes = np.fromiter((code_of[c] for c in saved["cards"].tolist()), np.int64, len(saved["cards"]))
    added = {
        "code": np.fromiter((code_of[c] for c in new_cards.tolist()), np.int64, len(new)),
        "t": ts_us[new],
        "id": utf8(rows["txn_id"].to_numpy(object)[new]),
        "amount": rows["amount_eur"].astype(float).to_numpy()[new],
        "merchant": utf8(rows["merchant_id"].to_numpy(object)[new]),
        "country": utf8(rows["country"].to_numpy(object)[new]),
        "lat": rows["lat"].astype(float).to_numpy()[new],
        "lon": rows["lon"].astype(float).to_numpy()[new],
    }
    # The new rows by (card, time, id) among themselves, after the state's at the same instant: the
    # order does not depend on how Spark delivered the rows (a replay rebuilds the same state).
    first = np.lexsort((added["id"], added["t"], added["code"]))
    old = {"code": np.repeat(old_codes, np.diff(saved["start"])), **{k: saved[k] for k in _EVENT_FIELDS}}
    both = {k: np.concatenate([old[k], added[k][first]]) for k in old}
    order = np.lexsort((both["t"], both["code"]))  # stable: integer keys only, no string compare
    return {"cards": cards, **{k: v[order] for k, v in both.items()}}


def _cards_of(saved: Mapping[str, Any], cards: np.ndarray) -> dict[str, Any]:
    """The part of a bucket's state (same layout) holding the events of ``cards`` (sorted; absent ones
    skipped)."""
    have = saved["cards"]
    if not len(have) or not len(cards):
        return empty_bucket(saved["buckets"])
    position = np.searchsorted(have, cards)
    found = position < len(have)
    found[found] = have[position[found]] == cards[found]
    k = position[found]
    start = saved["start"]
    counts = start[k + 1] - start[k]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # The events of each kept card, in state order: its slice start[k]:start[k + 1], one after another.
    index = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1] - start[k], counts)
    return {"buckets": saved["buckets"], "cards": have[k], "start": offsets,
            **{f: saved[f][index] for f in _EVENT_FIELDS}}  # fmt: skip


def _replaced(saved: Mapping[str, Any], merged: Mapping[str, Any]) -> dict[str, Any]:
    """The bucket's events with its cards in ``merged`` (:func:`_merged`'s layout) replaced by theirs, in
    that layout: sorted by (card code, time), each card's events in the order they had."""
    counts = np.diff(saved["start"])
    untouched = ~np.isin(saved["cards"], merged["cards"])
    events = np.repeat(untouched, counts)
    cards = np.concatenate([saved["cards"][untouched], merged["cards"]])
    by_card = np.argsort(cards, kind="stable")
    rank = np.empty(len(cards), np.int64)
    rank[by_card] = np.arange(len(cards))
    kept = int(untouched.sum())
    codes = np.concatenate([np.repeat(rank[:kept], counts[untouched]), rank[kept + merged["code"]]])
    # Two runs each sorted by card: a stable sort by card keeps every card's events in their order.
    order = np.argsort(codes, kind="stable")
    return {
        "cards": cards[by_card],
        "code": codes[order],
        **{f: np.concatenate([saved[f][events], merged[f]])[order] for f in _EVENT_FIELDS},
    }


def _window_sums(
    size: int,
    rows: np.ndarray,
    ts_us: np.ndarray,
    row_cards: np.ndarray,
    events: Mapping[str, Any],
    lengths: Mapping[str, int],
    longest_name: str,
) -> dict[str, np.ndarray]:
    """The window columns (``size`` values, None but at ``rows``) from the bucket's ``events`` (sorted by
    card, time)."""
    columns = {c.name: np.full(size, None, dtype=object) for c in window_columns()[3:]}
    if not len(rows):
        return columns
    t, amounts, ids = events["t"], events["amount"], events["id"]
    code_of = {c: k for k, c in enumerate(events["cards"].tolist())}
    codes = np.fromiter((code_of[c] for c in row_cards.tolist()), np.int64, len(rows))
    now = ts_us[rows]
    # One sorted key for (card, time): the card code times the number of distinct instants in play,
    # plus the instant's rank. Exact (no overflow whatever the timestamps), and every window bound of
    # every new row is then one vectorized searchsorted.
    instants = np.unique(np.concatenate([t, now, *[now - w for w in lengths.values()]]))

    def keyed(code: np.ndarray, at: np.ndarray) -> np.ndarray:
        return code * len(instants) + np.searchsorted(instants, at)

    keys = keyed(events["code"], t)
    end = np.searchsorted(keys, keyed(codes, now), "left")  # strictly before: a tie is not before
    starts = {name: np.searchsorted(keys, keyed(codes, now - w), "left") for name, w in lengths.items()}
    rows_at = rows.tolist()
    for name in lengths:
        s = starts[name]
        columns[f"_n_{name}"][rows_at] = (end - s).tolist()
        # Summed in time order, as Spark's window frame adds them: 0.0 + a0 + a1 + ..., one add per
        # step for all rows at once (the same IEEE additions, in the same order, as a Python sum).
        columns[f"_s_{name}"][rows_at] = _sequential_sums(amounts, s, end).tolist()
    s = starts[DISTINCT_WINDOW]
    for field_name, column in (("merchant", "merchants"), ("country", "countries")):
        first_seen = _first_in_window(events["code"], events[field_name], s, end)
        columns[f"distinct_{column}_{DISTINCT_WINDOW}"][rows_at] = first_seen.tolist()
    s = starts[longest_name]
    columns["_ss_30d"][rows_at] = _sequential_sums(amounts * amounts, s, end).tolist()
    has_prev = np.flatnonzero(end > s)
    for j in has_prev.tolist():  # the previous transaction: one lookup per row, ties are rare
        e, first = int(end[j]), int(s[j])
        last = tie = e - 1
        while tie > first and t[tie - 1] == t[last]:
            tie -= 1
        if tie < last:  # several at the previous instant: the batch takes the max of (t, id)
            last = max(range(tie, e), key=lambda m: bytes(ids[m]))  # UTF-8 order = string order
        i = rows_at[j]
        columns["_prev_t"][i] = int(t[last])
        columns["_prev_id"][i] = bytes(ids[last]).decode("utf-8")
        columns["_prev_lat"][i] = _nullable(events["lat"][last])
        columns["_prev_lon"][i] = _nullable(events["lon"][last])
    return columns


def _sequential_sums(values: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``0.0 + values[start[j]] + ... + values[end[j] - 1]`` for every j, added left to right.

    One vectorized add per position in the longest range, not one Python sum per row: the state
    step's cost was that per-row loop (the ranges are a card's events in a window).
    """
    total = np.zeros(len(start), dtype=np.float64)
    lengths = end - start
    for k in range(int(lengths.max(initial=0))):
        live = np.flatnonzero(lengths > k)
        total[live] = total[live] + values[start[live] + k]
    return total


def _first_in_window(codes: np.ndarray, values: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distinct ``values`` in each range ``[start, end)`` of one card's events (sorted by card, time).

    An event counts when the card's previous event with the same value is before the range.
    """
    _, value_code = np.unique(values, return_inverse=True)
    order = np.lexsort((np.arange(len(codes)), value_code, codes))
    same = np.zeros(len(codes), dtype=bool)
    same[1:] = (codes[order][1:] == codes[order][:-1]) & (value_code[order][1:] == value_code[order][:-1])
    previous = np.full(len(codes), -1, dtype=np.int64)
    previous[order[1:][same[1:]]] = order[:-1][same[1:]]
    count = np.zeros(len(start), dtype=np.int64)
    lengths = end - start
    for k in range(int(lengths.max(initial=0))):
        live = np.flatnonzero(lengths > k)
        count[live] += previous[start[live] + k] < start[live]
    return count


def _pruned(events: Mapping[str, Any], oldest_us: int, buckets: int) -> dict[str, Any] | None:
    """The bucket's state to keep: events at or after ``oldest_us``, cards with none left dropped; None if
    empty."""
    keep = events["t"] >= oldest_us
    if not keep.any():
        return None
    codes = events["code"][keep]
    present, counts = np.unique(codes, return_counts=True)
    return {
        "buckets": buckets,
        "cards": events["cards"][present],
        "start": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        **{k: events[k][keep] for k in _EVENT_FIELDS},
    }


def _with_columns(rows: pd.DataFrame, columns: Mapping[str, Any]) -> pd.DataFrame:
    """``rows`` and ``columns`` (after them, in order) as one new frame.

    Built at once from arrays: adding columns one by one (``assign``, ``.loc``) costs a few ms per
    column, more than the window sums of a card's few rows.
    """
    return pd.DataFrame({**{c: rows[c].to_numpy() for c in rows.columns}, **columns}, copy=False)


def _nullable(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
