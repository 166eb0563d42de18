"""The Airflow DAG (scripts/airflow/lakeml_dag.py) in real Airflow 3 from .venv-airflow (scripts/install):
it loads with the registry's task graph, bad settings are one import error, and `airflow dags test`
fails on a silver quality error and completes after the fix (the whole DAG: tests/test_scheduled_e2e.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lakeml.config import PROJECT_ROOT, load_config
from lakeml.lakehouse import Lakehouse
from lakeml.pipeline import registry
from lakeml.synthetic.core import make_window, write_feed
from lakeml.synthetic.landing import feed_builders

AIRFLOW_BIN = PROJECT_ROOT / ".venv-airflow" / "bin"
DAG_FILE = PROJECT_ROOT / "scripts" / "airflow" / "lakeml_dag.py"
# Yesterday, so generated events are never "in the future" next to their ingestion time.
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
# Each Airflow task is a short lakeml process of its own: a JVM that starts fast (C1 JIT only, serial GC;
# tests/kill_harness.py runs its two dozen short runs the same way). Spark settings, not job settings.
FAST_JVM = "spark.conf.spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

DAGBAG = """
import json, os, sys
from airflow.dag_processing.dagbag import DagBag

def load():
    bag = DagBag(dag_folder=sys.argv[1])
    dag = bag.dags.get("lakeml")
    if dag is None:
        return {"errors": list(bag.import_errors.values())}
    first = dag.tasks[0]
    return {
        "errors": list(bag.import_errors.values()),
        "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
        "commands": {t.task_id: t.bash_command for t in dag.tasks},
        "max_active_runs": dag.max_active_runs, "max_active_tasks": dag.max_active_tasks,
        "catchup": dag.catchup, "retries": first.retries, "backoff": first.retry_exponential_backoff,
        "timeout": first.execution_timeout.total_seconds(),
    }

good = load()
os.environ["LAKEML_CONF"] = "airflow.jobs=[commerce.build_silver,no.such_job]"
bad = load()
# Cluster mode with the Spark master in an Airflow connection: not defined, then defined.
os.environ["LAKEML_CONF"] = (
    "airflow.jobs=[commerce.ingest_bronze] airflow.mode=cluster airflow.spark_conn_id=lakeml_spark"
)
no_connection = load()
os.environ["AIRFLOW_CONN_LAKEML_SPARK"] = "spark://10.1.2.3:7077"
print(json.dumps({"good": good, "bad": bad, "no_connection": no_connection, "cluster": load()}))
"""


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    if not (AIRFLOW_BIN / "airflow").exists():
        pytest.fail("Airflow is not installed in .venv-airflow: run bash scripts/install")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LAKEML_CONF"))}
    return {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The DAG file runs lakeml's Python to read the registry: slow on a busy machine.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
        "LAKEML_PYTHON": sys.executable,
        "LAKEML_ENV": "test",
        **extra,
    }


def test_the_dag_is_the_job_registry(tmp_path):
    done = subprocess.run(
        [str(AIRFLOW_BIN / "python"), "-c", DAGBAG, str(DAG_FILE)],
        capture_output=True, text=True, env=airflow_env(tmp_path / "airflow"), timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    good, bad = report["good"], report["bad"]
    assert good["errors"] == []
    assert good["tasks"] == {name: sorted(spec.depends_on) for name, spec in registry().items()}
    assert (good["max_active_runs"], good["max_active_tasks"], good["catchup"]) == (1, 1, True)
    config = load_config("test")
    assert good["retries"] == config.airflow.retries and good["backoff"] is True
    assert good["timeout"] == 60 * config.airflow.task_timeout_minutes
    command = good["commands"]["commerce.build_silver"]
    assert command.startswith(f"{Path(sys.executable).with_name('lakeml')} run commerce.build_silver --env "
                              "test")
    assert "--run-date '{{ ds }}'" in command
    # An unknown job in the DAG's config: one import error naming it, and no DAG.
    assert "tasks" not in bad and len(bad["errors"]) == 1
    assert "airflow.jobs names unknown job(s) no.such_job" in bad["errors"][0]
    assert len(bad["errors"][0].strip().splitlines()[-1]) < 1000
    # Cluster mode naming an Airflow connection that is not defined: one import error naming it.
    missing = report["no_connection"]
    assert "tasks" not in missing and len(missing["errors"]) == 1
    assert "Airflow connection 'lakeml_spark' is not defined" in missing["errors"][0].strip().splitlines()[-1]
    # Defined: its host and port are the master scripts/submit gets.
    (command,) = report["cluster"]["commands"].values()
    assert command.startswith(str(PROJECT_ROOT / "scripts" / "submit"))
    assert command.endswith("--conf submit.master=spark://10.1.2.3:7077")


def task_states(home: Path) -> dict[str, str]:
    """Task states of the newest DAG run, from Airflow's sqlite metadata DB."""
    with sqlite3.connect(home / "airflow.db") as db:
        (run_id,) = db.execute("SELECT run_id FROM dag_run ORDER BY id DESC LIMIT 1").fetchone()
        rows = db.execute("SELECT task_id, state FROM task_instance WHERE run_id = ?", (run_id,)).fetchall()
    return dict(rows)


def test_a_silver_quality_error_fails_the_run_and_a_rerun_after_the_fix_completes_it(spark, tmp_path):
    lake_root = tmp_path / "lake"
    config = load_config("test", [f"lakehouse.root={lake_root}"])
    window = make_window(scale=1, days=1, seed=5, end_date=DAY)
    lines = feed_builders()["clickstream"](spark, window)
    write_feed(spark, lines, window, config.landing_path(), f"{lake_root}/_tmp-{uuid.uuid4().hex}")
    # A bad delivery: an HTML error page saved as a clickstream file, 1,000 lines (~15 % of the day).
    page = "".join(f"<html><body>502 Bad Gateway (test delivery {i})</body></html>\n" for i in range(1000))
    (Path(config.landing_path()) / "clickstream" / f"clickstream-{DAY}-00090.jsonl").write_text(page)
    home = tmp_path / "airflow"
    # Three tasks (commerce ingest → silver → features): each task is a lakeml process of its own.
    conf = f"airflow.jobs=[commerce.build_features] airflow.retries=0 '{FAST_JVM}'"
    env = airflow_env(home, LAKEML_LAKEHOUSE=str(lake_root), LAKEML_CONF=conf)
    migrate = subprocess.run([str(AIRFLOW_BIN / "airflow"), "db", "migrate"], capture_output=True, text=True,
                             env=env, timeout=600)  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    dags_test = [str(AIRFLOW_BIN / "airflow"), "dags", "test", "lakeml", DAY.isoformat()]

    # Bronze loads every line; silver quarantines the page and its quarantine-rate check (error level,
    # max 5 %) fails the job before it commits: the run fails and features never run.
    first = subprocess.run(dags_test, capture_output=True, text=True, env=env, timeout=1800)
    assert task_states(home) == {
        "commerce.ingest_bronze": "success",
        "commerce.build_silver": "failed",
        "commerce.build_features": "upstream_failed",
    }, first.stdout[-3000:]
    assert "silver/clickstream: " in first.stdout + first.stderr
    assert "the batch was not committed" in first.stdout + first.stderr
    lake = Lakehouse(spark, config)
    assert lake.table("bronze", "clickstream").read().count() > 1000
    assert lake.table("silver", "clickstream").read().count() == 0  # created, but the batch not committed
    assert not lake.table("gold", "user_item_interactions").exists()

    # The fix: the delivery is accepted with that feed's quarantine-rate limit raised (the page's lines
    # stay in ops/quarantine with their reason); the run of that date again completes.
    fixed = f"{conf} 'silver.checks.clickstream=[{{check: quarantine_rate, max_value: 0.5, level: error}}]'"
    second = subprocess.run(dags_test, capture_output=True, text=True, env={**env, "LAKEML_CONF": fixed},
                            timeout=1800)  # fmt: skip
    assert second.returncode == 0, second.stdout[-3000:]
    assert set(task_states(home).values()) == {"success"}, second.stdout[-3000:]
    assert lake.table("silver", "clickstream").read().count() > 0
    assert lake.table("gold", "user_item_interactions").read().count() > 0
    page_rows = lake.table("ops", "quarantine").read(where=[("feed", "=", "clickstream")])
    # Once each, though the failed run had quarantined them too (the generator's own dirt has HTML pages).
    assert page_rows.where(F.col("raw_record").contains("(test delivery ")).count() == 1000
