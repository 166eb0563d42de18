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


def row_window(partition_by: Sequence[str], order_by: Sequence[str], rows: int) -> WindowSpec:
    """The last ``rows`` rows of each partition in ``order_by`` order, ending at the current row."""
    if rows < 1:
        raise ValueError(f"a rolling window needs at least one row, not {rows}")
    return Window.partitionBy(*partition_by).orderBy(*order_by).rowsBetween(-(rows - 1), Window.currentRow)


def rolling_slope(value: Column, position: Column, window: WindowSpec) -> Column:
    """Least-squares slope of ``value`` against ``position`` over ``window`` (non-null values only)."""
    x = F.when(value.isNotNull(), position.cast("double"))
    var_x = F.var_pop(x).over(window)
    return F.when(var_x > 0, F.covar_pop(x, value).over(window) / var_x)


def rolling_stat(stat: str, value: Column, position: Column, window: WindowSpec) -> Column:
    """One of ``ROLLING_STATS`` of ``value`` over ``window`` (``position`` is only used by slope)."""
    if stat == "mean":
        return F.avg(value).over(window)
    if stat == "std":
        return F.stddev_samp(value).over(window)
    if stat == "min":
        return F.min(value).over(window)
    if stat == "max":
        return F.max(value).over(window)
    if stat == "slope":
        return rolling_slope(value, position, window)
    raise ValueError(f"unknown rolling statistic '{stat}' (one of {', '.join(ROLLING_STATS)})")


# Statistics computed from running sums (one pass per partition); min and max need the sliding frame.
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


def with_rolling_stats(
    df: DataFrame,
    columns: Sequence[str],
    partition_by: Sequence[str],
    order_by: Sequence[str],
    windows: Mapping[str, int],
    stats: Sequence[str] = ROLLING_STATS,
) -> DataFrame:
    """Reads ``columns`` per ``partition_by`` in ``order_by`` order; adds ``<column>_<window>_<stat>`` for each window (name -> rows).

    mean, std and slope come from running sums minus the running sums ``rows`` rows earlier, so each
    costs O(1) per row whatever the window length (Spark re-aggregates a sliding frame row by row);
    min and max use the sliding frame.
    """
    for stat in stats:
        if stat not in ROLLING_STATS:
            raise ValueError(f"unknown rolling statistic '{stat}' (one of {', '.join(ROLLING_STATS)})")
    ordered = Window.partitionBy(*partition_by).orderBy(*order_by)
    running = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    position = "_rolling_position"
    numbered = df.withColumn(position, F.row_number().over(ordered))
    summed_stats = [s for s in stats if s in _FROM_SUMS]
    sums = {c: _frame_sums(c, position) for c in columns} if summed_stats else {}
    prefixed = numbered.select(
        "*",
        *[
            F.sum(term).over(running).alias(f"_cum_{c}_{k}")
            for c, terms in sums.items()
            for k, term in terms.items()
        ],
    )

    # Each frame sum once, as a column: running sum minus the running sum ``rows`` rows earlier.
    framed = prefixed.select(
        "*",
        *[
            (F.col(f"_cum_{c}_{k}") - F.coalesce(F.lag(f"_cum_{c}_{k}", rows).over(ordered), F.lit(0))).alias(
                f"_frame_{c}_{name}_{k}"
            )
            for c, terms in sums.items()
            for name, rows in windows.items()
            for k in terms
        ],
    )
    specs = {name: row_window(partition_by, order_by, rows) for name, rows in windows.items()}
    out = []
    for c in columns:
        for name, spec in specs.items():
            d = {k: F.col(f"_frame_{c}_{name}_{k}") for k in sums.get(c, {})}
            for stat in stats:
                value = (
                    _stat_from_sums(stat, d)
                    if stat in _FROM_SUMS
                    else rolling_stat(stat, F.col(c), F.col(position), spec)
                )
                out.append(value.alias(f"{c}_{name}_{stat}"))
    return framed.select(*df.columns, *out)
