"""Models on a user's own tables: splits that fit short tables, imbalance handling searched on
validation, calibrated fraud scores (also in batch scoring), the explicit recommender's bias baseline,
and input checks that fail before any fit with one line naming the column or setting."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from pyspark.ml import Pipeline
from pyspark.ml.evaluation import BinaryClassificationEvaluator, RankingEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml import runlog
from lakeml.config import Config, load_config
from lakeml.domains.banking.features import TRANSACTION_FEATURES_SCHEMA
from lakeml.domains.banking.fraud_model import (
    CALIBRATED_PROBABILITY,
    fit_calibration,
    score_fraud,
    search_imbalance_and_family,
    train_fraud_model,
    with_calibrated_score,
)
from lakeml.domains.commerce.features import USER_ITEM_INTERACTIONS_SCHEMA
from lakeml.domains.commerce.recommender import (
    TARGET,
    choose_explicit,
    fit_biases,
    ndcg_at,
    train_recommender,
    tune_biases,
)
from lakeml.errors import ConfigError, JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.ml import evaluation as ev
from lakeml.ml import models, tracking
from lakeml.ml.models import SummaryFreeLogisticRegression
from lakeml.ml.splits import (
    SPLIT,
    TimeFractionBounds,
    stratified_cuts,
    with_stratified_split,
    with_time_fraction_split,
)
from lakeml.steps import DateRange
from tests import ml_data

D = dt.date
FIRST = D(2026, 2, 1)
T0 = dt.datetime(2026, 2, 1)

# ---------------------------------------------------------------------------------------------- splits


def test_time_fraction_split_cuts_a_two_day_range_by_instants(spark: SparkSession) -> None:
    bounds = TimeFractionBounds.of_range(T0, T0 + dt.timedelta(hours=48), 0.25, 0.25)
    assert (bounds.validation_start, bounds.test_start) == (
        T0 + dt.timedelta(hours=24),
        T0 + dt.timedelta(hours=36),
    )
    hours = [0, 23, 24, 35, 36, 48, 49]
    df = spark.createDataFrame([(h, T0 + dt.timedelta(hours=h)) for h in hours], "h int, ts timestamp")
    out = df.transform(with_time_fraction_split("ts", bounds)).select("h", SPLIT)
    expected = spark.createDataFrame(
        [
            (0, "train"),
            (23, "train"),
            (24, "validation"),
            (35, "validation"),
            (36, "test"),
            (48, "test"),
            (49, None),
        ],
        f"h int, {SPLIT} string",
    )
    assertDataFrameEqual(out, expected, checkRowOrder=False)
    with pytest.raises(ValueError):
        TimeFractionBounds.of_range(T0, T0 + dt.timedelta(hours=1), 0.5, 0.5)


def test_stratified_split_holds_each_class_in_the_same_shares_and_is_stable(spark: SparkSession) -> None:
    rows = spark.range(4000, numPartitions=2).select(
        F.format_string("t%05d", "id").alias("txn"), (F.col("id") % 50 == 0).cast("double").alias("y")
    )  # 80 positives
    cuts = stratified_cuts(rows, "y", "txn", 0.25, 0.25, seed=7)
    split = rows.transform(with_stratified_split("y", "txn", cuts, seed=7))
    counts = {(r[SPLIT], r["y"]): r["count"] for r in split.groupBy(SPLIT, "y").count().collect()}
    assert abs(counts[("test", 1.0)] - 20) <= 1 and abs(counts[("validation", 1.0)] - 20) <= 1
    assert abs(counts[("test", 0.0)] - 980) <= 10 and abs(counts[("train", 0.0)] - 1960) <= 20
    assert sum(counts.values()) == 4000  # every row in exactly one split
    again = rows.transform(
        with_stratified_split("y", "txn", stratified_cuts(rows, "y", "txn", 0.25, 0.25, 7), 7)
    )
    assertDataFrameEqual(split, again, checkRowOrder=False)


# ---------------------------------------------------------------------------------------------- calibration


def _overweighted_model(spark: SparkSession) -> tuple[DataFrame, DataFrame, object]:
    """A logistic model trained with positives weighted 30x: its probabilities are far too high."""
    data = spark.range(6000, numPartitions=2).select(
        "id", F.randn(11).alias("x"), F.rand(12).alias("u"), F.rand(13).alias("split")
    )
    data = data.withColumn("_label", (F.col("u") < 1 / (1 + F.exp(-(2.5 * F.col("x") - 4)))).cast("double"))
    data = data.withColumn("_weight", F.when(F.col("_label") == 1, 30.0).otherwise(1.0))
    train, validation, test = (
        data.where(F.col("split") < 0.5),
        data.where(F.col("split").between(0.5, 0.75)),
        data.where(F.col("split") > 0.75),
    )
    model = Pipeline(
        stages=[
            VectorAssembler(inputCols=["x"], outputCol="features"),
            # Summary-free, as the trainers fit it: a training summary holds the SparkSession, which
            # cannot be serialized into the next stage's tasks once the session has run an Observation.
            SummaryFreeLogisticRegression(labelCol="_label", weightCol="_weight"),
        ]
    ).fit(train)
    return validation, test, model


def test_calibration_on_validation_lowers_the_brier_score_and_platt_keeps_the_ranking(
    spark: SparkSession,
) -> None:
    validation, test, model = _overweighted_model(spark)
    raw = with_calibrated_score(model.transform(test))
    for method in ("platt", "isotonic"):
        calibrated_model = fit_calibration(model, validation, method)
        calibrated = with_calibrated_score(calibrated_model.transform(test))
        before, after = ev.brier_score(raw, "_label", "score"), ev.brier_score(calibrated, "_label", "score")
        assert after < 0.8 * before, (method, before, after)
        bins = ev.calibration_bins(calibrated, "_label", "score", 10)
        assert bins["count"].sum() == test.count()
    platt = with_calibrated_score(fit_calibration(model, validation, "platt").transform(test))
    assert CALIBRATED_PROBABILITY in platt.columns
    assert ev.binary_metrics(platt, "_label", "score") == pytest.approx(
        ev.binary_metrics(raw, "_label", "score")
    )
    assert fit_calibration(model, validation, "none") is model


# ---------------------------------------------------------------------------------------------- fraud


def _fraud_config(root: Path, *extra: str) -> Config:
    return load_config(
        "test",
        [
            f"lakehouse.root={root}",
            "ml.fraud.split=time_fraction",
            "ml.fraud.validation_fraction=0.25",
            "ml.fraud.test_fraction=0.25",
            "ml.fraud.imbalance=[none, balanced]",
            "ml.fraud.families={gbt: {maxDepth: [3], maxIter: [10]}}",
            "ml.fraud.alert_budget=0.05",
            *extra,
        ],
    )


def _fraud_table(spark: SparkSession, config: Config, rows: DataFrame):  # type: ignore[no-untyped-def]
    table = Lakehouse(spark, config).table("gold", "transaction_features")
    table.create(TRANSACTION_FEATURES_SCHEMA, ["as_of_date"]).append(rows)
    return table


def test_fraud_on_a_two_day_table_searches_imbalance_and_scores_calibrated(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = _fraud_config(tmp_path)
    rows = ml_data.transaction_features(spark, rows_per_day=1200, first_day=FIRST, days=2, mature_days=2)
    _fraud_table(spark, config, rows)
    summary = train_fraud_model(spark, config, DateRange.single(FIRST + dt.timedelta(days=1))).details
    assert summary["split"] == "time_fraction" and summary["imbalance"] in ("none", "balanced")
    assert set(summary["validation_auprc_by_imbalance"]) == {"none", "balanced"}
    assert all(0 < v["gbt"] <= 1 for v in summary["validation_auprc_by_imbalance"].values())
    # balanced: positives weighted n_neg / n_pos (about 97 / 3 here); none: no weights
    weight = summary["positive_weight"]
    assert weight == 1.0 if summary["imbalance"] == "none" else 20 < weight < 60
    assert 0 < summary["brier_calibrated"] < 0.1 and summary["brier_raw"] > 0
    client = mlflow.MlflowClient(tracking.tracking_uri(config), tracking.tracking_uri(config))
    run = client.get_run(summary["mlflow_run_id"])
    name = config.ml.fraud.model_name
    assert run.data.params[f"{name}.imbalance"] == summary["imbalance"]
    assert run.data.params[f"{name}.calibration"] == "platt" and run.data.params["split"] == "time_fraction"
    assert run.data.metrics["brier.calibrated"] == pytest.approx(summary["brier_calibrated"], abs=1e-6)
    html = Path(summary["report"]).read_text()
    assert "Reliability on test before calibration" in html and "after calibration (platt)" in html
    assert "validation AUPRC per imbalance option and family" in html
    # batch scoring applies the calibration stored with the model
    out = score_fraud(spark, config, DateRange(FIRST, FIRST + dt.timedelta(days=1))).details
    assert out["rows"] == 2400
    scores = Lakehouse(spark, config).table("gold", "fraud_scores").read()
    champion = mlflow.spark.load_model(f"models:/{name}/{summary['version']}")
    assert type(champion.stages[-1]).__name__ == "LogisticRegressionModel"
    expected = with_calibrated_score(champion.transform(rows)).select(
        F.col("txn_id"), F.round("score", 9).alias("score")
    )
    assertDataFrameEqual(
        scores.select("txn_id", F.round("score", 9).alias("score")), expected, checkRowOrder=False
    )
    threshold = float(client.get_model_version(name, summary["version"]).tags["threshold"])
    assert scores.where((F.col("score") >= threshold) != F.col("alert")).count() == 0


def test_imbalance_options_after_the_first_refit_only_the_best_families_under_it(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, dict]] = []
    monkeypatch.setattr(runlog, "event", lambda name, **fields: events.append((name, fields)) or fields)
    data = spark.range(3000, numPartitions=2).select(
        F.randn(21).alias("x1"), F.rand(22).alias("x2"), F.rand(23).alias("u"), F.rand(24).alias("split")
    )
    data = data.withColumn("_label", (F.col("u") < 1 / (1 + F.exp(-(2.5 * F.col("x1") - 3)))).cast("double"))
    train, validation = data.where(F.col("split") < 0.7), data.where(F.col("split") >= 0.7)
    prefix = models.feature_stages(data.schema, ["x1", "x2"], [])
    weights: dict[str, float | None] = {"none": None, "balanced": 6.0}
    auprc = BinaryClassificationEvaluator(labelCol="_label", metricName="areaUnderPR")

    config = _fraud_config(
        tmp_path, "ml.fraud.families={gbt: {maxDepth: [2], maxIter: [5]}, logistic: {regParam: [0.01]}}"
    )
    assert config.ml.fraud.imbalance_families == 1  # the default
    searched = search_imbalance_and_family(prefix, config.ml.fraud, config, weights, auprc, train, validation)
    first = {f: v[1] for (o, f), v in searched.items() if o == "none"}
    best = max(first, key=first.__getitem__)
    assert set(searched) == {("none", "gbt"), ("none", "logistic"), ("balanced", best)}
    assert all(0 < v[1] <= 1 for v in searched.values())
    (line,) = [f for name, f in events if name == "imbalance_screened"]
    assert line["refit"] == best and line["skipped"] == ({"gbt", "logistic"} - {best}).pop()
    fits = [f["model"] for name, f in events if name == "fit_done"]  # one fit per pair, no other
    model = config.ml.fraud.model_name
    assert sorted(fits) == sorted([f"{model}@none/gbt", f"{model}@none/logistic", f"{model}@balanced/{best}"])


def test_fraud_input_errors_name_the_column_or_setting_before_any_fit(
    spark: SparkSession, tmp_path: Path
) -> None:
    rows = ml_data.transaction_features(spark, rows_per_day=200, first_day=FIRST, days=2, mature_days=2)
    cases = [
        (["ml.fraud.label_column=no_such_label"], rows, ConfigError, "no column no_such_label"),
        (
            ["ml.fraud.label_column=txn_count_1h"],
            rows.withColumn("txn_count_1h", F.lit(2)),
            ConfigError,
            "ml.fraud.label_column: txn_count_1h must be 0/1",
        ),
        (["ml.fraud.label_column=channel"], rows, ConfigError, "ml.fraud.label_column: channel must be 0/1"),
        # frauds on the first day only: none in validation (the second day's first half)
        (
            [],
            rows.withColumn(
                "label_fraud", F.when(F.col("as_of_date") == FIRST, F.col("label_fraud")).otherwise(0)
            ),
            JobFailed,
            "'validation' has .* 0 frauds.*ml.fraud.validation_fraction",
        ),
    ]
    for i, (extra, data, error, message) in enumerate(cases):
        config = _fraud_config(tmp_path / str(i), *extra)
        _fraud_table(spark, config, data)
        with pytest.raises(error, match=message) as caught:
            train_fraud_model(spark, config, DateRange.single(FIRST + dt.timedelta(days=1)))
        assert "\n" not in str(caught.value) and caught.value.exit_code != 0
        assert not (tmp_path / str(i) / "_mlflow").exists() or not mlflow.MlflowClient(
            tracking.tracking_uri(config)
        ).search_model_versions(f"name='{config.ml.fraud.model_name}'")


# ---------------------------------------------------------------------------------------------- recommender

DAY = D(2026, 1, 31)
SMALL = ["ml.recommender.max_iter=5", "ml.recommender.grid={rank: [8], regParam: [0.05, 0.2], alpha: [20.0]}"]


def test_biases_by_hand(spark: SparkSession, config: Config) -> None:
    cfg = config.ml.recommender
    rows = [("a", "x", 5.0), ("a", "y", 3.0), ("b", "x", 4.0)]
    df = spark.createDataFrame(rows, f"{cfg.user_column} string, {cfg.item_column} string, {TARGET} double")
    biases = fit_biases(df, cfg, 1.0)
    assert biases.mu == pytest.approx(4.0)
    users = {r[0]: r[1] for r in biases.users.collect()}
    assert users == pytest.approx({"a": (1 - 1) / 3, "b": 0 / 2})
    items = {r[0]: r[1] for r in biases.items.collect()}
    assert items == pytest.approx({"x": (1 + 0) / 3, "y": -1 / 2})
    # the item biases' own regularisation (users' unchanged): b_i = sum(r - mu - b_u) / (item_reg + n_i)
    shrunk = fit_biases(df, cfg, 1.0, 9.0)
    assert {r[0]: r[1] for r in shrunk.users.collect()} == pytest.approx(users)
    assert {r[0]: r[1] for r in shrunk.items.collect()} == pytest.approx({"x": 1 / 11, "y": -1 / 10})
    # tuned over every (user, item) pair; the lowest validation RMSE wins
    held_out = spark.createDataFrame(
        [("a", "x", 4.5), ("b", "y", 3.0)],
        f"{cfg.user_column} string, {cfg.item_column} string, {TARGET} double",
    )
    # a prior below 0 pulls item biases toward it, the more the fewer ratings: (sum + reg x prior) / (reg + n)
    pessimistic = fit_biases(df, cfg, 1.0, 9.0, -0.5)
    assert {r[0]: r[1] for r in pessimistic.items.collect()} == pytest.approx(
        {"x": (1 - 4.5) / 11, "y": (-1 - 4.5) / 10}
    )
    grid = replace(cfg, bias_regularization=(1.0,), item_bias_regularization=(0.0, 9.0))
    reg, item_reg, results = tune_biases(grid, df, held_out)
    assert [(r, ir) for r, ir, _ in results] == [(1.0, 0.0), (1.0, 9.0)]
    assert (reg, item_reg) == min(results, key=lambda r: r[2])[:2]


def test_ndcg_column_is_mllibs_ndcg_at_k(spark: SparkSession) -> None:
    # binary relevance: hits at ranks 1 and 3, a list shorter than k, more relevant items than k, a miss,
    # an empty list
    rows = [
        ([1.0, 2.0, 3.0, 4.0], [1.0, 3.0]),
        ([5.0], [5.0, 6.0, 7.0, 8.0, 9.0]),
        ([1.0, 2.0, 3.0], [4.0]),
        ([], [1.0]),
        ([2.0, 1.0, 9.0, 8.0, 7.0], [1.0, 7.0, 8.0, 9.0]),
    ]
    df = spark.createDataFrame(rows, "prediction array<double>, label array<double>")
    for k in (1, 3):
        mllib = RankingEvaluator(k=k, metricName="ndcgAtK").evaluate(df)
        ours = df.agg(F.avg(ndcg_at(k))).head(1)[0][0]
        assert ours == pytest.approx(mllib, abs=1e-12) and 0 < ours < 1


def explicit_ratings_lake(
    spark: SparkSession, tmp_path: Path, users: int, items: int, *overrides: str
) -> Config:
    """The test config with ``overrides`` over a lake holding generated user-item ratings for DAY."""
    config = load_config("test", [f"lakehouse.root={tmp_path}", *overrides])
    Lakehouse(spark, config).table("gold", "user_item_interactions").create(
        USER_ITEM_INTERACTIONS_SCHEMA, ["as_of_date"]
    ).append(ml_data.user_item_interactions(spark, users, items, DAY))
    return config


def test_explicit_als_on_residuals_reports_the_bias_baseline_as_its_floor(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = explicit_ratings_lake(
        spark,
        tmp_path,
        200,
        25,
        *SMALL,
        "ml.recommender.mode=explicit",
        "ml.recommender.model_name=als-bias",
        "ml.recommender.explicit_candidates=[bias, residual, plain]",
        # the choice by validation RMSE alone, residuals after the baseline's biases
        "ml.recommender.explicit_choice_metric=rmse",
        "ml.recommender.explicit_item_bias_priors=[0.0]",
        "ml.recommender.explicit_item_bias_regularization=[]",
    )
    summary = train_recommender(spark, config, DateRange.single(DAY)).details
    assert summary["rmse"] > 0 and summary["bias_baseline_rmse"] > 0
    # bias, residual ALS and plain ALS compared on the same validation pairs: the lowest is served, so
    # the floor of explicit mode (no worse than the bias baseline on validation) holds
    by_candidate = summary["validation_rmse_by_candidate"]
    assert {c.split()[0] for c in by_candidate} == {"bias", "residual", "plain"} and len(by_candidate) == 5
    assert summary["validation_rmse"] == min(by_candidate.values()) <= summary["bias_validation_rmse"]
    assert by_candidate["bias"] == summary["bias_validation_rmse"]
    assert summary["promoted"], summary["reason"]
    assert summary["bias_regularization"] in config.ml.recommender.bias_regularization
    assert set(summary["by_k"]) == {1, 5, 10, 20} and "ndcg_at_k" in summary["by_k"][5]["popularity"]
    run = mlflow.MlflowClient(tracking.tracking_uri(config)).get_run(summary["mlflow_run_id"])
    assert run.data.metrics["bias_baseline.rmse"] == pytest.approx(summary["bias_baseline_rmse"], abs=1e-4)
    assert float(run.data.params["als-bias.regparam_scale"]) > 0
    assert run.data.params["als-bias.explicit_model"] == summary["explicit_model"]
    html = Path(summary["report"]).read_text()
    assert "bias baseline: global mean + user and item biases" in html and "catalogue coverage" in html
    assert "Explicit model chosen on validation RMSE" in html


def test_explicit_choice_ranks_only_candidates_within_the_rmse_floor() -> None:
    nan = float("nan")
    # bias (floor 1.0), then three ALS candidates: the best NDCG (index 3) is above the floor in RMSE
    rmses, ndcgs = [1.0, 0.95, 0.99, 1.01], [0.10, 0.12, 0.20, nan]
    assert choose_explicit(rmses, ndcgs, 1.0, "rmse") == 1
    assert choose_explicit(rmses, ndcgs, 1.0, "ndcg_at_k") == 2
    assert choose_explicit(rmses, [0.30, 0.12, 0.20, 0.5], 1.0, "ndcg_at_k") == 0  # the bias ranks best
    # nothing ranked (no relevant validation pair): the lowest RMSE; a NaN RMSE never wins
    assert choose_explicit([1.0, nan, 0.9], [nan, nan, nan], 1.0, "ndcg_at_k") == 2
    # within one standard error (0.015) of the best NDCG (0.20) the widest coverage wins, never one above
    # the RMSE floor (index 3) nor one further from the best NDCG (index 0)
    coverages, errors = [0.05, 0.6, 0.4, 0.9], [0.01, 0.01, 0.015, 0.01]
    assert choose_explicit(rmses, [0.10, 0.19, 0.20, 0.5], 1.0, "ndcg_at_k", coverages, errors, 1.0) == 1
    assert choose_explicit(rmses, [0.10, 0.18, 0.20, 0.5], 1.0, "ndcg_at_k", coverages, errors, 1.0) == 2
    assert choose_explicit(rmses, [0.10, 0.19, 0.20, 0.5], 1.0, "ndcg_at_k", coverages, errors, 0.0) == 2


def test_explicit_mode_serves_the_best_ranking_candidate_within_the_rmse_floor(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = explicit_ratings_lake(
        spark,
        tmp_path,
        200,
        25,
        "ml.recommender.max_iter=5",
        "ml.recommender.grid={rank: [8], regParam: [0.1], alpha: [1.0]}",
        "ml.recommender.mode=explicit",
        "ml.recommender.model_name=als-ranked",
    )
    cfg = config.ml.recommender
    # the defaults: residual item biases shrunk toward a below-average prior, chosen by NDCG@k; with a
    # second prior (0) two residual candidates
    assert cfg.explicit_choice_metric == "ndcg_at_k" and cfg.explicit_item_bias_priors == (0.25,)
    assert cfg.explicit_factor_weights == (1.0,)
    # two priors, each fit also at factor weight 2 (biases + 2 x factors: a candidate without a fit)
    two = replace(cfg, explicit_item_bias_priors=(0.0, 0.25), explicit_factor_weights=(1.0, 2.0))
    config = replace(config, ml=replace(config.ml, recommender=two))
    summary = train_recommender(spark, config, DateRange.single(DAY)).details
    by_rmse, by_ndcg = summary["validation_rmse_by_candidate"], summary["validation_ndcg_by_candidate"]
    assert len(by_rmse) == 5 and sum("item_prior=-0.25" in c for c in by_rmse) == 2
    assert sum("factor_weight=2" in c for c in by_rmse) == 2
    # a weight is a different model: its validation RMSE differs from the same fit's at weight 1
    for c in (c for c in by_rmse if "factor_weight=2" in c):
        assert by_rmse[c] != by_rmse[c.replace(" factor_weight=2", "")]
    floor = summary["bias_validation_rmse"]
    # ranked: exactly the candidates no worse than the bias baseline in validation RMSE (bias included)
    assert set(by_ndcg) == {c for c, v in by_rmse.items() if v <= floor} and "bias" in by_ndcg
    chosen = summary["explicit_choice"]
    assert by_ndcg[chosen] == max(by_ndcg.values()) and by_rmse[chosen] <= floor
    assert summary["validation_rmse"] == by_rmse[chosen]
    assert summary["promoted"], summary["reason"]
    # the winner alone, as conf: one candidate, chosen without a ranking pass
    one = summary["explicit_one_point"]
    assert one["explicit_choice_metric"] == "rmse" and len(one["explicit_candidates"]) == 1
    html = Path(summary["report"]).read_text()
    assert "validation NDCG@k among the candidates no worse than the bias baseline" in html


# Explicit mode with a huge regularisation: plain ALS predicts ~0, far worse than the biases.
HOPELESS_PLAIN_ALS = [
    "ml.recommender.max_iter=5",
    "ml.recommender.mode=explicit",
    "ml.recommender.grid={rank: [4], regParam: [1000.0], alpha: [1.0]}",
]


def test_explicit_mode_serves_the_bias_baseline_when_als_cannot_beat_it_on_validation(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = explicit_ratings_lake(
        spark,
        tmp_path,
        150,
        25,
        *HOPELESS_PLAIN_ALS,
        "ml.recommender.model_name=als-or-bias",
        "ml.recommender.explicit_candidates=[bias, plain]",
    )
    summary = train_recommender(spark, config, DateRange.single(DAY)).details
    assert summary["explicit_model"] == "bias"
    plain = summary["validation_rmse_by_candidate"]["plain rank=4 regParam=1000"]
    assert summary["validation_rmse"] == summary["bias_validation_rmse"] < plain / 2
    # the served model is the baseline itself (biases folded into a rank-2 ALS model): same test RMSE
    assert summary["rmse"] == pytest.approx(summary["bias_baseline_rmse"], abs=1e-5)
    assert summary["promoted"], summary["reason"]
    assert summary["precision_at_k"] > 0  # its top-k lists work (items by bias)
    html = Path(summary["report"]).read_text()
    assert "the bias baseline itself: no ALS candidate had a lower validation RMSE" in html


def test_explicit_model_that_does_not_beat_the_bias_baseline_stays_challenger(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = explicit_ratings_lake(
        spark,
        tmp_path,
        150,
        25,
        *HOPELESS_PLAIN_ALS,
        "ml.recommender.model_name=als-plain",
        "ml.recommender.explicit_residuals=false",
    )
    summary = train_recommender(spark, config, DateRange.single(DAY)).details
    assert summary["rmse"] > summary["bias_baseline_rmse"]
    assert not summary["promoted"] and "rmse" in summary["reason"] and "floor" in summary["reason"]


def test_a_rating_column_that_is_not_numeric_fails_before_any_fit(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = explicit_ratings_lake(
        spark,
        tmp_path,
        20,
        5,
        "ml.recommender.mode=explicit",
        "ml.recommender.rating_column=item_id",
    )
    with pytest.raises(ConfigError, match="ml.recommender.rating_column: item_id must be numeric, is string"):
        train_recommender(spark, config, DateRange.single(DAY))
    missing = load_config("test", [f"lakehouse.root={tmp_path}", "ml.recommender.time_column=rated_at"])
    with pytest.raises(ConfigError, match="no column for ml.recommender.time_column=rated_at"):
        train_recommender(spark, missing, DateRange.single(DAY))


def test_explicit_candidate_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ml.recommender.explicit_candidates: needs one or more of bias"):
        load_config("test", [f"lakehouse.root={tmp_path}", "ml.recommender.explicit_candidates=[bias, svd]"])
    with pytest.raises(ConfigError, match="ml.recommender.explicit_regparam_factors: needs values > 0"):
        load_config("test", [f"lakehouse.root={tmp_path}", "ml.recommender.explicit_regparam_factors=[0]"])
