"""The ``ops`` tables: quarantine, silver_batches and dq_results (per ingestion batch), job_runs (per job
run)."""

from __future__ import annotations

from pyspark.sql import types as T

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("feed", T.StringType(), False),
        T.StructField("raw_record", T.StringType(), True),  # the bronze line as delivered
        T.StructField("raw_bytes", T.BinaryType(), True),  # its bytes, when they were not valid UTF-8
        T.StructField("reason", T.StringType(), False),
        T.StructField("batch_id", T.StringType(), False),  # bronze micro-batch the line came in
        T.StructField("source_file", T.StringType(), False),
        T.StructField("bronze_version", T.LongType(), False),  # last bronze version of the silver batch
        T.StructField("run_id", T.StringType(), False),
        T.StructField("quarantined_at", T.TimestampType(), False),
    ]
)
QUARANTINE_PARTITIONS = ["feed"]

# One row per silver batch of one table: its bronze version range and the row accounting.
SILVER_BATCHES_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("job", T.StringType(), False),
        T.StructField("table", T.StringType(), False),
        T.StructField("run_date", T.DateType(), False),
        T.StructField("bronze_from_version", T.LongType(), False),  # exclusive
        T.StructField("bronze_to_version", T.LongType(), False),  # inclusive
        T.StructField("rows_in", T.LongType(), False),
        T.StructField("rows_loaded", T.LongType(), False),
        T.StructField("rows_duplicate", T.LongType(), False),
        T.StructField("rows_quarantined", T.LongType(), False),
        T.StructField("rows_header", T.LongType(), False),
        T.StructField("status", T.StringType(), False),  # ok | failed | skipped (inputs unchanged)
        T.StructField("message", T.StringType(), True),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("finished_at", T.TimestampType(), False),
    ]
)

# One row per job run (every job, ok or failed), written by lakeml.pipeline.run_job.
JOB_RUNS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("job", T.StringType(), False),
        T.StructField("env", T.StringType(), False),
        T.StructField("run_date", T.DateType(), False),
        T.StructField("first_date", T.DateType(), False),  # = run_date unless a backfill (--since)
        T.StructField("status", T.StringType(), False),  # ok | failed | skipped (inputs unchanged)
        T.StructField("noop", T.BooleanType(), True),  # nothing new to do (NULL when failed)
        T.StructField("rows_in", T.LongType(), True),
        T.StructField("rows_out", T.LongType(), True),
        T.StructField("seconds", T.DoubleType(), False),
        T.StructField("input_versions", T.StringType(), False),  # JSON {table: version read}
        T.StructField("message", T.StringType(), True),  # the error, when failed
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("finished_at", T.TimestampType(), False),
        # What a rerun compares (lakeml.runstate): the settings fingerprint and, as the run left
        # them, the versions of every table and champion model it read (JSON; NULL unless ok).
        T.StructField("settings", T.StringType(), True),
        T.StructField("input_state", T.StringType(), True),
    ]
)

DQ_RESULTS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("table", T.StringType(), False),
        T.StructField("bronze_to_version", T.LongType(), False),
        T.StructField("check", T.StringType(), False),
        T.StructField("target", T.StringType(), False),  # column(s) checked
        T.StructField("level", T.StringType(), False),
        T.StructField("passed", T.BooleanType(), False),
        T.StructField("failed_rows", T.LongType(), True),  # NULL for table-level checks
        T.StructField("rows_checked", T.LongType(), False),
        T.StructField("observed", T.StringType(), True),  # e.g. the rate or the newest timestamp
        T.StructField("checked_at", T.TimestampType(), False),
    ]
)
