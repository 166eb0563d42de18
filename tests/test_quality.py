"""Declarative quality checks: each kind counts exactly the failing rows, only among the checked rows."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from lakeml.config import CheckConfig
from lakeml.errors import ConfigError
from lakeml.quality.expectations import check_aggregates, check_results, validate_checks

CHECKS = (
    CheckConfig("not_null", "error", column="user"),
    CheckConfig("range", "error", column="amount", min_value=0, max_value=100),
    CheckConfig("accepted_values", "warn", column="kind", values=("a", "b")),
    CheckConfig("unique", "error", columns=("id", "day")),
    CheckConfig("freshness", "warn", column="ts", max_age_hours=24),
    CheckConfig("quarantine_rate", "error", max_value=0.25),
)


def test_each_check_counts_failing_rows_among_the_checked_ones(spark):
    rows = [
        # id, day, user, amount, kind, ts, checked
        (1, 1, "u1", 5.0, "a", dt.datetime(2026, 11, 20, 10), True),
        (1, 1, None, 500.0, "z", dt.datetime(2026, 11, 20, 11), True),  # dup key, null user, range, kind
        (2, 1, "u2", -1.0, None, dt.datetime(2026, 11, 18), True),  # range; NULL kind is not a failure
        (3, 1, None, 1e9, "zz", dt.datetime(2026, 11, 30), False),  # not checked: counts nowhere
        (1, 1, None, 1e9, "zz", dt.datetime(2026, 11, 30), False),
    ]
    df = spark.createDataFrame(
        rows, "id int, day int, user string, amount double, kind string, ts timestamp, checked boolean"
    )
    aggregates = check_aggregates(CHECKS, run_end=dt.datetime(2026, 11, 21), checked=F.col("checked"))
    values = df.agg(*[c.alias(n) for n, c in aggregates.items()]).first()
    results = {r.check: r for r in check_results(values, CHECKS, records_in=4, records_quarantined=1)}
    assert {
        k: (r.passed, r.failed_rows, r.rows_checked) for k, r in results.items() if r.failed_rows is not None
    } == {
        "not_null": (False, 1, 3),
        "range": (False, 2, 3),
        "accepted_values": (False, 1, 3),
        "unique": (False, 1, 3),
    }
    assert (results["freshness"].passed, results["freshness"].observed) == (True, "2026-11-20T11:00:00Z")
    assert (results["quarantine_rate"].passed, results["quarantine_rate"].observed) == (True, "0.250000")
    stale = check_aggregates(CHECKS, run_end=dt.datetime(2026, 11, 22, 12), checked=F.col("checked"))
    later = check_results(df.agg(*[c.alias(n) for n, c in stale.items()]).first(), CHECKS, 4, 2)
    assert [(r.check, r.passed) for r in later if r.check in ("freshness", "quarantine_rate")] == [
        ("freshness", False),
        ("quarantine_rate", False),
    ]


def test_a_check_without_its_parameters_or_on_an_unknown_column_is_a_config_error():
    with pytest.raises(ConfigError, match="silver.checks.t: check range needs min_value and/or max_value"):
        validate_checks("t", [CheckConfig("range", "error", column="a")], ["a"])
    with pytest.raises(ConfigError, match=r"check unique names unknown columns \['nope'\]"):
        validate_checks("t", [CheckConfig("unique", "error", columns=("a", "nope"))], ["a"])
    validate_checks("t", CHECKS, ["id", "day", "user", "amount", "kind", "ts"])
