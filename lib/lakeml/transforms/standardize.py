"""Column builders that parse raw text fields into standard types (UTC timestamps, decimals, codes).

Each returns NULL for a value it cannot parse, so callers can tell a missing field (raw NULL) from a
malformed one (raw not NULL, parsed NULL) and quarantine with the right reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

# ISO-8601 with an explicit zone: a timestamp without one is ambiguous, so it is not guessed.
ISO_TIMESTAMP_WITH_ZONE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
DECIMAL_TEXT = r"^-?\d+([.,]\d+)?([eE][+-]?\d+)?$"  # JSON writers may use exponents (1.0E12)
BYTE_ORDER_MARK = "\ufeff"


def strip_bom(text: Column) -> Column:
    """The text without a leading UTF-8 byte-order mark (some exporters write one per file)."""
    # A prefix test, not a regex replace: this runs on every raw line.
    return F.when(text.startswith(BYTE_ORDER_MARK), F.substring(text, 2, 1 << 30)).otherwise(text)


def is_blank(text: Column) -> Column:
    """True for NULL or whitespace-only text (spaces, tabs, vertical tabs, form feeds)."""
    return F.coalesce(F.trim(text, F.lit(" \t\u000b\f")) == "", F.lit(True))


def parse_utc_timestamp(text: Column) -> Column:
    """ISO-8601 text with ``Z`` or ``±hh:mm`` as a UTC timestamp; NULL for anything else."""
    return F.when(text.rlike(ISO_TIMESTAMP_WITH_ZONE), text.try_cast("timestamp"))


def utc_offset_minutes(text: Column) -> Column:
    """The zone offset of ISO-8601 text in minutes east of UTC (``Z`` = 0); NULL without one."""
    # Fixed positions from the end (``±hh:mm``), not a regex: Spark evaluates a CASE branch's
    # expressions separately, and this runs on every event.
    sign, colon = F.substring(text, -6, 1), F.substring(text, -3, 1)
    minutes = F.substring(text, -5, 2).try_cast("int") * 60 + F.substring(text, -2, 2).try_cast("int")
    zoned = colon == ":"
    return (
        F.when(text.endswith("Z"), F.lit(0))
        .when(zoned & (sign == "+"), minutes)
        .when(zoned & (sign == "-"), -minutes)
    )


def parse_decimal(text: Column, precision: int, scale: int) -> Column:
    """Decimal text (``12.50``, or ``12,50`` with a decimal comma) as DECIMAL(precision, scale); NULL if
    not."""
    trimmed = F.trim(text)
    return F.when(
        trimmed.rlike(DECIMAL_TEXT),
        F.regexp_replace(trimmed, ",", ".").try_cast(f"decimal({precision},{scale})"),
    )


def parse_finite_double(text: Column) -> Column:
    """Numeric text as a double; NULL for non-numbers, NaN and ±Infinity."""
    value = F.trim(text).try_cast("double")
    return F.when(~F.isnan(value) & (F.abs(value) != F.lit(float("inf"))), value)


def parse_int(text: Column) -> Column:
    """Integer text as an int; NULL otherwise (``3.0`` and ``3e2`` are not integers)."""
    trimmed = F.trim(text)
    return F.when(trimmed.rlike(r"^-?\d{1,10}$"), trimmed.try_cast("int"))


def parse_boolean(text: Column) -> Column:
    """``true``/``false`` (any case) as a boolean; NULL otherwise."""
    lowered = F.lower(F.trim(text))
    return F.when(lowered == "true", F.lit(True)).when(lowered == "false", F.lit(False))


def normalize_code(text: Column, upper: bool = False) -> Column:
    """A code trimmed and lower-cased (upper-cased with ``upper=True``), e.g. ``Repair`` → ``repair``."""
    trimmed = F.trim(text)
    return F.upper(trimmed) if upper else F.lower(trimmed)


def first_reject_reason(rules: Sequence[tuple[Column, str | Column]]) -> Column:
    """The reason of the first rule whose condition holds (NULL conditions count as false); NULL if none."""
    return F.coalesce(
        *[
            F.when(
                F.coalesce(condition, F.lit(False)), reason if isinstance(reason, Column) else F.lit(reason)
            )
            for condition, reason in rules
        ]
    )
