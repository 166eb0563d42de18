"""``lakeml status``: the last run of each job, table freshness, quality failures and drift alerts.

Reads only Delta logs and the small ``ops`` tables through ``deltalake`` (no Spark), so a monitor can
call it every few minutes. ``ops/job_runs`` is read by column name: columns it lacks are left out.
Something is wrong (exit 1) when a job's last run failed, a table's newest date partition lags the
run date by more than ``status.max_lag_days``, the last check of a silver table failed an error-level
check, or a model's last drift check raised an alert.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from pyarrow import compute as pc

from lakeml.config import Config, join_location
from lakeml.lakehouse.maintain import find_tables

DATA_LAYERS = ("bronze", "silver", "gold")


def _table(config: Config, name: str) -> Any:
    from deltalake import DeltaTable

    uri = join_location(config.lakehouse.root, name)
    return DeltaTable(uri) if DeltaTable.is_deltatable(uri) else None


def _rows(config: Config, name: str) -> list[dict[str, Any]]:
    """All rows of a small ops table (empty when it does not exist)."""
    table = _table(config, name)
    return [] if table is None else pa.table(table.to_pyarrow_table()).to_pylist()


def _newest(
    rows: Sequence[dict[str, Any]], key: str, time_columns: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per value of ``key``, the row with the greatest first present time column."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        when = next((row[c] for c in time_columns if row.get(c) is not None), None)
        best = out.get(row[key])
        if best is None or (when is not None and when > best["_when"]):
            out[row[key]] = {**row, "_when": when}
    return out


def job_status(config: Config, jobs: Sequence[str]) -> list[dict[str, Any]]:
    """Per job: the last recorded run (run date, status, seconds, rows) or 'never'."""
    last = _newest(_rows(config, "ops/job_runs"), "job", ("finished_at", "started_at"))
    out: list[dict[str, Any]] = []
    for name in jobs:
        row = last.get(name)
        if row is None:
            out.append({"job": name, "status": "never"})
            continue
        seconds = row.get("seconds")
        if seconds is None and row.get("finished_at") and row.get("started_at"):
            seconds = round((row["finished_at"] - row["started_at"]).total_seconds(), 3)
        entry = {
            "job": name,
            "run_date": row.get("run_date"),
            "status": row.get("status"),
            "seconds": seconds,
            "rows_in": row.get("rows_in"),
            "rows_out": row.get("rows_out", row.get("rows_loaded")),
            "finished_at": row.get("finished_at"),
        }
        if row.get("status") == "failed":
            entry["message"] = row.get("message")
        out.append(entry)
    return out


def table_freshness(config: Config, run_date: dt.date) -> list[dict[str, Any]]:
    """Per data table: its newest date partition against the run date (from the log's file list)."""
    out: list[dict[str, Any]] = []
    for name in find_tables(config.lakehouse.root, DATA_LAYERS):
        table = _table(config, name)
        if table is None:
            continue
        partitions = set(table.metadata().partition_columns)
        dated = [
            f.name
            for f in table.schema().fields
            if f.name in partitions and getattr(f.type, "type", None) == "date"
        ]
        entry: dict[str, Any] = {"table": name, "version": table.version()}
        if not dated:
            entry["freshness"] = "not dated"
            out.append(entry)
            continue
        column = dated[0]
        values = pa.table(table.get_add_actions(flatten=True)).column(f"partition.{column}")
        newest = pc.max(values).as_py() if len(values) else None
        if isinstance(newest, str):
            newest = dt.date.fromisoformat(newest)
        lag = None if newest is None else (run_date - newest).days
        stale = name not in config.status.ignore_tables and (lag is None or lag > config.status.max_lag_days)
        entry.update(
            {
                "partition_column": column,
                "newest": newest,
                "lag_days": lag,
                "freshness": "stale" if stale else "ok",
            }
        )
        out.append(entry)
    return out


def quality_failures(config: Config) -> list[dict[str, Any]]:
    """Failed checks of each silver table's most recent checked batch (ops/dq_results)."""
    rows = _rows(config, "ops/dq_results")
    latest = {t: r["_when"] for t, r in _newest(rows, "table", ("checked_at",)).items()}
    return [
        {k: r.get(k) for k in ("table", "check", "target", "level", "failed_rows", "observed", "checked_at")}
        for r in rows
        if not r.get("passed") and r.get("checked_at") == latest.get(r["table"])
    ]


def drift_alerts(config: Config) -> list[dict[str, Any]]:
    """Features at alert level in each model's most recent drift check (ops/drift)."""
    rows = _rows(config, "ops/drift")
    latest = {m: r["_when"] for m, r in _newest(rows, "model_name", ("checked_at",)).items()}
    return [
        {k: r.get(k) for k in ("model_name", "model_version", "window_start", "window_end", "feature", "psi")}
        for r in rows
        if r.get("level") == "alert" and r.get("checked_at") == latest.get(r["model_name"])
    ]


def collect(config: Config, jobs: Sequence[str], run_date: dt.date) -> dict[str, Any]:
    """Everything ``lakeml status`` reports, and the problems among it."""
    report: dict[str, Any] = {
        "run_date": run_date,
        "jobs": job_status(config, jobs),
        "tables": table_freshness(config, run_date),
        "quality_failures": quality_failures(config),
        "drift_alerts": drift_alerts(config),
    }
    problems = [
        f"job {j['job']} failed for {j['run_date']}" for j in report["jobs"] if j["status"] == "failed"
    ]
    problems += [
        f"table {t['table']} is stale: newest {t['partition_column']} {t['newest']}"
        for t in report["tables"]
        if t["freshness"] == "stale"
    ]
    problems += [
        f"{q['table']}: {q['check']} on {q['target']} failed"
        for q in report["quality_failures"]
        if q["level"] == "error"
    ]
    problems += [
        f"drift alert: {a['model_name']} {a['feature']} psi {a['psi']:.3f}" for a in report["drift_alerts"]
    ]
    report["problems"] = problems
    return report


def render(report: dict[str, Any], as_json: bool) -> str:
    """The report as JSON or as a few aligned text sections."""
    if as_json:
        return json.dumps(report, default=str, indent=2) + "\n"
    lines = [f"status for run date {report['run_date']}", "", "jobs:"]
    for j in report["jobs"]:
        if j["status"] == "never":
            lines.append(f"  {j['job']:<32} never run")
            continue
        extra = f"  {j.get('message')}" if j.get("message") else ""
        lines.append(
            f"  {j['job']:<32} {j['status']:<7} {j.get('run_date')!s:<11} "
            f"{j.get('seconds')!s:>9} s  rows {j.get('rows_out')}{extra}"
        )
    lines += ["", "tables:"]
    for t in report["tables"]:
        newest = f"newest {t['newest']} (lag {t['lag_days']} d)" if "newest" in t else ""
        lines.append(f"  {t['table']:<36} {t['freshness']:<10} {newest}")
    lines += ["", f"quality failures: {len(report['quality_failures'])}"]
    lines += [f"  {q['table']} {q['check']} {q['target']} ({q['level']})" for q in report["quality_failures"]]
    lines += [f"drift alerts: {len(report['drift_alerts'])}"]
    lines += [f"  {a['model_name']} {a['feature']} psi {a['psi']:.3f}" for a in report["drift_alerts"]]
    lines += ["", "problems: " + ("none" if not report["problems"] else str(len(report["problems"])))]
    lines += [f"  {p}" for p in report["problems"]]
    return "\n".join(lines) + "\n"
