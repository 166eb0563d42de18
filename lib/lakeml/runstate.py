"""Nothing new, nothing done: a job whose inputs and settings are as they were after its last
successful run for the same dates is skipped, and ``--catch-up`` finds the dates a pipeline missed.

A run's *input state* is what its output was computed from, read when it ends: the version of every
Delta table it read (the table layer records each read) and of every registered model whose champion
it loaded. Versions are taken at the end, so a table the job reads and also writes (its own
incremental state) counts as it left it. With the settings fingerprint (every setting that can
change an output, plus lakeml's code version) both are stored in the run's ``ops/job_runs`` row; the
next run for the same ``(job, run date, first date)`` compares them before it starts. A folder of
files a job reads (a bronze load's landing folder, ``note_files``) is an input too: its state is a
digest of the folder's listing (each file's path and size: metadata, never the data), taken before
the job reads it. A job that recorded no input at all is never skipped. Table maintenance
(``ops.maintain_tables``: optimize, vacuum)
commits new versions that change no row; a table whose only newer commits are such is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakeml import __version__
from lakeml.config import Config
from lakeml.steps import DateRange

if TYPE_CHECKING:
    from lakeml.lakehouse.log import Commit

SKIPPED = "skipped"
INPUTS_UNCHANGED = "inputs unchanged"
MODEL_PREFIX = "models:/"
FILES_PREFIX = "files:"
# Commit operations (delta-rs and delta-spark name them alike) whose metaData action only sets table
# properties: same rows, same schema.
TABLE_PROPERTY_OPERATIONS = ("SET TBLPROPERTIES", "UNSET TBLPROPERTIES")
# An input's state: a table's or model's version (None: absent), a folder listing's digest.
State = int | str | None
# Config sections that tune how a job runs, not what it writes. `lakehouse` too: the engine, file
# sizes and retries change files, not rows, and a lake at another root has other table URIs anyway.
_NOT_OUTPUT_SETTINGS = (
    "env",
    "spark",
    "run",
    "submit",
    "generate",
    "alerts",
    "airflow",
    "status",
    "lakehouse",
)


def model_input(name: str) -> str:
    """The input-state key of a registered model's champion."""
    return f"{MODEL_PREFIX}{name}@champion"


def settings_fingerprint(config: Config) -> str:
    """Hash of every setting that can change a job's output, and of the code (version + git commit)."""
    from lakeml.ml.tracking import git_commit

    settings = {
        f.name: _plain(getattr(config, f.name))
        for f in dataclasses.fields(config)
        if f.name not in _NOT_OUTPUT_SETTINGS
    }
    # The landing folder too (the rest of `lakehouse` is left out): a bronze load's recorded input is
    # the folder it listed, so a load pointed at another folder must not compare against that one.
    payload = json.dumps([settings, config.lakehouse.landing_dir, __version__, git_commit()], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _plain(value: Any) -> Any:
    """JSON-able form of a config value (dataclasses, read-only mappings and tuples included)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool | None) else str(value)


# While a job runs (noting_files), {FILES_PREFIX + folder: listing digest} of the folders it read.
_files: dict[str, State] | None = None


@contextlib.contextmanager
def noting_files() -> Iterator[dict[str, State]]:
    """Within the block, collect the listing digest of every folder ``note_files`` names (a job's file
    inputs)."""
    global _files
    outer, _files = _files, {}
    try:
        yield _files
    finally:
        _files = outer


def note_files(folder: str) -> None:
    """Record ``folder``'s listing as an input of the running job (nothing outside a job). Call it
    before reading the folder: a file delivered while the job runs is then new to the next run."""
    if _files is not None:
        _files.setdefault(FILES_PREFIX + folder, listing_digest(folder))


def listing_digest(folder: str) -> str | None:
    """Digest of every file under ``folder``: its relative path and size (None: no folder). Metadata
    only: one listing, no file is opened. Not the modification time: the bronze stream takes a file by
    its path once and never again, and ``lakeml generate`` rewrites identical files (new times) on a rerun."""
    from pyarrow import fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(folder if "://" in folder else "file://" + folder)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except FileNotFoundError:
        return None
    entries = sorted(
        (info.path.removeprefix(root), info.size) for info in infos if info.type == pafs.FileType.File
    )
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:20] + f":{len(entries)}"


def input_state(spark: SparkSession, config: Config, inputs: Iterable[str]) -> dict[str, State]:
    """The current state of each input: a table URI's Delta version, a model's champion version
    (None: none), a folder's listing digest."""
    from lakeml.lakehouse import Lakehouse

    lake = Lakehouse(spark, config)
    keys = sorted(set(inputs))
    state: dict[str, State] = {}
    for key in keys:
        if key.startswith(FILES_PREFIX):
            state[key] = listing_digest(key.removeprefix(FILES_PREFIX))
        elif not key.startswith(MODEL_PREFIX):
            table = lake.at(key)
            state[key] = table.version() if table.exists() else None
    models = [k for k in keys if k.startswith(MODEL_PREFIX)]
    if models:
        state.update(_champion_versions(config, models))
    return state


def _champion_versions(config: Config, keys: Sequence[str]) -> dict[str, int | None]:
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from lakeml.ml import registry, tracking

    client = mlflow.MlflowClient(tracking.tracking_uri(config))
    out: dict[str, int | None] = {}
    for key in keys:
        name = key.removeprefix(MODEL_PREFIX).removesuffix("@champion")
        current = registry.champion_version(client, name)
        out[key] = None if current is None else int(current.version)
    return out


def last_success(spark: SparkSession, config: Config, job: str, dates: DateRange) -> Any | None:
    """The newest ops/job_runs row of ``job`` for ``dates`` that ran and succeeded. Not a skipped run:
    it records no input state, so a third run after a skipped second one recomputed everything."""
    from lakeml.lakehouse import Lakehouse

    runs = Lakehouse(spark, config).table("ops", "job_runs")
    if not runs.exists() or "input_state" not in runs.schema().fieldNames():
        return None
    rows = (
        runs.read(where=[("job", "=", job), ("run_date", "=", dates.last), ("first_date", "=", dates.first)])
        .where((F.col("status") == "ok") & F.col("input_state").isNotNull())
        .orderBy(F.col("finished_at").desc())
        .limit(1)
        .collect()  # one run record
    )
    return rows[0] if rows else None


def skip_reason(spark: SparkSession, config: Config, job: str, dates: DateRange) -> str | None:
    """INPUTS_UNCHANGED when the job's last successful run for ``dates`` saw the same inputs and settings."""
    previous = last_success(spark, config, job, dates)
    if previous is None or previous.settings != settings_fingerprint(config) or not previous.input_state:
        return None
    recorded = json.loads(previous.input_state)
    if not recorded:
        return None
    current = input_state(spark, config, recorded)
    return INPUTS_UNCHANGED if all(_same_input(k, recorded[k], current.get(k)) for k in recorded) else None


def _same_input(key: str, recorded: State, current: State) -> bool:
    """The input is as the last run left it: the same version (or listing), or, for a table, only later
    commits that rewrote files without changing a row (``optimize`` compaction, ``vacuum``: table
    maintenance)."""
    if recorded == current:
        return True
    if not (isinstance(recorded, int) and isinstance(current, int)):
        return False  # a listing that changed, an input that appeared or went away
    if key.startswith(MODEL_PREFIX) or current < recorded:
        return False
    return not changes_rows(key, recorded, current)


def changes_rows(uri: str, old: int, new: int) -> bool:
    """Whether any commit of ``uri`` after version ``old`` up to ``new`` may change its rows or schema:
    one that adds or removes a file with ``dataChange`` true (or unset), or changes metadata or protocol.
    A log already cleaned past ``old`` counts as a change (it cannot be told)."""
    from lakeml.errors import TableError
    from lakeml.lakehouse.log import read_commits

    try:
        commits = read_commits(uri, old + 1, new)
    except TableError:
        return True
    return any(_may_change_rows(c) for c in commits)


def _may_change_rows(commit: Commit) -> bool:
    if commit.protocol_changed or any(a.get("dataChange", True) for a in [*commit.adds, *commit.removes]):
        return True
    # A table-property commit changes neither rows nor schema: e.g. ops.maintain_tables turning log
    # cleanup off on a table whose version a registered model pins (it made every trainer rerun).
    return commit.metadata_changed and commit.info.get("operation") not in TABLE_PROPERTY_OPERATIONS


def catch_up_start(
    spark: SparkSession, config: Config, jobs: Sequence[str], run_date: dt.date
) -> dt.date | None:
    """The day after the earliest of the jobs' last successful run dates (None: no job ever ran, or all are
    current)."""
    from lakeml.lakehouse import Lakehouse

    runs = Lakehouse(spark, config).table("ops", "job_runs")
    if not runs.exists():
        return None
    last = (
        runs.read()
        .where(F.col("job").isin(list(jobs)) & F.col("status").isin("ok", SKIPPED))
        .groupBy("job")
        .agg(F.max("run_date").alias("last"))
        .collect()  # one row per job
    )
    if not last:
        return None
    start = min(r["last"] for r in last) + dt.timedelta(days=1)
    return start if start <= run_date else None


def encode_state(state: Mapping[str, State]) -> str:
    return json.dumps(dict(state), sort_keys=True)
