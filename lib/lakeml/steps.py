"""The one contract of a library step: ``(spark, config, dates: DateRange) -> StepResult``.

Ingest, feature, training and scoring steps all take it; the job runner (``lakeml.pipeline``) builds
the dates from ``--run-date``/``--since`` and the domain ``jobs`` modules pass them on. A step that
needs to know which run it is part of (e.g. silver's run records) asks ``current_run()``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from pyspark.sql import SparkSession

from lakeml.config import Config
from lakeml.errors import LakemlError


@dataclass(frozen=True)
class DateRange:
    """The dates a run covers, ``first`` to ``last`` inclusive; ``last`` is the run date."""

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.first > self.last:
            raise ValueError(f"date range starts {self.first}, after its last date {self.last}")

    @classmethod
    def single(cls, day: date) -> DateRange:
        """The one date ``day``: a run that is not a backfill."""
        return cls(day, day)

    def days(self) -> list[date]:
        """Every date of the range, oldest first."""
        return [self.first + timedelta(days=i) for i in range(len(self))]

    def __len__(self) -> int:
        return (self.last - self.first).days + 1

    def __str__(self) -> str:
        return str(self.last) if self.first == self.last else f"{self.first}..{self.last}"


@dataclass(frozen=True)
class StepResult:
    """Rows read and written by one step (or job) run, plus any small facts worth logging."""

    rows_in: int
    rows_out: int
    details: Mapping[str, Any] = field(default_factory=dict)


Step = Callable[[SparkSession, Config, DateRange], StepResult]


@dataclass(frozen=True)
class RunIdentity:
    """The job a step runs as and that run's id (ops tables record both)."""

    job: str
    run_id: str


# Set by the job runner for the length of one job; a step run outside a job has none.
_CURRENT_RUN: contextvars.ContextVar[RunIdentity | None] = contextvars.ContextVar("lakeml_run", default=None)


@contextlib.contextmanager
def running_as(job: str, run_id: str) -> Iterator[RunIdentity]:
    """Steps called inside the block run as job ``job``, run ``run_id``."""
    identity = RunIdentity(job, run_id)
    token = _CURRENT_RUN.set(identity)
    try:
        yield identity
    finally:
        _CURRENT_RUN.reset(token)


def current_run() -> RunIdentity:
    """The job and run id the calling step runs as (LakemlError outside ``running_as``)."""
    identity = _CURRENT_RUN.get()
    if identity is None:
        raise LakemlError(
            "this step records its run: call it from a job (lakeml.pipeline.run_job) or inside "
            "steps.running_as"
        )
    return identity
