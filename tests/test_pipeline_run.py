"""run_job: every run (ok or failed) recorded in ops/job_runs with the versions it read; checkpoints
cleaned."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.sql import types as T

from lakeml.config import load_config
from lakeml.errors import JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.pipeline import JobResult, JobSpec, run_job
from lakeml.steps import DateRange

DAY = dt.date(2026, 11, 20)
SCHEMA = T.StructType([T.StructField("n", T.LongType(), False)])


def test_runs_ok_and_failed_are_recorded_with_input_versions_and_checkpoints_are_cleaned(spark, tmp_path):
    config = load_config("test", [f"lakehouse.root={tmp_path}"])
    lake = Lakehouse(spark, config)
    source = lake.table("silver", "numbers").create(SCHEMA)
    source.append(spark.range(5).toDF("n"))
    source.append(spark.range(3).toDF("n"))
    checkpoints = tmp_path / "_checkpoints"
    spark.sparkContext.setCheckpointDir(str(checkpoints))

    def copy(ctx):
        rdd = source.read().rdd
        rdd.checkpoint()  # like ALS: rdd-* files under <checkpoint dir>/<uuid>/
        rows = rdd.count()
        assert list(checkpoints.glob("*/rdd-*"))
        return JobResult(rows, 0)

    def broken(ctx):
        source.read(version=1).count()
        raise ValueError("no luck")

    assert run_job(JobSpec("demo.copy", copy, (), ""), spark, config, DateRange.single(DAY)).rows_in == 8
    assert not list(checkpoints.glob("*/rdd-*")), "the finished job's checkpoint files were left behind"
    with pytest.raises(JobFailed, match="no luck"):
        run_job(
            JobSpec("demo.broken", broken, (), ""), spark, config, DateRange(DAY - dt.timedelta(days=2), DAY)
        )
    runs = {r.job: r for r in lake.table("ops", "job_runs").read().collect()}
    ok, failed = runs["demo.copy"], runs["demo.broken"]
    assert (ok.status, ok.rows_in, ok.rows_out, ok.noop, ok.message) == ("ok", 8, 0, False, None)
    assert json.loads(ok.input_versions) == {"silver/numbers": source.version()}
    assert ok.run_date == ok.first_date == DAY and ok.seconds > 0 and ok.finished_at >= ok.started_at
    assert (failed.status, failed.rows_in, failed.noop, failed.message) == ("failed", None, None, "no luck")
    assert json.loads(failed.input_versions) == {"silver/numbers": 1}
    assert failed.first_date == DAY - dt.timedelta(days=2)
    assert Path(tmp_path, "ops", "job_runs").is_dir()


def test_every_commit_of_a_job_run_carries_its_lineage(spark, tmp_path):
    config = load_config("test", [f"lakehouse.root={tmp_path}"])
    lake = Lakehouse(spark, config)
    target = lake.table("gold", "numbers").create(SCHEMA)

    def write(ctx):
        target.append(spark.range(4).toDF("n"))
        return JobResult(0, 4)

    run_job(JobSpec("demo.write", write, (), ""), spark, config, DateRange.single(DAY))
    (run,) = lake.table("ops", "job_runs").read().collect()
    expected = {"job": "demo.write", "run_id": run.run_id, "run_date": DAY.isoformat()}
    assert target.history(1)[0]["lineage"] == expected
    assert lake.table("ops", "job_runs").history(1)[0]["lineage"] == expected  # its own record too
    assert target.history()[-1]["lineage"] == {}  # created by the test, outside any job
