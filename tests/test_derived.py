"""Freshness of derived date partitions (ops/derived_dates) against real source and derived tables."""

from __future__ import annotations

import datetime as dt
import shutil

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from lakeml.config import Config
from lakeml.derived_dates import DerivedDates
from lakeml.lakehouse import DeltaTableRef

SOURCE = T.StructType([T.StructField("id", T.LongType(), False), T.StructField("day", T.DateType(), False)])
D1, D2, D3, D4 = (dt.date(2026, 11, d) for d in (1, 2, 3, 4))


def test_dates_go_stale_when_new_changed_resettled_recomputed_before_or_dropped(
    spark: SparkSession, config: Config, tmp_path
) -> None:
    def table(name: str) -> DeltaTableRef:
        return DeltaTableRef(spark, str(tmp_path / name), config.lakehouse, "delta-rs")

    source = table("source").create(SOURCE, ["day"])
    source.append(spark.createDataFrame([(1, D1), (2, D2), (3, D3)], SOURCE))
    derived = table("derived").create(SOURCE, ["day"])
    freshness = DerivedDates(table("state"), "gold/x", derived, source, "day", "settings-a")

    def computed(first: dt.date, last: dt.date) -> None:
        """A run that rewrote [first, last] of the derived table, then recorded it."""
        outcome = derived.overwrite_where(
            spark.createDataFrame([(0, first)], SOURCE), [("day", ">=", first), ("day", "<=", last)]
        )
        freshness.record(first, last, source.version(), outcome.version)

    assert freshness.first_stale(D1, D3) == D1  # never computed (no state table yet)
    computed(D1, D3)
    assert freshness.first_stale(D1, D3) is None
    assert freshness.first_stale(D1, D4) == D4  # D4 never computed

    source.append(spark.createDataFrame([(4, D2)], SOURCE))  # a late row for D2
    assert freshness.first_stale(D1, D3) == D2
    computed(D2, D3)
    assert freshness.first_stale(D1, D3) is None

    computed(D1, D1)  # D1 recomputed after D2 and D3 (a backfill): they were seeded from the old D1
    assert freshness.first_stale(D1, D3) == D2
    assert freshness.first_stale(D2, D3) is None  # D1 outside the range: nothing before D2 to depend on
    computed(D2, D3)
    assert freshness.first_stale(D1, D3) is None

    other = DerivedDates(table("state"), "gold/x", derived, source, "day", "settings-b")
    assert other.first_stale(D1, D3) == D1  # other settings
    assert (
        DerivedDates(table("state"), "gold/y", derived, source, "day", "settings-a").first_stale(D3, D3) == D3
    )

    source.overwrite_where(spark.createDataFrame([(5, D3)], SOURCE), [("day", "=", D3)])
    assert freshness.first_stale(D1, D3) == D1  # rewritten, not appended: history cannot tell, so all
    computed(D1, D3)
    assert freshness.first_stale(D1, D3) is None

    shutil.rmtree(tmp_path / "derived")  # dropped and created again: its records describe rows it lost
    table("derived").create(SOURCE, ["day"])
    assert freshness.first_stale(D1, D3) == D1
