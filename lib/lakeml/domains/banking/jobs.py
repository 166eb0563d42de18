"""Jobs of the banking domain (registered in the DAG by ``lakeml.pipeline.registry``).

Each job runs one library step, ``(spark, config, dates) -> StepResult`` (``lakeml.steps``)."""

from __future__ import annotations

from lakeml.domains.banking.features import build_transaction_features, refresh_transaction_labels
from lakeml.domains.banking.fraud_model import score_fraud, train_fraud_model
from lakeml.domains.banking.silver import CHARGEBACKS, TRANSACTIONS
from lakeml.ingest.bronze import bronze_step
from lakeml.ingest.silver import require_pii_key, silver_step
from lakeml.pipeline import JobContext, JobResult, job

INGEST_BRONZE = bronze_step("transactions", "chargebacks")
BUILD_SILVER = silver_step(TRANSACTIONS, CHARGEBACKS)


@job("banking.ingest_bronze", preflight=require_pii_key)
def ingest_bronze(ctx: JobContext) -> JobResult:
    """landing/{transactions, chargebacks} → bronze: new raw files, every line once."""
    return INGEST_BRONZE(ctx.spark, ctx.config, ctx.dates)


@job("banking.build_silver", depends_on=["banking.ingest_bronze"], preflight=require_pii_key)
def build_silver(ctx: JobContext) -> JobResult:
    """bronze/{transactions, chargebacks} → silver: parsed, standardized, deduplicated; rejects to
    ops/quarantine."""
    return BUILD_SILVER(ctx.spark, ctx.config, ctx.dates)


@job("banking.build_features", depends_on=["banking.build_silver"], dated=True)
def build_features(ctx: JobContext) -> JobResult:
    """silver/{transactions, chargebacks} → gold/transaction_features of the run date(s) only (labels as of
    it)."""
    return build_transaction_features(ctx.spark, ctx.config, ctx.dates)


@job("banking.refresh_labels", depends_on=["banking.build_features"])
def refresh_labels(ctx: JobContext) -> JobResult:
    """silver/chargebacks → the days of gold/transaction_features whose labels changed by the run date."""
    return refresh_transaction_labels(ctx.spark, ctx.config, ctx.dates)


@job("banking.train_fraud", depends_on=["banking.refresh_labels"])
def train_fraud(ctx: JobContext) -> JobResult:
    """gold/transaction_features (pinned) → fraud classifier in MLflow; champion if it beats the current
    one."""
    return train_fraud_model(ctx.spark, ctx.config, ctx.dates)


@job("banking.score_fraud", depends_on=["banking.train_fraud"], dated=True)
def score_fraud_job(ctx: JobContext) -> JobResult:
    """gold/transaction_features of the run date(s) → gold/fraud_scores with the champion's alerts."""
    return score_fraud(ctx.spark, ctx.config, ctx.dates)
