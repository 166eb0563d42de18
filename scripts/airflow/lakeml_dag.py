"""Airflow DAG for lakeml, generated from the job registry: one task per job, edges from depends_on.

Point Airflow at this file (copy or symlink it into the dags folder, or add scripts/airflow to it).
It runs ``python -m lakeml.orchestration`` with the project's Python to read the registry and the
``airflow`` section of the config, so a job added to the registry appears here without editing this
file, and Airflow needs none of lakeml's dependencies. Environment variables it reads (at parse
time, on the dag processor; the tasks inherit the worker's environment):

  LAKEML_HOME    the lakeml checkout (default: two folders above this file)
  LAKEML_PYTHON  the Python with lakeml installed (default: $LAKEML_HOME/.venv/bin/python)
  LAKEML_ENV     config environment, conf/<env>.yaml (default: local)
  LAKEML_CONF    extra config overrides, shell words KEY=VALUE (e.g. "airflow.mode=cluster")

Each task runs ``lakeml run JOB --env ENV --run-date {{ ds }}`` (airflow.mode=local) or
``scripts/submit jobs/<domain>/<step>.py ...`` (airflow.mode=cluster). The lakeml CLI itself needs
whatever its jobs need in the task's environment (LAKEML_PII_KEY, LAKEML_LAKEHOUSE, ...).

Connections: in cluster mode with ``airflow.spark_conn_id`` set, that Airflow connection's host
(and port) is the Spark master (``--conf submit.master=...``). A connection that is not defined is
one import error naming it: no DAG, so no run starts half-configured.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

HOME = Path(os.environ.get("LAKEML_HOME", Path(__file__).resolve().parents[2]))
PYTHON = os.environ.get("LAKEML_PYTHON", str(HOME / ".venv" / "bin" / "python"))
ENV = os.environ.get("LAKEML_ENV", "local")
CONF = [arg for item in shlex.split(os.environ.get("LAKEML_CONF", "")) for arg in ("--conf", item)]


def _spec() -> dict:
    """The DAG settings and tasks lakeml derives from its registry and config."""
    done = subprocess.run(
        [PYTHON, "-m", "lakeml.orchestration", "--env", ENV, *CONF],
        capture_output=True,
        text=True,
        cwd=HOME,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit {done.returncode}"]
        raise RuntimeError(lines[-1])  # one line in the DagBag's import errors
    return json.loads(done.stdout)


def _spark_master(conn_id: str) -> str:
    """The Spark master of Airflow connection ``conn_id``: its host (``spark://`` unless it has a
    scheme, or is yarn / local[...]) and port, as the Spark provider reads a spark connection."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise RuntimeError(
            f"airflow.spark_conn_id: Airflow connection '{conn_id}' is not defined "
            f"(add it: airflow connections add {conn_id} --conn-uri spark://HOST:PORT)"
        ) from None
    host = (conn.host or "").strip()
    if not host:
        raise RuntimeError(f"airflow.spark_conn_id: Airflow connection '{conn_id}' has no host")
    if "://" not in host and host != "yarn" and not host.startswith("local"):
        host = f"spark://{host}"
    return f"{host}:{conn.port}" if conn.port else host


SPEC = _spec()
if SPEC.get("spark_conn_id"):
    _MASTER = shlex.quote(f"submit.master={_spark_master(SPEC['spark_conn_id'])}")
    for _task in SPEC["tasks"]:
        _task["bash_command"] += f" --conf {_MASTER}"

with DAG(
    dag_id=SPEC["dag_id"],
    description="lakeml jobs, generated from the job registry (lakeml list)",
    schedule=SPEC["schedule"],
    start_date=pendulum.parse(SPEC["start_date"], tz="UTC"),
    catchup=SPEC["catchup"],
    # One run, and one task, at a time: the lakehouse takes one lakeml run at a time anyway (a
    # second would exit 3 on its lock), and each Spark job uses the whole worker.
    max_active_runs=1,
    max_active_tasks=1,
    default_args={
        "retries": SPEC["retries"],
        "retry_delay": timedelta(seconds=SPEC["retry_delay_seconds"]),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(seconds=SPEC["max_retry_delay_seconds"]),
    },
    tags=["lakeml", f"env:{SPEC['env']}", f"mode:{SPEC['mode']}"],
) as dag:
    tasks = {
        t["job"]: BashOperator(
            task_id=t["job"],
            bash_command=t["bash_command"],
            execution_timeout=timedelta(seconds=t["timeout_seconds"]),
            cwd=str(HOME),
        )
        for t in SPEC["tasks"]
    }
    for t in SPEC["tasks"]:
        for upstream in t["depends_on"]:
            tasks[upstream] >> tasks[t["job"]]
