"""The closing summary of `lakeml pipeline`: a row per job, and where the results landed."""

from __future__ import annotations

import datetime as dt

from lakeml.config import load_config
from lakeml.pipeline import JobResult, JobRun
from lakeml.summary import render

DAY = dt.date(2026, 11, 20)
FRAUD_DETAILS = {
    "model": "lakeml-fraud",
    "version": "3",
    "promoted": False,
    "report": "/r/fraud.html",
    "mlflow_run_id": "abc123",
}


def finished(job: str, status: str, result: JobResult | None, message: str | None = None) -> JobRun:
    run = JobRun(job, f"run-{job}", "test", DAY, DAY, dt.datetime(2026, 11, 20, tzinfo=dt.UTC))
    return run.finish(status, 12.5, {"/lake/silver/x": 3}, result=result, message=message)


def test_summary_lists_each_job_and_where_to_look_next(tmp_path):
    config = load_config("test", [f"lakehouse.root={tmp_path}"])
    runs = [
        finished("commerce.build_silver", "ok", JobResult(34_100, 33_000)),
        finished("commerce.ingest_bronze", "ok", JobResult(0, 0)),
        finished("banking.train_fraud", "ok", JobResult(5000, 0, FRAUD_DETAILS)),
        finished("maintenance.train_failure", "failed", None, message="boom"),
    ]
    text = render(runs, config, not_run=["maintenance.score_failure"])
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 3}
    assert "34,100" in rows["commerce.build_silver"] and "33,000" in rows["commerce.build_silver"]
    assert "no (skipped)" in rows["commerce.ingest_bronze"] and "yes" in rows["commerce.build_silver"]
    assert "failed" in rows["maintenance.train_failure"] and "not run" in rows["maintenance.score_failure"]
    assert "banking.train_fraud: report /r/fraud.html" in text
    assert "banking.train_fraud: MLflow run abc123" in text
    assert "model lakeml-fraud v3, challenger (champion unchanged)" in text
    assert "maintenance.train_failure: FAILED: boom" in text
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/_mlflow/mlflow.db" in text
    assert "\x1b[" not in text  # plain text, no colour codes
