"""ops.maintain_tables: days of daily appends stay a bounded number of files per partition, and a
protected version (a registered model's training data) stays readable through vacuum and log cleanup."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import types as T

from lakeml.config import load_config
from lakeml.lakehouse import Lakehouse
from lakeml.lakehouse.maintain import MAINTENANCE_SCHEMA, clean_log, maintain_tables
from lakeml.pipeline import registry

SCHEMA = T.StructType(
    [
        T.StructField("site", T.StringType(), False),
        T.StructField("day", T.DateType(), False),
        T.StructField("value", T.LongType(), False),
    ]
)
SHORT_LOG = {"delta.logRetentionDuration": "interval 0 hours"}
# Enough days that, without compaction or vacuum, the files pile up well past the bounds asserted
# (2 new files per site a day) and that the log passes delta's checkpoint interval (10 commits) several
# times; every further day repeats the same cycle (a month took ~150 s of CI on delta-spark).
DAYS = 12


def data_files(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix == ".parquet")


def test_days_of_daily_maintenance_bound_files_and_keep_protected_versions(spark, engine, tmp_path):
    config = load_config(
        "test",
        [
            f"lakehouse.root={tmp_path}",
            f"lakehouse.engine={engine}",
            "lakehouse.vacuum_retention_hours=0",
            "table_maintenance.tables=[silver/readings]",
        ],
    )
    lake = Lakehouse(spark, config)
    readings = lake.table("silver", "readings").create(SCHEMA, ["site"])
    start = dt.date(2026, 1, 1)
    protected = None
    for n in range(DAYS):
        day = start + dt.timedelta(days=n)
        rows = [(site, day, n * 10 + i) for site in ("a", "b") for i in range(6)]
        readings.append(spark.createDataFrame(rows, SCHEMA).repartition(2))  # ~2 small files per site a day
        if n == 2:  # a model registered on day 3 trained on this version
            protected = (readings.version(), readings.read().count())
            readings.protect(protected[0], "model lakeml-test v1")
        (record,) = maintain_tables(lake, f"run{n}", day)
        assert record["max_partition_files_after"] <= 2
    assert protected is not None
    version, rows_then = protected
    assert readings.read(version=version).count() == rows_then
    assert readings.read().count() == DAYS * 12
    # On disk: the protected version's files and the current ones, not a month of small files.
    for site in ("a", "b"):
        assert data_files(tmp_path / "silver" / "readings" / f"site={site}") <= 3 * 2 + 2

    record = lake.table("ops", "maintenance")
    assert record.schema().fieldNames() == MAINTENANCE_SCHEMA.fieldNames()
    last = record.read().where(f"run_date = '{start + dt.timedelta(days=DAYS - 1)}'").collect()
    assert [r["table"] for r in last] == ["silver/readings"]
    assert last[0]["protected_versions"] == [version] and last[0]["files_before"] > last[0]["files_after"]
    assert last[0]["log_note"].startswith(f"protected version {version} needs the log")
    assert last[0]["files_vacuumed"] > 0 and last[0]["bytes_vacuumed"] > 0


def test_the_log_of_an_unprotected_table_is_checkpointed_and_cleaned(spark, engine, tmp_path):
    config = load_config("test", [f"lakehouse.root={tmp_path}", f"lakehouse.engine={engine}"])
    table = Lakehouse(spark, config).table("gold", "plain").create(SCHEMA, [], SHORT_LOG)
    for n in range(4):
        table.append_rows([("a", dt.date(2026, 1, 1), n)])
    first_commit = tmp_path / "gold/plain/_delta_log/00000000000000000000.json"
    assert first_commit.exists()
    removed, note = clean_log(table.uri, [])
    assert removed > 0 and note is None and not first_commit.exists()
    assert table.read().count() == 4
    table.append_rows([("a", dt.date(2026, 1, 1), 4)])  # the engine writes on after the cleanup
    assert clean_log(table.uri, [])[1] is None and table.read().count() == 5
    assert len(table.history()) >= 1 and table.vacuum(dry_run=True) == []


def test_maintenance_runs_after_every_other_job():
    jobs = registry()
    upstream: set[str] = set()
    todo = ["ops.maintain_tables"]
    while todo:
        for dep in jobs[todo.pop()].depends_on:
            if dep not in upstream:
                upstream.add(dep)
                todo.append(dep)
    assert upstream == set(jobs) - {"ops.maintain_tables"}
