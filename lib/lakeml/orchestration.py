"""The scheduler's view of the job registry: what the Airflow DAG file builds its tasks from.

``python -m lakeml.orchestration --env ENV [--conf K=V ...]`` prints, as JSON, the DAG settings of the
``airflow`` config section and one task per job (its dependencies, timeout and shell command). The
DAG file (scripts/airflow/lakeml_dag.py) runs this with the project's Python, so Airflow can live in
a virtual environment of its own and the registry stays the single source of the task graph.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lakeml.config import PROJECT_ROOT, Config, available_envs, load_config
from lakeml.errors import LakemlError, UsageError

# Airflow renders this into each task's command: the logical date of the run is the run date.
RUN_DATE = "{{ ds }}"


def dag_jobs(config: Config, depends_on: Mapping[str, Sequence[str]]) -> list[str]:
    """The jobs in the DAG: ``airflow.jobs`` and everything they need (all jobs when empty)."""
    wanted = list(config.airflow.jobs) or list(depends_on)
    unknown = [j for j in wanted if j not in depends_on]
    if unknown:
        raise UsageError(
            f"airflow.jobs names unknown job(s) {', '.join(unknown)} (known: {', '.join(sorted(depends_on))})"
        )
    chosen: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name not in chosen:
            chosen.add(name)
            todo.extend(depends_on[name])
    return [j for j in depends_on if j in chosen]


def task_command(config: Config, job: str, overrides: Sequence[str]) -> list[str]:
    """The shell words a task runs: `lakeml run` (local mode) or scripts/submit with the job file
    (cluster)."""
    args = ["--env", config.env, "--run-date", RUN_DATE]
    for item in overrides:
        args += ["--conf", item]
    if config.airflow.mode == "local":
        return [str(Path(sys.executable).with_name("lakeml")), "run", job, *args]
    domain, step = job.split(".", 1)
    job_file = PROJECT_ROOT / "jobs" / domain / f"{step}.py"
    if not job_file.is_file():
        raise UsageError(f"airflow.mode=cluster: job {job} has no spark-submit entry file {job_file}")
    return [str(PROJECT_ROOT / "scripts" / "submit"), str(job_file), *args]


def dag_spec(
    config: Config, depends_on: Mapping[str, Sequence[str]], overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """DAG settings and one task per job, in registry order, for the DAG file."""
    settings = config.airflow
    try:
        dt.date.fromisoformat(settings.start_date)
    except ValueError:
        raise UsageError(f"bad airflow.start_date '{settings.start_date}': expected YYYY-MM-DD") from None
    jobs = dag_jobs(config, depends_on)
    unknown = sorted(set(settings.task_timeouts_minutes) - set(depends_on))
    if unknown:
        raise UsageError(f"airflow.task_timeouts_minutes names unknown job(s) {', '.join(unknown)}")
    tasks = [
        {
            "job": job,
            "depends_on": [d for d in depends_on[job] if d in jobs],
            "timeout_seconds": 60 * settings.task_timeouts_minutes.get(job, settings.task_timeout_minutes),
            "bash_command": shlex.join(task_command(config, job, overrides)),
        }
        for job in jobs
    ]
    return {
        "dag_id": settings.dag_id,
        "env": config.env,
        "schedule": settings.schedule,
        "start_date": settings.start_date,
        "catchup": settings.catchup,
        "mode": settings.mode,
        # Cluster mode: the DAG file resolves this Airflow connection into submit.master (or fails to load).
        "spark_conn_id": settings.spark_conn_id if settings.mode == "cluster" else "",
        "retries": settings.retries,
        "retry_delay_seconds": 60 * settings.retry_delay_minutes,
        "max_retry_delay_seconds": 60 * settings.max_retry_delay_minutes,
        "tasks": tasks,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lakeml.orchestration", description=__doc__)
    parser.add_argument("--env", default="local")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.env not in available_envs():
            raise UsageError(f"unknown env '{args.env}' (known: {', '.join(available_envs())})")
        config = load_config(args.env, args.conf)
        from lakeml.pipeline import registry, topological_order

        jobs = registry()
        order = topological_order(jobs)
        spec = dag_spec(config, {name: jobs[name].depends_on for name in order}, args.conf)
    except LakemlError as exc:
        print(f"lakeml: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(spec, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
