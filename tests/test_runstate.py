"""Nothing new, nothing done: a rerun with unchanged inputs and settings is skipped; --catch-up finds
missed dates."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import mlflow
from deltalake import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import load_config
from lakeml.lakehouse import Lakehouse
from lakeml.ml import registry
from lakeml.pipeline import JobContext, JobResult, JobSpec, run_job
from lakeml.runstate import INPUTS_UNCHANGED, catch_up_start
from lakeml.steps import DateRange

DAY = dt.date(2026, 11, 20)
SCHEMA = T.StructType([T.StructField("n", T.LongType(), False)])


def test_a_rerun_is_skipped_until_an_input_a_setting_or_force_says_otherwise(spark, tmp_path):
    config = load_config("test", [f"lakehouse.root={tmp_path}"])
    lake = Lakehouse(spark, config)
    source = lake.table("silver", "numbers").create(SCHEMA)
    source.append(spark.range(5).toDF("n"))
    target = lake.table("gold", "doubled").create(SCHEMA)
    calls: list[dt.date] = []

    def double(ctx: JobContext) -> JobResult:
        calls.append(ctx.dates.last)
        rows = source.read().select((F.col("n") * 2).alias("n"))
        target.append(rows)
        return JobResult(source.read().count(), rows.count())

    spec = JobSpec("test.double", double, (), "doubles numbers")
    first = run_job(spec, spark, config, DateRange.single(DAY))
    assert len(calls) == 1 and "skipped" not in first.details
    version = target.version()

    again = run_job(spec, spark, config, DateRange.single(DAY))
    assert len(calls) == 1 and again.details["skipped"] == INPUTS_UNCHANGED
    assert (again.rows_in, again.rows_out) == (0, 0) and target.version() == version

    # another date: its own first run
    run_job(spec, spark, config, DateRange.single(DAY + dt.timedelta(days=1)))
    source.append(spark.range(5, 7).toDF("n"))  # a new input version
    run_job(spec, spark, config, DateRange.single(DAY))
    silver = dataclasses.replace(config.silver, max_amount_eur=config.silver.max_amount_eur + 1)
    changed = dataclasses.replace(config, silver=silver)
    run_job(spec, spark, config, DateRange.single(DAY))  # unchanged again: skipped
    run_job(spec, spark, changed, DateRange.single(DAY))  # a setting changed
    run_job(spec, spark, changed, DateRange.single(DAY), force=True)  # forced
    assert calls == [DAY, DAY + dt.timedelta(days=1), DAY, DAY, DAY]

    runs = lake.table("ops", "job_runs").read().orderBy("started_at").collect()
    assert [r.status for r in runs] == ["ok", "skipped", "ok", "ok", "skipped", "ok", "ok"]
    state = json.loads(runs[0].input_state)
    assert state == {source.uri: 1}  # the version it read, as the run left it
    assert runs[1].noop is True and runs[1].input_state is None


def test_a_job_that_reads_no_table_always_runs(spark, tmp_path):
    config = load_config("test", [f"lakehouse.root={tmp_path}"])
    calls: list[int] = []
    spec = JobSpec("test.count", lambda ctx: calls.append(1) or JobResult(1, 1), (), "reads landing files")
    run_job(spec, spark, config, DateRange.single(DAY))
    run_job(spec, spark, config, DateRange.single(DAY))
    assert calls == [1, 1]


def test_catch_up_starts_the_day_after_the_earliest_last_successful_run(spark, tmp_path):
    config = load_config("test", [f"lakehouse.root={tmp_path}"])
    ok = JobSpec("test.ok", lambda ctx: JobResult(0, 0), (), "")
    behind = JobSpec("test.behind", lambda ctx: JobResult(0, 0), (), "")
    today = DAY + dt.timedelta(days=5)
    assert catch_up_start(spark, config, ["test.ok", "test.behind"], today) is None  # nothing ran yet
    run_job(ok, spark, config, DateRange.single(DAY + dt.timedelta(days=4)))
    run_job(behind, spark, config, DateRange.single(DAY + dt.timedelta(days=1)))
    assert catch_up_start(spark, config, ["test.ok", "test.behind"], today) == DAY + dt.timedelta(days=2)
    assert catch_up_start(spark, config, ["test.ok"], today) == today
    assert catch_up_start(spark, config, ["test.ok"], DAY + dt.timedelta(days=4)) is None  # current


def test_a_new_champion_is_a_changed_input(spark, tmp_path):
    db = f"sqlite:///{tmp_path}/mlflow.db"
    config = load_config("test", [f"lakehouse.root={tmp_path}", f"ml.tracking_uri={db}"])
    client = mlflow.MlflowClient(db)
    client.create_registered_model("lakeml-test")
    for _ in range(2):
        client.create_model_version("lakeml-test", source=str(tmp_path / "model"))
    client.set_registered_model_alias("lakeml-test", "champion", "1")
    scored: list[str] = []

    def score(ctx: JobContext) -> JobResult:
        scored.append(registry.champion_version(mlflow.MlflowClient(db), "lakeml-test").version)
        return JobResult(1, 1)

    spec = JobSpec("test.score", score, (), "scores with the champion")
    run_job(spec, spark, config, DateRange.single(DAY))
    assert run_job(spec, spark, config, DateRange.single(DAY)).details["skipped"] == INPUTS_UNCHANGED
    client.set_registered_model_alias("lakeml-test", "champion", "2")
    run_job(spec, spark, config, DateRange.single(DAY))
    assert [str(v) for v in scored] == ["1", "2"]


def test_table_maintenance_is_no_new_input_and_a_maintenance_rerun_is_skipped(spark, tmp_path):
    config = load_config("test", [f"lakehouse.root={tmp_path}"])
    lake = Lakehouse(spark, config)
    source = lake.table("silver", "numbers").create(SCHEMA)
    for start in (0, 5, 10):  # three small files: something to compact
        source.append(spark.range(start, start + 5).toDF("n"))
    calls: list[int] = []

    def count(ctx: JobContext) -> JobResult:
        calls.append(1)
        return JobResult(source.read().count(), 0)

    reader = JobSpec("test.count", count, (), "counts numbers")
    maintain = registry_spec("ops.maintain_tables")
    run_job(reader, spark, config, DateRange.single(DAY))
    first = run_job(maintain, spark, config, DateRange.single(DAY))
    assert first.details["files_before"] > first.details["files_after"]  # it compacted: a new version
    maintained = {n: lake.table(*n.split("/")).version() for n in ("silver/numbers", "ops/maintenance")}

    # Compaction rewrote files, not rows: the reader's input is unchanged, and so are the maintenance job's.
    assert run_job(reader, spark, config, DateRange.single(DAY)).details["skipped"] == INPUTS_UNCHANGED
    assert run_job(maintain, spark, config, DateRange.single(DAY)).details["skipped"] == INPUTS_UNCHANGED
    assert {n: lake.table(*n.split("/")).version() for n in maintained} == maintained
    assert calls == [1]

    # Nor does a table-property commit (maintenance protecting a model's training version sets one).
    DeltaTable(source.uri).alter.set_table_properties({"delta.enableExpiredLogCleanup": "false"})
    assert run_job(reader, spark, config, DateRange.single(DAY)).details["skipped"] == INPUTS_UNCHANGED
    assert calls == [1]

    source.append(spark.range(15, 16).toDF("n"))  # new rows: both run again
    assert "skipped" not in run_job(reader, spark, config, DateRange.single(DAY)).details
    assert "skipped" not in run_job(maintain, spark, config, DateRange.single(DAY)).details
    assert calls == [1, 1]


def test_a_silver_run_with_nothing_new_records_its_bronze_version_so_its_rerun_is_skipped(spark, tmp_path):
    """What a scheduler meets: bronze loaded everything during an earlier date's run, so the first
    silver run of the next date finds nothing new; a rerun of that date must still skip."""
    config = load_config("test", [f"lakehouse.root={tmp_path}"])
    landing = tmp_path / "landing" / "maintenance"
    landing.mkdir(parents=True)
    (tmp_path / "landing" / "telemetry").mkdir()  # the domain's other feed: nothing delivered
    (landing / "maintenance-2026-11-20-00000.csv").write_text(
        "machine_id,ts,kind,component\nMCH-00001,2026-11-20T10:00:00+09:00,failure,bearing\n"
    )
    bronze, silver = registry_spec("maintenance.ingest_bronze"), registry_spec("maintenance.build_silver")
    run_job(bronze, spark, config, DateRange.single(DAY))
    assert run_job(silver, spark, config, DateRange.single(DAY)).rows_in > 0
    nothing_new = run_job(silver, spark, config, DateRange.single(DAY + dt.timedelta(days=1)))
    assert "skipped" not in nothing_new.details and nothing_new.rows_in == 0  # its first run for the date
    bronze_table = Lakehouse(spark, config).table("bronze", "maintenance")
    runs = Lakehouse(spark, config).table("ops", "job_runs").read().where(F.col("job") == silver.name)
    recorded = [json.loads(r.input_state) for r in runs.orderBy("started_at").collect()]
    assert recorded[-1][bronze_table.uri] == bronze_table.version()
    again = run_job(silver, spark, config, DateRange.single(DAY + dt.timedelta(days=1)))
    assert again.details["skipped"] == INPUTS_UNCHANGED


def registry_spec(name: str) -> JobSpec:
    from lakeml.pipeline import registry as jobs

    return jobs()[name]
