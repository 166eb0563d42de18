"""Test helpers for the nearline fraud stream: landing lines, deliveries in a chosen order, a registered
model."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakeml.config import Config, load_config
from lakeml.domains.banking.silver import TRANSACTION_FIELDS
from lakeml.ml import models

HEADER = ",".join(TRANSACTION_FIELDS)
MODEL = "lakeml-fraud"


def pan(card: int) -> str:
    """A Luhn-valid 16-digit PAN for card number ``card``."""
    body = f"4{card:014d}"
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return body + str((10 - total % 10) % 10)


def line(
    txn_id: str,
    ts: dt.datetime,
    card: int,
    amount: float,
    merchant: str = "M1",
    country: str = "DE",
    mcc: str = "5411",
    lat: float = 52.52,
    lon: float = 13.405,
) -> str:
    return (
        f"{txn_id},{ts:%Y-%m-%dT%H:%M:%S}Z,{pan(card)},A{card},{merchant},{mcc},{amount:.2f},EUR,pos,"
        f"{country},{lat},{lon},true"
    )


def stream_config(root: Path, *overrides: str) -> Config:
    return load_config(
        "test",
        [
            f"lakehouse.root={root}",
            "nearline.fraud_alerts.max_files_per_trigger=1",
            "nearline.fraud_alerts.watermark_minutes=60",
            "nearline.fraud_alerts.sink.jsonl_dir=alerts",
            *overrides,
        ],
    )


def deliver(config: Config, name: str, lines: list[str], order: int, header: bool = True) -> Path:
    """Write a landing transactions file whose modification time puts it ``order``-th in arrival order."""
    folder = Path(config.landing_path().removeprefix("file:")) / "transactions"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(([HEADER] if header else []) + lines) + "\n")
    # Arrivals a second apart, in the past (the file source takes the oldest first).
    stamp = time.time() - 3600 + order
    os.utime(path, (stamp, stamp))
    return path


_FITTED: dict[bool, PipelineModel] = {}


def fitted_model(spark: SparkSession, config: Config, flip: bool) -> PipelineModel:
    """A small logistic fraud pipeline on synthetic features, fitted once per test session (per ``flip``)."""
    from tests import ml_data

    if flip not in _FITTED:
        cfg = config.ml.fraud
        rows = ml_data.transaction_features(
            spark, rows_per_day=80, first_day=dt.date(2026, 1, 1), days=2, mature_days=2
        )
        label = F.col("label_fraud").cast("double")
        rows = rows.where(F.col("label_fraud").isNotNull()).withColumn(
            "_label", (1 - label) if flip else label
        )
        stages = [
            *models.feature_stages(rows.schema, cfg.numeric_features, cfg.categorical_features),
            *models.classifier_stages("logistic", "_label", None, 42),
        ]
        _FITTED[flip] = Pipeline(stages=stages).fit(rows)
    return _FITTED[flip]


def register_model(
    spark: SparkSession,
    config: Config,
    flip: bool = False,
    threshold: float = 0.5,
    tags: dict | None = None,
    experiment: str = "fraud-stream-tests",
) -> str:
    """Register the small logistic fraud model (:func:`fitted_model`) and make it the champion.

    ``flip``: a model whose scores differ (trained on inverted labels), to tell versions apart.
    """
    import mlflow
    import mlflow.spark

    from lakeml.ml import registry, tracking

    model = fitted_model(spark, config, flip)
    uri = tracking.tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=tracking.experiment_id(config, experiment))
    with mlflow.start_run():
        info = mlflow.spark.log_model(
            model, artifact_path=MODEL, pip_requirements=[f"pyspark=={spark.version}"]
        )
    version = str(mlflow.register_model(info.model_uri, MODEL).version)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    for key, value in {"threshold": repr(threshold), **(tags or {})}.items():
        client.set_model_version_tag(MODEL, version, key, value)
    client.set_registered_model_alias(MODEL, registry.CHAMPION, version)
    return version


def alerts(spark: SparkSession, config: Config) -> DataFrame:
    from lakeml.lakehouse import Lakehouse

    return Lakehouse(spark, config).table("gold", "fraud_alerts").read()
