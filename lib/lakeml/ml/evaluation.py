"""Model metrics computed by Spark: binary scores, top-K rankings and regression; small curves for reports.

Only aggregates reach the driver (a few hundred curve points, bins, per-bucket errors), never rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
from pyspark import StorageLevel
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import Bucketizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

# Direction of every metric a promotion gate may use.
HIGHER_IS_BETTER: Mapping[str, bool] = {
    "auprc": True,
    "roc_auc": True,
    "precision_at_budget": True,
    "recall_at_budget": True,
    "precision_at_k": True,
    "recall_at_k": True,
    "ndcg_at_k": True,
    "map_at_k": True,
    "coverage": True,
    "rmse": False,
    "validation_rmse": False,  # explicit recommender: its floor is the bias baseline's on validation
    "mae": False,
    "cmapss_score": False,
}


# Two evaluations of one model on the same rows can differ in their last bits (Spark adds up partial
# sums in the order its tasks finish; seen: an AUPRC 1e-16 apart): a gain within this relative noise
# is no gain, else a retrain on unchanged data could be promoted over an identical champion.
METRIC_NOISE_RTOL = 1e-9


def is_better(metric: str, value: float, other: float, margin: float = 0.0) -> bool:
    """Whether ``value`` beats ``other`` on ``metric`` by more than ``margin`` and by more than float
    noise."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric '{metric}' (known: {', '.join(sorted(HIGHER_IS_BETTER))})")
    gain = value - other if HIGHER_IS_BETTER[metric] else other - value
    return gain > max(margin, METRIC_NOISE_RTOL * max(abs(value), abs(other)))


# ---------------------------------------------------------------------------------------------- binary


def binary_metrics(scored: DataFrame, label: str, score: str) -> dict[str, float]:
    """Area under the PR and ROC curves of ``score`` (higher = more likely positive) against a 0/1 label."""
    data = scored.select(F.col(label).cast("double").alias("label"), F.col(score).cast("double").alias("s"))
    # Two evaluations read it: the scores are computed once (a model's transform is the costly part).
    data = data.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        evaluator = BinaryClassificationEvaluator(rawPredictionCol="s", labelCol="label")
        return {
            "auprc": evaluator.setMetricName("areaUnderPR").evaluate(data),
            "roc_auc": evaluator.setMetricName("areaUnderROC").evaluate(data),
        }
    finally:
        data.unpersist()


def alert_threshold(scored: DataFrame, score: str, budget: float) -> float:
    """The lowest threshold whose alert rate (``score >= threshold``, over all rows) does not exceed
    ``budget``: chosen on validation, reused on test and in scoring.

    Rows tied on a score alert together or not at all, so with ties at the cut the alert set stops at
    the tied group that would overflow the budget (realised rate below the budget, never above; inf =
    no alert when even the top score's ties exceed it). Starts at the approximate (1 - budget)
    quantile and steps up to the next higher score while the alert count is above budget x rows: one
    small aggregate per step, usually one or two steps; no rows reach the driver.
    """
    if not 0 < budget < 1:
        raise ValueError(f"alert budget must be in (0, 1), got {budget}")
    s = F.col(score)
    first = scored.agg(F.percentile_approx(s, 1.0 - budget, 100_000), F.count(F.lit(1))).head(1)[0]
    if first[0] is None:
        return math.inf
    threshold, allowed = float(first[0]), budget * first[1]
    while True:
        at, above = scored.agg(F.count_if(s >= threshold), F.min(F.when(s > threshold, s))).head(1)[0]
        if at <= allowed:
            return threshold
        if above is None:
            return math.inf
        threshold = float(above)


def metrics_at_threshold(scored: DataFrame, label: str, score: str, threshold: float) -> dict[str, float]:
    """Confusion counts and precision / recall / alert rate when ``score >= threshold`` raises an alert."""
    alert = F.col(score) >= F.lit(threshold)
    positive = F.col(label) == 1
    row = scored.agg(
        F.sum((alert & positive).cast("long")).alias("tp"),
        F.sum((alert & ~positive).cast("long")).alias("fp"),
        F.sum((~alert & positive).cast("long")).alias("fn"),
        F.sum((~alert & ~positive).cast("long")).alias("tn"),
    ).head(1)[0]
    tp, fp, fn, tn = (int(row[k] or 0) for k in ("tp", "fp", "fn", "tn"))
    total = tp + fp + fn + tn
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision_at_budget": tp / (tp + fp) if tp + fp else 0.0,
        "recall_at_budget": tp / (tp + fn) if tp + fn else 0.0,
        "alert_rate": (tp + fp) / total if total else 0.0,
        "positive_rate": (tp + fn) / total if total else 0.0,
    }


def alert_metrics(scored: DataFrame, label: str, score: str, threshold: float) -> dict[str, float]:
    """Test metrics of a scored classifier: AUPRC, ROC-AUC and the counts / rates at ``threshold``."""
    return {**binary_metrics(scored, label, score), **metrics_at_threshold(scored, label, score, threshold)}


def binary_curve(scored: DataFrame, label: str, score: str, points: int) -> pd.DataFrame:
    """PR and ROC points (threshold, precision, recall, fpr) at up to ``points`` score quantiles."""
    probs = [i / points for i in range(points)]
    cuts = scored.agg(F.percentile_approx(F.col(score), probs, 10_000)).head(1)[0][0] or []
    thresholds = sorted(set(float(c) for c in cuts))
    if not thresholds:
        return pd.DataFrame(columns=["threshold", "precision", "recall", "fpr"])
    # Each row's bucket = index of the highest threshold <= its score (-1 below all); counts per bucket,
    # then cumulated from the top threshold down on the driver (one row per threshold).
    splits = [-math.inf, *thresholds, math.inf]
    bucketed = Bucketizer(splits=splits, inputCol="_s", outputCol="_b", handleInvalid="skip").transform(
        scored.select(F.col(score).cast("double").alias("_s"), F.col(label).alias("_y"))
    )
    counts = (
        bucketed.groupBy((F.col("_b").cast("int") - 1).alias("b"))
        .agg(F.sum((F.col("_y") == 1).cast("long")).alias("pos"), F.count(F.lit(1)).alias("n"))
        .toPandas()
        .set_index("b")
        .reindex(range(-1, len(thresholds)), fill_value=0)
    )
    pos = counts["pos"].to_numpy(dtype="int64")
    neg = counts["n"].to_numpy(dtype="int64") - pos
    pos_total, neg_total = int(pos.sum()), int(neg.sum())
    rows = []
    tp = fp = 0
    # Position i + 1 holds bucket i (the reindex starts at bucket -1).
    for i in range(len(thresholds) - 1, -1, -1):
        tp += int(pos[i + 1])
        fp += int(neg[i + 1])
        rows.append(
            {
                "threshold": thresholds[i],
                "precision": tp / (tp + fp) if tp + fp else 1.0,
                "recall": tp / pos_total if pos_total else 0.0,
                "fpr": fp / neg_total if neg_total else 0.0,
            }
        )
    return pd.DataFrame(rows)


def calibration_bins(scored: DataFrame, label: str, score: str, bins: int) -> pd.DataFrame:
    """Reliability table: per equal-width score bin, mean predicted probability, observed rate and count."""
    b = F.least(F.floor(F.col(score) * bins), F.lit(bins - 1))
    return (
        scored.groupBy(b.alias("bin"))
        .agg(
            F.avg(score).alias("mean_predicted"),
            F.avg(F.col(label).cast("double")).alias("observed_rate"),
            F.count(F.lit(1)).alias("count"),
        )
        .orderBy("bin")
        .toPandas()  # ``bins`` rows
    )


def brier_score(scored: DataFrame, label: str, score: str) -> float:
    """Mean squared difference between a probability ``score`` and the 0/1 label (one aggregate)."""
    diff = F.col(score).cast("double") - F.col(label).cast("double")
    value = scored.agg(F.avg(diff * diff)).head(1)[0][0]
    return float(value) if value is not None else math.nan


# ---------------------------------------------------------------------------------------------- ranking


def ranking_metrics(
    recommended: DataFrame, relevant: DataFrame, user: str, ks: Sequence[int]
) -> dict[int, dict[str, float]]:
    """precision/recall/NDCG/MAP at each k; ``recommended`` and ``relevant`` hold (user, items array<double>).

    Users with relevant items but no recommendations count with an empty list (a miss, not skipped).
    The definitions are MLlib's ``RankingMetrics`` (binary relevance; precision divides by k), computed
    per user with array functions and averaged in one aggregate for every k and metric at once, where
    ``RankingEvaluator`` reads the rows once per metric and k.
    """
    joined = relevant.select(user, F.col("items").alias("label")).join(
        recommended.select(user, F.col("items").alias("prediction")), user, "left"
    )
    data = joined.select(
        F.coalesce("prediction", F.array().cast("array<double>")).alias("p"),
        F.col("label").cast("array<double>").alias("l"),
    )
    columns = []
    for k in ks:
        if k <= 0:
            raise ValueError(f"ranking position k must be positive, got {k}")
        columns += [F.avg(c).alias(f"{name}@{k}") for name, c in _ranking_terms(k).items()]
    row = data.agg(*columns).head(1)[0]  # no user at all: NaN, as MLlib's mean of nothing
    value = lambda key: math.nan if row[key] is None else float(row[key])  # noqa: E731
    return {k: {name: value(f"{name}@{k}") for name in _ranking_terms(k)} for k in ks}


def _ranking_terms(k: int) -> dict[str, F.Column]:
    """One user's precision, recall, NDCG and average precision at ``k`` from its recommended list ``p``
    and relevant set ``l`` (MLlib ``RankingMetrics``: 0 for an empty relevant set)."""
    top = F.slice("p", 1, k)
    hit = F.transform(top, lambda x: F.array_contains("l", x).cast("int"))
    hits = F.aggregate(hit, F.lit(0), lambda acc, h: acc + h)
    labels = F.size("l")
    # gain of position i (0-based) is 1 / ln(i + 2); summed in position order, as MLlib does
    dcg = F.aggregate(F.transform(hit, lambda h, i: h / F.log(i + 2.0)), F.lit(0.0), lambda acc, g: acc + g)
    ideal = F.aggregate(
        F.transform(F.slice("l", 1, k), lambda _, i: 1.0 / F.log(i + 2.0)), F.lit(0.0), lambda acc, g: acc + g
    )
    # precision at each hit: hits in the first i + 1 positions ÷ (i + 1)
    precisions = F.transform(
        hit,
        lambda h, i: F.when(
            h == 1,
            F.aggregate(F.slice(hit, 1, i + 1), F.lit(0), lambda acc, x: acc + x) / (i + 1.0),
        ).otherwise(0.0),
    )
    average_precision = F.aggregate(precisions, F.lit(0.0), lambda acc, x: acc + x) / F.least(
        labels, F.lit(k)
    )
    known = labels > 0
    return {
        "precision_at_k": F.when(known, hits / F.lit(float(k))).otherwise(0.0),
        "recall_at_k": F.when(known, hits / labels).otherwise(0.0),
        "ndcg_at_k": F.when(known & (ideal > 0), dcg / ideal).otherwise(0.0),
        "map_at_k": F.when(known, average_precision).otherwise(0.0),
    }


# ---------------------------------------------------------------------------------------------- regression


def cmapss_score_terms(error: str) -> F.Column:
    """The C-MAPSS asymmetric penalty of ``predicted - true``: exp(-e/13)-1 early, exp(e/10)-1 late."""
    e = F.col(error)
    return F.when(e < 0, F.exp(-e / 13.0) - 1.0).otherwise(F.exp(e / 10.0) - 1.0)


def regression_metrics(
    scored: DataFrame, label: str, prediction: str, score_cap: float | None = None
) -> dict[str, float]:
    """RMSE, MAE, mean error and the C-MAPSS score of ``prediction`` against ``label``.

    The C-MAPSS score is the mean per row of the asymmetric penalty, with true and predicted RUL
    capped at ``score_cap`` (the benchmark's piecewise-linear target, 125-130 cycles in the
    literature): uncapped, a few large late errors make the exponential sum meaningless."""
    e = (F.col(prediction) - F.col(label)).cast("double")
    if score_cap is not None:
        cap = F.lit(float(score_cap))
        capped = (F.least(F.col(prediction), cap) - F.least(F.col(label), cap)).cast("double")
    else:
        capped = e
    data = scored.select(e.alias("e"), capped.alias("capped_e"))
    row = data.agg(
        F.sqrt(F.avg(F.col("e") * F.col("e"))).alias("rmse"),
        F.avg(F.abs("e")).alias("mae"),
        F.avg("e").alias("mean_error"),
        F.avg(cmapss_score_terms("capped_e")).alias("cmapss_score"),
        F.count(F.lit(1)).alias("rows"),
    ).head(1)[0]
    return {k: float(row[k]) if row[k] is not None else math.nan for k in row.asDict()}


def error_by_bucket(scored: DataFrame, label: str, prediction: str, width: int) -> pd.DataFrame:
    """Per true-value bucket of ``width``: count, RMSE and mean error (predicted - true)."""
    e = F.col(prediction) - F.col(label)
    low = (F.floor(F.col(label) / width) * width).cast("long")
    out = (
        scored.groupBy(low.alias("low"))
        .agg(
            F.count(F.lit(1)).alias("count"),
            F.sqrt(F.avg(e * e)).alias("rmse"),
            F.avg(e).alias("mean_error"),
        )
        .orderBy("low")
        .toPandas()  # one row per bucket
    )
    out.insert(0, "bucket", [f"{int(lo)}-{int(lo) + width - 1}" for lo in out["low"]])
    return out.drop(columns=["low"])
