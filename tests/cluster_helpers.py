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
import urllib.request
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
        # It deletes the workers' unpacked environments (~1 GB each): minutes on a loaded disk.
        timeout=600,
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
        return (f"scripts/submit {self.job_file} exited {self.returncode}; stdout:\n{self.stdout}\nlog "
            f"tail:\n{tail}")


def start_submit(
    job_file: str,
    args: Sequence[str],
    *,
    lake: Path,
    master_url: str,
    log_file: Path,
    extra_env: Mapping[str, str] | None = None,
    env_name: str = "cluster",
) -> subprocess.Popen:
    """``scripts/submit JOB_FILE --env ENV_NAME --conf submit.master=URL ARGS`` with LAKEML_LAKEHOUSE=lake,
    started in its own process session (so a timeout can stop spark-submit, the driver and its Python);
    stderr goes to ``log_file``. Finish it with ``wait_submit``."""
    env = dict(os.environ)
    env["LAKEML_LAKEHOUSE"] = str(lake)
    # Keep the driver's web UI off: nothing looks at it and it is one port fewer.
    env.setdefault("LAKEML_SUBMIT_ARGS", "--conf spark.ui.enabled=false")
    env.update(extra_env or {})
    for name in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):  # set by a local session of the tests
        env.pop(name, None)
    cmd = [
        str(SCRIPTS / "submit"),
        job_file,
        "--env",
        env_name,
        "--conf",
        f"submit.master={master_url}",
        *args,
    ]
    log("submitting: " + " ".join(cmd[1:]))
    with open(log_file, "w", encoding="utf-8") as err:
        return subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )


def wait_submit(
    proc: subprocess.Popen,
    job_file: str,
    args: Sequence[str],
    *,
    lake: Path,
    master_url: str,
    state_dir: Path,
    log_file: Path,
    started: float,
    timeout: float = SUBMIT_TIMEOUT,
) -> SubmitRun:
    """Wait for a ``start_submit`` process (killing its session after ``timeout``) and describe the run."""
    try:
        stdout, _ = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - started)))
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
    """``scripts/submit JOB_FILE --env cluster --conf submit.master=URL ARGS`` with LAKEML_LAKEHOUSE=lake."""
    started = time.monotonic()
    proc = start_submit(
        job_file, args, lake=lake, master_url=master_url, log_file=log_file, extra_env=extra_env
    )
    return wait_submit(
        proc,
        job_file,
        args,
        lake=lake,
        master_url=master_url,
        state_dir=state_dir,
        log_file=log_file,
        started=started,
        timeout=timeout,
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
    """tests/cluster_jobs/write_partitioned_parquet.py: rows, lakeml from the packed env, executor
    processes."""
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
# lakeml.synthetic.commerce: <landing>/clickstream/clickstream-<YYYY-MM-DD>-<nnnnn>.jsonl.
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


# ----------------------------------------------------------------------------------------------
# losing a worker while a job runs

# Loopback only: never go through an HTTP proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(url: str, timeout: float = 3.0) -> object:
    with _OPENER.open(url, timeout=timeout) as resp:
        return json.load(resp)


def alive_workers(state_dir: Path) -> int:
    """Workers the master reports ALIVE (its web UI's /json/)."""
    state = http_json((state_dir / "webui-url").read_text().strip() + "/json/")
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")  # type: ignore[union-attr]


def _session_of(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces, so split after ')'.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def executor_worker(state_dir: Path, app_id: str, executor_id: str) -> int:
    """Index i of the worker (worker-i.pid) whose session holds ``app_id``'s executor ``executor_id``.

    Every worker of scripts/cluster-up leads a session of its own; the executors it launches join it.
    """
    wanted = [b"CoarseGrainedExecutorBackend", b"\0--executor-id\0" + executor_id.encode() + b"\0"]
    wanted.append(b"\0--app-id\0" + app_id.encode() + b"\0")
    for pid, _ in processes_under(state_dir):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            session = _session_of(pid)
        except OSError:
            continue
        if all(w in cmdline for w in wanted):
            for pid_file in state_dir.glob("worker-*.pid"):
                if int(pid_file.read_text().strip()) == session:
                    return int(pid_file.stem.split("-", 1)[1])
    raise AssertionError(f"no executor {executor_id} of {app_id} under {state_dir}")


@dataclass(frozen=True)
class KilledWorker:
    """A worker killed with its executors, and what it takes to start it again as cluster-up did."""

    index: int
    pids: tuple[int, ...]
    cmdline: tuple[str, ...]
    environ: Mapping[str, str]
    cwd: str


def kill_worker(state_dir: Path, index: int) -> KilledWorker:
    """SIGKILL worker ``index`` and every process of its session (its executors and their Python workers)."""
    leader = int((state_dir / f"worker-{index}.pid").read_text().strip())
    cmdline = tuple(a.decode() for a in Path(f"/proc/{leader}/cmdline").read_bytes().split(b"\0") if a)
    raw_environ = Path(f"/proc/{leader}/environ").read_bytes().split(b"\0")
    environ = dict(e.decode().split("=", 1) for e in raw_environ if b"=" in e)
    cwd = os.readlink(f"/proc/{leader}/cwd")
    members = []
    for pid, _ in processes_under(state_dir):
        with suppress(OSError):
            if _session_of(pid) == leader:
                members.append(pid)
    for pid in members:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in members) and time.monotonic() < deadline:
        time.sleep(0.05)
    log(f"killed worker-{index}: pids {members}")
    return KilledWorker(index, tuple(members), cmdline, environ, cwd)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


_restarted: list[subprocess.Popen] = []  # kept so the objects (and their exit codes) are not dropped


def restart_worker(state_dir: Path, worker: KilledWorker, workers: int, timeout: float = 120) -> None:
    """Start a killed worker again with its own command line and environment, leading a session of its
    own like cluster-up's (so cluster-down finds it); wait until the master has ``workers`` ALIVE."""
    log_path = state_dir / "logs" / f"worker-{worker.index}.log"
    with open(log_path, "a", encoding="utf-8") as out:
        proc = subprocess.Popen(
            list(worker.cmdline),
            cwd=worker.cwd,
            env=dict(worker.environ),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _restarted.append(proc)
    (state_dir / f"worker-{worker.index}.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError, ValueError):
            if alive_workers(state_dir) >= workers:
                log(f"worker-{worker.index} restarted (pid {proc.pid})")
                return
        if proc.poll() is not None:
            raise AssertionError(f"restarted worker-{worker.index} exited {proc.returncode}: see {log_path}")
        time.sleep(0.3)
    raise AssertionError(f"worker-{worker.index} did not register again in {timeout:.0f} s: see {log_path}")


@dataclass(frozen=True)
class WorkerLoss:
    """Where and when a running application lost a worker."""

    app_id: str
    executor_id: str
    stages_done: int
    seconds: float  # after the submit started
    worker: KilledWorker


def kill_worker_during_job(
    proc: subprocess.Popen, ui_url: str, state_dir: Path, *, min_stages_done: int, timeout: float = 300
) -> WorkerLoss:
    """Poll the driver's REST API until the application has two live executors, at least
    ``min_stages_done`` completed stages and an executor running a task; then kill that executor's worker.

    The kill lands while a task runs there, not after a sleep: the job must lose work and redo it."""
    started = time.monotonic()
    api = f"{ui_url}/api/v1/applications"
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the job ended (exit {proc.returncode}) before a worker could be killed")
        try:
            app_id = http_json(api)[0]["id"]  # type: ignore[index]
            done = len(http_json(f"{api}/{app_id}/stages?status=complete"))  # type: ignore[arg-type]
            executors = [e for e in http_json(f"{api}/{app_id}/executors") if e["id"] != "driver"]  # type: ignore[union-attr]
        except (OSError, ValueError, IndexError, KeyError):
            time.sleep(0.1)
            continue
        busy = [e["id"] for e in executors if e.get("isActive") and e.get("activeTasks", 0) > 0]
        if sum(1 for e in executors if e.get("isActive")) >= 2 and busy and done >= min_stages_done:
            index = executor_worker(state_dir, app_id, busy[0])
            worker = kill_worker(state_dir, index)
            seconds = time.monotonic() - started
            log(f"{app_id}: killed worker-{index} (executor {busy[0]}) after {done} stages, {seconds:.1f} s")
            return WorkerLoss(app_id, busy[0], done, seconds, worker)
        time.sleep(0.05)
    raise AssertionError(f"no executor ran a task past {min_stages_done} done stages in {timeout:.0f} s")


@dataclass(frozen=True)
class EventLogFaults:
    """What a Spark event log says about lost executors and redone work."""

    removed_executors: tuple[str, ...]
    failed_tasks: tuple[tuple[int, str, str], ...]  # (stage id, executor id, reason)
    stage_retries: tuple[tuple[int, int], ...]  # (stage id, attempt > 0)
    succeeded_after_removal: tuple[str, ...]  # executor ids of tasks that succeeded after the first removal

    def summary(self) -> str:
        return (
            f"{len(self.removed_executors)} executor lost, {len(self.failed_tasks)} task(s) failed, "
            f"{len(self.stage_retries)} stage attempt(s) rerun"
        )


def read_event_log(events_dir: Path, app_id: str) -> EventLogFaults:
    (path,) = [p for p in events_dir.iterdir() if p.name.startswith(app_id)]
    removed: list[str] = []
    failed, retries, after = [], [], []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        kind = event.get("Event")
        if kind == "SparkListenerExecutorRemoved":
            removed.append(event["Executor ID"])
        elif kind == "SparkListenerStageSubmitted":
            info = event["Stage Info"]
            if info.get("Stage Attempt ID", 0) > 0:
                retries.append((info["Stage ID"], info["Stage Attempt ID"]))
        elif kind == "SparkListenerTaskEnd":
            reason = event["Task End Reason"]["Reason"]
            executor = event["Task Info"]["Executor ID"]
            if reason != "Success":
                failed.append((event["Stage ID"], executor, reason))
            elif removed:
                after.append(executor)
    return EventLogFaults(tuple(removed), tuple(failed), tuple(retries), tuple(sorted(set(after))))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
