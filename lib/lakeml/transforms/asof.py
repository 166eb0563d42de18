"""As-of joins without a range join: union both sides, then carry the nearest right row with a window.

Tie rule: a right row with the same time as a left row counts as happening *before* it, so the
backward join ("latest right row at or before") sees it and the forward join ("earliest right row
strictly after") does not. Right rows tied in time are ordered by their carried columns, so the
choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

Direction = Literal["backward", "forward"]
_SIDE = "_asof_side"  # 0 = right row, 1 = left row (right first at equal times)
_CARRIED = "_asof_right"


def asof_join(
    left: DataFrame,
    right: DataFrame,
    by: Sequence[str],
    time: str,
    columns: Sequence[str],
    direction: Direction = "backward",
) -> DataFrame:
    """Reads left and right rows keyed by ``by`` with a ``time`` column; adds ``columns`` of the latest
    right row at or before (backward) or the earliest strictly after (forward) each left row, NULL if none."""
    clash = [c for c in columns if c in left.columns]
    if clash:
        raise ValueError(f"as-of join: right columns {clash} already exist on the left side")
    if direction not in ("backward", "forward"):
        raise ValueError(f"as-of join: direction must be backward or forward, not '{direction}'")
    rights = right.select(*by, time, F.struct(*[F.col(c) for c in columns]).alias(_CARRIED))
    rights = rights.withColumn(_SIDE, F.lit(0))
    lefts = left.withColumn(_SIDE, F.lit(1)).withColumn(
        _CARRIED, F.lit(None).cast(rights.schema[_CARRIED].dataType)
    )
    both = lefts.unionByName(rights, allowMissingColumns=True)
    keys = [F.col(time), F.col(_SIDE), F.col(_CARRIED)]
    # Forward walks the same order backwards: a frame up to unboundedFollowing would make Spark
    # re-aggregate the rest of the partition for every row (quadratic per key).
    ordered = Window.partitionBy(*by).orderBy(
        *(keys if direction == "backward" else [k.desc() for k in keys])
    )
    nearest = F.last(_CARRIED, ignorenulls=True).over(
        ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    joined = both.withColumn(_CARRIED, nearest).where(F.col(_SIDE) == 1)
    return joined.select(*left.columns, *[F.col(f"{_CARRIED}.{c}").alias(c) for c in columns])
