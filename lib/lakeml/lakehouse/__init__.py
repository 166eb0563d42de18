"""The lakehouse table layer: every job reads and writes Delta tables through this package."""

from __future__ import annotations

from pyspark.sql import SparkSession

from lakeml.config import Config, join_location
from lakeml.lakehouse.engines import CommitOutcome
from lakeml.lakehouse.split import StagedAppend, write_split
from lakeml.lakehouse.table import DeltaTableRef, deduplicate
from lakeml.session import resolve_engine

__all__ = ["CommitOutcome", "DeltaTableRef", "Lakehouse", "StagedAppend", "deduplicate", "write_split"]


class Lakehouse:
    """Tables under ``lakehouse.root``, named ``<layer>/<name>`` (bronze, silver, gold, ops)."""

    LAYERS = ("bronze", "silver", "gold", "ops")

    def __init__(self, spark: SparkSession, config: Config) -> None:
        self.spark = spark
        self.config = config
        self.engine = resolve_engine(spark, config.lakehouse.engine)

    def path(self, layer: str, name: str) -> str:
        if layer not in self.LAYERS:
            raise ValueError(f"unknown layer '{layer}' (one of {', '.join(self.LAYERS)})")
        return join_location(self.config.lakehouse.root, f"{layer}/{name}")

    def table(self, layer: str, name: str) -> DeltaTableRef:
        return DeltaTableRef(self.spark, self.path(layer, name), self.config.lakehouse, self.engine)

    def at(self, uri: str) -> DeltaTableRef:
        return DeltaTableRef(self.spark, uri, self.config.lakehouse, self.engine)
