"""Progress of long Spark work: log lines naming the running stage, its tasks done/total and the seconds so
far."""

from __future__ import annotations

import io
import time

from lakeml import progress, runlog


def slow_count(spark, seconds: float) -> int:
    def wait(rows):
        time.sleep(seconds)
        yield from rows

    return spark.sparkContext.parallelize(range(4), 2).mapPartitions(wait).count()


def test_lines_mode_reports_the_running_stage_while_a_job_waits(spark, monkeypatch):
    events: list[dict] = []
    monkeypatch.setattr(runlog, "event", lambda name, **fields: events.append({"event": name, **fields}))
    with progress.stage_progress(spark, "demo.job", mode="lines", interval=0.5):
        assert slow_count(spark, 2.5) == 4
    lines = [e for e in events if e["event"] == "spark_progress"]
    assert lines and all(e["job"] == "demo.job" for e in lines)
    stage_lines = [s for e in lines for s in e["stages"] if s.startswith("stage ")]
    assert stage_lines and stage_lines[0].endswith("/2 tasks") and "(count)" in stage_lines[0]
    assert lines[-1]["seconds"] >= 1.0


def test_short_work_prints_nothing_and_auto_picks_lines_off_a_terminal(spark, monkeypatch):
    events: list[dict] = []
    monkeypatch.setattr(runlog, "event", lambda name, **fields: events.append({"event": name, **fields}))
    with progress.stage_progress(spark, "demo.job", mode="lines", interval=30):
        assert slow_count(spark, 0.0) == 4
    assert events == []
    assert progress.progress_mode("auto", io.StringIO()) == "lines"
    assert progress.progress_mode("off", io.StringIO()) == "off"


def test_bar_mode_runs_the_job_to_the_end(spark):
    # The bar draws on stderr (rich, transient); what matters here is that it neither blocks nor fails the
    # job.
    with progress.stage_progress(spark, "demo.job", mode="bar", interval=0.5):
        assert slow_count(spark, 1.0) == 4
