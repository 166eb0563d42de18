"""Jobs that maintain the lakehouse itself (registered in the DAG by ``lakeml.pipeline.registry``)."""

from __future__ import annotations

from lakeml.lakehouse import Lakehouse
from lakeml.lakehouse.maintain import maintain_tables
from lakeml.pipeline import JobContext, JobResult, job

# Last in the DAG: after every domain's final job, so it compacts what the day wrote and never races
# a writer (tests/test_maintain.py checks every other job is upstream of it).
AFTER = ("banking.score_fraud", "commerce.score_recommendations", "maintenance.score_failure")


@job("ops.maintain_tables", depends_on=AFTER)
def maintain(ctx: JobContext) -> JobResult:
    """every table → compacted (optimize), vacuumed (protected versions kept), log cleaned;
    ops/maintenance."""
    rows = maintain_tables(Lakehouse(ctx.spark, ctx.config), ctx.run_id, ctx.dates.last)
    totals = {k: sum(r[k] for r in rows) for k in ("files_before", "files_after", "files_vacuumed")}
    return JobResult(
        rows_in=totals["files_before"],
        rows_out=totals["files_after"],
        details={"tables": len(rows), **totals},
    )
