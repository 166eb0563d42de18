"""Jobs of the banking domain (registered in the DAG by ``lakeml.pipeline.registry``)."""

from __future__ import annotations

from lakeml.ingest.bronze import load_feed_to_bronze
from lakeml.pipeline import JobContext, JobResult, job

FEEDS = ("transactions", "chargebacks")


@job("banking.ingest_bronze")
def ingest_bronze(ctx: JobContext) -> JobResult:
    """landing/{transactions, chargebacks} → bronze: new raw files, every line once."""
    loads = [load_feed_to_bronze(ctx.spark, ctx.config, feed) for feed in FEEDS]
    rows = sum(load.rows for load in loads)
    details = {f"{load.feed}_rows": load.rows for load in loads}
    details["batches"] = sum(load.batches for load in loads)
    details["replayed_batches"] = sum(load.skipped_batches for load in loads)
    return JobResult(rows_in=rows, rows_out=rows, details=details)
