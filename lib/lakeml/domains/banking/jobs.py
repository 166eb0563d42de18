"""Jobs of the banking domain (registered in the DAG by ``lakeml.pipeline.registry``)."""

from __future__ import annotations

from lakeml.domains.banking.silver import CHARGEBACKS, TRANSACTIONS
from lakeml.ingest.bronze import bronze_job
from lakeml.ingest.silver import silver_job
from lakeml.pipeline import JobContext, JobResult, job


@job("banking.ingest_bronze")
def ingest_bronze(ctx: JobContext) -> JobResult:
    """landing/{transactions, chargebacks} → bronze: new raw files, every line once."""
    return bronze_job(
        ctx,
        (
            "transactions",
            "chargebacks",
        ),
    )


@job("banking.build_silver", depends_on=["banking.ingest_bronze"])
def build_silver(ctx: JobContext) -> JobResult:
    """bronze/{transactions, chargebacks} → silver: parsed, standardized, deduplicated; rejects to ops/quarantine."""
    return silver_job(
        ctx,
        (
            TRANSACTIONS,
            CHARGEBACKS,
        ),
        "banking.build_silver",
    )
