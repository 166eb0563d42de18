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


def with_rolling_stats(
    df: DataFrame,
    columns: Sequence[str],
    partition_by: Sequence[str],
    order_by: Sequence[str],
    windows: Mapping[str, int],
    stats: Sequence[str] = ROLLING_STATS,
) -> DataFrame:
    """Reads ``columns`` per ``partition_by`` in ``order_by`` order; adds ``<column>_<window>_<stat>`` for each window (name -> rows)."""
    position = "_rolling_position"
    numbered = df.withColumn(
        position, F.row_number().over(Window.partitionBy(*partition_by).orderBy(*order_by))
    )
    specs = {name: row_window(partition_by, order_by, rows) for name, rows in windows.items()}
    return numbered.select(
        *df.columns,
        *[
            rolling_stat(stat, F.col(c), F.col(position), spec).alias(f"{c}_{name}_{stat}")
            for c in columns
            for name, spec in specs.items()
            for stat in stats
        ],
    )
