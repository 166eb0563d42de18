"""Failure / RUL predictor: grouped split, age-bucket baseline, alert lead time, one end-to-end lake
(two models in one MLflow run, champion/challenger, report, idempotent risk scoring)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml.config import load_config
from lakeml.domains.maintenance.failure_model import (
    BASELINE,
    FAILURE_LABEL,
    FAILURE_RISK_SCHEMA,
    RUL_LABEL,
    age_baseline,
    alert_lead_times,
    feature_columns,
    score_failure,
    train_failure_models,
    with_age_baseline,
)
from lakeml.domains.maintenance.features import MACHINE_FEATURES_SCHEMA
from lakeml.errors import ConfigError, JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.ml import models
from lakeml.ml.splits import SPLIT, with_group_split
from lakeml.steps import DateRange
from tests import ml_data
from tests.browser import assert_renders_with_mlflow_headlines

D = dt.date
DAY = dt.timedelta(days=1)
FIRST_DAY = D(2026, 3, 1)
RUN_DATE = FIRST_DAY + 2 * DAY  # the synthetic table has 4 days: the last one is after the run date
SCORE_DAYS = (FIRST_DAY + DAY, FIRST_DAY + 3 * DAY)
RUL, FAILURE = "lakeml-rul", "lakeml-failure"
GIT_COMMIT = "0123abcd-failure-test"
SMALL = {"maxDepth": "[3]", "maxIter": "[3]", "stepSize": "[0.7]"}  # one grid point, few trees
FEATURES = "ml.failure.feature_columns=['*_z', '*_long_mean', cycles_since_maintenance, long_window_count]"


def failure_config(root, *extra):
    grids = [f"ml.failure.{g}.{k}={v}" for g in ("rul_grid", "failure_grid") for k, v in SMALL.items()]
    # MLlib GBT competes with xgboost here (off in the defaults): both families' paths stay tested.
    overrides = [f"lakehouse.root={root}", "ml.curve_points=100", "ml.failure.include_gbt=true", FEATURES]
    return load_config("test", [*overrides, *grids, *extra])


# ---------------------------------------------------------------------------------------------- units


def test_age_baseline_uses_bucket_means_null_bucket_and_overall_mean(spark, config):
    cfg = config.ml.failure  # age bucket 24
    train = spark.createDataFrame(
        [(0, 100.0), (23, 80.0), (24, 50.0), (None, 10.0), (None, 30.0)],
        f"{cfg.age_column} int, {RUL_LABEL} double",
    )
    per_bucket, overall = age_baseline(train, cfg)
    assert overall == pytest.approx(54.0)
    rows = spark.createDataFrame([(1, 5), (30, 6), (None, 7), (500, 8)], f"{cfg.age_column} int, id int")
    got = rows.transform(with_age_baseline(per_bucket, overall, cfg)).select("id", BASELINE)
    expected = spark.createDataFrame(
        [(5, 90.0), (6, 50.0), (7, 20.0), (8, 54.0)], f"id int, {BASELINE} double"
    )
    assertDataFrameEqual(got, expected)


def test_alert_lead_time_per_failure_from_the_earliest_alert(spark, config):
    cfg = config.ml.failure  # 10-minute cycles
    t = lambda hhmmss: dt.datetime.fromisoformat(f"2026-03-01T{hhmmss}")  # noqa: E731
    rows = [
        # machine A, failure at ~10:00 (readings jitter 0-20 s, RUL whole cycles): alerts at RUL 6 and 1
        ("A", t("08:00:05"), 12.0, 1.0, 0.2),
        ("A", t("09:00:15"), 6.0, 1.0, 0.9),
        ("A", t("09:30:20"), 2.0, 1.0, 0.1),
        ("A", t("09:40:01"), 1.0, 1.0, 0.95),
        ("A", t("07:00:00"), 40.0, 0.0, 0.99),  # not failing: its alert is no detection
        # machine A again, failure at ~20:00: alert at RUL 3 only
        ("A", t("19:00:10"), 6.0, 1.0, 0.3),
        ("A", t("19:30:00"), 3.0, 1.0, 0.8),
        # machine B, failure at ~12:00: never alerted
        ("B", t("11:00:00"), 6.0, 1.0, 0.1),
        ("B", t("11:50:00"), 1.0, 1.0, 0.2),
    ]
    scored = spark.createDataFrame(
        rows,
        f"{cfg.group_column} string, {cfg.time_column} timestamp, {RUL_LABEL} double, "
        f"{FAILURE_LABEL} double, {models.SCORE} double",
    )
    got = alert_lead_times(scored, cfg, threshold=0.5)
    assert got == {"failures": 3.0, "failures_detected_rate": pytest.approx(2 / 3), "median_lead_cycles": 3.0}


# ---------------------------------------------------------------------------------------------- lifecycle


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """One lake: 40 machines x 150 readings over 4 days, trained twice, scored twice."""
    cfg = failure_config(tmp_path_factory.mktemp("failure_lake"))
    table = (
        Lakehouse(spark, cfg)
        .table("gold", "machine_features")
        .create(MACHINE_FEATURES_SCHEMA, ["as_of_date"])
    )
    rows = ml_data.machine_features(spark, 40, 150, FIRST_DAY, seed=5)
    yield from ml_data.train_twice_and_score(
        spark,
        cfg,
        table,
        rows,
        train_failure_models,
        score_failure,
        RUN_DATE,
        SCORE_DAYS,
        "failure_risk",
        GIT_COMMIT,
    )


def run_metrics(t, name, version):
    return t.client.get_run(t.client.get_model_version(name, version).run_id).data.metrics


def test_group_split_puts_each_machine_in_one_split_and_the_trainer_uses_it(trained):
    t, fc = trained, trained.cfg.ml.failure
    rows = t.table.read(version=t.table_version).where(F.col("as_of_date") <= F.lit(RUN_DATE))
    split = rows.transform(with_group_split(fc.group_column, fc.test_fraction, fc.validation_fraction, 42))
    per_machine = split.groupBy("machine_id").agg(F.countDistinct(SPLIT).alias("splits"))
    assert per_machine.agg(F.max("splits")).first()[0] == 1
    labelled = split.where(F.col("rul_cycles").isNotNull() | F.col("fails_within").isNotNull())
    counts = {r[SPLIT]: r["count"] for r in labelled.groupBy(SPLIT).count().collect()}
    assert set(counts) == {"train", "validation", "test"}
    assert (t.first["rows_train"], t.first["rows_validation"], t.first["rows_test"]) == (
        counts["train"],
        counts["validation"],
        counts["test"],
    )
    metrics = run_metrics(t, RUL, t.first["rul_version"])
    assert {s: int(metrics[f"rows.{s}.labelled"]) for s in counts} == counts
    # each task trains on its own known labels only; the day after the run date is never used
    assert (
        int(metrics["rows.test.rul_rows"])
        == labelled.where((F.col(SPLIT) == "test") & F.col("rul_cycles").isNotNull()).count()
    )
    assert t.table.read().where(F.col("as_of_date") > F.lit(RUN_DATE)).count() > 0


def test_rul_model_beats_the_age_bucket_baseline(trained):
    t = trained
    assert t.first["rmse"] < 0.7 * t.first["baseline_rmse"], t.first
    metrics = run_metrics(t, RUL, t.first["rul_version"])
    assert metrics[f"{RUL}.rmse"] == pytest.approx(t.first["rmse"], abs=1e-4)
    assert metrics["baseline.rmse"] == pytest.approx(t.first["baseline_rmse"], abs=1e-4)
    for key in ("mae", "mean_error", "cmapss_score"):
        assert f"{RUL}.{key}" in metrics and f"baseline.{key}" in metrics


def test_first_run_makes_both_models_champions_in_one_run(trained, spark):
    t = trained
    assert (t.first["rul_version"], t.first["failure_version"]) == ("1", "1")
    assert t.first["rul_promoted"] and t.first["failure_promoted"]
    assert t.first["input_version"] == t.table_version
    for name in (RUL, FAILURE):
        assert str(t.client.get_model_version_by_alias(name, "champion").version) == "1"
    rul_run = t.client.get_model_version(RUL, "1").run_id
    assert t.client.get_model_version(FAILURE, "1").run_id == rul_run
    run = t.client.get_run(rul_run)
    assert run.data.params["git_commit"] == GIT_COMMIT
    assert run.data.params["input.gold/machine_features.version"] == str(t.table_version)
    tags = t.client.get_model_version(FAILURE, "1").tags
    assert float(tags["threshold"]) == t.first["threshold"]
    assert float(tags["alert_budget"]) == t.first["alert_budget"] == t.cfg.ml.failure.alert_budget
    # the realised alert rate beside the budget: never above it on validation, where it is chosen
    assert 0 < t.first["validation_alert_rate"] <= t.first["alert_budget"]
    assert t.first["test_alert_rate"] == pytest.approx(run.data.metrics[f"{FAILURE}.alert_rate"], abs=1e-6)
    assert float(run.data.params[f"{FAILURE}.threshold"]) == pytest.approx(t.first["threshold"])
    assert tags["input.gold/machine_features.version"] == str(t.table_version)
    metrics = run.data.metrics
    assert metrics[f"{FAILURE}.auprc"] > 0.8
    assert 0 < metrics[f"{FAILURE}.failures_detected_rate"] <= 1
    assert metrics[f"{FAILURE}.median_lead_cycles"] >= 0
    reasons = {f"model-{name}-v{v}" for name in (RUL, FAILURE) for v in ("1", "2")}
    assert {v: set(r) for v, r in t.table.protected_versions().items()} == {t.table_version: reasons}


def test_report_has_both_models_tables_and_plots(trained):
    html = Path(trained.first["report"]).read_text(encoding="utf-8")
    assert html.count('<img src="data:image/png;base64,') == 6
    for title in (
        "Predicted vs true RUL on test",
        "Test error by true RUL bucket",
        "RUL feature importance",
        "PR and ROC on test",
        "Confusion at the alert threshold",
        "Failure classifier feature importance",
        "baseline: mean RUL by cycles_since_maintenance bucket of 24",
        "median_lead_cycles",
        "failures_detected",
        "Candidate vs current champion on the same holdout",
    ):
        assert title in html, title


def test_retrain_on_same_version_is_identical_and_stays_challenger(trained):
    t = trained
    assert (t.second["rul_version"], t.second["failure_version"]) == ("2", "2")
    assert not t.second["rul_promoted"] and not t.second["failure_promoted"]
    assert "does not beat champion" in t.second["rul_reason"]
    assert "does not beat champion" in t.second["failure_reason"]
    for name in (RUL, FAILURE):
        assert str(t.client.get_model_version_by_alias(name, "champion").version) == "1"
        assert str(t.client.get_model_version_by_alias(name, "challenger").version) == "2"
    first, second = run_metrics(t, RUL, "1"), run_metrics(t, RUL, "2")
    assert set(first) <= set(second)
    for key, value in first.items():
        assert second[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
    # each champion was re-scored on the challenger's holdout, with the same result
    assert second[f"{RUL}.champion.rmse"] == pytest.approx(first[f"{RUL}.rmse"], abs=1e-9)
    assert second[f"{FAILURE}.champion.auprc"] == pytest.approx(first[f"{FAILURE}.auprc"], abs=1e-9)
    assert t.second["threshold"] == t.first["threshold"]


def test_score_failure_writes_one_row_per_input_row_with_both_champions(trained):
    t = trained
    first, last = SCORE_DAYS
    inputs = t.table.read(where=[("as_of_date", ">=", first), ("as_of_date", "<=", last)])
    scores = t.scores.read()
    assert t.scores.schema().fieldNames() == FAILURE_RISK_SCHEMA.fieldNames()
    assert t.score_first["noop"] is False and t.score_first["rows"] == inputs.count()
    assert (t.score_first["version"], t.score_first["rul_version"]) == ("1", "1")
    assertDataFrameEqual(
        scores.select("machine_id", "as_of", "as_of_date"), inputs.select("machine_id", "as_of", "as_of_date")
    )
    threshold = float(t.client.get_model_version(FAILURE, "1").tags["threshold"])
    stamps = scores.groupBy(
        "model_name", "model_version", "rul_model_version", "input_version", "threshold"
    ).count()
    assert [tuple(r) for r in stamps.collect()] == [
        (FAILURE, "1", "1", t.table_version, threshold, inputs.count())
    ]
    assertDataFrameEqual(
        scores.select("machine_id", "as_of", "alert"),
        scores.select("machine_id", "as_of", (F.col("failure_probability") >= threshold).alias("alert")),
    )
    assert scores.where(~F.col("failure_probability").between(0.0, 1.0)).count() == 0
    alerts = scores.where("alert").count()
    assert 0 < alerts == t.score_first["alerts"]
    assert t.score_first["alert_rate"] == round(alerts / inputs.count(), 6)
    assert t.score_first["alert_budget"] == t.cfg.ml.failure.alert_budget
    # the RUL prediction tracks the label (the synthetic signal is learnable)
    joined = scores.join(inputs.where(F.col("rul_cycles").isNotNull()), ["machine_id", "as_of"])
    assert joined.agg(F.corr("predicted_rul", "rul_cycles")).first()[0] > 0.8
    # a second call with the same champions and input version changes nothing
    assert t.score_again["noop"] is True and t.score_again["rows"] == 0
    assert t.scores.version() == t.scores_version


def test_scoring_records_feature_drift_against_the_training_input(trained):
    t, fc = trained, trained.cfg.ml.failure
    first, last = SCORE_DAYS
    drift = t.lake.table("ops", "drift").read()
    numeric, categorical = feature_columns(fc, t.table.schema())  # what the trainer fits on
    assert categorical == ["regime"] and len(numeric) > 10
    # one row per feature of the failure champion, for this window; the no-op rerun added none
    expected = [
        (FAILURE, first, last, "1", fc.input_table, t.table_version, t.table_version, f, kind)
        for features, kind in ((numeric, "numeric"), (categorical, "categorical"))
        for f in features
    ]
    got = drift.select(
        "model_name", "window_start", "window_end", "model_version", "reference_table",
        "reference_version", "current_version", "feature", "kind",
    )  # fmt: skip
    assertDataFrameEqual(got, got.sparkSession.createDataFrame(expected, got.schema), checkRowOrder=False)
    # the scored days are the newest slice of the training history (machines age): some drift, every row
    # counted
    figures = drift.agg(
        F.max("psi"), F.min("psi"), F.min("current_rows"), F.max("current_rows"), F.max("reference_rows")
    ).first()
    scored_rows = t.table.read(where=[("as_of_date", ">=", first), ("as_of_date", "<=", last)]).count()
    assert figures[1] >= 0.0 and figures[0] > 0.0
    assert figures[2] == figures[3] == scored_rows and figures[4] == t.table.read().count()
    assert t.score_first["drift_alerts"] == drift.where(F.col("psi") >= t.cfg.ml.drift.alert_psi).count()
    assert t.score_first["drift_alerts"] == drift.where(F.col("level") == "alert").count()
    assert t.score_first["drift_max_psi"] == pytest.approx(figures[0], abs=1e-4)


def test_missing_features_or_a_class_fail_clearly_before_training(trained, spark):
    root = trained.cfg.lakehouse.root
    cfg = failure_config(root, 'ml.failure.feature_columns=["*_z", "no_such_sensor_*"]')
    with pytest.raises((JobFailed, ConfigError), match=r"no_such_sensor_\*"):
        train_failure_models(spark, cfg, DateRange.single(RUN_DATE))
    cfg = failure_config(root, "ml.failure.feature_columns=['*_z', rul_cycles]")
    with pytest.raises(ConfigError, match="label column"):
        train_failure_models(spark, cfg, DateRange.single(RUN_DATE))
    with pytest.raises(JobFailed, match="split 'train' has no rows"):  # a run date before any row
        train_failure_models(spark, failure_config(root), DateRange.single(FIRST_DAY - DAY))


def test_scoring_before_any_training_fails_clearly(spark, tmp_path):
    with pytest.raises(JobFailed, match=r"no champion in the registry: run maintenance\.train_failure"):
        score_failure(spark, failure_config(tmp_path), DateRange(*SCORE_DAYS))


def test_drift_alert_fails_scoring_before_any_score_is_written(trained):
    t = trained
    strict = failure_config(
        t.cfg.lakehouse.root,
        "ml.drift.warn_psi=1.0e-9",
        "ml.drift.alert_psi=1.0e-9",
        "ml.drift.fail_on_alert=true",
    )
    t.client.set_registered_model_alias(RUL, "champion", "2")  # so the days are due again
    try:
        with pytest.raises(
            JobFailed,
            match=r"lakeml-failure v1: feature drift above ml\.drift\.alert_psi=1e-09 in .*no scores were "
                  r"written",
        ):
            score_failure(t.lake.spark, strict, DateRange(*SCORE_DAYS))
        assert t.scores.version() == t.scores_version
        # the drift rows of this attempt replaced the window's earlier ones (one row per feature)
        drift = t.lake.table("ops", "drift").read()
        features = sum(map(len, feature_columns(t.cfg.ml.failure, t.table.schema())))
        assert drift.count() == features and drift.where(F.col("level") == "alert").count() > 0
    finally:
        t.client.set_registered_model_alias(RUL, "champion", "1")


def test_alerts_above_the_budget_factor_fail_scoring_before_any_score_is_written(trained):
    t = trained
    strict = failure_config(t.cfg.lakehouse.root, "ml.alerts.fail_on_excess=true")
    t.client.set_registered_model_alias(RUL, "champion", "2")  # so the days are due again
    t.client.set_model_version_tag(FAILURE, "1", "alert_budget", "1e-06")  # any alert is far above it
    try:
        with pytest.raises(
            JobFailed, match=r"lakeml-failure v1 alerts \d+ of \d+ rows .*no scores were written"
        ):
            score_failure(t.lake.spark, strict, DateRange(*SCORE_DAYS))
        assert t.scores.version() == t.scores_version
    finally:
        t.client.set_model_version_tag(FAILURE, "1", "alert_budget", repr(t.cfg.ml.failure.alert_budget))
        t.client.set_registered_model_alias(RUL, "champion", "1")


def test_a_new_rul_champion_rescores_the_same_days(trained):
    """Last test: it moves the RUL champion alias to version 2 (and back)."""
    t = trained
    t.client.set_registered_model_alias(RUL, "champion", "2")
    try:
        again = score_failure(t.lake.spark, t.cfg, DateRange(*SCORE_DAYS)).details
        assert again["noop"] is False and (again["version"], again["rul_version"]) == ("1", "2")
        stamps = t.scores.read().select("model_version", "rul_model_version").distinct().collect()
        assert [tuple(r) for r in stamps] == [("1", "2")]
        assert t.scores.version() == t.scores_version + 1
    finally:
        t.client.set_registered_model_alias(RUL, "champion", "1")


def test_report_renders_in_chromium_with_the_mlflow_metrics(trained, tmp_path):
    metrics = run_metrics(trained, RUL, trained.first["rul_version"])
    assert_renders_with_mlflow_headlines(
        trained.first["report"],
        tmp_path,
        metrics,
        {"Test metrics (error": RUL, "Test metrics (alert": FAILURE},
    )
