"""Jobs of the commerce domain (registered in the DAG by ``lakeml.pipeline.registry``).

Each job runs one library step, ``(spark, config, dates) -> StepResult`` (``lakeml.steps``)."""

from __future__ import annotations

from lakeml.domains.commerce.features import build_commerce_features
from lakeml.domains.commerce.recommender import score_recommendations, train_recommender
from lakeml.domains.commerce.silver import CLICKSTREAM
from lakeml.ingest.bronze import bronze_step
from lakeml.ingest.silver import require_pii_key, silver_step
from lakeml.pipeline import JobContext, JobResult, job

INGEST_BRONZE = bronze_step("clickstream")
BUILD_SILVER = silver_step(CLICKSTREAM)


@job("commerce.ingest_bronze", preflight=require_pii_key)
def ingest_bronze(ctx: JobContext) -> JobResult:
    """landing/{clickstream} → bronze: new raw files, every line once."""
    return INGEST_BRONZE(ctx.spark, ctx.config, ctx.dates)


@job("commerce.build_silver", depends_on=["commerce.ingest_bronze"], preflight=require_pii_key)
def build_silver(ctx: JobContext) -> JobResult:
    """bronze/{clickstream} → silver: parsed, standardized, deduplicated; rejects to ops/quarantine."""
    return BUILD_SILVER(ctx.spark, ctx.config, ctx.dates)


@job("commerce.build_features", depends_on=["commerce.build_silver"], dated=True)
def build_features(ctx: JobContext) -> JobResult:
    """silver/clickstream → gold/user_item_interactions, gold/item_stats for the run date."""
    return build_commerce_features(ctx.spark, ctx.config, ctx.dates)


@job("commerce.train_recommender", depends_on=["commerce.build_features"])
def train_recommender_job(ctx: JobContext) -> JobResult:
    """gold/user_item_interactions snapshot (pinned) → ALS in MLflow; champion if it beats the current one."""
    return train_recommender(ctx.spark, ctx.config, ctx.dates)


@job("commerce.score_recommendations", depends_on=["commerce.train_recommender"], dated=True)
def score_recommendations_job(ctx: JobContext) -> JobResult:
    """gold/user_item_interactions snapshot(s) → gold/recommendations: top-k per user, purchased items
    excluded."""
    return score_recommendations(ctx.spark, ctx.config, ctx.dates)
