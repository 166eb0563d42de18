"""The whole ingestion pipeline on generated data: every bronze row accounted for, dirt caught, reruns no-ops."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakeml.config import Config, load_config
from lakeml.domains.banking.silver import CHARGEBACKS, TRANSACTIONS
from lakeml.domains.commerce.silver import CLICKSTREAM
from lakeml.domains.maintenance.silver import MAINTENANCE, TELEMETRY
from lakeml.generate import run_generation
from lakeml.lakehouse import Lakehouse
from lakeml.pipeline import registry, run_job, topological_order
from lakeml.runstate import INPUTS_UNCHANGED
from lakeml.transforms.pii import PAN_SPAN

FEEDS = (CLICKSTREAM, TRANSACTIONS, CHARGEBACKS, TELEMETRY, MAINTENANCE)
# Yesterday, so generated events are never "in the future" next to their ingestion time.
END = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


# Data jobs only: two generated days hold no mature fraud labels; the model jobs have their own tests.
DATA_STEPS = ("ingest_bronze", "build_silver", "build_features")


def run_pipeline(spark: SparkSession, config: Config) -> dict[str, dict]:
    jobs = registry()
    names = [n for n in topological_order(jobs) if n.split(".", 1)[1] in DATA_STEPS]
    assert len(names) == 9
    return {name: dict(run_job(jobs[name], spark, config, END).details) for name in names}


def table_versions(lake: Lakehouse) -> dict[str, int]:
    names = [("silver", f.name) for f in FEEDS] + [("bronze", f.name) for f in FEEDS]
    names += [("ops", "quarantine"), ("ops", "silver_batches"), ("ops", "dq_results")]
    return {f"{layer}/{name}": lake.table(layer, name).version() for layer, name in names}


@pytest.fixture(scope="module")
def pipeline_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict]:
    root: Path = tmp_path_factory.mktemp("e2e")
    config = load_config("test", [f"lakehouse.root={root}"])
    run_generation(spark, config.landing_path(), scale=1, days=2, seed=11, end_date=END)
    return config, run_pipeline(spark, config)


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


def test_no_card_number_is_stored_past_the_landing_zone(spark, pipeline_lake):
    """PCI DSS: the landing feeds' PANs appear in no table cell, log, checkpoint or other file of the lake."""
    config, _ = pipeline_lake
    pans = landing_pans(spark, config)
    assert len(pans) > 100
    root, landing = Path(config.lakehouse.root), Path(config.landing_path())
    tables = sorted(p.parent for p in root.rglob("_delta_log") if landing not in p.parents)
    assert len(tables) >= 13  # bronze, silver, gold and ops
    pan_table = spark.createDataFrame([(p,) for p in pans], "pan string")
    for path in tables:
        df = Lakehouse(spark, config).at(str(path)).read()
        texts = [
            F.col(f.name) if f.dataType.simpleString() == "string" else F.decode(f.name, "ISO-8859-1")
            for f in df.schema.fields
            if f.dataType.simpleString() in ("string", "binary")
        ]
        if not texts:
            continue
        runs = df.select(F.explode(F.array(*texts)).alias("t")).select(
            F.explode(F.regexp_extract_all("t", F.lit(r"[0-9](?:[ -]?[0-9]){12,}"), 0)).alias("run")
        )
        runs = runs.select(F.regexp_replace("run", "[ -]", "").alias("run"))
        found = runs.join(F.broadcast(pan_table), F.instr("run", F.col("pan")) > 0)
        assert found.count() == 0, f"clear card numbers in {path}: {found.limit(3).collect()}"
    # Every other file: Delta logs, checkpoints, stream state, markers (Parquet data is read above).
    others = [
        p for p in root.rglob("*") if p.is_file() and landing not in p.parents and p.suffix != ".parquet"
    ]
    assert any("_delta_log" in p.parts for p in others) and any("_checkpoints" in p.parts for p in others)
    for path in others:
        text = path.read_bytes().decode("latin-1")
        assert not any(holds_a_pan(run, pans) for run in digit_runs(text)), f"clear card number in {path}"


def test_rerunning_the_pipeline_changes_nothing(spark, pipeline_lake):
    config, _ = pipeline_lake
    lake = Lakehouse(spark, config)
    before = table_versions(lake)
    details = run_pipeline(spark, config)
    assert table_versions(lake) == before
    # Nothing new, nothing done: every job that reads tables skips (the bronze loads read landing files).
    skipped = {name for name, d in details.items() if d.get("skipped") == INPUTS_UNCHANGED}
    assert skipped == {name for name in details if not name.endswith(".ingest_bronze")}
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
