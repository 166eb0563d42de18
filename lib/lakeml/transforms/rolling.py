"""Rolling statistics over row windows per entity: the last N rows ending at the current row.

Rows are ordered by ``order_by`` (e.g. ``ts`` then a tiebreaker), so the frame is deterministic when
those columns are unique per entity. Nulls are ignored: mean, std, min and max are over the non-null
values in the frame and the slope is the least-squares slope of the non-null values against the row
position (per row, so gaps in time do not stretch it). A statistic with too few values is NULL (std
and slope need two).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

ROLLING_STATS = ("mean", "std", "min", "max", "slope")


# Statistics computed from running sums (one pass per partition); min and max come from spans.
_FROM_SUMS = ("mean", "std", "slope")


def _frame_sums(c: str, position: str) -> dict[str, Column]:
    """Per-row terms whose sums over a frame give count, mean, sample std and slope of ``c``."""
    v, present = F.col(c), F.col(c).isNotNull()
    pos = F.col(position).cast("double")
    return {
        "n": present.cast("long"),
        "s1": F.coalesce(v, F.lit(0.0)),
        "s2": F.coalesce(v * v, F.lit(0.0)),
        "p1": F.when(present, pos).otherwise(0.0),
        "p2": F.when(present, pos * pos).otherwise(0.0),
        "px": F.coalesce(pos * v, F.lit(0.0)),
    }


def _stat_from_sums(stat: str, d: Mapping[str, Column]) -> Column:
    """mean, sample std or least-squares slope from a frame's sums ``d`` (NULL with too few values).

    Every division sits inside a CASE that rules out a zero count (ANSI mode raises on x / 0).
    """
    n = d["n"]
    if stat == "mean":
        return F.when(n > 0, d["s1"] / n)
    if stat == "std":
        return F.when(n > 1, F.sqrt(F.greatest((d["s2"] - d["s1"] * d["s1"] / n) / (n - 1), F.lit(0.0))))
    var_x = d["p2"] / n - (d["p1"] / n) * (d["p1"] / n)
    cov = d["px"] / n - (d["p1"] / n) * (d["s1"] / n)
    return F.when(n > 1, F.when(var_x > 0, cov / var_x))


_EXTREMES = {"min": F.least, "max": F.greatest}  # both skip NULLs: NULL only when every value is
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


def _extreme_of_lags(c: str, stat: str, level: int, offsets: Sequence[int], ordered: WindowSpec) -> Column:
    """``stat`` over the level's spans ending ``offsets`` rows back (lags past the partition start are NULL)."""
    spans = [
        F.col(_span(c, stat, level)) if k == 0 else F.lag(_span(c, stat, level), k).over(ordered)
        for k in offsets
    ]
    return spans[0] if len(spans) == 1 else _EXTREMES[stat](*spans)


def with_rolling_stats(
    df: DataFrame,
    columns: Sequence[str],
    partition_by: Sequence[str],
    order_by: Sequence[str],
    windows: Mapping[str, int],
    stats: Sequence[str] = ROLLING_STATS,
) -> DataFrame:
    """Reads ``columns`` per ``partition_by`` in ``order_by`` order; adds ``<column>_<window>_<stat>`` for each window (name -> rows).

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
    ordered = Window.partitionBy(*partition_by).orderBy(*order_by)
    running = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    position = "_rolling_position"
    numbered = df.withColumn(position, F.row_number().over(ordered))
    sums = {c: _frame_sums(c, position) for c in columns} if any(s in _FROM_SUMS for s in stats) else {}
    extremes = [s for s in stats if s in _EXTREMES]
    base, plan = span_plan(windows)
    top = max(level for level, _ in plan.values()) if extremes else 0

    # Pass 1: running sums, and level-1 spans; pass 2: frame sums (running sum minus the one
    # ``rows`` rows earlier), and level 2; ... A window's extremes come in the pass after its level.
    out, kept = numbered, list(numbered.columns)
    for step in range(1, max(2 if sums else 0, top + 1 if extremes else 0) + 1):
        added: list[Column] = []
        if step == 1:
            cum = [(f"_cum_{c}_{k}", term) for c, terms in sums.items() for k, term in terms.items()]
            added += [F.sum(term).over(running).alias(name) for name, term in cum]
        if step == 2:
            added += [
                (
                    F.col(f"_cum_{c}_{k}") - F.coalesce(F.lag(f"_cum_{c}_{k}", rows).over(ordered), F.lit(0))
                ).alias(f"_frame_{c}_{name}_{k}")
                for c, terms in sums.items()
                for name, rows in windows.items()
                for k in terms
            ]
        if step <= top:
            offsets = [i * base ** (step - 1) for i in range(base)]
            added += [
                _extreme_of_lags(c, s, step - 1, offsets, ordered).alias(_span(c, s, step))
                for c in columns
                for s in extremes
            ]
        added += [
            _extreme_of_lags(c, s, level, offsets, ordered).alias(f"_ext_{c}_{name}_{s}")
            for name, (level, offsets) in plan.items()
            if level == step - 1
            for c in columns
            for s in extremes
        ]
        # Carry only what later passes read: the previous level's spans (and, after pass 2, the
        # running sums) are done with.
        out = out.select(*[F.col(c) for c in kept], *added)
        done = {_span(c, s, step - 1) for c in columns for s in extremes} if step > 1 else set()
        if step == 2:
            done |= {f"_cum_{c}_{k}" for c, terms in sums.items() for k in terms}
        kept = [c for c in out.columns if c not in done]

    result = []
    for c in columns:
        for name in windows:
            d = {k: F.col(f"_frame_{c}_{name}_{k}") for k in sums.get(c, {})}
            for stat in stats:
                value = _stat_from_sums(stat, d) if stat in _FROM_SUMS else F.col(f"_ext_{c}_{name}_{stat}")
                result.append(value.alias(f"{c}_{name}_{stat}"))
    return out.select(*df.columns, *result)
