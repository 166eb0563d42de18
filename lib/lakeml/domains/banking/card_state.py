"""Per-card streaming state for the nearline fraud stream: the window sums of gold/transaction_features, incrementally.

``applyInPandasWithState`` calls :func:`card_window_step` once per card and micro-batch with the
card's new rows. The state is the card's own transactions of the longest window before the
watermark (time, id, amount, merchant, country, location): everything a window ``[t - w, t)`` of a
transaction that is not late can reach, so each new transaction's sums are exact whatever order
the card's transactions arrive in. The sums leave under the column names the batch features
compute them under (``_n_<w>``, ``_s_<w>``, ``_ss_30d``, the previous transaction), and the batch's
own ``with_derived_features`` turns them into features: one definition of every derived feature.

Per row, ``_status`` says what the stream does with it:

- ``scored``: a new transaction; its window sums are set;
- ``duplicate``: its txn_id is in the card's state already (a re-delivery): not scored again;
- ``late``: its event time is before the watermark the micro-batch started with: its windows may
  reach past the state, so it is not scored; it goes to ops/quarantine with ``LATE_REASON``;
- ``rejected``: silver's contract rejected it (grouped under ``REJECTED_KEY``, never in any state).

Why no state timeout: with ``GroupStateTimeout.EventTimeTimeout`` Spark drops rows older than the
watermark before the function sees them (measured on pyspark 4.0.1: a late row vanished without a
trace), which would be a silent drop; processing-time timeouts make an ``availableNow`` query run
no-data batches forever. So a card's state is pruned to the longest window whenever the card
trades; a card that never trades again keeps at most its last window (see README).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import types as T
from pyspark.sql.streaming.state import GroupState

from lakeml.domains.banking.features import DISTINCT_WINDOW, VELOCITY_WINDOWS
from lakeml.transforms.windows import MICROS_PER_HOUR

CARD_KEY = "_card_key"
STATUS = "_status"
REJECTED_KEY = "~rejected"  # card tokens are hex: no card has this key
LATE_REASON = (
    "late event: event time before the stream watermark (nearline.fraud_alerts.watermark_minutes); "
    "not scored nearline, the daily batch still loads it"
)
STATE_SCHEMA = T.StructType([T.StructField("events", T.BinaryType(), False)])
_EVENT_FIELDS = ("t", "id", "amount", "merchant", "country", "lat", "lon")


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


def _empty_events() -> dict[str, np.ndarray]:
    return {
        "t": np.empty(0, np.int64),
        "id": np.empty(0, object),
        "amount": np.empty(0, np.float64),
        "merchant": np.empty(0, object),
        "country": np.empty(0, object),
        "lat": np.empty(0, np.float64),
        "lon": np.empty(0, np.float64),
    }


def _sorted(events: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    # By (time, id): the batch's previous transaction is the max of struct(t, id, ...).
    order = np.lexsort((events["id"].astype(str), events["t"]))
    return {k: v[order] for k, v in events.items()}


def card_window_step(
    hours: Mapping[str, float],
) -> Any:
    """The ``applyInPandasWithState`` function for windows ``hours`` (name -> length, as features.banking)."""
    lengths = {name: int(h * MICROS_PER_HOUR) for name, h in hours.items()}
    longest = max(lengths.values())

    def step(
        key: tuple[Any, ...], batches: Iterator[pd.DataFrame], state: GroupState
    ) -> Iterator[pd.DataFrame]:
        frames = list(batches)
        rows = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        if key[0] == REJECTED_KEY:
            none = np.full(len(rows), None, dtype=object)
            yield _with_columns(rows, {STATUS: np.full(len(rows), "rejected", dtype=object),
                                       **{f.name: none for f in window_columns()[1:]}})  # fmt: skip
            return
        watermark_us = state.getCurrentWatermarkMs() * 1000
        events = pickle.loads(state.get[0]) if state.exists else _empty_events()
        ts_us = rows["ts"].astype("datetime64[us]").astype(np.int64).to_numpy()
        late = ts_us < watermark_us
        # First delivery wins: the state's copy, then the first in the micro-batch (by source file).
        order = np.lexsort(
            (rows["txn_id"].astype(str).to_numpy(), rows["_source_file"].astype(str).to_numpy())
        )
        known = set(events["id"].tolist())
        status = np.where(late, "late", "scored").astype(object)
        for i in order:
            if late[i]:
                continue
            txn = rows["txn_id"].iat[i]
            if txn in known:
                status[i] = "duplicate"
            else:
                known.add(txn)
        new = status == "scored"
        amount = rows["amount_eur"].astype(float).to_numpy()
        added = {
            "t": ts_us[new],
            "id": rows["txn_id"].to_numpy(object)[new],
            "amount": amount[new],
            "merchant": rows["merchant_id"].to_numpy(object)[new],
            "country": rows["country"].to_numpy(object)[new],
            "lat": rows["lat"].astype(float).to_numpy()[new],
            "lon": rows["lon"].astype(float).to_numpy()[new],
        }
        events = _sorted({k: np.concatenate([events[k], added[k]]) for k in _EVENT_FIELDS})
        sums = _window_sums(len(rows), np.flatnonzero(new), ts_us, events, lengths, longest)
        # Nothing before (watermark - longest window) can be in the window of a row that is not late.
        keep = events["t"] >= watermark_us - longest
        if keep.any():
            state.update((pickle.dumps({k: v[keep] for k, v in events.items()}, protocol=5),))
        else:
            state.remove()
        yield _with_columns(rows, {STATUS: status, "_ts_us": ts_us, "_amount": amount, **sums})

    return step


def _window_sums(
    size: int,
    rows: np.ndarray,
    ts_us: np.ndarray,
    events: Mapping[str, np.ndarray],
    lengths: Mapping[str, int],
    longest: int,
) -> dict[str, np.ndarray]:
    """The window columns (``size`` values, None but at ``rows``) from the card's ``events`` (sorted by time, id)."""
    t, amounts = events["t"], events["amount"]
    distinct = lengths[DISTINCT_WINDOW]
    columns = {c.name: np.full(size, None, dtype=object) for c in window_columns()[3:]}
    for i in rows:
        now = ts_us[i]
        end = int(np.searchsorted(t, now, "left"))  # events strictly before: a tie is not before
        for name, length in lengths.items():
            start = int(np.searchsorted(t, now - length, "left"))  # [t - w, t)
            columns[f"_n_{name}"][i] = end - start
            # Summed in time order, as Spark's window frame adds them.
            columns[f"_s_{name}"][i] = float(sum(amounts[start:end].tolist(), 0.0))
        start = int(np.searchsorted(t, now - distinct, "left"))
        columns[f"distinct_merchants_{DISTINCT_WINDOW}"][i] = len(set(events["merchant"][start:end]))
        columns[f"distinct_countries_{DISTINCT_WINDOW}"][i] = len(set(events["country"][start:end]))
        start = int(np.searchsorted(t, now - longest, "left"))
        window = amounts[start:end]
        columns["_ss_30d"][i] = float(sum((window * window).tolist(), 0.0))
        if end > start:
            last = end - 1
            columns["_prev_t"][i] = int(t[last])
            columns["_prev_id"][i] = events["id"][last]
            columns["_prev_lat"][i] = _nullable(events["lat"][last])
            columns["_prev_lon"][i] = _nullable(events["lon"][last])
    return columns


def _with_columns(rows: pd.DataFrame, columns: Mapping[str, Any]) -> pd.DataFrame:
    """``rows`` and ``columns`` (after them, in order) as one new frame.

    Built at once from arrays: adding columns one by one (``assign``, ``.loc``) costs a few ms per
    column, more than the window sums of a card's few rows.
    """
    return pd.DataFrame({**{c: rows[c].to_numpy() for c in rows.columns}, **columns}, copy=False)


def _nullable(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
