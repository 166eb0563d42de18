"""Rolling statistics over row windows per entity: the last N rows ending at the current row.

Rows are ordered by ``order_by`` (e.g. ``ts`` then a tiebreaker), so the frame is deterministic when
those columns are unique per entity. Nulls are ignored: mean, std, min and max are over the non-null
values in the frame and the slope is the least-squares slope of the non-null values against the row
position (per row, so gaps in time do not stretch it). A statistic with too few values is NULL (std
and slope need two).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import DataFrame

from lakeml.sqltext import sql_identifier as quoted

ROLLING_STATS = ("mean", "std", "min", "max", "slope")


# Statistics computed from running sums (one pass per partition); min and max come from spans.
_FROM_SUMS = ("mean", "std", "slope")

# The expressions are SQL text applied with one ``selectExpr`` per pass: building ~1,000 window
# Columns one by one costs tens of thousands of Py4J round trips (about 10 s of driver time per
# run for the maintenance features), the same text costs one call.


def _frame_sums(c: str, position: str) -> dict[str, str]:
    """Per-row terms (SQL) whose sums over a frame give count, mean, sample std and slope of ``c``."""
    v, pos = quoted(c), f"CAST({quoted(position)} AS DOUBLE)"
    present = f"{v} IS NOT NULL"
    return {
        "n": f"CAST({present} AS BIGINT)",
        "s1": f"coalesce({v}, 0D)",
        "s2": f"coalesce({v} * {v}, 0D)",
        "p1": f"CASE WHEN {present} THEN {pos} ELSE 0D END",
        "p2": f"CASE WHEN {present} THEN {pos} * {pos} ELSE 0D END",
        "px": f"coalesce({pos} * {v}, 0D)",
    }


def _stat_from_sums(stat: str, d: Mapping[str, str]) -> str:
    """mean, sample std or least-squares slope (SQL) from a frame's sums ``d`` (NULL with too few values).

    Every division sits inside a CASE that rules out a zero count (ANSI mode raises on x / 0).
    """
    n, s1, s2, p1, p2, px = (d[k] for k in ("n", "s1", "s2", "p1", "p2", "px"))
    if stat == "mean":
        return f"CASE WHEN {n} > 0 THEN {s1} / {n} END"
    if stat == "std":
        return f"CASE WHEN {n} > 1 THEN sqrt(greatest(({s2} - {s1} * {s1} / {n}) / ({n} - 1), 0D)) END"
    var_x = f"({p2} / {n} - ({p1} / {n}) * ({p1} / {n}))"
    cov = f"({px} / {n} - ({p1} / {n}) * ({s1} / {n}))"
    return f"CASE WHEN {n} > 1 THEN CASE WHEN {var_x} > 0 THEN {cov} / {var_x} END END"


_EXTREMES = {"min": "least", "max": "greatest"}  # both skip NULLs: NULL only when every value is
_MAX_SPAN_BASE = 16  # lags per column and pass, at most; more passes beyond that


def span_plan(windows: Mapping[str, int]) -> tuple[int, dict[str, tuple[int, list[int]]]]:
    """How min and max are built from spans of ``base**j`` rows: (base, {window: (level, offsets)}).

    A window of ``rows`` is the extreme of the level-``j`` spans (the largest ``base**j <= rows``)
    ending ``offsets`` rows before the current row; together they cover exactly the last ``rows``
    rows (overlaps are harmless for min and max). The base is the smallest that reaches the longest
    window in ``levels`` passes of at most ``_MAX_SPAN_BASE`` lags each.
    """
    longest = max(windows.values())
    levels = 1
    while _MAX_SPAN_BASE**levels < longest:
        levels += 1
    base = 2
    while base**levels < longest:
        base += 1
    plan = {}
    for name, rows in windows.items():
        level = 0
        while level < levels and base ** (level + 1) <= rows:
            level += 1
        span = base**level
        offsets = [i * span for i in range(-(-rows // span) - 1)] + [rows - span]
        plan[name] = (level, offsets)
    return base, plan


def _span(c: str, stat: str, level: int) -> str:
    """The column holding ``stat`` of ``c`` over the last base^level rows (level 0 is the value itself)."""
    return c if level == 0 else f"_span_{c}_{stat}_{level}"


def _extreme_of_lags(c: str, stat: str, level: int, offsets: Sequence[int], over: str) -> str:
    """``stat`` (SQL) over the level's spans ending ``offsets`` rows back (lags past the partition start
    are NULL)."""
    column = quoted(_span(c, stat, level))
    spans = [column if k == 0 else f"lag({column}, {k}) {over}" for k in offsets]
    return spans[0] if len(spans) == 1 else f"{_EXTREMES[stat]}({', '.join(spans)})"


def with_rolling_stats(
    df: DataFrame,
    columns: Sequence[str],
    partition_by: Sequence[str],
    order_by: Sequence[str],
    windows: Mapping[str, int],
    stats: Sequence[str] = ROLLING_STATS,
) -> DataFrame:
    """Reads ``columns`` per ``partition_by`` in ``order_by`` order; adds ``<column>_<window>_<stat>`` for
    each window (name -> rows).

    Spark's own sliding frame re-aggregates all ``rows`` rows for every row, so neither path uses it:

    - mean, std and slope come from running sums minus the running sums ``rows`` rows earlier: O(1)
      per row whatever the window length;
    - min and max come from spans (``span_plan``): pass j takes the extreme of ``base`` lagged
      level-(j-1) spans, and a window the extreme of at most ``base`` lagged spans of its level.

    Every pass is a window over the same partitioning and order (no re-sort, no shuffle), and the
    running sums and the spans share passes: the default 6- and 144-row windows take three window
    passes, the row numbering included.
    """
    if not windows:
        raise ValueError("with_rolling_stats needs at least one window")
    for name, rows in windows.items():
        if rows < 1:
            raise ValueError(f"rolling window '{name}' needs at least one row, not {rows}")
    for stat in stats:
        if stat not in ROLLING_STATS:
            raise ValueError(f"unknown rolling statistic '{stat}' (one of {', '.join(ROLLING_STATS)})")
    over = (
        f"OVER (PARTITION BY {', '.join(map(quoted, partition_by))} "
        f"ORDER BY {', '.join(map(quoted, order_by))}"
    )
    ordered, running = over + ")", over + " ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    position = "_rolling_position"
    numbered = df.selectExpr(*map(quoted, df.columns), f"row_number() {ordered} AS {quoted(position)}")
    sums = {c: _frame_sums(c, position) for c in columns} if any(s in _FROM_SUMS for s in stats) else {}
    extremes = [s for s in stats if s in _EXTREMES]
    base, plan = span_plan(windows)
    top = max(level for level, _ in plan.values()) if extremes else 0

    # Pass 1: running sums, and level-1 spans; pass 2: frame sums (running sum minus the one
    # ``rows`` rows earlier), and level 2; ... A window's extremes come in the pass after its level.
    out, kept = numbered, list(numbered.columns)
    for step in range(1, max(2 if sums else 0, top + 1 if extremes else 0) + 1):
        added: list[tuple[str, str]] = []
        if step == 1:
            added += [
                (f"_cum_{c}_{k}", f"sum({term}) {running}")
                for c, terms in sums.items()
                for k, term in terms.items()
            ]
        if step == 2:
            added += [
                (
                    f"_frame_{c}_{name}_{k}",
                    f"{quoted(f'_cum_{c}_{k}')} - coalesce(lag({quoted(f'_cum_{c}_{k}')}, {rows}) {ordered}, "
                    "0)",
                )
                for c, terms in sums.items()
                for name, rows in windows.items()
                for k in terms
            ]
        if step <= top:
            offsets = [i * base ** (step - 1) for i in range(base)]
            added += [
                (_span(c, s, step), _extreme_of_lags(c, s, step - 1, offsets, ordered))
                for c in columns
                for s in extremes
            ]
        added += [
            (f"_ext_{c}_{name}_{s}", _extreme_of_lags(c, s, level, offsets, ordered))
            for name, (level, offsets) in plan.items()
            if level == step - 1
            for c in columns
            for s in extremes
        ]
        # Carry only what later passes read: the previous level's spans (and, after pass 2, the
        # running sums) are done with.
        out = out.selectExpr(*map(quoted, kept), *[f"{sql} AS {quoted(name)}" for name, sql in added])
        done = {_span(c, s, step - 1) for c in columns for s in extremes} if step > 1 else set()
        if step == 2:
            done |= {f"_cum_{c}_{k}" for c, terms in sums.items() for k in terms}
        kept = [c for c in out.columns if c not in done]

    result = []
    for c in columns:
        for name in windows:
            d = {k: quoted(f"_frame_{c}_{name}_{k}") for k in sums.get(c, {})}
            for stat in stats:
                value = _stat_from_sums(stat, d) if stat in _FROM_SUMS else quoted(f"_ext_{c}_{name}_{stat}")
                result.append(f"{value} AS {quoted(f'{c}_{name}_{stat}')}")
    return out.selectExpr(*map(quoted, df.columns), *result)
