"""Bronze loading: every landing line becomes one row, exactly once, through Structured Streaming.

The file source tracks which landing files were taken (checkpoint); each micro-batch is appended
with the Delta txn ``(app_id, batch_id)``, so a batch replayed after a crash commits nothing twice.
The same code runs as a batch (``availableNow``) or nearline (``processingTime``).

"Raw" means the line as delivered except for card numbers: every PAN-like span is replaced by its
keyed token as the line is loaded (PCI DSS: a PAN is unreadable wherever it is stored), so the
clear number lives only in the landing zone, whose loaded files ``lakehouse.landing_retention_days``
bounds.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyarrow import fs as pafs
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml import runlog, runstate
from lakeml.config import Config, join_location
from lakeml.errors import JobFailed
from lakeml.ingest.silver import require_pii_key
from lakeml.lakehouse import DeltaTableRef, Lakehouse
from lakeml.steps import DateRange, Step, StepResult
from lakeml.transforms.pii import mask_pans, mask_pans_in_bytes

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
    landing_files_deleted: int = 0


def with_bronze_columns(
    raw: DataFrame, feed: str, batch_id: int, pii_key: bytes, ingested_at: Column | None = None
) -> DataFrame:
    """Reads ``value`` and the file source's ``_metadata``; adds raw_bytes, _source_file, _ingested_at,
    _batch_id, _ingest_date.

    Card numbers in ``value`` and ``raw_bytes`` are replaced by their keyed tokens (``mask_pans``).
    ``ingested_at``: the ingestion time (default: the micro-batch's start).
    """
    now = F.current_timestamp() if ingested_at is None else ingested_at
    valid = F.is_valid_utf8(F.col("value"))
    return raw.select(
        mask_pans(F.make_valid_utf8(F.col("value")), pii_key).alias("value"),
        F.when(~valid, mask_pans_in_bytes(F.col("value").cast("binary"), pii_key)).alias("raw_bytes"),
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
    key = require_pii_key(config)
    lake = Lakehouse(spark, config)
    table = lake.table("bronze", feed).create(BRONZE_SCHEMA, BRONZE_PARTITIONS)
    checkpoint = join_location(config.lakehouse.root, f"_checkpoints/bronze/{feed}")
    app_id = f"lakeml.bronze.{feed}"
    load = BronzeLoad(feed)

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        outcome = table.append(with_bronze_columns(batch, feed, batch_id, key), txn=(app_id, batch_id))
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
    # The folder's listing as this load found it: a rerun for the same date with the same listing
    # (nothing delivered, renamed or removed since) is skipped before any stream starts (runstate).
    runstate.note_files(landing)
    query = writer.start()
    query.awaitTermination()
    if query.exception() is not None:
        raise JobFailed(f"bronze load of {feed} failed: {query.exception()}")
    if config.lakehouse.landing_retention_days > 0:
        load.landing_files_deleted = delete_loaded_landing_files(
            table, landing, config.lakehouse.landing_retention_days
        )
    return load


def _without_scheme(uri: Column | str) -> Column:
    """The path part of a URI (``file:///a/b`` → ``/a/b``, ``s3a://bucket/k`` → ``bucket/k``)."""
    return F.regexp_replace(uri, r"^[A-Za-z][A-Za-z0-9+.-]*:(//)?", "")


def delete_loaded_landing_files(table: DeltaTableRef, landing: str, retention_days: int) -> int:
    """Delete the landing files older than ``retention_days`` whose lines are in ``table``; returns how many.

    Age is the file's modification time. A file counts as loaded only when bronze holds rows from
    it (its micro-batch committed); the lookup reads bronze's ``_source_file`` column only, with the
    candidate names pushed down to the Parquet reader. A loaded file holds at least one line (an
    empty file never reaches bronze and is kept).
    """
    filesystem, root = pafs.FileSystem.from_uri(landing if "://" in landing else "file://" + landing)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days)
    old = [
        info.path
        for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
        if info.type == pafs.FileType.File and info.mtime is not None and info.mtime < cutoff
    ]
    if not old:
        return 0
    loaded = (
        table.read()
        .select(_without_scheme(F.col("_source_file")).alias("path"))
        .where(F.col("path").isin(old))
        .distinct()
        .collect()  # one row per landing file: metadata, not data
    )
    for row in loaded:
        filesystem.delete_file(row.path)
    runlog.event(
        "landing_files_deleted",
        folder=landing,
        files=len(loaded),
        retention_days=retention_days,
        kept_unloaded=len(old) - len(loaded),
    )
    return len(loaded)


def bronze_step(*feeds: str) -> Step:
    """The step loading ``feeds``' new landing files to bronze; rows in = rows out (bronze drops nothing).
    Bronze takes every file that landed, whatever the dates: they only date the run's log lines."""

    def ingest_bronze(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
        return bronze_result([load_feed_to_bronze(spark, config, feed) for feed in feeds])

    return ingest_bronze


def bronze_result(loads: Sequence[BronzeLoad]) -> StepResult:
    """The accounting of one bronze run over several feeds."""
    rows = sum(load.rows for load in loads)
    details: dict[str, int] = {f"{load.feed}_rows": load.rows for load in loads}
    details["batches"] = sum(load.batches for load in loads)
    details["replayed_batches"] = sum(load.skipped_batches for load in loads)
    details["landing_files_deleted"] = sum(load.landing_files_deleted for load in loads)
    return StepResult(rows_in=rows, rows_out=rows, details=details)
