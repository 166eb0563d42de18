"""Feature drift: PSI and binned KS per feature, bins fixed on the reference, NULL as a bin of its own."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakeml.config import DriftConfig
from lakeml.errors import ConfigError
from lakeml.quality.drift import (
    Bins,
    bin_counts,
    binned_ks,
    feature_drift,
    feature_drift_within,
    psi,
    reference_bins,
)

CFG = DriftConfig(bins=10, top_categories=3, warn_psi=0.1, alert_psi=0.25, fail_on_alert=False)
ROWS = 20_000


def sample(
    spark: SparkSession, seed: int, shift: float = 0.0, null_rate: float = 0.01, new_kind: float = 0.0
) -> DataFrame:
    """x ~ N(shift, 1); y with ``null_rate`` NULLs; kind a/b/c/d at 40/30/20/10 % (``new_kind`` of it 'z');
    flag 0/1."""
    # Every random draw in a projection of its own: a rand() inside a CASE branch that is not
    # evaluated does not advance, so the same draw could differ between branches.
    draws = spark.range(ROWS, numPartitions=2).select(
        F.randn(seed).alias("n"),
        F.rand(seed + 1).alias("u"),
        F.rand(seed + 2).alias("new"),
        F.rand(seed + 3).alias("empty"),
        F.rand(seed + 4).alias("y"),
        F.rand(seed + 5).alias("f"),
    )
    u = F.col("u")
    kind = F.when(F.col("new") < new_kind, "z").when(u < 0.4, "a").when(u < 0.7, "b").when(u < 0.9, "c")
    return draws.select(
        (F.col("n") + shift).alias("x"),
        F.when(F.col("empty") >= null_rate, F.col("y") * 100).alias("y"),
        kind.otherwise("d").alias("kind"),
        (F.col("f") < 0.3).cast("int").alias("flag"),
    )


def test_psi_and_ks_of_known_count_vectors():
    assert psi([50, 50], [500, 500]) == 0.0
    # (0.1 - 0.9) ln(0.1 / 0.9) + (0.9 - 0.1) ln(0.9 / 0.1) = 1.6 ln 9
    assert psi([90, 10], [10, 90]) == pytest.approx(1.6 * math.log(9))
    # an empty bin counts as PSI_FLOOR, not zero (PSI stays finite)
    assert math.isfinite(psi([100, 0], [50, 50]))
    assert psi([], []) == 0.0 and psi([0, 0], [1, 1]) == 0.0
    assert binned_ks([25, 25, 50], [50, 25, 25]) == pytest.approx(0.25)
    assert binned_ks([0, 0], [1, 1]) is None


def test_bins_are_fixed_on_the_reference_with_null_and_other_bins(spark):
    reference = sample(spark, seed=1)
    bins = {b.feature: b for b in reference_bins(reference, ["x", "flag"], ["kind"], CFG)}
    # deciles of N(0, 1): nine edges, the middle one near 0
    assert len(bins["x"].edges) == 9 and abs(bins["x"].edges[4]) < 0.05
    # a 0/1 feature's repeated quantiles collapse to one edge each
    assert bins["flag"].edges == (0.0, 1.0)
    # the three most frequent values, most frequent first; the rest is "other"
    assert bins["kind"].values == ("a", "b", "c") and bins["kind"].size == 4
    counts = bin_counts(
        spark.createDataFrame(
            [(-5.0, "a", 1), (None, "d", 0), (9.0, None, None)], "x double, kind string, flag int"
        ),
        [bins["x"], bins["kind"], bins["flag"]],
    )
    # x: first bin, last bin, NULL bin last; kind: a, other, NULL; flag: (≤0), (0, 1], NULL
    assert counts["x"] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert counts["kind"] == [1, 0, 0, 1, 1]
    assert counts["flag"] == [1, 1, 0, 1]


def test_same_data_does_not_drift_and_shifts_do(spark):
    reference = sample(spark, seed=1)
    numeric, categorical = ["x", "y", "flag"], ["kind"]
    same = {d.feature: d for d in feature_drift(reference, reference, numeric, categorical, CFG)}
    assert {f: (d.psi, d.level) for f, d in same.items()} == {
        f: (0.0, "ok") for f in [*numeric, *categorical]
    }
    assert same["x"].ks == 0.0 and same["kind"].ks is None

    fresh = {
        d.feature: d for d in feature_drift(reference, sample(spark, seed=11), numeric, categorical, CFG)
    }
    assert all(d.level == "ok" for d in fresh.values()), fresh  # another sample of the same distributions
    assert fresh["x"].reference_rows == fresh["x"].current_rows == ROWS

    shifted = sample(spark, seed=21, shift=1.0, null_rate=0.4, new_kind=0.5)
    drift = {d.feature: d for d in feature_drift(reference, shifted, numeric, categorical, CFG)}
    assert drift["x"].level == "alert" and drift["x"].psi > 0.5
    # KS of N(0,1) vs N(1,1) is 2Φ(0.5) - 1 ≈ 0.383; decile edges see nearly all of it
    assert drift["x"].ks == pytest.approx(0.383, abs=0.03)
    # y keeps its shape but 40 % arrive empty: the NULL bin alone moves it
    assert drift["y"].level == "alert"
    assert drift["y"].reference_null_rate == pytest.approx(0.01, abs=0.005)
    assert drift["y"].current_null_rate == pytest.approx(0.4, abs=0.02)
    assert drift["kind"].level == "alert"  # half the rows are a value training never saw
    assert drift["flag"].level == "ok"


def test_drift_of_a_subset_counted_in_one_pass_equals_the_two_pass_figures(spark):
    # the scoring jobs' case: the rows scored are some dates of the very table version the model
    # trained on, so one pass over it counts both
    table = sample(spark, seed=1).union(sample(spark, seed=21, shift=1.0, null_rate=0.4, new_kind=0.5))
    table = table.withColumn("part", F.monotonically_increasing_id() % 3).cache()
    try:
        numeric, categorical = ["x", "y", "flag"], ["kind"]
        within = F.col("part") == 1
        one_pass = feature_drift_within(table, within, numeric, categorical, CFG)
        assert one_pass == feature_drift(table, table.where(within), numeric, categorical, CFG)
        assert {d.current_rows for d in one_pass} == {table.where(within).count()}
        assert {d.reference_rows for d in one_pass} == {2 * ROWS}
    finally:
        table.unpersist()


def test_drift_thresholds_must_be_ordered():
    with pytest.raises(ConfigError, match="warn_psi <= alert_psi"):
        DriftConfig(bins=10, top_categories=3, warn_psi=0.3, alert_psi=0.2, fail_on_alert=False)
    with pytest.raises(ConfigError, match="bins must be >= 2"):
        DriftConfig(bins=1, top_categories=3, warn_psi=0.1, alert_psi=0.2, fail_on_alert=False)


def test_a_feature_absent_from_the_reference_values_is_all_other(spark):
    reference = spark.createDataFrame([("a",), ("a",), ("b",)], "kind string")
    bins = [Bins("kind", values=("a", "b"))]
    assert bin_counts(spark.createDataFrame([("c",), ("c",)], "kind string"), bins) == {"kind": [0, 0, 2, 0]}
    assert bin_counts(reference, bins) == {"kind": [2, 1, 0, 0]}
