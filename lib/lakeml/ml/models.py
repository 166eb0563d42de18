"""MLlib building blocks shared by the trainers: feature vectors, estimator families, grid tuning."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from pyspark import StorageLevel, inheritable_thread_target
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.base import Estimator, Transformer
from pyspark.ml.classification import GBTClassifier, LogisticRegression, RandomForestClassifier
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.feature import OneHotEncoder, SQLTransformer, StandardScaler, StringIndexer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.param import TypeConverters
from pyspark.ml.regression import GBTRegressor, RandomForestRegressor
from pyspark.ml.tuning import ParamGridBuilder
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml import runlog
from lakeml.errors import ConfigError
from lakeml.session import jvm
from lakeml.sqltext import sql_identifier as _q

# What a Pipeline accepts as a stage.
PipelineStage = Estimator | Transformer

FEATURES = "features"
SCORE = "score"
# A tuned family: its model (refitted on all of train), validation metric, and (grid point, metric) pairs.
Fitted = tuple[PipelineModel, float, list[tuple[dict[str, float], float]]]
_NUMERIC = (T.NumericType, T.BooleanType)
_FLOAT_CONVERTERS = (TypeConverters.toFloat,)
# Rows of the training data held out to rank grid points (and to stop GBT / xgboost early).
TUNING_VALIDATION = "_tuning_validation"
XGBOOST_EARLY_STOPPING_ROUNDS = 10
_SNAKE_CASE = {"labelCol": "label_col", "featuresCol": "features_col", "weightCol": "weight_col"}


def feature_stages(
    schema: T.StructType, numeric: Sequence[str], categorical: Sequence[str]
) -> list[PipelineStage]:
    """Stages turning named columns into one ``features`` vector, saved with the model so scoring matches.

    Numeric and boolean columns become doubles; NULL and NaN become 0 plus a ``<col>__missing``
    indicator (for nullable columns), so a missing value is information, not an error. Categories are
    indexed by frequency and one-hot encoded; a category unseen in training gets its own slot.
    """
    check_feature_types(schema, numeric, categorical)
    fields = {f.name: f for f in schema.fields}
    exprs, vector_inputs = [], []
    for c in numeric:
        value = f"nanvl(CAST({_q(c)} AS DOUBLE), CAST(NULL AS DOUBLE))"
        exprs.append(f"coalesce({value}, 0D) AS {_q(c + '__num')}")
        vector_inputs.append(c + "__num")
        if fields[c].nullable:
            exprs.append(f"CAST({value} IS NULL AS DOUBLE) AS {_q(c + '__missing')}")
            vector_inputs.append(c + "__missing")
    stages: list[PipelineStage] = [SQLTransformer(statement=f"SELECT *, {', '.join(exprs)} FROM __THIS__")]
    if categorical:
        indexed = [c + "__idx" for c in categorical]
        onehot = [c + "__vec" for c in categorical]
        stages.append(StringIndexer(inputCols=list(categorical), outputCols=indexed, handleInvalid="keep"))
        stages.append(OneHotEncoder(inputCols=indexed, outputCols=onehot, handleInvalid="keep"))
        vector_inputs.extend(onehot)
    stages.append(VectorAssembler(inputCols=vector_inputs, outputCol=FEATURES))
    return stages


def check_feature_types(schema: T.StructType, numeric: Sequence[str], categorical: Sequence[str]) -> None:
    """ConfigError unless every feature column exists and every numeric feature is numeric or boolean."""
    fields = {f.name: f for f in schema.fields}
    missing = [c for c in (*numeric, *categorical) if c not in fields]
    if missing:
        raise ConfigError(f"feature columns not in the input table: {', '.join(missing)}")
    wrong = [c for c in numeric if not isinstance(fields[c].dataType, _NUMERIC)]
    if wrong:
        raise ConfigError(f"numeric features must be numeric or boolean columns: {', '.join(wrong)}")


class _DropsTrainingSummary:
    """Mixin: the fitted model forgets its training summary.

    Spark 4.0's logistic-regression and random-forest models keep a training summary that references
    the SparkSession; their probability UDF captures the model, so once the session has initialized
    its (unserializable) ObservationManager — e.g. after a streaming query in the same pipeline run —
    every transform fails with "Task not serializable". The summary is never used here.
    """

    def _fit(self, dataset: DataFrame) -> Any:
        model = super()._fit(dataset)  # type: ignore[misc]
        model._java_obj.setSummary(jvm(dataset.sparkSession).scala.Option.empty())
        return model


class SummaryFreeLogisticRegression(_DropsTrainingSummary, LogisticRegression):
    """LogisticRegression whose fitted model holds no training summary (see _DropsTrainingSummary)."""


class SummaryFreeRandomForestClassifier(_DropsTrainingSummary, RandomForestClassifier):
    """RandomForestClassifier whose fitted model holds no training summary."""


def _xgboost(task: str, common: Mapping[str, Any], seed: int) -> PipelineStage:
    """xgboost.spark's estimator (trains on Spark executors, one barrier task per worker)."""
    from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

    # Its constructor takes snake_case aliases of the Spark column params (labelCol -> label_col).
    named = {_SNAKE_CASE.get(k, k): v for k, v in common.items()}
    if task == "classifier":
        return SparkXGBClassifier(random_state=seed, eval_metric="aucpr", **named)
    return SparkXGBRegressor(random_state=seed, eval_metric="rmse", **named)


def classifier_stages(family: str, label: str, weight: str | None, seed: int) -> list[PipelineStage]:
    """The estimator (and any scaling it needs) of a classifier family: gbt, random_forest, logistic,
    xgboost."""
    common: dict[str, Any] = {"labelCol": label, "featuresCol": FEATURES}
    if weight:
        common["weightCol"] = weight
    if family == "gbt":
        return [GBTClassifier(seed=seed, **common)]
    if family == "random_forest":
        return [SummaryFreeRandomForestClassifier(seed=seed, **common)]
    if family == "logistic":
        scaled = {**common, "featuresCol": FEATURES + "_scaled"}
        return [
            StandardScaler(inputCol=FEATURES, outputCol=FEATURES + "_scaled"),
            SummaryFreeLogisticRegression(maxIter=100, **scaled),
        ]
    if family == "xgboost":
        return [_xgboost("classifier", common, seed)]
    raise ConfigError(f"unknown classifier family '{family}' (gbt, random_forest, logistic, xgboost)")


def regressor_stages(family: str, label: str, seed: int) -> list[PipelineStage]:
    """The estimator of a regressor family: gbt, random_forest or xgboost."""
    if family == "gbt":
        return [GBTRegressor(labelCol=label, featuresCol=FEATURES, seed=seed)]
    if family == "random_forest":
        return [RandomForestRegressor(labelCol=label, featuresCol=FEATURES, seed=seed)]
    if family == "xgboost":
        return [_xgboost("regressor", {"labelCol": label, "featuresCol": FEATURES}, seed)]
    raise ConfigError(f"unknown regressor family '{family}' (gbt, random_forest, xgboost)")


def _grid_value(param: Any, value: float) -> Any:
    """A conf number as the param's type; integral floats become ints for params without a numeric
    type (xgboost's, which pass values through to the booster: ``max_depth=6.0`` is refused)."""
    converted = param.typeConverter(value)
    integral = isinstance(converted, float) and converted.is_integer()
    if integral and param.typeConverter not in _FLOAT_CONVERTERS:
        return int(converted)
    return converted


def param_grid(estimator: PipelineStage, grid: Mapping[str, Sequence[float]]) -> list[dict[Any, Any]]:
    """ParamGridBuilder maps from conf (param name -> values), values converted to the param's type."""
    builder = ParamGridBuilder()
    for name, values in grid.items():
        if not estimator.hasParam(name):
            raise ConfigError(f"{type(estimator).__name__} has no parameter '{name}' (grid in conf)")
        param = estimator.getParam(name)
        builder.addGrid(param, [_grid_value(param, v) for v in values])
    return builder.build()


@dataclass(frozen=True)
class FitRecord:
    """One tuned fit, kept for scripts/bench_models.py: the winner's estimator and its training rows."""

    name: str
    params: dict[str, Any]  # the winning grid point
    estimator: Estimator  # with the winning params set
    data: DataFrame  # the training rows it was fitted on (lineage, not cached)
    seconds: float  # the winner's own fit
    grid_seconds: tuple[float, ...]  # every grid point's fit
    wall_seconds: float  # the whole tuning, fits in parallel
    parallelism: int


# scripts/bench_models.py sets a list here to collect every tuning's FitRecord; None = not recorded.
FIT_RECORDS: list[FitRecord] | None = None


def record_fit(record: FitRecord) -> None:
    """Keep ``record`` when a benchmark is collecting them (no cost otherwise)."""
    if FIT_RECORDS is not None:
        FIT_RECORDS.append(record)


def _params_text(params: Mapping[Any, Any]) -> dict[str, Any]:
    return {p.name: v for p, v in params.items()}


def _last_stage(estimator: Estimator) -> PipelineStage:
    return estimator.getStages()[-1] if isinstance(estimator, Pipeline) else estimator


def _with_cores(estimator: Estimator, params: dict[Any, Any], cores: int) -> dict[Any, Any]:
    """``params`` plus xgboost's ``num_workers`` (barrier tasks of one core each) = ``cores``, unless set."""
    last = _last_stage(estimator)
    if (
        not last.hasParam("num_workers")
        or last.getParam("num_workers") in params
        or last.isSet("num_workers")
    ):
        return params
    return {**params, last.getParam("num_workers"): max(1, cores)}


def _with_early_stopping(estimator: Estimator, params: dict[Any, Any]) -> dict[Any, Any]:
    """``params`` plus the tuning's validation rows as the estimator's early-stopping set, when it has one
    (MLlib GBT's ``validationIndicatorCol``, xgboost's ``validationIndicatorCol`` + early_stopping_rounds)."""
    last = _last_stage(estimator)
    if not last.hasParam("validationIndicatorCol"):
        return params
    out = {**params, last.getParam("validationIndicatorCol"): TUNING_VALIDATION}
    if last.hasParam("early_stopping_rounds") and not last.isSet("early_stopping_rounds"):
        out[last.getParam("early_stopping_rounds")] = XGBOOST_EARLY_STOPPING_ROUNDS
    return out


def tune(
    estimator: Estimator,
    grid_maps: Sequence[dict[Any, Any]],
    evaluator: Evaluator,
    data: DataFrame,
    train_ratio: float,
    parallelism: int,
    seed: int,
    name: str = "model",
    keep_going: Callable[[Transformer], bool] | None = None,
) -> tuple[Transformer, list[tuple[dict[str, float], float]]]:
    """Fit every grid point on a ``train_ratio`` share of ``data``, score it on the rest, keep the best.

    A one-point grid has nothing to choose: it is fitted once on all of ``data`` (its metric is NaN).
    Otherwise the held-out rows are chosen once (seeded) and ``parallelism`` points are fitted at a
    time; an estimator with early stopping (GBT, xgboost) also stops on those rows. The winner is the
    model fitted on the training share (no refit on all rows: a refit would cost one more fit than
    the grid itself). Each fit logs a ``fit_done`` line (which point, how many left, seconds).
    ``data`` should be cached and hold only the columns the estimator reads. Points are fitted in
    rounds of ``parallelism``; after each round but the last, ``keep_going(best model so far)`` may
    stop the tuning (the points not yet fitted are left out of the results).
    """
    started = time.perf_counter()
    total = len(grid_maps)
    workers = max(1, min(parallelism, total))
    cores = max(1, data.sparkSession.sparkContext.defaultParallelism // workers)
    runlog.event("tuning_start", model=name, grid_points=total, parallelism=workers)
    if total == 1:
        params = _with_cores(estimator, dict(grid_maps[0]), cores)
        model = estimator.fit(data, params)
        seconds = time.perf_counter() - started
        runlog.event("fit_done", model=name, point="1/1", left=0, params=_params_text(grid_maps[0]),
                     seconds=round(seconds, 1), elapsed=round(seconds, 1))  # fmt: skip
        record_fit(
            FitRecord(
                name,
                _params_text(grid_maps[0]),
                estimator.copy(params),
                data,
                seconds,
                (seconds,),
                seconds,
                1,
            )
        )
        return model, [({p.name: float(v) for p, v in grid_maps[0].items()}, float("nan"))]
    flagged = data.withColumn(TUNING_VALIDATION, F.rand(seed) >= F.lit(train_ratio))
    held_out = flagged.where(F.col(TUNING_VALIDATION))
    fit_rows = flagged.where(~F.col(TUNING_VALIDATION))
    done: list[int] = []

    def fit_one(index: int) -> tuple[int, Transformer, float, float]:
        point_started = time.perf_counter()
        params = _with_early_stopping(estimator, _with_cores(estimator, dict(grid_maps[index]), cores))
        early_stops = TUNING_VALIDATION in params.values()
        model = estimator.fit(flagged if early_stops else fit_rows, params)
        seconds = time.perf_counter() - point_started
        metric = evaluator.evaluate(model.transform(held_out))
        done.append(index)
        runlog.event("fit_done", model=name, point=f"{len(done)}/{total}", left=total - len(done),
                     params=_params_text(grid_maps[index]), metric=round(metric, 5),
                     seconds=round(seconds, 1), elapsed=round(time.perf_counter() - started, 1))  # fmt: skip
        return index, model, metric, seconds

    pick = max if evaluator.isLargerBetter() else min
    fitted: list[tuple[int, Transformer, float, float]] = []
    # Without a stop rule every point is queued at once (a freed worker starts the next point).
    step = total if keep_going is None else workers
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for first in range(0, total, step):
            indexes = range(first, min(total, first + step))
            fitted += pool.map(inheritable_thread_target(data.sparkSession)(fit_one), indexes)
            more = keep_going is not None and first + step < total
            if more and not keep_going(pick(fitted, key=lambda f: f[2])[1]):  # type: ignore[misc]
                break
    fitted.sort(key=lambda f: f[0])
    best = pick(fitted, key=lambda f: f[2])
    results = [
        ({p.name: float(v) for p, v in grid_maps[i].items()}, float(metric)) for i, _, metric, _ in fitted
    ]
    record_fit(
        FitRecord(
            name,
            _params_text(grid_maps[best[0]]),
            estimator.copy(
                _with_early_stopping(estimator, _with_cores(estimator, dict(grid_maps[best[0]]), cores))
            ),
            flagged,
            best[3],
            tuple(f[3] for f in fitted),
            time.perf_counter() - started,
            workers,
        )
    )
    return best[1], results


def _estimator_columns(stages: Sequence[PipelineStage]) -> list[str]:
    """The input columns besides ``features`` the estimator stages read (label, weight)."""
    last = stages[-1]
    return [
        last.getOrDefault(name)
        for name in ("labelCol", "weightCol")
        if last.hasParam(name) and last.isDefined(last.getParam(name)) and last.getOrDefault(name)
    ]


def _estimator_columns_of(families: Sequence[Sequence[PipelineStage]]) -> list[str]:
    """``features`` plus every column the families' estimators read (label, weight), once each."""
    return list(dict.fromkeys([FEATURES, *(c for stages in families for c in _estimator_columns(stages))]))


def fit_tuned(
    prefix: Sequence[PipelineStage],
    estimator_stages: Sequence[PipelineStage],
    grid: Mapping[str, Sequence[float]],
    evaluator: Evaluator,
    train: DataFrame,
    train_ratio: float,
    parallelism: int,
    seed: int,
    name: str = "model",
) -> tuple[PipelineModel, list[tuple[dict[str, float], float]]]:
    """Fit the feature stages once, tune the estimator (see ``tune``), return one PipelineModel.

    The assembled vectors (with label and weight only) are cached once and every grid point reads
    them, instead of each fit re-running the feature stages over the whole training table.
    Returns the fitted pipeline (features + best estimator) and each grid point's validation metric.
    """
    features = Pipeline(stages=list(prefix)).fit(train)
    columns = _estimator_columns_of([estimator_stages])
    prepared = features.transform(train).select(*columns).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        prepared.count()  # materialized once here, not by each parallel fit at the same time
        best, results = _tune_stages(estimator_stages, grid, evaluator, prepared, train_ratio, parallelism,
                                     seed, name)  # fmt: skip
    finally:
        prepared.unpersist()
    return PipelineModel(stages=[*features.stages, *best.stages]), results


def _tune_stages(
    estimator_stages: Sequence[PipelineStage],
    grid: Mapping[str, Sequence[float]],
    evaluator: Evaluator,
    prepared: DataFrame,
    train_ratio: float,
    parallelism: int,
    seed: int,
    name: str,
    keep_going: Callable[[Transformer], bool] | None = None,
) -> tuple[PipelineModel, list[tuple[dict[str, float], float]]]:
    """``tune`` of the estimator stages on already-assembled vectors; the best fitted stages."""
    inner = Pipeline(stages=list(estimator_stages))
    grid_maps = param_grid(estimator_stages[-1], grid)
    best, results = tune(
        inner, grid_maps, evaluator, prepared, train_ratio, parallelism, seed, name, keep_going
    )
    return cast(PipelineModel, best), results


def with_positive_score(predictions: DataFrame) -> DataFrame:
    """Reads a classifier's ``probability`` vector; adds ``score`` = probability of class 1."""
    return predictions.withColumn(SCORE, vector_to_array(F.col("probability"))[1])


def feature_importance(model: PipelineModel, prepared_schema: T.StructType) -> dict[str, float]:
    """Named importances of the last stage (tree importances, or |coefficients| of a linear model)."""
    last = model.stages[-1]
    if hasattr(last, "featureImportances"):
        values = last.featureImportances.toArray()
    elif hasattr(last, "coefficients"):
        values = abs(last.coefficients.toArray())
    elif hasattr(last, "get_booster"):  # xgboost: total gain per feature ("f<index>")
        gains = last.get_booster().get_score(importance_type="total_gain")
        values = [0.0] * (1 + max((int(k[1:]) for k in gains), default=-1))
        for key, gain in gains.items():
            values[int(key[1:])] = gain
    else:
        return {}
    meta = prepared_schema[FEATURES].metadata.get("ml_attr", {}).get("attrs", {})
    names = {a["idx"]: a["name"] for group in meta.values() for a in group}
    return {names.get(i, f"f{i}"): float(v) for i, v in enumerate(values) if v}


def fit_families(
    prefix: Sequence[PipelineStage],
    families: Mapping[str, tuple[Sequence[PipelineStage], Mapping[str, Sequence[float]]]],
    evaluator: Evaluator,
    train: DataFrame,
    validation: DataFrame,
    train_ratio: float,
    parallelism: int,
    seed: int,
    name: str,
    patience: int = 0,
) -> tuple[str, dict[str, tuple[PipelineModel, float, list[tuple[dict[str, float], float]]]]]:
    """Tune each family (estimator stages, grid) on ``train`` and rank them by ``evaluator`` on
    ``validation``.

    The feature stages are fitted once and the assembled training vectors cached once for all
    families (and the validation vectors once when families are ranked), so a second family costs
    its own fits only. Returns the winning family and, per family, (fitted pipeline, validation
    metric, grid results). A single family is not scored on validation (nothing to choose; NaN).

    Early dropping (``patience`` > 0): a family tuned after another gets ``patience`` rounds of
    grid points (``parallelism`` points a round) to beat the best family so far on validation; when
    its best point does not, its other points are not fitted and a ``family_dropped`` line says so
    (the family stays in the results with the points it fitted: it lost). Rounds, not seconds, so
    the same data and conf always drop the same families.
    """
    columns = _estimator_columns_of([stages for stages, _ in families.values()])
    with assembled_vectors(prefix, train, validation, columns, len(families) > 1) as (features, prepared,
                                                                                      held):
        fitted = fit_families_on_vectors(
            features, families, evaluator, prepared, held, train_ratio, parallelism, seed, name, patience
        )
    return best_family(fitted, evaluator), fitted


@contextlib.contextmanager
def assembled_vectors(
    prefix: Sequence[PipelineStage],
    train: DataFrame,
    validation: DataFrame,
    columns: Sequence[str],
    with_validation: bool,
) -> Iterator[tuple[PipelineModel, DataFrame, DataFrame | None]]:
    """The feature stages fitted on ``train``, its vectors (``columns`` only) cached and materialized
    once, and with ``with_validation`` the validation vectors (those of ``columns`` it has) cached;
    both unpersisted when the block ends. Every family and grid point then reads the same vectors."""
    features = Pipeline(stages=list(prefix)).fit(train)
    prepared = features.transform(train).select(*columns).persist(StorageLevel.MEMORY_AND_DISK)
    held: DataFrame | None = None
    try:
        prepared.count()  # materialized once here, not by each parallel fit at the same time
        if with_validation:
            # Validation rows carry the label but not necessarily a training weight.
            kept = [c for c in columns if c == FEATURES or c in validation.columns]
            held = features.transform(validation).select(*kept).persist(StorageLevel.MEMORY_AND_DISK)
        yield features, prepared, held
    finally:
        prepared.unpersist()
        if held is not None:
            held.unpersist()


def best_family(fitted: Mapping[str, tuple[Any, float, Any]], evaluator: Evaluator) -> str:
    """The family with the best validation metric (NaN ranks last)."""
    sign = 1.0 if evaluator.isLargerBetter() else -1.0
    return max(fitted, key=lambda f: -math.inf if math.isnan(fitted[f][1]) else sign * fitted[f][1])


def fit_families_on_vectors(
    features: PipelineModel,
    families: Mapping[str, tuple[Sequence[PipelineStage], Mapping[str, Sequence[float]]]],
    evaluator: Evaluator,
    prepared: DataFrame,
    held: DataFrame | None,
    train_ratio: float,
    parallelism: int,
    seed: int,
    name: str,
    patience: int = 0,
) -> dict[str, tuple[PipelineModel, float, list[tuple[dict[str, float], float]]]]:
    """``fit_families`` on already-assembled, cached training vectors ``prepared`` (``features``: the
    fitted feature stages that made them) and validation vectors ``held`` (None: families not scored,
    NaN). Per family: (features + best estimator, validation metric, grid results)."""
    fitted: dict[str, tuple[PipelineModel, float, list[tuple[dict[str, float], float]]]] = {}
    for n, (family, (stages, grid)) in enumerate(families.items(), start=1):
        runlog.event("family_start", model=name, family=family, family_point=f"{n}/{len(families)}")
        keep_going = None
        if held is not None and patience > 0 and fitted:
            keep_going = _beats_within(
                evaluator, held, _best_metric(fitted, evaluator), patience, name, family
            )
        best, tuning = _tune_stages(
            stages, grid, evaluator, prepared, train_ratio, parallelism, seed, f"{name}/{family}", keep_going
        )
        metric = evaluator.evaluate(best.transform(held)) if held is not None else math.nan
        runlog.event("family_done", model=name, family=family, validation_metric=round(metric, 5))
        fitted[family] = (PipelineModel(stages=[*features.stages, *best.stages]), metric, tuning)
    return fitted


def _best_metric(fitted: Mapping[str, tuple[Any, float, Any]], evaluator: Evaluator) -> float:
    """The best validation metric among the families tuned so far."""
    pick = max if evaluator.isLargerBetter() else min
    return pick(metric for _, metric, _ in fitted.values())


def _beats_within(
    evaluator: Evaluator, held: DataFrame, best: float, patience: int, name: str, family: str
) -> Callable[[Transformer], bool]:
    """``tune``'s ``keep_going``: after ``patience`` rounds, go on only while the family's best point so
    far beats ``best`` on the validation vectors ``held``; logs ``family_dropped`` when it stops."""
    rounds = 0

    def keep_going(model: Transformer) -> bool:
        nonlocal rounds
        rounds += 1
        if rounds < patience:
            return True
        metric = evaluator.evaluate(model.transform(held))
        if _better(evaluator, metric, best):
            return True
        runlog.event("family_dropped", model=name, family=family, rounds=rounds,
                     validation_metric=round(metric, 5), best_metric=round(best, 5))  # fmt: skip
        return False

    return keep_going


def _better(evaluator: Evaluator, metric: float, other: float) -> bool:
    """Whether ``metric`` is strictly better than ``other`` in the evaluator's direction."""
    return metric > other if evaluator.isLargerBetter() else metric < other
