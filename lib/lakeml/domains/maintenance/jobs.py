"""Jobs of the maintenance domain (registered in the DAG by ``lakeml.pipeline.registry``)."""

from __future__ import annotations

from lakeml.domains.maintenance.failure_model import score_failure, train_failure_models
from lakeml.domains.maintenance.features import build_machine_features
from lakeml.domains.maintenance.silver import MAINTENANCE, TELEMETRY
from lakeml.ingest.bronze import bronze_job
from lakeml.ingest.silver import require_pii_key, silver_job
from lakeml.ml.lifecycle import scoring_result, training_result
from lakeml.pipeline import JobContext, JobResult, job


@job("maintenance.ingest_bronze", preflight=require_pii_key)
def ingest_bronze(ctx: JobContext) -> JobResult:
    """landing/{telemetry, maintenance} → bronze: new raw files, every line once."""
    return bronze_job(
        ctx,
        (
            "telemetry",
            "maintenance",
        ),
    )


@job("maintenance.build_silver", depends_on=["maintenance.ingest_bronze"])
def build_silver(ctx: JobContext) -> JobResult:
    """bronze/{telemetry, maintenance} → silver: parsed, standardized, deduplicated; rejects to ops/quarantine."""
    return silver_job(
        ctx,
        (
            TELEMETRY,
            MAINTENANCE,
        ),
        "maintenance.build_silver",
    )


@job("maintenance.build_features", depends_on=["maintenance.build_silver"], dated=True)
def build_features(ctx: JobContext) -> JobResult:
    """silver/{telemetry, maintenance} → gold/machine_features for the run date (rolling, regime-normalized, RUL labels)."""
    counts = build_machine_features(ctx.spark, ctx.config, ctx.start_date, ctx.run_date)
    return JobResult(
        rows_in=counts["telemetry_rows"] + counts["maintenance_rows"],
        rows_out=counts["machine_features_rows"],
        details=counts,
    )


@job("maintenance.train_failure", depends_on=["maintenance.build_features"])
def train_failure(ctx: JobContext) -> JobResult:
    """gold/machine_features (pinned) → RUL regressor and failure classifier in MLflow; champions if they beat the current ones."""
    return training_result(train_failure_models(ctx.spark, ctx.config, ctx.run_date))


@job("maintenance.score_failure", depends_on=["maintenance.train_failure"], dated=True)
def score_failure_job(ctx: JobContext) -> JobResult:
    """gold/machine_features of the run date(s) → gold/failure_risk with both champions' RUL, risk and alerts."""
    return scoring_result(score_failure(ctx.spark, ctx.config, ctx.start_date, ctx.run_date))
