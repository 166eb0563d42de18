"""Jobs submitted with scripts/submit to a real standalone Spark cluster (master + 2 workers on 127.0.0.1).

The module fixture builds dist/ (skipped when newer than the sources), starts the cluster with
scripts/cluster-up in a temporary state dir and always stops it with scripts/cluster-down.
Each entry of CLUSTER_JOBS is submitted with ``--env cluster``, ``--conf submit.master=<cluster>``
and LAKEML_LAKEHOUSE=<tmp>/lake, then checked. Run: ``.venv/bin/pytest tests/test_cluster.py -x -s``.
"""

from __future__ import annotations

import os
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
    ClusterJob("jobs/commerce/ingest_bronze.py", ARGS, ch.check_bronze_clickstream, ch.land_clickstream),
    # The same job with the connector jars (--jars): driver and executors write through delta-spark.
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
