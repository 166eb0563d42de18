"""Table maintenance (job ops.maintain_tables): compact, vacuum, clean the log, record it in ops/maintenance.

Per table, in this order:
1. ``optimize``: small files of each partition are rewritten into files of about
   ``lakehouse.target_file_size_mb`` (a commit that changes no data);
2. ``vacuum`` with ``lakehouse.vacuum_retention_hours``: files no version within the retention needs are
   deleted, except every file of a protected version (a registered model's training data);
3. log cleanup: a checkpoint at the current version, then log files older than the table's
   ``delta.logRetentionDuration`` are deleted, but only when no protected version is older than that
   checkpoint (reading such a version needs the log entries that lead to it, so they stay).
Only file metadata passes through the driver (the log's file list, the vacuum's path list).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pyarrow import fs as pafs
from pyspark.sql import types as T

from lakeml import runlog
from lakeml.config import Config, join_location
from lakeml.lakehouse import DeltaTableRef, Lakehouse
from lakeml.lakehouse.table import note_input

MAINTENANCE_TABLE = ("ops", "maintenance")
# The log of job runs: every run, skipped or not, appends to it, so it is no input that says "new work".
RUN_LOG = "ops/job_runs"
AUTO_LOG_CLEANUP = "delta.enableExpiredLogCleanup"

# One row per table per maintenance run.
MAINTENANCE_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("run_date", T.DateType(), False),
        T.StructField("table", T.StringType(), False),  # <layer>/<name>
        T.StructField("version_before", T.LongType(), False),
        T.StructField("version_after", T.LongType(), False),
        T.StructField("files_before", T.LongType(), False),  # data files of the current snapshot
        T.StructField("files_after", T.LongType(), False),
        T.StructField("bytes_before", T.LongType(), False),
        T.StructField("bytes_after", T.LongType(), False),
        T.StructField("max_partition_files_before", T.LongType(), False),  # most files in one partition
        T.StructField("max_partition_files_after", T.LongType(), False),
        T.StructField("files_compacted", T.LongType(), False),  # small files optimize replaced
        T.StructField("files_vacuumed", T.LongType(), False),  # deleted from storage
        T.StructField("bytes_vacuumed", T.LongType(), False),
        T.StructField("protected_versions", T.ArrayType(T.LongType(), False), False),  # kept by vacuum
        T.StructField("log_files_removed", T.LongType(), False),
        T.StructField("log_note", T.StringType(), True),  # why the log was left alone, if it was
        T.StructField("seconds", T.DoubleType(), False),
        T.StructField("maintained_at", T.TimestampType(), False),
    ]
)
MAINTENANCE_PARTITIONS = ["run_date"]


@dataclass(frozen=True)
class Snapshot:
    """File counts of a table's current snapshot (from its log)."""

    files: int
    bytes: int
    max_partition_files: int


def snapshot(table: DeltaTableRef) -> Snapshot:
    """Files, bytes and the largest per-partition file count of ``table``'s current version."""
    entries = table.files()
    partition_by = table.partition_columns()
    per_partition = Counter(e.partition_key(partition_by) for e in entries)
    return Snapshot(len(entries), sum(e.size for e in entries), max(per_partition.values(), default=0))


def find_tables(root: str, layers: Sequence[str] = Lakehouse.LAYERS) -> list[str]:
    """``<layer>/<name>`` of every Delta table directly under the ``layers`` of the lakehouse at ``root``."""
    filesystem, base = pafs.FileSystem.from_uri(_uri(root))
    found: list[str] = []
    for layer in layers:
        for info in filesystem.get_file_info(pafs.FileSelector(f"{base}/{layer}", allow_not_found=True)):
            if info.type != pafs.FileType.Directory:
                continue
            if filesystem.get_file_info(f"{info.path}/_delta_log").type == pafs.FileType.Directory:
                found.append(f"{layer}/{info.base_name}")
    return sorted(found)


def lakehouse_tables(config: Config) -> list[str]:
    """The tables to maintain: ``table_maintenance.tables``, else every table of the lakehouse."""
    return list(config.table_maintenance.tables) or find_tables(config.lakehouse.root)


def maintain_table(lake: Lakehouse, name: str, run_id: str, run_date: date) -> dict[str, Any]:
    """Compact, vacuum and clean the log of table ``name``; returns its ops/maintenance row."""
    started = time.perf_counter()
    settings = lake.config.table_maintenance
    table = lake.at(join_location(lake.config.lakehouse.root, name))
    version_before = table.version()
    before = snapshot(table)
    outcome = table.optimize()
    vacuumed: Sequence[str] = []
    vacuumed_bytes = 0
    protected = sorted(table.protected_versions())
    if settings.vacuum:
        vacuumed, vacuumed_bytes = _vacuum(table)
    removed, note = clean_log(table.uri, protected) if settings.clean_logs else (0, "clean_logs is off")
    after = snapshot(table)
    row: dict[str, Any] = {
        "run_id": run_id,
        "run_date": run_date,
        "table": name,
        "version_before": version_before,
        "version_after": table.version(),
        "files_before": before.files,
        "files_after": after.files,
        "bytes_before": before.bytes,
        "bytes_after": after.bytes,
        "max_partition_files_before": before.max_partition_files,
        "max_partition_files_after": after.max_partition_files,
        "files_compacted": outcome.files_removed,
        "files_vacuumed": len(vacuumed),
        "bytes_vacuumed": vacuumed_bytes,
        "protected_versions": protected,
        "log_files_removed": removed,
        "log_note": note,
        "seconds": round(time.perf_counter() - started, 3),
        "maintained_at": datetime.now(UTC).replace(tzinfo=None),
    }
    runlog.event(
        "table_maintained",
        table=name,
        files_before=before.files,
        files_after=after.files,
        files_vacuumed=len(vacuumed),
        protected_versions=protected,
        log_files_removed=removed,
        **({"log_note": note} if note else {}),
    )
    return row


def maintain_tables(lake: Lakehouse, run_id: str, run_date: date) -> list[dict[str, Any]]:
    """Maintain every table of the lakehouse, then append one ops/maintenance row per table."""
    names = lakehouse_tables(lake.config)
    record_name = "/".join(MAINTENANCE_TABLE)
    rows = [maintain_table(lake, name, run_id, run_date) for name in names]
    record = lake.table(*MAINTENANCE_TABLE).create(MAINTENANCE_SCHEMA, MAINTENANCE_PARTITIONS)
    if rows:
        record.append_rows(
            [[r[f] for f in MAINTENANCE_SCHEMA.names] for r in rows], txn=(f"ops.maintain_tables:{run_id}", 0)
        )
    # Its inputs, for a rerun to skip when nothing changed (lakeml.runstate): every table it maintained
    # and its own record; not ops/job_runs, which every job run, skipped or not, appends to.
    for name in [*names, record_name]:
        if name != RUN_LOG:
            table = lake.at(join_location(lake.config.lakehouse.root, name))
            note_input(table.uri, table.version())
    return rows


def _vacuum(table: DeltaTableRef) -> tuple[Sequence[str], int]:
    """Vacuum with the configured retention; returns the deleted files and their bytes."""
    # The configured retention is the operator's choice: not overruled by the table's own
    # delta.deletedFileRetentionDuration (one run at a time per lakehouse, so no job of ours reads
    # an old snapshot while this runs). Protected versions are kept whatever the retention.
    doomed = table.vacuum(dry_run=True, enforce_retention=False)
    if not doomed:
        return [], 0
    filesystem, root = pafs.FileSystem.from_uri(_uri(table.uri))
    infos = filesystem.get_file_info([_under(root, p) for p in doomed])
    size = sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)
    deleted = table.vacuum(dry_run=False, enforce_retention=False)
    return deleted, size


def clean_log(uri: str, protected: Sequence[int]) -> tuple[int, str | None]:
    """Checkpoint, then delete expired log files unless a protected version needs them."""
    from deltalake import DeltaTable

    table = DeltaTable(uri)
    version = table.version()
    filesystem, root = pafs.FileSystem.from_uri(_uri(uri))
    selector = pafs.FileSelector(f"{root}/_delta_log", allow_not_found=True)

    def log_files() -> int:
        return sum(1 for i in filesystem.get_file_info(selector) if i.type == pafs.FileType.File)

    needs = [v for v in protected if v < version]
    if needs and table.metadata().configuration.get(AUTO_LOG_CLEANUP) != "false":
        # Both engines delete expired log files by themselves when they checkpoint; a protected
        # version would become unreadable once its log entries are older than the log retention.
        table.alter.set_table_properties({AUTO_LOG_CLEANUP: "false"})
        runlog.event("log_cleanup_pinned", table=uri, protected_versions=list(protected))
        table = DeltaTable(uri)
        version = table.version()
    if not _has_checkpoint(filesystem, root, version):
        table.create_checkpoint()
    if needs:
        return 0, f"protected version {min(needs)} needs the log before the checkpoint at {version}"
    count = log_files()
    table.cleanup_metadata()
    return count - log_files(), None


def _has_checkpoint(filesystem: pafs.FileSystem, root: str, version: int) -> bool:
    info = filesystem.get_file_info(f"{root}/_delta_log/{version:020d}.checkpoint.parquet")
    return info.type == pafs.FileType.File


def _under(root: str, path: str) -> str:
    if "://" in path:
        return pafs.FileSystem.from_uri(path)[1]
    return path if path.startswith("/") else f"{root}/{path}"


def _uri(location: str) -> str:
    return location if "://" in location or location.startswith("file:") else f"file://{location}"
