"""MLflow tracking: where runs and artifacts live, and the facts that make a run reproducible."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from pyspark.sql import SparkSession

from lakeml.config import PROJECT_ROOT, Config, join_location

GIT_COMMIT_ENV = "LAKEML_GIT_COMMIT"


def tracking_uri(config: Config) -> str:
    """``ml.tracking_uri``, else a sqlite database under the lakehouse root (created on first use)."""
    if config.ml.tracking_uri:
        return config.ml.tracking_uri
    folder = Path(join_location(config.lakehouse.root, "_mlflow"))
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_root(config: Config) -> str:
    """``ml.artifact_root``, else ``<lakehouse root>/_mlflow/artifacts``, as a URI."""
    root = config.ml.artifact_root or join_location(config.lakehouse.root, "_mlflow/artifacts")
    return root if "://" in root or root.startswith("file:") else Path(root).absolute().as_uri()


def experiment_id(config: Config, name: str) -> str:
    """Point MLflow at the configured store and return the id of experiment ``<prefix>/<name>``."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(config))
    full = f"{config.ml.experiment_prefix}/{name}"
    client = mlflow.MlflowClient()
    existing = client.get_experiment_by_name(full)
    if existing is not None:
        return existing.experiment_id
    return client.create_experiment(full, artifact_location=f"{artifact_root(config)}/{name}")


def git_commit() -> str:
    """The checkout's commit (``+dirty`` with local changes), $LAKEML_GIT_COMMIT, or "unknown" (wheel)."""
    if os.environ.get(GIT_COMMIT_ENV):
        return os.environ[GIT_COMMIT_ENV]
    if not (PROJECT_ROOT / ".git").exists():
        return "unknown"
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def reproducibility_params(
    spark: SparkSession, engine: str, inputs: Mapping[str, int], seed: int
) -> dict[str, str]:
    """Input table versions, seed, code commit and library versions, as MLflow params."""
    params = {f"input.{name}.version": str(v) for name, v in inputs.items()}
    params.update(
        {
            "seed": str(seed),
            "git_commit": git_commit(),
            "spark_version": spark.version,
            "delta_engine": engine,
            "deltalake_version": _version("deltalake"),
            "delta_spark_version": _version("delta-spark"),
            "lakeml_version": _version("lakeml"),
            "python_version": platform.python_version(),
        }
    )
    return params
