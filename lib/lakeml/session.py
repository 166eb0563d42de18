"""SparkSession from config, for local mode and under spark-submit, and Delta engine detection."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from lakeml.config import Config
from lakeml.errors import EnvironmentProblem, LakemlError, TableError

MIN_JAVA = 17
DELTA_JARS_ENV = "LAKEML_DELTA_JARS"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
DELTA_TABLE_CLASS = "io.delta.tables.DeltaTable"


def java_major_version(java: str) -> int:
    """Major version printed by ``java -version`` (8 for 1.8.x)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise EnvironmentProblem(f"could not read the Java version from '{java} -version'")
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def check_java() -> None:
    """Fail with one sentence, not a Py4J trace, when Java 17+ is missing."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise EnvironmentProblem(
            f"lakeml needs Java {MIN_JAVA} or newer for Spark 4, but no java was found "
            f"({'JAVA_HOME=' + home if home else 'not on PATH and JAVA_HOME is unset'})"
        )
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise EnvironmentProblem(
            f"lakeml needs Java {MIN_JAVA} or newer for Spark 4, but {java} is Java {major}; "
            f"install OpenJDK {MIN_JAVA} and point JAVA_HOME at it"
        )


def delta_connector_jars() -> list[str]:
    """Jars from the folder in $LAKEML_DELTA_JARS (empty when unset)."""
    folder = os.environ.get(DELTA_JARS_ENV)
    if not folder:
        return []
    jars = sorted(str(p) for p in Path(folder).glob("*.jar"))
    if not jars:
        raise EnvironmentProblem(f"{DELTA_JARS_ENV}={folder} holds no .jar files")
    return jars


def running_under_spark_submit() -> bool:
    """True when spark-submit launched this Python driver (it hands over its JVM's gateway port)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_spark(config: Config, app_name: str | None = None) -> SparkSession:
    """The session for ``config``; settings spark-submit already made are never overridden."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name or config.spark.app_name)
    defaults = dict(config.spark.conf)
    if running_under_spark_submit():
        SparkContext._ensure_initialized()
        preset = SparkConf()  # spark-submit's settings, read from its JVM
        for key, value in defaults.items():
            if not preset.contains(key):
                builder = builder.config(key, value)
    else:
        check_java()
        # Python workers must run this interpreter (its venv has lakeml), not whatever python3 is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        builder = builder.master(config.spark.master)
        for key, value in defaults.items():
            builder = builder.config(key, value)
        jars = delta_connector_jars() if config.lakehouse.engine != "delta-rs" else []
        if jars:
            builder = (
                builder.config("spark.jars", ",".join(jars))
                .config("spark.sql.extensions", DELTA_EXTENSION)
                .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
            )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(config.spark.log_level)
    return spark


def jvm(spark: SparkSession) -> Any:
    """The session's py4j JVM view (classic Spark: always set while the session runs)."""
    view = spark.sparkContext._jvm
    if view is None:
        raise LakemlError("the Spark session has no JVM gateway (stopped, or a Spark Connect session)")
    return view


def delta_spark_status(spark: SparkSession) -> str | None:
    """None when the native connector is usable, else the reason it is not (no network is touched)."""
    try:
        jvm(spark).org.apache.spark.util.Utils.classForName(DELTA_TABLE_CLASS, False, False)
    except Exception:
        return f"the io.delta classes are not loadable (set {DELTA_JARS_ENV} to a folder of delta-spark jars)"
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if DELTA_EXTENSION not in extensions:
        return f"io.delta is loadable but spark.sql.extensions does not include {DELTA_EXTENSION}"
    return None


def resolve_engine(spark: SparkSession, configured: str) -> str:
    """'delta-spark' or 'delta-rs' for ``lakehouse.engine`` (auto picks the native connector when usable)."""
    if configured == "delta-rs":
        return "delta-rs"
    reason = delta_spark_status(spark)
    if configured == "delta-spark":
        if reason:
            raise TableError(f"lakehouse.engine=delta-spark but {reason}")
        return "delta-spark"
    return "delta-rs" if reason else "delta-spark"


def clear_checkpoints(spark: SparkSession) -> str | None:
    """Delete this context's checkpoint folder (``<checkpoint dir>/<uuid>/rdd-*``) once a job no longer
    needs it; Spark would leave it behind for good. Returns the folder deleted, if any."""
    folder = spark.sparkContext.getCheckpointDir()
    if not folder:
        return None
    jsc = spark.sparkContext._jsc
    path = jvm(spark).org.apache.hadoop.fs.Path(folder)
    path.getFileSystem(jsc.hadoopConfiguration()).delete(path, True)
    return folder


@contextlib.contextmanager
def session_settings(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Set SQL settings on the session for the ``with`` block; restore (or unset) the old values after it."""
    previous: dict[str, str | None] = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)
