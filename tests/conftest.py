"""Shared fixtures: one local SparkSession for the whole run, the test config, table factories."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakeml.config import Config, load_config
from lakeml.session import build_spark, delta_connector_jars

os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
# The suite's own PII key (silver tokenizes with it); production keys come from the environment only.
TEST_PII_KEY = "lakeml-tests-only-pii-key-0123456789"
os.environ["LAKEML_PII_KEY"] = TEST_PII_KEY
# Never the developer's own key file (silver.pii_key_file): a test that unsets the variable sees no key.
os.environ["LAKEML_PII_KEY_FILE"] = "/nonexistent/lakeml-tests/pii.key"


@pytest.fixture(scope="session")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    root = tmp_path_factory.mktemp("lake")
    return load_config("test", [f"lakehouse.root={root}"])


@pytest.fixture(scope="session")
def spark(config: Config) -> Iterator[SparkSession]:
    """local[2], UI off, 2 shuffle partitions (conf/test.yaml); delta-spark jars when LAKEML_DELTA_JARS is
    set."""
    # Built as for engine auto, so the connector jars load when LAKEML_DELTA_JARS is set.
    session = build_spark(with_engine(config, "auto"), app_name="lakeml-tests")
    yield session
    session.stop()


def delta_spark_skip_reason() -> str | None:
    if not os.environ.get("LAKEML_DELTA_JARS"):
        return ("delta-spark engine: LAKEML_DELTA_JARS is not set (the connector jars come from Maven "
            "Central, unreachable here)")
    return None


@pytest.fixture(params=["delta-rs", "delta-spark"])
def engine(request: pytest.FixtureRequest, spark: SparkSession) -> str:
    """Each table test runs once per engine; delta-spark only when its jars are present."""
    if request.param == "delta-spark":
        reason = delta_spark_skip_reason()
        if reason:
            pytest.skip(reason)
        assert delta_connector_jars(), "LAKEML_DELTA_JARS holds no jars"
    return request.param


def with_engine(config: Config, engine: str) -> Config:
    """``config`` with ``lakehouse.engine`` replaced."""
    return dataclasses.replace(config, lakehouse=dataclasses.replace(config.lakehouse, engine=engine))


@pytest.fixture
def table_path(tmp_path: Path) -> str:
    return str(tmp_path / "table")
