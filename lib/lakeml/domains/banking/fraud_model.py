"""Fraud classifier: train on gold/transaction_features (time split), register, gate, and score alerts.

Split: whole days of ``date_column`` among rows with a label (a NULL label = window still open, never
used): ``train | validation (validation_days) | gap (gap_days) | test (test_days)``, the test ending at
the newest labelled day on or before the run date. Imbalance: positives weighted in training only.
Each model family is tuned on a held-out share of train; the family with the best validation
AUPRC wins; its alert threshold is the lowest validation score whose alert rate stays within
``alert_budget`` (ties alert together: see ``evaluation.alert_threshold``); test is scored once, with
the baseline beside it: the rule score ``baseline_score_column``, or with ``""`` the prior (every
transaction scored the train fraud rate: AUPRC = the fraud rate, no alert).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import Config, FraudModelConfig
from lakeml.errors import JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.ml import evaluation as ev
from lakeml.ml import lifecycle, models, scoring
from lakeml.ml.report import (
    HtmlReport,
    plot_calibration,
    plot_confusion,
    plot_feature_importance,
    plot_pr_roc,
)
from lakeml.ml.splits import (
    SPLIT,
    TEST,
    TRAIN,
    VALIDATION,
    TimeSplitBounds,
    Transform,
    describe_bounds,
    with_time_split,
)

WEIGHT = "_weight"
LABEL = "_label"
BASELINE = "_baseline"

FRAUD_SCORES_SCHEMA = T.StructType(
    [
        T.StructField("txn_id", T.StringType(), False),
        T.StructField("card_token", T.StringType(), True),
        T.StructField("ts", T.TimestampType(), True),
        T.StructField("score", T.DoubleType(), False),  # P(fraud) from the champion
        T.StructField("alert", T.BooleanType(), False),  # score >= threshold (alert budget on validation)
        T.StructField("threshold", T.DoubleType(), False),
        T.StructField("model_name", T.StringType(), False),
        T.StructField("model_version", T.StringType(), False),
        T.StructField("input_version", T.LongType(), False),  # version of the feature table scored
        T.StructField("scored_at", T.TimestampType(), False),
        T.StructField("as_of_date", T.DateType(), False),  # partition
    ]
)


def with_training_columns(cfg: FraudModelConfig) -> Transform:
    """Reads the label column; adds ``_label`` (double 0/1)."""
    return lambda df: df.withColumn(LABEL, F.col(cfg.label_column).cast("double"))


def with_class_weight(positive_weight: float) -> Transform:
    """Reads ``_label``; adds ``_weight``: ``positive_weight`` for frauds, 1 for the rest."""
    return lambda df: df.withColumn(WEIGHT, F.when(F.col(LABEL) == 1, positive_weight).otherwise(1.0))


def split_bounds(rows: DataFrame, cfg: FraudModelConfig, run_date: dt.date) -> TimeSplitBounds:
    """Split days counted back from the newest day on or before ``run_date`` whose every row has a label.

    A day with any unlabelled row still has open label windows: its known frauds are in, its legit
    rows are not yet, so training on it would inflate the fraud rate.
    """
    day = F.col(cfg.date_column)
    per_day = rows.where(day <= F.lit(run_date)).groupBy(day.alias("d"))
    open_days = per_day.agg(F.count_if(F.col(cfg.label_column).isNull()).alias("open"))
    row = open_days.agg(
        F.max(F.when(F.col("open") == 0, F.col("d"))).alias("last"),
        F.min(F.when(F.col("open") > 0, F.col("d"))).alias("first_open"),
    ).first()  # one row; the per-day table has one row per date
    last = row["last"]
    if row["first_open"] is not None and last is not None and row["first_open"] < last:
        last = row["first_open"] - dt.timedelta(days=1)
    if last is None:
        raise JobFailed(
            f"{cfg.input_table} has no day on or before {run_date} whose labels are all mature "
            "(label window still open everywhere): build features over more history"
        )
    return TimeSplitBounds.ending(last, cfg.test_days, cfg.gap_days, cfg.validation_days)


def _scored(model: PipelineModel, df: DataFrame) -> DataFrame:
    return models.with_positive_score(model.transform(df))


def with_baseline_score(cfg: FraudModelConfig, prior: float) -> Transform:
    """Reads ``baseline_score_column``; adds ``_baseline`` (double): that rule score, or the constant
    ``prior`` (the train fraud rate) when no column is set."""
    score = F.col(cfg.baseline_score_column) if cfg.baseline_score_column else F.lit(prior)
    return lambda df: df.withColumn(BASELINE, score.cast("double"))


def baseline_name(cfg: FraudModelConfig, prior: float) -> str:
    """What the report calls the baseline."""
    if cfg.baseline_score_column:
        return f"rule score {cfg.baseline_score_column}"
    return f"prior (constant train fraud rate {prior:.4g})"


def train_fraud_model(spark: SparkSession, config: Config, run_date: dt.date) -> dict[str, Any]:
    """gold features (pinned version) → tuned classifier families → MLflow run, registry, promotion gate."""
    cfg, seed = config.ml.fraud, config.ml.seed
    lake = Lakehouse(spark, config)
    pinned = lifecycle.pin(lake, cfg.input_table)
    features = [*cfg.numeric_features, *cfg.categorical_features]
    lifecycle.require_columns(
        pinned.df,
        [
            cfg.label_column,
            cfg.date_column,
            *([cfg.baseline_score_column] if cfg.baseline_score_column else []),
        ],
        "fraud",
    )
    bounds = split_bounds(pinned.df, cfg, run_date)
    labelled = pinned.df.where(F.col(cfg.label_column).isNotNull()).transform(with_training_columns(cfg))
    split = labelled.transform(with_time_split(cfg.date_column, bounds)).where(F.col(SPLIT).isNotNull())
    counts = {
        (r[SPLIT]): (int(r["n"]), int(r["pos"]))
        for r in split.groupBy(SPLIT).agg(F.count(F.lit(1)).alias("n"), F.sum(LABEL).alias("pos")).collect()
    }
    for name in (TRAIN, VALIDATION, TEST):
        n, pos = counts.get(name, (0, 0))
        if pos == 0 or pos == n:
            raise JobFailed(
                f"fraud split '{name}' has {n} rows and {pos} frauds; need both classes "
                f"(split days: {bounds}); generate more days or widen the split in ml.fraud"
            )
    n_train, pos_train = counts[TRAIN]
    positive_weight = max(1.0, (n_train - pos_train) / pos_train / cfg.positive_weight_divisor)
    prior = pos_train / n_train
    split = split.transform(with_baseline_score(cfg, prior))
    train = split.where(F.col(SPLIT) == TRAIN).transform(with_class_weight(positive_weight))
    train = train.persist(StorageLevel.MEMORY_AND_DISK)
    validation = split.where(F.col(SPLIT) == VALIDATION).persist(StorageLevel.MEMORY_AND_DISK)
    test = split.where(F.col(SPLIT) == TEST).persist(StorageLevel.MEMORY_AND_DISK)
    test_scored: DataFrame | None = None
    try:
        prefix = models.feature_stages(pinned.df.schema, cfg.numeric_features, cfg.categorical_features)
        auprc = BinaryClassificationEvaluator(labelCol=LABEL, metricName="areaUnderPR")
        families = {f: (models.classifier_stages(f, LABEL, WEIGHT, seed), g) for f, g in cfg.families.items()}
        family, fitted = models.fit_families(
            prefix, families, auprc, train, validation, cfg.train_ratio, config.ml.parallelism, seed,
            cfg.model_name, config.ml.family_patience,
        )  # fmt: skip
        model = fitted[family][0]
        threshold = ev.alert_threshold(_scored(model, validation), models.SCORE, cfg.alert_budget)
        validation_rate = ev.metrics_at_threshold(_scored(model, validation), LABEL, models.SCORE, threshold)[
            "alert_rate"
        ]
        base_threshold = ev.alert_threshold(validation, BASELINE, cfg.alert_budget)
        test_scored = _scored(model, test).persist(StorageLevel.MEMORY_AND_DISK)
        metrics = ev.alert_metrics(test_scored, LABEL, models.SCORE, threshold)
        baseline = ev.alert_metrics(test, LABEL, BASELINE, base_threshold)

        def evaluate(other: PipelineModel) -> dict[str, float]:
            return ev.binary_metrics(_scored(other, test), LABEL, models.SCORE)

        report = fraud_report(
            cfg,
            config,
            run_date,
            pinned,
            bounds,
            counts,
            fitted,
            family,
            threshold,
            metrics,
            baseline,
            test_scored,
            model,
            validation_rate,
            baseline_name(cfg, prior),
        )
        candidate = lifecycle.Candidate(
            name=cfg.model_name,
            model=model,
            metrics={k: float(v) for k, v in metrics.items()},
            evaluate=evaluate,
            promotion=cfg.promotion,
            baseline=baseline,
            params={
                "family": family,
                "threshold": threshold,
                "positive_weight": positive_weight,
                "features": ",".join(features),
                **{f"tuned.{k}": v for k, v in _best_params(fitted[family][2]).items()},
            },
            tags={"threshold": repr(threshold), "family": family, "alert_budget": repr(cfg.alert_budget)},
        )
        run_metrics = {f"baseline.{k}": float(v) for k, v in baseline.items()}
        run_metrics.update({f"validation.{f}.auprc": v[1] for f, v in fitted.items() if v[1] == v[1]})
        run_metrics.update({f"rows.{s}": float(n) for s, (n, _) in counts.items()})
        run_metrics["validation.alert_rate"] = validation_rate
        (outcome,) = lifecycle.finish_training(
            spark,
            config,
            lake,
            "fraud",
            run_date,
            [pinned],
            [candidate],
            report,
            {
                "split.bounds": str(bounds),
                "alert_budget": cfg.alert_budget,
                "baseline": baseline_name(cfg, prior),
            },
            run_metrics,
        )
    finally:
        for df in (train, validation, test, test_scored):
            if df is not None:
                df.unpersist()
    return {
        "model": outcome.name,
        "version": outcome.version,
        "promoted": outcome.promoted,
        "reason": outcome.reason,
        "family": family,
        "validation_auprc_by_family": {f: round(v[1], 4) for f, v in fitted.items()},
        "auprc": round(metrics["auprc"], 4),
        "roc_auc": round(metrics["roc_auc"], 4),
        "precision_at_budget": round(metrics["precision_at_budget"], 4),
        "recall_at_budget": round(metrics["recall_at_budget"], 4),
        "positive_rate": round(metrics["positive_rate"], 6),
        "alert_budget": cfg.alert_budget,
        "validation_alert_rate": round(validation_rate, 6),
        "test_alert_rate": round(metrics["alert_rate"], 6),
        "baseline": baseline_name(cfg, prior),
        "baseline_auprc": round(baseline["auprc"], 4),
        "rows_train": n_train,
        "rows_validation": counts[VALIDATION][0],
        "rows_test": counts[TEST][0],
        "input_version": pinned.version,
        "report": outcome.report_path,
        "mlflow_run_id": outcome.run_id,
    }


def _best_params(tuning: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    return max(tuning, key=lambda t: t[1])[0] if tuning else {}


def fraud_report(
    cfg: FraudModelConfig,
    config: Config,
    run_date: dt.date,
    pinned: lifecycle.PinnedTable,
    bounds: TimeSplitBounds,
    counts: dict[str, tuple[int, int]],
    fitted: dict[str, tuple[PipelineModel, float, list[Any]]],
    family: str,
    threshold: float,
    metrics: dict[str, float],
    baseline: dict[str, float],
    test_scored: DataFrame,
    model: PipelineModel,
    validation_rate: float,
    baseline_label: str,
) -> HtmlReport:
    """Metric table vs baseline, PR/ROC with the threshold, calibration, confusion, importances."""
    report = HtmlReport(
        f"Fraud classifier — {cfg.model_name}",
        f"run date {run_date}, {cfg.input_table} v{pinned.version}, chosen family {family}",
    )
    keys = ("auprc", "roc_auc", "precision_at_budget", "recall_at_budget", "alert_rate", "positive_rate")
    report.add_table(
        f"Test metrics (alert threshold chosen on validation for a budget of {cfg.alert_budget:.2%})",
        [
            {
                "model": f"{family} (candidate)",
                **{k: metrics[k] for k in keys},
                "threshold": threshold,
                "alert_budget": cfg.alert_budget,
                "validation_alert_rate": validation_rate,
            },
            {"model": f"baseline: {baseline_label}", **{k: baseline[k] for k in keys}},
        ],
    )
    report.add_table(
        "Splits (whole days; labels as known at the cut-off)",
        [
            {"split": s, "rows": n, "frauds": p, "rate": p / n if n else None}
            for s, (n, p) in sorted(counts.items())
        ]
        + [{"split": "bounds", "rows": None, "frauds": None, "rate": None, "days": describe_bounds(bounds)}],
    )
    report.add_table(
        "Tuning: validation AUPRC per family (a held-out share of train picks each family's params)",
        [
            {"family": f, "validation_auprc": v[1], "best_params": str(_best_params(v[2]))}
            for f, v in fitted.items()
        ],
    )
    curve = ev.binary_curve(test_scored, LABEL, models.SCORE, config.ml.curve_points)
    report.add_figure("PR and ROC on test", plot_pr_roc(curve, threshold, metrics["positive_rate"], metrics))
    report.add_figure(
        "Calibration on test",
        plot_calibration(ev.calibration_bins(test_scored, LABEL, models.SCORE, cfg.calibration_bins)),
    )
    report.add_figure(
        "Confusion at the alert threshold",
        plot_confusion(
            int(metrics["tp"]),
            int(metrics["fp"]),
            int(metrics["fn"]),
            int(metrics["tn"]),
            f"threshold {threshold:.4g}, budget {cfg.alert_budget:.2%}",
        ),
    )
    importance = models.feature_importance(model, model.transform(pinned.df.limit(0)).schema)
    report.add_figure("Feature importance", plot_feature_importance(importance))
    return report


def score_fraud(spark: SparkSession, config: Config, first: dt.date, last: dt.date) -> dict[str, Any]:
    """The champion scores the feature rows of [first, last] into gold/fraud_scores (no-op when already done)."""
    cfg = config.ml.fraud
    lake = Lakehouse(spark, config)
    champion = scoring.load_champion(config, cfg.model_name, "banking.train_fraud")
    threshold = float(champion.tags.get("threshold", "nan"))
    source = lifecycle.table_ref(lake, cfg.input_table)
    if not source.exists():
        raise JobFailed(f"{cfg.input_table} does not exist: run banking.build_features first")
    version = source.version()
    rows = source.read(version=version, where=[(cfg.date_column, ">=", first), (cfg.date_column, "<=", last)])

    def scores() -> DataFrame:
        return _scored(champion.model, rows).select(
            F.col(cfg.id_column).alias("txn_id"),
            F.col(cfg.entity_column).alias("card_token"),
            F.col(cfg.time_column).alias("ts"),
            F.col(models.SCORE).alias("score"),
            (F.col(models.SCORE) >= F.lit(threshold)).alias("alert"),
            F.lit(threshold).alias("threshold"),
            F.col(cfg.date_column).alias("as_of_date"),
        )

    def drift() -> dict[str, Any]:
        return scoring.record_drift(
            lake, champion, cfg.input_table, rows, version, (first, last),
            cfg.numeric_features, cfg.categorical_features, config.ml.drift,
        )  # fmt: skip

    days = scoring.count_days(rows, cfg.date_column)
    return scoring.write_scores(
        lake,
        cfg.score_table,
        FRAUD_SCORES_SCHEMA,
        scores,
        (first, last),
        champion,
        version,
        days,
        checks=drift,
        inspect=scoring.alert_check(
            champion, scoring.alert_budget(champion, cfg.alert_budget), config.ml.alerts
        ),
    )
