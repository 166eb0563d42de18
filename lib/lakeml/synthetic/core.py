"""Shared core of the synthetic landing feeds (``lakeml generate``): windows, keyed draws, text formats, dirt,
file writing.

The feeds themselves are built in :mod:`lakeml.synthetic.banking`, ``commerce`` and ``maintenance``;
:mod:`lakeml.synthetic.landing` runs them all.

Layout (fixed; ingestion depends on it)::

    <landing>/<feed>/<feed>-<YYYY-MM-DD>-<nnnnn>.<ext>      ext: jsonl | csv

``YYYY-MM-DD`` is the UTC date the source *delivered* the file (not the event date: late events sit in
later files) and ``nnnnn`` numbers the files of that day. A file holds the lines delivered in one
time window of the day (``windows_per_day``), split into ``shards`` files at larger scales; its
lines are in delivery order, so events are slightly out of order by event time. CSV files always
start with a header line (a day without rows still gets a header-only file).

Determinism. No value comes from ``rand()``: every random draw is ``xxhash64(seed, salt, keys…)``
mapped to ``[0, 1)`` (:func:`uniform`), where the keys identify the entity or event by *absolute*
ids (Unix day number, index within the day, account, machine, …). Rows are built from
``spark.range`` and ``explode(sequence(…))`` with built-in column functions only, so the result does
not depend on partitioning, parallelism or the order tasks run in, and files are sorted by a unique
key before they are written. Same ``seed``, ``scale``, ``days`` and ``end_date`` give byte-identical
files. Because draws are keyed by absolute day, the content of the file for a day depends only on
``seed``, ``scale``, that day and the schema-change day (``start + days // 2``, see the domain
generators): overlapping windows agree on the files they share, except around the schema change.

Execution. While generating, whole-stage codegen is switched off for the session (and restored
afterwards): the generators' wide projections after an ``explode`` would otherwise compile into one
method too large for the JVM's JIT (see ``GENERATION_SQL_CONF``).

Writing. Each feed is one Spark job: lines are repartitioned by file name, sorted within the
partition, written with ``DataFrame.write.partitionBy("file_name").text`` into a hidden temporary
folder under the landing folder (``_tmp-generate-<uuid>``, ignored by Spark's file sources), then
each part file is renamed on the driver to its final name. A rename is atomic, so a concurrent
ingester never sees a half-written file; a rerun replaces files with identical bytes instead of
adding new ones. Line counts come from a Spark :class:`~pyspark.sql.Observation` on the written
DataFrame, not from reading files back.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from lakeml.errors import LakemlError, UsageError
from lakeml.session import jvm

FEEDS = ("clickstream", "transactions", "chargebacks", "telemetry", "maintenance")

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
UNIX_EPOCH = date(1970, 1, 1)
_TWO_POW_53 = float(2**53)


@dataclass(frozen=True)
class GenerateLimits:
    """Bounds on the arguments (the generators look back up to ~80 days before the window)."""

    max_scale: int = 10_000
    max_days: int = 3_660
    earliest_date: date = date(1971, 1, 1)
    latest_date: date = date(9999, 1, 1)
    seed_bits: int = 63


LIMITS = GenerateLimits()


# ----------------------------------------------------------------------------------------------
# the window every generator gets


@dataclass(frozen=True)
class Window:
    """What to generate: the delivery days ``start..end`` (inclusive) for one seed and scale.

    ``schema_change`` is the first event day on which the new source schemas are used
    (clickstream gains a field, telemetry renames one).
    """

    seed: int
    scale: int
    start: date
    end: date
    schema_change: date

    @property
    def first_day(self) -> int:
        """Unix day number (days since 1970-01-01) of the first delivery day."""
        return (self.start - UNIX_EPOCH).days

    @property
    def last_day(self) -> int:
        """Unix day number of the last delivery day."""
        return (self.end - UNIX_EPOCH).days

    @property
    def days(self) -> int:
        return self.last_day - self.first_day + 1

    @property
    def schema_change_day(self) -> int:
        return (self.schema_change - UNIX_EPOCH).days


def make_window(*, scale: int, days: int, seed: int, end_date: date) -> Window:
    """Validate the arguments of :func:`generate_landing` (UsageError names the bad one)."""
    for name, value in (("scale", scale), ("days", days), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{name} must be an integer, got {value!r}")
    if not 1 <= scale <= LIMITS.max_scale:
        raise UsageError(f"scale must be between 1 and {LIMITS.max_scale}, got {scale}")
    if not 1 <= days <= LIMITS.max_days:
        raise UsageError(f"days must be between 1 and {LIMITS.max_days}, got {days}")
    if not 0 <= seed < 2**LIMITS.seed_bits:
        raise UsageError(f"seed must be between 0 and 2**{LIMITS.seed_bits} - 1, got {seed}")
    if not isinstance(end_date, date):
        raise UsageError(f"end_date must be a date, got {end_date!r}")
    start = end_date - timedelta(days=days - 1)
    if start < LIMITS.earliest_date or end_date > LIMITS.latest_date:
        raise UsageError(
            f"the window {start}..{end_date} must lie between {LIMITS.earliest_date} and {LIMITS.latest_date}"
        )
    return Window(
        seed=seed, scale=scale, start=start, end=end_date, schema_change=start + timedelta(days=days // 2)
    )


# ----------------------------------------------------------------------------------------------
# SQL expression text
#
# Generators compose Spark SQL expression text (``Sql``) and turn each finished column into a
# Column with one ``F.expr`` call: building the same expressions call by call through the Column
# API costs tens of thousands of Py4J round trips per feed. Every helper below is a pure function
# from SQL text to SQL text; ``col`` quotes a column name.

Sql = str
_UNIT = 2.0**-53


def sql_lit(value: Any) -> Sql:
    """A SQL literal for a Python bool, int, float or str (str without quotes or backslashes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}L" if not -(2**31) <= value < 2**31 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no SQL literal for {value}")
        return format(value, ".17g").upper() + "D"
    if isinstance(value, str):
        if "'" in value or "\\" in value:
            raise ValueError(f"string literal may not contain quotes or backslashes: {value!r}")
        return f"'{value}'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def col(name: str) -> Sql:
    return f"`{name}`"


def with_sql(df: DataFrame, columns: Mapping[str, Sql]) -> DataFrame:
    """``df`` with the given columns added or replaced (each computed from ``df``'s columns)."""
    return df.withColumns({name: F.expr(text) for name, text in columns.items()})


def select_sql(df: DataFrame, columns: Mapping[str, Sql]) -> DataFrame:
    return df.select(*[F.expr(text).alias(name) for name, text in columns.items()])


def array_sql(values: Sequence[Any]) -> Sql:
    return f"array({', '.join(sql_lit(v) for v in values)})"


# ----------------------------------------------------------------------------------------------
# deterministic randomness: every draw is a hash of (seed, salt, keys)


def salt_id(salt: str) -> int:
    """A stable 63-bit number for a salt string (hashing a long is less work than hashing a string)."""
    return int.from_bytes(hashlib.blake2b(salt.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def unit_interval(h: Sql) -> Sql:
    """Map a 64-bit hash to a double in ``[0, 1)`` (its top 53 bits)."""
    return f"(shiftrightunsigned({h}, 11) * {sql_lit(_UNIT)})"


def row_key(seed: int, salt: str, *keys: Sql) -> Sql:
    """A 64-bit hash naming one entity or event; materialize it as a column and :func:`draw` from it."""
    return f"xxhash64({seed}L, {salt_id(salt)}L, {', '.join(keys)})"


def uniform(seed: int, salt: str, *keys: Sql) -> Sql:
    """Uniform double in ``[0, 1)`` from ``xxhash64(seed, salt, *keys)``: same inputs, same value,
    anywhere."""
    return unit_interval(row_key(seed, salt, *keys))


def draw(key: Sql, salt: str) -> Sql:
    """Uniform ``[0, 1)`` draw ``salt`` of the entity whose :func:`row_key` column is ``key``."""
    return unit_interval(f"xxhash64({key}, {salt_id(salt)}L)")


def draw_column(salt: str) -> str:
    """Name of the column :func:`with_draws` stores draw ``salt`` in."""
    return "u_" + re.sub(r"[^0-9a-zA-Z]+", "_", salt)


def with_draws(df: DataFrame, key: str, *salts: str) -> DataFrame:
    """Materialize uniform draws of row key column ``key`` as columns (see :func:`draw_column`).

    Use it for draws that feed a multi-way ``CASE``: Spark evaluates a draw written into every
    ``WHEN`` once per branch it tests, but a column only once.
    """
    return with_sql(df, {draw_column(salt): draw(key, salt) for salt in salts})


def box_muller(u1: Sql, u2: Sql) -> Sql:
    """A standard normal draw from two independent uniforms."""
    return f"(sqrt(-2.0D * ln(1.0D - {u1})) * cos({sql_lit(2.0 * math.pi)} * {u2}))"


def draw_normal(key: Sql, salt: str) -> Sql:
    """Standard normal draw ``salt`` of the entity with :func:`row_key` ``key``."""
    return box_muller(draw(key, salt + "/a"), draw(key, salt + "/b"))


def normal(seed: int, salt: str, *keys: Sql) -> Sql:
    return box_muller(uniform(seed, salt + "/a", *keys), uniform(seed, salt + "/b", *keys))


def _n(n: int | Sql) -> Sql:
    return sql_lit(n) if isinstance(n, int) else f"({n})"


def below(n: int | Sql, u: Sql) -> Sql:
    """Integer in ``[0, n)`` from a uniform ``u``."""
    return f"CAST(least(floor({u} * {_n(n)}), {_n(n)} - 1) AS BIGINT)"


def between(lo: float, hi: float, u: Sql) -> Sql:
    """Double in ``[lo, hi)`` from a uniform ``u``."""
    return f"({sql_lit(float(lo))} + {u} * {sql_lit(float(hi - lo))})"


def int_between(lo_hi: tuple[int, int], u: Sql) -> Sql:
    """Integer in ``[lo, hi]`` (both inclusive)."""
    lo, hi = lo_hi
    return f"({lo} + {below(hi - lo + 1, u)})"


def lookup(table: Sequence[Any], index: Sql) -> Sql:
    """``table[index]`` for a 0-based integer expression (the table is a literal array)."""
    return f"element_at({array_sql(table)}, CAST({index} AS INT) + 1)"


def choice(values: Sequence[Any], u: Sql) -> Sql:
    """One of ``values`` with equal probability."""
    return lookup(values, below(len(values), u))


def weighted_choice(weights: Mapping[Any, float], u: Sql) -> Sql:
    """A key of ``weights`` with probability proportional to its weight (CASE over cumulative weights)."""
    items = [(k, w) for k, w in weights.items() if w > 0]
    if not items:
        raise ValueError("weighted_choice needs at least one positive weight")
    total = sum(w for _, w in items)
    branches, cumulative = [], 0.0
    for key, weight in items[:-1]:
        cumulative += weight / total
        branches.append(f"WHEN {u} < {sql_lit(cumulative)} THEN {sql_lit(key)}")
    if not branches:
        return sql_lit(items[0][0])
    return f"CASE {' '.join(branches)} ELSE {sql_lit(items[-1][0])} END"


def zipf_index(u: Sql, n: int | Sql, exponent: float) -> Sql:
    """Index in ``[0, n)`` with probability ~ ``1 / (index + 1) ** exponent`` (continuous inverse CDF)."""
    if exponent == 1.0:
        raise ValueError("zipf_index needs an exponent other than 1.0")
    a = sql_lit(1.0 - exponent)
    inv = sql_lit(1.0 / (1.0 - exponent))
    x = f"pow((pow(CAST({_n(n)} AS DOUBLE) + 1.0D, {a}) - 1.0D) * {u} + 1.0D, {inv})"
    return f"CAST(least(greatest(floor({x}) - 1, 0), {_n(n)} - 1) AS BIGINT)"


def round_to(x: Sql, decimals: int) -> Sql:
    """``x`` rounded half up to ``decimals`` places in double arithmetic (much cheaper than ``round``,
    which goes through BigDecimal); the result prints as the short decimal, e.g. ``73.23``."""
    scale = sql_lit(float(10**decimals))
    return f"(floor(({x}) * {scale} + 0.5D) / {scale})"


def stochastic_count(expected: float, u: Sql) -> Sql:
    """``floor(expected + u)``: an integer whose mean over ``u`` is ``expected``."""
    return f"CAST(floor({sql_lit(float(expected))} + {u}) AS BIGINT)"


def hex_id(seed: int, salt: str, *keys: Sql) -> Sql:
    """16 lowercase hex digits from ``xxhash64(seed, salt, *keys)``."""
    return f"lower(lpad(hex({row_key(seed, salt, *keys)}), 16, '0'))"


def uuid_like(seed: int, salt: str, *keys: Sql) -> Sql:
    """A UUID-formatted (8-4-4-4-12) id from two hashes of ``keys``."""
    digits = f"concat({hex_id(seed, salt + '/hi', *keys)}, {hex_id(seed, salt + '/lo', *keys)})"
    return f"regexp_replace({digits}, '^(.{{8}})(.{{4}})(.{{4}})(.{{4}})(.{{12}})$', '$1-$2-$3-$4-$5')"


def coprime_stride(n: int, candidate: int = 1_000_003) -> int:
    """A stride coprime to ``n``: ``(i * stride) mod n`` is then a permutation of ``0..n-1``."""
    stride = candidate
    while math.gcd(stride, n) != 1:
        stride += 2
    return stride


def cumulative_offsets(counts: Sequence[int]) -> list[int]:
    """``[0, c0, c0+c1, …]``: start index of each block of a block-structured id space."""
    out = [0]
    for count in counts:
        out.append(out[-1] + count)
    return out


def block_of(index: Sql, offsets: Sequence[int]) -> Sql:
    """Which block ``index`` falls in, for the ``offsets`` of :func:`cumulative_offsets`."""
    branches = [f"WHEN {index} < {sql_lit(upper)} THEN {block}" for block, upper in enumerate(offsets[1:-1])]
    last = len(offsets) - 2
    return f"CASE {' '.join(branches)} ELSE {last} END" if branches else str(last)


# ----------------------------------------------------------------------------------------------
# time: microseconds since the Unix epoch (UTC), formatted without the session time zone


def idiv(a: Sql, b: int) -> Sql:
    """Floor division by a positive constant (exact for negative ``a`` too)."""
    return f"((({a}) - pmod({a}, {sql_lit(b)})) div {sql_lit(b)})"


def as_us(amount: Sql, unit_us: int) -> Sql:
    """``amount`` units of ``unit_us`` microseconds, as a long."""
    return f"(CAST({amount} AS BIGINT) * {unit_us}L)"


def day_of(us: Sql) -> Sql:
    """Unix day number of a UTC microsecond timestamp."""
    return idiv(us, DAY_US)


def date_text(day: Sql) -> Sql:
    """``YYYY-MM-DD`` for a Unix day number (independent of ``spark.sql.session.timeZone``)."""
    return f"CAST(date_from_unix_date(CAST({day} AS INT)) AS STRING)"


def weekday(day: Sql) -> Sql:
    """0 = Monday … 6 = Sunday for a Unix day number (1970-01-01 was a Thursday)."""
    return f"pmod({day} + 3, 7)"


def offset_text(offset_minutes: Sql) -> Sql:
    """``+05:30`` style UTC offset for a number of minutes."""
    o = offset_minutes
    return (f"format_string('%s%02d:%02d', CASE WHEN {o} < 0 THEN '-' ELSE '+' END, abs({o}) div 60, "
        f"abs({o}) % 60)")


def local_clock(us: Sql, pattern: str) -> Sql:
    """``us`` (µs since the epoch) as a wall clock in a ``date_format`` pattern (no quotes in it).

    Goes through TIMESTAMP_NTZ, so the result does not depend on ``spark.sql.session.timeZone``.
    """
    return (f"date_format(timestampadd(MICROSECOND, {us}, TIMESTAMP_NTZ '1970-01-01 00:00:00'), "
        f"{sql_lit(pattern)})")


def iso_timestamp(
    us: Sql, offset_minutes: Sql | int = 0, *, zulu: bool = False, fraction: Literal[0, 3] = 3
) -> Sql:
    """ISO-8601 text of a UTC instant in the given UTC offset, e.g. ``2026-11-20T14:03:07.123+01:00``.

    With ``zulu=True`` an offset of zero is written as ``Z``.
    """
    offset = sql_lit(offset_minutes) if isinstance(offset_minutes, int) else offset_minutes
    local = f"({us} + {as_us(offset, MINUTE_US)})"
    clock = "HH:mm:ss.SSS" if fraction == 3 else "HH:mm:ss"
    suffix = offset_text(offset)
    if zulu:
        suffix = f"CASE WHEN {offset} = 0 THEN 'Z' ELSE {suffix} END"
    return f"concat({local_clock(local, 'yyyy-MM-dd')}, 'T', {local_clock(local, clock)}, {suffix})"


def epoch_millis(us: Sql) -> Sql:
    return idiv(us, 1000)


# ----------------------------------------------------------------------------------------------
# line formatting and dirt


def csv_field(text: Sql) -> Sql:
    """A CSV field from a text column: null becomes empty; text with a comma or quote is quoted (RFC 4180)."""
    quoted = f"concat('\"', replace({text}, '\"', '\"\"'), '\"')"
    return (f"coalesce(CASE WHEN contains({text}, ',') OR contains({text}, '\"') THEN {quoted} ELSE {text} "
        "END, '')")


def with_csv_line(df: DataFrame, out: str, values: Sequence[Sql]) -> DataFrame:
    """Add column ``out``: the CSV line of ``values`` (each computed once, then quoted as needed)."""
    names = [f"_csv{i}" for i in range(len(values))]
    df = with_sql(df, {name: f"CAST({value} AS STRING)" for name, value in zip(names, values, strict=True)})
    return with_sql(df, {out: f"concat_ws(',', {', '.join(csv_field(n) for n in names)})"}).drop(*names)


def fixed(value: Sql, decimals: int) -> Sql:
    """Number as text with a fixed number of decimals (``%.{decimals}f``)."""
    return f"format_string('%.{decimals}f', {value})"


def truncated(line: Sql, u: Sql) -> Sql:
    """The first 20–80 % of ``line`` (a partly written record)."""
    return f"substring({line}, 1, CAST(greatest(floor(length({line}) * (0.2D + 0.6D * {u})), 1) AS INT))"


GARBAGE_TEMPLATES = (
    "<html><head><title>502 Bad Gateway</title></head><body>upstream error %s</body></html>",
    "\ufffd\ufffd\ufffd\ufffdPK\ufffd %s",
    "%s;;;;;;;;;;",
    "ERROR: connection reset by peer (request %s)",
)


def garbage(u: Sql, noise: Sql) -> Sql:
    """A line that is not a record at all (HTML error page, binary junk, …)."""
    variants = ", ".join(f"format_string({sql_lit(t)}, {noise})" for t in GARBAGE_TEMPLATES)
    return f"element_at(array({variants}), CAST({below(len(GARBAGE_TEMPLATES), u)} AS INT) + 1)"


def malformed(line: Sql, key: Sql, salt: str) -> Sql:
    """Half the time ``line`` truncated, else garbage; draws from the row key column ``key``."""
    return (
        f"CASE WHEN {draw(key, salt + '/kind')} < 0.5D THEN {truncated(line, draw(key, salt + '/cut'))} "
        f"ELSE {garbage(draw(key, salt + '/garbage'), f'lower(hex(xxhash64({key}, 7L)))')} END"
    )


@dataclass(frozen=True)
class DirtRates:
    """Shares of records hit by each kind of dirt; malformed, missing and wrong_type are exclusive."""

    malformed: float
    missing: float
    wrong_type: float
    duplicate: float

    def __post_init__(self) -> None:
        if self.malformed + self.missing + self.wrong_type > 0.5:
            raise ValueError("dirt rates must leave most records clean")


def dirt_kind(rates: DirtRates, u: Sql) -> Sql:
    """``malformed`` | ``missing`` | ``wrong_type`` | ``clean`` for a uniform ``u`` (exclusive bands)."""
    m = rates.malformed
    mm = m + rates.missing
    mmw = mm + rates.wrong_type
    return (
        f"CASE WHEN {u} < {sql_lit(m)} THEN 'malformed' WHEN {u} < {sql_lit(mm)} THEN 'missing' "
        f"WHEN {u} < {sql_lit(mmw)} THEN 'wrong_type' ELSE 'clean' END"
    )


def with_duplicates(lines: DataFrame, seed: int, salt: str, rate: float, delay_us: int) -> DataFrame:
    """Deliver a copy of ~``rate`` of the lines again ``delay_us`` later (same bytes, a later file).

    ``lines`` has ``delivered_us``, ``key`` and ``line``; the copy's key gets the suffix ``#dup``.
    One pass: each row explodes into one or two copies (a union would compute the input twice).
    """
    copies = (
        f"CASE WHEN {uniform(seed, salt, col('key'))} < {sql_lit(rate)} THEN array(0, 1) ELSE array(0) END"
    )
    exploded = lines.withColumn("_copy", F.explode(F.expr(copies)))
    return select_sql(
        exploded,
        {
            "delivered_us": f"delivered_us + _copy * {delay_us}L",
            "key": "CASE WHEN _copy = 0 THEN key ELSE concat(key, '#dup') END",
            "line": "line",
        },
    )


def partitions_for(spark: SparkSession, n_rows: int, rows_per_partition: int, min_rows: int = 2_000) -> int:
    """Input partitions for ``n_rows`` generator rows: all cores for big inputs, one for tiny ones.

    Rows are computed from their ids alone, so the partitioning never changes the data.
    """
    wanted = max(spark.sparkContext.defaultParallelism, math.ceil(n_rows / rows_per_partition))
    return max(1, min(wanted, math.ceil(n_rows / min_rows)))


def day_index_rows(
    spark: SparkSession, first_day: int, last_day: int, per_day: int, rows_per_partition: int
) -> DataFrame:
    """Rows ``(day, idx)`` for every ``idx < per_day`` on every day ``first_day..last_day``."""
    n_rows = max(0, last_day - first_day + 1) * per_day
    rows = spark.range(0, n_rows, numPartitions=partitions_for(spark, n_rows, rows_per_partition))
    return select_sql(
        rows, {"day": f"{sql_lit(first_day)} + id div {sql_lit(per_day)}", "idx": f"id % {sql_lit(per_day)}"}
    )


@dataclass(frozen=True)
class FeedLines:
    """A feed's landing lines before they are cut into files.

    ``lines`` has ``delivered_us`` (long, UTC µs when the source delivered the line), ``key``
    (string, unique per line: the sort tie-breaker) and ``line`` (string, the bytes without newline).
    Lines delivered outside the window are dropped by the writer.
    """

    feed: str
    ext: Literal["jsonl", "csv"]
    lines: DataFrame
    header: str | None = None
    windows_per_day: int = 1
    shards: int = 1

    def __post_init__(self) -> None:
        if DAY_US % self.windows_per_day:
            raise ValueError("windows_per_day must divide a day into whole microseconds")

    @property
    def files_per_day(self) -> int:
        return self.windows_per_day * self.shards


def shards_for(scale: int, scale_per_shard: int) -> int:
    """Files per delivery window: one more for every ``scale_per_shard`` of scale."""
    return max(1, math.ceil(scale / scale_per_shard))


@dataclass(frozen=True)
class FeedResult:
    feed: str
    lines: int
    files: int
    seconds: float


@dataclass(frozen=True)
class GenerateReport:
    """What :func:`run_generation` wrote: per-feed lines (excluding CSV headers), files and seconds."""

    landing_dir: str
    window: Window
    feeds: tuple[FeedResult, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    @property
    def lines(self) -> dict[str, int]:
        return {r.feed: r.lines for r in self.feeds}

    @property
    def files(self) -> dict[str, int]:
        return {r.feed: r.files for r in self.feeds}


def file_name_sql(feed: FeedLines, delivered_us: Sql, key: Sql) -> Sql:
    window_us = DAY_US // feed.windows_per_day
    slot = f"(pmod({delivered_us}, {DAY_US}L) div {sql_lit(window_us)})"
    shard = f"pmod(xxhash64({key}), {feed.shards})" if feed.shards > 1 else "0"
    number = f"{slot} * {feed.shards} + {shard}"
    return f"format_string('{feed.feed}-%s-%05d.{feed.ext}', {date_text(day_of(delivered_us))}, {number})"


def header_lines(spark: SparkSession, feed: FeedLines, window: Window) -> DataFrame:
    """One header row for every file of every day in the window (sorted before all data lines)."""
    per_day = feed.files_per_day
    rows = spark.range(0, window.days * per_day, numPartitions=1)
    day = f"({window.first_day} + id div {per_day})"
    return select_sql(
        rows,
        {
            "file_name": f"format_string('{feed.feed}-%s-%05d.{feed.ext}', {date_text(day)}, id % {per_day})",
            "_order": f"{-(2**62)}L",
            "_key": "''",
            "line": sql_lit(feed.header),
            "_header": "true",
        },
    )


def file_rows(spark: SparkSession, feed: FeedLines, window: Window) -> DataFrame:
    """``file_name``, sort keys and ``line`` of every line delivered in the window (+ CSV headers)."""
    day = day_of("delivered_us")
    data = feed.lines.filter(F.expr(f"{day} BETWEEN {window.first_day} AND {window.last_day}"))
    data = select_sql(
        data,
        {
            "file_name": file_name_sql(feed, "delivered_us", "key"),
            "_order": "delivered_us",
            "_key": "key",
            "line": "line",
            "_header": "false",
        },
    )
    if feed.header is not None:
        data = data.unionByName(header_lines(spark, feed, window))
    return data


def write_feed(
    spark: SparkSession, feed: FeedLines, window: Window, landing_dir: str, tmp_root: str
) -> FeedResult:
    """Write one feed's files: Spark writes them into ``tmp_root``, the driver renames them into place."""
    started = time.perf_counter()
    files = files_for(spark, landing_dir)
    observation = Observation(f"generate_{feed.feed}_{uuid.uuid4().hex[:8]}")
    rows = file_rows(spark, feed, window).observe(
        observation,
        F.count(F.when(~F.col("_header"), F.lit(1))).alias("lines"),
        F.count(F.when(F.col("_header"), F.lit(1))).alias("headers"),
    )
    expected_files = window.days * feed.files_per_day
    partitions = max(1, min(expected_files, spark.sparkContext.defaultParallelism * 8))
    tmp = f"{tmp_root}/{feed.feed}"
    (
        rows.repartition(partitions, "file_name")
        .sortWithinPartitions("file_name", "_order", "_key")
        .select("file_name", "line")
        .write.partitionBy("file_name")
        .option("maxRecordsPerFile", 0)  # one part file per landing file, whatever the session says
        .option("lineSep", "\n")
        .text(tmp)
    )
    counts = observation.get
    target_dir = f"{landing_dir.rstrip('/')}/{feed.feed}"
    files.makedirs(target_dir)
    moved = 0
    for name, part in files.written_parts(tmp):
        files.replace(part, f"{target_dir}/{name}")
        moved += 1
    return FeedResult(feed.feed, int(counts["lines"]), moved, round(time.perf_counter() - started, 3))


# ----------------------------------------------------------------------------------------------
# filesystem: local paths through os, anything else (hdfs://, s3a://) through Hadoop's FileSystem

_PARTITION_DIR = re.compile(r"^file_name=(.+)$")


class _LocalFiles:
    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def written_parts(self, tmp: str) -> list[tuple[str, str]]:
        out = []
        for entry in sorted(os.listdir(tmp)):
            m = _PARTITION_DIR.match(entry)
            if not m:
                continue
            parts = sorted(p for p in os.listdir(os.path.join(tmp, entry)) if p.startswith("part-"))
            out.append((m.group(1), _single_part(entry, [os.path.join(tmp, entry, p) for p in parts])))
        return out

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)  # atomic on POSIX; overwrites an older copy of the same file

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)


class _HadoopFiles:
    def __init__(self, spark: SparkSession) -> None:
        self._jvm = jvm(spark)
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, path: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def _fs(self, path: str) -> Any:
        return self._path(path).getFileSystem(self._conf)

    def makedirs(self, path: str) -> None:
        self._fs(path).mkdirs(self._path(path))

    def written_parts(self, tmp: str) -> list[tuple[str, str]]:
        fs = self._fs(tmp)
        out = []
        for status in fs.listStatus(self._path(tmp)):
            entry = status.getPath().getName()
            m = _PARTITION_DIR.match(entry)
            if not m or not status.isDirectory():
                continue
            parts = sorted(
                s.getPath().toString()
                for s in fs.listStatus(status.getPath())
                if s.getPath().getName().startswith("part-")
            )
            out.append((m.group(1), _single_part(entry, parts)))
        return sorted(out)

    def replace(self, src: str, dst: str) -> None:
        fs = self._fs(dst)
        target = self._path(dst)
        if fs.exists(target):
            fs.delete(target, False)
        if not fs.rename(self._path(src), target):
            raise LakemlError(f"could not rename {src} to {dst}")

    def remove_tree(self, path: str) -> None:
        fs = self._fs(path)
        if fs.exists(self._path(path)):
            fs.delete(self._path(path), True)


def _single_part(entry: str, parts: list[str]) -> str:
    if len(parts) != 1:
        raise LakemlError(f"expected one part file for {entry}, found {len(parts)}")
    return parts[0]


def is_local(path: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", path) is None or path.startswith("file:")


def local_path(path: str) -> str:
    if path.startswith("file://"):
        return path[len("file://") :]
    if path.startswith("file:"):
        return path[len("file:") :]
    return path


def files_for(spark: SparkSession, landing_dir: str) -> _LocalFiles | _HadoopFiles:
    return _LocalFiles() if is_local(landing_dir) else _HadoopFiles(spark)


# ----------------------------------------------------------------------------------------------
# entry points

FeedBuilder = Callable[[SparkSession, Window], FeedLines]

# Whole-stage codegen fuses everything after an ``explode`` into one consume method; with the
# generators' wide projections it far exceeds HotSpot's 8000-byte JIT limit and runs interpreted
# (measured at scale 10: 2-3x slower). Per-operator codegen splits expressions into small methods.
GENERATION_SQL_CONF = {"spark.sql.codegen.wholeStage": "false"}


