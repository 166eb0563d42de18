"""The job DAG: named jobs with dependencies, discovered from ``lakeml.domains.<domain>.jobs``."""

from __future__ import annotations

import importlib
import json
import pkgutil
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pyspark.sql import SparkSession

from lakeml import progress, runlog, runstate
from lakeml.config import Config
from lakeml.errors import ConfigError, JobFailed, LakemlError, UsageError
from lakeml.lakehouse.lineage import commit_lineage
from lakeml.lakehouse.table import recording_reads
from lakeml.session import clear_checkpoints
from lakeml.steps import DateRange, StepResult, running_as


@dataclass(frozen=True)
class JobContext:
    """What a job function gets: the session, validated config, the dates it covers and its run id.

    ``dates.last`` is the run date (--run-date); dated jobs cover all of ``dates`` (--since), the
    others run for ``dates.last`` alone."""

    spark: SparkSession
    config: Config
    dates: DateRange
    run_id: str


# A job's result is a step's: the job functions in lakeml.domains.*.jobs pass their step's on.
JobResult = StepResult

JobFunction = Callable[[JobContext], JobResult]


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: JobFunction
    depends_on: tuple[str, ...]
    description: str
    # Checks that need only the config and environment (e.g. a secret), run before Spark starts.
    preflight: Callable[[Config], object] | None = None
    # Covers every date of [--since, --run-date] (features, scoring); the others run for one date.
    dated: bool = False


_REGISTRY: dict[str, JobSpec] = {}


def job(
    name: str,
    depends_on: Iterable[str] = (),
    description: str = "",
    preflight: Callable[[Config], object] | None = None,
    dated: bool = False,
) -> Callable[[JobFunction], JobFunction]:
    """Register ``func`` as job ``name`` (``domain.step``) running after ``depends_on`` (``dated``: takes
    --since)."""

    def register(func: JobFunction) -> JobFunction:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.func is not func:
            raise LakemlError(
                f"job '{name}' is registered twice ({existing.func.__module__}, {func.__module__})"
            )
        doc = description or ((func.__doc__ or "").strip().splitlines() or [""])[0]
        _REGISTRY[name] = JobSpec(name, func, tuple(depends_on), doc, preflight, dated)
        return func

    return register


def registry() -> dict[str, JobSpec]:
    """All jobs of every domain package under ``lakeml.domains`` (each may have a ``jobs`` module)."""
    import lakeml.domains as domains

    for module in pkgutil.iter_modules(domains.__path__):
        if module.ispkg:
            try:
                importlib.import_module(f"lakeml.domains.{module.name}.jobs")
            except ModuleNotFoundError as exc:
                if exc.name != f"lakeml.domains.{module.name}.jobs":
                    raise
    for spec in _REGISTRY.values():
        for dep in spec.depends_on:
            if dep not in _REGISTRY:
                raise LakemlError(f"job '{spec.name}' depends on unknown job '{dep}'")
    return dict(_REGISTRY)


def topological_order(jobs: Mapping[str, JobSpec]) -> list[str]:
    """Jobs ordered so each comes after its dependencies; ties broken by name for a stable order."""
    remaining = {name: set(spec.depends_on) & set(jobs) for name, spec in jobs.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(n for n, deps in remaining.items() if not deps)
        if not ready:
            raise LakemlError(f"job dependencies form a cycle among: {', '.join(sorted(remaining))}")
        for name in ready:
            order.append(name)
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


def select_jobs(jobs: Mapping[str, JobSpec], start: str | None, stop: str | None) -> list[str]:
    """Jobs from ``start`` (and everything downstream of it) up to ``stop`` (and what it needs)."""
    for name in (start, stop):
        if name is not None and name not in jobs:
            raise UsageError(f"unknown job '{name}' (known: {', '.join(sorted(jobs))})")
    order = topological_order(jobs)
    chosen = set(order)
    if start is not None:
        downstream = {start}
        for name in order:
            if set(jobs[name].depends_on) & downstream:
                downstream.add(name)
        chosen &= downstream
    if stop is not None:
        upstream = {stop}
        for name in reversed(order):
            if name in upstream:
                upstream.update(jobs[name].depends_on)
        chosen &= upstream
    selected = [n for n in order if n in chosen]
    if not selected:
        assert start is not None and stop is not None  # nothing is dropped without both
        raise UsageError(
            f"--from {start} --to {stop} selects no job: {stop} does not depend on {start} "
            f"({start} runs at step {order.index(start) + 1}, {stop} at step {order.index(stop) + 1} of "
            f"{len(order)}; "
            "see `lakeml list`)"
        )
    return selected


def run_job(
    spec: JobSpec,
    spark: SparkSession,
    config: Config,
    dates: DateRange,
    runs: list[JobRun] | None = None,
    force: bool = False,
) -> JobResult:
    """Run one job with its start and end log lines and its ops/job_runs row (also appended to ``runs``);
    any failure becomes JobFailed. Unless ``force``, a job whose inputs and settings are unchanged since
    its last successful run for the same ``dates`` is skipped (``lakeml.runstate``). Every commit the run
    makes, its ops/job_runs row included, carries its lineage (``lakeml.lakehouse.lineage``)."""
    run_id = uuid.uuid4().hex
    with commit_lineage(spec.name, run_id, dates.last), running_as(spec.name, run_id):
        return _run_job(spec, spark, config, dates, run_id, runs, force)


def _run_job(
    spec: JobSpec,
    spark: SparkSession,
    config: Config,
    dates: DateRange,
    run_id: str,
    runs: list[JobRun] | None,
    force: bool,
) -> JobResult:
    common = {"job": spec.name, "run_id": run_id, "run_date": dates.last.isoformat(), "env": config.env}
    if dates.first != dates.last:
        common["since"] = dates.first.isoformat()
    runlog.event("job_start", **common)
    run = JobRun(spec.name, run_id, config.env, dates.last, dates.first, datetime.now(UTC))
    if runs is not None:
        runs.append(run)
    started = time.perf_counter()
    skipped = None if force else runstate.skip_reason(spark, config, spec.name, dates)
    if skipped is not None:
        seconds = round(time.perf_counter() - started, 3)
        result = JobResult(0, 0, {"skipped": skipped, "noop": True})
        runlog.event("job_end", **common, status=runstate.SKIPPED, skipped=skipped, seconds=seconds)
        record_job_run(spark, config, run.finish(runstate.SKIPPED, seconds, {}, result=result))
        return result
    try:
        with (
            recording_reads() as reads,
            runstate.noting_files() as files,
            progress.stage_progress(
                spark, spec.name, config.run.progress, config.run.progress_interval_seconds
            ),
        ):
            try:
                result = spec.func(JobContext(spark, config, dates, run_id))
            finally:
                clear_checkpoints(spark)  # e.g. ALS's rdd-* files: nothing after the job reads them
    except Exception as exc:
        seconds = round(time.perf_counter() - started, 3)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        runlog.event("job_end", **common, status="failed", seconds=seconds, error=reason)
        record_job_run(spark, config, run.finish("failed", seconds, reads, message=reason))
        if isinstance(exc, ConfigError):
            raise  # a configuration problem (e.g. a missing secret) is exit 2, not a failed job
        if not isinstance(exc, LakemlError):
            traceback.print_exc()
        raise JobFailed(f"job {spec.name} failed: {reason}") from exc
    seconds = round(time.perf_counter() - started, 3)
    runlog.event(
        "job_end",
        **common,
        status="ok",
        rows_in=result.rows_in,
        rows_out=result.rows_out,
        seconds=seconds,
        **dict(result.details),
    )
    run.settings = runstate.settings_fingerprint(config)
    run.input_state = runstate.encode_state({**runstate.input_state(spark, config, reads), **files})
    record_job_run(spark, config, run.finish("ok", seconds, reads, result=result))
    return result


@dataclass
class JobRun:
    """One job run as ops/job_runs records it (JOB_RUNS_SCHEMA)."""

    job: str
    run_id: str
    env: str
    run_date: date
    first_date: date
    started_at: datetime
    status: str = "running"
    seconds: float = 0.0
    result: JobResult | None = None
    message: str | None = None
    input_versions: dict[str, int] = field(default_factory=dict)
    settings: str | None = None
    input_state: str | None = None

    @property
    def noop(self) -> bool | None:
        """Nothing new was done: the job says so (``noop``), or it read and wrote no rows."""
        if self.result is None:
            return None
        said = self.result.details.get("noop")
        return bool(said) if said is not None else self.result.rows_in == 0 and self.result.rows_out == 0

    def finish(
        self,
        status: str,
        seconds: float,
        reads: Mapping[str, int],
        result: JobResult | None = None,
        message: str | None = None,
    ) -> JobRun:
        self.status, self.seconds, self.result, self.message = status, seconds, result, message
        self.input_versions = dict(reads)
        return self

    def row(self, root: str) -> tuple[Any, ...]:
        prefix = root.rstrip("/") + "/"
        versions = {uri.removeprefix(prefix): v for uri, v in sorted(self.input_versions.items())}
        r = self.result
        return (
            self.run_id, self.job, self.env, self.run_date, self.first_date, self.status, self.noop,
            None if r is None else r.rows_in, None if r is None else r.rows_out, self.seconds,
            json.dumps(versions, sort_keys=True), self.message, self.started_at, datetime.now(UTC),
            self.settings, self.input_state,
        )  # fmt: skip


def record_job_run(spark: SparkSession, config: Config, run: JobRun) -> None:
    """Append the run's row to ops/job_runs; a refused write is logged, never fails the job itself."""
    from lakeml.lakehouse import Lakehouse
    from lakeml.quality.ops import JOB_RUNS_SCHEMA

    try:
        table = Lakehouse(spark, config).table("ops", "job_runs")
        table.create(JOB_RUNS_SCHEMA)
        table.append_rows([run.row(config.lakehouse.root)])
    except LakemlError as exc:
        runlog.event("job_run_not_recorded", job=run.job, run_id=run.run_id, error=str(exc))
