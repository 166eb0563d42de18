"""The ``ops`` tables every ingestion batch reports to: quarantine, job_runs and dq_results."""

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

JOB_RUNS_SCHEMA = T.StructType(
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
        T.StructField("status", T.StringType(), False),  # ok | failed
        T.StructField("message", T.StringType(), True),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("finished_at", T.TimestampType(), False),
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
