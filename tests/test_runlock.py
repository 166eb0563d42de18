"""One run at a time per lakehouse: a second process is refused, a killed run's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lakeml.config import load_config
from lakeml.runlock import LockHeld, RunLock, lakehouse_lock, lock_path

HOLD = """
import sys, time
from lakeml.config import load_config
from lakeml.runlock import lakehouse_lock
from lakeml import runlog
runlog.configure()
with lakehouse_lock(load_config("test", [f"lakehouse.root={sys.argv[1]}"]), "holder"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(root: Path, seconds: float = 120) -> subprocess.Popen[str]:
    """A real process holding the lakehouse lock (prints 'locked' once it has it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked", proc.stderr.read()
    return proc


def taken_over_reasons(root: Path) -> list[str]:
    """A real process takes the lock and lets it go; the reasons it logged for taking it over."""
    taker = subprocess.run(
        [sys.executable, "-c", HOLD, str(root), "0"], capture_output=True, text=True, timeout=120
    )
    assert taker.returncode == 0, taker.stderr
    events = [json.loads(line) for line in taker.stderr.splitlines() if line.startswith("{")]
    return [e["reason"] for e in events if e["event"] == "lock_taken_over"]


def lakeml(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAKEML_LAKEHOUSE": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "lakeml.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_a_second_run_is_refused_then_a_killed_runs_lock_is_taken_over(tmp_path):
    root = tmp_path / "lake"
    holder = hold(root)
    try:
        second = lakeml(root, "run", "commerce.ingest_bronze", "--env", "test")
        assert second.returncode == 3, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "is in use by 'holder'" in lines[0] and f"pid {holder.pid}" in lines[0]
        assert not (root / "bronze").exists()  # nothing ran
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed holder left its record; the next process finds it stale and takes over.
    config = load_config("test", [f"lakehouse.root={root}"])
    assert json.loads(lock_path(config).read_text())["pid"] == holder.pid
    assert taken_over_reasons(root) == [f"stale: process {holder.pid} on {socket.gethostname()} is gone"]
    assert lock_path(config).read_text() == ""  # released: the next run takes it silently


def test_a_lock_from_another_host_is_refused_until_its_lease_expires(tmp_path):
    root = tmp_path / "lake"
    config = load_config("test", [f"lakehouse.root={root}"])
    path = lock_path(config)
    path.parent.mkdir(parents=True)
    record = {"host": "other-host", "pid": 4242, "command": "lakeml pipeline", "acquired_at": time.time()}
    path.write_text(json.dumps({**record, "lease_until": time.time() + 600}))
    refused = lakeml(root, "pipeline", "--env", "test")
    assert refused.returncode == 3
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pid 4242 on other-host" in lines[0] and "another host" in lines[0]
    assert json.loads(path.read_text())["host"] == "other-host"  # not taken over

    path.write_text(json.dumps({**record, "lease_until": time.time() - 1}))
    assert taken_over_reasons(root) == ["lease of pid 4242 on other-host expired"]
    with lakehouse_lock(config, "taker"):
        assert json.loads(path.read_text())["command"] == "taker"


def test_in_process_the_lock_is_exclusive_and_its_lease_renewed(tmp_path):
    path = tmp_path / "_lakeml" / "run.lock"
    with RunLock(path, "first", lease_seconds=3):
        first = json.loads(path.read_text())["lease_until"]
        with pytest.raises(LockHeld, match="in use by 'first'"):
            RunLock(path, "second", lease_seconds=3).acquire()
        time.sleep(1.3)
        assert json.loads(path.read_text())["lease_until"] > first  # renewed every third of the lease
    with RunLock(path, "third", lease_seconds=3):
        pass
    assert path.read_text() == ""
