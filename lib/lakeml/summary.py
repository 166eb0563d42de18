"""The closing summary of ``lakeml pipeline``: one row per job, then where to look next."""

from __future__ import annotations

import io
import shlex
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from lakeml.config import Config
from lakeml.pipeline import JobRun

# Per model a trainer reports: (name key, version key, promoted key) in its result details.
MODEL_KEYS = (
    ("model", "version", "promoted"),
    ("rul_model", "rul_version", "rul_promoted"),
    ("failure_model", "failure_version", "failure_promoted"),
)


def job_table(runs: Sequence[JobRun], not_run: Sequence[str] = ()) -> Table:
    """Job, status, seconds, rows in/out and whether it had anything new to do."""
    table = Table(title="lakeml pipeline", title_justify="left")
    for column, justify in [
        ("job", "left"),
        ("status", "left"),
        ("seconds", "right"),
        ("rows in", "right"),
        ("rows out", "right"),
        ("new work", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for run in runs:
        r = run.result
        rows_in, rows_out = ("-", "-") if r is None else (f"{r.rows_in:,}", f"{r.rows_out:,}")
        new_work = "-" if run.noop is None else ("no (skipped)" if run.noop else "yes")
        table.add_row(run.job, run.status, f"{run.seconds:,.1f}", rows_in, rows_out, new_work)
    for name in not_run:
        table.add_row(name, "not run", "-", "-", "-", "-")
    return table


def next_steps(runs: Sequence[JobRun], config: Config) -> list[str]:
    """Where the results landed: lakehouse, reports, MLflow runs, model versions, the ``mlflow ui``
    command."""
    from lakeml.ml.tracking import artifact_root, tracking_uri

    lines = [f"lakehouse: {config.lakehouse.root}"]
    for run in runs:
        details = {} if run.result is None else dict(run.result.details)
        if details.get("report"):
            lines.append(f"{run.job}: report {details['report']}")
        if details.get("mlflow_run_id"):
            lines.append(f"{run.job}: MLflow run {details['mlflow_run_id']}")
        for name_key, version_key, promoted_key in MODEL_KEYS:
            if details.get(name_key) and details.get(version_key):
                role = "champion" if details.get(promoted_key) else "challenger (champion unchanged)"
                lines.append(f"{run.job}: model {details[name_key]} v{details[version_key]}, {role}")
        if run.status == "failed":
            lines.append(f"{run.job}: FAILED: {run.message}")
    if any(run.result is not None and run.result.details.get("mlflow_run_id") for run in runs):
        ui = ["mlflow", "ui", "--backend-store-uri", tracking_uri(config)]
        ui += ["--default-artifact-root", artifact_root(config)]
        lines.append("browse runs and models: .venv/bin/" + shlex.join(ui))
    lines.append("every job run is recorded in ops/job_runs; silver batch accounting in ops/silver_batches")
    return lines


def render(runs: Sequence[JobRun], config: Config, not_run: Sequence[str] = (), width: int = 100) -> str:
    """The summary as plain text (no colour codes), for stdout or a log file."""
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False)
    console.print(job_table(runs, not_run))
    for line in next_steps(runs, config):
        console.print(line, highlight=False, soft_wrap=True)
    return out.getvalue()
