"""Fault injection for the reliability tests: SIGKILL this run at a named point of the commit path.

Off unless the environment asks for it, and then read once at import, so a point costs one
comparison in production. ``LAKEML_KILL_AT=<point>|<label>|<n>`` kills the process (its whole
process group when it leads one: the JVM and Python workers die with it, as on a lost machine) the
``n``-th time ``point`` is reached with ``label`` in its label; ``LAKEML_FAULT_TRACE=<file>`` appends
``<point>|<label>`` per point reached, so a harness can pick points from an uninterrupted run.

Points: ``commit.before`` (a table write starts), ``commit.during`` (delta-rs: data files written,
log entry not yet), ``commit.after`` (the log entry is written, the caller has not seen it),
``registry.registered`` (a model version exists, no alias yet), ``registry.aliased`` (alias set).
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "LAKEML_KILL_AT"
TRACE_ENV = "LAKEML_FAULT_TRACE"

_KILL = os.environ.get(KILL_ENV) or None
_TRACE = os.environ.get(TRACE_ENV) or None
_seen: dict[str, int] = {}


def point(name: str, label: str) -> None:
    """A place a run may die; a no-op unless LAKEML_KILL_AT or LAKEML_FAULT_TRACE is set."""
    if _KILL is None and _TRACE is None:
        return
    if _TRACE is not None:
        with open(_TRACE, "a") as trace:
            trace.write(f"{name}|{label}\n")
    if _KILL is not None:
        want, _, rest = _KILL.partition("|")
        fragment, _, nth = rest.rpartition("|")
        if name == want and fragment in label:
            key = f"{name}|{fragment}"
            _seen[key] = _seen.get(key, 0) + 1
            if _seen[key] == int(nth or 1):
                kill_now()


def kill_now() -> None:
    """SIGKILL this process, with its process group when it leads one (as a lost machine would)."""
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def table_label(uri: str) -> str:
    """``layer/name`` of a table's uri (its last two path parts)."""
    return "/".join(uri.rstrip("/").split("/")[-2:])
