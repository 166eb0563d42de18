"""The training lifecycle shared by every model: pinned inputs, MLflow run, registry, promotion, report.

A trainer is a :class:`TrainingSpec`: its own steps (check and split the input, fit and evaluate each
model into one result object, the report of that result, its params, metrics and summary).
:func:`run_training` owns the rest, the same for every trainer: it pins the input (:func:`pin`), runs
the spec's steps in a :class:`TrainingRun` that releases every frame they cached, and hands each
fitted model to :func:`finish_training` as a :class:`Candidate`. That one call logs the run (params,
metrics, reproducibility facts, the model, the HTML report), evaluates the current champion on the
same holdout, applies the promotion gate, and protects the input table versions from vacuum.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from lakeml import faults
from lakeml.config import Config, join_location
from lakeml.errors import JobFailed
from lakeml.lakehouse import DeltaTableRef, Lakehouse
from lakeml.ml import registry, tracking
from lakeml.ml.report import HtmlReport
from lakeml.steps import DateRange, StepResult

Result = TypeVar("Result")


@dataclass(frozen=True)
class PinnedTable:
    """A table read at one Delta version, so the run can be repeated on exactly the same rows."""

    name: str
    table: DeltaTableRef
    version: int
    df: DataFrame


@dataclass
class Candidate:
    """A fitted model ready for the registry, with its holdout metrics and how to score a rival on it."""

    name: str
    model: PipelineModel
    metrics: dict[str, float]
    evaluate: Callable[[PipelineModel], dict[str, float]]
    promotion: Any  # PromotionConfig
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # The same metrics of the run's baseline on the same holdout (the gate refuses a model scoring 0
    # on its primary metric where the baseline scores above 0).
    baseline: Mapping[str, float] | None = None


@dataclass(frozen=True)
class TrainingOutcome:
    name: str
    version: str
    run_id: str
    promoted: bool
    reason: str
    metrics: Mapping[str, float]
    champion_metrics: Mapping[str, float] | None
    report_path: str


def table_ref(lake: Lakehouse, spec: str) -> DeltaTableRef:
    """``layer/name`` under the lakehouse root, or an absolute path / URI of any Delta table."""
    if "://" in spec or spec.startswith("/"):
        return lake.at(spec)
    layer, _, name = spec.partition("/")
    return lake.table(layer, name)


def pin(lake: Lakehouse, spec: str) -> PinnedTable:
    """Read ``spec`` at its current version; fails clearly when the table does not exist yet."""
    table = table_ref(lake, spec)
    if not table.exists():
        raise JobFailed(f"training input {spec} ({table.uri}) does not exist: run its build job first")
    version = table.version()
    return PinnedTable(spec, table, version, table.read(version=version))


def expand_columns(patterns: Sequence[str], columns: Sequence[str]) -> list[str]:
    """Columns matching each fnmatch pattern, in pattern order then table order; a pattern matching
    nothing is an error (a renamed column must not silently drop a feature)."""
    out: list[str] = []
    for pattern in patterns:
        hits = [c for c in columns if fnmatch.fnmatchcase(c, pattern)]
        if not hits:
            raise JobFailed(f"feature pattern '{pattern}' matches no column of the input table")
        out.extend(c for c in hits if c not in out)
    return out


def require_columns(df: DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise JobFailed(f"{what}: input has no column(s) {', '.join(missing)} (has: {', '.join(df.columns)})")


def report_path(config: Config, experiment: str, run_date: dt.date, run_id: str) -> Path:
    folder = Path(join_location(join_location(config.lakehouse.root, config.ml.reports_dir), experiment))
    return folder / f"{run_date.isoformat()}-{run_id[:12]}.html"


def _champion_metrics(client: Any, candidate: Candidate) -> tuple[Mapping[str, float] | None, str]:
    """Metrics of the current champion on the candidate's holdout, or None with a note why not."""
    import mlflow.spark

    current = registry.champion_version(client, candidate.name)
    if current is None:
        return None, "no champion yet"
    try:
        model = mlflow.spark.load_model(f"models:/{candidate.name}/{current.version}")
        return candidate.evaluate(model), f"champion v{current.version}"
    except Exception as exc:  # an incompatible champion (e.g. other features) cannot be compared
        return None, f"champion v{current.version} could not score this holdout: {type(exc).__name__}: {exc}"


def finish_training(
    spark: SparkSession,
    config: Config,
    lake: Lakehouse,
    experiment: str,
    run_date: dt.date,
    inputs: Sequence[PinnedTable],
    candidates: Sequence[Candidate],
    report: HtmlReport,
    run_params: Mapping[str, Any],
    run_metrics: Mapping[str, float],
    timed: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
) -> list[TrainingOutcome]:
    """Log, register, gate and protect: one MLflow run holding every candidate of one training job
    (``timed(stage)`` times its stages: ``log``, ``champion``, ``register``)."""
    timed = timed or (lambda _stage: contextlib.nullcontext())
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import mlflow.spark

    experiment_id = tracking.experiment_id(config, experiment)
    client = mlflow.MlflowClient()
    versions = {p.name: p.version for p in inputs}
    outcomes: list[TrainingOutcome] = []
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{experiment}-{run_date}") as run:
        run_id = run.info.run_id
        params = tracking.reproducibility_params(spark, lake.engine, versions, config.ml.seed)
        params.update({k: str(v) for k, v in run_params.items()})
        params["run_date"] = run_date.isoformat()
        for c in candidates:
            params.update({f"{c.name}.{k}": str(v) for k, v in c.params.items()})
        mlflow.log_params({k: v[:6000] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in run_metrics.items()})
        rows = []
        decisions = []
        for c in candidates:
            mlflow.log_metrics({f"{c.name}.{k}": float(v) for k, v in c.metrics.items()})
            with timed("champion"):
                champion, note = _champion_metrics(client, c)
            decision = registry.decide_promotion(c.metrics, champion, c.promotion, c.baseline)
            decisions.append((c, champion, decision))
            metric = c.promotion.primary_metric
            rows.append(
                {
                    "model": c.name,
                    "metric": metric,
                    "candidate": c.metrics.get(metric),
                    "champion": None if champion is None else champion.get(metric),
                    "compared with": note,
                    "decision": "champion" if decision.promote else "challenger",
                    "reason": decision.reason,
                }
            )
        report.add_heading("Promotion")
        report.add_table("Candidate vs current champion on the same holdout", rows)
        report.add_table("Inputs (pinned Delta versions) and environment", [params])
        with timed("log"):
            path = report.write(report_path(config, experiment, run_date, run_id))
            mlflow.log_artifact(str(path), artifact_path="report")
        for c, champion, decision in decisions:
            with timed("log"):
                info = mlflow.spark.log_model(
                    c.model, artifact_path=c.name, pip_requirements=[f"pyspark=={spark.version}"]
                )
            with timed("register"):
                registered = mlflow.register_model(
                    info.model_uri, c.name, tags={"run_date": run_date.isoformat()}
                )
                version = str(registered.version)
                faults.point("registry.registered", c.name)
                for key, value in {
                    **c.tags,
                    **{f"input.{k}.version": str(v) for k, v in versions.items()},
                }.items():
                    client.set_model_version_tag(c.name, version, key, value)
                registry.protect_inputs({p.name: (p.table, p.version) for p in inputs}, c.name, version)
                for p in inputs:  # lift protections of model versions deleted from the registry since
                    registry.release_unregistered(client, p.table)
                registry.apply_decision(client, c.name, version, decision)
            faults.point("registry.aliased", c.name)
            if champion is not None:
                mlflow.log_metrics(
                    {f"{c.name}.champion.{k}": float(v) for k, v in champion.items() if isinstance(v, float)}
                )
            outcomes.append(
                TrainingOutcome(
                    c.name, version, run_id, decision.promote, decision.reason, c.metrics, champion, str(path)
                )
            )
    return outcomes


def training_result(summary: Mapping[str, Any]) -> StepResult:
    """A training step's result, one definition for every trainer: ``rows_train``, ``rows_validation``
    and ``rows_test`` are the rows of each split (validation = rows held out from fitting to tune,
    choose or set the threshold, even when the final model is refitted on them), ``rows_in`` their sum;
    the summary is the log details."""
    rows = sum(int(summary[k]) for k in ("rows_train", "rows_validation", "rows_test"))
    return StepResult(rows_in=rows, rows_out=0, details=summary)


def scoring_result(summary: Mapping[str, Any]) -> StepResult:
    """A scoring step's result: rows scored (0 for a no-op rerun), and its summary as the log details."""
    return StepResult(rows_in=int(summary["rows"]), rows_out=int(summary["rows"]), details=summary)


class TrainingRun:
    """One training job while it runs: session, config, lakehouse, run date, the pinned input, and the
    frames its steps cached (released when the run ends, whether it succeeded or not)."""

    def __init__(self, spark: SparkSession, config: Config, run_date: dt.date, input_table: str) -> None:
        self.spark = spark
        self.config = config
        self.run_date = run_date
        self.seed = config.ml.seed
        self.lake = Lakehouse(spark, config)
        self.pinned = pin(self.lake, input_table)
        self._cached: list[DataFrame] = []
        self.seconds: dict[str, float] = {}  # wall seconds per stage (the summary's ``stage_seconds``)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Adds the block's wall seconds to ``seconds[stage]`` (reported, so the overhead around the fits
        can be seen per stage)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def cache(self, df: DataFrame) -> DataFrame:
        """``df`` persisted in memory and on disk until the run ends."""
        cached = df.persist(StorageLevel.MEMORY_AND_DISK)
        self._cached.append(cached)
        return cached

    def release(self) -> None:
        """Unpersist every frame cached by the run."""
        for df in self._cached:
            df.unpersist()
        self._cached.clear()


class TrainingSpec(ABC, Generic[Result]):
    """One training job as its own steps; :func:`run_training` runs them and owns the rest.

    ``train`` checks and splits the pinned input and fits and evaluates every model into one result
    object (caching through ``run.cache``); the other steps read that result only.
    """

    experiment: str  # the MLflow experiment and the reports folder
    input_table: str  # ``layer/name`` or a path: pinned at its current version for the run

    @abstractmethod
    def train(self, run: TrainingRun) -> Result:
        """Check and split the pinned input, fit and evaluate the models."""

    @abstractmethod
    def candidates(self, result: Result) -> list[Candidate]:
        """The fitted models for the registry, in the order of the outcomes ``summary`` receives."""

    @abstractmethod
    def report(self, run: TrainingRun, result: Result) -> HtmlReport:
        """The HTML report of the run (the lifecycle appends the promotion and inputs sections)."""

    @abstractmethod
    def run_params(self, result: Result) -> dict[str, Any]:
        """Params of the whole run (each candidate logs its own, prefixed by its name)."""

    @abstractmethod
    def run_metrics(self, result: Result) -> dict[str, float]:
        """Metrics of the whole run (each candidate logs its own, prefixed by its name)."""

    @abstractmethod
    def summary(self, result: Result, outcomes: Sequence[TrainingOutcome]) -> dict[str, Any]:
        """The job summary, with ``rows_train``, ``rows_validation`` and ``rows_test`` (the lifecycle
        appends the input version, the report and the MLflow run id)."""


def run_training(
    spark: SparkSession, config: Config, dates: DateRange, spec: TrainingSpec[Result]
) -> StepResult:
    """Pin ``spec.input_table``, run the spec's steps as of the run date ``dates.last``, log, register
    and gate its candidates in one MLflow run; every frame the steps cached is released at the end."""
    started = time.perf_counter()
    run = TrainingRun(spark, config, dates.last, spec.input_table)
    try:
        with run.timed("train"):
            result = spec.train(run)
        with run.timed("report"):
            report = spec.report(run, result)
        outcomes = finish_training(
            spark,
            config,
            run.lake,
            spec.experiment,
            run.run_date,
            [run.pinned],
            spec.candidates(result),
            report,
            spec.run_params(result),
            spec.run_metrics(result),
            run.timed,
        )
    finally:
        run.release()
    run.seconds["total"] = time.perf_counter() - started
    return training_result(
        {
            **spec.summary(result, outcomes),
            "input_version": run.pinned.version,
            "report": outcomes[0].report_path,  # one MLflow run and report for every candidate
            "mlflow_run_id": outcomes[0].run_id,
            # where the training's wall time went: ``train`` holds the trainer's own stages (prepare,
            # fit, evaluate ...); ``log``, ``champion`` and ``register`` are MLflow's
            "stage_seconds": {k: round(v, 2) for k, v in run.seconds.items()},
        }
    )
