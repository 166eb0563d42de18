"""Batch scoring with the registered champion: load it, and write one run date's scores idempotently."""

from __future__ import annotations

import datetime as dt
import os
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
    name: str
    version: str
    model: PipelineModel
    tags: dict[str, str]


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
    model = mlflow.spark.load_model(f"models:/{name}/{current.version}")
    return Champion(name, str(current.version), model, dict(current.tags))


def already_scored(
    lake: Lakehouse,
    table: str,
    dates: tuple[dt.date, dt.date],
    champion: Champion,
    input_version: int,
    input_days: int,
) -> bool:
    """Whether every input day of ``dates`` was scored by this model version from this input version."""
    ref = table_ref(lake, table)
    if not ref.exists():
        return False
    row = (
        ref.read(where=[(SCORE_DATE, ">=", dates[0]), (SCORE_DATE, "<=", dates[1])])
        .agg(
            F.countDistinct(SCORE_DATE).alias("days"),
            F.count_distinct("model_name", "model_version", "input_version").alias("stamps"),
            F.first(F.struct("model_name", "model_version", "input_version")).alias("stamp"),
        )
        .first()
    )
    return (
        row["days"] == input_days
        and row["stamps"] == 1
        and tuple(row["stamp"]) == (champion.name, champion.version, input_version)
    )


def write_scores(
    lake: Lakehouse,
    table: str,
    schema: T.StructType,
    scores: DataFrame,
    dates: tuple[dt.date, dt.date],
    champion: Champion,
    input_version: int,
) -> dict[str, Any]:
    """Replace the partitions of ``dates`` (first, last) in ``table`` with ``scores`` stamped with the model;
    a rerun with the same champion and input version changes nothing."""
    summary = {"model": champion.name, "version": champion.version, "input_version": input_version}
    input_days = scores.select(SCORE_DATE).distinct().count()
    if already_scored(lake, table, dates, champion, input_version, input_days):
        return {**summary, "rows": 0, "noop": True}
    stamped = scores.select(
        *scores.columns,
        F.lit(champion.name).alias("model_name"),
        F.lit(champion.version).alias("model_version"),
        F.lit(input_version).cast("long").alias("input_version"),
        F.current_timestamp().alias("scored_at"),
    ).select(*schema.fieldNames())
    ref = table_ref(lake, table).create(schema, [SCORE_DATE])
    outcome = ref.overwrite_where(stamped, [(SCORE_DATE, ">=", dates[0]), (SCORE_DATE, "<=", dates[1])])
    return {**summary, "rows": outcome.rows_added, "noop": False}
