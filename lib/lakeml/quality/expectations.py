"""Declarative data-quality checks (``silver.checks`` in conf), evaluated in one aggregation pass.

Kinds: ``not_null`` (column), ``range`` (column, min_value/max_value), ``accepted_values`` (column,
values), ``unique`` (columns), ``freshness`` (column, max_age_hours: the newest value is at most this
old at the end of the run date) and ``quarantine_rate`` (max_value: share of the batch's records
quarantined). Row-level checks count failing rows; only one small result row per check reaches the
driver.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, Row
from pyspark.sql import functions as F

from lakeml.config import CheckConfig
from lakeml.errors import ConfigError


@dataclass(frozen=True)
class CheckResult:
    check: str
    target: str
    level: str
    passed: bool
    failed_rows: int | None
    rows_checked: int
    observed: str | None

    def describe(self) -> str:
        detail = (
            f"{self.failed_rows} failing rows"
            if self.failed_rows is not None
            else f"observed {self.observed}"
        )
        return f"{self.check}({self.target}) {detail} of {self.rows_checked}"


def validate_checks(table: str, checks: Sequence[CheckConfig], columns: Sequence[str]) -> None:
    """Fail with a ConfigError naming the check when it lacks a parameter or names an unknown column."""
    for check in checks:
        needs_column = check.check in ("not_null", "range", "accepted_values", "freshness")
        named = [check.column] if needs_column else list(check.columns)
        problems = []
        if needs_column and not check.column:
            problems.append("needs 'column'")
        if check.check == "unique" and not check.columns:
            problems.append("needs 'columns'")
        if check.check == "range" and check.min_value is None and check.max_value is None:
            problems.append("needs min_value and/or max_value")
        if check.check == "accepted_values" and not check.values:
            problems.append("needs 'values'")
        if check.check == "freshness" and check.max_age_hours is None:
            problems.append("needs 'max_age_hours'")
        if check.check == "quarantine_rate" and check.max_value is None:
            problems.append("needs 'max_value'")
        unknown = [c for c in named if c and c not in columns]
        if unknown:
            problems.append(f"names unknown columns {unknown}")
        if problems:
            raise ConfigError(f"silver.checks.{table}: check {check.check} " + "; ".join(problems))


def _failing_rows(
    check: CheckConfig, checked: Column, repeated: Mapping[tuple[str, ...], Column]
) -> Column | None:
    """An aggregate counting the checked rows that fail a row-level check (None for table-level checks)."""
    if check.check == "not_null":
        return F.count_if(checked & F.col(check.column).isNull())
    if check.check == "range":
        value = F.col(check.column)
        low = value < F.lit(check.min_value) if check.min_value is not None else F.lit(False)
        high = value > F.lit(check.max_value) if check.max_value is not None else F.lit(False)
        return F.count_if(checked & F.coalesce(low | high, F.lit(False)))
    if check.check == "accepted_values":
        column = F.col(check.column)
        return F.count_if(checked & column.isNotNull() & ~column.isin(list(check.values)))
    if check.check == "unique" and tuple(sorted(check.columns)) in repeated:
        return F.count_if(checked & F.coalesce(repeated[tuple(sorted(check.columns))], F.lit(False)))
    if check.check == "unique":
        # count_distinct skips rows with a NULL, which is what unchecked rows become here.
        distinct = F.count_distinct(*[F.when(checked, F.col(c)) for c in check.columns])
        return F.count_if(checked) - distinct
    return None


def check_aggregates(
    checks: Sequence[CheckConfig],
    run_end: dt.datetime,
    checked: Column | None = None,
    repeated: Mapping[tuple[str, ...], Column] | None = None,
) -> dict[str, Column]:
    """Aggregate columns computing every check over the rows where ``checked`` holds (all rows if None).

    Returned separately so a caller can fold them into an aggregation it runs anyway. ``repeated``
    maps sorted column names to a flag that is true on every checked row after the first with the
    same values: a ``unique`` check on those columns counts it instead of a distinct count, so
    the aggregates contain no DISTINCT and can be observed (``DataFrame.observe``) during a write.
    """
    repeated = repeated or {}
    checked = F.lit(True) if checked is None else F.coalesce(checked, F.lit(False))
    aggregates: dict[str, Column] = {"__rows": F.count_if(checked)}
    for i, check in enumerate(checks):
        failing = _failing_rows(check, checked, repeated)
        if failing is not None:
            aggregates[f"__c{i}"] = failing
        elif check.check == "freshness":
            # Compared in Spark (session time zone UTC): collected timestamps would be in the driver's zone.
            assert check.max_age_hours is not None
            oldest = (run_end - dt.timedelta(hours=check.max_age_hours)).strftime("%Y-%m-%d %H:%M:%S")
            newest = F.max(F.when(checked, F.col(check.column)))
            aggregates[f"__c{i}"] = F.date_format(newest, "yyyy-MM-dd'T'HH:mm:ss'Z'")
            aggregates[f"__p{i}"] = F.coalesce(newest >= F.to_timestamp(F.lit(oldest)), F.lit(False))
    return aggregates


def check_results(
    values: Row | Mapping[str, Any], checks: Sequence[CheckConfig], records_in: int, records_quarantined: int
) -> list[CheckResult]:
    """One result per check from the row the ``check_aggregates`` columns produced."""
    rows = int(values["__rows"])
    results = []
    for i, check in enumerate(checks):
        target = check.column or ",".join(check.columns) or "batch"
        if check.check == "quarantine_rate":
            rate = records_quarantined / records_in if records_in else 0.0
            assert check.max_value is not None
            passed = rate <= check.max_value
            results.append(
                CheckResult(check.check, target, check.level, passed, None, records_in, f"{rate:.6f}")
            )
        elif check.check == "freshness":
            passed = bool(values[f"__p{i}"])
            results.append(
                CheckResult(check.check, target, check.level, passed, None, rows, values[f"__c{i}"])
            )
        else:
            failed = int(values[f"__c{i}"])
            results.append(CheckResult(check.check, target, check.level, failed == 0, failed, rows, None))
    return results
