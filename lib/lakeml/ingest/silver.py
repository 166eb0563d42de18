"""Bronze → silver: parse, standardize, quarantine, deduplicate and quality-check one feed, incrementally.

One batch = the bronze versions after the one silver last processed, up to a target version. Steps,
each idempotent under the batch's Delta txn ``(app, target bronze version)``:

1. find the event dates the batch touches (``SilverFeed.event_dates``: a pass that parses only the
   timestamp field), so only those dates of silver are read for the dedup;
2. parse the feed's raw lines (``SilverFeed.parse``): typed silver columns plus a reject reason;
   classify every bronze row exactly once: ``header`` (a CSV header line), ``quarantined``,
   ``duplicate`` (its business key is already in silver, or an earlier delivery in the batch has
   it) or ``loaded``; in the same pass, write the loaded rows' silver files and the quarantined
   rows' ``ops/quarantine`` files (not committed yet) and observe the counts and every quality
   check. The counts must add up to the bronze rows of the range (from the log);
3. commit the quarantine files;
4. record the checks in ``ops/dq_results``; an error-level failure fails the job here, and silver's
   files are dropped uncommitted;
5. record the accounting in ``ops/silver_batches``, then commit the silver files with the txn that says
   which bronze version silver now covers.

A run that died after step 3 is replayed with the same target (the quarantine txn says how far it
got), so reruns neither skip nor double any row. Dedup rule: the business key is unique within its
event date (the date is derived from the record's own timestamp, so a re-delivered record has the
same one); the first delivery wins, by bronze ``_ingested_at``, then ``_source_file``, then a hash
of the parsed values (copies that are equal give the same silver row whichever is picked).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml import runlog
from lakeml.config import Config, SilverConfig
from lakeml.errors import ConfigError, JobFailed
from lakeml.lakehouse import Lakehouse, StagedAppend, write_split
from lakeml.lakehouse.table import note_input
from lakeml.quality.expectations import CheckResult, check_aggregates, check_results, validate_checks
from lakeml.quality.ops import (
    DQ_RESULTS_SCHEMA,
    QUARANTINE_PARTITIONS,
    QUARANTINE_SCHEMA,
    SILVER_BATCHES_SCHEMA,
)
from lakeml.steps import DateRange, RunIdentity, Step, StepResult, current_run
from lakeml.transforms.pii import pii_key

EVENT_DATE = "event_date"
REJECT_REASON = "_reject_reason"
IS_HEADER = "_is_header"
STATUS = "_status"
KEY_REPEATED = "_key_repeated"
STATUSES = ("header", "quarantined", "duplicate", "loaded")
# Bronze columns every parse result carries through, for quarantine rows and lineage.
BRONZE_LINEAGE = ("value", "raw_bytes", "_source_file", "_batch_id", "_ingested_at")
# The last columns of every silver table: the partition, and where and when each row came in.
SILVER_LINEAGE_FIELDS = (
    T.StructField(EVENT_DATE, T.DateType(), False),  # partition: UTC date of the event
    T.StructField("_source_file", T.StringType(), False),
    T.StructField("_ingested_at", T.TimestampType(), False),
)


@dataclass(frozen=True)
class ParseRules:
    """What a feed's parser needs besides the rows: limits and reference data, and the PII key."""

    silver: SilverConfig
    pii_key: bytes | None = None


@dataclass(frozen=True)
class SilverFeed:
    """One feed's bronze → silver contract."""

    name: str
    schema: T.StructType  # the silver table; partitioned by event_date
    keys: tuple[str, ...]  # business key, unique within an event date
    # bronze rows → every silver column + _reject_reason + _is_header + BRONZE_LINEAGE
    parse: Callable[[DataFrame, ParseRules], DataFrame]
    needs_pii_key: bool = False
    # bronze rows → their event_date, reading only the timestamp (a superset of the dates ``parse``
    # gives valid rows); None: silver's date pass runs the full parse instead
    event_dates: Callable[[DataFrame], DataFrame] | None = None


@dataclass
class SilverLoad:
    """What one run did for one feed (all zeros when silver was already up to date)."""

    feed: str
    bronze_from: int = -1
    bronze_to: int = -1
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return sum(self.counts.values())


def classify_rows(parsed: DataFrame, keys: Sequence[str], existing_keys: DataFrame) -> DataFrame:
    """Reads _reject_reason, _is_header, the keys, event_date and lineage; adds _status (one of STATUSES).

    The silver keys of the touched dates are unioned in and ranked first, so one window over
    (keys, event_date) finds both kinds of duplicate with one shuffle, spread over every task. The
    shuffle is by the keys alone, so all dates of a key meet in one task (``flag_repeated_keys``).
    """
    partition = [*keys, EVENT_DATE]
    valid = F.col(REJECT_REASON).isNull() & ~F.col(IS_HEADER)
    known = existing_keys.select(*partition).withColumn("_in_silver", F.lit(True))
    # Silver's rows first, then valid rows, so an invalid copy never makes its valid twin a duplicate.
    # Last tie-breaker: a hash of the row's values, so the pick does not depend on task order.
    content = F.xxhash64(*[F.col(c) for c in parsed.columns if c not in ("value", "raw_bytes")])
    first_delivery = Window.partitionBy(*partition).orderBy(
        F.col("_in_silver").desc(), valid.desc(), "_ingested_at", "_source_file", content
    )
    return (
        parsed.withColumn("_in_silver", F.lit(False))
        .unionByName(known, allowMissingColumns=True)
        .repartition(*keys)
        .withColumn("_delivery", F.row_number().over(first_delivery))
        .where(~F.col("_in_silver"))
        .withColumn(
            STATUS,
            F.when(F.col(IS_HEADER), "header")
            .when(F.col(REJECT_REASON).isNotNull(), "quarantined")
            .when(F.col("_delivery") > 1, "duplicate")
            .otherwise("loaded"),
        )
        .drop("_delivery", "_in_silver")
    )


def flag_repeated_keys(classified: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Reads _status, the keys and event_date; adds _key_repeated: a loaded row whose key an earlier date's
    loaded row has.

    Dedup keeps a key once per event date, so this is what a ``unique`` check on the key counts.
    Its window sorts by (keys, event_date), the order ``classify_rows`` leaves, so it adds no sort.
    """
    earlier_dates = Window.partitionBy(*keys).orderBy(EVENT_DATE).rowsBetween(Window.unboundedPreceding, 0)
    loaded = F.col(STATUS) == "loaded"
    return classified.withColumn(KEY_REPEATED, loaded & (F.count_if(loaded).over(earlier_dates) > 1))


def quarantine_columns(feed: str, bronze_version: int, run_id: str) -> list[Column]:
    """The QUARANTINE_SCHEMA columns of a classified row (meaningful for the quarantined ones)."""
    return [
        F.lit(feed).alias("feed"),
        F.col("value").alias("raw_record"),
        F.col("raw_bytes"),
        F.col(REJECT_REASON).alias("reason"),
        F.col("_batch_id").alias("batch_id"),
        F.col("_source_file").alias("source_file"),
        F.lit(bronze_version).cast("long").alias("bronze_version"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
    ]


class SilverStep:
    """The tables one feed's silver step reads and writes, and the batch it is due to process."""

    def __init__(self, spark: SparkSession, config: Config, feed: SilverFeed) -> None:
        self.spark, self.config, self.feed = spark, config, feed
        lake = Lakehouse(spark, config)
        self.bronze = lake.table("bronze", feed.name)
        self.silver = lake.table("silver", feed.name)
        self.quarantine = lake.table("ops", "quarantine")
        self.job_runs = lake.table("ops", "silver_batches")
        self.dq_results = lake.table("ops", "dq_results")
        self.checks = config.silver.checks.get(feed.name, ())
        validate_checks(feed.name, self.checks, feed.schema.fieldNames())
        for check in self.checks:
            if check.check == "unique" and sorted(check.columns) != sorted(feed.keys):
                raise ConfigError(
                    f"silver.checks.{feed.name}: unique({', '.join(check.columns)}) must name the business "
                    "key "
                    f"({', '.join(feed.keys)}): silver checks run inside the load pass, which knows the "
                    "key's repeats"
                )

    def app_id(self, kind: str) -> str:
        return f"lakeml.{kind}.{self.feed.name}"

    def create_tables(self) -> None:
        if not self.bronze.exists():
            raise JobFailed(
                f"bronze/{self.feed.name} does not exist at {self.bronze.uri}: run the ingest_bronze job "
                "first"
            )
        self.silver.create(self.feed.schema, [EVENT_DATE])
        self.quarantine.create(QUARANTINE_SCHEMA, QUARANTINE_PARTITIONS)
        self.job_runs.create(SILVER_BATCHES_SCHEMA)
        self.dq_results.create(DQ_RESULTS_SCHEMA)

    def pending_range(self) -> tuple[int, int]:
        """(last bronze version in silver, bronze version to process up to); equal when up to date."""
        done = self.silver.transaction_version(self.app_id("silver"))
        done = -1 if done is None else done
        quarantined = self.quarantine.transaction_version(self.app_id("quarantine"))
        if quarantined is not None and quarantined > done:
            return done, quarantined  # an interrupted batch: replay exactly its range
        return done, self.bronze.version()


def require_pii_key(config: Config) -> bytes:
    """The PII key (environment or key file); the preflight of every job that tokenizes, before Spark
    starts."""
    return pii_key(config.silver.pii_key_env, config.silver.pii_key_file, config.lakehouse.root)


def load_bronze_to_silver(
    spark: SparkSession, config: Config, dates: DateRange, feed: SilverFeed
) -> SilverLoad:
    """Process every bronze row of ``feed`` not yet in silver as of ``dates.last``; returns the batch's
    accounting. Its ops rows name the job and run it runs as (``steps.current_run``)."""
    run = current_run()
    # The key first: without it nothing may be written, not even empty tables.
    rules = ParseRules(config.silver, require_pii_key(config) if feed.needs_pii_key else None)
    step = SilverStep(spark, config, feed)
    step.create_tables()
    done, target = step.pending_range()
    # The bronze version this run covers up to is its input, also when nothing is new: a run that read
    # nothing would record no input state, and such a run is never skipped as "inputs unchanged".
    note_input(step.bronze.uri, target)
    load = SilverLoad(feed.name, done, target)
    if target <= done:
        return load

    started = _utc_now()
    rows_in = sum(e.num_records or 0 for e in step.bronze.appended_files(done, target))
    bronze = step.bronze.changes_since(done, until=target)
    touched = touched_dates(
        feed.event_dates(bronze) if feed.event_dates else feed.parse(bronze, rules).select(EVENT_DATE)
    )
    existing = (
        step.silver.read(where=[(EVENT_DATE, "in", touched)])
        if touched
        else spark.createDataFrame([], feed.schema)
    )
    classified = classify_rows(feed.parse(bronze, rules), feed.keys, existing).transform(
        lambda df: flag_repeated_keys(df, feed.keys)
    )
    return _commit_batch(run, dates.last, step, load, classified, rows_in, started)


def touched_dates(event_dates: DataFrame) -> list[dt.date]:
    """The distinct non-NULL values of ``event_date`` (per-batch metadata: days, not rows)."""
    return [r[0] for r in event_dates.select(EVENT_DATE).distinct().collect() if r[0] is not None]


def _commit_batch(
    run: RunIdentity,
    run_date: dt.date,
    step: SilverStep,
    load: SilverLoad,
    classified: DataFrame,
    rows_in: int,
    started: dt.datetime,
) -> SilverLoad:
    feed, target = step.feed.name, load.bronze_to
    run_end = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time())
    is_loaded = F.col(STATUS) == "loaded"
    # Observed while the files are written: the accounting and every quality check on the rows to load.
    aggregates = {f"__n_{s}": F.count_if(F.col(STATUS) == s) for s in STATUSES}
    aggregates.update(
        check_aggregates(
            step.checks,
            run_end,
            checked=is_loaded,
            repeated={tuple(sorted(step.feed.keys)): F.col(KEY_REPEATED)},
        )
    )
    observed = Observation(f"silver-{feed}")
    staged = write_split(
        classified.observe(observed, *[expr.alias(name) for name, expr in aggregates.items()]),
        F.col(STATUS),
        {
            "loaded": (step.silver, step.feed.schema.fieldNames()),
            "quarantined": (step.quarantine, quarantine_columns(feed, target, run.run_id)),
        },
    )
    try:
        return _commit_staged(run, run_date, step, load, staged, observed.get, rows_in, started)
    finally:
        for files in staged.values():
            files.discard()  # whatever was not committed


def _commit_staged(
    run: RunIdentity,
    run_date: dt.date,
    step: SilverStep,
    load: SilverLoad,
    staged: dict[str, StagedAppend],
    values: dict[str, Any],
    rows_in: int,
    started: dt.datetime,
) -> SilverLoad:
    feed, target = step.feed.name, load.bronze_to
    load.counts = {s: int(values[f"__n_{s}"]) for s in STATUSES}

    def record_run(status: str, message: str | None, txn: tuple[str, int] | None) -> None:
        c = load.counts
        row = (
            run.run_id, run.job, f"silver/{feed}", run_date, load.bronze_from, target, rows_in,
            c["loaded"], c["duplicate"], c["quarantined"], c["header"], status, message, started, _utc_now(),
        )  # fmt: skip
        step.job_runs.append_rows([row], txn=txn)

    if load.rows_in != rows_in:
        message = (f"row accounting mismatch: bronze has {rows_in} rows in versions ({load.bronze_from}, "
            f"{target}], classified {load.counts}")
        record_run("failed", message, None)
        raise JobFailed(f"silver/{feed}: {message}")

    staged["quarantined"].commit(txn=(step.app_id("quarantine"), target))
    records = rows_in - load.counts["header"]
    load.checks = check_results(values, step.checks, records, load.counts["quarantined"])
    failed = [c for c in load.checks if not c.passed and c.level == "error"]
    _record_checks(run, step, load, txn=None if failed else (step.app_id("dq"), target))
    for check in load.checks:
        if not check.passed:
            runlog.event("dq_check_failed", table=f"silver/{feed}", level=check.level, check=check.describe())
    if failed:
        message = "data-quality checks failed: " + "; ".join(c.describe() for c in failed)
        record_run("failed", message, None)
        raise JobFailed(f"silver/{feed}: {message}; the batch was not committed")

    record_run("ok", None, (step.app_id("job_runs"), target))
    outcome = staged["loaded"].commit(txn=(step.app_id("silver"), target))
    if not outcome.noop and outcome.rows_added != load.counts["loaded"]:
        message = f"silver committed {outcome.rows_added} rows, expected {load.counts['loaded']}"
        record_run("failed", message, None)
        raise JobFailed(f"silver/{feed}: {message}")
    return load


def _record_checks(run: RunIdentity, step: SilverStep, load: SilverLoad, txn: tuple[str, int] | None) -> None:
    if not load.checks:
        return
    now = _utc_now()
    rows = [
        (run.run_id, f"silver/{step.feed.name}", load.bronze_to, c.check, c.target, c.level, c.passed,
         c.failed_rows, c.rows_checked, c.observed, now)
        for c in load.checks
    ]  # fmt: skip
    step.dq_results.append_rows(rows, txn=txn)


def _utc_now() -> dt.datetime:
    # Zone-aware: PySpark would read a naive datetime in the driver process's local zone.
    return dt.datetime.now(dt.UTC)


def silver_step(*feeds: SilverFeed) -> Step:
    """The step loading ``feeds`` from bronze to silver; rows in = bronze rows taken, out = rows loaded."""

    def build_silver(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
        return silver_result([load_bronze_to_silver(spark, config, dates, feed) for feed in feeds])

    return build_silver


def silver_result(loads: Sequence[SilverLoad]) -> StepResult:
    """The accounting of one silver run over several feeds."""
    details: dict[str, int] = {}
    for load in loads:
        for status, count in load.counts.items():
            details[f"{load.feed}_{status}"] = count
    return StepResult(
        rows_in=sum(load.rows_in for load in loads),
        rows_out=sum(load.counts["loaded"] for load in loads),
        details=details,
    )
