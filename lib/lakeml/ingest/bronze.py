"""Bronze loading: every landing line becomes one row, exactly once, through Structured Streaming.

The file source tracks which landing files were taken (checkpoint); each micro-batch is appended
with the Delta txn ``(app_id, batch_id)``, so a batch replayed after a crash commits nothing twice.
The same code runs as a batch (``availableNow``) or nearline (``processingTime``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import Config, join_location
from lakeml.errors import JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.pipeline import JobContext, JobResult

BRONZE_SCHEMA = T.StructType(
    [
        # The line as UTF-8 text; bytes that are not UTF-8 become U+FFFD here and are kept in raw_bytes.
        T.StructField("value", T.StringType(), True),
        T.StructField("raw_bytes", T.BinaryType(), True),  # the line's bytes, only when not valid UTF-8
        T.StructField("_source_file", T.StringType(), False),
        T.StructField("_ingested_at", T.TimestampType(), False),
        T.StructField("_batch_id", T.StringType(), False),
        T.StructField("_ingest_date", T.DateType(), False),
    ]
)
BRONZE_PARTITIONS = ["_ingest_date"]


@dataclass
class BronzeLoad:
    """What one run loaded: micro-batches committed (or skipped as already committed) and rows."""

    feed: str
    batches: int = 0
    skipped_batches: int = 0
    rows: int = 0
    files: set[str] = field(default_factory=set)


def with_bronze_columns(raw: DataFrame, feed: str, batch_id: int) -> DataFrame:
    """Reads ``value`` and the file source's ``_metadata``; adds raw_bytes, _source_file, _ingested_at, _batch_id, _ingest_date."""
    now = F.current_timestamp()
    valid = F.is_valid_utf8(F.col("value"))
    return raw.select(
        F.make_valid_utf8(F.col("value")).alias("value"),
        F.when(~valid, F.col("value").cast("binary")).alias("raw_bytes"),
        F.col("_metadata.file_path").alias("_source_file"),
        now.alias("_ingested_at"),
        F.lit(f"{feed}-{batch_id:08d}").alias("_batch_id"),
        F.to_date(now).alias("_ingest_date"),
    )


def load_feed_to_bronze(
    spark: SparkSession,
    config: Config,
    feed: str,
    trigger: str = "availableNow",
    max_files_per_batch: int = 100,
) -> BronzeLoad:
    """Append every not-yet-loaded landing file of ``feed`` to ``bronze/<feed>``; returns what was loaded."""
    landing = join_location(config.landing_path(), feed)
    if not landing.startswith(("hdfs:", "s3", "gs:", "abfs")) and not os.path.isdir(
        landing.removeprefix("file:")
    ):
        raise JobFailed(
            f"landing folder {landing} does not exist (run `lakeml generate` or deliver files there)"
        )
    lake = Lakehouse(spark, config)
    table = lake.table("bronze", feed).create(BRONZE_SCHEMA, BRONZE_PARTITIONS)
    checkpoint = join_location(config.lakehouse.root, f"_checkpoints/bronze/{feed}")
    app_id = f"lakeml.bronze.{feed}"
    load = BronzeLoad(feed)

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        outcome = table.append(with_bronze_columns(batch, feed, batch_id), txn=(app_id, batch_id))
        if outcome.noop:
            load.skipped_batches += 1
        else:
            load.batches += 1
            load.rows += outcome.rows_added

    stream = (
        spark.readStream.format("text")
        .option("maxFilesPerTrigger", max_files_per_batch)
        .option("wholetext", "false")
        .load(landing)
        .select("value", "_metadata")
    )
    writer = stream.writeStream.foreachBatch(write_batch).option("checkpointLocation", checkpoint)
    writer = (
        writer.trigger(availableNow=True)
        if trigger == "availableNow"
        else writer.trigger(processingTime=trigger)
    )
    query = writer.start()
    query.awaitTermination()
    if query.exception() is not None:
        raise JobFailed(f"bronze load of {feed} failed: {query.exception()}")
    return load


def bronze_job(ctx: JobContext, feeds: tuple[str, ...]) -> JobResult:
    """Run ``load_feed_to_bronze`` for each feed; rows in = rows out (bronze drops nothing)."""
    loads = [load_feed_to_bronze(ctx.spark, ctx.config, feed) for feed in feeds]
    rows = sum(load.rows for load in loads)
    details: dict[str, int] = {f"{load.feed}_rows": load.rows for load in loads}
    details["batches"] = sum(load.batches for load in loads)
    details["replayed_batches"] = sum(load.skipped_batches for load in loads)
    return JobResult(rows_in=rows, rows_out=rows, details=details)
