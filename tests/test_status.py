"""lakeml status: last run per job, freshness per table, quality failures, drift alerts; exit 1 on trouble."""

from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import types as T

from lakeml.cli import main
from lakeml.config import load_config
from lakeml.lakehouse import Lakehouse
from lakeml.quality.drift import DRIFT_PARTITIONS, DRIFT_SCHEMA
from lakeml.quality.ops import DQ_RESULTS_SCHEMA, JOB_RUNS_SCHEMA

DAY = dt.date(2026, 3, 10)
AT = dt.datetime(2026, 3, 10, 6, 0)
EVENTS = T.StructType(
    [T.StructField("event_date", T.DateType(), False), T.StructField("n", T.LongType(), False)]
)


def row(schema: T.StructType, **values: object) -> list[object]:
    """A row of ``schema`` by column name (ops tables change columns; unnamed ones get a filler)."""
    filler = {T.StringType: "x", T.LongType: 0, T.DoubleType: 0.0, T.IntegerType: 0, T.BooleanType: True,
              T.DateType: DAY, T.TimestampType: AT}  # fmt: skip
    return [values.get(f.name, filler[type(f.dataType)] if not f.nullable or f.name not in values else None)
            for f in schema.fields]  # fmt: skip


def status(monkeypatch, capsys, root, *args: str) -> tuple[int, dict]:
    monkeypatch.setenv("LAKEML_LAKEHOUSE", str(root))
    code = main(["status", "--env", "test", "--run-date", str(DAY), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_status_reports_failed_jobs_stale_tables_quality_and_drift(spark, tmp_path, monkeypatch, capsys):
    code, report = status(monkeypatch, capsys, tmp_path)
    assert code == 0 and report["problems"] == [] and {j["status"] for j in report["jobs"]} == {"never"}

    lake = Lakehouse(spark, load_config("test", [f"lakehouse.root={tmp_path}"]))
    runs = lake.table("ops", "job_runs").create(JOB_RUNS_SCHEMA)
    early, late = AT, AT + dt.timedelta(hours=1)
    runs.append_rows([
        row(JOB_RUNS_SCHEMA, job="commerce.build_silver", status="ok", started_at=early, finished_at=early),
        row(JOB_RUNS_SCHEMA, job="commerce.build_silver", status="failed", message="quality error",
            started_at=late, finished_at=late + dt.timedelta(seconds=12), seconds=12.0),
        row(JOB_RUNS_SCHEMA, job="banking.build_silver", status="ok", started_at=late, finished_at=late),
    ])  # fmt: skip
    events = lake.table("silver", "events").create(EVENTS, ["event_date"])
    events.append_rows([(DAY - dt.timedelta(days=3), 1), (DAY - dt.timedelta(days=2), 1)])
    lake.table("silver", "fresh").create(EVENTS, ["event_date"]).append_rows([(DAY, 1)])
    checks = lake.table("ops", "dq_results").create(DQ_RESULTS_SCHEMA)
    checks.append_rows([
        row(DQ_RESULTS_SCHEMA, table="clickstream", check="range", target="price", level="error",
            passed=False,
            checked_at=early),  # an older batch: superseded
        row(DQ_RESULTS_SCHEMA, table="clickstream", check="unique", target="event_id", level="error",
            passed=False,
            checked_at=late),
        row(DQ_RESULTS_SCHEMA, table="clickstream", check="freshness", target="ts", level="warn",
            passed=False,
            checked_at=late),
    ])  # fmt: skip
    drift = lake.table("ops", "drift").create(DRIFT_SCHEMA, DRIFT_PARTITIONS)
    drift.append_rows([row(DRIFT_SCHEMA, model_name="lakeml-fraud", feature="amount_eur", psi=0.4,
                           level="alert")])

    code, report = status(monkeypatch, capsys, tmp_path)
    assert code == 1
    jobs = {j["job"]: j for j in report["jobs"]}
    silver = jobs["commerce.build_silver"]
    assert silver["status"] == "failed" and silver["seconds"] == 12
    assert jobs["commerce.build_silver"]["message"] == "quality error"
    assert jobs["banking.build_silver"]["status"] == "ok" and jobs["ops.maintain_tables"]["status"] == "never"
    tables = {t["table"]: t for t in report["tables"]}
    assert tables["silver/events"]["freshness"] == "stale" and tables["silver/events"]["lag_days"] == 2
    assert tables["silver/fresh"]["freshness"] == "ok"
    failures = [(q["check"], q["level"]) for q in report["quality_failures"]]
    assert failures == [("unique", "error"), ("freshness", "warn")]
    assert [a["feature"] for a in report["drift_alerts"]] == ["amount_eur"]
    assert sorted(report["problems"]) == sorted([
        "job commerce.build_silver failed for 2026-03-10",
        "table silver/events is stale: newest event_date 2026-03-08",
        "clickstream: unique on event_id failed",
        "drift alert: lakeml-fraud amount_eur psi 0.400",
    ])  # fmt: skip

    # A lag within status.max_lag_days is fresh; text output names the same problems.
    monkeypatch.setenv("LAKEML_LAKEHOUSE", str(tmp_path))
    assert main(["status", "--env", "test", "--run-date", str(DAY), "--conf", "status.max_lag_days=2"]) == 1
    text = capsys.readouterr().out
    assert "silver/events" in text and "problems: 3" in text
