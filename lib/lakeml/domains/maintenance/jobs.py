"""Jobs of the maintenance domain (registered in the DAG by ``lakeml.pipeline.registry``).

Each job runs one library step, ``(spark, config, dates) -> StepResult`` (``lakeml.steps``)."""

from __future__ import annotations

from lakeml.domains.maintenance.failure_model import score_failure, train_failure_models
from lakeml.domains.maintenance.features import build_machine_features
from lakeml.domains.maintenance.silver import MAINTENANCE, TELEMETRY
from lakeml.ingest.bronze import bronze_step
from lakeml.ingest.silver import require_pii_key, silver_step
from lakeml.pipeline import JobContext, JobResult, job

INGEST_BRONZE = bronze_step("telemetry", "maintenance")
BUILD_SILVER = silver_step(TELEMETRY, MAINTENANCE)


@job("maintenance.ingest_bronze", preflight=require_pii_key)
def ingest_bronze(ctx: JobContext) -> JobResult:
    """landing/{telemetry, maintenance} → bronze: new raw files, every line once."""
    return INGEST_BRONZE(ctx.spark, ctx.config, ctx.dates)


@job("maintenance.build_silver", depends_on=["maintenance.ingest_bronze"])
def build_silver(ctx: JobContext) -> JobResult:
    """bronze/{telemetry, maintenance} → silver: parsed, standardized, deduplicated; rejects to
    ops/quarantine."""
    return BUILD_SILVER(ctx.spark, ctx.config, ctx.dates)


@job("maintenance.build_features", depends_on=["maintenance.build_silver"], dated=True)
def build_features(ctx: JobContext) -> JobResult:
    """silver/{telemetry, maintenance} → gold/machine_features for the run date (rolling,
    regime-normalized, RUL labels)."""
    return build_machine_features(ctx.spark, ctx.config, ctx.dates)


@job("maintenance.train_failure", depends_on=["maintenance.build_features"])
def train_failure(ctx: JobContext) -> JobResult:
    """gold/machine_features (pinned) → RUL regressor and failure classifier in MLflow; champions if they
    beat the current ones."""
    return train_failure_models(ctx.spark, ctx.config, ctx.dates)


@job("maintenance.score_failure", depends_on=["maintenance.train_failure"], dated=True)
def score_failure_job(ctx: JobContext) -> JobResult:
    """gold/machine_features of the run date(s) → gold/failure_risk with both champions' RUL, risk and
    alerts."""
    return score_failure(ctx.spark, ctx.config, ctx.dates)
