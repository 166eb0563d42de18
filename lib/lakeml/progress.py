"""Progress of the Spark work inside a job, read by polling the status tracker (no listener, no JVM code).

On a terminal a live bar (rich) shows the running stage's tasks; elsewhere (logs, CI, spark-submit
output files) a ``spark_progress`` line every ``run.progress_interval_seconds`` names the running
stages, their tasks done/total and the seconds since the job started. Short jobs print nothing.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from lakeml import runlog

POLL_SECONDS = 0.5  # how often the bar refreshes


@dataclass(frozen=True)
class StageProgress:
    """One running stage as the status tracker reports it."""

    stage_id: int
    name: str
    tasks: int
    done: int
    running: int
    failed: int

    def describe(self) -> str:
        return f"stage {self.stage_id} ({self.name}): {self.done}/{self.tasks} tasks"


def active_stages(spark: SparkSession) -> list[StageProgress]:
    """The stages running now, oldest first (empty when the context is stopped)."""
    tracker = spark.sparkContext.statusTracker()
    out = []
    for stage_id in sorted(tracker.getActiveStageIds()):
        info = tracker.getStageInfo(stage_id)
        if info is not None:
            name = info.name.split(" at ", 1)[0]  # "count at NativeMethodAccessorImpl.java:0" -> "count"
            out.append(
                StageProgress(
                    stage_id,
                    name,
                    info.numTasks,
                    info.numCompletedTasks,
                    info.numActiveTasks,
                    info.numFailedTasks,
                )
            )
    return out


def progress_mode(configured: str, stream: Any = None) -> str:
    """'bar', 'lines' or 'off' for ``run.progress`` (auto: a bar only on a terminal)."""
    if configured != "auto":
        return configured
    stream = sys.stderr if stream is None else stream
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


@contextlib.contextmanager
def stage_progress(
    spark: SparkSession, label: str, mode: str = "auto", interval: float = 30.0
) -> Iterator[None]:
    """While the block runs, show the progress of its Spark stages (``mode`` as for ``run.progress``)."""
    mode = progress_mode(mode)
    if mode == "off":
        yield
        return
    stop = threading.Event()
    target = _bar if mode == "bar" else _lines
    thread = threading.Thread(
        target=_guarded, args=(target, spark, label, interval, stop), name=f"progress-{label}", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _guarded(target: Any, spark: SparkSession, label: str, interval: float, stop: threading.Event) -> None:
    # Progress is best-effort: a stopped context or a closed gateway must never fail the job.
    with contextlib.suppress(Exception):
        target(spark, label, interval, stop)


def _lines(spark: SparkSession, label: str, interval: float, stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(interval):
        stages = active_stages(spark)
        runlog.event(
            "spark_progress",
            job=label,
            seconds=round(time.monotonic() - started, 1),
            stages=[s.describe() for s in stages] or ["no Spark stage running (driver-side work)"],
        )


def _bar(spark: SparkSession, label: str, interval: float, stop: threading.Event) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True, console=_console()) as bar:
        task = bar.add_task(label, total=None)
        while not stop.wait(POLL_SECONDS):
            stages = active_stages(spark)
            if not stages:
                bar.update(task, description=f"{label}: driver-side work", total=None, completed=0)
                continue
            stage = stages[-1]  # the newest: what the job is waiting on now
            more = f" (+{len(stages) - 1} more)" if len(stages) > 1 else ""
            bar.update(
                task,
                description=f"{label}: stage {stage.stage_id} {stage.name}{more}",
                total=stage.tasks,
                completed=stage.done,
            )


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)
