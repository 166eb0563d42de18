"""Helpers for tests that run jobs through scripts/submit on a real standalone Spark cluster.

Everything here shells out to the project's scripts (build, cluster-up, cluster-down, submit), so the
tests exercise exactly what a person runs. Timings are printed (visible with ``pytest -s``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
DIST = REPO_ROOT / "dist"
ENV_ARCHIVE = DIST / "lakeml-env.tar.gz"

BUILD_TIMEOUT = 900
CLUSTER_UP_TIMEOUT = 180
SUBMIT_TIMEOUT = 420


def log(message: str) -> None:
    print(f"[cluster-test] {message}", flush=True)


# ----------------------------------------------------------------------------------------------
# build


def _source_files() -> Iterator[Path]:
    yield REPO_ROOT / "pyproject.toml"
    for path in (REPO_ROOT / "lib").rglob("*"):
        if (
            path.is_file()
            and "__pycache__" not in path.parts
            and not any(p.endswith(".egg-info") for p in path.parts)
        ):
            yield path


def dist_is_fresh() -> bool:
    """The wheel and the packed environment exist and are newer than every source file."""
    wheels = sorted(DIST.glob("lakeml-*.whl"))
    if len(wheels) != 1 or not ENV_ARCHIVE.is_file():
        return False
    built = min(wheels[0].stat().st_mtime, ENV_ARCHIVE.stat().st_mtime)
    return all(p.stat().st_mtime <= built for p in _source_files())


_built_in_this_process = False


def ensure_built() -> None:
    """Run scripts/build (once per test process) unless dist/ is already newer than the sources."""
    global _built_in_this_process
    if _built_in_this_process:
        return
    if dist_is_fresh():
        log("dist/ is newer than the sources: build skipped")
        _built_in_this_process = True
        return
    started = time.monotonic()
    log("running scripts/build ...")
    proc = subprocess.run(
        [str(SCRIPTS / "build")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"scripts/build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-6000:]}"
        )
    _built_in_this_process = True
    log(f"scripts/build done in {time.monotonic() - started:.1f} s: {' '.join(proc.stdout.split())}")


# ----------------------------------------------------------------------------------------------
# cluster


def processes_under(directory: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose working directory is inside ``directory``."""
    root = str(directory.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/"):
            found.append((int(entry.name), cmdline[:200]))
    return found


def _script_env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LAKEML_CLUSTER_DIR"] = str(state_dir)
    return env


def cluster_down(state_dir: Path) -> None:
    proc = subprocess.run(
        [str(SCRIPTS / "cluster-down")],
        cwd=REPO_ROOT,
        env=_script_env(state_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    log(f"cluster-down: {proc.stderr.strip()}")
    if proc.returncode != 0:
        raise AssertionError(f"scripts/cluster-down failed ({proc.returncode}): {proc.stderr}")


@contextmanager
def standalone_cluster(state_dir: Path, workers: int = 2) -> Iterator[str]:
    """scripts/cluster-up in ``state_dir``; yields the master URL; always scripts/cluster-down.

    Afterwards no process may be left whose working directory is in the state dir (master, workers,
    executors and their Python workers all run there), and the unpacked environments are deleted
    (about 1 GB per executor); the logs stay.
    """
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [str(SCRIPTS / "cluster-up"), "--workers", str(workers)],
            cwd=REPO_ROOT,
            env=_script_env(state_dir),
            capture_output=True,
            text=True,
            timeout=CLUSTER_UP_TIMEOUT,
        )
        if proc.returncode != 0:
            raise AssertionError(f"scripts/cluster-up failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
        master_url = proc.stdout.strip().splitlines()[-1]
        assert master_url.startswith("spark://127.0.0.1:"), master_url
        assert (state_dir / "master-url").read_text().strip() == master_url
        log(f"cluster-up done in {time.monotonic() - started:.1f} s: {master_url}")
        yield master_url
    finally:
        stopping = time.monotonic()
        try:
            cluster_down(state_dir)
            log(f"cluster-down done in {time.monotonic() - stopping:.1f} s")
        finally:
            leftovers = processes_under(state_dir)
            for pid, _ in leftovers:  # last resort, so a failed test never leaves a cluster running
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for unpacked in (state_dir / "work").glob("*/app-*/*/environment"):
                shutil.rmtree(unpacked, ignore_errors=True)
            log(f"cluster stopped and unpacked environments deleted in {time.monotonic() - stopping:.1f} s")
        assert not leftovers, f"processes left running after cluster-down: {leftovers}"


# ----------------------------------------------------------------------------------------------
# submitting jobs


@dataclass(frozen=True)
class SubmitRun:
    """A finished scripts/submit run and where to find its results."""

    job_file: str
    args: tuple[str, ...]
    lake: Path
    master_url: str
    state_dir: Path
    returncode: int
    stdout: str
    log_file: Path
    seconds: float

    def fail_message(self) -> str:
        tail = self.log_file.read_text(errors="replace")[-8000:]
        return f"scripts/submit {self.job_file} exited {self.returncode}; stdout:\n{self.stdout}\nlog tail:\n{tail}"


def submit(
    job_file: str,
    args: Sequence[str],
    *,
    lake: Path,
    master_url: str,
    state_dir: Path,
    log_file: Path,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = SUBMIT_TIMEOUT,
) -> SubmitRun:
    """``scripts/submit JOB_FILE --env cluster --conf submit.master=URL ARGS`` with LAKEML_LAKEHOUSE=lake.

    Runs in its own process session so a timeout can stop spark-submit, the driver and its Python.
    """
    env = dict(os.environ)
    env["LAKEML_LAKEHOUSE"] = str(lake)
    # Keep the driver's web UI off: nothing looks at it and it is one port fewer.
    env.setdefault("LAKEML_SUBMIT_ARGS", "--conf spark.ui.enabled=false")
    env.update(extra_env or {})
    cmd = [
        str(SCRIPTS / "submit"),
        job_file,
        "--env",
        "cluster",
        "--conf",
        f"submit.master={master_url}",
        *args,
    ]
    log("submitting: " + " ".join(cmd[1:]))
    started = time.monotonic()
    with open(log_file, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_session(proc)
            raise AssertionError(
                f"scripts/submit {job_file} did not finish in {timeout:.0f} s; log tail:\n"
                + log_file.read_text(errors="replace")[-8000:]
            ) from None
    seconds = time.monotonic() - started
    log(
        f"submit of {job_file} finished with exit code {proc.returncode} in {seconds:.1f} s (log: {log_file})"
    )
    return SubmitRun(
        job_file, tuple(args), lake, master_url, state_dir, proc.returncode, stdout, log_file, seconds
    )


def _kill_session(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------------------------------
# jobs and their checks


@dataclass(frozen=True)
class ClusterJob:
    """A job file to submit to the cluster, its arguments, and the check of what it wrote.

    ``setup`` (optional) prepares inputs under the lakehouse root before the submit.
    """

    job_file: str
    args: tuple[str, ...]
    check: Callable[[SubmitRun], None]
    setup: Callable[[Path], None] | None = None
    id: str = field(default="")
    native: bool = False  # submitted with the delta-spark connector jars (skipped without them)

    def test_id(self) -> str:
        return self.id or Path(self.job_file).stem


def check_partitioned_parquet(run: SubmitRun) -> None:
    """tests/cluster_jobs/write_partitioned_parquet.py: rows, lakeml from the packed env, executor processes."""
    import pyarrow.dataset as ds

    import lakeml

    assert run.returncode == 0, run.fail_message()
    info = json.loads((run.lake / "smoke" / "partitioned_parquet_run.json").read_text())
    assert info["master"] == run.master_url
    assert info["env"] == "cluster"
    assert info["lakehouse_root"] == str(run.lake)
    assert info["executors"] >= 2, info

    out = run.lake / "smoke" / "partitioned_parquet"
    assert (out / "_SUCCESS").exists()
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == info["rows"]
    rows = table.to_pandas()
    assert sorted(rows["id"]) == list(range(info["rows"]))
    assert set(rows["bucket"].astype(int)) == {0, 1, 2, 3}
    assert (rows["location"] == "/lake/bucket=" + rows["bucket"].astype(str)).all()
    # Executors imported lakeml, the version this checkout builds, from the unpacked environment.
    assert set(rows["lakeml_version"]) == {lakeml.__version__}
    assert all("/environment/" in f for f in set(rows["lakeml_file"])), set(rows["lakeml_file"])
    assert all(p.endswith("/environment/bin/python") for p in set(rows["python"])), set(rows["python"])
    # The work ran in more than one executor's Python worker, never in the driver.
    pids = set(rows["pid"])
    assert len(pids) > 1, pids
    assert info["driver_pid"] not in pids
    executor_dirs = set(rows["cwd"])
    assert len(executor_dirs) >= 2, executor_dirs
    work = str((run.state_dir / "work").resolve())
    assert all(d.startswith(work + "/") for d in executor_dirs), executor_dirs


# For the real job jobs/commerce/ingest_bronze.py (landing clickstream JSON lines -> bronze Delta table
# <lake>/bronze/clickstream, one row per line with the raw line in `value`). The landing layout follows
# lakeml.domains.commerce.generator: <landing>/clickstream/clickstream-<YYYY-MM-DD>-<nnnnn>.jsonl.
CLICKSTREAM_FILES = 2
CLICKSTREAM_LINES_PER_FILE = 250


def clickstream_lines(part: int) -> list[str]:
    return [
        json.dumps(
            {
                "event_id": f"00000000-0000-4000-8000-{part:04d}{i:08d}",
                "ts": f"2026-11-20T{6 * part + i % 6:02d}:{i % 60:02d}:07.123+01:00",
                "user_id": f"u-{i % 37:07d}",
                "session_id": f"00000000-0000-4000-9000-{part:04d}{i // 5:08d}",
                "event_type": "view",
                "item_id": f"i-{i % 11:06d}",
                "category": "books",
                "price": 12.5,
                "device": "mobile",
                "ip": "10.0.0.1",
                "user_agent": "test",
                "referrer": "",
            },
            separators=(",", ":"),
        )
        for i in range(CLICKSTREAM_LINES_PER_FILE)
    ]


def land_clickstream(lake: Path) -> None:
    """Two landing files of clickstream JSON lines under <lake>/landing/clickstream/."""
    folder = lake / "landing" / "clickstream"
    folder.mkdir(parents=True, exist_ok=True)
    for part in range(CLICKSTREAM_FILES):
        (folder / f"clickstream-2026-11-20-{part:05d}.jsonl").write_text(
            "\n".join(clickstream_lines(part)) + "\n"
        )


def check_bronze_clickstream_native(run: SubmitRun) -> None:
    """check_bronze_clickstream, and every commit of the table was made by the Delta connector."""
    from lakeml.lakehouse.log import read_commits

    check_bronze_clickstream(run)
    table = run.lake / "bronze" / "clickstream"
    commits = read_commits(str(table), 0, len(list((table / "_delta_log").glob("*.json"))) - 1)
    engines = {c.info.get("engineInfo", "") for c in commits}
    assert len(commits) >= 2 and all("Delta-Lake/" in e for e in engines), engines
    assert "--jars" in run.log_file.read_text(errors="replace"), "submitted without the connector jars"


def check_bronze_clickstream(run: SubmitRun) -> None:
    from deltalake import DeltaTable

    assert run.returncode == 0, run.fail_message()
    table = DeltaTable(str(run.lake / "bronze" / "clickstream")).to_pyarrow_table()
    for column in ("value", "_source_file", "_ingested_at", "_batch_id"):
        assert column in table.column_names, table.column_names
    expected = sorted(line for part in range(CLICKSTREAM_FILES) for line in clickstream_lines(part))
    assert sorted(table.column("value").to_pylist()) == expected
    sources = {Path(p).name for p in table.column("_source_file").to_pylist()}
    assert sources == {f"clickstream-2026-11-20-{part:05d}.jsonl" for part in range(CLICKSTREAM_FILES)}
