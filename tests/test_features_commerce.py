"""Commerce gold features: hand-computed values, point-in-time, window edges, bots, sessions, incremental."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml.config import Config, load_config
from lakeml.domains.commerce import features
from lakeml.domains.commerce.features import (
    ITEM_STATS_SCHEMA,
    USER_ITEM_INTERACTIONS_SCHEMA,
    build_commerce_features,
    counted_events,
    item_stats,
    pair_days,
    read_range,
    user_item_interactions,
)
from lakeml.domains.commerce.silver import CLICKSTREAM_SILVER_SCHEMA
from lakeml.lakehouse import DeltaTableRef, Lakehouse
from lakeml.steps import DateRange

D = date(2026, 11, 20)
# half-life 1 day so decays are powers of two; windows: interactions 3 days, item stats 2 days.
SETTINGS = [
    "features.commerce.half_life_days=1",
    "features.commerce.lookback_days=3",
    "features.commerce.item_window_days=2",
    "features.commerce.session_gap_minutes=30",
    "features.commerce.bot_max_events_per_minute=3",
    "features.commerce.bot_max_events_per_day=4",
    "features.commerce.min_user_events=1",
    "features.commerce.min_item_users=1",
]
KEY = ["user_id", "item_id", "as_of_date"]


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)


def event(
    eid: str,
    ts: datetime,
    user: str,
    kind: str,
    item: str,
    category: str | None,
    quantity: int | None = None,
    rating: int | None = None,
) -> tuple:
    return (
        eid, ts, 0, user, "s", kind, item, category, Decimal("1.00"), quantity, rating,
        None, None, None, None, None, ts.date(), "test", ts,
    )  # fmt: skip


# The hand-computed scenario (as of D = 2026-11-20, window 11-18..11-20, item window 11-19..11-20).
EVENTS = [
    # u1/i1: a tie at 12:00, exactly midnight at the start of D (in) and at its end (out),
    # exactly the window start (in) and one microsecond before it (out).
    event("e01", at(20, 12), "u1", "view", "i1", "books"),
    event("e02", at(20, 12), "u1", "add_to_cart", "i1", "books", quantity=2),
    event("e03", at(20), "u1", "purchase", "i1", "books", quantity=1),
    event("e04", at(21), "u1", "view", "i1", "books"),
    event("e05", at(18), "u1", "view", "i1", "books"),
    event("e06", at(17, 23, 59, 59, 999999), "u1", "view", "i1", "books"),
    # u1/i2: no category; two ratings at the same instant (the larger event_id is the latest).
    event("e07", at(19, 10), "u1", "rating", "i2", None, rating=4),
    event("e08", at(19, 10), "u1", "rating", "i2", None, rating=2),
    event("e09", at(19, 18), "u1", "view", "i2", None),
    # u2: a single (negative) event.
    event("e10", at(20, 18), "u2", "remove_from_cart", "i1", "books", quantity=1),
    # u3: 4 events within 60 s on D (bot day: all of that day excluded); 11-19 is a normal day.
    *[event(f"e1{i + 1}", at(20, 10, 0, s), "u3", "purchase", "i3", "books", 1) for i, s in enumerate((0, 10,
                                                                                                       20,
                                                                                                           59))],
    event("e15", at(19, 12), "u3", "view", "i1", "books"),
    # u4: 5 events on 11-19, hours apart: more than 4 a day, so a bot day.
    *[event(f"e2{h}", at(19, h), "u4", "view", "i4", "toys") for h in (1, 3, 5, 7, 9)],
    # u5: a gap of exactly 30 min (same session), then 30 min + 1 ms (new session).
    event("e31", at(20, 8), "u5", "view", "i5", "toys"),
    event("e32", at(20, 8, 30), "u5", "view", "i5", "toys"),
    event("e33", at(20, 9, 0, 0, 1000), "u5", "view", "i5", "toys"),
    event("e34", at(19, 20), "u5", "view", "i6", "books"),
]  # fmt: skip


def settings(tmp_path: Path, extra: tuple[str, ...] = ()) -> Config:
    return load_config("test", [f"lakehouse.root={tmp_path}", *SETTINGS, *extra])


def compute(
    spark: SparkSession, cfg: Config, rows: list[tuple], first: date, last: date
) -> tuple[DataFrame, DataFrame]:
    c = cfg.features.commerce
    days = pair_days(counted_events(spark.createDataFrame(rows, CLICKSTREAM_SILVER_SCHEMA), c), c)
    return user_item_interactions(days, c, first, last), item_stats(days, c, first, last)


def interaction(user, item, strength, views=0, carts=0, removes=0, purchases=0, units=0, events=1, sessions=1,
                last=None, rating=None, rating_ts=None, ratings=0, day=D) -> tuple:  # fmt: skip
    return (user, item, strength, views, carts, removes, purchases, units, events, sessions, last, rating,
            rating_ts, ratings, day)  # fmt: skip


def test_interactions_and_item_stats_by_hand(spark: SparkSession, tmp_path: Path) -> None:
    inter, items = compute(spark, settings(tmp_path), EVENTS, D, D)
    u5_strength = 2 ** -(16 / 24) + 2 ** -(15.5 / 24) + 2 ** -((15 * 3600 - 0.001) / 86400)
    expected = [
        # e01 + e02 at age 0.5, e03 at age 1 (midnight start of D), e05 at age 3 (window start).
        interaction(
            "u1",
            "i1",
            2**-0.5 + 3 * 2**-0.5 + 5 * 2**-1 + 2**-3,
            views=2,
            carts=1,
            purchases=1,
            units=1,
            events=4,
            sessions=3,
            last=at(20, 12),
        ),
        # sessions of e05 (began with e06 before the window), e03, e01/e02.
        interaction(
            "u1",
            "i2",
            2**-1.25,
            views=1,
            events=3,
            sessions=2,
            last=at(19, 18),
            rating=2,
            rating_ts=at(19, 10),
            ratings=2,
        ),
        interaction("u2", "i1", -2 * 2**-0.25, removes=1, last=at(20, 18)),
        interaction("u3", "i1", 2**-1.5, views=1, last=at(19, 12)),
        interaction("u5", "i5", u5_strength, views=3, events=3, sessions=2, last=at(20, 9, 0, 0, 1000)),
        interaction("u5", "i6", 2 ** -(28 / 24), views=1, last=at(19, 20)),
    ]
    assertDataFrameEqual(
        inter.orderBy(*KEY),
        spark.createDataFrame(expected, USER_ITEM_INTERACTIONS_SCHEMA),
        checkRowOrder=True,
        rtol=1e-12,
    )
    expected_items = [
        # i1: u1 e01 e02 e03 (e05 is outside the 2-day window), u2 e10, u3 e15.
        ("i1", "books", 2, 1, 1, 5, 3, 0, None, 1, 5 / 6, D),
        ("i2", None, 1, 0, 0, 3, 1, 2, 3.0, None, None, D),
        ("i5", "toys", 3, 0, 0, 3, 1, 0, None, 1, 1.0, D),
        ("i6", "books", 1, 0, 0, 1, 1, 0, None, 2, 1 / 6, D),
    ]
    assertDataFrameEqual(
        items.orderBy("item_id", "as_of_date"),
        spark.createDataFrame(expected_items, ITEM_STATS_SCHEMA),
        checkRowOrder=True,
        rtol=1e-12,
    )


def test_minimum_activity_and_empty_history(spark: SparkSession, tmp_path: Path) -> None:
    cfg = settings(tmp_path, ("features.commerce.min_user_events=2", "features.commerce.min_item_users=2"))
    inter, _ = compute(spark, cfg, EVENTS, D, D)
    # u2, u3 have one counted event in the window; i2, i5, i6 one user each.
    assert [tuple(r) for r in inter.select("user_id", "item_id").collect()] == [("u1", "i1")]
    # Empty history: no events up to 11-16 (the first is on 11-17) gives no rows.
    inter, items = compute(spark, cfg, EVENTS, date(2026, 11, 16), date(2026, 11, 16))
    assert inter.count() == 0 and items.count() == 0


def random_events(rng: random.Random, n: int, prefix: str, start: datetime, end: datetime) -> list[tuple]:
    kinds = ["view", "view", "view", "add_to_cart", "remove_from_cart", "purchase", "rating"]
    span = int((end - start).total_seconds())
    rows = []
    for i in range(n):
        ts = start + timedelta(seconds=rng.randrange(span) // 600 * 600)  # coarse grid: ties and midnights
        kind = rng.choice(kinds)
        rows.append(
            event(
                f"{prefix}{i:04d}", ts, f"u{rng.randrange(4)}", kind, f"i{rng.randrange(5)}",
                rng.choice(["books", "toys", None]),
                quantity=rng.randint(1, 3) if kind in ("add_to_cart", "remove_from_cart",
                                                       "purchase") else None,
                rating=rng.randint(1, 5) if kind == "rating" else None,
            )
        )  # fmt: skip
    return rows


def test_point_in_time_property(spark: SparkSession, tmp_path: Path) -> None:
    """Adding, altering or deleting events at or after the end of D never changes rows as of <= D."""
    cfg = settings(tmp_path)
    rng = random.Random(20261120)
    end_of_d = at(21)
    history = random_events(rng, 120, "h", at(15), at(23))
    first, last = date(2026, 11, 18), date(2026, 11, 22)
    early = F.col("as_of_date") <= F.lit(D)
    base_inter, base_items = compute(spark, cfg, history, first, last)
    expected_inter = base_inter.where(early).orderBy(*KEY).collect()
    expected_items = base_items.where(early).orderBy("item_id", "as_of_date").collect()
    assert any(r.as_of_date == D for r in expected_inter) and any(r.as_of_date == D for r in expected_items)

    changed = [r for r in history if r[1] >= end_of_d and rng.random() < 0.7]  # delete some later events
    changed = [(*r[:5], rng.choice(["purchase", "view"]), *r[6:]) for r in changed]  # alter their type
    changed += random_events(rng, 40, "n", end_of_d, at(23))  # add new ones (incl. some at 00:00 of D + 1)
    inter, items = compute(spark, cfg, [r for r in history if r[1] < end_of_d] + changed, first, last)
    assertDataFrameEqual(inter.where(early).orderBy(*KEY), expected_inter, checkRowOrder=True, rtol=1e-12)
    assertDataFrameEqual(
        items.where(early).orderBy("item_id", "as_of_date"), expected_items, checkRowOrder=True, rtol=1e-12
    )


def test_sessions_across_midnight_and_the_window_start_match_a_plain_recount(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Long sessions that cross midnights and the window start count once per window, as a recount says."""
    cfg = settings(tmp_path, ("features.commerce.bot_max_events_per_day=1000",))
    rng = random.Random(1121)
    rows, t = [], {"u1": at(15), "u2": at(15, 7)}
    for user in t:
        while t[user] < at(22):  # gaps around the 30-minute session gap: sessions run for hours
            t[user] += timedelta(minutes=rng.choice([10, 20, 29, 30, 31, 45, 90, 600]))
            rows.append(event(f"{user}-{len(rows):04d}", t[user], user, "view", f"i{rng.randrange(3)}", None))
    # The recount: each user's session starts, then per (user, item, D) the distinct starts in the window.
    start_of: dict[str, datetime] = {}
    for user in t:
        previous = None
        for r in sorted((r for r in rows if r[3] == user), key=lambda r: (r[1], r[0])):
            starts_new = previous is None or r[1] - previous[1] > timedelta(minutes=30)
            start_of[r[0]] = r[1] if starts_new else start_of[previous[0]]
            previous = r
    first, last = date(2026, 11, 17), date(2026, 11, 21)
    expected = {}
    for as_of in (first + timedelta(days=i) for i in range((last - first).days + 1)):
        for r in rows:
            if as_of - timedelta(days=2) <= r[1].date() <= as_of:
                expected.setdefault((r[3], r[6], as_of), set()).add(start_of[r[0]])
    # The data holds what the carry rule is for: a pair's session on two days, one begun before its window.
    days_of: dict[tuple, set[date]] = {}
    for r in rows:
        days_of.setdefault((r[3], r[6], start_of[r[0]]), set()).add(r[1].date())
    assert any(len(d) > 1 for d in days_of.values())
    assert any(min(s).date() < k[2] - timedelta(days=2) for k, s in expected.items())
    assert max(len(s) for s in expected.values()) > 3
    recount = [(*k, len(s)) for k, s in sorted(expected.items())]

    # The full history, and just the lookback of the first as-of date (as an incremental run reads).
    for history in (rows, [r for r in rows if r[1].date() >= first - timedelta(days=2)]):
        inter, _ = compute(spark, cfg, history, first, last)
        assertDataFrameEqual(
            inter.select(*KEY, "sessions").orderBy(*KEY),
            spark.createDataFrame(recount, "user_id string, item_id string, as_of_date date, sessions long"),
            checkRowOrder=True,
        )


def recount_interactions(rows: list[tuple], cfg: Config, first: date, last: date) -> list[tuple]:
    """The module rules as a plain loop over events (no bot days in ``rows``): the expected table."""
    c = cfg.features.commerce
    start_of: dict[str, datetime] = {}
    previous: dict[str, tuple] = {}
    for r in sorted(rows, key=lambda r: (r[1], r[0])):
        before = previous.get(r[3])
        new = before is None or r[1] - before[1] > timedelta(minutes=c.session_gap_minutes)
        start_of[r[0]] = r[1] if new else start_of[before[0]]
        previous[r[3]] = r
    expected = []
    for as_of in (first + timedelta(days=i) for i in range((last - first).days + 1)):
        end = datetime.combine(as_of + timedelta(days=1), datetime.min.time(), UTC)
        window = [r for r in rows if as_of - timedelta(days=c.lookback_days - 1) <= r[1].date() <= as_of]
        user_events = {u: sum(r[3] == u for r in window) for u in {r[3] for r in window}}
        item_users = {i: len({r[3] for r in window if r[6] == i}) for i in {r[6] for r in window}}
        for user, item in sorted({(r[3], r[6]) for r in window}):
            if user_events[user] < c.min_user_events or item_users[item] < c.min_item_users:
                continue
            pair = [r for r in window if (r[3], r[6]) == (user, item)]
            kinds = [r[5] for r in pair]
            ratings = sorted((r[1], r[0], r[10]) for r in pair if r[5] == "rating")
            strength = sum(
                c.event_weights.get(r[5], 0.0)
                * 2 ** (-(end - r[1]).total_seconds() / 86400 / c.half_life_days)
                for r in pair
            )
            expected.append(
                interaction(
                    user, item, strength, views=kinds.count("view"), carts=kinds.count("add_to_cart"),
                    removes=kinds.count("remove_from_cart"), purchases=kinds.count("purchase"),
                    units=sum(r[9] for r in pair if r[5] == "purchase"), events=len(pair),
                    sessions=len({start_of[r[0]] for r in pair}), last=max(r[1] for r in pair),
                    rating=ratings[-1][2] if ratings else None, rating_ts=ratings[-1][0] if ratings else None,
                    ratings=len(ratings), day=as_of,
                )
            )  # fmt: skip
    return expected


def test_interactions_match_a_plain_recount_while_activity_filters_change(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Sparse random activity: users and items pass and fail the minimum filters from date to date."""
    cfg = settings(
        tmp_path,
        (
            "features.commerce.min_user_events=3",
            "features.commerce.min_item_users=2",
            "features.commerce.bot_max_events_per_day=1000",
            "features.commerce.bot_max_events_per_minute=1000",
        ),
    )
    rng = random.Random(1204)
    kinds = ["view", "view", "add_to_cart", "remove_from_cart", "purchase", "rating"]
    rows = []
    for i in range(150):
        ts = at(12) + timedelta(minutes=rng.randrange(12 * 24 * 6) * 10)  # 11-12 .. 11-23, ties
        kind = rng.choice(kinds)
        rows.append(
            event(
                f"e{i:03d}", ts, f"u{rng.randrange(12)}", kind, f"i{rng.randrange(8)}", None,
                quantity=rng.randint(1, 3) if kind in ("add_to_cart", "remove_from_cart",
                                                       "purchase") else None,
                rating=rng.randint(1, 5) if kind == "rating" else None,
            )
        )  # fmt: skip
    first, last = date(2026, 11, 13), date(2026, 11, 24)
    expected = recount_interactions(rows, cfg, first, last)
    # The data holds what the filters are for: an active user, and an item, passing on one date and not
    # on another.
    passes: dict[tuple[str, int], set[bool]] = {}
    for d in (first + timedelta(days=i) for i in range((last - first).days + 1)):
        window = [r for r in rows if d - timedelta(days=2) <= r[1].date() <= d]
        for u in {r[3] for r in window}:
            passes.setdefault((u, 3), set()).add(sum(r[3] == u for r in window) >= 3)
        for i in {r[6] for r in window}:
            passes.setdefault((i, 6), set()).add(len({r[3] for r in window if r[6] == i}) >= 2)
    assert {3, 6} <= {column for (_, column), seen in passes.items() if seen == {True, False}}
    assert len(expected) > 40

    inter, _ = compute(spark, cfg, rows, first, last)
    assertDataFrameEqual(
        inter.orderBy(*KEY),
        spark.createDataFrame(expected, USER_ITEM_INTERACTIONS_SCHEMA).orderBy(*KEY),
        checkRowOrder=True,
        rtol=1e-12,
    )


def test_incremental_equals_full_recompute_and_rerun_is_idempotent(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Day by day, with a late event, the tables equal one full recompute; a rerun changes nothing."""
    # u6's sessions cross both midnights: a run that starts at 11-19 must continue 11-18's session.
    events = EVENTS + [
        event(f"e4{i}", ts, "u6", "view", "i7", "toys")
        for i, ts in enumerate((at(18, 23, 50), at(19, 0, 10), at(19, 23, 55), at(20, 0, 5)))
    ]
    # The reference: every event in silver, one run for every date.
    full_cfg = settings(tmp_path / "full")
    full_lake = Lakehouse(spark, full_cfg)
    full_lake.table("silver", "clickstream").create(CLICKSTREAM_SILVER_SCHEMA, ["event_date"]).append(
        spark.createDataFrame(events, CLICKSTREAM_SILVER_SCHEMA)
    )
    full = build_commerce_features(spark, full_cfg, DateRange(date(2026, 11, 18), date(2026, 11, 21))).details
    assert (
        full["user_item_interactions"] == full_lake.table("gold", "user_item_interactions").read().count() > 0
    )

    # Daily: yesterday's run, then D's events arrive with one event of yesterday that came late.
    cfg = settings(tmp_path / "daily")
    lake = Lakehouse(spark, cfg)
    silver = lake.table("silver", "clickstream").create(CLICKSTREAM_SILVER_SCHEMA, ["event_date"])
    assert build_commerce_features(spark, cfg, DateRange.single(D)).details == {
        "user_item_interactions": 0,
        "item_stats": 0,
        "events": 0,
    }
    late = [r for r in events if r[0] == "e09"]
    assert late[0][16] == D - timedelta(days=1)
    silver.append(
        spark.createDataFrame([r for r in events if r[16] < D and r not in late], CLICKSTREAM_SILVER_SCHEMA)
    )
    build_commerce_features(spark, cfg, DateRange.single(D - timedelta(days=1)))
    silver.append(spark.createDataFrame([r for r in events if r[16] >= D] + late, CLICKSTREAM_SILVER_SCHEMA))

    reads: list[tuple[str, list]] = []
    original = DeltaTableRef.read

    def spy(self: DeltaTableRef, *args: object, **kwargs: object) -> DataFrame:
        reads.append((self.uri, list(kwargs.get("where", ()))))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DeltaTableRef, "read", spy)
    incremental = build_commerce_features(spark, cfg, DateRange.single(D)).details
    # Silver is read for D and for the day the late event landed in; the older days' aggregates are reused.
    assert [w for uri, w in reads if uri == silver.uri] == [
        [("event_date", ">=", D - timedelta(days=1)), ("event_date", "<=", D)]
    ]
    on_d = [("as_of_date", "=", D)]
    assert read_range(cfg.features.commerce, D, D) == (date(2026, 11, 18), D)
    # Counted events of 11-18..D: u1 7, u2 1, u3 1 (its bot day excluded), u4 0 (bot day), u5 4, u6 4.
    assert incremental == {"user_item_interactions": 7, "item_stats": 5, "events": 17}
    u6 = lake.table("gold", "user_item_interactions").read(where=on_d).where("user_id = 'u6'")
    assert [r.sessions for r in u6.collect()] == [2]

    for name, key in (("user_item_interactions", KEY), ("item_stats", ["item_id", "as_of_date"])):
        assertDataFrameEqual(
            lake.table("gold", name).read(where=on_d).orderBy(*key),
            full_lake.table("gold", name).read(where=on_d).orderBy(*key),
            checkRowOrder=True,
            rtol=1e-9,
        )
    # The stored aggregates (session starts included) are those of one pass over the whole history.
    days = [("event_date", ">=", date(2026, 11, 17)), ("event_date", "<=", D)]
    pair_day = ["user_id", "item_id", "event_date"]
    assertDataFrameEqual(
        lake.table("gold", "user_item_days").read(where=days).orderBy(*pair_day),
        full_lake.table("gold", "user_item_days").read(where=days).orderBy(*pair_day),
        checkRowOrder=True,
        rtol=1e-12,
    )

    # A rerun reads no silver and replaces the day's partitions with the same rows.
    tables = [lake.table("gold", n) for n in ("user_item_interactions", "item_stats", "user_item_days")]
    snapshots = [
        t.read().orderBy(*t.schema().fieldNames()[:2], t.partition_columns()[0]).collect() for t in tables
    ]
    reads.clear()
    assert build_commerce_features(spark, cfg, DateRange.single(D)).details == incremental
    assert [w for uri, w in reads if uri == silver.uri] == []
    for table, snapshot in zip(tables, snapshots, strict=True):
        ordered = table.read().orderBy(*table.schema().fieldNames()[:2], table.partition_columns()[0])
        assertDataFrameEqual(ordered, snapshot, checkRowOrder=True)

    # Other settings: the stored aggregates of the whole window are recomputed.
    reads.clear()
    build_commerce_features(
        spark,
        settings(tmp_path / "daily", ("features.commerce.session_gap_minutes=45",)),
        DateRange.single(D),
    )
    assert [w for uri, w in reads if uri == silver.uri] == [
        [("event_date", ">=", date(2026, 11, 18)), ("event_date", "<=", D)]
    ]


def test_features_module_has_no_python_udf() -> None:
    source = Path(features.__file__).read_text()
    assert (
        "udf(" not in source
        and "@udf" not in source
        and "collect()" not in source
        and "toPandas" not in source
    )
