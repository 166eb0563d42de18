"""The whole DAG, every job including training and scoring, on the smallest generated lake that trains:

- ``airflow dags test`` (real Airflow 3, .venv-airflow) runs the DAG for one logical date in local
  mode: every task succeeds, and every table equals the one ``lakeml pipeline`` made for that date;
- a second ``lakeml pipeline`` for the date does nothing: every job skips (inputs unchanged), no table
  gets a new version, the registry no new model version.

One module fixture makes everything once: the landing files (14 generated days), a seed lake (data
jobs backfilled up to the day before, what a scheduler finds), a copy of it for Airflow, the
pipeline's run on the seed and Airflow's run on the copy (side by side). Each Airflow task is a lakeml
process of its own (a JVM each): that run is most of this module's time, and the only test of the
DAG's real task commands. Every trainer fits one small model (one family, no imbalance search or calibration,
few trees / ALS iterations): the scheduling is under test here, not the tuning.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window
from pyspark.testing import assertDataFrameEqual

from lakeml.config import Config, load_config
from lakeml.lakehouse import Lakehouse
from lakeml.ml.tracking import GIT_COMMIT_ENV, git_commit, tracking_uri
from lakeml.pipeline import registry, run_job, topological_order
from lakeml.runstate import INPUTS_UNCHANGED
from lakeml.steps import DateRange
from lakeml.synthetic.landing import run_generation
from tests.test_airflow import AIRFLOW_BIN, FAST_JVM, airflow_env, task_states

# Yesterday, so generated events are never "in the future" next to their ingestion time.
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
DAYS = 14
# What lets 14 generated days train every model (conf/test.yaml has the small grids): labels mature
# after 6 days (a third of the generated chargebacks are filed by then; 0-4 known frauds a day), two
# days each for fraud's validation and test split (one day had none: the trainer refused), and
# promotion floors that a handful of test frauds cannot be held to.
TRAINABLE = (
    "features.banking.label_window_days=6",
    "features.banking.label_refresh_days=6",
    "ml.fraud.test_days=2",
    "ml.fraud.validation_days=2",
    "ml.fraud.promotion.floors.auprc=0.0",
    "ml.fraud.promotion.floors.roc_auc=0.0",
    "ml.failure.failure_promotion.floors.auprc=0.0",
    # One small fit per model: what is under test is the scheduling (every job as its own task, the
    # same tables as the pipeline), not the tuning. One family per trainer (no family competition, no
    # imbalance search, no calibration fit), few trees, few ALS iterations.
    "ml.fraud.families={logistic: {regParam: [0.01], elasticNetParam: [0.0]}}",
    "ml.fraud.imbalance=[none]",
    "ml.fraud.calibration=none",
    "ml.failure.families={}",
    "ml.failure.include_gbt=true",  # GBT only (off in the defaults, where xgboost competes alone)
    "ml.failure.rul_grid={maxDepth: [3], maxIter: [5]}",
    "ml.failure.failure_grid={maxDepth: [3], maxIter: [5]}",
    "ml.recommender.grid={rank: [4], regParam: [0.1], alpha: [10.0]}",
    "ml.recommender.max_iter=3",
    "ml.curve_points=50",
    FAST_JVM,  # 17 task processes and the pipeline's: JVMs that start fast
)
SEED_STEPS = ("ingest_bronze", "build_silver", "build_features", "refresh_labels")
LAKEML = Path(sys.executable).with_name("lakeml")

# Columns whose values belong to one run, not to the data: ids of the run / batch / MLflow run, when
# something happened, how long it took. Everything else of every table is compared.
RUN_SPECIFIC = {
    "run_id",
    "seconds",
    "started_at",
    "finished_at",
    "_ingested_at",
    "_batch_id",
    "batch_id",
    "quarantined_at",
    "checked_at",
    "scored_at",
    "computed_at",
    "maintained_at",
    "mlflow_run_id",
    # ops/maintenance: sizes of the files it compacted, which hold the columns above (e.g. ops/job_runs).
    "bytes_before",
    "bytes_after",
    "bytes_vacuumed",
}
# Model metrics and scores of the two lakes agree to this relative tolerance, not exactly: Spark adds
# up partial aggregates (the trainers' gradients, the evaluators' sums) in the order their tasks
# finish, which differs between two processes, so a metric differs in its 6th-7th digit (the CI run
# saw 1.6e-6 on an AUPRC). Far below anything a model choice or a threshold could turn on.
RTOL = 1e-4


def settings(root: Path, landing: Path) -> list[str]:
    """Config overrides of a lake at ``root``; all lakes of the module read one landing folder (the
    bronze loads' stream checkpoints name the files they took, so a lake is copied with its landing)."""
    return [f"lakehouse.root={root}", f"lakehouse.landing_dir={landing}", *TRAINABLE]


def lake_config(root: Path, landing: Path) -> Config:
    return load_config("test", settings(root, landing))


def lake_tables(root: Path) -> list[str]:
    """``layer/name`` of every Delta table under ``root``."""
    return sorted(
        f"{layer}/{p.name}"
        for layer in Lakehouse.LAYERS
        for p in (root / layer).glob("*")
        if (p / "_delta_log").is_dir()
    )


@dataclass(frozen=True)
class Lakes:
    """What the module fixture made: both lakes after their run for DAY."""

    landing: Path
    pipeline: Path  # the seed lake after `lakeml pipeline` for DAY
    pipeline_run: dict[str, dict]  # its job_end lines, by job
    airflow: Path  # a copy of the seed lake after `airflow dags test` for DAY
    airflow_run: subprocess.CompletedProcess
    airflow_home: Path


@pytest.fixture(scope="module")
def code_version() -> Iterator[None]:
    """One code version in every run's settings fingerprint, in-process and in every subprocess: the
    runs compared here run the same code even if the checkout gets a commit while the module runs."""
    saved = os.environ.get(GIT_COMMIT_ENV)
    os.environ[GIT_COMMIT_ENV] = git_commit()
    yield
    if saved is None:
        del os.environ[GIT_COMMIT_ENV]
    else:
        os.environ[GIT_COMMIT_ENV] = saved


def start_pipeline(root: Path, landing: Path) -> subprocess.Popen[str]:
    """``lakeml pipeline --env test --run-date DAY`` on the lake at ``root``, a process of its own."""
    command = [str(LAKEML), "pipeline", "--env", "test", "--run-date", DAY.isoformat()]
    for item in settings(root, landing):
        command += ["--conf", item]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def pipeline_ends(started: subprocess.Popen[str]) -> dict[str, dict]:
    """The job_end log line of each job of a ``start_pipeline`` process, once it succeeded."""
    try:
        out, err = started.communicate(timeout=1800)
    finally:
        if started.poll() is None:
            started.kill()
            started.wait()
    assert started.returncode == 0, out[-3000:] + err[-5000:]
    lines = (json.loads(line) for line in err.splitlines() if line.startswith("{"))
    return {e["job"]: e for e in lines if e.get("event") == "job_end"}


def pipeline(root: Path, landing: Path) -> dict[str, dict]:
    """``lakeml pipeline --env test --run-date DAY`` on the lake at ``root``; the job_end line of each job."""
    return pipeline_ends(start_pipeline(root, landing))


@pytest.fixture(scope="module")
def lakes(spark: SparkSession, code_version: None, tmp_path_factory: pytest.TempPathFactory) -> Lakes:
    base = tmp_path_factory.mktemp("scheduled")
    landing, seed, copy, home = base / "landing", base / "pipeline", base / "airflow-lake", base / "airflow"
    config = lake_config(seed, landing)
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 1)
        clock = now

    run_generation(spark, str(landing), scale=1, days=DAYS, seed=24, end_date=DAY)
    lap("generate")
    jobs = registry()
    first = DAY - dt.timedelta(days=DAYS - 1)
    for name in topological_order(jobs):
        if name.split(".", 1)[1] in SEED_STEPS:
            run_job(jobs[name], spark, config, DateRange(first, DAY - dt.timedelta(days=1)))
    lap("seed")
    shutil.copytree(seed, copy)
    # The pipeline's run on the seed and Airflow's on the copy share nothing but the (read-only) landing
    # files: they run side by side, Airflow's task processes mostly starting JVMs while the pipeline works.
    started = start_pipeline(seed, landing)
    try:
        conf = shlex.join(["airflow.retries=0", *settings(copy, landing)])
        env = airflow_env(home, LAKEML_LAKEHOUSE=str(copy), LAKEML_CONF=conf)
        airflow = str(AIRFLOW_BIN / "airflow")
        migrate = subprocess.run([airflow, "db", "migrate"], capture_output=True, text=True, env=env,
                                 timeout=600)  # fmt: skip
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        lap("airflow db migrate")
        run = subprocess.run([airflow, "dags", "test", "lakeml", DAY.isoformat()],
                             capture_output=True, text=True, env=env, timeout=1800)  # fmt: skip
        lap("airflow dags test")
    finally:
        pipeline_run = pipeline_ends(started)
    lap("pipeline (after Airflow's run)")
    jobs_seconds = {job: e.get("seconds") for job, e in pipeline_run.items()}
    print(f"\ntest_scheduled_e2e timings (s): {timings}\npipeline jobs (s): {jobs_seconds}", file=sys.stderr)
    return Lakes(landing, seed, pipeline_run, copy, run, home)


def versions(spark: SparkSession, root: Path, landing: Path) -> dict[str, int]:
    lake = Lakehouse(spark, lake_config(root, landing))
    return {name: lake.at(str(root / name)).version() for name in lake_tables(root)}


def model_versions(config: Config) -> dict[str, int]:
    """Registered model -> number of versions, in the lake's MLflow registry."""
    client = mlflow.MlflowClient(tracking_uri(config))
    return {
        m.name: len(client.search_model_versions(f"name = '{m.name}'"))
        for m in client.search_registered_models()
    }


def model_metrics(config: Config) -> dict[str, dict[str, float]]:
    """Registered model -> the metrics of its newest version's MLflow run, without timings."""
    client = mlflow.MlflowClient(tracking_uri(config))
    out = {}
    for m in client.search_registered_models():
        newest = max(client.search_model_versions(f"name = '{m.name}'"), key=lambda v: int(v.version))
        metrics = client.get_run(newest.run_id).data.metrics
        out[m.name] = {k: v for k, v in metrics.items() if "second" not in k}
    return out


def read(spark: SparkSession, root: Path, landing: Path, name: str) -> DataFrame:
    layer, table = name.split("/", 1)
    return Lakehouse(spark, lake_config(root, landing)).table(layer, table).read()


def comparable(df: DataFrame, root: Path) -> DataFrame:
    """``df`` without RUN_SPECIFIC columns; the lake's root in strings made ``<root>``."""
    kept = []
    for field in df.schema.fields:
        if field.name in RUN_SPECIFIC:
            continue
        column = F.col(f"`{field.name}`")
        if isinstance(field.dataType, T.StringType):
            column = F.replace(column, F.lit(str(root.resolve())), F.lit("<root>"))
        kept.append(column.alias(field.name))
    return df.select(*kept)


def failed_task_logs(home: Path, states: dict[str, str]) -> str:
    """The end of the task log of every task that did not succeed (Airflow keeps one file per attempt)."""
    out = []
    for task, state in sorted(states.items()):
        if state != "success":
            for log in sorted(home.glob(f"logs/**/task_id={task}/**/*.log")):
                out.append(f"--- {task} ({state}): {log}\n{log.read_text(errors='replace')[-4000:]}")
    return "\n".join(out)


def test_airflow_runs_the_whole_dag_for_a_day_with_the_pipelines_tables(spark, lakes):
    run = lakes.airflow_run
    states = task_states(lakes.airflow_home)
    logs = failed_task_logs(lakes.airflow_home, states)
    assert states == {job: "success" for job in registry()}, run.stdout[-3000:] + logs
    assert run.returncode == 0
    assert set(lakes.pipeline_run) == set(registry())
    assert {e["status"] for e in lakes.pipeline_run.values()} == {"ok"}

    root, expected_root, landing = lakes.airflow, lakes.pipeline, lakes.landing
    assert lake_tables(root) == lake_tables(expected_root)
    config, expected_config = lake_config(root, landing), lake_config(expected_root, landing)
    assert model_versions(config) == model_versions(expected_config)
    metrics, expected_metrics = model_metrics(config), model_metrics(expected_config)
    assert {m: sorted(v) for m, v in metrics.items()} == {m: sorted(v) for m, v in expected_metrics.items()}
    for model, values in metrics.items():
        assert values == pytest.approx(expected_metrics[model], rel=RTOL, nan_ok=True), model
    differ = {}
    for name in lake_tables(root):
        if name == "ops/job_runs":
            continue  # a log of runs: compared below
        try:
            assertDataFrameEqual(
                comparable(read(spark, root, landing, name), root),
                comparable(read(spark, expected_root, landing, name), expected_root),
                checkRowOrder=False,
                rtol=RTOL,
            )
        except AssertionError as exc:
            differ[name] = str(exc)[:1500]
    assert differ == {}, "\n".join(f"{n}: {e}" for n, e in differ.items())
    # Each job's first run for DAY, as the run log records it (the pipeline lake may have had a rerun).
    first = Window.partitionBy("job", "run_date", "first_date").orderBy("started_at")
    runs = [
        comparable(
            read(spark, r, landing, "ops/job_runs")
            .withColumn("n", F.row_number().over(first))
            .where((F.col("n") == 1) & (F.col("run_date") == DAY))
            .drop("n"),
            r,
        )
        for r in (root, expected_root)
    ]
    assertDataFrameEqual(runs[0], runs[1], checkRowOrder=False)


# The seed's bronze loads take every landing file (DAY's included), so the pipeline's silver runs for DAY
# find no new bronze rows: they record the bronze version they checked (an empty input state would
# never skip; tests/test_runstate.py has the unit case).
def test_the_pipeline_trains_and_scores_and_a_rerun_does_nothing(spark, lakes):
    root, landing = lakes.pipeline, lakes.landing
    config = lake_config(root, landing)
    models = model_versions(config)
    assert models == {"lakeml-fraud": 1, "lakeml-recommender": 1, "lakeml-rul": 1, "lakeml-failure": 1}
    before = versions(spark, root, landing)
    for scores in ("gold/fraud_scores", "gold/recommendations", "gold/failure_risk"):
        assert scores in before

    again = pipeline(root, landing)
    # Nothing new, nothing done: every job skips, no table but the run log gets a new version, no
    # model is retrained.
    assert {job: e.get("skipped") for job, e in again.items()} == {
        job: INPUTS_UNCHANGED for job in registry()
    }
    after = versions(spark, root, landing)
    assert {n: v for n, v in after.items() if n != "ops/job_runs"} == {
        n: v for n, v in before.items() if n != "ops/job_runs"
    }
    assert after["ops/job_runs"] == before["ops/job_runs"] + len(registry())
    assert model_versions(config) == models
