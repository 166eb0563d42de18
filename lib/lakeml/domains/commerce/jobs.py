"""Jobs of the commerce domain (registered in the DAG by ``lakeml.pipeline.registry``)."""

from __future__ import annotations

from lakeml.domains.commerce.features import build_commerce_features
from lakeml.domains.commerce.recommender import score_recommendations, train_recommender
from lakeml.domains.commerce.silver import CLICKSTREAM
from lakeml.ingest.bronze import bronze_job
from lakeml.ingest.silver import require_pii_key, silver_job
from lakeml.ml.lifecycle import scoring_result, training_result
from lakeml.pipeline import JobContext, JobResult, job


@job("commerce.ingest_bronze", preflight=require_pii_key)
def ingest_bronze(ctx: JobContext) -> JobResult:
    """landing/{clickstream} → bronze: new raw files, every line once."""
    return bronze_job(ctx, ("clickstream",))


@job("commerce.build_silver", depends_on=["commerce.ingest_bronze"], preflight=require_pii_key)
def build_silver(ctx: JobContext) -> JobResult:
    """bronze/{clickstream} → silver: parsed, standardized, deduplicated; rejects to ops/quarantine."""
    return silver_job(ctx, (CLICKSTREAM,), "commerce.build_silver")


@job("commerce.build_features", depends_on=["commerce.build_silver"], dated=True)
def build_features(ctx: JobContext) -> JobResult:
    """silver/clickstream → gold/user_item_interactions, gold/item_stats for the run date."""
    counts = build_commerce_features(ctx.spark, ctx.config, ctx.start_date, ctx.run_date)
    rows_out = sum(n for name, n in counts.items() if name != "events")
    return JobResult(rows_in=counts["events"], rows_out=rows_out, details=counts)


@job("commerce.train_recommender", depends_on=["commerce.build_features"])
def train_recommender_job(ctx: JobContext) -> JobResult:
    """gold/user_item_interactions snapshot (pinned) → ALS in MLflow; champion if it beats the current one."""
    return training_result(train_recommender(ctx.spark, ctx.config, ctx.run_date))


@job("commerce.score_recommendations", depends_on=["commerce.train_recommender"], dated=True)
def score_recommendations_job(ctx: JobContext) -> JobResult:
    """gold/user_item_interactions snapshot(s) → gold/recommendations: top-k per user, purchased items excluded."""
    return scoring_result(score_recommendations(ctx.spark, ctx.config, ctx.start_date, ctx.run_date))
