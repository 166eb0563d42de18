"""MLlib building blocks shared by the trainers: feature vectors, estimator families, grid tuning."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.base import Estimator, Transformer
from pyspark.ml.classification import GBTClassifier, LogisticRegression, RandomForestClassifier
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.feature import OneHotEncoder, SQLTransformer, StandardScaler, StringIndexer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.regression import GBTRegressor, RandomForestRegressor
from pyspark.ml.tuning import ParamGridBuilder, TrainValidationSplit
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.errors import ConfigError
from lakeml.sqltext import sql_identifier as _q

# What a Pipeline accepts as a stage.
PipelineStage = Estimator | Transformer

FEATURES = "features"
SCORE = "score"
_NUMERIC = (T.NumericType, T.BooleanType)


def feature_stages(
    schema: T.StructType, numeric: Sequence[str], categorical: Sequence[str]
) -> list[PipelineStage]:
    """Stages turning named columns into one ``features`` vector, saved with the model so scoring matches.

    Numeric and boolean columns become doubles; NULL and NaN become 0 plus a ``<col>__missing``
    indicator (for nullable columns), so a missing value is information, not an error. Categories are
    indexed by frequency and one-hot encoded; a category unseen in training gets its own slot.
    """
    fields = {f.name: f for f in schema.fields}
    missing = [c for c in (*numeric, *categorical) if c not in fields]
    if missing:
        raise ConfigError(f"feature columns not in the input table: {', '.join(missing)}")
    wrong = [c for c in numeric if not isinstance(fields[c].dataType, _NUMERIC)]
    if wrong:
        raise ConfigError(f"numeric features must be numeric or boolean columns: {', '.join(wrong)}")
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


class _DropsTrainingSummary:
    """Mixin: the fitted model forgets its training summary.

    Spark 4.0's logistic-regression and random-forest models keep a training summary that references
    the SparkSession; their probability UDF captures the model, so once the session has initialized
    its (unserializable) ObservationManager — e.g. after a streaming query in the same pipeline run —
    every transform fails with "Task not serializable". The summary is never used here.
    """

    def _fit(self, dataset: DataFrame) -> Any:
        model = super()._fit(dataset)  # type: ignore[misc]
        jvm = dataset.sparkSession._jvm
        model._java_obj.setSummary(jvm.scala.Option.empty())
        return model


class SummaryFreeLogisticRegression(_DropsTrainingSummary, LogisticRegression):
    """LogisticRegression whose fitted model holds no training summary (see _DropsTrainingSummary)."""


class SummaryFreeRandomForestClassifier(_DropsTrainingSummary, RandomForestClassifier):
    """RandomForestClassifier whose fitted model holds no training summary."""


def classifier_stages(family: str, label: str, weight: str | None, seed: int) -> list[PipelineStage]:
    """The estimator (and any scaling it needs) of a classifier family: gbt, random_forest, logistic."""
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
    raise ConfigError(f"unknown classifier family '{family}' (gbt, random_forest, logistic)")


def regressor_stages(family: str, label: str, seed: int) -> list[PipelineStage]:
    """The estimator of a regressor family: gbt or random_forest."""
    if family == "gbt":
        return [GBTRegressor(labelCol=label, featuresCol=FEATURES, seed=seed)]
    if family == "random_forest":
        return [RandomForestRegressor(labelCol=label, featuresCol=FEATURES, seed=seed)]
    raise ConfigError(f"unknown regressor family '{family}' (gbt, random_forest)")


def param_grid(estimator: PipelineStage, grid: Mapping[str, Sequence[float]]) -> list[dict[Any, Any]]:
    """ParamGridBuilder maps from conf (param name -> values), values converted to the param's type."""
    builder = ParamGridBuilder()
    for name, values in grid.items():
        if not estimator.hasParam(name):
            raise ConfigError(f"{type(estimator).__name__} has no parameter '{name}' (grid in conf)")
        param = estimator.getParam(name)
        builder.addGrid(param, [param.typeConverter(v) for v in values])
    return builder.build()


def tune(
    estimator: Estimator,
    grid_maps: Sequence[dict[Any, Any]],
    evaluator: Evaluator,
    data: DataFrame,
    train_ratio: float,
    parallelism: int,
    seed: int,
) -> tuple[Transformer, list[tuple[dict[str, float], float]]]:
    """TrainValidationSplit over ``grid_maps``; returns the refitted best model and each point's metric.

    A one-point grid has nothing to choose: it is fitted once on all of ``data`` (its metric is NaN),
    which saves the held-out fit a split would spend on a foregone conclusion.
    """
    if len(grid_maps) == 1:
        params = {p.name: float(v) for p, v in grid_maps[0].items()}
        return estimator.fit(data, grid_maps[0]), [(params, float("nan"))]
    tuned = TrainValidationSplit(
        estimator=estimator,
        estimatorParamMaps=list(grid_maps),
        evaluator=evaluator,
        trainRatio=train_ratio,
        parallelism=parallelism,
        seed=seed,
    ).fit(data)
    results = [
        ({p.name: float(v) for p, v in pm.items()}, float(m))
        for pm, m in zip(grid_maps, tuned.validationMetrics, strict=True)
    ]
    return tuned.bestModel, results


def fit_tuned(
    prefix: Sequence[PipelineStage],
    estimator_stages: Sequence[PipelineStage],
    grid: Mapping[str, Sequence[float]],
    evaluator: Evaluator,
    train: DataFrame,
    train_ratio: float,
    parallelism: int,
    seed: int,
) -> tuple[PipelineModel, list[tuple[dict[str, float], float]]]:
    """Fit the feature stages once, tune the estimator (see ``tune``), return one PipelineModel.

    Returns the fitted pipeline (features + best estimator) and each grid point's validation metric.
    """
    features = Pipeline(stages=list(prefix)).fit(train)
    prepared = features.transform(train)
    inner = Pipeline(stages=list(estimator_stages))
    grid_maps = param_grid(estimator_stages[-1], grid)
    best, results = tune(inner, grid_maps, evaluator, prepared, train_ratio, parallelism, seed)
    return PipelineModel(stages=[*features.stages, *cast(PipelineModel, best).stages]), results


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
    else:
        return {}
    meta = prepared_schema[FEATURES].metadata.get("ml_attr", {}).get("attrs", {})
    names = {a["idx"]: a["name"] for group in meta.values() for a in group}
    return {names.get(i, f"f{i}"): float(v) for i, v in enumerate(values) if v}
