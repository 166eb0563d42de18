"""Batch scoring with the registered champion: load it, and write one run date's scores idempotently."""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml import runlog
from lakeml.config import AlertCheckConfig, Config, DriftConfig
from lakeml.errors import JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.lakehouse.predicates import Filters, to_column
from lakeml.ml import registry, tracking
from lakeml.ml.lifecycle import table_ref
from lakeml.quality.drift import DRIFT_PARTITIONS, DRIFT_SCHEMA, feature_drift, feature_drift_within

SCORE_DATE = "as_of_date"


@dataclass(frozen=True)
class Champion:
    """The registered champion version; its model loads on first use (a no-op rerun never loads it)."""

    name: str
    version: str
    tags: dict[str, str]

    @functools.cached_property
    def model(self) -> PipelineModel:
        import mlflow.spark

        return mlflow.spark.load_model(f"models:/{self.name}/{self.version}")


def load_champion(config: Config, name: str, train_job: str) -> Champion:
    """The model version aliased ``champion`` in the registry; a clear error when there is none."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import mlflow.spark

    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    client = mlflow.MlflowClient()
    current = registry.champion_version(client, name)
    if current is None:
        raise JobFailed(f"model '{name}' has no champion in the registry: run {train_job} first")
    return Champion(name, str(current.version), dict(current.tags))


def already_scored(
    lake: Lakehouse,
    table: str,
    dates: tuple[dt.date, dt.date],
    champion: Champion,
    input_version: int,
    input_days: int,
    stamps: Mapping[str, str] | None = None,
) -> bool:
    """Whether every input day of ``dates`` was scored by this model version from this input version
    (and with these extra ``stamps`` column values, e.g. the version of a second model)."""
    columns = ["model_name", "model_version", "input_version", *(stamps or {})]
    expected = (champion.name, champion.version, input_version, *(stamps or {}).values())
    ref = table_ref(lake, table)
    if not ref.exists():
        return False
    row = (
        ref.read(where=[(SCORE_DATE, ">=", dates[0]), (SCORE_DATE, "<=", dates[1])])
        .agg(
            F.countDistinct(SCORE_DATE).alias("days"),
            F.count_distinct(*columns).alias("stamps"),
            F.first(F.struct(*columns)).alias("stamp"),
        )
        .head(1)[0]
    )
    return row["days"] == input_days and row["stamps"] == 1 and tuple(row["stamp"]) == expected


def count_days(rows: DataFrame, date_column: str) -> int:
    """Distinct dates among the input rows (one small aggregate over partition values)."""
    return rows.select(date_column).distinct().count()


def write_scores(
    lake: Lakehouse,
    table: str,
    schema: T.StructType,
    scores: Callable[[], DataFrame],
    dates: tuple[dt.date, dt.date],
    champion: Champion,
    input_version: int,
    input_days: int,
    stamps: Mapping[str, str] | None = None,
    checks: Callable[[], Mapping[str, Any]] | None = None,
    inspect: Callable[[DataFrame], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Replace the partitions of ``dates`` (first, last) in ``table`` with ``scores`` stamped with the model
    (and the extra string columns ``stamps``); a rerun with the same champion, input version and
    stamps changes nothing. ``checks`` (e.g. ``record_drift``) runs first when there is work to do;
    its summary joins the result, and an exception from it stops the job before any score is written.
    ``inspect`` (e.g. ``alert_check``) sees the scores before they are written (they are persisted
    for it, so the model runs once); its summary joins the result, its exception stops the write."""
    summary: dict[str, Any] = {
        "model": champion.name,
        "version": champion.version,
        "input_version": input_version,
    }
    if already_scored(lake, table, dates, champion, input_version, input_days, stamps):
        return {**summary, "rows": 0, "noop": True}
    if checks is not None:
        summary.update(checks())
    fresh = scores()  # built only when needed: building it loads the champion model
    if inspect is not None:
        fresh = fresh.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            summary.update(inspect(fresh))
        except BaseException:
            fresh.unpersist()
            raise
    stamped = fresh.select(
        *fresh.columns,
        F.lit(champion.name).alias("model_name"),
        F.lit(champion.version).alias("model_version"),
        F.lit(input_version).cast("long").alias("input_version"),
        F.current_timestamp().alias("scored_at"),
        *[F.lit(value).alias(name) for name, value in (stamps or {}).items()],
    ).select(*schema.fieldNames())
    ref = table_ref(lake, table).create(schema, [SCORE_DATE])
    outcome = ref.overwrite_where(stamped, [(SCORE_DATE, ">=", dates[0]), (SCORE_DATE, "<=", dates[1])])
    if inspect is not None:
        fresh.unpersist()
    return {**summary, "rows": outcome.rows_added, "noop": False}


def alert_budget(champion: Champion, default: float) -> float:
    """The alert budget the champion's threshold was chosen for (its ``alert_budget`` tag, else
    ``default``)."""
    return float(champion.tags.get("alert_budget", default))


def alert_check(
    champion: Champion, budget: float, cfg: AlertCheckConfig, alert: str = "alert"
) -> Callable[[DataFrame], dict[str, Any]]:
    """An ``inspect`` for :func:`write_scores`: the realised alert rate of the scores beside the budget
    (one aggregate); above budget x ``max_budget_factor`` an ``alert_budget_exceeded`` event is logged,
    or with ``fail_on_excess`` the job fails before any score is written."""

    def check(scores: DataFrame) -> dict[str, Any]:
        row = scores.agg(F.count_if(F.col(alert)).alias("alerts"), F.count(F.lit(1)).alias("rows")).head(1)[0]
        rate = row["alerts"] / row["rows"] if row["rows"] else 0.0
        out = {"alert_budget": budget, "alert_rate": round(rate, 6), "alerts": int(row["alerts"])}
        if rate > budget * cfg.max_budget_factor:
            message = (
                f"{champion.name} v{champion.version} alerts {row['alerts']} of {row['rows']} rows "
                f"({rate:.2%}), above its alert budget {budget:.2%} x ml.alerts.max_budget_factor "
                f"{cfg.max_budget_factor:g}"
            )
            if cfg.fail_on_excess:
                raise JobFailed(f"{message}; no scores were written (ml.alerts.fail_on_excess)")
            runlog.event("alert_budget_exceeded", model=champion.name, version=champion.version, **out)
        return out

    return check


def record_drift(
    lake: Lakehouse,
    champion: Champion,
    reference_table: str,
    current: DataFrame,
    current_version: int,
    dates: tuple[dt.date, dt.date],
    numeric: Sequence[str],
    categorical: Sequence[str],
    cfg: DriftConfig,
    reference_where: Filters = (),
    current_where: Filters | None = None,
) -> dict[str, Any]:
    """Drift of the rows to score against the champion's training input (``reference_table`` at the
    version tagged on the model, rows ``reference_where``), written to ops/drift for (model, first date);
    with ``fail_on_alert``, an alert fails the job after the rows are written.

    ``current_where``: the filters that read ``current`` from ``reference_table`` at
    ``current_version``; when the champion trained on that same version (and all its rows), the
    current rows are a subset of the reference and both are binned in one pass over the reference."""
    tag = f"input.{reference_table}.version"
    if tag not in champion.tags:
        raise JobFailed(
            f"{champion.name} v{champion.version} has no {tag} tag: retrain it to record its input"
        )
    reference_version = int(champion.tags[tag])
    reference = table_ref(lake, reference_table).read(version=reference_version, where=list(reference_where))
    if current_where is not None and not reference_where and reference_version == current_version:
        drifts = feature_drift_within(reference, to_column(current_where), numeric, categorical, cfg)
    else:
        drifts = feature_drift(reference, current, numeric, categorical, cfg)
    checked_at = dt.datetime.now(dt.UTC)
    rows = [
        {
            "model_name": champion.name,
            "window_start": dates[0],
            "window_end": dates[1],
            "model_version": champion.version,
            "reference_table": reference_table,
            "reference_version": reference_version,
            "current_version": current_version,
            **asdict(d),
            "checked_at": checked_at,
        }
        for d in drifts
    ]
    ops = lake.table("ops", "drift").create(DRIFT_SCHEMA, DRIFT_PARTITIONS)
    ops.overwrite_where(
        lake.spark.createDataFrame(
            [tuple(r[f] for f in DRIFT_SCHEMA.fieldNames()) for r in rows], DRIFT_SCHEMA
        ),
        [("model_name", "=", champion.name), ("window_start", "=", dates[0])],
    )
    flagged = [d for d in drifts if d.level != "ok"]
    for d in flagged:
        runlog.event(
            "feature_drift", model=champion.name, feature=d.feature, level=d.level, psi=round(d.psi, 4)
        )
    alerts = [d.feature for d in drifts if d.level == "alert"]
    if alerts and cfg.fail_on_alert:
        raise JobFailed(
            f"{champion.name} v{champion.version}: feature drift above ml.drift.alert_psi={cfg.alert_psi} in "
            f"{', '.join(alerts)} (see ops/drift); no scores were written"
        )
    return {
        "drift_max_psi": round(max((d.psi for d in drifts), default=0.0), 4),
        "drift_warnings": sum(d.level == "warn" for d in drifts),
        "drift_alerts": len(alerts),
    }
