"""Shared column transforms: PII tokens, timestamp/decimal/number parsing, reject reasons."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml.errors import ConfigError
from lakeml.transforms.pii import hmac_sha256_hex, last_digits, pii_key_from_env
from lakeml.transforms.segments import (
    coverage_segments,
    intersect_segments,
    merge_touching_segments,
    trailing_window_segments,
)
from lakeml.transforms.sessions import sessionize
from lakeml.transforms.standardize import (
    first_reject_reason,
    parse_boolean,
    parse_decimal,
    parse_finite_double,
    parse_int,
    parse_utc_timestamp,
    strip_bom,
    utc_offset_minutes,
)


@pytest.mark.parametrize("key", [b"k" * 16, b"a-much-longer-key-than-one-sha256-block-" * 3])
def test_hmac_matches_python_hmac_for_short_and_long_keys(spark, key):
    messages = ["4532011234567890", "10.0.0.1", "ünïcödé", ""]
    df = spark.createDataFrame([(m,) for m in [*messages, None]], "m string")
    got = df.select("m", hmac_sha256_hex(F.col("m"), key).alias("token"))
    expected = spark.createDataFrame(
        [(m, hmac.new(key, m.encode(), hashlib.sha256).hexdigest()) for m in messages] + [(None, None)],
        "m string, token string",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)


def test_pii_key_must_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("LAKEML_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="LAKEML_TEST_KEY .* not set.*no default"):
        pii_key_from_env("LAKEML_TEST_KEY")
    monkeypatch.setenv("LAKEML_TEST_KEY", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        pii_key_from_env("LAKEML_TEST_KEY")
    monkeypatch.setenv("LAKEML_TEST_KEY", "0123456789abcdef")
    assert pii_key_from_env("LAKEML_TEST_KEY") == b"0123456789abcdef"


def test_timestamps_need_a_zone_and_become_utc(spark):
    rows = [
        ("2026-11-20T14:03:07.123+01:00", dt.datetime(2026, 11, 20, 13, 3, 7, 123000), 60),
        ("2026-11-20T13:45:12.123Z", dt.datetime(2026, 11, 20, 13, 45, 12, 123000), 0),
        ("2026-11-20T14:00:00-05:30", dt.datetime(2026, 11, 20, 19, 30), -330),
        ("2026-11-20 14:00", None, None),  # local time without a zone is ambiguous
        ("1763647387123", None, None),  # epoch milliseconds
        ("20/11/2026 13:45:12", None, None),
        ("2026-13-40T00:00:00Z", None, None),  # matches the shape, not a date
    ]
    df = spark.createDataFrame([(r[0],) for r in rows], "t string")
    got = df.select(
        "t", parse_utc_timestamp(F.col("t")).alias("utc"), utc_offset_minutes(F.col("t")).alias("offset")
    )
    expected = spark.createDataFrame(
        rows,
        "t string, utc timestamp_ntz, offset int",
    ).select("t", F.col("utc").cast("timestamp").alias("utc"), "offset")
    # The offset is read from any zone suffix, even when the timestamp itself is invalid.
    got = got.withColumn("offset", F.when(F.col("utc").isNotNull(), F.col("offset")))
    assertDataFrameEqual(got, expected, checkRowOrder=False)


def test_numbers_decimals_and_booleans(spark):
    df = spark.createDataFrame(
        [
            ("12.50",),
            ("12,50",),
            ("-3",),
            ("N/A",),
            ("1e400",),
            ("NaN",),
            ("Infinity",),
            ("99999999999999999999",),
            (" 7 ",),
        ],
        "x string",
    )
    got = df.select(
        "x",
        parse_decimal(F.col("x"), 18, 2).alias("dec"),
        parse_finite_double(F.col("x")).alias("dbl"),
        parse_int(F.col("x")).alias("int"),
    )
    expected = spark.createDataFrame(
        [
            ("12.50", Decimal("12.50"), 12.5, None),
            ("12,50", Decimal("12.50"), None, None),
            ("-3", Decimal("-3.00"), -3.0, -3),
            ("N/A", None, None, None),
            ("1e400", None, None, None),
            ("NaN", None, None, None),
            ("Infinity", None, None, None),
            ("99999999999999999999", None, 1e20, None),  # overflows DECIMAL(18,2) and int
            (" 7 ", Decimal("7.00"), 7.0, 7),
        ],
        "x string, dec decimal(18,2), dbl double, int int",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)
    flags = spark.createDataFrame([("TRUE",), ("false",), ("yes",)], "b string").select(
        "b", parse_boolean(F.col("b")).alias("v")
    )
    assertDataFrameEqual(
        flags,
        spark.createDataFrame([("TRUE", True), ("false", False), ("yes", None)], "b string, v boolean"),
        checkRowOrder=False,
    )


def test_first_reject_reason_takes_the_first_failing_rule_and_ignores_nulls(spark):
    df = spark.createDataFrame([(1, None), (5, 2), (50, 50), (-1, 1)], "a int, b int")
    reason = first_reject_reason(
        [
            (F.col("a") < 0, "negative"),
            (F.col("b") > 10, F.concat(F.lit("big b "), F.col("b").cast("string"))),
            (F.col("a") > 10, "big a"),
        ]
    )
    got = df.select("a", reason.alias("reason"))
    expected = spark.createDataFrame(
        [(1, None), (5, None), (50, "big b 50"), (-1, "negative")], "a int, reason string"
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)


def test_bom_and_last_digits(spark):
    df = spark.createDataFrame([("\ufeff{}",), ("ok\ufffdx",), ("4532011234567890",)], "s string")
    got = df.select(
        strip_bom(F.col("s")).alias("stripped"),
        last_digits(F.col("s")).alias("last4"),
    )
    expected = spark.createDataFrame(
        [
            ("{}", "\ufeff{}"),  # shorter than 4: the whole text
            ("ok\ufffdx", "ok\ufffdx"),
            ("4532011234567890", "7890"),
        ],
        "stripped string, last4 string",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)


@pytest.mark.parametrize("rows", [1, 2, 5, 8, 13, 90, 144, 300])
def test_rolling_stats_from_running_sums_equal_sliding_frame_aggregates(spark, rows):
    """mean/std/slope from running sums and min/max from spans match Spark's own sliding-frame
    aggregates: one row, one span level, two levels (144 = 12^2, as in conf; 300 = several level-2
    spans), a window longer than a partition (200 rows), a second shorter window beside each,
    scattered NULLs and a NULL run longer than most windows."""
    from pyspark.sql import Window

    from lakeml.transforms.rolling import with_rolling_stats

    nulls = (F.col("id") % 7 == 0) | F.col("id").between(150, 185)
    df = spark.range(600).select(
        (F.col("id") % 3).alias("k"),
        F.col("id").alias("t"),
        F.when(nulls, None).otherwise(F.sin(F.col("id")) * 50 + F.col("id") / 10).alias("v"),
    )
    got = with_rolling_stats(df, ["v"], ["k"], ["t"], {"w": rows, "s": 3})
    frame = Window.partitionBy("k").orderBy("t").rowsBetween(-(rows - 1), 0)
    short = Window.partitionBy("k").orderBy("t").rowsBetween(-2, 0)
    pos = F.when(
        F.col("v").isNotNull(), F.row_number().over(Window.partitionBy("k").orderBy("t")).cast("double")
    )
    reference = df.withColumn("_x", pos).select(
        "k",
        "t",
        "v",
        F.avg("v").over(frame).alias("v_w_mean"),
        F.stddev_samp("v").over(frame).alias("v_w_std"),
        F.min("v").over(frame).alias("v_w_min"),
        F.max("v").over(frame).alias("v_w_max"),
        F.when(
            F.var_pop("_x").over(frame) > 0, F.covar_pop("_x", "v").over(frame) / F.var_pop("_x").over(frame)
        ).alias("v_w_slope"),
        F.min("v").over(short).alias("v_s_min"),
        F.max("v").over(short).alias("v_s_max"),
    )
    assert reference.where(F.col("v_w_std").isNull()).count() > 0  # frames with < 2 values are in the data
    if rows <= 8:  # frames with no value at all: min and max are NULL
        assert reference.where(F.col("v_w_max").isNull()).count() > 0
    assertDataFrameEqual(got.select(*reference.columns), reference, checkRowOrder=False, rtol=1e-9, atol=1e-9)


def test_trailing_window_segments_change_where_a_day_enters_or_leaves(spark):
    # Key a is active on the 1st, 2nd and 6th; window 3 days. Its content changes on the 1st (+1st),
    # 2nd (+2nd), 4th (1st leaves), 5th (2nd leaves: empty), 6th (+6th), 9th (empty). On the 4th of
    # key b its day enters while none leaves; a day leaving on the day another enters is one change.
    jan = {d: dt.date(2026, 1, d) for d in range(1, 32)}
    days = spark.createDataFrame(
        [("a", jan[d], v) for d, v in ((1, 1), (2, 10), (6, 100))]
        + [("b", jan[d], v) for d, v in ((1, 1), (4, 10))],
        "k string, day date, v long",
    )
    sums = lambda frame: [F.sum("v").over(frame).alias("v")]  # noqa: E731
    segments = [
        ("a", 1, 2, 1),
        ("a", 2, 4, 11),
        ("a", 4, 5, 10),
        ("a", 6, 9, 100),
        ("b", 1, 4, 1),
        ("b", 4, 7, 10),
    ]
    # ``until`` cuts the segments there and drops those after (the 7th: a's last one ends early).
    for until, expected in ((31, segments), (7, [(k, s, min(e, 7), v) for k, s, e, v in segments if s < 7])):
        got = trailing_window_segments(days, ["k"], "day", 3, sums, until=jan[until])
        assertDataFrameEqual(
            got.select("k", "segment_start", "segment_end", "v"),
            spark.createDataFrame(
                [(k, jan[s], jan[e], v) for k, s, e, v in expected],
                "k string, segment_start date, segment_end date, v long",
            ),
            checkRowOrder=False,
        )


def test_coverage_segments_merge_and_intersect(spark):
    jan = {d: dt.date(2026, 1, d) for d in range(1, 32)}
    intervals = spark.createDataFrame(
        [
            ("a", jan[1], jan[5], 2),
            ("a", jan[3], jan[8], 1),
            ("a", jan[5], jan[6], 4),
            ("b", jan[2], jan[3], 1),
        ],
        "k string, segment_start date, segment_end date, w long",
    )
    covered = coverage_segments(intervals, ["k"], F.col("w"))
    expected = spark.createDataFrame(
        [("a", jan[1], jan[3], 2), ("a", jan[3], jan[5], 3), ("a", jan[5], jan[6], 5),
         ("a", jan[6], jan[8], 1),
         ("b", jan[2], jan[3], 1)],
        "k string, segment_start date, segment_end date, covered long",
    )  # fmt: skip
    assertDataFrameEqual(covered, expected, checkRowOrder=False)

    runs = merge_touching_segments(covered.where(F.col("covered") >= 2), ["k"])
    expected_runs = [("a", jan[1], jan[6])]
    assertDataFrameEqual(runs, spark.createDataFrame(expected_runs, runs.schema), checkRowOrder=False)

    pieces = intersect_segments(intervals.where(F.col("w") != 4), runs, ["k"])
    expected_pieces = [("a", jan[1], jan[5], 2), ("a", jan[3], jan[6], 1)]
    assertDataFrameEqual(
        pieces.select(*intervals.columns),
        spark.createDataFrame(expected_pieces, intervals.schema),
        checkRowOrder=False,
    )


def test_sessionize_from_seeds_equals_one_pass_over_the_whole_history(spark):
    """A run that starts at midnight, seeded with each key's last event and session start, matches
    sessionizing the history in one pass (sessions open at midnight continue, others do not)."""

    def t(hour: int, minute: int = 0, day: int = 2) -> dt.datetime:
        return dt.datetime(2026, 11, day, hour, minute, tzinfo=dt.UTC)

    events = [
        ("a", "a1", t(22, 0, 1)), ("a", "a2", t(23, 50, 1)), ("a", "a3", t(0, 10)), ("a", "a4", t(0, 40)),
        ("a", "a5", t(1, 11)),  # 31 minutes: a new session
        ("b", "b1", t(23, 0, 1)), ("b", "b2", t(0, 10)),  # 70 minutes across midnight: new
        ("c", "c1", t(0, 5)), ("c", "c2", t(0, 5)),  # no history; a tie
    ]  # fmt: skip
    history = spark.createDataFrame(events, "key string, id string, ts timestamp")
    whole = sessionize(history, ["key"], "ts", "id", 30)
    midnight = F.lit(t(0))
    seeds = (
        whole.where(F.col("ts") < midnight)
        .groupBy("key")
        .agg(F.max("ts").alias("ts"), F.max("session_start_ts").alias("session_start_ts"))
    )
    seeded = sessionize(history.where(F.col("ts") >= midnight), ["key"], "ts", "id", 30, seeds=seeds)
    assertDataFrameEqual(seeded, whole.where(F.col("ts") >= midnight), checkRowOrder=False)
    starts = {r.id: r.session_start_ts for r in seeded.collect()}
    assert starts == {
        "a3": t(23, 50, 1).replace(tzinfo=None), "a4": t(23, 50, 1).replace(tzinfo=None),
        "a5": t(1, 11).replace(tzinfo=None), "b2": t(0, 10).replace(tzinfo=None),
        "c1": t(0, 5).replace(tzinfo=None), "c2": t(0, 5).replace(tzinfo=None),
    }  # fmt: skip
    unseeded = {
        r.id: r.session_start_ts
        for r in sessionize(history.where(F.col("ts") >= midnight), ["key"], "ts", "id", 30).collect()
    }
    assert unseeded["a3"] == t(0, 10).replace(tzinfo=None)  # the premise: without seeds a3 starts a session
