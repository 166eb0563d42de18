"""Kill-point harness: the DAG in a child process, SIGKILLed at chosen commit points, rerun, compared.

One domain's whole chain (commerce: bronze → silver → features → ALS training → scoring) on a small
generated lake, run by ``lakeml pipeline`` in a child process of its own session (its JVM and Python
workers die with it). The reference run records every fault point it passes (``LAKEML_FAULT_TRACE``);
kill points are picked from that trace, spread over the whole run: before, during (delta-rs: data
files written, log entry not) and right after table commits, and around the model registry's
register / alias steps.

The kills are chained on one lake: run 1 dies at the first point, run 2 (a plain rerun, which
resumes) dies at the next one, and so on; a last uninterrupted rerun finishes. Each kill point fires
at the first time the rerun reaches it, so every run resumes from a crash and crashes again. Then
every Delta table is compared row by row with the reference lake (run ids, batch ids and run
times aside): rows in the reference and missing are lost, extra rows are duplicated.

Used by tests/test_kill_points.py and scripts/bench_reliability.py.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakeml.config import Config

REPO = Path(__file__).resolve().parents[1]
END = dt.date(2026, 11, 20)
DAYS = 2
JOBS_TO = "commerce.score_recommendations"
KILL_POINTS = ("commit.before", "commit.during", "commit.after", "registry.registered", "registry.aliased")
# Run ids, batch ids, run times and load times differ between any two runs by nature; a model
# version number differs when a crash fell between registering a version and promoting it.
RUN_COLUMNS = (
    "run_id", "seconds", "_batch_id", "batch_id", "_ingest_date", "bronze_version",
    "model_version", "mlflow_run_id",
    # Delta versions of inputs and outputs: a crashed job that is redone commits again (the same
    # rows, a new version), so version numbers count commits, not content.
    "input_version", "source_version", "derived_version", "reference_version", "current_version",
)  # fmt: skip
# Logs of runs, not data: a crashed run adds its own rows (compared by invariants instead).
RUN_LOGS = ("ops/job_runs", "ops/dq_results", "ops/silver_batches", "ops/maintenance")


def python() -> str:
    return str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv/bin/python").exists() else sys.executable


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LAKEML_KILL_AT", "LAKEML_FAULT_TRACE")}
    env["LAKEML_LAKEHOUSE"] = str(root)
    env.setdefault("LAKEML_PII_KEY", "lakeml-kill-harness-pii-key-0123456789")
    return env | extra


def lakeml(
    root: Path, *args: str, timeout: float = 900, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``lakeml ARGS --env test`` on ``root`` in a new session (a kill takes its whole group)."""
    return subprocess.run(
        [python(), "-m", "lakeml.cli", *args, "--env", "test"],
        capture_output=True,
        text=True,
        env=env_for(root, **extra_env),
        timeout=timeout,
        start_new_session=True,
        cwd=REPO,
    )


# A small model and a JVM that starts fast: each of the two dozen runs retrains when it was killed
# before its training was recorded.
SETTINGS = (
    "ml.recommender.max_iter=3",
    "ml.recommender.grid={rank: [4], regParam: [0.1], alpha: [10.0]}",
    "spark.conf.spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
)


def pipeline(root: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    since = (END - dt.timedelta(days=DAYS - 1)).isoformat()
    settings = [arg for s in SETTINGS for arg in ("--conf", s)]
    return lakeml(
        root,
        "pipeline",
        "--run-date",
        END.isoformat(),
        "--since",
        since,
        "--to",
        JOBS_TO,
        *settings,
        **extra_env,
    )


def generate(root: Path) -> None:
    done = lakeml(
        root, "generate", "--scale", "1", "--days", str(DAYS), "--seed", "7", "--end-date", END.isoformat()
    )
    assert done.returncode == 0, done.stderr[-3000:]


@dataclass
class KillRun:
    point: str
    label: str
    killed: bool
    seconds: float


@dataclass
class ChainResult:
    reference_seconds: float
    trace: list[tuple[str, str]]
    runs: list[KillRun] = field(default_factory=list)
    final_returncode: int = -1
    final_stderr: str = ""


def reference_run(root: Path) -> tuple[float, list[tuple[str, str]]]:
    """Generate the landing files and run the chain once, uninterrupted, recording its fault points."""
    generate(root)
    trace = root.parent / f"{root.name}.trace"
    trace.unlink(missing_ok=True)
    began = time.monotonic()
    done = pipeline(root, LAKEML_FAULT_TRACE=str(trace))
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-3000:]
    events = [tuple(line.split("|", 1)) for line in trace.read_text().splitlines()]
    return seconds, [(p, label) for p, label in events]


def pick_points(trace: list[tuple[str, str]], count: int) -> list[tuple[str, str]]:
    """``count`` distinct (point, label) pairs from the trace, in its order.

    Every point of the bronze and silver tables and of the registry is taken (bronze's commit and
    its stream checkpoint, silver's commit and its ops records, a model version and its alias are
    where a crash can split one step in two); the rest are spaced evenly over the other tables.
    """
    first_seen: dict[tuple[str, str], int] = {}
    for i, event in enumerate(trace):
        first_seen.setdefault(event, i)
    must = [e for e in first_seen if e[0].startswith("registry.") or e[1].startswith(("bronze/", "silver/"))]
    rest = [e for e in first_seen if e not in must]
    if count < len(must):  # a short chain (the CI default): spread over every point instead
        return _spread(list(first_seen), count)
    chosen = set(must) | set(_spread(rest, count - len(must)))
    return sorted(chosen, key=first_seen.__getitem__)


def _spread(events: list[tuple[str, str]], count: int) -> list[tuple[str, str]]:
    """``count`` events evenly spaced over ``events``, first and last included when count > 1."""
    if count <= 0 or not events:
        return []
    if count == 1 or len(events) <= count:
        return events[:count] if count == 1 else list(events)
    step = (len(events) - 1) / (count - 1)
    return [events[round(i * step)] for i in range(count)]


def kill_chain(root: Path, reference_landing: Path, points: list[tuple[str, str]]) -> list[KillRun]:
    """On a fresh lake with the reference's landing files: one run per point, each killed there."""
    shutil.copytree(reference_landing, root / "landing")
    runs = []
    for point, label in points:
        began = time.monotonic()
        done = pipeline(root, LAKEML_KILL_AT=f"{point}|{label}|1")
        killed = done.returncode == -signal.SIGKILL
        assert killed or done.returncode == 0, (point, label, done.returncode, done.stderr[-3000:])
        runs.append(KillRun(point, label, killed, time.monotonic() - began))
    return runs


def layer_of(label: str) -> str:
    return label.split("/", 1)[0] if "/" in label else "registry"


def coverage(runs: list[KillRun]) -> Counter:
    """Kills per phase (bronze, silver, gold, ops tables and the model registry)."""
    return Counter(layer_of(r.label) for r in runs if r.killed)


def run_chain(work: Path, count: int) -> tuple[Path, Path, ChainResult]:
    """Reference lake and killed lake under ``work``; returns both roots and what happened."""
    reference, killed = work / "reference", work / "killed"
    seconds, trace = reference_run(reference)
    result = ChainResult(seconds, trace)
    result.runs = kill_chain(killed, reference / "landing", pick_points(trace, count))
    final = pipeline(killed)
    result.final_returncode, result.final_stderr = final.returncode, final.stderr[-3000:]
    return reference, killed, result


def lake_tables(root: Path) -> list[str]:
    return sorted(
        f"{layer}/{t.name}"
        for layer in ("bronze", "silver", "gold", "ops")
        for t in (root / layer).glob("*")
        if (t / "_delta_log").is_dir()
    )


def compare_tables(spark, reference: Path, other: Path) -> dict[str, tuple[int, int]]:
    """Per data table: (rows lost, rows duplicated) of ``other`` against ``reference``."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from lakeml.config import load_config
    from lakeml.lakehouse import Lakehouse

    out = {}
    for name in lake_tables(reference):
        if name in RUN_LOGS:
            continue
        frames = []
        for root in (reference, other):
            config = load_config("test", [f"lakehouse.root={root}"])
            layer, table = name.split("/", 1)
            df = Lakehouse(spark, config).table(layer, table).read()
            keep = []
            for f in df.schema.fields:
                if f.name in RUN_COLUMNS or (
                    isinstance(f.dataType, T.TimestampType) and f.name.endswith("_at")
                ):
                    continue
                column = F.col(f"`{f.name}`")
                if isinstance(f.dataType, T.StringType):
                    column = F.replace(column, F.lit(str(root.resolve())), F.lit("<root>"))
                    column = F.replace(column, F.lit(str(root)), F.lit("<root>"))
                elif isinstance(f.dataType, T.DoubleType | T.FloatType):
                    column = F.round(column, 9)  # ALS scores: last-bit noise between two fits
                keep.append(column.alias(f.name))
            frames.append(df.select(*keep))
        ref, got = frames
        out[name] = (ref.exceptAll(got).count(), got.exceptAll(ref).count())
    return out


def accounting_balanced(spark, root: Path) -> bool:
    """Every silver batch balances, and the batches together account for every bronze row."""
    from pyspark.sql import functions as F

    from lakeml.config import load_config
    from lakeml.lakehouse import Lakehouse

    lake = Lakehouse(spark, load_config("test", [f"lakehouse.root={root}"]))
    batches = lake.table("ops", "silver_batches").read().where(F.col("status") == "ok")
    unbalanced = batches.where(
        F.col("rows_in")
        != F.col("rows_loaded") + F.col("rows_duplicate") + F.col("rows_quarantined") + F.col("rows_header")
    ).count()
    per_table = {
        r.table: r.rows for r in batches.groupBy("table").agg(F.sum("rows_in").alias("rows")).collect()
    }
    bronze = {
        f"silver/{name.split('/', 1)[1]}": lake.table("bronze", name.split("/", 1)[1]).read().count()
        for name in lake_tables(root)
        if name.startswith("bronze/")
    }
    return unbalanced == 0 and per_table == bronze


def registry_state(root: Path) -> dict[str, object]:
    """Per registered model: its versions, and the version its champion alias points at."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/_mlflow/mlflow.db")
    state: dict[str, object] = {}
    for model in client.search_registered_models():
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{model.name}'"))
        aliases = dict(model.aliases or {})
        state[model.name] = {"versions": versions, "champion": aliases.get("champion")}
    return state


def registry_consistent(root: Path) -> bool:
    """Every model has a champion, and it names a version that exists."""
    state = registry_state(root)
    return bool(state) and all(
        s["champion"] is not None and int(s["champion"]) in s["versions"]  # type: ignore[index]
        for s in state.values()
    )


def comparable_rows(
    spark: SparkSession, config: Config, name: str, ignore: tuple[str, ...] = RUN_COLUMNS
) -> DataFrame:
    """The table's rows without run ids and run timestamps; its lake's root in strings made ``<root>``."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from lakeml.lakehouse import Lakehouse
    from tests.conftest import with_engine

    layer, table = name.split("/", 1)
    df = Lakehouse(spark, with_engine(config, "delta-rs")).table(layer, table).read()
    root = str(Path(config.lakehouse.root).resolve())
    kept = []
    for f in df.schema.fields:
        if f.name in ignore or (isinstance(f.dataType, T.TimestampType) and f.name.endswith("_at")):
            continue
        column = F.col(f"`{f.name}`")
        if isinstance(f.dataType, T.StringType):
            column = F.replace(column, F.lit(root), F.lit("<root>"))
        kept.append(column.alias(f.name))
    return df.select(*kept)
