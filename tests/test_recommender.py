"""ALS recommender end to end on a synthetic interactions snapshot with known taste structure."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import mlflow
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from lakeml.config import Config, load_config
from lakeml.domains.commerce.features import USER_ITEM_INTERACTIONS_SCHEMA
from lakeml.domains.commerce.recommender import (
    RECOMMENDATIONS_SCHEMA,
    popularity_baseline,
    score_recommendations,
    train_recommender,
    tune_implicit,
    validation_sample,
    with_target,
)
from lakeml.errors import JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.ml import tracking
from lakeml.ml.splits import SPLIT, TRAIN, VALIDATION, with_latest_per_user_split
from lakeml.steps import DateRange
from tests.browser import assert_renders_with_mlflow_headlines
from tests.ml_data import user_item_interactions

DAY = dt.date(2026, 1, 31)
SMALL = ["ml.recommender.max_iter=5", "ml.recommender.grid={rank: [8], regParam: [0.1], alpha: [20.0]}"]


def _config(root: Path, *extra: str) -> Config:
    return load_config("test", [f"lakehouse.root={root}", *SMALL, *extra])


@pytest.fixture(scope="module")
def trained(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict]:
    config = _config(tmp_path_factory.mktemp("als"))
    table = Lakehouse(spark, config).table("gold", "user_item_interactions")
    table.create(USER_ITEM_INTERACTIONS_SCHEMA, ["as_of_date"]).append(
        user_item_interactions(spark, 300, 25, DAY)
    )
    return config, train_recommender(spark, config, DateRange.single(DAY)).details


def test_als_beats_popularity_and_becomes_champion(trained: tuple[Config, dict]) -> None:
    config, summary = trained
    assert summary["promoted"] and summary["version"] == "1"
    # users prefer one category each: a per-user model must clearly beat global popularity
    assert summary["precision_at_k"] >= 2 * summary["baseline_precision_at_k"] > 0
    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    champion = mlflow.MlflowClient().get_model_version_by_alias(config.ml.recommender.model_name, "champion")
    assert str(champion.version) == "1" and champion.tags["mode"] == "implicit"
    html = Path(summary["report"]).read_text()
    assert "popularity baseline" in html and html.count("data:image/png;base64,") == 1


def test_scoring_top_k_without_purchases_and_idempotent(
    spark: SparkSession, trained: tuple[Config, dict]
) -> None:
    config, _ = trained
    cfg = config.ml.recommender
    lake = Lakehouse(spark, config)
    first = score_recommendations(spark, config, DateRange.single(DAY)).details
    recs = lake.table("gold", "recommendations")
    assert (
        recs.schema() == RECOMMENDATIONS_SCHEMA
        or recs.schema().fieldNames() == RECOMMENDATIONS_SCHEMA.fieldNames()
    )
    df = recs.read()
    users = lake.table("gold", "user_item_interactions").read().select("user_id").distinct().count()
    assert first["rows"] == df.count() == users * cfg.k
    per_user = df.groupBy("user_id").agg(
        F.count("*").alias("n"), F.countDistinct("item_id").alias("items"), F.max("rank").alias("top")
    )
    assert (
        per_user.where((F.col("n") != cfg.k) | (F.col("items") != cfg.k) | (F.col("top") != cfg.k)).count()
        == 0
    )
    purchased = (
        lake.table("gold", "user_item_interactions")
        .read()
        .where("purchases > 0")
        .select("user_id", "item_id")
    )
    assert df.join(purchased, ["user_id", "item_id"]).count() == 0
    assert df.select("model_name", "model_version").distinct().collect() == [(cfg.model_name, "1")]
    # the scored snapshot is the one the champion learnt from: its drift rows say no drift at all
    snapshot = (
        lake.table("gold", "user_item_interactions").read().where(F.col(cfg.date_column) == DAY).count()
    )
    drift = lake.table("ops", "drift").read()
    assert sorted(
        tuple(r)
        for r in drift.select("feature", "kind", "psi", "level", "reference_rows", "current_rows").collect()
    ) == [
        (cfg.item_column, "categorical", 0.0, "ok", snapshot, snapshot),
        (cfg.strength_column, "numeric", 0.0, "ok", snapshot, snapshot),
    ]
    assert (first["drift_max_psi"], first["drift_alerts"]) == (0.0, 0)
    version = recs.version()
    assert score_recommendations(spark, config, DateRange.single(DAY)).details["noop"] is True
    assert recs.version() == version


def test_popularity_baseline_excludes_seen_items(spark: SparkSession, config: Config) -> None:
    cfg = config.ml.recommender
    train = spark.createDataFrame(
        [("a", "x"), ("b", "x"), ("c", "x"), ("a", "y"), ("b", "y"), ("c", "z")],
        "user_id string, item_id string",
    )
    out = popularity_baseline(train, train.select("user_id"), train, 2, cfg)
    got = {(r.user_id, r.rank, r.item_id) for r in out.collect()}
    assert got == {("a", 1, "z"), ("b", 1, "z"), ("c", 1, "y")}


def test_popularity_baseline_gives_each_user_k_unseen_items_however_many_it_has_seen(
    spark: SparkSession, config: Config
) -> None:
    cfg = config.ml.recommender
    # Popularity (distinct users): i1 6, i2 5, i3 4, i4 3, i5 2, i6 1.
    train = spark.createDataFrame(
        [(f"t{n}", f"i{item}") for item in range(1, 7) for n in range(7 - item)],
        "user_id string, item_id string",
    )
    seen = spark.createDataFrame(
        [("heavy", "i1"), ("heavy", "i2"), ("heavy", "i3"), ("heavy", "i9"), ("light", "i2")],
        "user_id string, item_id string",
    )
    users = spark.createDataFrame([("heavy",), ("light",), ("new",)], "user_id string")
    out = popularity_baseline(train, users, seen, 2, cfg)
    rows = [
        ("heavy", 1, "i4", 3.0), ("heavy", 2, "i5", 2.0),  # saw the top three (and an unknown item)
        ("light", 1, "i1", 6.0), ("light", 2, "i3", 4.0),
        ("new", 1, "i1", 6.0), ("new", 2, "i2", 5.0),  # saw nothing
    ]  # fmt: skip
    expected = spark.createDataFrame(rows, "user_id string, rank int, item_id string, score double")
    assertDataFrameEqual(out, expected, checkRowOrder=False)


def test_explicit_mode_reports_rmse(spark: SparkSession, tmp_path: Path) -> None:
    config = _config(tmp_path, "ml.recommender.mode=explicit", "ml.recommender.model_name=als-explicit")
    Lakehouse(spark, config).table("gold", "user_item_interactions").create(
        USER_ITEM_INTERACTIONS_SCHEMA, ["as_of_date"]
    ).append(user_item_interactions(spark, 150, 25, DAY))
    summary = train_recommender(spark, config, DateRange.single(DAY)).details
    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    run = mlflow.get_run(mlflow.MlflowClient().get_model_version("als-explicit", summary["version"]).run_id)
    rmse = run.data.metrics["als-explicit.rmse"]
    assert 0 < rmse < 2.0  # ratings are 2 or 5 by category: a useful model is well inside that spread


def test_no_snapshot_before_run_date_is_a_clear_error(
    spark: SparkSession, trained: tuple[Config, dict]
) -> None:
    config, _ = trained
    with pytest.raises(JobFailed, match="no snapshot on or before 2025-12-31"):
        train_recommender(spark, config, DateRange.single(dt.date(2025, 12, 31)))


def _numeric_ids(df: DataFrame) -> DataFrame:
    """The same interactions with integer user ids and long item ids, numbered so that their text
    sorts like the string ids (StringIndexer breaks frequency ties by text: same indexes, same model)."""
    return df.withColumn("user_id", (F.substring("user_id", 3, 5).cast("int") + 100_000)).withColumn(
        "item_id", (F.substring("item_id", 3, 4).cast("long") + 10_000)
    )


def _run_metrics(config: Config, summary: dict) -> dict[str, float]:
    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    name = config.ml.recommender.model_name
    version = mlflow.MlflowClient().get_model_version(name, summary["version"])
    return mlflow.get_run(version.run_id).data.metrics


def test_integer_ids_give_the_string_ids_metrics_and_typed_recommendations(
    spark: SparkSession, trained: tuple[Config, dict], tmp_path: Path
) -> None:
    string_config, string_summary = trained
    config = _config(tmp_path)
    schema = T.StructType(
        [
            T.StructField(
                f.name,
                {"user_id": T.IntegerType(), "item_id": T.LongType()}.get(f.name, f.dataType),
                f.nullable,
            )
            for f in USER_ITEM_INTERACTIONS_SCHEMA.fields
        ]
    )
    lake = Lakehouse(spark, config)
    lake.table("gold", "user_item_interactions").create(schema, ["as_of_date"]).append(
        _numeric_ids(user_item_interactions(spark, 300, 25, DAY))
    )
    summary = train_recommender(spark, config, DateRange.single(DAY)).details
    assert summary["promoted"] and summary["precision_at_k"] > 0
    got, want = _run_metrics(config, summary), _run_metrics(string_config, string_summary)
    ranking = sorted(k for k in want if k.startswith(("als.at_", "baseline.at_")))
    assert ranking and {k: got[k] for k in ranking} == pytest.approx({k: want[k] for k in ranking}, abs=1e-9)
    # lists are max(ks) long: recall@20 counts items ranked 11-20, precision@20 is not precision@10 / 2
    assert got["als.at_20.recall_at_k"] > got["als.at_10.recall_at_k"]
    assert got["als.at_20.precision_at_k"] > 0.6 * got["als.at_10.precision_at_k"]
    score_recommendations(spark, config, DateRange.single(DAY))
    recs = lake.table("gold", "recommendations").read()
    assert recs.schema["user_id"].dataType == T.IntegerType()
    assert recs.schema["item_id"].dataType == T.LongType()
    interactions = lake.table("gold", "user_item_interactions").read()
    assert recs.join(interactions.where("purchases > 0"), ["user_id", "item_id"]).count() == 0
    assert recs.count() == interactions.select("user_id").distinct().count() * config.ml.recommender.k


def test_a_model_that_never_hits_fails_instead_of_promoting(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakeml.domains.commerce import recommender

    config = _config(tmp_path)
    Lakehouse(spark, config).table("gold", "user_item_interactions").create(
        USER_ITEM_INTERACTIONS_SCHEMA, ["as_of_date"]
    ).append(user_item_interactions(spark, 150, 25, DAY))
    real = recommender.recommend

    def never_matching(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)  # the ids an id-type mismatch produces: never equal to a held-out one
        return out.withColumn("item_id", F.concat(F.lit("x"), F.col("item_id")))

    monkeypatch.setattr(recommender, "recommend", never_matching)
    with pytest.raises(JobFailed, match="every ranking metric of the ALS model is 0.*Not registered"):
        train_recommender(spark, config, DateRange.single(DAY))
    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    assert mlflow.MlflowClient().search_model_versions(f"name='{config.ml.recommender.model_name}'") == []


def test_a_table_with_only_what_explicit_mode_needs_trains_and_scores(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = _config(
        tmp_path,
        "ml.recommender.mode=explicit",
        "ml.recommender.model_name=als-minimal",
        "ml.recommender.input_table=gold/ratings",
        "ml.recommender.rating_column=rating",
        "ml.recommender.time_column=rated_on",
        "ml.recommender.date_column=",
        "ml.recommender.purchased_column=",
    )
    ratings = (
        _numeric_ids(user_item_interactions(spark, 150, 25, DAY))
        .where(F.col("rating_last").isNotNull())
        .select(
            "user_id",
            "item_id",
            F.col("rating_last").alias("rating"),
            F.to_date("last_event_ts").alias("rated_on"),
        )
    )
    lake = Lakehouse(spark, config)
    lake.table("gold", "ratings").create(ratings.schema, []).append(ratings)
    summary = train_recommender(spark, config, DateRange.single(DAY)).details
    assert summary["snapshot"] == "all" and summary["precision_at_k"] > 0
    # ratings are 2 or 5: relevant from 2 + 0.75 * 3 = 4.25, i.e. the 5s
    assert "rating &gt;= 4.25" in Path(summary["report"]).read_text()
    out = score_recommendations(spark, config, DateRange.single(DAY)).details
    recs = lake.table("gold", "recommendations").read()
    assert out["rows"] == recs.count() > 0
    assert recs.schema["user_id"].dataType == T.IntegerType()
    assert recs.where(F.col("as_of_date") != DAY).count() == 0
    # no purchased column: nothing the user already rated is recommended
    assert recs.join(ratings, ["user_id", "item_id"]).count() == 0


def test_report_renders_in_chromium_with_the_mlflow_metrics(
    trained: tuple[Config, dict], tmp_path: Path
) -> None:
    config, summary = trained
    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    client = mlflow.MlflowClient()
    name = config.ml.recommender.model_name
    metrics = client.get_run(client.get_model_version(name, summary["version"]).run_id).data.metrics
    headline = {"Test users' held-out pairs": name}
    assert_renders_with_mlflow_headlines(summary["report"], tmp_path, metrics, headline)


def test_validation_sample_is_a_fixed_subset_of_the_validation_users(
    spark: SparkSession, config: Config
) -> None:
    cfg = dataclasses.replace(config.ml.recommender, validation_users=3)
    validation = spark.createDataFrame(
        [(f"u{n % 10}", f"i{n}") for n in range(40)], "user_id string, item_id string"
    )
    picked = {r.user_id for r in validation_sample(validation, cfg, 42).collect()}
    assert len(picked) == 3 and picked <= {f"u{n}" for n in range(10)}
    assert picked == {
        r.user_id for r in validation_sample(validation.orderBy(F.desc("item_id")), cfg, 42).collect()
    }
    every = dataclasses.replace(cfg, validation_users=0)
    assert validation_sample(validation, every, 42).count() == 10


def test_implicit_tuning_ranks_every_point_on_the_validation_user_sample(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = _config(
        tmp_path,
        "ml.recommender.max_iter=2",
        "ml.recommender.grid={rank: [2, 4], regParam: [0.1], alpha: [20.0]}",
        "ml.recommender.validation_users=40",
    )
    cfg = config.ml.recommender
    rows = user_item_interactions(spark, 80, 12, DAY).transform(with_target(cfg))
    split = rows.transform(
        with_latest_per_user_split(
            cfg.user_column, cfg.time_column, cfg.item_column, cfg.test_items, cfg.validation_items, 5
        )
    )
    train, validation = split.where(F.col(SPLIT) == TRAIN), split.where(F.col(SPLIT) == VALIDATION)
    best, results = tune_implicit(cfg, config, train, validation)
    assert [p["rank"] for p, _ in results] == [2, 4]
    assert all(0 <= metric <= 1 for _, metric in results) and any(metric > 0 for _, metric in results)
    assert best == max(results, key=lambda r: r[1])[0]
