"""gold/machine_features: rolling windows, regime normalization, as-of maintenance, RUL labels, reruns."""

from __future__ import annotations

import datetime as dt
import math
import random

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml.config import load_config
from lakeml.domains.maintenance.features import (
    GOLD_TABLE,
    MACHINE_FEATURES_SCHEMA,
    build_machine_features,
    input_ranges,
)
from lakeml.domains.maintenance.silver import (
    MAINTENANCE_SILVER_SCHEMA,
    SENSORS,
    TELEMETRY_SILVER_SCHEMA,
)
from lakeml.lakehouse import Lakehouse
from lakeml.steps import DateRange
from lakeml.transforms.asof import asof_join
from lakeml.transforms.rolling import with_rolling_stats

D0, D1, D2, D3 = (dt.date(2026, 11, 19) + dt.timedelta(days=i) for i in range(4))
REGIME = (0.25, 0.5, 60.0)  # the regime string of these settings is "0.25|0.5|60.0"
# Small windows and horizons so every value below can be computed by hand.
TEST_FEATURES = {
    "short_window_readings": 2,
    "long_window_readings": 3,
    "rul_cap_cycles": 4,  # 40 minutes: labels look one day ahead
    "fails_within_cycles": 2,
    "cycle_minutes": 10,
    "lookback_days": 1,
    "regime_stats_days": 1,
    "maintenance_lookback_days": 2,
    "regime_round_step": 0.05,
}
LABELS = ("rul_cycles", "fails_within")
FEATURES = [f.name for f in MACHINE_FEATURES_SCHEMA if f.name not in LABELS]


def at(day: dt.date, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day) + dt.timedelta(
        hours=hour, minutes=minute, seconds=second
    )


def make_config(tmp_path, **overrides):
    settings = {**TEST_FEATURES, **overrides}
    return load_config(
        "test",
        [f"lakehouse.root={tmp_path}", *[f"features.maintenance.{k}={v}" for k, v in settings.items()]],
    )


def reading(machine, ts, cycle, regime=REGIME, noise=0.0, **sensors):
    values = {s: sensors.get(s) for s in SENSORS}
    settings = (regime[0] + noise, regime[1] - noise, regime[2])
    return (machine, ts, 0, cycle, *settings, *values.values(), "4.0.1", ts.date(), "test", ts)


def event(machine, ts, kind):
    return (machine, ts, 0, kind, None, ts.date(), "test", ts)


def write_silver(spark, config, readings=(), events=()):
    lake = Lakehouse(spark, config)
    for name, schema, rows in (
        ("telemetry", TELEMETRY_SILVER_SCHEMA, readings),
        ("maintenance", MAINTENANCE_SILVER_SCHEMA, events),
    ):
        table = lake.table("silver", name).create(schema, ["event_date"])
        if rows:
            table.append(spark.createDataFrame(list(rows), schema))


def gold(spark, config, where=()):
    return Lakehouse(spark, config).table(*GOLD_TABLE).read(where=list(where))


def reference_readings(day):
    """Another machine's readings the day before: temperature mean 10, population std 2 in REGIME."""
    return [
        reading("REF", at(day, 12), 1, temperature=8.0),
        reading("REF", at(day, 12, 10), 2, temperature=12.0, noise=0.004),  # rounds to the same regime
    ]


def test_windows_edges_nulls_and_regime_normalization(spark, tmp_path):
    """Empty history (first reading, no regime reference), exactly N readings, NULL sensors, z-scores."""
    config = make_config(tmp_path)
    write_silver(
        spark,
        config,
        [
            *reference_readings(D0),
            reading("M1", at(D1, 0), 1, temperature=10.0),  # z 0: the first reading, a single event
            reading("M1", at(D1, 0, 10), 2, temperature=14.0),  # z 2
            reading("M1", at(D1, 0, 20), 3),  # temperature absent
            reading("M1", at(D1, 0, 30), 4, temperature=16.0),  # z 3: exactly 3 readings in the long window
            reading("M2", at(D1, 0, 30), 1, regime=(1.0, 1.0, 100.0), temperature=1.0),  # no reference
        ],
    )
    counts = build_machine_features(spark, config, DateRange.single(D1)).details
    assert counts == {"telemetry_rows": 7, "maintenance_rows": 0, "machine_features_rows": 5}

    stats = ("mean", "std", "min", "max", "slope")
    columns = [
        "machine_id",
        "as_of",
        "regime",
        "long_window_count",
        "temperature_z",
        *[f"temperature_{w}_{s}" for w in ("short", "long") for s in stats],
    ]
    r2, h = math.sqrt(2.0), math.sqrt(0.5)
    expected = [
        ("M1", at(D1, 0), "0.25|0.5|60.0", 1, 0.0, 0.0, None, 0.0, 0.0, None, 0.0, None, 0.0, 0.0, None),
        ("M1", at(D1, 0, 10), "0.25|0.5|60.0", 2, 2.0, 1.0, r2, 0.0, 2.0, 2.0, 1.0, r2, 0.0, 2.0, 2.0),
        ("M1", at(D1, 0, 20), "0.25|0.5|60.0", 3, None, 2.0, None, 2.0, 2.0, None, 1.0, r2, 0.0, 2.0, 2.0),
        ("M1", at(D1, 0, 30), "0.25|0.5|60.0", 3, 3.0, 3.0, None, 3.0, 3.0, None, 2.5, h, 2.0, 3.0, 0.5),
        ("M2", at(D1, 0, 30), "1.0|1.0|100.0", 1, *[None] * 11),
    ]
    got = gold(spark, config).select(*columns).orderBy("machine_id", "as_of")
    assertDataFrameEqual(got, spark.createDataFrame(expected, got.schema), checkRowOrder=True)
    typed = [(f.name, f.dataType) for f in MACHINE_FEATURES_SCHEMA]
    assert [(f.name, f.dataType) for f in gold(spark, config).schema] == typed
    # Sensors without any value stay NULL everywhere.
    assert gold(spark, config).where(F.col("rpm_long_mean").isNotNull()).count() == 0


def test_rolling_ties_in_time_are_ordered_by_the_tiebreaker(spark):
    t = dt.datetime(2026, 11, 20, 8)
    df = spark.createDataFrame(
        [("e", t, 2, 5.0), ("e", t, 1, 1.0), ("f", t, 1, 7.0)], "id string, ts timestamp, cycle int, v double"
    )
    got = with_rolling_stats(df, ["v"], ["id"], ["ts", "cycle"], {"w": 2}, stats=("mean", "slope"))
    expected = spark.createDataFrame(
        [("e", t, 1, 1.0, 1.0, None), ("e", t, 2, 5.0, 3.0, 4.0), ("f", t, 1, 7.0, 7.0, None)],
        "id string, ts timestamp, cycle int, v double, v_w_mean double, v_w_slope double",
    )
    assertDataFrameEqual(got.orderBy("id", "cycle"), expected, checkRowOrder=True)


def test_asof_join_ties_count_as_before_backward_and_not_after_forward(spark):
    t = dt.datetime(2026, 11, 20, 8)
    left = spark.createDataFrame([("m", t)], "id string, ts timestamp")
    right = spark.createDataFrame(
        [("m", t - dt.timedelta(hours=1), "old"), ("m", t, "tie"), ("m", t + dt.timedelta(hours=1), "next")],
        "id string, ts timestamp, tag string",
    )
    back = asof_join(left, right, ["id"], "ts", ["tag"])
    ahead = asof_join(left, right.withColumnRenamed("tag", "after"), ["id"], "ts", ["after"], "forward")
    assert [tuple(r) for r in back.join(ahead, ["id", "ts"]).collect()] == [("m", t, "tie", "next")]


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_asof_join_equals_a_brute_force_range_join(spark, direction):
    """Three keys, times on a coarse grid (many ties on both sides), keys with no right rows."""
    left = spark.range(300).select(
        (F.col("id") % 4).cast("string").alias("id"),
        F.timestamp_seconds((F.col("id") * 7919 % 50) * 60).alias("ts"),
        F.col("id").alias("n"),
    )
    right = spark.range(60).select(
        (F.col("id") % 3).cast("string").alias("id"),
        F.timestamp_seconds((F.col("id") * 104729 % 50) * 60).alias("ts"),
        F.format_string("t%03d", F.col("id") * 37 % 60).alias("tag"),
    )
    got = asof_join(left, right, ["id"], "ts", ["tag"], direction)
    r = right.select(F.col("id").alias("r_id"), F.col("ts").alias("r_ts"), "tag")
    reach = r.r_ts <= left.ts if direction == "backward" else r.r_ts > left.ts
    pick = F.max if direction == "backward" else F.min
    expected = (
        left.join(r, (left.id == r.r_id) & reach, "left")
        .groupBy("id", "ts", "n")
        .agg(pick(F.when(F.col("r_ts").isNotNull(), F.struct("r_ts", "tag"))).alias("best"))
        .select("id", "ts", "n", F.col("best.tag").alias("tag"))
    )
    assert expected.where(F.col("tag").isNull()).count() > 0  # rows with nothing in reach are in the data
    assertDataFrameEqual(got, expected, checkRowOrder=False)


def test_maintenance_asof_rul_cap_and_censoring_across_a_repair(spark, tmp_path):
    config = make_config(tmp_path)
    readings = [reading("M1", at(D1, 0, 10 * i), i + 1) for i in range(7)]  # 00:00 .. 01:00
    readings += [reading("M1", at(D1, 3, 10 * i), i + 1) for i in range(6)]  # 03:00 .. 03:50, new life
    readings += [
        reading("M1", at(D1, 4, 20), 1),  # after the overhaul, end of known data
        reading("M2", at(D1, 0), 50),
        reading("M3", at(D1, 0), 60),
    ]
    events = [
        event("M1", at(D0, 23), "preventive"),
        event("M1", at(D1, 1, 5), "failure"),
        event("M1", at(D1, 3), "repair"),  # same ts as a reading: the reading is after the repair
        event("M1", at(D1, 4, 15), "preventive"),
        event("M2", at(D1 - dt.timedelta(days=2), 0), "preventive"),  # exactly at the lookback edge
        event("M3", at(D1 - dt.timedelta(days=3), 23, 59, 59), "preventive"),  # just outside it
    ]
    write_silver(spark, config, readings, events)
    build_machine_features(spark, config, DateRange.single(D1))

    columns = ["machine_id", "as_of", "cycles_since_maintenance", "last_maintenance_kind", *LABELS]
    expected = [
        # life 1 fails at 01:05: RUL 6, 5 capped at 4; 4 = the cap; fails within 2 cycles from 00:40
        ("M1", at(D1, 0, 0), 6, "preventive", 4, False),
        ("M1", at(D1, 0, 10), 7, "preventive", 4, False),
        ("M1", at(D1, 0, 20), 8, "preventive", 4, False),
        ("M1", at(D1, 0, 30), 9, "preventive", 3, False),
        ("M1", at(D1, 0, 40), 10, "preventive", 2, True),
        ("M1", at(D1, 0, 50), 11, "preventive", 1, True),
        ("M1", at(D1, 1, 0), 12, "preventive", 0, True),
        # life 2 is censored by the 04:15 overhaul; its last reading (03:50) proves the survival
        ("M1", at(D1, 3, 0), 0, "repair", 4, False),
        ("M1", at(D1, 3, 10), 1, "repair", 4, False),  # survived exactly the cap
        ("M1", at(D1, 3, 20), 2, "repair", None, False),
        ("M1", at(D1, 3, 30), 3, "repair", None, None),  # survived exactly the horizon: unknown
        ("M1", at(D1, 3, 40), 4, "repair", None, None),
        ("M1", at(D1, 3, 50), 5, "repair", None, None),
        ("M1", at(D1, 4, 20), 0, "preventive", None, None),
        ("M2", at(D1, 0), 144 * 2, "preventive", None, None),
        ("M3", at(D1, 0), None, None, None, None),
    ]
    got = gold(spark, config).select(*columns).orderBy("machine_id", "as_of")
    assertDataFrameEqual(got, spark.createDataFrame(expected, got.schema), checkRowOrder=True)


def generated(seed, start=D0, days=4, machines=("M1", "M2")):
    """Random readings every 90 minutes (sometimes missing or with NULL sensors) and maintenance rows."""
    rng = random.Random(seed)
    regimes = [REGIME, (1.0, 1.0, 100.0)]
    readings, events = [], []
    for m in machines:
        cycle, t = 1, at(start, 0, rng.randrange(0, 60))
        while t.date() < start + dt.timedelta(days=days):
            if rng.random() < 0.08:
                kind = rng.choice(["failure", "repair", "preventive"])
                events.append(event(m, t + dt.timedelta(minutes=rng.randrange(0, 90)), kind))
                cycle = 1 if kind != "failure" else cycle
            if rng.random() > 0.1:
                values = {
                    s: (None if rng.random() < 0.2 else round(rng.gauss(50, 5), 2)) for s in SENSORS[:3]
                }
                readings.append(reading(m, t, cycle, regime=rng.choice(regimes), **values))
            cycle += 9
            t += dt.timedelta(minutes=90)
    return readings, events


def test_point_in_time_later_events_do_not_change_features(spark, tmp_path):
    readings, events = generated(seed=7)
    cut = at(D1, 13, 0)
    rng = random.Random(1)
    changed = [
        (*r[:7], *[(v if v is None else v + rng.uniform(-20, 20)) for v in r[7 : 7 + len(SENSORS)]], *r[-4:])
        if r[1] > cut
        else r
        for r in readings
    ]
    changed += [reading("M1", cut + dt.timedelta(minutes=1), 3, temperature=1e6)]
    later_events = [e for e in events if e[1] <= cut] + [
        event("M1", cut + dt.timedelta(minutes=5), "failure"),
        event("M2", cut + dt.timedelta(seconds=1), "repair"),
    ]
    results = []
    for i, (rs, es) in enumerate([(readings, events), (changed, later_events)]):
        config = make_config(tmp_path / str(i))
        write_silver(spark, config, rs, es)
        build_machine_features(spark, config, DateRange.single(D1))
        results.append(gold(spark, config).where(F.col("as_of") <= cut).select(*FEATURES))
    before, after = results
    assert before.count() > 10
    assertDataFrameEqual(
        after.orderBy("machine_id", "as_of"), before.orderBy("machine_id", "as_of"), checkRowOrder=True
    )


def test_incremental_day_equals_full_recompute_touches_only_its_day_and_reruns_idempotently(spark, tmp_path):
    config = make_config(tmp_path)
    assert input_ranges(config.features.maintenance, D2, D2) == {
        "telemetry": (D1, D3),
        "maintenance": (D0, D3),
    }
    readings, events = generated(seed=11)
    write_silver(spark, config, readings, events)
    full_counts = build_machine_features(spark, config, DateRange(D1, D2)).details
    full = gold(spark, config).orderBy("machine_id", "as_of").collect()
    day1 = [r for r in full if r.as_of_date == D1]
    day2 = [r for r in full if r.as_of_date == D2]
    assert full_counts["machine_features_rows"] == len(full) and day1 and day2
    assert any(r.long_window_count == 3 and r.as_of.hour < 3 for r in day2)  # windows cross midnight
    assert any(r.temperature_z is not None for r in day2)

    # A new D1 reading without sensors: it would add a D1 row, but the run for D2 must leave D1 alone.
    Lakehouse(spark, config).table("silver", "telemetry").append(
        spark.createDataFrame([reading("M9", at(D1, 23, 59), 1)], TELEMETRY_SILVER_SCHEMA)
    )
    version = Lakehouse(spark, config).table(*GOLD_TABLE).version()
    counts = build_machine_features(spark, config, DateRange.single(D2)).details
    assert counts["machine_features_rows"] == len(day2)
    incremental = gold(spark, config).orderBy("machine_id", "as_of")
    assertDataFrameEqual(incremental, full, checkRowOrder=True)

    build_machine_features(spark, config, DateRange.single(D2))  # rerun: same rows
    table = Lakehouse(spark, config).table(*GOLD_TABLE)
    assert table.version() == version + 2
    assertDataFrameEqual(gold(spark, config).orderBy("machine_id", "as_of"), full, checkRowOrder=True)


def test_bad_window_config_is_rejected(spark, tmp_path):
    config = make_config(tmp_path, long_window_readings=1)
    with pytest.raises(Exception, match="long_window_readings"):
        build_machine_features(spark, config, DateRange.single(D1))
