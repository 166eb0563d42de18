"""Jobs of the maintenance domain (registered in the DAG by ``lakeml.pipeline.registry``)."""

from __future__ import annotations

from lakeml.ingest.bronze import bronze_job
from lakeml.pipeline import JobContext, JobResult, job


@job("maintenance.ingest_bronze")
def ingest_bronze(ctx: JobContext) -> JobResult:
    """landing/{telemetry, maintenance} → bronze: new raw files, every line once."""
    return bronze_job(
        ctx,
        (
            "telemetry",
            "maintenance",
        ),
    )
