"""Jobs of the banking domain (registered in the DAG by ``lakeml.pipeline.registry``)."""

from __future__ import annotations

from lakeml.ingest.bronze import bronze_job
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
