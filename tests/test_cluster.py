"""Jobs submitted with scripts/submit to a real standalone Spark cluster (master + 2 workers on 127.0.0.1).

The module fixture builds dist/ (skipped when newer than the sources), starts the cluster with
scripts/cluster-up in a temporary state dir and always stops it with scripts/cluster-down.
Each entry of CLUSTER_JOBS is submitted with ``--env cluster``, ``--conf submit.master=<cluster>``
and LAKEML_LAKEHOUSE=<tmp>/lake, then checked. Run: ``.venv/bin/pytest tests/test_cluster.py -x -s``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cluster_helpers as ch
from tests.cluster_helpers import ClusterJob, ensure_built, log, standalone_cluster, submit
from tests.conftest import delta_spark_skip_reason

pytestmark = pytest.mark.cluster

RUN_DATE = "2026-11-20"

ARGS = ("--run-date", RUN_DATE)

# (job file, job args, check, optional setup of inputs under the lake) — one line per job.
CLUSTER_JOBS = [
    ClusterJob("tests/cluster_jobs/write_partitioned_parquet.py", ARGS, ch.check_partitioned_parquet),
    # jobs/commerce/ingest_bronze.py on delta-rs runs in test_readme_cluster_quick_start_works_as_written;
    # here the same job with the connector jars (--jars): driver and executors write through delta-spark.
    ClusterJob(
        "jobs/commerce/ingest_bronze.py",
        (*ARGS, "--conf", "lakehouse.engine=delta-spark"),
        ch.check_bronze_clickstream_native,
        ch.land_clickstream,
        id="ingest_bronze-delta-spark",
        native=True,
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(master URL, state dir) of a running cluster; built artifacts in dist/."""
    started = time.monotonic()
    ensure_built()
    state_dir = tmp_path_factory.mktemp("spark-cluster")
    with standalone_cluster(state_dir, workers=2) as master_url:
        yield master_url, state_dir
    log(f"module total {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("job", CLUSTER_JOBS, ids=ClusterJob.test_id)
def test_job_on_cluster(job: ClusterJob, cluster: tuple[str, Path], tmp_path: Path) -> None:
    master_url, state_dir = cluster
    lake = tmp_path / "lake"
    lake.mkdir()
    if job.setup is not None:
        job.setup(lake)
    extra_env = {}
    if job.native:
        reason = delta_spark_skip_reason()
        if reason:
            pytest.skip(reason)
        extra_env["LAKEML_DELTA_JARS"] = os.environ["LAKEML_DELTA_JARS"]
    run = submit(
        job.job_file,
        job.args,
        lake=lake,
        master_url=master_url,
        state_dir=state_dir,
        log_file=tmp_path / "submit.log",
        extra_env=extra_env,
    )
    job.check(run)


def readme_cluster_block() -> str:
    """The bash block of the README's "Running on a cluster" section, as written."""
    section = (ch.REPO_ROOT / "README.md").read_text(encoding="utf-8").split("## Running on a cluster", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_readme_cluster_quick_start_works_as_written(tmp_path: Path) -> None:
    """build, cluster-up, generate, submit --env cluster (no master given), cluster-down: verbatim, except
    that the lake and the cluster state live under tmp_path."""
    block = readme_cluster_block()
    lake_line = 'export LAKEML_LAKEHOUSE="$PWD/var/cluster-lake"'
    assert "scripts/cluster-up" in block and "--env cluster" in block and lake_line in block
    ensure_built()  # so the block's scripts/build is the quick up-to-date check
    lake, state_dir = tmp_path / "lake", tmp_path / "cluster"
    env = {**os.environ, "LAKEML_CLUSTER_DIR": str(state_dir)}
    env.pop("LAKEML_SPARK_MASTER", None)
    env.setdefault("LAKEML_SUBMIT_ARGS", "--conf spark.ui.enabled=false")
    log_file = tmp_path / "readme.log"
    started = time.monotonic()
    try:
        with open(log_file, "w", encoding="utf-8") as err:
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.replace(lake_line, f"export LAKEML_LAKEHOUSE={lake}")],
                cwd=ch.REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                timeout=ch.SUBMIT_TIMEOUT + ch.CLUSTER_UP_TIMEOUT + ch.BUILD_TIMEOUT,
            )
    finally:
        ch.cluster_down(state_dir)  # idempotent: a failed block must not leave a cluster running
    text = log_file.read_text(errors="replace")
    assert proc.returncode == 0, text[-8000:]
    from deltalake import DeltaTable

    landed = sum(len(f.read_text().splitlines()) for f in (lake / "landing" / "clickstream").glob("*.jsonl"))
    assert landed > 0 and DeltaTable(str(lake / "bronze" / "clickstream")).to_pyarrow_table().num_rows == landed
    log(f"README cluster block done in {time.monotonic() - started:.1f} s")
    master = re.search(r"cluster up in .* master (spark://\S+),", text)
    assert master, text[-4000:]
    assert f"--master {master.group(1)} " in text  # submit found the running cluster by itself
    assert "deleted the workers' application folders" in text  # by the block's own cluster-down
    assert not list((state_dir / "work").glob("*/app-*")), "cluster-down left application folders"
    assert not ch.processes_under(state_dir)
