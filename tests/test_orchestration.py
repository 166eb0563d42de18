"""The scheduler's view of the registry (lakeml.orchestration): task selection, commands, bad settings."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lakeml.config import PROJECT_ROOT, load_config
from lakeml.errors import UsageError
from lakeml.orchestration import dag_spec
from lakeml.pipeline import registry, topological_order


def graph() -> dict[str, tuple[str, ...]]:
    jobs = registry()
    return {name: jobs[name].depends_on for name in topological_order(jobs)}


def test_selected_jobs_bring_what_they_need_and_cluster_mode_submits_job_files():
    config = load_config("test", ["airflow.jobs=[banking.refresh_labels]", "airflow.mode=cluster",
                                  "airflow.task_timeouts_minutes.banking.build_silver=5"])  # fmt: skip
    spec = dag_spec(config, graph())
    assert [t["job"] for t in spec["tasks"]] == [
        "banking.ingest_bronze", "banking.build_silver", "banking.build_features", "banking.refresh_labels",
    ]  # fmt: skip
    timeouts = {t["job"]: t["timeout_seconds"] for t in spec["tasks"]}
    assert timeouts["banking.build_silver"] == 300 and timeouts["banking.ingest_bronze"] == 14400
    for task in dag_spec(load_config("test", ["airflow.mode=cluster"]), graph())["tasks"]:
        submit, job_file, *args = shlex.split(task["bash_command"])
        assert submit == str(PROJECT_ROOT / "scripts" / "submit") and Path(job_file).is_file()
        assert args[:4] == ["--env", "test", "--run-date", "{{ ds }}"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("airflow.jobs=[commerce.nope]", "airflow.jobs names unknown job(s) commerce.nope"),
        ("airflow.start_date=2026-02-30", "bad airflow.start_date '2026-02-30'"),
        ("airflow.task_timeouts_minutes.x.y=3", "airflow.task_timeouts_minutes names unknown job(s) x.y"),
    ],
)
def test_bad_dag_settings_are_one_line_and_exit_2(override, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dag_spec(load_config("test", [override]), graph())
    done = subprocess.run(
        [sys.executable, "-m", "lakeml.orchestration", "--env", "test", "--conf", override],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0] and done.stdout == ""


def test_the_spec_is_json_for_the_dag_file():
    done = subprocess.run([sys.executable, "-m", "lakeml.orchestration", "--env", "test"],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    spec = json.loads(done.stdout)
    assert [t["job"] for t in spec["tasks"]] == list(graph())
