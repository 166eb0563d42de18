"""Failure / remaining-useful-life predictor: train on gold/machine_features, register, gate, score risk.

Two models share one pinned input, one split and one MLflow run (``FailureTrainingSpec``, run by
``lifecycle.run_training``), each its own step with its own result object:

- RUL regression (``RulTrainer``, ``rul_model_name``): GBT on the capped ``rul_column`` label,
  beside a baseline that predicts the mean train RUL of the row's age bucket
  (``floor(age_column / age_bucket)``, NULL age its own bucket, an unseen bucket the overall train
  mean);
- failure-within-horizon classification (``FailureClassifier``, ``failure_model_name``): GBT on
  ``failure_column``, positives weighted in training only; the alert threshold is the lowest
  validation score whose alert rate stays within ``alert_budget`` (ties alert together:
  ``evaluation.alert_threshold``); test adds the alert lead time per failure.

Split: rows with ``date_column <= run_date``, by a hash of ``group_column`` (machine), so no machine
is in two splits; each task uses the rows whose own label is known (NULL = unknown, never used).
Each model family (gbt, plus ``families`` such as xgboost) is tuned on a held-out share of train, the
families compete on the validation machines, and the winner is scored once on test.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import Config, FailureModelConfig
from lakeml.errors import ConfigError, JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.ml import evaluation as ev
from lakeml.ml import lifecycle, models, scoring
from lakeml.ml.report import (
    HtmlReport,
    plot_alert_confusion,
    plot_error_by_bucket,
    plot_feature_importance,
    plot_pr_roc,
    plot_rul_scatter,
)
from lakeml.ml.splits import SPLIT, TEST, TRAIN, VALIDATION, Transform, with_group_split
from lakeml.steps import DateRange, StepResult

TRAIN_JOB = "maintenance.train_failure"
RUL_LABEL = "_rul"
FAILURE_LABEL = "_fails"
WEIGHT = "_weight"
PREDICTION = "prediction"
BASELINE = "_baseline"
SPLITS = (TRAIN, VALIDATION, TEST)

FAILURE_RISK_SCHEMA = T.StructType(
    [
        T.StructField("machine_id", T.StringType(), False),
        T.StructField("as_of", T.TimestampType(), False),
        T.StructField("predicted_rul", T.DoubleType(), False),  # cycles, from the RUL champion
        T.StructField("failure_probability", T.DoubleType(), False),  # P(fails within the horizon)
        T.StructField("alert", T.BooleanType(), False),  # failure_probability >= threshold
        T.StructField("threshold", T.DoubleType(), False),  # alert budget on validation
        T.StructField("model_name", T.StringType(), False),  # the failure classifier
        T.StructField("model_version", T.StringType(), False),
        T.StructField("rul_model_version", T.StringType(), False),
        T.StructField("input_version", T.LongType(), False),  # version of the feature table scored
        T.StructField("scored_at", T.TimestampType(), False),
        T.StructField("as_of_date", T.DateType(), False),  # partition
    ]
)


# ---------------------------------------------------------------------------------------------- inputs


def feature_columns(cfg: FailureModelConfig, schema: T.StructType) -> tuple[list[str], list[str]]:
    """Numeric features (the conf patterns expanded over the table) and categorical features; never a
    label."""
    expanded = lifecycle.expand_columns(cfg.feature_columns, schema.fieldNames())
    leaks = [c for c in (cfg.rul_column, cfg.failure_column) if c in expanded]
    if leaks:
        raise ConfigError(f"ml.failure.feature_columns match the label column(s) {', '.join(leaks)}")
    numeric = [c for c in expanded if c not in cfg.categorical_features]
    return numeric, list(cfg.categorical_features)


def with_training_columns(cfg: FailureModelConfig) -> Transform:
    """Reads the RUL and failure labels; adds ``_rul`` (double) and ``_fails`` (double 0/1), NULL when
    unknown."""
    return lambda df: df.withColumn(RUL_LABEL, F.col(cfg.rul_column).cast("double")).withColumn(
        FAILURE_LABEL, F.col(cfg.failure_column).cast("double")
    )


def with_class_weight(positive_weight: float) -> Transform:
    """Reads ``_fails``; adds ``_weight``: ``positive_weight`` for failing rows, 1 for the rest."""
    return lambda df: df.withColumn(WEIGHT, F.when(F.col(FAILURE_LABEL) == 1, positive_weight).otherwise(1.0))


def split_counts(split: DataFrame, cfg: FailureModelConfig) -> dict[str, dict[str, int]]:
    """Per split: machines, labelled rows, RUL rows, failure rows and failing rows (three rows to the
    driver)."""
    rows = split.groupBy(SPLIT).agg(
        F.countDistinct(cfg.group_column).alias("machines"),
        F.count(F.lit(1)).alias("labelled"),
        F.count(RUL_LABEL).alias("rul_rows"),
        F.count(FAILURE_LABEL).alias("failure_rows"),
        F.coalesce(F.sum(FAILURE_LABEL), F.lit(0.0)).cast("long").alias("failing"),
    )
    counts = {r[SPLIT]: {k: int(v) for k, v in r.asDict().items() if k != SPLIT} for r in rows.collect()}
    empty = {"machines": 0, "labelled": 0, "rul_rows": 0, "failure_rows": 0, "failing": 0}
    return {s: counts.get(s, empty) for s in SPLITS}


def check_splits(counts: Mapping[str, Mapping[str, int]], cfg: FailureModelConfig, run_date: dt.date) -> None:
    """JobFailed when a split has no RUL rows, or its failure rows lack one of the classes."""
    for name in SPLITS:
        c = counts[name]
        where = (
            f"{cfg.input_table} rows on or before {run_date}, {c['machines']} machines in split '{name}' "
            f"(test_fraction {cfg.test_fraction}, validation_fraction {cfg.validation_fraction})"
        )
        if c["rul_rows"] == 0:
            raise JobFailed(
                f"failure model: split '{name}' has no rows with a known {cfg.rul_column} ({where})"
            )
        if c["failing"] == 0 or c["failing"] == c["failure_rows"]:
            raise JobFailed(
                f"failure model: split '{name}' has {c['failure_rows']} rows with a known "
                f"{cfg.failure_column} of which {c['failing']} fail; need both classes ({where}): "
                "build features over more machines or history"
            )


# ---------------------------------------------------------------------------------------------- RUL


def age_bucket(cfg: FailureModelConfig) -> Column:
    """The baseline's bucket of a row: ``floor(age_column / age_bucket)`` (NULL age = the NULL bucket)."""
    return F.floor(F.col(cfg.age_column) / F.lit(cfg.age_bucket))


def age_baseline(train: DataFrame, cfg: FailureModelConfig) -> tuple[DataFrame, float]:
    """Reads train's age column and ``_rul``; the mean RUL per age bucket (small) and overall."""
    per_bucket = train.groupBy(age_bucket(cfg).alias("_bucket")).agg(F.avg(RUL_LABEL).alias(BASELINE))
    overall = train.agg(F.avg(RUL_LABEL)).head(1)[0][0]
    return per_bucket, float(overall)


def with_age_baseline(per_bucket: DataFrame, overall: float, cfg: FailureModelConfig) -> Transform:
    """Reads the age column; adds ``_baseline``: its bucket's train mean RUL, else the overall train mean."""

    def apply(df: DataFrame) -> DataFrame:
        keyed = df.withColumn("_row_bucket", age_bucket(cfg))
        joined = keyed.join(
            F.broadcast(per_bucket), keyed["_row_bucket"].eqNullSafe(per_bucket["_bucket"]), "left"
        )
        return joined.select(*df.columns, F.coalesce(F.col(BASELINE), F.lit(overall)).alias(BASELINE))

    return apply


# ---------------------------------------------------------------------------------------------- failure


def _scored(model: PipelineModel, df: DataFrame) -> DataFrame:
    """Reads the model's features; adds its outputs and ``score`` = P(fails within the horizon)."""
    return models.with_positive_score(model.transform(df))


def alert_lead_times(scored: DataFrame, cfg: FailureModelConfig, threshold: float) -> dict[str, float]:
    """Reads time, RUL label, ``_fails`` and ``score`` of test rows; per failure, whether an alert came
    and how early (largest RUL among alerted rows): the detected share and the median lead in cycles.

    A failing row's failure time is ``as_of + rul * cycle_minutes``; the rows of one failure estimate it
    within a cycle (RUL is whole cycles, readings jitter), so within a machine a failure starts where
    consecutive estimates are more than one cycle apart (lives are far longer than a cycle).
    """
    minute = F.unix_micros(F.col(cfg.time_column)) / 60_000_000.0 + F.col(RUL_LABEL) * cfg.cycle_minutes
    failing = scored.where((F.col(FAILURE_LABEL) == 1) & F.col(RUL_LABEL).isNotNull()).select(
        cfg.group_column,
        minute.alias("_failure_minute"),
        F.col(RUL_LABEL),
        (F.col(models.SCORE) >= F.lit(threshold)).alias("_alert"),
    )
    order = Window.partitionBy(cfg.group_column).orderBy("_failure_minute")
    gap = F.col("_failure_minute") - F.lag("_failure_minute").over(order)
    starts = F.coalesce(gap > F.lit(float(cfg.cycle_minutes)), F.lit(True)).cast("int")
    numbered = failing.withColumn(
        "_failure",
        F.sum(starts).over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow)),
    )
    per_failure = numbered.groupBy(cfg.group_column, "_failure").agg(
        F.max(F.col("_alert").cast("int")).alias("_detected"),
        F.max(F.when(F.col("_alert"), F.col(RUL_LABEL))).alias("_lead"),
    )
    row = per_failure.agg(
        F.count(F.lit(1)).alias("failures"),
        F.coalesce(F.sum("_detected"), F.lit(0)).alias("detected"),
        F.percentile_approx("_lead", 0.5, 10_000).alias("median"),
    ).head(1)[0]
    failures, detected = int(row["failures"]), int(row["detected"])
    return {
        "failures": float(failures),
        "failures_detected_rate": detected / failures if failures else math.nan,
        "median_lead_cycles": float(row["median"]) if row["median"] is not None else math.nan,
    }


# ---------------------------------------------------------------------------------------------- training


def _best_params(tuning: list[tuple[dict[str, float], float]], higher_is_better: bool) -> dict[str, float]:
    """The grid point with the best validation metric (empty without tuning)."""
    if not tuning:
        return {}
    pick = max if higher_is_better else min
    return pick(tuning, key=lambda t: t[1])[0]


def _floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metrics as floats, as MLflow and the promotion gate take them."""
    return {k: float(v) for k, v in metrics.items()}


def failure_families(
    cfg: FailureModelConfig, gbt_grid: Mapping[str, Sequence[float]]
) -> dict[str, Mapping[str, Sequence[float]]]:
    """The competing families of one of the two models: MLlib GBT (its own grid) when included, then
    ``families``."""
    return {**({"gbt": gbt_grid} if cfg.include_gbt else {}), **cfg.families}


@dataclass(frozen=True)
class FailureData:
    """The labelled rows of one failure training run (cached), split by machine, and what both models
    share: the split counts and the feature stages."""

    labelled: DataFrame  # labelled rows up to the run date, with ``_rul``, ``_fails`` and ``split``
    counts: dict[str, dict[str, int]]
    numeric: list[str]
    categorical: list[str]
    prefix: list[Any]  # the feature stages

    def part(self, label: str, split: str) -> DataFrame:
        """The rows of ``split`` whose ``label`` is known."""
        return self.labelled.where(F.col(label).isNotNull() & (F.col(SPLIT) == split))

    @property
    def features(self) -> str:
        return ",".join([*self.numeric, *self.categorical])


def prepare_failure_data(run: lifecycle.TrainingRun, cfg: FailureModelConfig) -> FailureData:
    """The pinned features up to the run date with a known label, split by machine and cached;
    JobFailed when a column is missing or a split cannot train or test a model."""
    df = run.pinned.df
    keys = [cfg.group_column, cfg.time_column, cfg.date_column, cfg.rul_column, cfg.failure_column]
    lifecycle.require_columns(df, [*keys, cfg.age_column, *cfg.categorical_features], "failure model")
    numeric, categorical = feature_columns(cfg, df.schema)
    prefix = models.feature_stages(df.schema, numeric, categorical)
    labelled = run.cache(
        df.where(F.col(cfg.date_column) <= F.lit(run.run_date))
        .where(F.col(cfg.rul_column).isNotNull() | F.col(cfg.failure_column).isNotNull())
        .transform(with_training_columns(cfg))
        .transform(with_group_split(cfg.group_column, cfg.test_fraction, cfg.validation_fraction, run.seed))
    )
    counts = split_counts(labelled, cfg)
    check_splits(counts, cfg, run.run_date)
    return FailureData(labelled, counts, numeric, categorical, prefix)


class ChosenFamily:
    """A model's fits per family and the family chosen on validation: its model and tuning."""

    family: str
    fitted: dict[str, models.Fitted]  # family -> (model, validation metric, tuning)

    @property
    def model(self) -> PipelineModel:
        return self.fitted[self.family][0]

    @property
    def tuning(self) -> list[tuple[dict[str, float], float]]:
        return self.fitted[self.family][2]


@dataclass(frozen=True)
class RulResult(ChosenFamily):
    """The RUL regressor of one run: the families' fits, the winner's test metrics beside the age-bucket
    baseline's, and its registry candidate."""

    family: str
    fitted: dict[str, models.Fitted]  # family -> (model, validation RMSE, tuning)
    metrics: dict[str, float]  # test
    baseline_metrics: dict[str, float]  # the age-bucket baseline on the same test rows
    scored: DataFrame  # test ``_rul``, ``prediction`` and ``_baseline`` (cached)
    test_rows: int
    candidate: lifecycle.Candidate


@dataclass(frozen=True)
class RulTrainer:
    """The remaining-useful-life regressor: families tuned on train machines, chosen on validation
    machines, tested beside the mean RUL of the row's age bucket."""

    cfg: FailureModelConfig

    def fit(self, run: lifecycle.TrainingRun, data: FailureData) -> RulResult:
        """Tune and choose the family, score test once (with the baseline), and make the candidate."""
        cfg, config, seed = self.cfg, run.config, run.seed
        train, test = data.part(RUL_LABEL, TRAIN), data.part(RUL_LABEL, TEST)
        rmse = RegressionEvaluator(labelCol=RUL_LABEL, predictionCol=PREDICTION, metricName="rmse")
        families = {
            f: (models.regressor_stages(f, RUL_LABEL, seed), g)
            for f, g in failure_families(cfg, cfg.rul_grid).items()
        }
        with run.timed("rul.fit"):
            family, fitted = models.fit_families(
                data.prefix, families, rmse, train, data.part(RUL_LABEL, VALIDATION), cfg.train_ratio,
                config.ml.parallelism, seed, cfg.rul_model_name, config.ml.family_patience,
            )  # fmt: skip
        model, _, tuning = fitted[family]
        with run.timed("rul.evaluate"):
            per_bucket, overall = age_baseline(train, cfg)
            scored = run.cache(  # the columns the metrics and the report read, nothing wider
                model.transform(test)
                .transform(with_age_baseline(per_bucket, overall, cfg))
                .select(RUL_LABEL, PREDICTION, BASELINE)
            )
            metrics = _floats(ev.regression_metrics(scored, RUL_LABEL, PREDICTION, cfg.cmapss_rul_cap))
            baseline_metrics = _floats(ev.regression_metrics(scored, RUL_LABEL, BASELINE, cfg.cmapss_rul_cap))

        def evaluate(other: PipelineModel) -> dict[str, float]:
            return ev.regression_metrics(other.transform(test), RUL_LABEL, PREDICTION, cfg.cmapss_rul_cap)

        candidate = lifecycle.Candidate(
            name=cfg.rul_model_name,
            model=model,
            metrics=metrics,
            evaluate=evaluate,
            promotion=cfg.rul_promotion,
            params={
                "family": family,
                "features": data.features,
                **{f"tuned.{k}": v for k, v in _best_params(tuning, False).items()},
            },
            tags={"family": family, "task": "rul"},
        )
        test_rows = data.counts[TEST]["rul_rows"]
        return RulResult(family, fitted, metrics, baseline_metrics, scored, test_rows, candidate)

    def run_metrics(self, result: RulResult) -> dict[str, float]:
        """The baseline's test metrics and each family's validation RMSE."""
        out = {f"baseline.{k}": v for k, v in result.baseline_metrics.items()}
        out.update({f"validation.{f}.rul.rmse": v[1] for f, v in result.fitted.items() if v[1] == v[1]})
        return out

    def report(self, report: HtmlReport, run: lifecycle.TrainingRun, result: RulResult) -> None:
        """The regression section: test metrics vs baseline, tuning, scatter, error by bucket, importance."""
        cfg, config = self.cfg, run.config
        report.add_heading("Remaining useful life (regression)")
        keys = ("rmse", "mae", "mean_error", "cmapss_score", "rows")
        report.add_table(
            "Test metrics (error = predicted − true, cycles; cmapss_score: mean per row of the C-MAPSS "
            f"penalty with true and predicted RUL capped at {cfg.cmapss_rul_cap} cycles)",
            [
                {
                    "model": f"{type(result.model.stages[-1]).__name__} (candidate)",
                    **{k: result.metrics[k] for k in keys},
                },
                {
                    "model": f"baseline: mean RUL by {cfg.age_column} bucket of {cfg.age_bucket}",
                    **{k: result.baseline_metrics[k] for k in keys},
                },
            ],
        )
        report.add_table(
            "Tuning: RMSE per grid point (held-out share of train)",
            [{**params, "validation_rmse": metric} for params, metric in result.tuning],
        )
        points = rul_sample(result.scored, result.test_rows, config.ml.curve_points, config.ml.seed)
        report.add_figure(
            "Predicted vs true RUL on test (sample)",
            plot_rul_scatter(points, float(config.features.maintenance.rul_cap_cycles)),
        )
        report.add_figure(
            f"Test error by true RUL bucket of {cfg.age_bucket} cycles",
            plot_error_by_bucket(ev.error_by_bucket(result.scored, RUL_LABEL, PREDICTION, cfg.age_bucket)),
        )
        no_rows = run.pinned.df.limit(0)  # for the fitted model's output schema (feature names)
        report.add_figure(
            "RUL feature importance",
            plot_feature_importance(
                models.feature_importance(result.model, result.model.transform(no_rows).schema)
            ),
        )


@dataclass(frozen=True)
class FailureClassifierResult(ChosenFamily):
    """The failure-within-horizon classifier of one run: the families' fits, the alert threshold and
    the winner's test metrics with alert lead times, and its registry candidate."""

    family: str
    fitted: dict[str, models.Fitted]  # family -> (model, validation AUPRC, tuning)
    positive_weight: float
    threshold: float  # the alert budget on validation
    validation_rate: float  # the alert rate at the threshold on validation
    metrics: dict[str, float]  # test, at the threshold, with the lead times
    scored: DataFrame  # test machine, time, labels and ``score`` (cached)
    candidate: lifecycle.Candidate


@dataclass(frozen=True)
class FailureClassifier:
    """The failure-within-horizon classifier: positives weighted in training only, families tuned on
    train machines and chosen on validation machines, the alert threshold set on validation."""

    cfg: FailureModelConfig

    def fit(self, run: lifecycle.TrainingRun, data: FailureData) -> FailureClassifierResult:
        """Tune and choose the family, set the threshold, score test once, and make the candidate."""
        cfg, config, seed = self.cfg, run.config, run.seed
        train_counts = data.counts[TRAIN]
        positive_weight = max(
            1.0, (train_counts["failure_rows"] - train_counts["failing"]) / train_counts["failing"]
        )
        train = data.part(FAILURE_LABEL, TRAIN).transform(with_class_weight(positive_weight))
        validation, test = data.part(FAILURE_LABEL, VALIDATION), data.part(FAILURE_LABEL, TEST)
        auprc = BinaryClassificationEvaluator(labelCol=FAILURE_LABEL, metricName="areaUnderPR")
        families = {
            f: (models.classifier_stages(f, FAILURE_LABEL, WEIGHT, seed), g)
            for f, g in failure_families(cfg, cfg.failure_grid).items()
        }
        with run.timed("failure.fit"):
            family, fitted = models.fit_families(
                data.prefix, families, auprc, train, validation, cfg.train_ratio,
                config.ml.parallelism, seed, cfg.failure_model_name, config.ml.family_patience,
            )  # fmt: skip
        model, _, tuning = fitted[family]
        with run.timed("failure.evaluate"):
            # Scored once: the threshold search and the alert rate take two to four passes over it.
            validation_scored = run.cache(
                _scored(model, validation).select(FAILURE_LABEL, models.SCORE, "rawPrediction")
            )
            if math.isnan(fitted[family][1]):  # a single family was not ranked: its validation AUPRC
                fitted = {**fitted, family: (model, auprc.evaluate(validation_scored), tuning)}
            threshold = ev.alert_threshold(validation_scored, models.SCORE, cfg.alert_budget)
            validation_rate = ev.metrics_at_threshold(
                validation_scored, FAILURE_LABEL, models.SCORE, threshold
            )["alert_rate"]
            # The columns the metrics, the lead times and the report read, nothing wider.
            scored = run.cache(
                _scored(model, test).select(
                    cfg.group_column, cfg.time_column, RUL_LABEL, FAILURE_LABEL, models.SCORE
                )
            )
            metrics = _floats(
                {
                    **ev.alert_metrics(scored, FAILURE_LABEL, models.SCORE, threshold),
                    **alert_lead_times(scored, cfg, threshold),
                }
            )

        def evaluate(other: PipelineModel) -> dict[str, float]:
            return ev.binary_metrics(_scored(other, test), FAILURE_LABEL, models.SCORE)

        candidate = lifecycle.Candidate(
            name=cfg.failure_model_name,
            model=model,
            metrics=metrics,
            evaluate=evaluate,
            promotion=cfg.failure_promotion,
            params={
                "family": family,
                "threshold": threshold,
                "positive_weight": positive_weight,
                "features": data.features,
                **{f"tuned.{k}": v for k, v in _best_params(tuning, True).items()},
            },
            tags={
                "threshold": repr(threshold),
                "family": family,
                "task": "failure",
                "alert_budget": repr(cfg.alert_budget),
            },
        )
        return FailureClassifierResult(
            family, fitted, positive_weight, threshold, validation_rate, metrics, scored, candidate
        )

    def run_metrics(self, result: FailureClassifierResult) -> dict[str, float]:
        """Each family's validation AUPRC and the alert rate on validation."""
        out = {f"validation.{f}.failure.auprc": v[1] for f, v in result.fitted.items() if v[1] == v[1]}
        out["validation.alert_rate"] = result.validation_rate
        return out

    def report(self, report: HtmlReport, run: lifecycle.TrainingRun, result: FailureClassifierResult) -> None:
        """The classification section: test metrics with lead time, tuning, PR/ROC, confusion, importance."""
        cfg, config = self.cfg, run.config
        metrics, threshold = result.metrics, result.threshold
        report.add_heading(f"Failure within the horizon ({cfg.failure_column}, classification)")
        lead_hours = metrics["median_lead_cycles"] * cfg.cycle_minutes / 60.0
        keys = ("auprc", "roc_auc", "precision_at_budget", "recall_at_budget", "alert_rate", "positive_rate")
        report.add_table(
            f"Test metrics (alert threshold chosen on validation for a budget of {cfg.alert_budget:.2%})",
            [
                {
                    "model": f"{type(result.model.stages[-1]).__name__} (candidate)",
                    **{k: metrics[k] for k in keys},
                    "threshold": threshold,
                    "alert_budget": cfg.alert_budget,
                    "validation_alert_rate": result.validation_rate,
                    "failures": int(metrics["failures"]),
                    "failures_detected": metrics["failures_detected_rate"],
                    "median_lead_cycles": metrics["median_lead_cycles"],
                    "median_lead_hours": lead_hours,
                }
            ],
        )
        report.add_table(
            "Tuning: AUPRC per grid point (held-out share of train)",
            [{**params, "validation_auprc": metric} for params, metric in result.tuning],
        )
        curve = ev.binary_curve(result.scored, FAILURE_LABEL, models.SCORE, config.ml.curve_points)
        report.add_figure(
            "PR and ROC on test", plot_pr_roc(curve, threshold, metrics["positive_rate"], metrics)
        )
        report.add_figure(
            "Confusion at the alert threshold",
            plot_alert_confusion(metrics, threshold, cfg.alert_budget),
        )
        no_rows = run.pinned.df.limit(0)  # for the fitted model's output schema (feature names)
        report.add_figure(
            "Failure classifier feature importance",
            plot_feature_importance(
                models.feature_importance(result.model, result.model.transform(no_rows).schema)
            ),
        )


@dataclass(frozen=True)
class FailureTraining:
    """One failure training run's result: the shared split and both models."""

    data: FailureData
    rul: RulResult
    failure: FailureClassifierResult


class FailureTrainingSpec(lifecycle.TrainingSpec[FailureTraining]):
    """gold/machine_features → a RUL trainer and a failure classifier on one split, in one MLflow run."""

    experiment = "failure"

    def __init__(self, cfg: FailureModelConfig) -> None:
        self.cfg = cfg
        self.input_table = cfg.input_table
        self.rul = RulTrainer(cfg)
        self.classifier = FailureClassifier(cfg)

    def train(self, run: lifecycle.TrainingRun) -> FailureTraining:
        with run.timed("prepare"):
            data = prepare_failure_data(run, self.cfg)
        return FailureTraining(data, self.rul.fit(run, data), self.classifier.fit(run, data))

    def candidates(self, result: FailureTraining) -> list[lifecycle.Candidate]:
        return [result.rul.candidate, result.failure.candidate]

    def report(self, run: lifecycle.TrainingRun, result: FailureTraining) -> HtmlReport:
        return failure_report(run, result)

    def run_params(self, result: FailureTraining) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "split": f"group {cfg.group_column}, test {cfg.test_fraction}, "
            f"validation {cfg.validation_fraction}",
            "alert_budget": cfg.alert_budget,
            "age_bucket": cfg.age_bucket,
        }

    def run_metrics(self, result: FailureTraining) -> dict[str, float]:
        counts = result.data.counts
        out = {**self.rul.run_metrics(result.rul), **self.classifier.run_metrics(result.failure)}
        out.update(
            {f"rows.{s}.{k}": float(n) for s, c in counts.items() for k, n in c.items() if k != "machines"}
        )
        out.update({f"machines.{s}": float(c["machines"]) for s, c in counts.items()})
        return out

    def summary(
        self, result: FailureTraining, outcomes: Sequence[lifecycle.TrainingOutcome]
    ) -> dict[str, Any]:
        rul_outcome, fail_outcome = outcomes
        rul, failure, counts = result.rul, result.failure, result.data.counts
        return {
            "rul_model": rul_outcome.name,
            "rul_version": rul_outcome.version,
            "rul_promoted": rul_outcome.promoted,
            "rul_reason": rul_outcome.reason,
            "failure_model": fail_outcome.name,
            "failure_version": fail_outcome.version,
            "failure_promoted": fail_outcome.promoted,
            "failure_reason": fail_outcome.reason,
            "rul_family": rul.family,
            "failure_family": failure.family,
            "validation_rmse_by_family": {f: round(v[1], 4) for f, v in rul.fitted.items()},
            "validation_auprc_by_family": {f: round(v[1], 4) for f, v in failure.fitted.items()},
            "rmse": round(rul.metrics["rmse"], 4),
            "baseline_rmse": round(rul.baseline_metrics["rmse"], 4),
            "auprc": round(failure.metrics["auprc"], 4),
            "threshold": failure.threshold,
            "alert_budget": self.cfg.alert_budget,
            "validation_alert_rate": round(failure.validation_rate, 6),
            "test_alert_rate": round(failure.metrics["alert_rate"], 6),
            "failures_detected_rate": round(failure.metrics["failures_detected_rate"], 4),
            "median_lead_cycles": failure.metrics["median_lead_cycles"],
            "rows_train": counts[TRAIN]["labelled"],
            "rows_validation": counts[VALIDATION]["labelled"],
            "rows_test": counts[TEST]["labelled"],
        }


def train_failure_models(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
    """gold/machine_features (pinned) → RUL regressor and failure classifier → one MLflow run, registry,
    gates, as of the run date ``dates.last``."""
    return lifecycle.run_training(spark, config, dates, FailureTrainingSpec(config.ml.failure))


# ---------------------------------------------------------------------------------------------- report


def rul_sample(scored: DataFrame, rows: int, points: int, seed: int) -> pd.DataFrame:
    """At most ``points`` (true, predicted) RUL pairs of the test predictions, as pandas (bounded)."""
    fraction = min(1.0, 2.0 * points / rows) if rows else 1.0
    return (
        scored.sample(fraction=fraction, seed=seed)
        .limit(points)
        .select(F.col(RUL_LABEL).alias("true_rul"), F.col(PREDICTION).alias("predicted_rul"))
        .toPandas()
    )


def failure_report(run: lifecycle.TrainingRun, result: FailureTraining) -> HtmlReport:
    """Splits, then each model's section: RUL vs baseline (scatter, error by bucket), classifier metrics
    with lead time (PR/ROC, confusion), tuning and feature importance of both models."""
    cfg = run.config.ml.failure
    report = HtmlReport(
        f"Failure / RUL predictor — {cfg.rul_model_name}, {cfg.failure_model_name}",
        f"run date {run.run_date}, {cfg.input_table} v{run.pinned.version}, split by {cfg.group_column}",
    )
    report.add_table(
        "Splits (whole machines; each task uses the rows whose own label is known)",
        [{"split": s, **result.data.counts[s]} for s in SPLITS],
    )
    RulTrainer(cfg).report(report, run, result.rul)
    FailureClassifier(cfg).report(report, run, result.failure)
    return report


# ---------------------------------------------------------------------------------------------- scoring


def score_failure(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
    """Both champions score the feature rows of ``dates`` into gold/failure_risk (no-op when done)."""
    first, last = dates.first, dates.last
    cfg = config.ml.failure
    lake = Lakehouse(spark, config)
    rul = scoring.load_champion(config, cfg.rul_model_name, TRAIN_JOB)
    classifier = scoring.load_champion(config, cfg.failure_model_name, TRAIN_JOB)
    if "threshold" not in classifier.tags:
        raise JobFailed(
            f"{classifier.name} v{classifier.version} has no threshold tag: retrain with {TRAIN_JOB}"
        )
    threshold = float(classifier.tags["threshold"])
    source = lifecycle.table_ref(lake, cfg.input_table)
    if not source.exists():
        raise JobFailed(f"{cfg.input_table} does not exist: run maintenance.build_features first")
    version = source.version()
    window = [(cfg.date_column, ">=", first), (cfg.date_column, "<=", last)]
    rows = source.read(version=version, where=window)

    def scores() -> DataFrame:
        # Each pipeline adds the same helper columns (features, prediction, ...): keep only the RUL output
        # before the classifier runs, so no join is needed.
        with_rul = rul.model.transform(rows).select(*rows.columns, F.col(PREDICTION).alias("_predicted_rul"))
        scored = _scored(classifier.model, with_rul).select(
            F.col(cfg.group_column).alias("machine_id"),
            F.col(cfg.time_column).alias("as_of"),
            F.col("_predicted_rul").alias("predicted_rul"),
            F.col(models.SCORE).alias("failure_probability"),
            (F.col(models.SCORE) >= F.lit(threshold)).alias("alert"),
            F.lit(threshold).alias("threshold"),
            F.col(cfg.date_column).alias("as_of_date"),
        )
        return scored

    def drift() -> dict[str, Any]:
        numeric, categorical = feature_columns(cfg, rows.schema)
        return scoring.record_drift(
            lake,
            classifier,
            cfg.input_table,
            rows,
            version,
            (first, last),
            numeric,
            categorical,
            config.ml.drift,
            current_where=window,
        )

    days = scoring.count_days(rows, cfg.date_column)
    summary = scoring.write_scores(
        lake,
        cfg.score_table,
        FAILURE_RISK_SCHEMA,
        scores,
        (first, last),
        classifier,
        version,
        days,
        stamps={"rul_model_version": rul.version},
        checks=drift,
        inspect=scoring.alert_check(
            classifier, scoring.alert_budget(classifier, cfg.alert_budget), config.ml.alerts
        ),
    )
    return lifecycle.scoring_result({**summary, "rul_model": rul.name, "rul_version": rul.version})
