"""banking.fraud_alerts: landing transaction files scored by the fraud champion within seconds, exactly once.

One Structured Streaming query (``lakeml stream banking.fraud_alerts``):

1. the file source takes new ``landing/transactions`` files (checkpointed: each file once);
2. each line gets bronze's columns (PANs tokenized at once, ``_ingested_at`` = the file's landing
   time) and silver's parse (``parse_transactions``: the same schema, UTC, decimals, tokens and
   reject rules);
3. per-card state (``card_state``, keyed by card bucket) adds the velocity window sums, with an
   event-time watermark;
4. ``foreachBatch`` (:class:`FraudAlertBatches`): the batch features' own derivations and merchant
   risk, the champion read from the registry at every micro-batch, then two appends, each with the
   Delta txn ``(app id, batch id)``: rejects and late rows to ``ops/quarantine``, every scored
   transaction to ``gold/fraud_alerts``; then alerts to the sink (JSON lines / webhook).

A micro-batch replayed after a crash recomputes the same rows from the same state version, and
its commits are no-ops: nothing is scored twice, not even by a newer champion.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from py4j.protocol import Py4JJavaError
from pyarrow import fs as pafs
from pyspark import StorageLevel
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml import runlog
from lakeml.config import STATE_STORES, AlertSinkConfig, Config, join_location
from lakeml.domains.banking.card_state import (
    BUCKET_KEY,
    LATE_REASON,
    REJECTED_BUCKET,
    STATE_SCHEMA,
    STATUS,
    card_bucket,
    card_window_step,
    window_columns,
)
from lakeml.domains.banking.features import (
    LABEL_COLUMNS,
    TRANSACTION_FEATURES_SCHEMA,
    day_mcc_risk_rates,
    window_hours,
    with_derived_features,
    with_mcc_risk,
)
from lakeml.domains.banking.fraud_model import with_calibrated_score
from lakeml.domains.banking.silver import TRANSACTION_FIELDS, parse_transactions
from lakeml.errors import JobFailed
from lakeml.ingest.bronze import with_bronze_columns
from lakeml.ingest.silver import IS_HEADER, REJECT_REASON, ParseRules, require_pii_key
from lakeml.lakehouse import Lakehouse
from lakeml.ml import models, scoring
from lakeml.ml.lifecycle import table_ref
from lakeml.quality.ops import QUARANTINE_PARTITIONS, QUARANTINE_SCHEMA
from lakeml.session import session_settings

FEED = "transactions"
APP_ID = "lakeml.stream.fraud_alerts"
FEATURE_FIELDS = [
    f for f in TRANSACTION_FEATURES_SCHEMA.fields if f.name not in (*LABEL_COLUMNS, "as_of_date")
]
FRAUD_ALERTS_SCHEMA = T.StructType(
    [
        *FEATURE_FIELDS,  # exactly the features the model saw (as in gold/transaction_features)
        T.StructField("score", T.DoubleType(), False),  # P(fraud) from the champion
        T.StructField("alert", T.BooleanType(), False),  # score >= threshold
        T.StructField("threshold", T.DoubleType(), False),  # the champion's (its threshold tag)
        T.StructField("model_name", T.StringType(), False),
        T.StructField("model_version", T.StringType(), False),
        T.StructField("arrived_at", T.TimestampType(), False),  # landing file's modification time
        T.StructField("scored_at", T.TimestampType(), False),  # when the micro-batch scored it
        T.StructField("stream_batch_id", T.LongType(), False),  # the micro-batch (its Delta txn version)
        T.StructField("as_of_date", T.DateType(), False),  # partition: UTC date of ts (event time)
    ]
)
# Columns the per-card state step carries (silver's, the lineage a quarantine row needs, the key).
_STATE_INPUT = (
    "txn_id", "ts", "card_token", "merchant_id", "mcc", "amount_eur", "channel", "country", "lat", "lon",
    "card_present", "event_date", "_source_file", "_ingested_at", REJECT_REASON, "value", "raw_bytes",
    BUCKET_KEY,
)  # fmt: skip
_LATE_RECORD = (
    "txn_id", "ts", "card_token", "merchant_id", "mcc", "amount_eur", "channel", "country", "lat", "lon",
    "card_present",
)  # fmt: skip
_BATCH_VALUES_SCHEMA = T.StructType(
    [
        T.StructField("_stream_batch_id", T.LongType(), False),
        T.StructField("_scored_at", T.TimestampType(), False),
    ]
)
# Micro-batches whose BatchMetrics the handler keeps (the newest): a stream runs for days, ~40 000
# micro-batches a day; the totals are counted apart.
RECENT_BATCHES_KEPT = 10_000
_SINK_FIELDS = ("txn_id", "card_token", "ts", "amount_eur", "mcc", "country", "score", "threshold",
                "model_version", "arrived_at", "scored_at", "stream_batch_id")  # fmt: skip


def landing_stream(spark: SparkSession, config: Config, pii_key: bytes) -> DataFrame:
    """The streaming rows of new landing transaction files, parsed by silver's contract, headers dropped."""
    cfg = config.nearline.fraud_alerts
    landing = join_location(config.landing_path(), FEED)
    raw = (
        spark.readStream.format("text")
        .option("maxFilesPerTrigger", cfg.max_files_per_trigger)
        .load(landing)
        .select("value", "_metadata")
    )
    # Ingestion time = when the file landed: the arrival the latency is measured from.
    bronze = with_bronze_columns(raw, FEED, 0, pii_key, F.col("_metadata.file_modification_time"))
    parsed = parse_transactions(bronze, ParseRules(config.silver, pii_key))
    return parsed.where(~F.col(IS_HEADER))


def with_card_windows(parsed: DataFrame, config: Config) -> DataFrame:
    """Streaming parsed rows → every row once, with ``_status`` and (scored rows) the card's window sums."""
    cfg = config.nearline.fraud_alerts
    hours = window_hours(config.features.banking)
    keyed = parsed.withColumn(
        BUCKET_KEY,
        F.when(F.col(REJECT_REASON).isNull(), card_bucket(F.col("card_token"), cfg.state_buckets)).otherwise(
            F.lit(REJECTED_BUCKET).cast("long")
        ),
    ).select(*_STATE_INPUT)
    watermarked = keyed.withWatermark("ts", f"{int(cfg.watermark_minutes * 60)} seconds")
    nullable = [T.StructField(f.name, f.dataType, True) for f in watermarked.schema.fields]
    output = T.StructType([*nullable, *window_columns()])
    return watermarked.groupBy(BUCKET_KEY).applyInPandasWithState(
        card_window_step(hours, cfg.state_buckets), output, STATE_SCHEMA, "append", "NoTimeout"
    )


def with_stream_features(rows: DataFrame, config: Config, mcc_rates: DataFrame) -> DataFrame:
    """Scored rows with window sums → every feature of gold/transaction_features, by the batch's own
    derivations."""
    settings = config.features.banking
    hours = window_hours(settings)
    longest = max(hours, key=lambda k: hours[k])
    previous = F.struct(
        F.col("_prev_t").alias("t"),
        F.col("_prev_id").alias("id"),
        F.col("_prev_lat").alias("lat"),
        F.col("_prev_lon").alias("lon"),
    )
    df = rows.withColumn("_prev", F.when(F.col("_prev_t").isNotNull(), previous)).withColumnRenamed(
        "event_date", "as_of_date"
    )
    return with_derived_features(df, settings, longest).transform(with_mcc_risk(mcc_rates, settings))


def quarantine_rows(rows: DataFrame, feed: str, batch_id: int, run_id: str) -> DataFrame:
    """Rejected and late rows → QUARANTINE_SCHEMA rows (bronze_version -1: they never came through bronze)."""
    return rows.select(
        F.lit(feed).alias("feed"),
        # Silver's parse keeps the line of rejected rows only; a late row (it parsed) is its silver values.
        F.coalesce(F.col("value"), F.to_json(F.struct(*_LATE_RECORD))).alias("raw_record"),
        F.col("raw_bytes"),
        F.coalesce(F.col(REJECT_REASON), F.lit(LATE_REASON)).alias("reason"),
        F.lit(f"fraud_alerts-{batch_id:08d}").alias("batch_id"),
        F.col("_source_file").alias("source_file"),
        F.lit(-1).cast("long").alias("bronze_version"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
    )


class ChampionTracker:
    """The champion of the fraud model, looked up at every micro-batch; its model reloads only when it
    changes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.current: scoring.Champion | None = None

    def champion(self) -> scoring.Champion:
        name = self.config.ml.fraud.model_name
        latest = scoring.load_champion(self.config, name, "banking.train_fraud")
        if self.current is None or latest.version != self.current.version:
            try:
                latest.model  # noqa: B018 (loads it now, so a broken model fails before anything is written)
            except Exception as exc:
                raise JobFailed(
                    f"the champion {name} v{latest.version} cannot be loaded ({type(exc).__name__}: {exc}); "
                    "the stream stopped before committing this micro-batch: fix or re-promote a model and "
                    "restart"
                ) from exc
            if "threshold" not in latest.tags:
                raise JobFailed(f"the champion {name} v{latest.version} has no threshold tag: retrain it")
            runlog.event("champion_loaded", model=name, version=latest.version)
            self.current = latest
        return self.current


class AlertSink:
    """Alerts out of the lake: a JSON-lines file per hour of scoring and/or a webhook POST per micro-batch.

    At-least-once: a micro-batch is marked delivered (a small progress file under the checkpoint)
    only after every target took it; a crash in between re-sends it. Each alert carries its txn_id
    and stream_batch_id, so a receiver can drop a repeat.
    """

    def __init__(self, cfg: AlertSinkConfig, lakehouse_root: str, progress_dir: str) -> None:
        self.cfg = cfg
        self.folder = join_location(lakehouse_root, cfg.jsonl_dir) if cfg.jsonl_dir else ""
        self.progress_dir = progress_dir

    @property
    def enabled(self) -> bool:
        return bool(self.folder or self.cfg.webhook_url)

    def _fs(self, location: str) -> tuple[pafs.FileSystem, str]:
        return pafs.FileSystem.from_uri(
            location if "://" in location else "file://" + os.path.abspath(location)
        )

    def delivered(self) -> int:
        filesystem, root = self._fs(self.progress_dir)
        try:
            with filesystem.open_input_stream(f"{root}/delivered") as f:
                return int(f.read().decode())
        except (FileNotFoundError, OSError, ValueError):
            return -1

    def deliver(self, batch_id: int, alerts: Sequence[dict[str, Any]]) -> None:
        if not self.enabled or batch_id <= self.delivered():
            return
        if alerts and self.folder:
            filesystem, root = self._fs(self.folder)
            filesystem.create_dir(root, recursive=True)
            by_hour: dict[str, list[str]] = {}
            for a in alerts:
                by_hour.setdefault(a["scored_at"][:13], []).append(json.dumps(a, sort_keys=True))
            for hour, lines in by_hour.items():
                # Local folders take an append; object stores have no append (one file per batch there).
                with open(os.path.join(root, f"fraud-alerts-{hour}.jsonl"), "a", encoding="utf-8") as out:
                    out.write("\n".join(lines) + "\n")
        if alerts and self.cfg.webhook_url:
            body = json.dumps({"stream_batch_id": batch_id, "alerts": list(alerts)}).encode()
            request = urllib.request.Request(
                self.cfg.webhook_url, body, {"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.cfg.timeout_seconds) as response:
                    response.read()
            except OSError as exc:
                raise JobFailed(
                    f"alert webhook {self.cfg.webhook_url} failed for micro-batch {batch_id} ({exc}); "
                    "the batch is committed, its alerts are re-sent on restart"
                ) from exc
        filesystem, root = self._fs(self.progress_dir)
        filesystem.create_dir(root, recursive=True)
        with filesystem.open_output_stream(f"{root}/delivered.tmp") as out:
            out.write(str(batch_id).encode())
        filesystem.move(f"{root}/delivered.tmp", f"{root}/delivered")


@dataclass
class BatchMetrics:
    """One micro-batch: row counts by status and where its seconds went."""

    batch_id: int
    counts: dict[str, int]
    model_version: str | None
    replayed: bool
    seconds: dict[str, float] = field(default_factory=dict)
    committed_at: float = 0.0  # epoch seconds: gold/fraud_alerts committed (or found committed)
    started_at: float = 0.0  # epoch seconds: foreachBatch called


class FraudAlertBatches:
    """The ``foreachBatch`` function of the fraud-alert stream."""

    def __init__(self, spark: SparkSession, config: Config, run_id: str) -> None:
        self.spark, self.config, self.run_id = spark, config, run_id
        cfg = config.nearline.fraud_alerts
        lake = Lakehouse(spark, config)
        self.alerts = table_ref(lake, cfg.alerts_table).create(FRAUD_ALERTS_SCHEMA, ["as_of_date"])
        self.quarantine = lake.table("ops", "quarantine").create(QUARANTINE_SCHEMA, QUARANTINE_PARTITIONS)
        self.champions = ChampionTracker(config)
        checkpoint = join_location(config.lakehouse.root, cfg.checkpoint_dir)
        self.sink = AlertSink(cfg.sink, config.lakehouse.root, join_location(checkpoint, "sink"))
        self.mcc_rates: dict[dt.date, DataFrame] = {}
        self.metrics: list[BatchMetrics] = []  # the newest RECENT_BATCHES_KEPT micro-batches
        self.batches = 0
        self.totals: dict[str, int] = {}  # rows by status over every micro-batch of this run
        # Called between micro-batches (this one committed, its cached rows released), on the query's
        # thread: where a benchmark samples the driver's memory without a micro-batch's rows in it.
        self.on_batch_end: Callable[[BatchMetrics], None] | None = None

    def rates_for(self, days: Sequence[dt.date]) -> DataFrame:
        """Merchant-category risk of ``days``: computed from silver once per day (known before the day)."""
        # A day older than the watermark reaches is not asked for again: the cache stays a few days long.
        reach = math.ceil(self.config.nearline.fraud_alerts.watermark_minutes / (24 * 60)) + 1
        for old in [d for d in self.mcc_rates if d < max(days) - dt.timedelta(days=reach)]:
            self.mcc_rates.pop(old).unpersist()
        for day in days:
            if day not in self.mcc_rates:
                self.mcc_rates[day] = day_mcc_risk_rates(self.spark, self.config, day).persist()
        frames = [self.mcc_rates[d] for d in days]
        out = frames[0]
        for frame in frames[1:]:
            out = out.unionByName(frame)
        return out

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started, started_at = time.monotonic(), time.time()
        rows = batch.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            self._process(rows, batch_id, started, started_at)
        except Py4JJavaError as exc:
            raise _short_java_error(exc, batch_id) from None
        finally:
            rows.unpersist()
        if self.on_batch_end is not None:
            self.on_batch_end(self.metrics[-1])

    def _process(self, rows: DataFrame, batch_id: int, started: float, started_at: float) -> None:
        seconds: dict[str, float] = {}
        mark = started

        def lap(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            seconds[name] = round(now - mark, 3)
            mark = now

        cfg = self.config.nearline.fraud_alerts
        # The champion before anything else: one that cannot be loaded stops the stream with nothing
        # of this micro-batch written (not even its quarantine rows), so a restart replays all of it.
        champion = self.champions.champion()
        lap("champion")
        # One small action reads the files, runs the per-card state (cached) and gives the counts and days.
        per_status = rows.groupBy(STATUS, "event_date").count().collect()
        counts: dict[str, int] = {}
        for r in per_status:
            counts[r[STATUS]] = counts.get(r[STATUS], 0) + r["count"]
        days = sorted({r["event_date"] for r in per_status if r[STATUS] == "scored"})
        lap("read_state")
        if counts.get("rejected", 0) + counts.get("late", 0):  # a quarantine commit only when there are some
            self.quarantine.append(
                quarantine_rows(rows.where(F.col(STATUS).isin("rejected", "late")), cfg.quarantine_feed,
                                batch_id, self.run_id),
                txn=(f"{APP_ID}.quarantine", batch_id),
            )  # fmt: skip
            lap("quarantine")
        version, replayed = None, False
        alerts: list[dict[str, Any]] = []
        if days:
            features = with_stream_features(
                rows.where(F.col(STATUS) == "scored"), self.config, self.rates_for(days)
            )
            cached: list[DataFrame] = []
            try:
                if cfg.time_phases:  # profiling: a Spark job per phase, to time each apart
                    features = features.persist(StorageLevel.MEMORY_AND_DISK)
                    cached.append(features)
                    features.count()
                    lap("features")
                version = champion.version
                scored = self._scores(features, champion, batch_id).persist(StorageLevel.MEMORY_AND_DISK)
                cached.append(scored)  # the alert records below come from it without recomputing
                if cfg.time_phases:
                    scored.count()
                    lap("model")
                # Features, scores, data files and the Delta commit: one Spark job, one commit.
                outcome = self.alerts.append(scored, txn=(APP_ID, batch_id))
                committed_at = time.time()
                replayed = outcome.noop
                lap("commit" if cfg.time_phases else "features_model_commit")
                committed = (
                    self.alerts.read().where(F.col("stream_batch_id") == batch_id) if replayed else scored
                )
                if self.sink.enabled and batch_id > self.sink.delivered():
                    alerts = _alert_records(committed)  # flagged rows only: the alert budget bounds them
            finally:
                for frame in cached:
                    frame.unpersist()
        else:
            committed_at = time.time()
        self.sink.deliver(batch_id, alerts)
        lap("sink")
        metrics = BatchMetrics(batch_id, counts, version, replayed, seconds, committed_at, started_at)
        self.metrics.append(metrics)
        if len(self.metrics) > RECENT_BATCHES_KEPT:
            del self.metrics[: len(self.metrics) - RECENT_BATCHES_KEPT]
        self.batches += 1
        for status, n in counts.items():
            self.totals[status] = self.totals.get(status, 0) + n
        runlog.event("stream_batch", job="banking.fraud_alerts", batch_id=batch_id, counts=counts,
                     model_version=version, replayed=replayed, alerts=len(alerts),
                     seconds=seconds)  # fmt: skip

    def _scores(self, features: DataFrame, champion: scoring.Champion, batch_id: int) -> DataFrame:
        threshold = float(champion.tags["threshold"])
        # The model's own calibration stage, as banking.score_fraud applies it: one score per version.
        scored = with_calibrated_score(champion.model.transform(features))
        # The micro-batch's own values come from a one-row frame, not literals: Spark writes a long or
        # timestamp literal into the generated code, so the whole feature/model/write stage was
        # compiled again at every micro-batch (3 compilations, ~25 classes, ~0.5 MB of metaspace each).
        values = [(batch_id, dt.datetime.now(dt.UTC))]
        batch = self.spark.createDataFrame(values, _BATCH_VALUES_SCHEMA).hint("broadcast")
        return scored.crossJoin(batch).select(
            *[F.col(f.name) for f in FEATURE_FIELDS],
            F.col(models.SCORE).alias("score"),
            (F.col(models.SCORE) >= F.lit(threshold)).alias("alert"),
            F.lit(threshold).alias("threshold"),
            F.lit(champion.name).alias("model_name"),
            F.lit(champion.version).alias("model_version"),
            F.col("_ingested_at").alias("arrived_at"),
            F.col("_scored_at").alias("scored_at"),
            F.col("_stream_batch_id").alias("stream_batch_id"),
            F.col("as_of_date"),
        )


# Characters of a JVM error's text handed back to Spark from foreachBatch (see _short_java_error).
_JAVA_ERROR_CHARS = 1000


class _ShortPy4JJavaError(Py4JJavaError):
    """A Py4JJavaError whose text is its first line and the Java exception, without the Java stack."""

    def __init__(self, text: str, java_exception: Any) -> None:
        super().__init__(text, java_exception)
        self.text = text

    def __str__(self) -> str:
        return self.text


# Printed in the traceback Spark reads as py4j's own class: Spark's stop check looks for that name.
_ShortPy4JJavaError.__module__ = Py4JJavaError.__module__
_ShortPy4JJavaError.__qualname__ = Py4JJavaError.__qualname__


def _short_java_error(exc: Py4JJavaError, batch_id: int) -> Py4JJavaError:
    """A JVM error of a micro-batch with a short text; its full text goes to the run log.

    When foreachBatch raises, Spark's stream thread matches the Python traceback's text against
    ``StreamExecution.PROXY_ERROR`` (``py4j.protocol.Py4JJavaError: An error occurred while
    calling((.|\\r\\n|\\r|\\n)*)(java.lang.InterruptedException|…)``, Spark 4.0.1) to tell a stop from a
    failure; the group under ``*`` recurses once per character, and the Java stack in the text (tens
    of kB) overflowed the thread's stack: a ``StackOverflowError`` at every stop in the middle of a
    micro-batch. The short text keeps py4j's first line and the Java exception (class and message),
    so a stop (the job's ``InterruptedException``) still matches and ends the query cleanly.
    """
    runlog.event("stream_batch_failed", job="banking.fraud_alerts", batch_id=batch_id, error=str(exc))
    text = f"{exc.errmsg}: {exc.java_exception.toString()}"
    return _ShortPy4JJavaError(text[:_JAVA_ERROR_CHARS], exc.java_exception)


def _alert_records(scored: DataFrame) -> list[dict[str, Any]]:
    flagged = scored.where(F.col("alert")).select(*_SINK_FIELDS)
    return [
        {k: (v.isoformat() if isinstance(v, dt.datetime) else float(v) if k == "amount_eur" else v)
         for k, v in r.asDict().items()}
        for r in flagged.collect()
    ]  # fmt: skip


def pin_state_buckets(checkpoint: str, buckets: int) -> None:
    """Record the state's bucket count beside the query checkpoint; another count is a clear error.

    A card's bucket is its hash mod the count: with another count its state would be in another
    bucket and its windows would silently start empty.
    """
    location = join_location(checkpoint, "state_buckets")
    filesystem, path = pafs.FileSystem.from_uri(
        location if "://" in location else "file://" + os.path.abspath(location.removeprefix("file:"))
    )
    try:
        with filesystem.open_input_stream(path) as f:
            pinned = int(f.read().decode())
    except (FileNotFoundError, OSError, ValueError):
        pinned = None
    if pinned is None:
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as out:
            out.write(str(buckets).encode())
    elif pinned != buckets:
        raise JobFailed(
            f"the stream's state was built with nearline.fraud_alerts.state_buckets={pinned}, not {buckets}: "
            "set it back (or start from a new checkpoint)"
        )


def start_fraud_alerts(
    spark: SparkSession, config: Config, available_now: bool = False
) -> tuple[Any, FraudAlertBatches]:
    """Start the query (after the checks that need no Spark job); returns it and its batch handler."""
    cfg = config.nearline.fraud_alerts
    landing = join_location(config.landing_path(), FEED)
    if "://" not in landing and not os.path.isdir(landing.removeprefix("file:")):
        raise JobFailed(f"landing folder {landing} does not exist (deliver transaction files there first)")
    key = require_pii_key(config)
    handler = FraudAlertBatches(spark, config, f"stream-{uuid.uuid4().hex[:12]}")
    # no champion, or one that cannot load: a clear error before the query starts
    handler.champions.champion()
    stream = with_card_windows(landing_stream(spark, config, key), config)
    checkpoint = join_location(config.lakehouse.root, cfg.checkpoint_dir)
    pin_state_buckets(checkpoint, cfg.state_buckets)
    writer = (
        stream.writeStream.queryName("fraud_alerts")
        .foreachBatch(handler)
        .option("checkpointLocation", join_location(checkpoint, "query"))
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    )
    # The query takes a copy of the session's settings when it starts: these apply to it alone.
    settings: dict[str, str] = {
        # The state operator's partitions (each a state-store task per micro-batch; the session's
        # default is sized for batch jobs).
        "spark.sql.shuffle.partitions": str(cfg.state_partitions),
        # No empty micro-batch when only the watermark moved: the state has no timeouts to fire, and
        # such a batch would delay the next one with data by a whole micro-batch.
        "spark.sql.streaming.noDataMicroBatches.enabled": "false",
        # The state store (README: state store): RocksDB keeps the state off the JVM heap, and with
        # changelog checkpointing a micro-batch uploads only the changed buckets, not a snapshot.
        # Spark records the provider in the checkpoint: a restart keeps the one it started with.
        "spark.sql.streaming.stateStore.providerClass": STATE_STORES[cfg.state_store],
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # Checkpoint size (README: memory and disk): each micro-batch's changelog is about the whole
        # state (every bucket is touched), so the versions kept and the cleanup interval bound it.
        "spark.sql.streaming.minBatchesToRetain": str(cfg.min_batches_to_retain),
        "spark.sql.streaming.stateStore.maintenanceInterval": f"{int(cfg.maintenance_seconds * 1000)}ms",
    }
    if cfg.rocksdb_memory_mb:
        # One bound for the memtables and block cache of all partitions' RocksDB (native memory, in
        # the JVM's RSS), instead of a write buffer and cache per instance growing with the state.
        settings["spark.sql.streaming.stateStore.rocksdb.boundedMemoryUsage"] = "true"
        settings["spark.sql.streaming.stateStore.rocksdb.maxMemoryUsageMB"] = str(cfg.rocksdb_memory_mb)
    with session_settings(spark, settings):
        query = writer.start()
    return query, handler


def run_fraud_alerts(spark: SparkSession, config: Config, available_now: bool = False) -> dict[str, Any]:
    """Run the stream until it stops (``available_now``: once every landed file is processed)."""
    query, handler = start_fraud_alerts(spark, config, available_now)
    try:
        query.awaitTermination()
    except StreamingQueryException as exc:
        raise JobFailed(f"banking.fraud_alerts stopped: {_root_message(exc)}") from None
    except KeyboardInterrupt:
        query.stop()  # SIGINT: stop between micro-batches' commits; the checkpoint stays consistent
    return {"batches": handler.batches, **handler.totals}


def _root_message(exc: BaseException) -> str:
    text = str(exc)
    marker = "JobFailed: "
    if marker in text:  # the foreachBatch error, without the Python and JVM stack around it
        return text[text.rindex(marker) + len(marker) :].splitlines()[0]
    return text.splitlines()[0] if text else type(exc).__name__


TRANSACTION_HEADER = ",".join(TRANSACTION_FIELDS)
