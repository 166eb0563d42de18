"""Job-failure notifications: a shell command and/or a webhook (``alerts`` in conf).

The alert is one JSON object: job, run date, env, the error line, where the log is, host and time.
The webhook gets it as the body of a POST; the command gets it on stdin and as ``LAKEML_ALERT_*``
environment variables. A notification that fails is logged (``alert_failed``) and never hides the
job's own failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, date, datetime
from typing import Any

from lakeml import runlog
from lakeml.config import AlertsConfig

# Where the failed run's log can be read: set by the scheduler wrapper (a log file), else Airflow's
# task coordinates, else this process's stderr.
LOG_LOCATION_ENV = "LAKEML_LOG_LOCATION"


def log_location() -> str:
    """Where this process's log lines go, as precisely as the environment tells."""
    if os.environ.get(LOG_LOCATION_ENV):
        return os.environ[LOG_LOCATION_ENV]
    dag = os.environ.get("AIRFLOW_CTX_DAG_ID")
    if dag:
        run = os.environ.get("AIRFLOW_CTX_DAG_RUN_ID", "?")
        task = os.environ.get("AIRFLOW_CTX_TASK_ID", "?")
        tries = os.environ.get("AIRFLOW_CTX_TRY_NUMBER", "?")
        return f"airflow task log: dag {dag}, run {run}, task {task}, try {tries}"
    return f"stderr of pid {os.getpid()} on {socket.gethostname()}"


def failure_alert(job: str, run_date: date, env: str, error: str) -> dict[str, Any]:
    """The alert record for a failed job."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return {
        "event": "job_failed",
        "job": job,
        "run_date": run_date.isoformat(),
        "env": env,
        "error": lines[0] if lines else "unknown error",
        "log": log_location(),
        "host": socket.gethostname(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def notify(settings: AlertsConfig, alert: dict[str, Any]) -> list[str]:
    """Send ``alert`` to every configured channel; returns the channels that took it."""
    sent: list[str] = []
    body = json.dumps(alert).encode()
    if settings.webhook_url:
        request = urllib.request.Request(
            settings.webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout_seconds) as response:
                response.read()
            sent.append("webhook")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            runlog.event("alert_failed", channel="webhook", job=alert.get("job"), error=str(exc))
    if settings.command:
        env = {**os.environ, **{f"LAKEML_ALERT_{k.upper()}": str(v) for k, v in alert.items()}}
        try:
            done = subprocess.run(
                settings.command,
                shell=True,
                input=body,
                env=env,
                capture_output=True,
                timeout=settings.timeout_seconds,
                check=False,
            )
            if done.returncode == 0:
                sent.append("command")
            else:
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                runlog.event(
                    "alert_failed",
                    channel="command",
                    job=alert.get("job"),
                    exit_code=done.returncode,
                    error=tail[0],
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            runlog.event("alert_failed", channel="command", job=alert.get("job"), error=str(exc))
    if sent:
        runlog.event("alert_sent", job=alert.get("job"), run_date=alert.get("run_date"), channels=sent)
    return sent


def notify_failure(settings: AlertsConfig, job: str, run_date: date, env: str, error: BaseException) -> None:
    """Alert that ``job`` failed for ``run_date`` (nothing when no channel is configured)."""
    if settings.command or settings.webhook_url:
        notify(settings, failure_alert(job, run_date, env, str(error) or type(error).__name__))
