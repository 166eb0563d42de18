"""Batch scoring with the registered champion: load it, and write one run date's scores idempotently."""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import Config
from lakeml.errors import JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.ml import registry, tracking
from lakeml.ml.lifecycle import table_ref

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
        .first()
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
) -> dict[str, Any]:
    """Replace the partitions of ``dates`` (first, last) in ``table`` with ``scores`` stamped with the model
    (and the extra string columns ``stamps``); a rerun with the same champion, input version and
    stamps changes nothing."""
    summary = {"model": champion.name, "version": champion.version, "input_version": input_version}
    if already_scored(lake, table, dates, champion, input_version, input_days, stamps):
        return {**summary, "rows": 0, "noop": True}
    fresh = scores()  # built only when needed: building it loads the champion model
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
    return {**summary, "rows": outcome.rows_added, "noop": False}
