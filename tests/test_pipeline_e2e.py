"""The whole ingestion pipeline on generated data: every bronze row accounted for, dirt caught, reruns
no-ops."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakeml.config import Config, load_config
from lakeml.domains.banking.silver import CHARGEBACKS, TRANSACTIONS
from lakeml.domains.commerce.silver import CLICKSTREAM
from lakeml.domains.maintenance.silver import MAINTENANCE, TELEMETRY
from lakeml.lakehouse import DeltaTableRef, Lakehouse
from lakeml.pipeline import registry, run_job, topological_order
from lakeml.runstate import INPUTS_UNCHANGED
from lakeml.steps import DateRange
from lakeml.synthetic.landing import run_generation
from lakeml.transforms.pii import PAN_SPAN
from tests.conftest import delta_spark_skip_reason
from tests.kill_harness import comparable_rows

FEEDS = (CLICKSTREAM, TRANSACTIONS, CHARGEBACKS, TELEMETRY, MAINTENANCE)
# Yesterday, so generated events are never "in the future" next to their ingestion time.
END = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


# Data jobs only: two generated days hold no mature fraud labels; the model jobs have their own tests.
DATA_STEPS = ("ingest_bronze", "build_silver", "build_features")


def run_pipeline(spark: SparkSession, config: Config, run_date: dt.date = END) -> dict[str, dict]:
    jobs = registry()
    names = [n for n in topological_order(jobs) if n.split(".", 1)[1] in DATA_STEPS]
    assert len(names) == 9
    return {
        name: dict(run_job(jobs[name], spark, config, DateRange.single(run_date)).details) for name in names
    }


def table_versions(lake: Lakehouse) -> dict[str, int]:
    """Versions of every table a rerun with nothing new must leave alone (all but ops/job_runs)."""
    versions = rerun_checked_versions(lake, Path(lake.config.lakehouse.root))
    assert {name.split("/")[0] for name in versions} == set(Lakehouse.LAYERS)
    return versions


# The run log lines (lakeml's JSON events) of the fixture's pipeline run, for the PAN scan.
RUN_LOG: list[str] = []


class _Collect(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        RUN_LOG.append(record.getMessage())


@pytest.fixture(scope="module")
def pipeline_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict]:
    root: Path = tmp_path_factory.mktemp("e2e")
    config = load_config("test", [f"lakehouse.root={root}"])
    run_generation(spark, config.landing_path(), scale=1, days=2, seed=11, end_date=END)
    collect, logger = _Collect(), logging.getLogger("lakeml")
    level = logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    try:
        return config, run_pipeline(spark, config)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)


def test_every_bronze_row_is_loaded_duplicate_quarantined_or_a_header(spark, pipeline_lake):
    config, _ = pipeline_lake
    lake = Lakehouse(spark, config)
    runs = {r.table: r for r in lake.table("ops", "silver_batches").read().collect()}
    assert set(runs) == {f"silver/{f.name}" for f in FEEDS}
    for feed in FEEDS:
        run = runs[f"silver/{feed.name}"]
        assert run.status == "ok"
        assert run.rows_in == lake.table("bronze", feed.name).read().count() > 0
        assert run.rows_in == run.rows_loaded + run.rows_duplicate + run.rows_quarantined + run.rows_header
        silver = lake.table("silver", feed.name).read()
        assert silver.count() == run.rows_loaded
        assert silver.groupBy(*feed.keys, "event_date").count().where(F.col("count") > 1).count() == 0
        quarantined = lake.table("ops", "quarantine").read(where=[("feed", "=", feed.name)])
        assert quarantined.count() == run.rows_quarantined
    # The generator's dirt is caught: malformed lines, missing fields, bad timestamps, duplicates.
    reasons = {
        r.reason.split(":")[0] for r in lake.table("ops", "quarantine").read().select("reason").collect()
    }
    assert {"malformed JSON (not one complete object)", "missing ts", "invalid ts"} <= reasons
    assert runs["silver/clickstream"].rows_duplicate > 0 and runs["silver/transactions"].rows_duplicate > 0
    assert (
        runs["silver/transactions"].rows_header
        == lake.table("bronze", "transactions").read().select("_source_file").distinct().count()
    )  # one header per file


def test_schema_change_and_pii_in_generated_data(spark, pipeline_lake):
    config, _ = pipeline_lake
    lake = Lakehouse(spark, config)
    telemetry = lake.table("silver", "telemetry").read()
    by_firmware = telemetry.groupBy(F.substring("firmware", 1, 2).alias("major")).agg(
        F.count("vibration_mm_s").alias("with_vibration"), F.count(F.lit(1)).alias("rows")
    )
    counts = {r.major: (r.with_vibration, r.rows) for r in by_firmware.collect()}
    assert set(counts) >= {"3.", "4."}  # both sides of the rename ...
    for with_vibration, rows in counts.values():
        assert with_vibration > 0.95 * rows  # ... carry the one silver column


def landing_pans(spark: SparkSession, config: Config) -> set[str]:
    """Every Luhn-valid PAN-like span of every landing file, as digits (the card numbers to look for)."""
    lines = spark.read.option("recursiveFileLookup", "true").text(config.landing_path())
    spans = lines.select(F.explode(F.regexp_extract_all("value", F.lit(PAN_SPAN), 0)).alias("s"))
    digits = spans.select(F.regexp_replace("s", "[ -]", "").alias("d"))
    return {r.d for r in digits.where(F.call_function("luhn_check", F.col("d"))).distinct().collect()}


def digit_runs(text: str) -> list[str]:
    """Runs of 13+ digits in ``text``, separators (space, dash) removed, whatever surrounds them."""
    return [re.sub(r"[ -]", "", m) for m in re.findall(r"[0-9](?:[ -]?[0-9]){12,}", text)]


def holds_a_pan(run: str, pans: set[str]) -> bool:
    return any(run[i : i + n] in pans for n in range(13, 20) for i in range(len(run) - n + 1))


def pan_cells(spark: SparkSession, df: DataFrame, pans: set[str]) -> DataFrame:
    """The digit runs of ``df``'s string and binary cells that hold one of ``pans`` (none: empty)."""
    texts = [
        F.col(f.name) if f.dataType.simpleString() == "string" else F.decode(f.name, "ISO-8859-1")
        for f in df.schema.fields
        if f.dataType.simpleString() in ("string", "binary")
    ]
    if not texts:
        texts = [F.lit("")]
    runs = df.select(F.explode(F.array(*texts)).alias("t")).select(
        F.explode(F.regexp_extract_all("t", F.lit(r"[0-9](?:[ -]?[0-9]){12,}"), 0)).alias("run")
    )
    runs = runs.select(F.regexp_replace("run", "[ -]", "").alias("run"))
    pan_table = spark.createDataFrame([(p,) for p in pans], "pan string")
    return runs.join(F.broadcast(pan_table), F.instr("run", F.col("pan")) > 0)


def test_no_card_number_is_stored_past_the_landing_zone(spark, pipeline_lake):
    """PCI DSS: the landing feeds' PANs appear in no table cell, log, checkpoint or other file of the lake."""
    config, _ = pipeline_lake
    pans = landing_pans(spark, config)
    assert len(pans) > 100
    root, landing = Path(config.lakehouse.root), Path(config.landing_path())
    tables = sorted(p.parent for p in root.rglob("_delta_log") if landing not in p.parents)
    assert len(tables) >= 13  # bronze, silver, gold and ops
    for path in tables:
        found = pan_cells(spark, Lakehouse(spark, config).at(str(path)).read(), pans)
        assert found.count() == 0, f"clear card numbers in {path}: {found.limit(3).collect()}"
    # Every other file: Delta logs, checkpoints, stream state, markers (Parquet data is read above).
    others = [
        p for p in root.rglob("*") if p.is_file() and landing not in p.parents and p.suffix != ".parquet"
    ]
    assert any("_delta_log" in p.parts for p in others) and any("_checkpoints" in p.parts for p in others)
    for path in others:
        text = path.read_bytes().decode("latin-1")
        assert not any(holds_a_pan(run, pans) for run in digit_runs(text)), f"clear card number in {path}"
    # The run's log lines (stderr, where a scheduler keeps them): quarantine samples, errors, paths.
    assert len(RUN_LOG) > 9
    for line in RUN_LOG:
        assert not any(holds_a_pan(run, pans) for run in digit_runs(line)), (
            f"clear card number in {line[:300]}"
        )


def test_rerunning_the_pipeline_changes_nothing(spark, pipeline_lake):
    config, _ = pipeline_lake
    lake = Lakehouse(spark, config)
    before = table_versions(lake)
    details = run_pipeline(spark, config)
    assert table_versions(lake) == before
    # Nothing new, nothing done: every job skips, the bronze loads too (their landing listings are unchanged).
    skipped = {name for name, d in details.items() if d.get("skipped") == INPUTS_UNCHANGED}
    assert skipped == set(details)
    assert all(v == 0 for job in details.values() for k, v in job.items() if k.endswith("_loaded"))


def test_every_job_run_is_recorded_in_ops_job_runs_with_its_input_versions(spark, pipeline_lake):
    config, _ = pipeline_lake
    lake = Lakehouse(spark, config)
    runs = lake.table("ops", "job_runs").read().orderBy("started_at", ascending=False).collect()
    first = {r.job: r for r in runs}  # each job's first run (the fixture's; a rerun test may follow)
    assert len(first) == 9 and {r.status for r in first.values()} == {"ok"}
    assert len({r.run_id for r in runs}) == len(runs) and all(r.noop is False for r in first.values())
    silver = first["banking.build_silver"]
    assert silver.run_date == silver.first_date == END and silver.seconds > 0
    assert (
        silver.rows_in
        == lake.table("bronze", "transactions").read().count()
        + lake.table("bronze", "chargebacks").read().count()
    )
    versions = json.loads(silver.input_versions)
    assert versions["bronze/transactions"] == lake.table("bronze", "transactions").version()
    assert set(json.loads(first["maintenance.build_features"].input_versions)) >= {
        "silver/telemetry",
        "silver/maintenance",
    }


# ---------------------------------------------------------------------------- both engines
# Columns that differ between two runs by nature: when something ran, how long it took, the run's id.
RUN_COLUMNS = ("run_id", "seconds")


def lake_tables(root: Path) -> list[str]:
    """``layer/name`` of every Delta table under ``root``."""
    return sorted(
        f"{layer}/{table.name}"
        for layer in Lakehouse.LAYERS
        for table in (root / layer).glob("*")
        if (table / "_delta_log").is_dir()
    )


def rerun_checked_versions(lake: Lakehouse, root: Path) -> dict[str, int]:
    """Versions of the tables a rerun with nothing new must leave alone: every one but ops/job_runs,
    which records every run (a rerun's jobs skip: nothing new, nothing done)."""
    return {name: lake.at(str(root / name)).version() for name in lake_tables(root) if name != "ops/job_runs"}


def lake_config(root: Path, engine: str) -> Config:
    return load_config("test", [f"lakehouse.root={root}", f"lakehouse.engine={engine}"])


@pytest.fixture(scope="module")
def native_lake(spark: SparkSession, pipeline_lake, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The pipeline of ``pipeline_lake`` (a copy of its landing files, same day) run on delta-spark."""
    reason = delta_spark_skip_reason()
    if reason:
        pytest.skip(reason)
    config = lake_config(tmp_path_factory.mktemp("e2e-native"), "delta-spark")
    shutil.copytree(pipeline_lake[0].landing_path(), config.landing_path())
    run_pipeline(spark, config)
    return config


def test_delta_spark_builds_the_same_tables_and_a_rerun_changes_nothing(spark, pipeline_lake, native_lake):
    rs_config, _ = pipeline_lake
    rs_root, native_root = Path(rs_config.lakehouse.root), Path(native_lake.lakehouse.root)
    names = lake_tables(rs_root)
    assert lake_tables(native_root) == names
    assert {n.split("/")[0] for n in names} == set(Lakehouse.LAYERS)
    for name in names:
        if name == "ops/job_runs":
            continue  # a log of runs: the delta-rs lake has had more of them (the rerun tests above)
        expected = comparable_rows(spark, rs_config, name)
        assert expected.count() > 0 or name.startswith("ops/"), name
        assert_df_equality(
            comparable_rows(spark, native_lake, name),
            expected,
            ignore_row_order=True,
            ignore_nullable=True,
            allow_nan_equality=True,
            ignore_metadata=True,
        )
    lake = Lakehouse(spark, native_lake)
    before = rerun_checked_versions(lake, native_root)
    details = run_pipeline(spark, native_lake)
    assert rerun_checked_versions(lake, native_root) == before
    assert all(v == 0 for job in details.values() for k, v in job.items() if k.endswith("_loaded"))


# Loading the same files over two days instead of one also changes the batches and versions they came in.
BATCH_COLUMNS = (*RUN_COLUMNS, "_batch_id", "batch_id", "_ingest_date", "bronze_version")


def deliver(generated: Path, landing: Path, until: dt.date) -> None:
    """Copy the generated landing files delivered up to ``until`` (their names carry the day)."""
    for path in generated.rglob("*-20??-??-??-*"):
        day = dt.date.fromisoformat(path.name.split("-", 1)[1][:10])
        target = landing / path.relative_to(generated)
        if day <= until and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def test_switching_engines_between_days_loads_nothing_twice_and_loses_nothing(
    spark, pipeline_lake, tmp_path_factory
):
    """Day 1 on delta-rs, day 2 on delta-spark, then back: the same rows as one run on one engine."""
    reason = delta_spark_skip_reason()
    if reason:
        pytest.skip(reason)
    rs_config, _ = pipeline_lake
    generated = Path(rs_config.landing_path())
    root = tmp_path_factory.mktemp("e2e-switch")
    day_one = END - dt.timedelta(days=1)
    landing = Path(lake_config(root, "delta-rs").landing_path())

    deliver(generated, landing, day_one)
    run_pipeline(spark, lake_config(root, "delta-rs"), day_one)
    names = lake_tables(root)
    clicks = DeltaTableRef(spark, str(root / "silver/clickstream"), rs_config.lakehouse, "delta-rs")
    kept_version = clicks.version()
    kept_rows = clicks.read().count()
    clicks.protect(kept_version, "switch test")

    deliver(generated, landing, END + dt.timedelta(days=30))
    run_pipeline(spark, lake_config(root, "delta-spark"), END)

    lake = Lakehouse(spark, lake_config(root, "delta-rs"))
    before = rerun_checked_versions(lake, root)
    details = run_pipeline(spark, lake_config(root, "delta-rs"), END)
    assert rerun_checked_versions(lake, root) == before
    assert all(v == 0 for job in details.values() for k, v in job.items() if k.endswith("_loaded"))

    # After the rerun: a vacuum commits to the log, a new input version for the jobs reading the table.
    native_clicks = DeltaTableRef(spark, clicks.uri, rs_config.lakehouse, "delta-spark")
    native_clicks.vacuum(retention_hours=0, enforce_retention=False)
    assert native_clicks.read(version=kept_version).count() == kept_rows  # protected across engines

    tables = lake_tables(root)
    assert set(names) <= set(tables) == set(lake_tables(Path(rs_config.lakehouse.root)))
    switched = lake_config(root, "delta-rs")
    for name in tables:
        if name.split("/")[0] in ("bronze", "silver") or name == "ops/quarantine":
            assert_df_equality(
                comparable_rows(spark, switched, name, BATCH_COLUMNS),
                comparable_rows(spark, rs_config, name, BATCH_COLUMNS),
                ignore_row_order=True,
                ignore_nullable=True,
                allow_nan_equality=True,
            )


# ---------------------------------------------------------------------------- a trained fraud model
# Two generated days hold no mature fraud label (chargebacks come 2-45 days late): the copy gets a
# fraud chargeback in silver for about 1 in 15 of its transactions (reported an hour after each), and
# a one-day label window; labels refreshed as of the next day, the features the pipeline built from
# the landing files are all labelled and the fraud model trains on them. The model's settings are the smallest
# that train.
FRAUD_SETTINGS = (
    "features.banking.label_window_days=1",
    "features.banking.label_refresh_days=1",
    "ml.fraud.split=time_fraction",
    "ml.fraud.validation_fraction=0.25",
    "ml.fraud.test_fraction=0.25",
    "ml.fraud.imbalance=[none]",
    "ml.fraud.families={logistic: {regParam: [0.01], elasticNetParam: [0.0]}}",
    "ml.fraud.promotion.floors.auprc=0.0",
    "ml.fraud.promotion.floors.roc_auc=0.0",
)


def pans_in_file(path: Path, pans: set[str]) -> list[str]:
    """Card numbers of ``pans`` held by the file: in its bytes, or in any string of a Parquet file
    (compressed pages hide them from a byte scan), or in the text dump of an SQLite database."""
    import sqlite3

    import pyarrow.parquet as pq

    texts = [path.read_bytes().decode("latin-1")]
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        cells = (v for column in table.columns for v in column.to_pylist())
        texts += [str(v) for v in cells if isinstance(v, str | bytes)]
    elif path.suffix == ".db":
        with sqlite3.connect(path) as db:
            texts += list(db.iterdump())
    return [run for text in texts for run in digit_runs(text) if holds_a_pan(run, pans)]


def test_no_card_number_in_the_mlflow_store_or_reports_of_a_trained_fraud_model(
    spark, pipeline_lake, tmp_path
):
    """PCI DSS on the model side: MLflow's database, artifacts and model folders, the HTML reports and
    the scores of a fraud model trained on the landing feeds hold none of their card numbers."""
    from lakeml.domains.banking.features import refresh_transaction_labels
    from lakeml.domains.banking.fraud_model import score_fraud, train_fraud_model
    from lakeml.domains.banking.silver import CHARGEBACKS_SILVER_SCHEMA

    source, _ = pipeline_lake
    pans = landing_pans(spark, source)
    root = tmp_path / "lake"
    shutil.copytree(source.lakehouse.root, root)
    config = load_config("test", [f"lakehouse.root={root}", *FRAUD_SETTINGS])
    lake = Lakehouse(spark, config)
    features = lake.table("gold", "transaction_features").read()
    frauds = features.where((F.xxhash64("txn_id") % 15 == 0) | (F.col("amount_eur") > 900)).select(
        "txn_id",
        (F.col("ts") + F.expr("INTERVAL 1 HOUR")).alias("reported_at"),
        F.lit("10.4").alias("reason_code"),
        F.lit(False).alias("is_reversal"),
        F.to_date(F.col("ts") + F.expr("INTERVAL 1 HOUR")).alias("event_date"),
        F.lit("test-chargebacks.csv").alias("_source_file"),
        F.current_timestamp().alias("_ingested_at"),
    )
    lake.table("silver", "chargebacks").append(
        frauds.select(*[F.col(f.name).cast(f.dataType) for f in CHARGEBACKS_SILVER_SCHEMA.fields])
    )
    # The day after: every transaction of END has matured (window of one day) or has its chargeback.
    day_after = DateRange.single(END + dt.timedelta(days=1))
    assert refresh_transaction_labels(spark, config, day_after).rows_out > 0
    summary = train_fraud_model(spark, config, day_after).details
    assert summary["promoted"], summary
    assert score_fraud(spark, config, DateRange(END - dt.timedelta(days=1), END)).details["rows"] > 0

    mlflow_dir, reports = root / "_mlflow", root / config.ml.reports_dir
    files = [p for folder in (mlflow_dir, reports) for p in folder.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert "mlflow.db" in names and "MLmodel" in names and any(n.endswith(".html") for n in names), names
    assert any(p.suffix == ".parquet" for p in files)  # the Spark model's own data
    found = {str(p.relative_to(root)): pans_in_file(p, pans)[:3] for p in files}
    assert {p: runs for p, runs in found.items() if runs} == {}, "clear card numbers"
    scores = lake.table("gold", "fraud_scores").read()
    assert scores.count() > 0 and pan_cells(spark, scores, pans).count() == 0
