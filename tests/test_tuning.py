"""Grid tuning and model families (lakeml.ml.models): one fit per grid point, progress lines, early
stopping on the tuning rows, xgboost.spark as a family that logs to and loads from MLflow."""

from __future__ import annotations

import math

import pytest
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import functions as F

from lakeml import runlog
from lakeml.ml import models

LABEL = "y"


@pytest.fixture(scope="module")
def rows(spark):
    """600 rows; y depends on x1 (noisy), x2 is noise, a category adds a little."""
    return (
        spark.range(600, numPartitions=2)
        .select(
            F.rand(1).alias("x1"),
            F.rand(2).alias("x2"),
            F.when(F.col("id") % 3 == 0, "a").otherwise("b").alias("c"),
            F.col("id"),
        )
        .withColumn(LABEL, ((F.col("x1") + 0.3 * F.rand(3)) > 0.8).cast("double"))
        .cache()
    )


@pytest.fixture
def events(monkeypatch):
    seen: list[tuple[str, dict]] = []
    monkeypatch.setattr(runlog, "event", lambda name, **fields: seen.append((name, fields)) or fields)
    return seen


@pytest.fixture
def auprc(spark):
    return BinaryClassificationEvaluator(labelCol=LABEL, metricName="areaUnderPR")


def test_tune_fits_each_point_once_logs_progress_and_keeps_the_best(spark, rows, events, auprc):
    prefix = models.feature_stages(rows.schema, ["x1", "x2"], ["c"])
    stages = models.classifier_stages("logistic", LABEL, None, 7)
    models.FIT_RECORDS = []
    try:
        model, results = models.fit_tuned(
            prefix, stages, {"regParam": [0.0, 5.0, 50.0]}, auprc, rows, 0.75, 2, 7, "m"
        )
        records = models.FIT_RECORDS
    finally:
        models.FIT_RECORDS = None
    assert [p["regParam"] for p, _ in results] == [0.0, 5.0, 50.0]
    assert all(not math.isnan(m) for _, m in results)
    best = max(results, key=lambda r: r[1])[0]["regParam"]
    assert model.stages[-1].getRegParam() == best
    done = [f for name, f in events if name == "fit_done"]
    assert sorted(f["point"] for f in done) == ["1/3", "2/3", "3/3"]
    assert sorted(f["left"] for f in done) == [0, 1, 2]
    assert all(f["seconds"] >= 0 and f["model"] == "m" for f in done)
    (record,) = records
    assert record.params == {"regParam": best} and len(record.grid_seconds) == 3
    # the winner was fitted on the training share only: the record's rows hold the tuning flag
    assert models.TUNING_VALIDATION in record.data.columns


def test_one_point_grid_is_one_fit_on_all_rows_without_a_metric(spark, rows, events, auprc):
    prefix = models.feature_stages(rows.schema, ["x1", "x2"], [])
    stages = models.classifier_stages("gbt", LABEL, None, 7)
    _, results = models.fit_tuned(prefix, stages, {"maxIter": [3], "maxDepth": [2]}, auprc, rows, 0.75, 2, 7)
    assert len(results) == 1 and math.isnan(results[0][1])
    assert [f["point"] for name, f in events if name == "fit_done"] == ["1/1"]


def test_gbt_stops_early_on_the_tuning_rows(spark, rows, events, auprc):
    prefix = models.feature_stages(rows.schema, ["x1", "x2"], [])
    stages = models.classifier_stages("gbt", LABEL, None, 7)
    grid = {"maxIter": [60], "maxDepth": [3, 5]}
    model, _ = models.fit_tuned(prefix, stages, grid, auprc, rows, 0.75, 2, 7)
    assert model.stages[-1].getNumTrees < 60


def test_xgboost_competes_with_gbt_and_round_trips_through_mlflow(spark, rows, events, auprc, tmp_path):
    import mlflow
    import mlflow.spark

    train, validation = rows.where(F.col("id") % 4 != 0), rows.where(F.col("id") % 4 == 0)
    prefix = models.feature_stages(rows.schema, ["x1", "x2"], ["c"])
    families = {
        "gbt": (models.classifier_stages("gbt", LABEL, None, 7), {"maxIter": [5], "maxDepth": [3]}),
        "xgboost": (
            models.classifier_stages("xgboost", LABEL, None, 7),
            {"n_estimators": [30], "max_depth": [3], "learning_rate": [0.3]},
        ),
    }
    winner, fitted = models.fit_families(prefix, families, auprc, train, validation, 0.75, 2, 7, "m")
    assert set(fitted) == {"gbt", "xgboost"}
    assert all(0 < metric <= 1 for _, metric, _ in fitted.values())
    assert fitted[winner][1] == max(metric for _, metric, _ in fitted.values())
    xgb = fitted["xgboost"][0]
    assert type(xgb.stages[-1]).__name__ == "SparkXGBClassifierModel"
    assert set(models.feature_importance(xgb, xgb.transform(rows.limit(0)).schema)) <= {
        "x1__num",
        "x2__num",
    } | {f"c__vec_{v}" for v in ("a", "b", "__unknown")}

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("xgb", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.spark.log_model(
            xgb, artifact_path="model", pip_requirements=[f"pyspark=={spark.version}"]
        )
    loaded = mlflow.spark.load_model(info.model_uri)
    score = lambda m: models.with_positive_score(m.transform(validation)).select("id", models.SCORE)  # noqa: E731
    before = {r["id"]: r[models.SCORE] for r in score(xgb).collect()}
    after = {r["id"]: r[models.SCORE] for r in score(loaded).collect()}
    assert after == pytest.approx(before)


def test_a_family_that_cannot_beat_the_best_within_its_rounds_is_dropped(spark, rows, events, auprc):
    train, validation = rows.where(F.col("id") % 4 != 0), rows.where(F.col("id") % 4 == 0)
    prefix = models.feature_stages(rows.schema, ["x1", "x2"], [])
    families = {
        "gbt": (models.classifier_stages("gbt", LABEL, None, 7), {"maxIter": [5], "maxDepth": [3]}),
        # L1 so strong that every coefficient is 0: every score ties, AUPRC = the positive rate
        "logistic": (
            models.classifier_stages("logistic", LABEL, None, 7),
            {"regParam": [1e4, 2e4, 3e4], "elasticNetParam": [1.0]},
        ),
    }
    winner, fitted = models.fit_families(prefix, families, auprc, train, validation, 0.75, 1, 7, "m", 1)
    assert winner == "gbt" and fitted["gbt"][1] > fitted["logistic"][1]
    assert [p["regParam"] for p, _ in fitted["logistic"][2]] == [1e4]  # one round of one point, then dropped
    (dropped,) = [f for name, f in events if name == "family_dropped"]
    assert dropped["family"] == "logistic" and dropped["rounds"] == 1
    assert dropped["best_metric"] == round(fitted["gbt"][1], 5)
    assert sum(name == "fit_done" and f["model"] == "m/logistic" for name, f in events) == 1
