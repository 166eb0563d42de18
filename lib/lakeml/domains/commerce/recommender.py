"""ALS recommender: train on one gold/user_item_interactions snapshot, register, gate, score top-K.

- **Input**: the snapshot ``date_column = D``, D = the newest snapshot on or before the run date (each
  snapshot already sums the trailing lookback window); with ``date_column: ""`` the whole table is one
  snapshot. Implicit mode learns from ``strength_column`` (decayed interaction strength), explicit mode
  from ``rating_column`` (rows without a rating skipped); only the mode's column must exist.
- **Split** (per user, by time): each user's ``test_items`` most recent pairs (``time_column``) are
  test, the ``validation_items`` before them validation, the rest train; users with fewer than
  ``min_user_items`` pairs stay in train only.
- **Tuning**: every grid point is fitted on train and ranked by precision@k on validation (pairs the
  user already has in train are never recommended; at most ``validation_users`` users, a seeded
  sample), ``ml.parallelism`` fits at a time. The random
  split of TrainValidationSplit would put a user's later pairs into training, so it is used only for
  explicit mode's RMSE tuning. The best point is refitted on train + validation and tested once.
- **Metrics** on test users: precision/recall/NDCG/MAP@k (RankingEvaluator) for every k of ``ks``
  (lists are generated max(ks) long), catalog coverage, and RMSE in explicit mode; a popularity
  baseline (items by distinct train users, minus what the user has seen) is scored on the same users
  in the same run.
- **Explicit mode** also fits a bias baseline (global mean + user and item biases, each shrunk by
  ``bias_regularization`` chosen on validation RMSE; Spark aggregations only), reported beside ALS on
  the same test pairs; it is the promotion floor (ALS must have a lower test RMSE). With
  ``explicit_residuals`` ALS learns the residuals after the biases (regParam values of the grid are
  multiples of the training residuals' standard deviation) and the saved model predicts biases +
  factors: the biases are folded into two extra factor columns (user ``[p, 1, mu + b_u]``, item
  ``[q, b_i, 1]``), so the registered ALSModel, its top-k and batch scoring need nothing else. The
  candidates of ``explicit_candidates`` are fitted on train (residual ones in item-bias variants: item
  biases shrunk toward a below-average prior, ``explicit_item_bias_*``) and compared on validation: by
  RMSE, or (``explicit_choice_metric: ndcg_at_k``) by NDCG@k among those no worse than the bias baseline
  in RMSE (every ranked candidate's validation top-k in one pass; with ``explicit_ndcg_standard_errors``
  the widest validation coverage among those that many standard errors from the best NDCG@k); each
  residual fit is also a candidate at every weight of ``explicit_factor_weights`` on its factors (no
  extra fit). The winner is served as fitted (one ALS fit per candidate, no refit), with biases
  refitted on train + validation. The bias sums are aggregated once per set of rows (train; train +
  validation): the regularisation grid, the item-bias variants and the served biases are projections
  of them.
- **Scoring**: top ``k`` per user of the snapshot, excluding items the user purchased
  (``purchased_column > 0``; every item the user has when ``purchased_column`` is ""), into
  gold/recommendations.

User and item ids are indexed by StringIndexer inside the saved pipeline (its labels are the model's
id vocabulary, held like any MLlib StringIndexer's, as text); recommendations map back through those
labels and are cast back to the input's id type (string, int, long ...) in one place, ``recommend``,
so recommendations, exclusions and held-out pairs always compare ids of one type.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import reduce
from typing import Any, cast

from pyspark import StorageLevel, inheritable_thread_target
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.feature import IndexToString, StringIndexer, StringIndexerModel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.ml.tuning import ParamGridBuilder
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml import runlog
from lakeml.config import Config, RecommenderConfig, join_location
from lakeml.errors import ConfigError, JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.ml import evaluation as ev
from lakeml.ml import lifecycle, models, scoring
from lakeml.ml.report import HtmlReport, plot_ranking_curves
from lakeml.ml.splits import SPLIT, TEST, TRAIN, VALIDATION, with_latest_per_user_split
from lakeml.session import jvm
from lakeml.steps import DateRange, StepResult

USER_IDX, ITEM_IDX, TARGET = "_user_idx", "_item_idx", "_target"
BIAS_PREDICTION = "_bias_prediction"
ITEM_KEY_SPACE = 2**52  # item keys for RankingEvaluator: exact as doubles

# user_id / item_id as in the input table: recommendations_schema() swaps in the input's id types.
RECOMMENDATIONS_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),  # 1 = best
        T.StructField("item_id", T.StringType(), False),
        T.StructField("score", T.DoubleType(), False),  # ALS predicted preference
        T.StructField("model_name", T.StringType(), False),
        T.StructField("model_version", T.StringType(), False),
        T.StructField("input_version", T.LongType(), False),
        T.StructField("scored_at", T.TimestampType(), False),
        T.StructField("as_of_date", T.DateType(), False),  # partition: the snapshot scored
    ]
)


def recommendations_schema(user_type: T.DataType, item_type: T.DataType) -> T.StructType:
    """RECOMMENDATIONS_SCHEMA with the input table's user and item id types."""
    ids = {"user_id": user_type, "item_id": item_type}
    return T.StructType(
        [
            T.StructField(f.name, ids.get(f.name, f.dataType), f.nullable)
            for f in RECOMMENDATIONS_SCHEMA.fields
        ]
    )


def snapshot_date(df: DataFrame, cfg: RecommenderConfig, run_date: dt.date) -> dt.date | None:
    """The newest snapshot date on or before ``run_date`` (a clear error when there is none); None when
    the table has no date column (``date_column: ""``): the whole table is the snapshot."""
    if not cfg.date_column:
        return None
    day = df.where(F.col(cfg.date_column) <= F.lit(run_date)).agg(F.max(cfg.date_column)).head(1)[0][0]
    if day is None:
        raise JobFailed(f"{cfg.input_table} has no snapshot on or before {run_date}")
    return day


def target_column(cfg: RecommenderConfig) -> str:
    """The column ALS learns from: strength in implicit mode, rating in explicit mode."""
    return cfg.strength_column if cfg.mode == "implicit" else cfg.rating_column


def with_target(cfg: RecommenderConfig) -> Any:
    """Reads the strength or rating column (by mode); adds ``_target`` (float) and drops rows without one."""
    source = target_column(cfg)
    return lambda df: df.withColumn(TARGET, F.col(source).cast("float")).where(F.col(TARGET).isNotNull())


def item_key(column: str) -> F.Column:
    """A numeric key per item id for RankingEvaluator (exact as a double), from the id's text so that
    the same id hashes alike whatever its type (242 and '242')."""
    return F.pmod(F.xxhash64(F.col(column).cast("string")), F.lit(ITEM_KEY_SPACE)).cast("double")


def als_pipeline(cfg: RecommenderConfig, params: dict[str, float], seed: int) -> Pipeline:
    """StringIndexer for users and items, then ALS on the indexes (implicit or explicit by mode)."""
    als = ALS(
        userCol=USER_IDX,
        itemCol=ITEM_IDX,
        ratingCol=TARGET,
        implicitPrefs=cfg.mode == "implicit",
        coldStartStrategy="drop",
        nonnegative=cfg.mode == "implicit",
        maxIter=cfg.max_iter,
        seed=seed,
    )
    for name, value in params.items():
        als.set(als.getParam(name), als.getParam(name).typeConverter(value))
    return Pipeline(
        stages=[
            StringIndexer(inputCol=cfg.user_column, outputCol=USER_IDX, handleInvalid="skip"),
            StringIndexer(inputCol=cfg.item_column, outputCol=ITEM_IDX, handleInvalid="skip"),
            als,
        ]
    )


def recommend(
    model: PipelineModel,
    users: DataFrame,
    exclude: DataFrame,
    k: int,
    cfg: RecommenderConfig,
    by: Sequence[str] = (),
) -> DataFrame:
    """Top ``k`` (user, *by, rank, item, score) for ``users``, never an item ``exclude`` holds for the
    same (user, *by); ``by`` lets one call serve several snapshots (e.g. ``as_of_date``).

    Items come back with the type ``exclude`` has for them (the input table's), not as the indexer's
    text labels. Users the model does not know get no rows. Each user needs k + its own exclusion count
    candidates; users are grouped by that count rounded up to a power of two and ALS is asked once per group,
    so a
    few heavy users do not make every list thousands long (the groups are a handful: metadata).
    """
    user_indexer, item_indexer = (
        cast(StringIndexerModel, model.stages[0]),
        cast(StringIndexerModel, model.stages[1]),
    )
    als = cast(ALSModel, model.stages[-1])
    if not isinstance(als, ALSModel):
        raise JobFailed(f"expected an ALS recommender pipeline, got a {type(als).__name__} as its last stage")
    u, i = cfg.user_column, cfg.item_column
    keys = [u, *by]
    wanted = users.select(*keys).distinct()
    excluded = exclude.select(*keys, i).distinct()
    counts = excluded.groupBy(*keys).agg(F.count(F.lit(1)).alias("_n"))
    need = (
        wanted.join(counts, keys, "left")
        .groupBy(u)
        .agg(F.max(F.coalesce(F.col("_n"), F.lit(0))).alias("_n"))
        .withColumn("_depth", F.when(F.col("_n") > 0, F.pow(F.lit(2), F.ceil(F.log2("_n")))).otherwise(0))
    )
    # Materialized once: the depth groups below would each recompute the exclusion counts otherwise.
    indexed = user_indexer.transform(need).withColumn("_depth", F.col("_depth").cast("int")).localCheckpoint()
    depths = sorted(int(r[0]) for r in indexed.select("_depth").distinct().collect()) or [0]
    raw = reduce(
        lambda a, b: a.unionByName(b),
        [
            als.recommendForUserSubset(indexed.where(F.col("_depth") == d).select(USER_IDX), k + d)
            for d in depths
        ],
    )
    indexed = indexed.select(u, USER_IDX)
    pairs = raw.select(USER_IDX, F.explode("recommendations").alias("rec")).select(
        USER_IDX,
        F.col("rec")[als.getItemCol()].cast("double").alias(ITEM_IDX),
        F.col("rec.rating").alias("score"),
    )
    labelled = IndexToString(inputCol=ITEM_IDX, outputCol=i, labels=item_indexer.labels).transform(pairs)
    labelled = labelled.withColumn(i, F.col(i).cast(exclude.schema[i].dataType))  # the input's id type
    kept = labelled.join(indexed, USER_IDX).join(wanted, u).join(excluded, [*keys, i], "left_anti")
    rank = F.row_number().over(Window.partitionBy(*keys).orderBy(F.col("score").desc(), F.col(i)))
    return kept.withColumn("rank", rank).where(F.col("rank") <= k).select(*keys, "rank", i, "score")


def popularity_baseline(
    train: DataFrame, users: DataFrame, exclude: DataFrame, k: int, cfg: RecommenderConfig
) -> DataFrame:
    """Top ``k`` items by distinct train users for each of ``users``, minus the user's excluded items.

    A user needs the first k + (its excluded items among them) of the popularity list, so each user
    is paired with only that many list items rather than k + the largest exclusion count of anyone.
    """
    u, i = cfg.user_column, cfg.item_column
    excluded = exclude.select(u, i).distinct()
    widest = excluded.groupBy(u).count().agg(F.max("count")).head(1)[0][0] or 0
    by_popularity = [F.col("score").desc(), F.col(i)]
    popular = (
        train.groupBy(i)
        .agg(F.countDistinct(u).alias("score"))
        .orderBy(*by_popularity)
        .limit(k + int(widest))
        # At most k + widest rows: one window over all of them is cheap.
        .withColumn("_position", F.row_number().over(Window.orderBy(*by_popularity)))
        # Used twice below; materialized so the training interactions are aggregated once.
        .localCheckpoint()
    )
    hidden = excluded.join(F.broadcast(popular.select(i)), i, "left_semi").groupBy(u).count()
    depth = (
        users.select(u)
        .distinct()
        .join(hidden, u, "left")
        .select(u, (F.coalesce(F.col("count"), F.lit(0)) + k).alias("_depth"))
    )
    candidates = (
        depth.crossJoin(F.broadcast(popular))
        .where(F.col("_position") <= F.col("_depth"))
        .join(excluded, [u, i], "left_anti")
    )
    rank = F.row_number().over(Window.partitionBy(u).orderBy(*by_popularity))
    return (
        candidates.withColumn("rank", rank)
        .where(F.col("rank") <= k)
        .select(u, "rank", i, F.col("score").cast("double"))
    )


def ranked_lists(recs: DataFrame, cfg: RecommenderConfig) -> DataFrame:
    """(user, rank, item) rows → (user, items: array of item keys in rank order)."""
    ordered = F.array_sort(F.collect_list(F.struct("rank", item_key(cfg.item_column).alias("key"))))
    return (
        recs.groupBy(cfg.user_column)
        .agg(ordered.alias("l"))
        .select(cfg.user_column, F.col("l.key").alias("items"))
    )


def relevance_threshold(
    cfg: RecommenderConfig, train: DataFrame, bounds: tuple[float, float] | None = None
) -> float | None:
    """Explicit mode: the rating from which a held-out pair counts as relevant, ``relevant_rating`` or
    else min + ``relevant_rating_fraction`` x (max - min) of the training ratings (4 on a 1-5 scale
    with 0.75; ``bounds``: their (min, max) when already known); None in implicit mode (any positive
    strength is relevant)."""
    if cfg.mode == "implicit":
        return None
    if cfg.relevant_rating is not None:
        return cfg.relevant_rating
    low, high = bounds or train.agg(F.min(TARGET), F.max(TARGET)).head(1)[0]
    if low is None:
        raise JobFailed(f"{cfg.input_table}: no training row has a {cfg.rating_column}")
    return float(low) + cfg.relevant_rating_fraction * (float(high) - float(low))


def relevant_lists(test: DataFrame, cfg: RecommenderConfig, threshold: float | None) -> DataFrame:
    """Test pairs with a positive target (implicit) or a rating >= ``threshold`` (explicit)
    → (user, items: array of item keys)."""
    positive = test.where(F.col(TARGET) > 0) if threshold is None else test.where(F.col(TARGET) >= threshold)
    return positive.groupBy(cfg.user_column).agg(F.collect_set(item_key(cfg.item_column)).alias("items"))


def ranking_report(
    recs: DataFrame, relevant: DataFrame, cfg: RecommenderConfig, catalog: int
) -> dict[str, Any]:
    """Metrics at every k of ``ks`` (dict by k) and catalog coverage of the top-k lists."""
    by_k = ev.ranking_metrics(ranked_lists(recs, cfg), relevant, cfg.user_column, sorted({*cfg.ks, cfg.k}))
    covered = recs.where(F.col("rank") <= cfg.k).select(cfg.item_column).distinct().count()
    return {"by_k": by_k, "coverage": covered / catalog if catalog else 0.0}


def _fit_and_score(
    cfg: RecommenderConfig,
    params: dict[str, float],
    seed: int,
    fit_on: DataFrame,
    users: DataFrame,
    seen: DataFrame,
    relevant: DataFrame,
) -> float:
    model = als_pipeline(cfg, params, seed).fit(fit_on)
    recs = recommend(model, users, seen, cfg.k, cfg)
    return ev.ranking_metrics(ranked_lists(recs, cfg), relevant, cfg.user_column, [cfg.k])[cfg.k][
        "precision_at_k"
    ]


def validation_sample(validation: DataFrame, cfg: RecommenderConfig, seed: int) -> DataFrame:
    """Reads validation's user column; the distinct users, at most ``validation_users`` of them (those
    with the smallest seeded hash: the same sample for every grid point and run), all when 0."""
    users = validation.select(cfg.user_column).distinct()
    if not cfg.validation_users:
        return users
    by_hash = F.xxhash64(cfg.user_column, F.lit(seed))
    return users.orderBy(by_hash, cfg.user_column).limit(cfg.validation_users)


def tune_implicit(
    cfg: RecommenderConfig, config: Config, train: DataFrame, validation: DataFrame
) -> tuple[dict[str, float], list[tuple[dict[str, float], float]]]:
    """Grid points fitted on train, ranked by validation precision@k (``ml.parallelism`` at a time).

    A grid whose every point scores 0 while items were relevant is an error: nothing can be chosen.
    """
    names = list(cfg.grid)
    points = [dict(zip(names, values, strict=True)) for values in itertools.product(*cfg.grid.values())]
    if len(points) == 1:  # nothing to choose: no validation fit
        return points[0], [(points[0], float("nan"))]
    users = validation_sample(validation, cfg, config.ml.seed).persist(StorageLevel.MEMORY_AND_DISK)
    relevant = relevant_lists(validation.join(users, cfg.user_column, "left_semi"), cfg, None).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    started, done = time.perf_counter(), []
    runlog.event(
        "tuning_start", model=cfg.model_name, grid_points=len(points), parallelism=config.ml.parallelism
    )

    def fit_one(point: dict[str, float]) -> float:
        point_started = time.perf_counter()
        score = _fit_and_score(cfg, point, config.ml.seed, train, users, train, relevant)
        done.append(point)
        runlog.event("fit_done", model=cfg.model_name, point=f"{len(done)}/{len(points)}",
                     left=len(points) - len(done), params=point, metric=round(score, 5),
                     seconds=round(time.perf_counter() - point_started, 1),
                     elapsed=round(time.perf_counter() - started, 1))  # fmt: skip
        return score

    try:
        grid = (f"{cfg.model_name}/grid", als_pipeline(cfg, points[0], config.ml.seed), train)
        scores = _in_parallel(train.sparkSession, config.ml.parallelism, fit_one, points, grid)
    finally:
        users.unpersist()
        relevant.unpersist()
    results = list(zip(points, scores, strict=True))
    if all(s == 0 for s in scores):
        raise JobFailed(
            f"recommender tuning: every grid point scores validation precision@{cfg.k} = 0; "
            "check that the input's user/item ids are consistent (and the grid sensible)"
        )
    return max(results, key=lambda r: r[1])[0], results


def tune_explicit(
    cfg: RecommenderConfig, config: Config, train: DataFrame
) -> tuple[dict[str, float], list[tuple[dict[str, float], float]]]:
    """TrainValidationSplit over the grid by RMSE of held-out ratings (rating prediction is not
    sequential)."""
    pipeline = als_pipeline(cfg, {}, config.ml.seed)
    als = pipeline.getStages()[-1]
    grid_builder = ParamGridBuilder()
    for name, values in cfg.grid.items():
        if name == "alpha":
            continue  # alpha only matters with implicit preferences
        grid_builder.addGrid(als.getParam(name), [als.getParam(name).typeConverter(v) for v in values])
    grid = grid_builder.build()
    if len(grid) == 1:  # nothing to choose: the caller fits the one point on train + validation
        params = {p.name: float(v) for p, v in grid[0].items()}
        return params, [(params, float("nan"))]
    evaluator = RegressionEvaluator(labelCol=TARGET, metricName="rmse")
    _, results = models.tune(pipeline, grid, evaluator, train, 0.8, config.ml.parallelism, config.ml.seed)
    return min(results, key=lambda r: r[1])[0], results


@dataclass(frozen=True)
class BiasModel:
    """Global mean + regularised user and item biases: r_ui ≈ mu + b_u + b_i (Koren's baseline predictor)."""

    mu: float
    users: DataFrame  # (user, _b_u)
    items: DataFrame  # (item, _b_i)
    regularization: float


@dataclass(frozen=True)
class BiasStats:
    """The bias baseline's sums over some rows, from which every (user reg, item reg, item prior) BiasModel
    is a projection (no more aggregation): tuning, item-bias variants and the served biases share them."""

    mu: float  # mean rating
    std: float  # the ratings' standard deviation (population)
    bounds: tuple[float, float]  # the lowest and highest rating
    users: DataFrame  # (user, _s_u = sum(r - mu), _n_u), materialized
    items: DataFrame  # (item, _n_i, _s_i<k> = sum(r - mu - b_u), b_u with user reg regs[k]), materialized
    regs: tuple[float, ...]  # the user regularisations the item sums were taken with


def bias_stats(rows: DataFrame, cfg: RecommenderConfig, regs: Sequence[float]) -> BiasStats:
    """Reads user, item and ``_target``: mu, the ratings' std and range (one aggregate), per-user sums
    (one job) and per-item sums for every user regularisation of ``regs`` (one job, a column per value)."""
    u, i = cfg.user_column, cfg.item_column
    r = F.col(TARGET)
    mu, std, low, high = rows.agg(F.avg(r), F.stddev_pop(r), F.min(r), F.max(r)).head(1)[0]
    if mu is None:
        raise JobFailed(f"{cfg.input_table}: no training row has a {cfg.rating_column}")
    mu, regs = float(mu), tuple(dict.fromkeys(float(r) for r in regs))
    users = rows.groupBy(u).agg(
        F.sum(F.col(TARGET) - mu).alias("_s_u"), F.count(F.lit(1)).alias("_n_u")
    ).localCheckpoint()
    items = (
        rows.join(users, u)
        .groupBy(i)
        .agg(
            F.count(F.lit(1)).alias("_n_i"),
            *[
                F.sum(F.col(TARGET) - mu - F.col("_s_u") / (F.lit(reg) + F.col("_n_u"))).alias(f"_s_i{k}")
                for k, reg in enumerate(regs)
            ],
        )
        .localCheckpoint()
    )
    return BiasStats(mu, float(std) if std else 1.0, (float(low), float(high)), users, items, regs)


def _bias_columns(
    stats: BiasStats, regularization: float, item_regularization: float | None, item_prior: float
) -> tuple[F.Column, F.Column]:
    """(b_u, b_i) as columns over ``stats.users`` / ``stats.items``."""
    k = stats.regs.index(float(regularization))
    reg = F.lit(float(regularization))
    item_reg = F.lit(float(regularization if item_regularization is None else item_regularization))
    b_u = F.col("_s_u") / (reg + F.col("_n_u"))
    b_i = (F.col(f"_s_i{k}") + item_reg * F.lit(float(item_prior))) / (item_reg + F.col("_n_i"))
    return b_u, b_i


def biases_from(
    stats: BiasStats,
    cfg: RecommenderConfig,
    regularization: float,
    item_regularization: float | None = None,
    item_prior: float = 0.0,
) -> BiasModel:
    """The BiasModel of ``fit_biases`` as projections of ``stats`` (``regularization`` among its regs)."""
    b_u, b_i = _bias_columns(stats, regularization, item_regularization, item_prior)
    users = stats.users.select(cfg.user_column, b_u.alias("_b_u"))
    items = stats.items.select(cfg.item_column, b_i.alias("_b_i"))
    return BiasModel(stats.mu, users, items, float(regularization))


def fit_biases(
    train: DataFrame,
    cfg: RecommenderConfig,
    regularization: float,
    item_regularization: float | None = None,
    item_prior: float = 0.0,
) -> BiasModel:
    """mu = mean rating; b_u = sum(r - mu) / (reg + n_u); b_i = (sum(r - mu - b_u) + item_reg x item_prior) /
    (item_reg + n_i), item_reg = ``item_regularization`` or else ``regularization`` (aggregations): each
    item bias is shrunk toward ``item_prior`` (0: toward the mean), the more the fewer ratings it has."""
    stats = bias_stats(train, cfg, (regularization,))
    return biases_from(stats, cfg, regularization, item_regularization, item_prior)


def with_bias_prediction(biases: BiasModel, cfg: RecommenderConfig) -> Any:
    """Reads user and item ids; adds ``_bias_prediction`` = mu + b_u + b_i (0 bias for an unseen id)."""

    def apply(df: DataFrame) -> DataFrame:
        joined = df.join(biases.users, cfg.user_column, "left").join(biases.items, cfg.item_column, "left")
        value = F.lit(biases.mu) + F.coalesce("_b_u", F.lit(0.0)) + F.coalesce("_b_i", F.lit(0.0))
        return joined.withColumn(BIAS_PREDICTION, value).drop("_b_u", "_b_i")

    return apply


def rmse(df: DataFrame, prediction: str) -> float:
    """Root mean squared error of ``prediction`` against ``_target`` (one aggregate)."""
    e = F.col(prediction) - F.col(TARGET)
    value = df.agg(F.sqrt(F.avg(e * e))).head(1)[0][0]
    return float(value) if value is not None else float("nan")


def known_pairs(rows: DataFrame, fit_on: DataFrame, cfg: RecommenderConfig) -> DataFrame:
    """``rows`` whose user and item both occur in ``fit_on``: the pairs ALS can score (cold-start drop)."""
    u, i = cfg.user_column, cfg.item_column
    return rows.join(fit_on.select(u).distinct(), u, "left_semi").join(
        fit_on.select(i).distinct(), i, "left_semi"
    )


def tune_biases(
    cfg: RecommenderConfig, train: DataFrame, validation: DataFrame, stats: BiasStats | None = None
) -> tuple[float, float, list[tuple[float, float, float]]]:
    """The (user, item) bias regularisations with the lowest validation RMSE (on pairs whose user and item
    are in train): every ``bias_regularization`` x every ``item_bias_regularization`` (none: the same
    value for items); (reg, item reg, [(reg, item reg, validation RMSE)]). One validation aggregate for the
    whole grid, over the sums of ``stats`` (``bias_stats`` of train with every ``bias_regularization``)."""
    stats = stats or bias_stats(train, cfg, cfg.bias_regularization)
    u, i = cfg.user_column, cfg.item_column
    grid = [(r, ir) for r in cfg.bias_regularization for ir in cfg.item_bias_regularization or (r,)]
    held_out = known_pairs(validation, train, cfg).join(stats.users, u, "left")
    held_out = held_out.join(stats.items, i, "left")
    errors = []
    for n, (reg, item_reg) in enumerate(grid):
        b_u, b_i = _bias_columns(stats, reg, item_reg, 0.0)
        e = F.lit(stats.mu) + F.coalesce(b_u, F.lit(0.0)) + F.coalesce(b_i, F.lit(0.0)) - F.col(TARGET)
        errors.append(F.sqrt(F.avg(e * e)).alias(f"_rmse{n}"))
    row = held_out.agg(*errors).head(1)[0]
    results = [
        (reg, item_reg, float(row[n]) if row[n] is not None else float("nan"))
        for n, (reg, item_reg) in enumerate(grid)
    ]
    reg, item_reg, _ = min(results, key=lambda r: r[2])
    return reg, item_reg, results


def with_residual_target(biases: BiasModel, cfg: RecommenderConfig) -> Any:
    """Reads user, item and ``_target``; replaces ``_target`` by the residual after the biases."""
    return lambda df: (
        df.transform(with_bias_prediction(biases, cfg))
        .withColumn(TARGET, (F.col(TARGET) - F.col(BIAS_PREDICTION)).cast("float"))
        .drop(BIAS_PREDICTION)
    )


def residual_scale(residuals: DataFrame) -> float:
    """Standard deviation of the training residuals: the unit of the explicit grid's regParam."""
    value = residuals.agg(F.stddev_pop(TARGET)).head(1)[0][0]
    return float(value) if value else 1.0


def scaled_grid(cfg: RecommenderConfig, scale: float) -> list[dict[str, float]]:
    """Explicit grid points (alpha dropped: implicit only), regParam multiplied by ``scale``."""
    grid = {k: v for k, v in cfg.grid.items() if k != "alpha"}
    names = list(grid)
    points = [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]
    return [{**p, **({"regParam": p["regParam"] * scale} if "regParam" in p else {})} for p in points]


def _als_model_from_factors(
    als: ALS | ALSModel, rank: int, user_factors: DataFrame, item_factors: DataFrame, materialize: bool = True
) -> ALSModel:
    """An ALSModel over given (id, features) factors with ``als``'s column and cold-start params
    (``materialize``: factors checkpointed; off for a model only ranked once on validation)."""
    spark = user_factors.sparkSession
    if materialize:  # the factors are the model (saved with it), not a plan over the training data
        user_factors, item_factors = user_factors.localCheckpoint(), item_factors.localCheckpoint()
    java = jvm(spark).org.apache.spark.ml.recommendation.ALSModel(
        als.uid, rank, user_factors._jdf, item_factors._jdf
    )
    model = ALSModel(java)
    for param, value in als.extractParamMap().items():
        if model.hasParam(param.name):
            model.set(model.getParam(param.name), value)
    model._transfer_params_to_java()  # recommendForUserSubset calls the JVM model directly
    return model


def _bias_factors(user_indexer: Any, item_indexer: Any, biases: BiasModel) -> tuple[DataFrame, DataFrame]:
    """(id, [1, mu + b_u]) per user and (id, [b_i, 1]) per item: their dot product is the bias prediction."""
    one = F.lit(1.0).cast("float")
    users = user_indexer.transform(biases.users).select(
        F.col(USER_IDX).cast("int").alias("id"),
        F.array(one, (F.lit(biases.mu) + F.col("_b_u")).cast("float")).alias("_bias"),
    )
    items = item_indexer.transform(biases.items).select(
        F.col(ITEM_IDX).cast("int").alias("id"), F.array(F.col("_b_i").cast("float"), one).alias("_bias")
    )
    return users, items


def fold_biases(
    model: PipelineModel,
    biases: BiasModel,
    cfg: RecommenderConfig,
    materialize: bool = True,
    factor_weight: float = 1.0,
) -> PipelineModel:
    """The residual ALS pipeline with the biases folded into its factors: user [w x p, 1, mu + b_u], item
    [q, b_i, 1], so its dot product, top-k and scoring give biases + w x factors (rank + 2; w =
    ``factor_weight``, 1: the fit as it is)."""
    user_indexer, item_indexer = (
        cast(StringIndexerModel, model.stages[0]),
        cast(StringIndexerModel, model.stages[1]),
    )
    als = cast(ALSModel, model.stages[-1])
    users, items = _bias_factors(user_indexer, item_indexer, biases)
    one, zero = F.lit(1.0).cast("float"), F.lit(0.0).cast("float")
    # an id without a bias (none: both come from the same rows) would predict mu + factors
    weighted = (
        F.col("features")
        if factor_weight == 1.0
        else F.transform("features", lambda x: (x * F.lit(float(factor_weight))).cast("float"))
    )
    user_factors = als.userFactors.join(users, "id", "left").select(
        "id",
        F.concat(weighted, F.coalesce("_bias", F.array(one, F.lit(biases.mu).cast("float")))).alias(
            "features"
        ),
    )
    item_factors = als.itemFactors.join(items, "id", "left").select(
        "id", F.concat("features", F.coalesce("_bias", F.array(zero, one))).alias("features")
    )
    folded = _als_model_from_factors(als, als.rank + 2, user_factors, item_factors, materialize)
    return PipelineModel(stages=[user_indexer, item_indexer, folded])


def fit_indexers(rows: DataFrame, cfg: RecommenderConfig, seed: int) -> PipelineModel:
    """The user and item StringIndexers of ``als_pipeline`` fitted on ``rows``."""
    return Pipeline(stages=als_pipeline(cfg, {}, seed).getStages()[:2]).fit(rows)


def bias_only_model(
    fit_on: DataFrame,
    biases: BiasModel,
    cfg: RecommenderConfig,
    seed: int,
    indexers: PipelineModel | None = None,
    materialize: bool = True,
) -> PipelineModel:
    """The bias baseline as an ALS pipeline (rank 2: user [1, mu + b_u], item [b_i, 1]), so the registered
    model, its top-k and batch scoring are those of any explicit model; indexers fitted on ``fit_on``
    (or ``indexers``, already fitted on those rows)."""
    stages = als_pipeline(cfg, {}, seed).getStages()
    indexers = indexers or fit_indexers(fit_on, cfg, seed)
    user_indexer, item_indexer = indexers.stages
    users, items = _bias_factors(user_indexer, item_indexer, biases)
    model = _als_model_from_factors(
        cast(ALS, stages[-1]),
        2,
        users.withColumnRenamed("_bias", "features"),
        items.withColumnRenamed("_bias", "features"),
        materialize,
    )
    return PipelineModel(stages=[user_indexer, item_indexer, model])


@dataclass(frozen=True)
class ExplicitChoice:
    """The explicit model chosen on validation among bias / residual / plain candidates."""

    kind: str  # "bias", "residual" or "plain"
    params: dict[str, float]  # ALS params of the winner ({} for the bias baseline)
    validation_rmse: float
    bias_validation_rmse: float
    scale: float  # the residuals' standard deviation (unit of the residual regParam)
    results: list[tuple[str, dict[str, float], float]]  # (kind, params, validation RMSE) per candidate
    # the winning ALS candidate as fitted on train (None for the bias baseline) and its fit's seconds
    model: PipelineModel | None = field(default=None, compare=False, repr=False)
    fit_seconds: float = 0.0
    metric: str = "rmse"  # how the winner was chosen (``explicit_choice_metric``)
    # validation NDCG@k per candidate (NaN: not ranked, i.e. RMSE worse than the bias baseline's)
    validation_ndcg: list[float] = field(default_factory=list)
    # validation catalogue coverage per candidate (NaN: not ranked): distinct items of its top-k lists
    validation_coverage: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # each candidate's name (params and item-bias variant)
    chosen: int = 0  # index of the winner in ``results``
    # the winner's item biases: regularisation (None: the baseline's) and prior shift (rating std units)
    item_regularization: float | None = None
    item_prior_shift: float = 0.0
    rating_std: float = 1.0  # the training ratings' standard deviation (unit of the prior shift)
    factor_weight: float = 1.0  # the winner's weight on its factors (``explicit_factor_weights``)
    # ml.recommender settings that leave the winner as the only candidate (bench_models' one-point phase)
    one_point: dict[str, Any] = field(default_factory=dict)


def item_variants(cfg: RecommenderConfig) -> list[tuple[float | None, float]]:
    """(item regularisation or None for the baseline's, prior shift) of every residual candidate."""
    regs: Sequence[float | None] = cfg.explicit_item_bias_regularization or (None,)
    return [(reg, shift) for reg in regs for shift in sorted(set(cfg.explicit_item_bias_priors))]


def ndcg_at(k: int, prediction: str = "prediction", label: str = "label") -> F.Column:
    """NDCG@k of one row's ranked ``prediction`` keys against its non-empty ``label`` set, as MLlib's
    RankingMetrics.ndcgAt (binary relevance; an empty prediction scores 0): a column, so many lists
    aggregate in one pass."""
    gain = "1D / ln(j + 2D)"
    dcg = (f"aggregate(sequence(0, least(size({prediction}), {k}) - 1), 0D, "
           f"(acc, j) -> acc + if(array_contains({label}, {prediction}[j]), {gain}, 0D))")
    ideal = f"aggregate(sequence(0, least(size({label}), {k}) - 1), 0D, (acc, j) -> acc + {gain})"
    return F.expr(f"if(size({prediction}) = 0, 0D, {dcg} / {ideal})")  # fmt: skip


def validation_rankings(
    candidates: Sequence[PipelineModel],
    cfg: RecommenderConfig,
    users: DataFrame,
    seen: DataFrame,
    relevant: DataFrame,
) -> list[tuple[float, int, float]]:
    """(NDCG@k, distinct items in the top-k lists, the NDCG's standard error over users) of each
    candidate's top-k for ``users`` (never an item
    of ``seen``) against ``relevant``, all in one pass: the candidates share their indexers (fitted on the
    same rows), the users' exclusion depths are computed once, every candidate's lists are ranked with
    one window and scored in one aggregate (a user with relevant items and no list counts as a miss, as
    in ev.ranking_metrics; the items are those of the relevant users' lists)."""
    if not candidates:
        return []
    u, i, k = cfg.user_column, cfg.item_column, cfg.k
    user_indexer, item_indexer = (
        cast(StringIndexerModel, candidates[0].stages[0]),
        cast(StringIndexerModel, candidates[0].stages[1]),
    )
    wanted = users.select(u).distinct()
    excluded = seen.select(u, i).distinct().join(wanted, u, "left_semi")
    # One list depth for every user: k + the most items any of them has to skip. A validation sample is a
    # few thousand users, so one ALS call per candidate (not one per exclusion-depth group: each call is
    # several Spark stages) costs less than the longer lists of the light users.
    deepest = excluded.groupBy(u).agg(F.count(F.lit(1)).alias("_n")).agg(F.max("_n")).head(1)[0][0] or 0
    indexed = user_indexer.transform(wanted).select(u, USER_IDX)
    raw = reduce(
        lambda a, b: a.unionByName(b),
        [
            cast(ALSModel, model.stages[-1])
            .recommendForUserSubset(indexed.select(USER_IDX), k + int(deepest))
            .select(F.lit(n).alias("_candidate"), USER_IDX, "recommendations")
            for n, model in enumerate(candidates)
        ],
    )
    item_col = cast(ALSModel, candidates[0].stages[-1]).getItemCol()
    pairs = raw.select("_candidate", USER_IDX, F.explode("recommendations").alias("rec")).select(
        "_candidate", USER_IDX, F.col("rec")[item_col].cast("double").alias(ITEM_IDX),
        F.col("rec.rating").alias("score"),
    )  # fmt: skip
    labelled = IndexToString(inputCol=ITEM_IDX, outputCol=i, labels=item_indexer.labels).transform(pairs)
    labelled = labelled.withColumn(i, F.col(i).cast(seen.schema[i].dataType))
    kept = labelled.join(indexed, USER_IDX).join(excluded, [u, i], "left_anti")
    rank = F.row_number().over(Window.partitionBy("_candidate", u).orderBy(F.col("score").desc(), F.col(i)))
    ordered = F.array_sort(F.collect_list(F.struct("rank", item_key(i).alias("key"))))
    lists = (
        kept.withColumn("rank", rank)
        .where(F.col("rank") <= k)
        .groupBy("_candidate", u)
        .agg(ordered.alias("l"))
        .select("_candidate", u, F.col("l.key").alias("prediction"))
    )
    spark = users.sparkSession
    per_candidate = spark.range(len(candidates)).select(F.col("id").cast("int").alias("_candidate"))
    labels = relevant.select(u, F.col("items").cast("array<double>").alias("label")).crossJoin(
        F.broadcast(per_candidate)
    )
    scored = labels.join(lists, ["_candidate", u], "left").select(
        "_candidate",
        "label",
        F.coalesce("prediction", F.array().cast("array<double>")).alias("prediction"),
    )
    rows = (
        scored.groupBy("_candidate")
        .agg(
            F.avg(ndcg_at(k)).alias("ndcg"),
            F.size(F.array_distinct(F.flatten(F.collect_list("prediction")))).alias("items"),
            (F.stddev_samp(ndcg_at(k)) / F.sqrt(F.count(F.lit(1)))).alias("se"),
        )
        .collect()
    )
    by_candidate = {
        int(r["_candidate"]): (float(r["ndcg"]), int(r["items"]), float(r["se"] or 0.0)) for r in rows
    }
    # no relevant validation pair at all: nothing to rank on (NaN, as RankingEvaluator's empty mean)
    return [by_candidate.get(n, (math.nan, 0, math.nan)) for n in range(len(candidates))]


def choose_explicit(
    rmses: Sequence[float],
    ndcgs: Sequence[float],
    bias_validation_rmse: float,
    metric: str,
    coverages: Sequence[float] = (),
    standard_errors: Sequence[float] = (),
    within: float = 0.0,
) -> int:
    """The winning candidate's index: the lowest validation RMSE ("rmse"), or ("ndcg_at_k") the highest
    validation NDCG@k among the candidates no worse than the bias baseline in validation RMSE (the
    lowest RMSE when none is, or none was ranked). NaN never wins; ties keep the first (the simpler).
    With ``within`` > 0, ``coverages`` and ``standard_errors`` (of each NDCG@k): the ranked candidates no
    more than ``within`` standard errors (the best's) below the best validation NDCG@k are tied, and the
    widest validation coverage among them wins (then the higher NDCG; 1: the one-standard-error rule)."""

    def low(n: int) -> float:
        return math.inf if math.isnan(rmses[n]) else rmses[n]

    by_rmse = min(range(len(rmses)), key=low)
    if metric == "rmse":
        return by_rmse
    ranked = [n for n in range(len(rmses)) if low(n) <= bias_validation_rmse and not math.isnan(ndcgs[n])]
    if not ranked:
        return by_rmse
    best = max(ranked, key=lambda n: ndcgs[n])
    if within <= 0 or len(coverages) != len(rmses) or len(standard_errors) != len(rmses):
        return best
    margin = within * (0.0 if math.isnan(standard_errors[best]) else standard_errors[best])
    near = [n for n in ranked if ndcgs[n] >= ndcgs[best] - margin]
    return max(near, key=lambda n: (coverages[n], ndcgs[n]))


def tune_explicit_candidates(
    cfg: RecommenderConfig,
    config: Config,
    train: DataFrame,
    validation: DataFrame,
    biases: BiasModel,
    bias_validation_rmse: float,
    item_regularization: float | None = None,
    stats: BiasStats | None = None,
) -> ExplicitChoice:
    """Every candidate of ``explicit_candidates`` fitted on train and scored by RMSE on the same validation
    pairs (user and item in train): the bias baseline, ALS on the residuals after the biases (biases +
    factors; regParam x residual std x each ``explicit_regparam_factors``, item biases of each
    ``item_variants``) and plain ALS on the ratings (``ml.parallelism`` fits at a time). With
    ``explicit_choice_metric`` "rmse" the lowest wins; with "ndcg_at_k" the candidates no worse than the
    bias baseline in validation RMSE are ranked on validation users (``validation_ndcgs``: one top-k
    pass for all of them) and the best NDCG@k wins, so the RMSE floor holds either way when "bias" is a
    candidate. The winner's train fit comes back with the choice: it is served as it is (not refitted
    on train + validation). ``stats`` (``bias_stats`` of train with ``biases.regularization``): the
    item-bias variants are projections of them, no more aggregation; the indexers are fitted once on
    train and shared by every candidate (the residual rows are train's rows: the same ids)."""
    ranking = cfg.explicit_choice_metric == "ndcg_at_k"
    stats = stats or bias_stats(train, cfg, (biases.regularization,))
    rating_std = stats.std  # std of the ratings: the unit of the item prior shift
    variants = item_variants(cfg) if "residual" in cfg.explicit_candidates else []

    def variant_fit(variant: tuple[float | None, float]) -> BiasModel:
        if variant == (None, 0.0):
            return biases
        reg = item_regularization if variant[0] is None else variant[0]
        return biases_from(stats, cfg, biases.regularization, reg, -variant[1] * rating_std)

    variant_biases = {v: variant_fit(v) for v in variants}
    residuals = {
        v: train.transform(with_residual_target(b, cfg)).persist(StorageLevel.MEMORY_AND_DISK)
        for v, b in variant_biases.items()
    }
    held_out_pairs = known_pairs(validation, train, cfg)
    held_out = {
        v: held_out_pairs.transform(with_bias_prediction(b, cfg)).persist(StorageLevel.MEMORY_AND_DISK)
        for v, b in variant_biases.items()
    }
    base_held_out = held_out_pairs.withColumn(BIAS_PREDICTION, F.lit(0.0))
    scales = {v: residual_scale(r) for v, r in residuals.items()}
    points: list[tuple[str, dict[str, float], tuple[float | None, float] | None]] = []
    one_point: list[dict[str, Any]] = []  # each candidate alone, as conf
    for v in variants:
        for p, unscaled in zip(scaled_grid(cfg, scales[v]), scaled_grid(cfg, 1.0), strict=True):
            for f in sorted(set(cfg.explicit_regparam_factors)):
                scaled = {**p, **({"regParam": p["regParam"] * f} if "regParam" in p else {})}
                points.append(("residual", scaled, v))
                one_point.append({
                    "explicit_candidates": ["residual"], "grid": {k: [x] for k, x in unscaled.items()},
                    "explicit_regparam_factors": [f], "explicit_item_bias_priors": [v[1]],
                    "explicit_item_bias_regularization": [] if v[0] is None else [v[0]],
                })  # fmt: skip
    if "plain" in cfg.explicit_candidates:
        for p in scaled_grid(cfg, 1.0):
            points.append(("plain", p, None))
            one_point.append({"explicit_candidates": ["plain"], "grid": {k: [x] for k, x in p.items()}})
    # fitted once: every candidate (and the bias baseline's ranking model) indexes train's ids alike
    indexers = fit_indexers(train, cfg, config.ml.seed) if points else None

    fitted: dict[int, tuple[PipelineModel, float]] = {}
    weights = list(dict.fromkeys(cfg.explicit_factor_weights))
    rmse_by_weight: dict[int, list[float]] = {}  # per residual fit: validation RMSE of each factor weight

    def fit_one(index: int) -> float:
        kind, params, variant = points[index]
        started = time.perf_counter()
        rows = residuals[variant] if variant is not None else train
        assert indexers is not None
        als = cast(ALS, als_pipeline(cfg, params, config.ml.seed).getStages()[-1])
        model = PipelineModel(stages=[*indexers.stages, als.fit(indexers.transform(rows))])
        fitted[index] = (model, time.perf_counter() - started)
        predicted = model.transform(held_out[variant] if variant is not None else base_held_out)
        # every factor weight of a residual fit in one aggregate (biases + w x factors; plain: w = 1)
        scaled = weights if variant is not None else [1.0]
        errors = [F.col(BIAS_PREDICTION) + F.lit(w) * F.col("prediction") - F.col(TARGET) for w in scaled]
        row = predicted.agg(*[F.sqrt(F.avg(e * e)) for e in errors]).head(1)[0]
        rmse_by_weight[index] = [float("nan") if v is None else float(v) for v in row]
        score = rmse_by_weight[index][0]
        runlog.event("fit_done", model=cfg.model_name, candidate=kind, params=params, metric=round(score, 5),
                     seconds=round(time.perf_counter() - started, 1))  # fmt: skip
        return score

    users = relevant = None
    try:
        scores: list[float] = []
        if points:
            first = residuals[points[0][2]] if points[0][2] is not None else train
            grid = (f"{cfg.model_name}/grid", als_pipeline(cfg, points[0][1], config.ml.seed), first)
            scores = _in_parallel(
                train.sparkSession, config.ml.parallelism, fit_one, list(range(len(points))), grid
            )
        del scores  # each point's RMSE at every factor weight: rmse_by_weight
        results: list[tuple[str, dict[str, float], float]] = []
        labels: list[str] = []
        models_by_result: list[tuple[PipelineModel, float] | None] = []
        kept_variants: list[tuple[float | None, float] | None] = []
        kept_weights: list[float] = []
        point_conf, one_point = one_point, []
        for n, (kind, params, variant) in enumerate(points):
            for w, score in zip(weights if variant is not None else [1.0], rmse_by_weight[n], strict=True):
                results.append((kind, params, score))
                labels.append(_candidate_label(kind, params, variant, w))
                models_by_result.append(fitted[n])
                kept_variants.append(variant)
                kept_weights.append(w)
                weighted = {"explicit_factor_weights": [w]} if variant is not None else {}
                one_point.append({**point_conf[n], **weighted})
        if "bias" in cfg.explicit_candidates:
            results.insert(0, ("bias", {}, bias_validation_rmse))
            labels.insert(0, "bias")
            one_point.insert(0, {"explicit_candidates": ["bias"]})
            models_by_result.insert(0, None)
            kept_variants.insert(0, None)
            kept_weights.insert(0, 1.0)
        ndcgs, coverages, errors = ([math.nan] * len(results) for _ in range(3))
        # ranked: the candidates no worse than the bias baseline in validation RMSE, in one top-k pass
        ranked = [n for n, (_, _, score) in enumerate(results) if score <= bias_validation_rmse]
        if ranking and ranked and len(results) > 1:  # one candidate alone: nothing to choose
            started = time.perf_counter()
            users = validation_sample(validation, cfg, config.ml.seed).persist(StorageLevel.MEMORY_AND_DISK)
            in_sample = validation.join(users, cfg.user_column, "left_semi")
            relevant = relevant_lists(in_sample, cfg, relevance_threshold(cfg, train, stats.bounds)).persist(
                StorageLevel.MEMORY_AND_DISK
            )

            def ranking_model(n: int) -> PipelineModel:
                kind, variant = results[n][0], kept_variants[n]
                if kind == "bias":
                    return bias_only_model(train, biases, cfg, config.ml.seed, indexers, materialize=False)
                model = cast(tuple[PipelineModel, float], models_by_result[n])[0]
                if variant is None:
                    return model
                return fold_biases(model, variant_biases[variant], cfg, False, kept_weights[n])

            catalog = stats.items.count() or 1  # train's items (materialized sums: no scan of train)
            rankings = validation_rankings([ranking_model(n) for n in ranked], cfg, users, train, relevant)
            for n, (ndcg, items, se) in zip(ranked, rankings, strict=True):
                ndcgs[n], coverages[n], errors[n] = ndcg, items / catalog, se
            runlog.event("ranking_done", model=cfg.model_name, candidates=len(ranked),
                         ndcg={labels[n]: round(ndcgs[n], 5) for n in ranked if not math.isnan(ndcgs[n])},
                         seconds=round(time.perf_counter() - started, 1))  # fmt: skip
    finally:
        for frame in [*residuals.values(), *held_out.values(), users, relevant]:
            if frame is not None:
                frame.unpersist()
    winner = choose_explicit(
        [r[2] for r in results], ndcgs, bias_validation_rmse, cfg.explicit_choice_metric, coverages, errors,
        cfg.explicit_ndcg_standard_errors,
    )  # fmt: skip
    kind, params, best = results[winner]
    model, seconds = models_by_result[winner] or (None, 0.0)
    item_reg, shift = kept_variants[winner] or (None, 0.0)
    scale = scales.get(kept_variants[winner] or (None, 0.0), scales[variants[0]] if variants else 1.0)
    return ExplicitChoice(
        kind, params, best, bias_validation_rmse, scale, results, model, seconds, cfg.explicit_choice_metric,
        ndcgs, coverages, labels, winner, item_reg, shift, rating_std, kept_weights[winner],
        {**one_point[winner], "explicit_choice_metric": "rmse"},
    )  # fmt: skip


def _candidate_label(
    kind: str,
    params: dict[str, float],
    variant: tuple[float | None, float] | None = None,
    factor_weight: float = 1.0,
) -> str:
    """'residual rank=16 regParam=0.0912' / 'bias': a candidate's name in reports and summaries (with its
    item-bias regularisation and prior shift when they are not the baseline's)."""
    extra: dict[str, float] = {}
    if variant is not None and variant != (None, 0.0):
        item_reg, shift = variant
        extra = {**({"item_reg": item_reg} if item_reg is not None else {}), "item_prior": 0.0 - shift}
    if factor_weight != 1.0:
        extra["factor_weight"] = factor_weight
    return " ".join([kind, *(f"{k}={v:.4g}" for k, v in sorted(params.items())), *(
        f"{k}={v:.4g}" for k, v in extra.items())])  # fmt: skip


def _flat(result: dict[str, Any], k: int) -> dict[str, float]:
    return {**result["by_k"][k], "coverage": result["coverage"]}


def list_depth(cfg: RecommenderConfig) -> int:
    """Length of the lists evaluated: the largest k of ``ks`` (and ``k``), so every metric@k sees k items."""
    return max(*cfg.ks, cfg.k)


def required_columns(cfg: RecommenderConfig) -> list[str]:
    """What the mode needs: user, item, its target column, time, and the date column when configured."""
    return [
        cfg.user_column,
        cfg.item_column,
        target_column(cfg),
        cfg.time_column,
        *([cfg.date_column] if cfg.date_column else []),
    ]


def check_input(df: DataFrame, cfg: RecommenderConfig) -> None:
    """Before any fit: each column the mode needs exists (the error names its setting) and the target
    (rating or strength) is numeric; a one-line ConfigError otherwise."""
    settings = {
        "user_column": cfg.user_column,
        "item_column": cfg.item_column,
        ("strength_column" if cfg.mode == "implicit" else "rating_column"): target_column(cfg),
        "time_column": cfg.time_column,
        **({"date_column": cfg.date_column} if cfg.date_column else {}),
    }
    missing = [f"ml.recommender.{k}={v}" for k, v in settings.items() if v not in df.columns]
    if missing:
        raise ConfigError(
            f"{cfg.input_table} has no column for {', '.join(missing)} (the table has: "
            f"{', '.join(df.columns)})"
        )
    target = target_column(cfg)
    kind = df.schema[target].dataType
    if not isinstance(kind, T.NumericType):
        setting = "strength_column" if cfg.mode == "implicit" else "rating_column"
        raise ConfigError(f"ml.recommender.{setting}: {target} must be numeric, is {kind.simpleString()}")


def _snapshot_tag(day: dt.date | None) -> str:
    return day.isoformat() if day is not None else "all"


def check_not_degenerate(result: dict[str, Any], baseline: dict[str, Any], cfg: RecommenderConfig) -> None:
    """JobFailed when every ranking metric of the model is exactly 0 at every k while the baseline's
    are not: the model never hit a held-out item, which real data only does when ids do not match."""
    values = [v for by_k in result["by_k"].values() for v in by_k.values()]
    base = [v for by_k in baseline["by_k"].values() for v in by_k.values()]
    if all(v == 0 for v in values) and any(v > 0 for v in base):
        raise JobFailed(
            f"recommender: every ranking metric of the ALS model is 0 at k = {sorted(result['by_k'])} "
            f"while the popularity baseline's precision@{cfg.k} is "
            f"{baseline['by_k'][cfg.k]['precision_at_k']:.4g}: no recommended item ever matched a "
            f"held-out one; check {cfg.user_column}/{cfg.item_column} of {cfg.input_table}. Not registered."
        )


@dataclass(frozen=True)
class RecommenderData:
    """The snapshot of one recommender training run, split per user by time (cached)."""

    day: dt.date | None  # the snapshot date (None: the whole table is one snapshot)
    split: DataFrame  # the snapshot's pairs with ``_target`` and ``split``
    counts: dict[str, int]  # pairs per split

    @property
    def train(self) -> DataFrame:
        return self.split.where(F.col(SPLIT) == TRAIN)

    @property
    def validation(self) -> DataFrame:
        return self.split.where(F.col(SPLIT) == VALIDATION)

    @property
    def test(self) -> DataFrame:
        return self.split.where(F.col(SPLIT) == TEST)

    @property
    def fit_on(self) -> DataFrame:
        """The final fit's rows: train + validation."""
        return self.split.where(F.col(SPLIT) != TEST)


def prepare_recommender_data(run: lifecycle.TrainingRun, cfg: RecommenderConfig) -> RecommenderData:
    """The newest snapshot on or before the run date, split per user by time and cached; JobFailed when
    a split is empty."""
    check_input(run.pinned.df, cfg)
    day = snapshot_date(run.pinned.df, cfg, run.run_date)
    snapshot = run.pinned.df if day is None else run.pinned.df.where(F.col(cfg.date_column) == F.lit(day))
    split = run.cache(
        snapshot.transform(with_target(cfg)).transform(
            with_latest_per_user_split(
                cfg.user_column, cfg.time_column, cfg.item_column, cfg.test_items, cfg.validation_items,
                cfg.min_user_items,
            )
        )
    )  # fmt: skip
    counts = {r[SPLIT]: int(r["n"]) for r in split.groupBy(SPLIT).agg(F.count(F.lit(1)).alias("n")).collect()}
    if any(counts.get(s, 0) == 0 for s in (TRAIN, VALIDATION, TEST)):
        raise JobFailed(
            f"recommender split of snapshot {day} is {counts}: too few users with {cfg.min_user_items}+ items"
        )
    return RecommenderData(day, split, counts)


@dataclass(frozen=True)
class AlsTuning:
    """What tuning chose: the ALS params, the grid tried, the bias baseline and the explicit choice."""

    best: dict[str, float]  # the chosen ALS params
    # Grid points and their validation metric (the explicit candidates also name their model kind).
    tuning: Sequence[tuple[Mapping[str, Any], float]]
    bias: dict[str, Any]  # explicit mode: the bias baseline's regularisation and tuning (test RMSE later)
    choice: ExplicitChoice | None  # explicit mode with residuals: the candidate chosen on validation


@dataclass(frozen=True)
class RecommenderResult:
    """The recommender of one run: its tuning, the served model's test ranking beside popularity's (and
    RMSE beside the bias baseline's in explicit mode), and its registry candidate."""

    data: RecommenderData
    best: dict[str, float]  # the chosen ALS params
    # Grid points and their validation metric (the explicit candidates also name their model kind).
    tuning: Sequence[tuple[Mapping[str, Any], float]]
    bias: dict[str, Any]  # explicit mode: the bias baseline's regularisation, tuning and test RMSE
    choice: ExplicitChoice | None  # explicit mode with residuals: the candidate chosen on validation
    relevant_from: float | None  # the rating from which a held-out pair is relevant (None: any strength)
    ranking: dict[str, Any]  # the model's ``ranking_report`` on test
    baseline: dict[str, Any]  # popularity's ``ranking_report`` on the same test users
    metrics: dict[str, float]  # the candidate's metrics (at ``k``, with RMSE in explicit mode)
    candidate: lifecycle.Candidate


@dataclass(frozen=True)
class AlsRecommender:
    """The ALS recommender: tuned on train against validation (in explicit mode beside a bias baseline),
    fitted for serving, and tested once beside the popularity baseline."""

    cfg: RecommenderConfig

    def tune(self, run: lifecycle.TrainingRun, data: RecommenderData) -> AlsTuning:
        """The ALS params to serve, chosen on validation (in explicit mode beside the bias baseline)."""
        cfg, config = self.cfg, run.config
        train, validation = data.train, data.validation
        bias: dict[str, Any] = {}
        choice: ExplicitChoice | None = None
        stats: BiasStats | None = None
        if cfg.mode == "explicit":  # the bias baseline: regularisation chosen on validation
            # the sums once for the whole regularisation grid; every bias model below is a projection
            stats = bias_stats(train, cfg, cfg.bias_regularization)
            bias["regularization"], bias["item_regularization"], bias["tuning"] = tune_biases(
                cfg, train, validation, stats
            )
        tuning: Sequence[tuple[Mapping[str, Any], float]]
        if cfg.mode == "implicit":
            best, tuning = tune_implicit(cfg, config, train, validation)
        elif cfg.explicit_residuals and stats is not None:
            bias_validation_rmse = min(v for _, _, v in bias["tuning"])
            choice = tune_explicit_candidates(
                cfg,
                config,
                train,
                validation,
                biases_from(stats, cfg, bias["regularization"], bias["item_regularization"]),
                bias_validation_rmse,
                bias["item_regularization"],
                stats,
            )
            best, bias["regparam_scale"] = choice.params, choice.scale
            tuning = [
                ({"model": label, "validation ndcg@k": ndcg}, score)
                for label, ndcg, (_, _, score) in zip(choice.labels, choice.validation_ndcg, choice.results,
                                                      strict=True)
            ]  # fmt: skip
            runlog.event("explicit_choice", model=cfg.model_name, chosen=choice.labels[choice.chosen],
                         params=best, validation_rmse=round(choice.validation_rmse, 5),
                         bias_validation_rmse=round(bias_validation_rmse, 5))  # fmt: skip
        else:
            best, tuning = tune_explicit(cfg, config, train)
        return AlsTuning(best, tuning, bias, choice)

    def fit(self, run: lifecycle.TrainingRun, data: RecommenderData) -> RecommenderResult:
        """Tune, fit the served model, test it beside the baselines, and make the candidate."""
        cfg, seed = self.cfg, run.seed
        u, i = cfg.user_column, cfg.item_column
        train, test, fit_on = data.train, data.test, data.fit_on
        tuned = self.tune(run, data)
        best, tuning, bias, choice = tuned.best, tuned.tuning, tuned.bias, tuned.choice
        explicit = cfg.mode == "explicit"
        # the bias baseline refitted on train + validation (its sums once; the served variant projects them)
        final_stats = bias_stats(fit_on, cfg, (bias["regularization"],)) if explicit else None
        final_biases = (
            biases_from(final_stats, cfg, bias["regularization"], bias["item_regularization"])
            if final_stats is not None
            else None
        )
        fit_started = time.perf_counter()
        final = als_pipeline(cfg, best, seed)
        # the rows whose ids the served model knows (its indexers' and factors' rows)
        known_from = fit_rows = fit_on
        if choice is not None and choice.kind == "bias" and final_biases is not None:
            model = bias_only_model(fit_on, final_biases, cfg, seed)
        elif choice is not None and choice.model is not None and final_biases is not None:
            # The winner's train fit, served without a second ALS fit on train + validation (that refit
            # doubled the job's ALS time for little: validation is one pair per user); the biases are
            # those of train + validation (aggregations), so a user's validation rating still counts.
            known_from, fit_rows = train, train
            model = choice.model
            if choice.kind == "residual":
                # the winner's item-bias variant (the baseline's when it has none of its own)
                served_biases = final_biases
                variant = (choice.item_regularization, choice.item_prior_shift)
                if variant != (None, 0.0) and final_stats is not None:
                    item_reg = choice.item_regularization
                    served_biases = biases_from(
                        final_stats, cfg, bias["regularization"],
                        bias["item_regularization"] if item_reg is None else item_reg,
                        -choice.item_prior_shift * choice.rating_std,
                    )  # fmt: skip
                fit_rows = train.transform(with_residual_target(served_biases, cfg))
                model = fold_biases(model, served_biases, cfg, factor_weight=choice.factor_weight)
            fit_started -= choice.fit_seconds
        else:
            model = final.fit(fit_on)
        fit_seconds = time.perf_counter() - fit_started
        runlog.event(
            "fit_done", model=cfg.model_name, point="final", params=best, seconds=round(fit_seconds, 1)
        )
        models.record_fit(
            models.FitRecord(
                cfg.model_name, best, final, fit_rows, fit_seconds, (fit_seconds,), fit_seconds, 1
            )
        )
        test_users = test.select(u).distinct()
        relevant_from = relevance_threshold(cfg, fit_on, final_stats.bounds if final_stats else None)
        relevant = run.cache(relevant_lists(test, cfg, relevant_from))
        catalog = fit_on.select(i).distinct().count()
        depth = list_depth(cfg)
        recs = run.cache(recommend(model, test_users, fit_on, depth, cfg))
        ranking = ranking_report(recs, relevant, cfg, catalog)
        baseline_recs = popularity_baseline(fit_on, test_users, fit_on, depth, cfg)
        baseline = ranking_report(baseline_recs, relevant, cfg, catalog)
        check_not_degenerate(ranking, baseline, cfg)
        metrics = _flat(ranking, cfg.k)
        promotion = cfg.promotion
        if final_biases is not None:
            predicted = model.transform(test)
            metrics["rmse"] = RegressionEvaluator(labelCol=TARGET, metricName="rmse").evaluate(predicted)
            # the same test pairs as ALS's (both ids known to the model)
            scoreable = known_pairs(test, known_from, cfg).transform(with_bias_prediction(final_biases, cfg))
            bias["rmse"] = rmse(scoreable, BIAS_PREDICTION)
            if choice is not None:
                # the floor of explicit mode, on validation (where the choice was made): no worse than the
                # bias baseline on the same pairs; the test figures above are reported as they are
                metrics["validation_rmse"] = choice.validation_rmse
                floor = choice.bias_validation_rmse
                key = "validation_rmse"
            else:  # plain ALS without a validation choice: a lower test RMSE than the baseline (strictly)
                floor, key = math.nextafter(bias["rmse"], 0.0), "rmse"
            floors = {**promotion.floors, key: min(floor, promotion.floors.get(key, math.inf))}
            promotion = replace(promotion, floors=floors)

        def evaluate(other: PipelineModel) -> dict[str, float]:
            out = _flat(
                ranking_report(recommend(other, test_users, fit_on, depth, cfg), relevant, cfg, catalog),
                cfg.k,
            )
            if cfg.mode == "explicit":
                out["rmse"] = RegressionEvaluator(labelCol=TARGET, metricName="rmse").evaluate(
                    other.transform(test)
                )
            return out

        candidate = lifecycle.Candidate(
            name=cfg.model_name,
            model=model,
            metrics=metrics,
            evaluate=evaluate,
            promotion=promotion,
            baseline=_flat(baseline, cfg.k),
            params={
                "mode": cfg.mode,
                "k": cfg.k,
                "max_iter": cfg.max_iter,
                **{f"tuned.{k}": v for k, v in best.items()},
                **(
                    {
                        "bias_regularization": bias["regularization"],
                        "item_bias_regularization": bias["item_regularization"],
                        "explicit_residuals": cfg.explicit_residuals,
                    }
                    if explicit
                    else {}
                ),
                **({"regparam_scale": bias["regparam_scale"]} if "regparam_scale" in bias else {}),
                **({"explicit_model": choice.kind} if choice is not None else {}),
            },
            tags={"mode": cfg.mode, "snapshot": _snapshot_tag(data.day)},
        )
        return RecommenderResult(
            data, best, tuning, bias, choice, relevant_from, ranking, baseline, metrics, candidate
        )


class RecommenderTrainingSpec(lifecycle.TrainingSpec[RecommenderResult]):
    """gold/user_item_interactions → the ALS recommender on one snapshot, beside popularity."""

    experiment = "recommender"

    def __init__(self, cfg: RecommenderConfig) -> None:
        self.cfg = cfg
        self.input_table = cfg.input_table
        self.recommender = AlsRecommender(cfg)

    def train(self, run: lifecycle.TrainingRun) -> RecommenderResult:
        config = run.config
        run.spark.sparkContext.setCheckpointDir(
            join_location(config.lakehouse.root, config.ml.checkpoint_dir)
        )
        return self.recommender.fit(run, prepare_recommender_data(run, self.cfg))

    def candidates(self, result: RecommenderResult) -> list[lifecycle.Candidate]:
        return [result.candidate]

    def report(self, run: lifecycle.TrainingRun, result: RecommenderResult) -> HtmlReport:
        return recommender_report(run, result)

    def run_params(self, result: RecommenderResult) -> dict[str, Any]:
        return {"snapshot": _snapshot_tag(result.data.day), "mode": self.cfg.mode}

    def run_metrics(self, result: RecommenderResult) -> dict[str, float]:
        ranking, baseline, bias, choice = result.ranking, result.baseline, result.bias, result.choice
        out = {f"baseline.{k}": float(v) for k, v in _flat(baseline, self.cfg.k).items()}
        out.update(
            {f"{name}.at_{kk}.{m}": v for name, res in (("als", ranking), ("baseline", baseline))
             for kk, by in res["by_k"].items() for m, v in by.items()}
        )  # fmt: skip
        out.update({f"rows.{s}": float(n) for s, n in result.data.counts.items()})
        out["als.coverage"], out["baseline.coverage"] = ranking["coverage"], baseline["coverage"]
        if "rmse" in bias:
            out["bias_baseline.rmse"] = bias["rmse"]
        if choice is not None:
            out["bias_baseline.validation_rmse"] = choice.bias_validation_rmse
        return out

    def summary(
        self, result: RecommenderResult, outcomes: Sequence[lifecycle.TrainingOutcome]
    ) -> dict[str, Any]:
        (outcome,) = outcomes
        cfg, metrics, bias, choice = self.cfg, result.metrics, result.bias, result.choice
        ranking, baseline, counts = result.ranking, result.baseline, result.data.counts
        return {
            "model": outcome.name,
            "version": outcome.version,
            "promoted": outcome.promoted,
            "reason": outcome.reason,
            "mode": cfg.mode,
            "snapshot": _snapshot_tag(result.data.day),
            "precision_at_k": round(metrics["precision_at_k"], 4),
            "baseline_precision_at_k": round(_flat(baseline, cfg.k)["precision_at_k"], 4),
            "ndcg_at_k": round(metrics["ndcg_at_k"], 4),
            "baseline_ndcg_at_k": round(_flat(baseline, cfg.k)["ndcg_at_k"], 4),
            "coverage": round(ranking["coverage"], 4),
            "baseline_coverage": round(baseline["coverage"], 4),
            "by_k": {
                kk: {
                    name: {m: round(res["by_k"][kk][m], 4) for m in ("precision_at_k", "ndcg_at_k")}
                    for name, res in (("als", ranking), ("popularity", baseline))
                }
                for kk in sorted(ranking["by_k"])
            },
            **(
                {
                    "rmse": round(metrics["rmse"], 4),
                    "bias_baseline_rmse": round(bias["rmse"], 4),
                    "bias_regularization": bias["regularization"],
                    "item_bias_regularization": bias["item_regularization"],
                    "explicit_residuals": cfg.explicit_residuals,
                }
                if "rmse" in bias
                else {}
            ),
            **(
                {
                    "explicit_model": choice.kind,
                    "validation_rmse": round(choice.validation_rmse, 4),
                    "bias_validation_rmse": round(choice.bias_validation_rmse, 4),
                    "validation_rmse_by_candidate": {
                        label: round(score, 4)
                        for label, (_, _, score) in zip(choice.labels, choice.results, strict=True)
                    },
                    "explicit_choice_metric": choice.metric,
                    "explicit_choice": choice.labels[choice.chosen],
                    "validation_ndcg_by_candidate": {
                        label: round(ndcg, 4)
                        for label, ndcg in zip(choice.labels, choice.validation_ndcg, strict=True)
                        if not math.isnan(ndcg)
                    },
                    "validation_coverage_by_candidate": {
                        label: round(coverage, 4)
                        for label, coverage in zip(choice.labels, choice.validation_coverage, strict=True)
                        if not math.isnan(coverage)
                    },
                    # the conf of the winner alone (scripts/bench_models.py's one-point phase)
                    "explicit_one_point": choice.one_point,
                }
                if choice is not None
                else {}
            ),
            "rows_train": counts[TRAIN],
            "rows_validation": counts[VALIDATION],
            "rows_test": counts[TEST],
        }


def train_recommender(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
    """gold interactions snapshot (pinned) → tuned ALS vs popularity → MLflow run, registry, promotion gate,
    as of the run date ``dates.last``."""
    return lifecycle.run_training(spark, config, dates, RecommenderTrainingSpec(config.ml.recommender))


def recommender_report(run: lifecycle.TrainingRun, result: RecommenderResult) -> HtmlReport:
    """Metric table vs popularity, metrics at every k, precision/recall/NDCG@k curves, coverage, tuning
    grid; in explicit mode the bias baseline's RMSE beside ALS's and its regularisation search."""
    cfg, relevant_from, metrics = run.config.ml.recommender, result.relevant_from, result.metrics
    ranking, baseline, bias, choice = result.ranking, result.baseline, result.bias, result.choice
    relevance = "any positive strength" if relevant_from is None else f"rating >= {relevant_from:.4g}"
    report = HtmlReport(
        f"ALS recommender — {cfg.model_name} ({cfg.mode})",
        f"run date {run.run_date}, snapshot {_snapshot_tag(result.data.day)} of {cfg.input_table} "
        f"v{run.pinned.version}; "
        f"a held-out pair is relevant with {relevance}",
    )
    k = cfg.k
    report.add_table(
        f"Test users' held-out pairs, top-{k} (already-seen items excluded)",
        [
            {"model": "ALS (candidate)", **metrics},
            {"model": "popularity baseline", **_flat(baseline, k)},
        ],
    )
    rows = [
        {
            "k": kk,
            "model": name,
            "precision": m["precision_at_k"],
            "recall": m["recall_at_k"],
            "ndcg": m["ndcg_at_k"],
        }
        for name, res in (("ALS", ranking), ("popularity", baseline))
        for kk, m in sorted(res["by_k"].items())
    ]
    import pandas as pd

    report.add_table(
        "Ranking at every k (precision, recall, NDCG, MAP) and catalogue coverage of the top-k lists",
        [
            {
                "k": kk,
                "model": name,
                **{m: res["by_k"][kk][m] for m in res["by_k"][kk]},
                "coverage": res["coverage"],
            }
            for kk in sorted(ranking["by_k"])
            for name, res in (("ALS", ranking), ("popularity", baseline))
        ],
    )
    if choice is not None:
        floor = choice.bias_validation_rmse
        beaten = any(score <= floor for kind, _, score in choice.results if kind != "bias")
        verdict = {
            "bias": "the bias baseline itself: "
            + ("it ranked best on validation" if beaten else "no ALS candidate had a lower validation RMSE"),
            "residual": "ALS on the residuals after the biases (biases + factors)",
            "plain": "plain ALS on the ratings",
        }[choice.kind]
        how = (
            "validation RMSE"
            if choice.metric == "rmse"
            else "validation NDCG@k among the candidates no worse than the bias baseline in validation RMSE"
        )
        if choice.metric != "rmse" and cfg.explicit_ndcg_standard_errors > 0:
            how += (
                f" (those within {cfg.explicit_ndcg_standard_errors:g} standard error(s) of the best NDCG@k "
                "tied: the widest validation catalogue coverage among them)"
            )
        report.add_text(
            f"Explicit model chosen on {how}: {verdict}, {choice.labels[choice.chosen]} (validation RMSE "
            f"{choice.validation_rmse:.4f}, bias baseline {choice.bias_validation_rmse:.4f}); served as "
            "fitted on train, its biases refitted on train + validation. The promotion floor is the bias "
            "baseline's validation RMSE."
        )
        report.add_table(
            "Explicit candidates: validation RMSE on the same pairs (user and item in train), lower is "
            "better",
            [
                {"candidate": label, "validation rmse": score, "validation ndcg@k": ndcg,
                 "validation coverage": coverage, "chosen": "yes" if n == choice.chosen else ""}
                for n, (label, ndcg, coverage, (_, _, score)) in enumerate(zip(
                    choice.labels, choice.validation_ndcg, choice.validation_coverage, choice.results,
                    strict=True))
            ],
        )  # fmt: skip
    if bias and "rmse" in bias:
        how = {
            "bias": "the bias baseline (chosen on validation)",
            "residual": "ALS on the residuals after the biases (biases + factors)",
            "plain": "plain ALS",
        }[choice.kind if choice is not None else "plain"]
        report.add_table(
            "Rating prediction on the test pairs both can score (RMSE, lower is better; ALS must beat the "
            "bias baseline to be promoted)",
            [
                {"model": f"{how} (candidate)", "rmse": metrics["rmse"]},
                {
                    "model": "bias baseline: global mean + user and item biases",
                    "rmse": bias["rmse"],
                    "regularization": bias["regularization"],
                    "item regularization": bias["item_regularization"],
                },
            ],
        )
        report.add_table(
            "Bias baseline: validation RMSE per regularisation",
            [
                {"regularization": r, "item regularization": ir, "validation rmse": v}
                for r, ir, v in bias["tuning"]
            ],
        )
        if "regparam_scale" in bias:
            report.add_text(
                f"regParam values of the grid are multiples of the training residuals' standard deviation "
                f"({bias['regparam_scale']:.4g}); the tuning table shows the scaled values."
            )
    report.add_figure("Precision, recall and NDCG at k", plot_ranking_curves(pd.DataFrame(rows)))
    report.add_table(
        "Splits (pairs)", [{"split": s, "pairs": n} for s, n in sorted(result.data.counts.items())]
    )
    if cfg.mode == "implicit":
        metric = "validation precision@k"
    elif choice is not None:
        metric = "validation RMSE (candidates)"
    else:
        metric = "validation RMSE (TrainValidationSplit)"
    report.add_table(
        f"Tuning grid ({metric}); best {result.best}",
        [{**params, metric: value} for params, value in result.tuning],
    )
    return report


def score_recommendations(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
    """Top-k per user for each snapshot of ``dates``, minus purchased items, into gold/recommendations
    (without a date column: the whole table, as the snapshot of ``dates.last``)."""
    first, last = dates.first, dates.last
    cfg = config.ml.recommender
    lake = Lakehouse(spark, config)
    champion = scoring.load_champion(config, cfg.model_name, "commerce.train_recommender")
    source = lifecycle.table_ref(lake, cfg.input_table)
    if not source.exists():
        raise JobFailed(f"{cfg.input_table} does not exist: run commerce.build_features first")
    version = source.version()
    if cfg.date_column:
        rows = source.read(
            version=version, where=[(cfg.date_column, ">=", first), (cfg.date_column, "<=", last)]
        )
        days = rows.select(cfg.date_column).distinct().count()
        if days == 0:
            raise JobFailed(f"{cfg.input_table} has no snapshot in [{first}, {last}]")
    else:
        rows, days = source.read(version=version).withColumn("_as_of_date", F.lit(last)), 1
    date = cfg.date_column or "_as_of_date"
    purchased = rows.where(F.col(cfg.purchased_column) > 0) if cfg.purchased_column else rows

    def scores() -> DataFrame:
        recs = recommend(champion.model, rows, purchased, cfg.k, cfg, by=[date])
        return recs.select(
            F.col(cfg.user_column).alias("user_id"),
            F.col("rank").cast("int").alias("rank"),
            F.col(cfg.item_column).alias("item_id"),
            F.col("score").cast("double").alias("score"),
            F.col(date).alias("as_of_date"),
        )

    def drift() -> dict[str, Any]:
        # The model learnt from one snapshot: that snapshot is the reference.
        snapshot = champion.tags.get("snapshot", "all")
        where = [] if snapshot == "all" else [(cfg.date_column, "=", dt.date.fromisoformat(snapshot))]
        return scoring.record_drift(
            lake, champion, cfg.input_table, rows, version, (first, last), [target_column(cfg)],
            [cfg.item_column], config.ml.drift, reference_where=where,
        )  # fmt: skip

    summary = scoring.write_scores(
        lake,
        cfg.score_table,
        recommendations_schema(rows.schema[cfg.user_column].dataType, rows.schema[cfg.item_column].dataType),
        scores,
        (first, last),
        champion,
        version,
        input_days=days,
        checks=drift,
    )
    return lifecycle.scoring_result(summary)


def _in_parallel(
    spark: SparkSession,
    parallelism: int,
    fit_one: Callable[[Any], float],
    points: Sequence[Any],
    record: tuple[str, Pipeline, DataFrame] | None = None,
) -> list[float]:
    """``fit_one`` of every grid point, ``parallelism`` at a time (threads sharing the session's jobs).

    ``record`` (name, a pipeline, its rows) names the tuning in ``models.FIT_RECORDS`` (kept only when
    scripts/bench_models.py collects them): each point's seconds (fit + validation) and the wall time."""
    started, seconds = time.perf_counter(), [0.0] * len(points)

    def timed(index: int) -> float:
        point_started = time.perf_counter()
        score = fit_one(points[index])
        seconds[index] = time.perf_counter() - point_started
        return score

    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        scores = list(pool.map(inheritable_thread_target(spark)(timed), range(len(points))))
    if record is not None:
        name, pipeline, rows = record
        wall, workers = time.perf_counter() - started, max(1, min(parallelism, len(points)))
        models.record_fit(
            models.FitRecord(name, {}, pipeline, rows, max(seconds), tuple(seconds), wall, workers)
        )
    return scores
