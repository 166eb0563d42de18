"""Which dates of a derived, date-partitioned table are current with the table they are computed from.

A derived table (daily aggregates kept so later runs need not recompute them from raw rows) is
rewritten per date range. ``ops/derived_dates`` records, per (derived table, date), the source
version and the settings fingerprint the date was computed from, and the derived table's version
that holds its rows (the commit that wrote them: it orders recomputations without clocks). A date
must be recomputed when:

- it was never computed, or with other settings (fingerprint);
- the source got files for that date after the recorded version (late rows landing in old dates);
- an earlier date of the range was recomputed after it: derived rows may carry state from the day
  before (a session open at midnight), so a date is only as current as every date before it;
- the derived table is older than the record (it was dropped and created again).

The first date that must be recomputed is returned; the caller recomputes from there to the end of
its range (state flows forward), then records the range. Everything read here is per-date metadata.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.errors import TableError
from lakeml.lakehouse.table import DeltaTableRef

DERIVED_DATES_SCHEMA = T.StructType(
    [
        T.StructField("table", T.StringType(), False),  # the derived table, e.g. gold/user_item_days
        T.StructField("date", T.DateType(), False),
        T.StructField("source_version", T.LongType(), False),  # source snapshot the date was computed from
        T.StructField("fingerprint", T.StringType(), False),  # of the settings the rows depend on
        T.StructField("derived_version", T.LongType(), False),  # derived table commit that wrote the rows
        T.StructField("computed_at", T.TimestampType(), False),  # for people; order is derived_version
    ]
)


@dataclass(frozen=True)
class _Record:
    source_version: int
    fingerprint: str
    derived_version: int


@dataclass(frozen=True)
class DerivedDates:
    """The freshness records of one derived table, computed from ``source`` partitioned by ``date_column``."""

    state: DeltaTableRef  # ops/derived_dates (created on first use)
    table: str  # the derived table's name in the records
    derived: DeltaTableRef
    source: DeltaTableRef
    date_column: str
    fingerprint: str

    def first_stale(self, first: dt.date, last: dt.date) -> dt.date | None:
        """The earliest date in [first, last] that must be recomputed; None when every date is current."""
        recorded = self._recorded(first, last)
        changed = self._dates_changed_since(sorted({r.source_version for r in recorded.values()}))
        derived_version = self.derived.version()
        latest_before = -1
        for day in _dates(first, last):
            record = recorded.get(day)
            if (
                record is None
                or record.fingerprint != self.fingerprint
                or changed[record.source_version] is None
                or day in changed[record.source_version]  # type: ignore[operator]
                or record.derived_version < latest_before
                or record.derived_version > derived_version
            ):
                return day
            latest_before = max(latest_before, record.derived_version)
        return None

    def record(self, first: dt.date, last: dt.date, source_version: int, derived_version: int) -> None:
        """Mark [first, last] as computed from ``source_version`` with the current settings, its rows
        written by the derived table's commit ``derived_version``."""
        self.state.create(DERIVED_DATES_SCHEMA)
        now = dt.datetime.now(dt.UTC)
        self.state.append_rows(
            [
                (self.table, day, source_version, self.fingerprint, derived_version, now)
                for day in _dates(first, last)
            ]
        )

    def _recorded(self, first: dt.date, last: dt.date) -> dict[dt.date, _Record]:
        if not self.state.exists():
            return {}
        rows = (
            self.state.read()
            .where((F.col("table") == self.table) & F.col("date").between(first, last))
            .select("date", "source_version", "fingerprint", "derived_version")
            .collect()  # a few rows per date of the range
        )
        latest: dict[dt.date, _Record] = {}
        for row in sorted(rows, key=lambda r: r.derived_version):
            latest[row.date] = _Record(row.source_version, row.fingerprint, row.derived_version)
        return latest

    def _dates_changed_since(self, versions: list[int]) -> dict[int, set[dt.date] | None]:
        """Per version (ascending), the dates the source got files for after it; None when that cannot
        be told (the history since is not append-only, or the version is newer than the table)."""
        changed: dict[int, set[dt.date] | None] = {}
        if not versions:
            return changed
        since_next: set[dt.date] | None = set()
        latest = self.source.version()
        # Newest first, each commit read once: after v = (v, next recorded version] + after that one.
        for version, until in reversed(list(zip(versions, [*versions[1:], latest], strict=True))):
            try:
                added = self.source.appended_files(version, until=min(until, latest))
            except TableError:
                since_next = None
            else:
                if since_next is not None:
                    since_next = since_next | {entry.partition_values[self.date_column] for entry in added}
            changed[version] = since_next
        return changed


def _dates(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
