"""Model lifecycle: leakage-free splits, metrics, the promotion gate, feature vectors, nested --conf,
and one end-to-end fraud run (MLflow registry, champion/challenger, vacuum protection, idempotent scoring)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from chispa import assert_df_equality
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from pyspark.ml import Pipeline
from pyspark.ml.classification import GBTClassifier
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from lakeml.config import PromotionConfig, load_config
from lakeml.domains.banking.features import TRANSACTION_FEATURES_SCHEMA
from lakeml.domains.banking.fraud_model import score_fraud, split_bounds, train_fraud_model
from lakeml.errors import ConfigError, JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.ml import evaluation as ev
from lakeml.ml import models, registry
from lakeml.ml.splits import (
    TimeSplitBounds,
    with_group_split,
    with_latest_per_user_split,
    with_time_split,
)
from lakeml.steps import DateRange
from tests import ml_data
from tests.browser import assert_renders_with_mlflow_headlines

D = dt.date
DAY = dt.timedelta(days=1)

# ---------------------------------------------------------------------------------------------- splits


def test_time_split_assigns_whole_days_with_inclusive_boundaries(spark):
    bounds = TimeSplitBounds.ending(D(2026, 1, 20), test_days=2, gap_days=1, validation_days=3)
    expected = [
        (D(2026, 1, 13), "train"),
        (D(2026, 1, 14), "train"),  # the day before validation_start
        (D(2026, 1, 15), "validation"),  # validation_start
        (D(2026, 1, 16), "validation"),
        (D(2026, 1, 17), "validation"),
        (D(2026, 1, 18), "gap"),  # gap_start
        (D(2026, 1, 19), "test"),  # test_start
        (D(2026, 1, 20), "test"),  # last_day
        (D(2026, 1, 21), None),  # after last_day: in no split
    ]
    schema = "d date, split string"
    days = spark.createDataFrame([(d,) for d, _ in expected], "d date")
    actual = days.transform(with_time_split("d", bounds))
    assert_df_equality(
        actual, spark.createDataFrame(expected, schema), ignore_row_order=True, ignore_nullable=True
    )


@pytest.mark.parametrize(
    ("args", "bounds"),
    [
        ((2, 1, 3), (D(2026, 1, 15), D(2026, 1, 18), D(2026, 1, 19))),
        ((1, 0, 1), (D(2026, 1, 19), D(2026, 1, 20), D(2026, 1, 20))),  # no gap: gap_start == test_start
        ((7, 2, 7), (D(2026, 1, 5), D(2026, 1, 12), D(2026, 1, 14))),
    ],
)
def test_time_split_bounds_count_back_from_last_day(args, bounds):
    test_days, gap_days, validation_days = args
    got = TimeSplitBounds.ending(D(2026, 1, 20), test_days, gap_days, validation_days)
    assert got == TimeSplitBounds(*bounds, last_day=D(2026, 1, 20))
    assert (got.last_day - got.test_start).days + 1 == test_days
    assert (got.test_start - got.gap_start).days == gap_days
    assert (got.gap_start - got.validation_start).days == validation_days


@pytest.mark.parametrize(("test_days", "gap_days", "validation_days"), [(0, 0, 1), (1, 0, 0), (1, -1, 1)])
def test_time_split_bounds_reject_empty_splits(test_days, gap_days, validation_days):
    with pytest.raises(ValueError, match="test_days and validation_days must be >= 1"):
        TimeSplitBounds.ending(D(2026, 1, 20), test_days, gap_days, validation_days)


def test_latest_per_user_split_holds_out_newest_rows_with_tiebreak(spark):
    t = lambda h: dt.datetime(2026, 1, 1, h)  # noqa: E731
    rows = [
        # user a: 6 rows, newest 2 test, next 1 validation, rest train
        ("a", t(1), "i1", "train"),
        ("a", t(2), "i2", "train"),
        ("a", t(3), "i3", "train"),
        ("a", t(4), "i4", "validation"),
        ("a", t(5), "i5", "test"),
        ("a", t(6), "i6", "test"),
        # user b: exactly min_user_items; a tie at t(2) straddles test/validation: item "c" > "b" wins
        ("b", t(1), "a", "train"),
        ("b", t(2), "b", "validation"),
        ("b", t(2), "c", "test"),
        ("b", t(3), "d", "test"),
        # user c: below min_user_items, all train
        ("c", t(1), "x", "train"),
        ("c", t(2), "y", "train"),
        ("c", t(3), "z", "train"),
    ]
    schema = "user string, ts timestamp, item string, split string"
    expected = spark.createDataFrame(rows, schema)
    split = with_latest_per_user_split(
        "user", "ts", "item", test_items=2, validation_items=1, min_user_items=4
    )
    actual = expected.drop("split").transform(split)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_group_split_keeps_each_group_in_one_split_with_the_requested_fractions(spark):
    groups = 2000
    df = spark.range(groups * 3, numPartitions=2).select(
        F.format_string("m%05d", F.col("id") % groups).alias("machine")
    )

    def split(seed, name):
        return lambda d: d.transform(with_group_split("machine", 0.25, 0.2, seed)).withColumnRenamed(
            "split", name
        )

    # one pass: seed 7 twice (stability) and seed 8, aggregated per group
    per_group = (
        df.transform(split(7, "a"))
        .transform(split(7, "again"))
        .transform(split(8, "b"))
        .groupBy("machine")
        .agg(
            F.countDistinct("a").alias("splits_a"),
            F.countDistinct("b").alias("splits_b"),
            F.count_if(F.col("a") != F.col("again")).alias("unstable"),
            F.first("a").alias("a"),
            F.first("b").alias("b"),
        )
        .collect()
    )
    assert len(per_group) == groups
    assert {r["splits_a"] for r in per_group} == {1}  # no group value in two splits
    assert {r["splits_b"] for r in per_group} == {1}
    fractions = {s: sum(r["a"] == s for r in per_group) / groups for s in ("train", "validation", "test")}
    assert fractions["test"] == pytest.approx(0.25, abs=0.05)
    assert fractions["validation"] == pytest.approx(0.2, abs=0.05)
    assert fractions["train"] == pytest.approx(0.55, abs=0.05)
    assert sum(r["unstable"] for r in per_group) == 0  # same seed, same split
    moved = sum(r["a"] != r["b"] for r in per_group) / groups
    assert moved == pytest.approx(0.6, abs=0.1)  # another seed: independent draw, 1 - Σ p² ≈ 0.6 move
    with pytest.raises(ValueError, match="sum < 1"):
        with_group_split("machine", 0.6, 0.4, seed=7)


# ---------------------------------------------------------------------------------------------- evaluation


def scored_frame(spark, rows):
    return spark.createDataFrame(rows, "label int, score double")


def test_binary_metrics_perfect_and_reversed_ranking(spark):
    rows = [(1, 0.9), (1, 0.8), (1, 0.7), (0, 0.5), (0, 0.4), (0, 0.3), (0, 0.2), (0, 0.1)]
    df = scored_frame(spark, rows)
    perfect = ev.binary_metrics(df, "label", "score")
    assert perfect["auprc"] == pytest.approx(1.0)
    assert perfect["roc_auc"] == pytest.approx(1.0)
    reversed_ = ev.binary_metrics(df.withColumn("score", -F.col("score")), "label", "score")
    assert reversed_["roc_auc"] == pytest.approx(0.0)
    assert reversed_["auprc"] < 0.5


def test_metrics_at_threshold_counts_score_equal_to_threshold_as_alert(spark):
    rows = [
        (1, 0.9),  # tp
        (1, 0.5),  # tp: score == threshold alerts
        (1, 0.2),  # fn
        (0, 0.7),  # fp
        (0, 0.5),  # fp
        (0, 0.4),  # tn
        (0, 0.1),  # tn
        (0, 0.0),  # tn
    ]
    m = ev.metrics_at_threshold(scored_frame(spark, rows), "label", "score", 0.5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 2, 1, 3)
    assert m["precision_at_budget"] == pytest.approx(2 / 4)
    assert m["recall_at_budget"] == pytest.approx(2 / 3)
    assert m["alert_rate"] == pytest.approx(4 / 8)
    assert m["positive_rate"] == pytest.approx(3 / 8)


def test_alert_threshold_is_the_budget_quantile(spark):
    df = spark.range(1000, numPartitions=2).select((F.col("id") / 1000.0).alias("score"))
    threshold = ev.alert_threshold(df, "score", 0.1)
    assert threshold == pytest.approx(0.9, abs=0.002)
    assert df.where(F.col("score") >= threshold).count() == 100  # exactly the budget, never above
    with pytest.raises(ValueError, match="alert budget"):
        ev.alert_threshold(df, "score", 1.0)


def tied_scores(spark, n, top_ties, levels):
    """``n`` rows: ``top_ties`` share the top score 1.0, the rest take ``levels`` coarse values below it
    (a tree ensemble on coarse features); label 1 on every 7th row."""
    i = F.col("id")
    score = F.when(i < top_ties, 1.0).otherwise(F.floor(F.pmod(i * 7919, F.lit(levels))) / levels)
    return spark.range(n, numPartitions=2).select(
        (i % 7 == 0).cast("int").alias("label"), score.cast("double").alias("score")
    )


@pytest.mark.parametrize(
    ("n", "top_ties", "levels", "budget", "alerts"),
    [
        (1350, 131, 1000, 0.005, 0),  # the reported table: 131 of 1,350 tie at the top, budget 0.5 %
        (1350, 5, 1000, 0.005, 5),  # 5 tied at the top fit; the next score's 2 rows would make 7 > 6.75
        (10_000, 0, 20, 0.07, 500),  # 20 coarse levels of 500 rows: one level fits in 700, two do not
        (10_000, 40, 20, 0.07, 40 + 498),  # the top ties, then the highest level that still fits
    ],
)
def test_alert_threshold_never_exceeds_the_budget_with_tied_scores(
    spark, n, top_ties, levels, budget, alerts
):
    df = tied_scores(spark, n, top_ties, levels)
    threshold = ev.alert_threshold(df, "score", budget)
    m = ev.metrics_at_threshold(df, "label", "score", threshold)
    assert m["tp"] + m["fp"] == alerts
    assert m["alert_rate"] <= budget
    # the largest alert set within the budget: the next lower score would overflow it
    below = df.where(F.col("score") < threshold).agg(F.max("score")).first()[0]
    if below is not None:
        assert df.where(F.col("score") >= below).count() > budget * n
    if alerts == 0:
        assert threshold == math.inf


def test_alert_check_reports_the_realised_rate_and_warns_or_fails_above_the_factor(spark, caplog):
    from lakeml.config import AlertCheckConfig
    from lakeml.ml import scoring

    champion = scoring.Champion("m", "3", {"alert_budget": "0.05"})
    assert scoring.alert_budget(champion, 0.5) == 0.05
    assert scoring.alert_budget(scoring.Champion("m", "1", {}), 0.5) == 0.5  # a model trained before the tag
    scores = spark.range(1000, numPartitions=2).select((F.col("id") < 120).alias("alert"))  # 12 %
    warn = scoring.alert_check(champion, 0.05, AlertCheckConfig(max_budget_factor=2.0, fail_on_excess=False))
    with caplog.at_level("INFO"):
        assert warn(scores) == {"alert_budget": 0.05, "alert_rate": 0.12, "alerts": 120}
    assert "alert_budget_exceeded" in caplog.text
    fail = scoring.alert_check(champion, 0.05, AlertCheckConfig(max_budget_factor=2.0, fail_on_excess=True))
    with pytest.raises(JobFailed, match=r"alerts 120 of 1000 rows \(12.00%\).*no scores were written"):
        fail(scores)
    within = scoring.alert_check(champion, 0.05, AlertCheckConfig(max_budget_factor=3.0, fail_on_excess=True))
    assert within(scores)["alert_rate"] == 0.12  # 12 % <= 5 % x 3: no failure
    with pytest.raises(ConfigError, match="max_budget_factor must be >= 1"):
        AlertCheckConfig(max_budget_factor=0.5, fail_on_excess=False)


def test_prior_baseline_is_named_and_scores_the_fraud_rate_without_alerts(spark, config):
    from lakeml.domains.banking.fraud_model import BASELINE, baseline_name, with_baseline_score

    cfg = dataclasses.replace(config.ml.fraud, baseline_score_column="")
    rows = spark.range(1000, numPartitions=2).select((F.col("id") % 20 == 0).cast("int").alias("label"))
    scored = rows.transform(with_baseline_score(cfg, 0.05))
    threshold = ev.alert_threshold(scored, BASELINE, cfg.alert_budget)
    m = ev.alert_metrics(scored, "label", BASELINE, threshold)
    assert m["auprc"] == pytest.approx(0.05) and m["roc_auc"] == pytest.approx(0.5)
    assert m["alert_rate"] == 0.0  # every row ties: alerting them all would be 100 % of the budget's 0.5 %
    assert baseline_name(cfg, 0.05) == "prior (constant train fraud rate 0.05)"
    assert baseline_name(config.ml.fraud, 0.05) == "rule score mcc_risk_rate"


def test_binary_curve_recall_grows_as_threshold_falls_and_ends_at_everything(spark):
    df = spark.range(400, numPartitions=2).select(
        (F.rand(3) < 0.2).cast("int").alias("label"), F.rand(4).alias("noise")
    )
    df = df.select("label", (F.col("label") * 0.3 + F.col("noise")).alias("score"))
    curve = ev.binary_curve(df, "label", "score", points=20)
    assert 10 <= len(curve) <= 20
    assert curve["threshold"].is_monotonic_decreasing
    assert curve["recall"].is_monotonic_increasing
    assert curve["fpr"].is_monotonic_increasing
    last = curve.iloc[-1]
    assert (last["recall"], last["fpr"]) == (1.0, 1.0)
    assert last["precision"] == pytest.approx(df.agg(F.avg("label")).first()[0])


def test_calibration_bins_count_every_row_once(spark):
    rows = [(0, 0.0), (0, 0.05), (1, 0.15), (0, 0.55), (1, 0.95), (1, 1.0), (0, 0.999)]
    bins = ev.calibration_bins(scored_frame(spark, rows), "label", "score", bins=10)
    assert int(bins["count"].sum()) == len(rows)
    assert list(bins["bin"]) == [0, 1, 5, 9]  # score 1.0 falls in the last bin, not an 11th
    last = bins.set_index("bin").loc[9]
    assert (last["count"], last["observed_rate"]) == (3, pytest.approx(2 / 3))


def test_regression_metrics_exact_including_cmapss_score(spark):
    # errors (predicted - true) = -13, 0, 10
    df = spark.createDataFrame([(50.0, 37.0), (20.0, 20.0), (30.0, 40.0)], "y double, p double")
    m = ev.regression_metrics(df, "y", "p")
    assert m["rmse"] == pytest.approx(math.sqrt((169 + 0 + 100) / 3))
    assert m["mae"] == pytest.approx(23 / 3)
    assert m["mean_error"] == pytest.approx(-1.0)
    assert m["cmapss_score"] == pytest.approx(((math.e - 1) + 0 + (math.e - 1)) / 3)  # mean per row
    assert m["rows"] == 3


def test_cmapss_score_caps_true_and_predicted_rul(spark):
    # capped at 40: (50, 37) -> (40, 37): e = -3; (20, 200) -> (20, 40): e = 20; (300, 290) -> 0
    df = spark.createDataFrame([(50.0, 37.0), (20.0, 200.0), (300.0, 290.0)], "y double, p double")
    m = ev.regression_metrics(df, "y", "p", score_cap=40)
    expected = (math.exp(3 / 13) - 1) + (math.exp(2.0) - 1) + 0.0
    assert m["cmapss_score"] == pytest.approx(expected / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((13**2 + 180**2 + 10**2) / 3))  # RMSE stays uncapped


def test_error_by_bucket_labels_and_counts(spark):
    rows = [(5.0, 7.0), (9.0, 9.0), (10.0, 4.0), (25.0, 25.0), (29.0, 33.0)]
    out = ev.error_by_bucket(spark.createDataFrame(rows, "y double, p double"), "y", "p", width=10)
    assert list(out["bucket"]) == ["0-9", "10-19", "20-29"]
    assert list(out["count"]) == [2, 1, 2]
    assert list(out["mean_error"]) == pytest.approx([1.0, -6.0, 2.0])
    assert list(out["rmse"]) == pytest.approx([math.sqrt(2), 6.0, math.sqrt(8)])


def test_ranking_metrics_by_hand_with_a_user_without_recommendations(spark):
    recommended = spark.createDataFrame(
        [(1, [1.0, 2.0, 3.0]), (2, [4.0, 5.0])], "user int, items array<double>"
    )
    relevant = spark.createDataFrame(
        [(1, [1.0, 3.0, 5.0]), (2, [5.0]), (3, [7.0])], "user int, items array<double>"
    )
    out = ev.ranking_metrics(recommended, relevant, "user", ks=[1, 2])
    ndcg_u1 = 1 / (1 + 1 / math.log2(3))  # hit at rank 1; ideal has 2 hits in the top 2
    ndcg_u2 = 1 / math.log2(3)  # hit at rank 2; ideal has it at rank 1
    assert out[2]["precision_at_k"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert out[2]["recall_at_k"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert out[2]["ndcg_at_k"] == pytest.approx((ndcg_u1 + ndcg_u2 + 0) / 3)
    assert out[2]["map_at_k"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert out[1]["precision_at_k"] == pytest.approx((1 + 0 + 0) / 3)
    assert out[1]["recall_at_k"] == pytest.approx((1 / 3 + 0 + 0) / 3)
    assert out[1]["ndcg_at_k"] == pytest.approx((1 + 0 + 0) / 3)


def test_ranking_metrics_match_mllib_ranking_evaluator(spark):
    # one aggregate for every metric and k must give MLlib's figures (lists shorter and longer than k,
    # more relevant items than k, misses, a user without recommendations)
    recommended = spark.createDataFrame(
        [(u, [float((u * 7 + j * 3) % 11) for j in range(u % 6)]) for u in range(1, 40)],
        "user int, items array<double>",
    )
    relevant = spark.createDataFrame(
        [(u, [float((u * 5 + j) % 11) for j in range(1 + u % 7)]) for u in range(1, 45)],
        "user int, items array<double>",
    )
    out = ev.ranking_metrics(recommended, relevant, "user", ks=[1, 3, 5])
    data = relevant.select("user", F.col("items").alias("label")).join(
        recommended.select("user", F.col("items").alias("prediction")), "user", "left"
    )
    data = data.select(F.coalesce("prediction", F.array().cast("array<double>")).alias("prediction"), "label")
    names = {"precision_at_k": "precisionAtK", "recall_at_k": "recallAtK", "ndcg_at_k": "ndcgAtK",
             "map_at_k": "meanAveragePrecisionAtK"}  # fmt: skip
    for k, metrics in out.items():
        for name, value in metrics.items():
            expected = RankingEvaluator(k=k, metricName=names[name]).evaluate(data)
            assert value == pytest.approx(expected, rel=1e-12, abs=1e-15), (k, name)
    assert all(0 < m < 1 for metrics in out.values() for m in metrics.values())  # hits and misses both


def test_is_better_follows_metric_direction_and_margin():
    assert ev.is_better("rmse", 1.0, 2.0)
    assert not ev.is_better("rmse", 2.0, 1.0)
    assert not ev.is_better("rmse", 2.0, 2.0)
    assert ev.is_better("rmse", 1.5, 2.0, margin=0.25)
    assert not ev.is_better("rmse", 1.5, 2.0, margin=0.5)  # must beat by more than the margin
    assert ev.is_better("auprc", 0.6, 0.5)
    assert not ev.is_better("auprc", 0.5, 0.6)
    # Float noise of two evaluations of one model (seen: the last bit of an AUPRC) is no gain.
    assert not ev.is_better("auprc", 0.9896646229515708, 0.9896646229515707)
    assert not ev.is_better("rmse", 9.403061494234615, 9.403061494234616)
    assert ev.is_better("auprc", 0.98966463, 0.98966462)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        ev.is_better("f1", 0.6, 0.5)


# ---------------------------------------------------------------------------------------------- registry

AUPRC_RULE = PromotionConfig("auprc", {"auprc": 0.2, "roc_auc": 0.8}, 0.0)
RMSE_RULE = PromotionConfig("rmse", {"rmse": 100.0}, 0.0)


def test_promotion_floors_fail_and_name_the_floor():
    d = registry.decide_promotion({"auprc": 0.9, "roc_auc": 0.7}, None, AUPRC_RULE)
    assert not d.promote
    assert "roc_auc=0.7 < floor 0.8" in d.reason
    assert "auprc" not in d.reason.split("floor", 1)[1]  # only the failing floor is named
    missing = registry.decide_promotion({"auprc": 0.9}, None, AUPRC_RULE)  # a floor metric not computed
    assert not missing.promote and "roc_auc=nan" in missing.reason
    # floors apply even when the candidate beats the champion
    beat = registry.decide_promotion({"auprc": 0.1, "roc_auc": 0.9}, {"auprc": 0.05}, AUPRC_RULE)
    assert not beat.promote and "auprc=0.1 < floor 0.2" in beat.reason


def test_promotion_first_better_and_equal():
    good = {"auprc": 0.5, "roc_auc": 0.9}
    first = registry.decide_promotion(good, None, AUPRC_RULE)
    assert first.promote and "first model" in first.reason
    better = registry.decide_promotion(good, {"auprc": 0.4, "roc_auc": 0.95}, AUPRC_RULE)
    assert better.promote and "beats champion" in better.reason
    equal = registry.decide_promotion(good, {"auprc": 0.5, "roc_auc": 0.9}, AUPRC_RULE)
    assert not equal.promote and "does not beat champion" in equal.reason
    worse = registry.decide_promotion(good, {"auprc": 0.6}, AUPRC_RULE)
    assert not worse.promote
    margin = dataclasses.replace(AUPRC_RULE, min_improvement=0.2)
    assert not registry.decide_promotion(good, {"auprc": 0.4}, margin).promote


def test_promotion_lower_is_better_metric():
    assert registry.decide_promotion({"rmse": 10.0}, {"rmse": 12.0}, RMSE_RULE).promote
    assert not registry.decide_promotion({"rmse": 12.0}, {"rmse": 10.0}, RMSE_RULE).promote
    ceiling = registry.decide_promotion({"rmse": 150.0}, None, RMSE_RULE)
    assert not ceiling.promote and "rmse=150 > floor 100" in ceiling.reason


def test_promotion_refuses_a_zero_primary_metric_when_the_baseline_scores():
    rule = PromotionConfig("precision_at_k", {"precision_at_k": 0.0}, 0.0)
    zero = registry.decide_promotion({"precision_at_k": 0.0}, None, rule, {"precision_at_k": 0.013})
    assert not zero.promote and "precision_at_k=0 while the baseline's is 0.013" in zero.reason
    # without a baseline, or when the baseline scores 0 too, the floor decides as before
    assert registry.decide_promotion({"precision_at_k": 0.0}, None, rule).promote
    assert registry.decide_promotion({"precision_at_k": 0.0}, None, rule, {"precision_at_k": 0.0}).promote
    assert registry.decide_promotion({"precision_at_k": 0.02}, None, rule, {"precision_at_k": 0.013}).promote
    # lower-is-better metrics: 0 is perfect, not a miss
    assert registry.decide_promotion({"rmse": 0.0}, None, RMSE_RULE, {"rmse": 5.0}).promote


def test_training_result_counts_every_split_once():
    from lakeml.ml.lifecycle import training_result

    result = training_result({"rows_train": 70, "rows_validation": 20, "rows_test": 10, "other": "x"})
    assert (result.rows_in, result.rows_out) == (100, 0)


def test_run_training_releases_every_cached_frame_when_a_step_fails(spark, tmp_path):
    from lakeml.ml import lifecycle

    cfg = load_config("test", [f"lakehouse.root={tmp_path}"])
    schema = T.StructType([T.StructField("x", T.LongType(), False)])
    Lakehouse(spark, cfg).table("gold", "tiny").create(schema).append(spark.range(3).toDF("x"))
    cached = []

    class FailsAfterCaching(lifecycle.TrainingSpec[None]):
        experiment, input_table = "tiny", "gold/tiny"

        def train(self, run):
            cached.append(run.cache(run.pinned.df))
            assert cached[0].count() == 3 and cached[0].storageLevel.useMemory
            raise JobFailed("the step failed after caching")

        def candidates(self, result):
            raise AssertionError("not reached")

        report = run_params = run_metrics = summary = candidates

    with pytest.raises(JobFailed, match="after caching"):
        lifecycle.run_training(spark, cfg, DateRange.single(D(2026, 1, 1)), FailsAfterCaching())
    level = cached[0].storageLevel
    assert not (level.useMemory or level.useDisk), level


def test_promotion_unknown_primary_metric_is_an_error():
    with pytest.raises(ValueError, match="primary metric 'f1' was not computed"):
        registry.decide_promotion({"auprc": 0.5}, None, PromotionConfig("f1", {}, 0.0))
    # computed but of unknown direction: refused on the first model already, not only once a champion exists
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        registry.decide_promotion({"f1": 0.5}, None, PromotionConfig("f1", {}, 0.0))
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        registry.decide_promotion({"f1": 0.5}, {"f1": 0.4}, PromotionConfig("f1", {}, 0.0))


class FakeRegistry:
    """get_model_version of an MLflow client: existing versions, deleted ones, or an unreachable registry."""

    def __init__(self, existing, error_code="RESOURCE_DOES_NOT_EXIST"):
        self.existing, self.error_code = existing, error_code

    def get_model_version(self, name, version):
        if (name, str(version)) in self.existing:
            return SimpleNamespace(name=name, version=version)
        raise MlflowException(
            f"{name} v{version}: {self.error_code}", getattr(databricks_pb2, self.error_code)
        )


class FakeProtectedTable:
    def __init__(self, protected):
        self.protected = {v: list(r) for v, r in protected.items()}

    def protected_versions(self):
        return {v: list(r) for v, r in self.protected.items() if r}

    def unprotect(self, version, reason):
        self.protected[version].remove(reason)


def test_release_unregistered_only_releases_versions_the_registry_says_are_gone():
    table = FakeProtectedTable({3: ["model-m-v1", "model-m-v2", "backfill-audit"], 5: ["model-m-v3"]})
    released = registry.release_unregistered(FakeRegistry({("m", "1"), ("m", "3")}), table)
    assert released == [(3, "model-m-v2")]
    assert table.protected_versions() == {3: ["model-m-v1", "backfill-audit"], 5: ["model-m-v3"]}
    # an unreachable registry must not look like "every model was deleted"
    outage = FakeRegistry(set(), error_code="TEMPORARILY_UNAVAILABLE")
    with pytest.raises(MlflowException, match="TEMPORARILY_UNAVAILABLE"):
        registry.release_unregistered(outage, table)
    assert table.protected_versions() == {3: ["model-m-v1", "backfill-audit"], 5: ["model-m-v3"]}


# ---------------------------------------------------------------------------------------------- models

FEATURE_SCHEMA = T.StructType(
    [
        T.StructField("id", T.IntegerType(), False),
        T.StructField("x", T.DoubleType(), True),
        T.StructField("n", T.IntegerType(), True),
        T.StructField("flag", T.BooleanType(), True),
        T.StructField("k", T.LongType(), False),  # not nullable: no missing indicator
        T.StructField("cat", T.StringType(), True),
        T.StructField("text", T.StringType(), True),
    ]
)


def test_feature_stages_vector_with_missing_flags_and_unseen_categories(spark):
    rows = [
        (1, 1.5, 3, True, 10, "a", "t"),
        (2, None, 4, None, 20, "a", "t"),
        (3, float("nan"), None, False, 30, "b", "t"),
        (4, -2.0, 7, True, 40, "a", "t"),
    ]
    train = spark.createDataFrame(rows, FEATURE_SCHEMA)
    stages = models.feature_stages(FEATURE_SCHEMA, ["x", "n", "flag", "k"], ["cat"])
    fitted = Pipeline(stages=stages).fit(train)
    # x, x__missing, n, n__missing, flag, flag__missing, k, then cat one-hot: a (most frequent), b,
    # and one slot for a category not seen in training (or NULL)
    a, b, other = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    expected = [
        (1, [1.5, 0.0, 3.0, 0.0, 1.0, 0.0, 10.0, *a]),
        (2, [0.0, 1.0, 4.0, 0.0, 0.0, 1.0, 20.0, *a]),
        (3, [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 30.0, *b]),
        (4, [-2.0, 0.0, 7.0, 0.0, 1.0, 0.0, 40.0, *a]),
    ]
    actual = fitted.transform(train).select("id", vector_to_array("features").alias("v"))
    assertDataFrameEqual(
        actual, spark.createDataFrame(expected, "id int, v array<double>"), checkRowOrder=False
    )

    unseen = spark.createDataFrame(
        [(5, 1.0, 1, True, 1, "zzz", "t"), (6, 1.0, 1, True, 1, None, "t")], FEATURE_SCHEMA
    )
    out = {
        r["id"]: r["v"]
        for r in fitted.transform(unseen).select("id", vector_to_array("features").alias("v")).collect()
    }
    assert out[5] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, *other]
    assert out[6] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, *other]


def test_feature_stages_reject_text_as_numeric_and_unknown_columns():
    with pytest.raises(ConfigError, match="numeric features must be numeric or boolean columns: text"):
        models.feature_stages(FEATURE_SCHEMA, ["x", "text"], [])
    with pytest.raises(ConfigError, match="not in the input table: nope"):
        models.feature_stages(FEATURE_SCHEMA, ["x"], ["nope"])


@pytest.mark.parametrize("family", ["logistic", "random_forest"])
def test_classifiers_score_after_the_session_has_observed_a_query(spark, family):
    """Spark 4.0 keeps the session in LR / RF training summaries; once the session's ObservationManager
    exists (a streaming query or observe() ran earlier in the same pipeline), scoring such a model fails
    with "Task not serializable" unless the summary is dropped, as classifier_stages does."""
    from pyspark.sql import Observation

    spark.range(3).observe(Observation("lakeml-test"), F.count(F.lit(1)).alias("n")).collect()
    data = spark.range(200).select(
        (F.col("id") % 2).cast("double").alias("label"), (F.rand(1) + F.col("id") % 2).alias("x")
    )
    stages = [
        *models.feature_stages(data.schema, ["x"], []),
        *models.classifier_stages(family, "label", None, 7),
    ]
    model = Pipeline(stages=stages).fit(data)
    scored = models.with_positive_score(model.transform(data))
    assert ev.binary_metrics(scored, "label", models.SCORE)["roc_auc"] > 0.9


def test_param_grid_names_an_unknown_parameter():
    gbt = GBTClassifier()
    grid = models.param_grid(gbt, {"maxDepth": [2.0, 3.0], "maxIter": [5.0]})
    assert sorted(pm[gbt.getParam("maxDepth")] for pm in grid) == [2, 3]
    assert all(isinstance(pm[gbt.getParam("maxDepth")], int) for pm in grid)  # converted from conf floats
    with pytest.raises(ConfigError, match="GBTClassifier has no parameter 'maxDepht'"):
        models.param_grid(gbt, {"maxDepht": [3.0]})


# ---------------------------------------------------------------------------------------------- config


def test_nested_conf_override_sets_one_key_of_a_mapping_of_mappings():
    base = load_config("test").ml.fraud.families
    c = load_config("test", ["ml.fraud.families.gbt.maxDepth=[3]"]).ml.fraud.families
    assert c["gbt"]["maxDepth"] == (3.0,)
    assert {k: v for k, v in c["gbt"].items() if k != "maxDepth"} == {
        k: v for k, v in base["gbt"].items() if k != "maxDepth"
    }
    assert set(c["gbt"]) == set(base["gbt"])
    assert c["logistic"] == base["logistic"]
    # a new family can be added key by key; a whole mapping value replaces the families
    added = load_config("test", ["ml.fraud.families.random_forest.numTrees=[5]"]).ml.fraud.families
    assert added["random_forest"] == {"numTrees": (5.0,)} and added["gbt"] == base["gbt"]
    whole = load_config("test", ["ml.fraud.families={gbt: {maxDepth: [3], maxIter: [5]}}"]).ml.fraud.families
    assert dict(whole) == {"gbt": {"maxDepth": (3.0,), "maxIter": (5.0,)}}
    with pytest.raises(ConfigError, match="maxDepth"):
        load_config("test", ["ml.fraud.families.gbt.maxDepth=deep"])


# ---------------------------------------------------------------------------------------------- lifecycle

FIRST_DAY = D(2026, 1, 1)
RUN_DATE = FIRST_DAY + 15 * DAY
SCORE_DAYS = (FIRST_DAY + 13 * DAY, FIRST_DAY + 15 * DAY)
GIT_COMMIT = "0123abcd-test"
MODEL = "lakeml-fraud"


def lifecycle_config(root):
    return load_config(
        "test",
        [
            f"lakehouse.root={root}",
            "ml.fraud.test_days=3",
            "ml.fraud.validation_days=3",
            "ml.fraud.families={gbt: {maxDepth: [3], maxIter: [5]}, logistic: {regParam: [0.01]}}",
        ],
    )


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """One lake: 16 days of features (last 3 with open labels), trained twice, scored twice."""
    cfg = lifecycle_config(tmp_path_factory.mktemp("ml_lake"))
    table = (
        Lakehouse(spark, cfg)
        .table("gold", "transaction_features")
        .create(TRANSACTION_FEATURES_SCHEMA, ["as_of_date"])
    )
    rows = ml_data.transaction_features(spark, rows_per_day=300, first_day=FIRST_DAY, days=16, mature_days=13)
    yield from ml_data.train_twice_and_score(
        spark,
        cfg,
        table,
        rows,
        train_fraud_model,
        score_fraud,
        RUN_DATE,
        SCORE_DAYS,
        "fraud_scores",
        GIT_COMMIT,
    )


def run_of(t, version):
    return t.client.get_run(t.client.get_model_version(MODEL, version).run_id)


def test_first_run_becomes_champion_with_reproducibility_params(trained, spark):
    t = trained
    assert (t.first["model"], t.first["version"], t.first["promoted"]) == (MODEL, "1", True)
    assert "first model passing the floors" in t.first["reason"]
    assert t.first["input_version"] == t.table_version
    assert str(t.client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    params = run_of(t, "1").data.params
    assert params["input.gold/transaction_features.version"] == str(t.table_version)
    assert params["seed"] == "42"
    assert params["git_commit"] == GIT_COMMIT
    assert params["spark_version"] == spark.version
    tags = t.client.get_model_version(MODEL, "1").tags
    assert float(tags["threshold"]) == pytest.approx(float(params[f"{MODEL}.threshold"]))
    assert float(tags["alert_budget"]) == t.cfg.ml.fraud.alert_budget == t.first["alert_budget"]
    # realised alert rates beside the budget: never above it on validation (where it is chosen)
    assert 0 < t.first["validation_alert_rate"] <= t.first["alert_budget"]
    assert t.first["test_alert_rate"] == pytest.approx(
        run_of(t, "1").data.metrics[f"{MODEL}.alert_rate"], abs=1e-6
    )
    assert t.first["baseline"] == params["baseline"] == "rule score mcc_risk_rate"
    html = Path(t.first["report"]).read_text()
    assert "validation_alert_rate" in html and "baseline: rule score mcc_risk_rate" in html
    assert tags["input.gold/transaction_features.version"] == str(t.table_version)
    assert "first model" in tags["promotion"]


def test_split_honours_time_order_and_label_maturity(trained):
    t = trained
    pinned = t.table.read(version=t.table_version)
    bounds = split_bounds(pinned, t.cfg.ml.fraud, RUN_DATE)
    # days 13..15 have open labels: the test ends at day 12; 3 test days, no gap, 3 validation days
    assert bounds == TimeSplitBounds(
        validation_start=FIRST_DAY + 7 * DAY,
        gap_start=FIRST_DAY + 10 * DAY,
        test_start=FIRST_DAY + 10 * DAY,
        last_day=FIRST_DAY + 12 * DAY,
    )
    run = run_of(t, "1")
    assert run.data.params["split.bounds"] == str(bounds)
    # the trainer's split sizes are those of the days the bounds name (no open-label day is used,
    # not even its already-known frauds)
    day = F.col("as_of_date")
    labelled = pinned.where(F.col("label_fraud").isNotNull())
    counts = {
        "train": labelled.where(day < F.lit(bounds.validation_start)).count(),
        "validation": labelled.where(day.between(bounds.validation_start, bounds.gap_start - DAY)).count(),
        "test": labelled.where(day.between(bounds.test_start, bounds.last_day)).count(),
    }
    assert counts == {"train": 7 * 300, "validation": 3 * 300, "test": 3 * 300}
    assert {s: int(run.data.metrics[f"rows.{s}"]) for s in counts} == counts
    assert t.first["rows_train"] == counts["train"] and t.first["rows_test"] == counts["test"]
    assert t.first["rows_validation"] == counts["validation"]
    assert labelled.where(day > F.lit(bounds.last_day)).count() > 0  # known frauds exist there, unused


def test_split_bounds_stop_before_the_first_open_day(spark, config):
    cfg = dataclasses.replace(config.ml.fraud, test_days=1, validation_days=1)
    rows = [
        (FIRST_DAY, 0),
        (FIRST_DAY + DAY, 1),
        (FIRST_DAY + 2 * DAY, None),  # an open label window ...
        (FIRST_DAY + 2 * DAY, 0),
        (FIRST_DAY + 3 * DAY, 0),  # ... before fully labelled days: those are not used either
        (FIRST_DAY + 9 * DAY, 0),  # after the run date
    ]
    df = spark.createDataFrame(rows, "as_of_date date, label_fraud int")
    bounds = split_bounds(df, cfg, FIRST_DAY + 5 * DAY)
    assert bounds.last_day == FIRST_DAY + DAY
    assert bounds.test_start == FIRST_DAY + DAY and bounds.validation_start == FIRST_DAY
    with pytest.raises(JobFailed, match="no day on or before"):
        split_bounds(df.where(F.col("as_of_date") > F.lit(FIRST_DAY + DAY)), cfg, FIRST_DAY + 2 * DAY)


def test_retrain_on_same_version_is_identical_and_stays_challenger(trained):
    t = trained
    assert (t.second["version"], t.second["promoted"]) == ("2", False)
    assert "does not beat champion" in t.second["reason"]
    assert t.second["input_version"] == t.table_version
    assert str(t.client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(t.client.get_model_version_by_alias(MODEL, "challenger").version) == "2"
    first, second = run_of(t, "1").data.metrics, run_of(t, "2").data.metrics
    keys = [f"{MODEL}.{k}" for k in ("auprc", "roc_auc", "tp", "fp", "fn", "tn", "precision_at_budget")]
    for key in keys:
        assert second[key] == pytest.approx(first[key], abs=1e-9), key
    # the champion was re-scored on the challenger's holdout, with the same result
    assert second[f"{MODEL}.champion.auprc"] == pytest.approx(first[f"{MODEL}.auprc"], abs=1e-9)
    assert (
        t.client.get_model_version(MODEL, "2").tags["threshold"]
        == t.client.get_model_version(MODEL, "1").tags["threshold"]
    )


def test_score_fraud_writes_champion_scores_once(trained, spark):
    t = trained
    first, last = SCORE_DAYS
    inputs = t.table.read(where=[("as_of_date", ">=", first), ("as_of_date", "<=", last)])
    scores = t.scores.read()
    assert t.score_first["noop"] is False and t.score_first["rows"] == 3 * 300
    assert_df_equality(
        scores.select("txn_id", F.col("as_of_date")),
        inputs.select("txn_id", "as_of_date"),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    threshold = float(t.client.get_model_version(MODEL, "1").tags["threshold"])
    stamps = scores.groupBy("model_name", "model_version", "input_version", "threshold").count().collect()
    assert [tuple(r) for r in stamps] == [(MODEL, "1", t.table_version, threshold, 3 * 300)]
    assert_df_equality(
        scores.select("txn_id", "alert"),
        scores.select("txn_id", (F.col("score") >= F.lit(threshold)).alias("alert")),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert scores.where(~F.col("score").between(0.0, 1.0)).count() == 0
    alerts = scores.where("alert").count()
    assert (t.score_first["alerts"], t.score_first["alert_rate"]) == (alerts, round(alerts / (3 * 300), 6))
    assert t.score_first["alert_budget"] == t.cfg.ml.fraud.alert_budget
    # a second call with the same champion and input version changes nothing
    assert t.score_again["noop"] is True and t.score_again["rows"] == 0
    assert t.scores.version() == t.scores_version
    # ops/drift: one row per model feature for the scored window, against the pinned training version
    cfg = t.cfg.ml.fraud
    drift = t.lake.table("ops", "drift").read()
    got = drift.select("feature", "kind", "model_version", "reference_version", "window_start", "window_end")
    expected = [(f, "numeric") for f in cfg.numeric_features] + [
        (f, "categorical") for f in cfg.categorical_features
    ]
    assert sorted(tuple(r) for r in got.collect()) == sorted(
        (f, kind, "1", t.table_version, first, last) for f, kind in expected
    )
    assert drift.where(F.col("current_rows") != 3 * 300).count() == 0


def test_scoring_before_any_training_fails_clearly(trained, spark):
    # the same registry and feature table, but a model name that was never trained (no new MLflow db)
    cfg = load_config(
        "test", [f"lakehouse.root={trained.cfg.lakehouse.root}", "ml.fraud.model_name=lakeml-fraud-untrained"]
    )
    with pytest.raises(
        JobFailed,
        match=r"'lakeml-fraud-untrained' has no champion in the registry: run banking\.train_fraud first",
    ):
        score_fraud(spark, cfg, DateRange(*SCORE_DAYS))


def test_report_renders_in_chromium_with_the_mlflow_metrics(trained, tmp_path):
    page = assert_renders_with_mlflow_headlines(
        trained.first["report"], tmp_path, run_of(trained, "1").data.metrics, {"Test metrics": MODEL}
    )
    threshold = float(run_of(trained, "1").data.params[f"{MODEL}.threshold"])
    metrics_table = page.table("Test metrics")
    column = metrics_table["header"].index("threshold")
    assert metrics_table["rows"][0][column] == f"{threshold:.4g}"
    bounds = page.table("Splits")["rows"][-1][-1]
    assert bounds.startswith("train … ") and "TimeSplitBounds" not in bounds


def test_pinned_version_is_protected_until_its_model_versions_are_deleted(trained):
    """Last lifecycle test: it deletes the registered model versions."""
    t = trained
    reasons = ["model-lakeml-fraud-v1", "model-lakeml-fraud-v2"]
    assert {v: sorted(r) for v, r in t.table.protected_versions().items()} == {t.table_version: reasons}
    assert registry.release_unregistered(t.client, t.table) == []
    assert set(t.table.protected_versions()) == {t.table_version}

    t.client.delete_model_version(MODEL, "2")
    assert registry.release_unregistered(t.client, t.table) == [(t.table_version, reasons[1])]
    assert t.table.protected_versions() == {t.table_version: [reasons[0]]}

    t.client.delete_model_version(MODEL, "1")
    assert registry.release_unregistered(t.client, t.table) == [(t.table_version, reasons[0])]
    assert t.table.protected_versions() == {}
