"""Table engines behind one contract (``protocol.TableEngine``); ``open_engine`` picks one by name."""

from __future__ import annotations

from pyspark.sql import SparkSession

from lakeml.config import LakehouseConfig
from lakeml.errors import TableError
from lakeml.lakehouse.engines.delta_rs import DeltaRsEngine
from lakeml.lakehouse.engines.delta_spark import DeltaSparkEngine
from lakeml.lakehouse.engines.protocol import CommitOutcome, StagedWrite, TableEngine, Txn

__all__ = ["CommitOutcome", "StagedWrite", "TableEngine", "Txn", "open_engine"]

def open_engine(name: str, spark: SparkSession, uri: str, settings: LakehouseConfig) -> TableEngine:
    """The engine ``name`` (``lakehouse.engine``) for the table at ``uri``."""
    if name == "delta-rs":
        return DeltaRsEngine(spark, uri, settings)
    if name == "delta-spark":
        return DeltaSparkEngine(spark, uri, settings)
    raise TableError(f"unknown table engine '{name}' (delta-rs or delta-spark)")
