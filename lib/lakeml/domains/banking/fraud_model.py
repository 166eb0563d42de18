"""Fraud classifier: train on gold/transaction_features (time split), register, gate, and score alerts.

Split (``split``): by default whole days of ``date_column`` among rows with a label (a NULL label =
window still open, never used): ``train | validation (validation_days) | gap (gap_days) | test
(test_days)``, the test ending at the newest labelled day on or before the run date; or fractions of
the time range of ``time_column`` (``time_fraction``), or a stratified random split (``stratified``).
Imbalance: each option of ``imbalance`` (no weights, balanced, divided weights) weights positives in
training only: every family is fitted under the first option, the other options refit only the
``imbalance_families`` best of them; each family is tuned on a held-out share of train, and the
(imbalance, family) pair with the best validation AUPRC wins. Its scores are then
calibrated on validation (``calibration``: Platt or isotonic, stored as the pipeline's last stage so
batch scoring applies it too); the alert threshold is the lowest calibrated validation score whose
alert rate stays within ``alert_budget`` (ties alert together: see ``evaluation.alert_threshold``);
test is scored once, with the baseline beside it: the rule score ``baseline_score_column``, or with
``""`` the prior (every transaction scored the train fraud rate: AUPRC = the fraud rate, no alert).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.functions import vector_to_array
from pyspark.ml.regression import IsotonicRegression
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml import runlog
from lakeml.config import Config, FraudModelConfig, imbalance_divisor
from lakeml.errors import ConfigError, JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.ml import evaluation as ev
from lakeml.ml import lifecycle, models, scoring
from lakeml.ml.report import (
    HtmlReport,
    plot_alert_confusion,
    plot_calibration,
    plot_feature_importance,
    plot_pr_roc,
)
from lakeml.ml.splits import (
    SPLIT,
    TEST,
    TRAIN,
    VALIDATION,
    TimeFractionBounds,
    TimeSplitBounds,
    Transform,
    describe_bounds,
    stratified_cuts,
    with_stratified_split,
    with_time_fraction_split,
    with_time_split,
)
from lakeml.steps import DateRange, StepResult

WEIGHT = "_weight"
LABEL = "_label"
BASELINE = "_baseline"
RAW_SCORE = "_raw_score"  # the classifier's own P(fraud), before calibration
# Output columns of the calibration stage (Platt: a probability vector; isotonic: a number).
CALIBRATED_PROBABILITY = "_calibrated_probability"
CALIBRATED_SCORE = "_calibrated_score"

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
    return TimeSplitBounds.ending(
        last_mature_day(rows, cfg, run_date), cfg.test_days, cfg.gap_days, cfg.validation_days
    )


def last_mature_day(rows: DataFrame, cfg: FraudModelConfig, run_date: dt.date) -> dt.date:
    """The newest day on or before ``run_date`` before which no day has an unlabelled row (one aggregate)."""
    day = F.col(cfg.date_column)
    per_day = rows.where(day <= F.lit(run_date)).groupBy(day.alias("d"))
    open_days = per_day.agg(F.count_if(F.col(cfg.label_column).isNull()).alias("open"))
    row = open_days.agg(
        F.max(F.when(F.col("open") == 0, F.col("d"))).alias("last"),
        F.min(F.when(F.col("open") > 0, F.col("d"))).alias("first_open"),
    ).head(1)[0]  # one row; the per-day table has one row per date
    last = row["last"]
    if row["first_open"] is not None and last is not None and row["first_open"] < last:
        last = row["first_open"] - dt.timedelta(days=1)
    if last is None:
        raise JobFailed(
            f"{cfg.input_table} has no day on or before {run_date} whose labels are all mature "
            "(label window still open everywhere): build features over more history"
        )
    return last


def check_training_input(df: DataFrame, cfg: FraudModelConfig) -> None:
    """Before any fit: every configured column exists, the label is 0/1 (numeric or boolean), the
    features have usable types; a ConfigError naming the column or setting otherwise (one line)."""
    needed = [
        cfg.label_column,
        cfg.date_column,
        *([cfg.time_column] if cfg.split == "time_fraction" else []),
        *([cfg.id_column] if cfg.split == "stratified" else []),
        *([cfg.baseline_score_column] if cfg.baseline_score_column else []),
        *cfg.numeric_features,
        *cfg.categorical_features,
    ]
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        raise ConfigError(
            f"ml.fraud: {cfg.input_table} has no column {', '.join(missing)} (set in ml.fraud; "
            f"the table has: {', '.join(df.columns)})"
        )
    label_type = df.schema[cfg.label_column].dataType
    if not isinstance(label_type, T.NumericType | T.BooleanType):
        raise ConfigError(
            f"ml.fraud.label_column: {cfg.label_column} must be 0/1 (numeric or boolean), is "
            f"{label_type.simpleString()}"
        )
    label = F.col(cfg.label_column).cast("double")
    bad = df.agg(
        F.count_if(label.isNotNull() & ~label.isin(0.0, 1.0)).alias("n"),
        F.first(F.when(label.isNotNull() & ~label.isin(0.0, 1.0), label), ignorenulls=True).alias("v"),
    ).head(1)[0]
    if bad["n"]:
        raise ConfigError(
            f"ml.fraud.label_column: {cfg.label_column} must be 0/1 (NULL = not yet labelled); "
            f"{bad['n']} rows hold other values, e.g. {bad['v']:g}"
        )
    models.check_feature_types(df.schema, cfg.numeric_features, cfg.categorical_features)


def split_rows(
    table: DataFrame, labelled: DataFrame, cfg: FraudModelConfig, run_date: dt.date, seed: int
) -> tuple[DataFrame, str, str]:
    """The ``labelled`` rows of ``table`` with ``split`` by ``cfg.split`` (rows outside every split
    dropped); returns (rows, the split as a person reads it, the same as logged in ``split.bounds``).

    Every split uses only days up to the newest mature one of ``table`` (see ``last_mature_day``)."""
    if cfg.split == "day":
        bounds = split_bounds(table, cfg, run_date)
        rows = labelled.transform(with_time_split(cfg.date_column, bounds))
        return rows.where(F.col(SPLIT).isNotNull()), describe_bounds(bounds), str(bounds)
    mature = labelled.where(F.col(cfg.date_column) <= F.lit(last_mature_day(table, cfg, run_date)))
    if cfg.split == "time_fraction":
        first, last = mature.agg(F.min(cfg.time_column), F.max(cfg.time_column)).head(1)[0]
        if first is None or first == last:
            raise ConfigError(
                f"ml.fraud.split=time_fraction: {cfg.time_column} has no time range to split "
                f"(first {first}, last {last})"
            )
        fractions = TimeFractionBounds.of_range(first, last, cfg.validation_fraction, cfg.test_fraction)
        rows = mature.transform(with_time_fraction_split(cfg.time_column, fractions))
        text = f"time fractions of {cfg.time_column}: {fractions}"
        return rows.where(F.col(SPLIT).isNotNull()), text, text
    cuts = stratified_cuts(mature, LABEL, cfg.id_column, cfg.validation_fraction, cfg.test_fraction, seed)
    rows = mature.transform(with_stratified_split(LABEL, cfg.id_column, cuts, seed))
    text = (
        f"stratified random rows (hash of {cfg.id_column}, seed {seed}): validation "
        f"{cfg.validation_fraction:g}, test {cfg.test_fraction:g} of each class"
    )
    return rows, text, text


def split_setting(cfg: FraudModelConfig, name: str) -> str:
    """The conf setting that sizes split ``name``, for error messages."""
    if cfg.split == "day":
        return (
            f"ml.fraud.{'train' if name == TRAIN else name}_days" if name != TRAIN else "ml.fraud (more days)"
        )
    return f"ml.fraud.{name}_fraction" if name != TRAIN else "ml.fraud.validation_fraction/test_fraction"


def with_calibrated_score(predictions: DataFrame) -> DataFrame:
    """Reads a scored pipeline's output; adds ``score``: the calibrated P(fraud) when the pipeline ends
    with a calibration stage, else the classifier's probability of class 1 (models before calibration)."""
    if CALIBRATED_PROBABILITY in predictions.columns:
        return predictions.withColumn(models.SCORE, vector_to_array(F.col(CALIBRATED_PROBABILITY))[1])
    if CALIBRATED_SCORE in predictions.columns:
        return predictions.withColumn(models.SCORE, F.col(CALIBRATED_SCORE))
    return models.with_positive_score(predictions)


def fit_calibration(model: PipelineModel, validation: DataFrame, method: str) -> PipelineModel:
    """``model`` plus a calibration stage fitted on its ``validation`` scores (distributed MLlib fits).

    Platt: a logistic regression on the classifier's margin (``rawPrediction``), strictly monotone,
    so rankings, AUPRC and the alert set stay those of the raw score. Isotonic: MLlib's isotonic
    regression on P(fraud), a monotone step function (may tie scores). ``none``: ``model`` as it is.
    """
    return with_calibration(model, model.transform(validation), method)


def with_calibration(model: PipelineModel, scored_validation: DataFrame, method: str) -> PipelineModel:
    """``model`` plus a calibration stage fitted on ``scored_validation``, the output of ``model`` on the
    validation rows (``_label``, ``rawPrediction``, ``probability``): see ``fit_calibration``."""
    if method == "none":
        return model
    scored = scored_validation
    calibrator: Any
    if method == "platt":
        calibrator = models.SummaryFreeLogisticRegression(
            featuresCol="rawPrediction", labelCol=LABEL, regParam=1e-6, maxIter=100,
            rawPredictionCol="_calibration_raw", probabilityCol=CALIBRATED_PROBABILITY,
            predictionCol="_calibration_prediction",
        )  # fmt: skip
    else:
        calibrator = IsotonicRegression(
            featuresCol="probability", featureIndex=1, labelCol=LABEL, predictionCol=CALIBRATED_SCORE
        )
    return PipelineModel(stages=[*model.stages, calibrator.fit(scored)])


def _scored(model: PipelineModel, df: DataFrame) -> DataFrame:
    """``score`` (calibrated when the model has a calibration stage) and ``_raw_score`` (before it)."""
    return _with_scores(model.transform(df))


def _with_scores(out: DataFrame) -> DataFrame:
    """Reads a (calibrated or not) pipeline's output; adds ``score`` and ``_raw_score``."""
    return with_calibrated_score(out).withColumn(RAW_SCORE, vector_to_array(F.col("probability"))[1])


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


@dataclass(frozen=True)
class FraudData:
    """The split of one fraud training run: train, validation and test rows (cached, with ``_label``
    and ``_baseline``), their (rows, frauds) counts, and the positive weight of each imbalance option."""

    train: DataFrame
    validation: DataFrame
    test: DataFrame
    split_text: str  # the split as a person reads it
    bounds: str  # the same as logged in ``split.bounds``
    counts: dict[str, tuple[int, int]]
    weights: dict[str, float | None]  # imbalance option -> positive weight (None = unweighted)
    prior: float  # the train fraud rate


def prepare_fraud_data(run: lifecycle.TrainingRun, cfg: FraudModelConfig) -> FraudData:
    """The labelled rows of the pinned input split by ``cfg.split``, cached; ConfigError or JobFailed
    when a column is unusable or a split lacks a class."""
    table = run.pinned.df
    check_training_input(table, cfg)
    labelled = table.where(F.col(cfg.label_column).isNotNull()).transform(with_training_columns(cfg))
    split, split_text, bounds = split_rows(table, labelled, cfg, run.run_date, run.seed)
    counts = {
        (r[SPLIT]): (int(r["n"]), int(r["pos"]))
        for r in split.groupBy(SPLIT).agg(F.count(F.lit(1)).alias("n"), F.sum(LABEL).alias("pos")).collect()
    }
    for name in (TRAIN, VALIDATION, TEST):
        n, pos = counts.get(name, (0, 0))
        if pos == 0 or pos == n:
            raise JobFailed(
                f"fraud split '{name}' has {n} rows and {pos} frauds; need both classes "
                f"(split: {split_text}); widen {split_setting(cfg, name)} or train on more history"
            )
    n_train, pos_train = counts[TRAIN]
    imbalance = {o: imbalance_divisor(o, cfg.positive_weight_divisor) for o in cfg.imbalance}
    weights = {
        o: (None if d is None else max(1.0, (n_train - pos_train) / pos_train / d))
        for o, d in imbalance.items()
    }
    prior = pos_train / n_train
    split = split.transform(with_baseline_score(cfg, prior))
    # Each split cached from the input read (not from one cached frame of all three: the training
    # rows' partitions would differ, and with them MLlib GBT's and xgboost's fits).
    train = run.cache(split.where(F.col(SPLIT) == TRAIN))
    validation = run.cache(split.where(F.col(SPLIT) == VALIDATION))
    test = run.cache(split.where(F.col(SPLIT) == TEST))
    return FraudData(train, validation, test, split_text, bounds, counts, weights, prior)


@dataclass(frozen=True)
class FraudResult:
    """The fraud classifier of one run: the imbalance x family search, the calibrated winner, its
    alert threshold and test metrics beside the baseline's, and its registry candidate."""

    data: FraudData
    # (imbalance option, family) -> fit; the winner's validation AUPRC is measured even when it was the
    # only pair (nothing to rank it against)
    searched: dict[tuple[str, str], models.Fitted]
    chosen: tuple[str, str]  # the winning (imbalance option, family)
    uncalibrated: PipelineModel  # the winner before its calibration stage
    threshold: float  # the alert budget on validation (calibrated scores)
    validation_rate: float  # the alert rate at the threshold on validation
    metrics: dict[str, float]  # test, at the threshold
    baseline: dict[str, float]  # the baseline on test, at its own validation threshold
    brier: dict[str, float]  # test Brier score before ("raw") and after ("calibrated") calibration
    test_scored: DataFrame  # test ``_label``, ``score`` and ``_raw_score`` (cached)
    candidate: lifecycle.Candidate

    @property
    def option(self) -> str:
        return self.chosen[0]

    @property
    def family(self) -> str:
        return self.chosen[1]

    @property
    def positive_weight(self) -> float:
        return self.data.weights[self.option] or 1.0

    @property
    def fitted(self) -> dict[str, models.Fitted]:
        """Each family under its best imbalance option."""
        return best_by_family(self.searched)


@dataclass(frozen=True)
class FraudClassifier:
    """The fraud classifier: families searched under the imbalance options, the winner calibrated on
    validation, its alert threshold set on validation, test scored once beside the baseline."""

    cfg: FraudModelConfig

    def fit(self, run: lifecycle.TrainingRun, data: FraudData) -> FraudResult:
        """Search, calibrate, set the threshold, score test once, and make the candidate."""
        cfg, config = self.cfg, run.config
        train, validation, test = data.train, data.validation, data.test
        prefix = models.feature_stages(run.pinned.df.schema, cfg.numeric_features, cfg.categorical_features)
        auprc = BinaryClassificationEvaluator(labelCol=LABEL, metricName="areaUnderPR")
        with run.timed("fit"):
            searched = search_imbalance_and_family(
                prefix, cfg, config, data.weights, auprc, train, validation
            )
        option, family = max(searched, key=lambda key: _rank(searched[key][1]))
        uncalibrated = searched[(option, family)][0]
        with run.timed("evaluate"):
            # The winner scores validation once (cached): the calibration fit, its validation AUPRC,
            # the threshold search and the alert rate all read these scores.
            validation_raw = run.cache(
                uncalibrated.transform(validation).select(LABEL, "rawPrediction", "probability")
            )
            if math.isnan(searched[(option, family)][1]):  # a single pair was not ranked: score it
                _, _, tuning = searched[(option, family)]
                metric = auprc.evaluate(validation_raw)
                searched = {**searched, (option, family): (uncalibrated, metric, tuning)}
            model = with_calibration(uncalibrated, validation_raw, cfg.calibration)
            calibration = model.stages[len(uncalibrated.stages) :]
            calibrated = (
                PipelineModel(stages=calibration).transform(validation_raw) if calibration else validation_raw
            )
            validation_scored = run.cache(_with_scores(calibrated).select(LABEL, models.SCORE))
            threshold = ev.alert_threshold(validation_scored, models.SCORE, cfg.alert_budget)
            validation_rate = ev.metrics_at_threshold(validation_scored, LABEL, models.SCORE, threshold)[
                "alert_rate"
            ]
            base_threshold = ev.alert_threshold(validation, BASELINE, cfg.alert_budget)
            test_scored = run.cache(_scored(model, test).select(LABEL, models.SCORE, RAW_SCORE))
            metrics = ev.alert_metrics(test_scored, LABEL, models.SCORE, threshold)
            baseline = ev.alert_metrics(test, LABEL, BASELINE, base_threshold)
            brier = {
                "raw": ev.brier_score(test_scored, LABEL, RAW_SCORE),
                "calibrated": ev.brier_score(test_scored, LABEL, models.SCORE),
            }

        def evaluate(other: PipelineModel) -> dict[str, float]:
            return ev.binary_metrics(_scored(other, test), LABEL, models.SCORE)

        candidate = lifecycle.Candidate(
            name=cfg.model_name,
            model=model,
            metrics={k: float(v) for k, v in metrics.items()},
            evaluate=evaluate,
            promotion=cfg.promotion,
            baseline=baseline,
            params={
                "family": family,
                "imbalance": option,
                "calibration": cfg.calibration,
                "threshold": threshold,
                "positive_weight": data.weights[option] or 1.0,
                "features": ",".join([*cfg.numeric_features, *cfg.categorical_features]),
                **{f"tuned.{k}": v for k, v in _best_params(searched[(option, family)][2]).items()},
            },
            tags={
                "threshold": repr(threshold),
                "family": family,
                "imbalance": option,
                "calibration": cfg.calibration,
                "alert_budget": repr(cfg.alert_budget),
            },
        )
        return FraudResult(
            data, searched, (option, family), uncalibrated, threshold, validation_rate, metrics, baseline,
            brier, test_scored, candidate,
        )  # fmt: skip


class FraudTrainingSpec(lifecycle.TrainingSpec[FraudResult]):
    """gold/transaction_features → the fraud classifier on a time (or stratified) split."""

    experiment = "fraud"

    def __init__(self, cfg: FraudModelConfig) -> None:
        self.cfg = cfg
        self.input_table = cfg.input_table
        self.classifier = FraudClassifier(cfg)

    def train(self, run: lifecycle.TrainingRun) -> FraudResult:
        with run.timed("prepare"):
            data = prepare_fraud_data(run, self.cfg)
        return self.classifier.fit(run, data)

    def candidates(self, result: FraudResult) -> list[lifecycle.Candidate]:
        return [result.candidate]

    def report(self, run: lifecycle.TrainingRun, result: FraudResult) -> HtmlReport:
        return fraud_report(run, result)

    def run_params(self, result: FraudResult) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "split": cfg.split,
            "split.bounds": result.data.bounds,
            "alert_budget": cfg.alert_budget,
            "baseline": baseline_name(cfg, result.data.prior),
            "imbalance.searched": ",".join(cfg.imbalance),
            "imbalance.families": cfg.imbalance_families,
        }

    def run_metrics(self, result: FraudResult) -> dict[str, float]:
        searched = result.searched
        out = {f"baseline.{k}": float(v) for k, v in result.baseline.items()}
        out.update({f"validation.{f}.auprc": v[1] for f, v in result.fitted.items() if v[1] == v[1]})
        out.update({f"validation.{o}.{f}.auprc": v[1] for (o, f), v in searched.items() if v[1] == v[1]})
        out.update({f"rows.{s}": float(n) for s, (n, _) in result.data.counts.items()})
        out.update({f"brier.{k}": v for k, v in result.brier.items()})
        out["validation.alert_rate"] = result.validation_rate
        return out

    def summary(self, result: FraudResult, outcomes: Sequence[lifecycle.TrainingOutcome]) -> dict[str, Any]:
        (outcome,) = outcomes
        cfg, data, metrics, searched = self.cfg, result.data, result.metrics, result.searched
        return {
            "model": outcome.name,
            "version": outcome.version,
            "promoted": outcome.promoted,
            "reason": outcome.reason,
            "family": result.family,
            "imbalance": result.option,
            "positive_weight": round(result.positive_weight, 4),
            "calibration": cfg.calibration,
            "split": cfg.split,
            "validation_auprc_by_family": {f: round(v[1], 4) for f, v in result.fitted.items()},
            "validation_auprc_by_imbalance": {
                o: {f: round(v[1], 4) for (o2, f), v in searched.items() if o2 == o} for o in data.weights
            },
            "auprc": round(metrics["auprc"], 4),
            "roc_auc": round(metrics["roc_auc"], 4),
            "precision_at_budget": round(metrics["precision_at_budget"], 4),
            "recall_at_budget": round(metrics["recall_at_budget"], 4),
            "positive_rate": round(metrics["positive_rate"], 6),
            "brier_raw": round(result.brier["raw"], 6),
            "brier_calibrated": round(result.brier["calibrated"], 6),
            "alert_budget": cfg.alert_budget,
            "validation_alert_rate": round(result.validation_rate, 6),
            "test_alert_rate": round(metrics["alert_rate"], 6),
            "baseline": baseline_name(cfg, data.prior),
            "baseline_auprc": round(result.baseline["auprc"], 4),
            "rows_train": data.counts[TRAIN][0],
            "rows_validation": data.counts[VALIDATION][0],
            "rows_test": data.counts[TEST][0],
        }


def train_fraud_model(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
    """gold features (pinned version) → tuned classifier families → MLflow run, registry, promotion gate,
    as of the run date ``dates.last``."""
    return lifecycle.run_training(spark, config, dates, FraudTrainingSpec(config.ml.fraud))


def _rank(metric: float) -> float:
    return -math.inf if math.isnan(metric) else metric


def search_imbalance_and_family(
    prefix: list[Any],
    cfg: FraudModelConfig,
    config: Config,
    weights: dict[str, float | None],
    auprc: BinaryClassificationEvaluator,
    train: DataFrame,
    validation: DataFrame,
) -> dict[tuple[str, str], models.Fitted]:
    """Families tuned under imbalance options (positive weight, None = unweighted), each pair scored by
    validation AUPRC (NaN only when there is a single pair: nothing to choose).

    Every family is fitted under the first option; each other option refits only the
    ``imbalance_families`` best families under the first (0 = all), so a family that already lost
    unweighted does not cost one more fit per option. The feature stages are fitted and the training
    and validation vectors cached once for all options; an option only adds its weight column.
    """
    searched: dict[tuple[str, str], models.Fitted] = {}
    seed = config.ml.seed
    single = len(weights) == 1 and len(cfg.families) == 1
    columns = [models.FEATURES, LABEL]
    with models.assembled_vectors(prefix, train, validation, columns, not single) as (features, prepared,
                                                                                      held):
        kept = list(cfg.families)
        for n, (option, weight) in enumerate(weights.items()):
            data = prepared if weight is None else prepared.transform(with_class_weight(weight))
            families = {
                f: (
                    models.classifier_stages(f, LABEL, None if weight is None else WEIGHT, seed),
                    cfg.families[f],
                )
                for f in kept
            }
            runlog.event("imbalance_start", model=cfg.model_name, imbalance=option,
                         positive_weight=weight or 1.0, families=",".join(kept))  # fmt: skip
            fitted = models.fit_families_on_vectors(
                features, families, auprc, data, held, cfg.train_ratio, config.ml.parallelism, seed,
                f"{cfg.model_name}@{option}", config.ml.family_patience,
            )  # fmt: skip
            searched.update({(option, f): v for f, v in fitted.items()})
            if n == 0 and cfg.imbalance_families and len(weights) > 1:
                ranked = sorted(kept, key=lambda f: _rank(fitted[f][1]), reverse=True)
                kept = ranked[: cfg.imbalance_families]
                runlog.event("imbalance_screened", model=cfg.model_name, first=option,
                             refit=",".join(kept),
                                 skipped=",".join(ranked[cfg.imbalance_families:]))  # fmt: skip
    return searched


def best_by_family(searched: dict[tuple[str, str], models.Fitted]) -> dict[str, models.Fitted]:
    """Per family, the fit of its best imbalance option (validation AUPRC; NaN ranks last)."""
    best: dict[str, models.Fitted] = {}
    for (_, family), fit in searched.items():
        if family not in best or _rank(fit[1]) > _rank(best[family][1]):
            best[family] = fit
    return best


def _best_params(tuning: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    return max(tuning, key=lambda t: t[1])[0] if tuning else {}


def fraud_report(run: lifecycle.TrainingRun, result: FraudResult) -> HtmlReport:
    """Metric table vs baseline, imbalance x family search, PR/ROC with the threshold, reliability and
    Brier score before and after calibration, confusion, importances (of the model before calibration)."""
    cfg, config, data = run.config.ml.fraud, run.config, result.data
    option, family = chosen = result.chosen
    threshold, metrics, baseline, brier = result.threshold, result.metrics, result.baseline, result.brier
    test_scored = result.test_scored
    report = HtmlReport(
        f"Fraud classifier — {cfg.model_name}",
        f"run date {run.run_date}, {cfg.input_table} v{run.pinned.version}, chosen family {family}, "
        f"imbalance {option}, calibration {cfg.calibration}",
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
                "validation_alert_rate": result.validation_rate,
            },
            {"model": f"baseline: {baseline_name(cfg, data.prior)}", **{k: baseline[k] for k in keys}},
        ],
    )
    report.add_table(
        f"Splits ({cfg.split}; labels as known at the cut-off)",
        [
            {"split": s, "rows": n, "frauds": p, "rate": p / n if n else None}
            for s, (n, p) in sorted(data.counts.items())
        ]
        + [{"split": "bounds", "rows": None, "frauds": None, "rate": None, "days": data.split_text}],
    )
    report.add_table(
        "Search: validation AUPRC per imbalance option and family (a held-out share of train picks "
        "each family's params); the best pair wins. Every family is fitted under the first option, "
        + (
            f"the other options refit its {cfg.imbalance_families} best"
            if cfg.imbalance_families
            else "and under every other option"
        ),
        [
            {
                "imbalance": o,
                "positive_weight": data.weights[o] or 1.0,
                "family": f,
                "validation_auprc": v[1],
                "chosen": (o, f) == chosen,
                "best_params": str(_best_params(v[2])),
            }
            for (o, f), v in result.searched.items()
        ],
    )
    curve = ev.binary_curve(test_scored, LABEL, models.SCORE, config.ml.curve_points)
    report.add_figure("PR and ROC on test", plot_pr_roc(curve, threshold, metrics["positive_rate"], metrics))
    report.add_table(
        f"Calibration ({cfg.calibration}, fitted on validation): Brier score on test, lower is better",
        [
            {"score": "before calibration (classifier probability)", "brier": brier["raw"]},
            {"score": f"after calibration ({cfg.calibration})", "brier": brier["calibrated"]},
        ],
    )
    report.add_figure(
        "Reliability on test before calibration",
        plot_calibration(ev.calibration_bins(test_scored, LABEL, RAW_SCORE, cfg.calibration_bins)),
    )
    report.add_figure(
        f"Reliability on test after calibration ({cfg.calibration})",
        plot_calibration(ev.calibration_bins(test_scored, LABEL, models.SCORE, cfg.calibration_bins)),
    )
    report.add_figure(
        "Confusion at the alert threshold",
        plot_alert_confusion(metrics, threshold, cfg.alert_budget),
    )
    model = result.uncalibrated
    importance = models.feature_importance(model, model.transform(run.pinned.df.limit(0)).schema)
    report.add_figure("Feature importance", plot_feature_importance(importance))
    return report


def score_fraud(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
    """The champion scores the feature rows of ``dates`` into gold/fraud_scores (no-op when already done)."""
    first, last = dates.first, dates.last
    cfg = config.ml.fraud
    lake = Lakehouse(spark, config)
    champion = scoring.load_champion(config, cfg.model_name, "banking.train_fraud")
    threshold = float(champion.tags.get("threshold", "nan"))
    source = lifecycle.table_ref(lake, cfg.input_table)
    if not source.exists():
        raise JobFailed(f"{cfg.input_table} does not exist: run banking.build_features first")
    version = source.version()
    window = [(cfg.date_column, ">=", first), (cfg.date_column, "<=", last)]
    rows = source.read(version=version, where=window)

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
            cfg.numeric_features, cfg.categorical_features, config.ml.drift, current_where=window,
        )  # fmt: skip

    days = scoring.count_days(rows, cfg.date_column)
    summary = scoring.write_scores(
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
    return lifecycle.scoring_result(summary)
