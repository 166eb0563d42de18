"""One run at a time per lakehouse: a lock file with its holder and a lease, taken before Spark starts.

The file ``<lakehouse root>/_lakeml/run.lock`` is held with ``flock`` by the running process (the
kernel drops it when the process dies, however it dies) and holds a JSON record of the holder: host,
pid, command and a lease that a thread renews. An empty file means free. What the next run finds:

- the flock is taken: a live run on this host (or one that shares the lock through the filesystem):
  refused with ``LockHeld`` (exit 3);
- a record from this host whose process is gone (killed, crashed): stale, taken over with a log line;
- a record from another host: refused while its lease runs, taken over with a log line once expired
  (a machine that died cannot release its lock; a live holder renews the lease long before).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakeml import runlog
from lakeml.config import Config
from lakeml.errors import LakemlError, UsageError

LOCK_FILE = "_lakeml/run.lock"


class LockHeld(LakemlError):
    """Another run holds this lakehouse's lock (exit 3: try again later, e.g. a scheduler's retry)."""

    exit_code = 3


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) the lock, as recorded in the lock file."""

    host: str
    pid: int
    command: str
    acquired_at: float
    lease_until: float

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.acquired_at))
        return f"'{self.command}' (pid {self.pid} on {self.host}, since {since})"


def lock_path(config: Config) -> Path:
    """The lock file of the lakehouse in ``config`` (a local or mounted folder)."""
    root = config.lakehouse.root
    if root.startswith("file:"):
        root = root[len("file:") :].lstrip("/")
        root = "/" + root
    elif "://" in root:
        raise UsageError(
            f"the run lock needs a lakehouse root on a filesystem (got {root}); "
            "set run.lock_dir to a shared folder"
        )
    folder = Path(config.run.lock_dir) if config.run.lock_dir else Path(root)
    return folder / LOCK_FILE


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The lakehouse lock for one command; use as a context manager or acquire()/release()."""

    def __init__(self, path: Path, command: str, lease_seconds: float) -> None:
        self.path = path
        self.command = command
        self.lease_seconds = lease_seconds
        self._fd: int | None = None
        self._acquired_at: float | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._io = threading.Lock()

    def acquire(self) -> RunLock:
        """Take the lock, or raise LockHeld naming the holder; takes over stale locks with a log line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse(_read(fd))
            os.close(fd)
            who = holder.describe() if holder else "another process"
            raise LockHeld(
                f"lakehouse {self.path.parent.parent} is in use by {who}; lock {self.path}"
            ) from None
        try:
            self._check_previous(_parse(_read(fd)), _read(fd))
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd
        self._write(time.time())
        self._renewer = threading.Thread(target=self._renew, name="lakeml-lock-lease", daemon=True)
        self._renewer.start()
        return self

    def _check_previous(self, holder: Holder | None, text: str) -> None:
        if holder is None:
            if text.strip():
                runlog.event("lock_taken_over", lock=str(self.path), reason="unreadable lock record")
            return
        here = socket.gethostname()
        if holder.host == here:
            if holder.pid != os.getpid() and process_alive(holder.pid) and holder.lease_until > time.time():
                # The flock is free, yet the recorded process lives and its lease runs: a lock on a
                # filesystem without flock between processes. Trust the record.
                raise LockHeld(f"lakehouse is in use by {holder.describe()}; lock {self.path}")
            runlog.event(
                "lock_taken_over",
                lock=str(self.path),
                reason=f"stale: process {holder.pid} on {here} is gone",
                previous=holder.command,
            )
            return
        if holder.lease_until > time.time():
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder.lease_until))
            raise LockHeld(
                f"lakehouse is locked by {holder.describe()} on another host, lease until {until}; "
                f"if that run is dead, wait for the lease or delete {self.path}"
            )
        runlog.event(
            "lock_taken_over",
            lock=str(self.path),
            reason=f"lease of pid {holder.pid} on {holder.host} expired",
            previous=holder.command,
        )

    def _write(self, now: float) -> None:
        assert self._fd is not None
        if self._acquired_at is None:
            self._acquired_at = now
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": self.command,
            "acquired_at": self._acquired_at,
            "lease_until": now + self.lease_seconds,
        }
        data = json.dumps(record).encode()
        with self._io:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
            os.fsync(self._fd)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            with contextlib.suppress(OSError):
                self._write(time.time())

    def release(self) -> None:
        """Empty the record (free) and drop the flock."""
        if self._fd is None:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with self._io:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def lakehouse_lock(config: Config, command: str) -> Iterator[RunLock]:
    """Hold the lakehouse's run lock for ``command`` (raises LockHeld when another run holds it)."""
    with RunLock(lock_path(config), command, config.run.lock_lease_seconds) as lock:
        yield lock


def _read(fd: int) -> str:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0).decode("utf-8", errors="replace") if size else ""


def _parse(text: str) -> Holder | None:
    if not text.strip():
        return None
    try:
        data: Any = json.loads(text)
        return Holder(
            str(data["host"]),
            int(data["pid"]),
            str(data.get("command", "?")),
            float(data.get("acquired_at", 0.0)),
            float(data["lease_until"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
