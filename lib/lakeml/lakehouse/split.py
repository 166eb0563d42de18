"""``write_split``: one pass over a DataFrame writes rows into several tables, committed one by one."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.errors import TableError
from lakeml.lakehouse.engines import CommitOutcome, StagedWrite, Txn
from lakeml.lakehouse.schema import plan_write
from lakeml.lakehouse.table import DeltaTableRef, _check_txn

# The column of the split DataFrame that names each row's target.
_ROUTE = "__route"

class StagedAppend:
    """Rows ``write_split`` wrote for one table, not yet part of it: ``commit`` or ``discard`` them."""

    def __init__(
        self,
        table: DeltaTableRef,
        rows: int,
        commit: Callable[[Txn | None], CommitOutcome],
        discard: Callable[[], None],
    ) -> None:
        self.table, self.rows = table, rows
        self._commit, self._discard = commit, discard
        self.done = False

    def commit(self, txn: Txn | None = None) -> CommitOutcome:
        """Append the staged rows; with ``txn`` as for append (a repeat leaves the table unchanged)."""
        _check_txn(txn)
        if self.done:
            raise TableError(f"staged rows for {self.table.uri} were already committed or discarded")
        self.done = True
        return self.table._committing(lambda: self._commit(txn))

    def discard(self) -> None:
        """Drop the staged rows (no-op once committed or discarded)."""
        if not self.done:
            self.done = True
            self._discard()


def write_split(
    df: DataFrame, route: Column, targets: Mapping[str, tuple[DeltaTableRef, Sequence[Column | str]]]
) -> dict[str, StagedAppend]:
    """Write ``df`` into several tables in one pass over it; nothing is committed yet.

    ``route`` names each row's target (a row naming none is not written); ``targets`` maps a name to
    its table and the columns that give the table's columns, in table order. Observations on ``df``
    are complete when this returns. On the delta-rs engine, tasks write every table's files at once;
    on delta-spark, ``df`` is cached once and each commit is a native append of its share.
    """
    if not targets:
        raise TableError("write_split needs at least one target")
    engines = {ref.engine_name for ref, _ in targets.values()}
    if len(engines) != 1:
        raise TableError(f"write_split targets must share one engine, got {sorted(engines)}")
    routed = [route.cast("string").alias(_ROUTE)]
    for name, (ref, columns) in targets.items():
        schema = ref.schema()
        projected = df.select(*columns).schema
        if projected.fieldNames() != schema.fieldNames():
            raise TableError(
                f"write_split target {name}: columns {projected.fieldNames()} are not the columns of "
                f"{ref.uri} in table order {schema.fieldNames()}"
            )
        plan_write(schema, projected, ref.partition_columns(), merge_schema=False)  # raises on a misfit
        # Cast positionally to the table's types; NOT NULL is enforced on the written data instead.
        nullable = T.StructType([T.StructField(f.name, f.dataType, True) for f in schema.fields])
        routed.append(F.when(route == F.lit(name), F.struct(*columns).cast(nullable)).alias(name))
    partition_values = [F.col(name)[c] for name, (ref, _) in targets.items() for c in ref.partition_columns()]
    split = df.select(*routed).repartition(F.col(_ROUTE), *partition_values)  # as by_table_partition
    first = next(iter(targets.values()))[0]
    staged = first.engine.stage_split(split, _ROUTE, {name: ref.engine for name, (ref, _) in targets.items()})
    if staged is not None:
        return {name: _staged_append(targets[name][0], write) for name, write in staged.items()}
    return _stage_split_cached(split, targets)



def _staged_append(table: DeltaTableRef, write: StagedWrite) -> StagedAppend:
    return StagedAppend(table, write.rows, write.commit, write.discard)


def _stage_split_cached(
    split: DataFrame, targets: Mapping[str, tuple[DeltaTableRef, Sequence[Column | str]]]
) -> dict[str, StagedAppend]:
    cached = split.persist(StorageLevel.MEMORY_AND_DISK)
    # One pass fills the cache and completes the observations on the input, before any commit:
    # each target's row count and the nulls of its NOT NULL columns (as the delta-rs files are checked).
    aggregates: dict[str, Column] = {}
    for name, (ref, _) in targets.items():
        mine = F.col(_ROUTE) == F.lit(name)
        aggregates[f"rows {name}"] = F.count_if(mine)
        for f in ref.schema().fields:
            if not f.nullable:
                aggregates[f"{name}.{f.name}"] = F.count_if(mine & F.col(name)[f.name].isNull())
    values = cached.agg(*[expr.alias(key) for key, expr in aggregates.items()]).first()
    assert values is not None
    nulls = {key: values[key] for key in aggregates if not key.startswith("rows ") and values[key]}
    if nulls:
        cached.unpersist()
        detail = ", ".join(f"{key} ({n} nulls)" for key, n in nulls.items())
        raise TableError(f"NOT NULL columns received nulls: {detail}; nothing was committed")
    counts = {name: int(values[f"rows {name}"]) for name in targets}
    pending = set(targets)

    def settle(name: str) -> None:
        pending.discard(name)
        if not pending:
            cached.unpersist()

    def commit(name: str, txn: Txn | None) -> CommitOutcome:
        try:
            ref = targets[name][0]
            return ref.append(cached.where(F.col(_ROUTE) == name).select(f"{name}.*"), txn=txn)
        finally:
            settle(name)

    return {
        name: StagedAppend(
            targets[name][0],
            counts[name],
            functools.partial(commit, name),
            functools.partial(settle, name),
        )
        for name in targets
    }
