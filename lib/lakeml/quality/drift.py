"""Feature drift between a model's training data and the rows it scores: PSI per feature, and a binned KS.

Each feature is cut into bins fixed on the reference: numeric features at the reference's
quantiles (``approxQuantile``), categorical ones into the reference's most frequent values plus
"other". NULL is a bin of its own, so a feature that starts arriving empty drifts too. Both data
sets are then counted per bin in one aggregation pass each; only the bin edges, the top values and
the counts (features × bins numbers) reach the driver.

    PSI = Σ (p_cur − p_ref) · ln(p_cur / p_ref)   over the bins (proportions floored at ``PSI_FLOOR``)

Rule of thumb (and the defaults of ``ml.drift``): below 0.1 stable, 0.1 to 0.25 a shift worth a
look, above 0.25 a shift the model was not trained for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import DriftConfig

# Empty bins would make PSI infinite; a proportion this small stands in for zero.
PSI_FLOOR = 1e-4
# approxQuantile's relative error for the numeric bin edges.
QUANTILE_ERROR = 0.01  # rank error of the bin edges: ample for deciles, ~2× cheaper than 0.001
NULL_BIN = -1

DRIFT_SCHEMA = T.StructType(
    [
        T.StructField("model_name", T.StringType(), False),
        T.StructField("window_start", T.DateType(), False),  # the scored rows' first date
        T.StructField("window_end", T.DateType(), False),
        T.StructField("model_version", T.StringType(), False),
        T.StructField("reference_table", T.StringType(), False),  # the model's training input
        T.StructField("reference_version", T.LongType(), False),  # ... at the version it trained on
        T.StructField("current_version", T.LongType(), False),  # version of the scored rows' table
        T.StructField("feature", T.StringType(), False),
        T.StructField("kind", T.StringType(), False),  # numeric | categorical
        T.StructField("bins", T.IntegerType(), False),  # including the NULL bin
        T.StructField("psi", T.DoubleType(), False),
        T.StructField("ks", T.DoubleType(), True),  # numeric only: max CDF gap at the bin edges
        T.StructField("reference_rows", T.LongType(), False),
        T.StructField("current_rows", T.LongType(), False),
        T.StructField("reference_null_rate", T.DoubleType(), True),
        T.StructField("current_null_rate", T.DoubleType(), True),
        T.StructField("level", T.StringType(), False),  # ok | warn | alert
        T.StructField("checked_at", T.TimestampType(), False),
    ]
)
DRIFT_PARTITIONS = ["model_name", "window_start"]


@dataclass(frozen=True)
class Bins:
    """How one feature is cut: numeric edges (x ≤ edges[0] is bin 0, ...) or categorical values."""

    feature: str
    edges: tuple[float, ...] = ()
    values: tuple[str, ...] | None = None  # categorical: bin i is values[i], then one for the rest

    @property
    def kind(self) -> str:
        return "numeric" if self.values is None else "categorical"

    @property
    def size(self) -> int:
        """Bins besides the NULL one."""
        return len(self.edges) + 1 if self.values is None else len(self.values) + 1

    def bin_of(self) -> Column:
        """The bin index of this feature's value (NULL_BIN for NULL): the first edge ≥ the value, as one
        CASE ladder (a sum of one comparison per edge made the generated code too large to compile)."""
        value = F.col(self.feature)
        if self.values is None:
            x = value.cast("double")
            ladder = F.when(x.isNull(), NULL_BIN)
            for i, edge in enumerate(self.edges):
                ladder = ladder.when(x <= edge, i)
            return ladder.otherwise(len(self.edges))  # above the last edge, and NaN
        text = value.cast("string")
        ladder = F.when(text.isNull(), NULL_BIN)
        for i, level in enumerate(self.values):
            ladder = ladder.when(text == level, i)
        return ladder.otherwise(len(self.values))  # any other value


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift figures (a row of ``ops/drift`` without the run's columns)."""

    feature: str
    kind: str
    bins: int
    psi: float
    ks: float | None
    reference_rows: int
    current_rows: int
    reference_null_rate: float | None
    current_null_rate: float | None
    level: str


def reference_bins(
    reference: DataFrame, numeric: Sequence[str], categorical: Sequence[str], cfg: DriftConfig
) -> list[Bins]:
    """Bins fixed on the reference: quantile edges per numeric feature, top values per categorical one."""
    bins: list[Bins] = []
    if numeric:
        as_double = reference.select(*[F.col(c).cast("double").alias(c) for c in numeric])
        probabilities = [i / cfg.bins for i in range(1, cfg.bins)]
        quantiles = as_double.approxQuantile(list(numeric), probabilities, QUANTILE_ERROR)
        for feature, edges in zip(numeric, quantiles, strict=True):
            # Repeated edges (a discrete or skewed feature) would make empty bins: keep each once.
            finite = sorted({e for e in edges if e is not None and math.isfinite(e)})
            bins.append(Bins(feature, tuple(finite)))
    for feature in categorical:
        top = (
            reference.where(F.col(feature).isNotNull())
            .groupBy(F.col(feature).cast("string").alias("value"))
            .count()
            .orderBy(F.desc("count"), "value")
            .limit(cfg.top_categories)
            .collect()
        )
        bins.append(Bins(feature, values=tuple(r["value"] for r in top)))
    return bins


def bin_counts(df: DataFrame, bins: Sequence[Bins]) -> dict[str, list[int]]:
    """Rows per bin of each feature, NULL bin last, counted in one pass: each row becomes one
    (feature, bin) pair per feature, grouped and counted (features × bins rows reach the driver).
    One aggregate per (feature, bin) instead was ~3× slower on 60 features: too large to compile."""
    return bin_counts_within(df, bins, F.lit(False))[0]


def bin_counts_within(
    df: DataFrame, bins: Sequence[Bins], within: Column
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """``bin_counts`` of all rows of ``df`` and of its rows where ``within`` holds, in the same pass
    (grouped by the flag too: twice the counts reach the driver, one read of the rows)."""
    if not bins:
        return {}, {}
    pairs = F.explode(
        F.array(*[F.struct(F.lit(i).alias("feature"), b.bin_of().alias("bin")) for i, b in enumerate(bins)])
    )
    counts = [[0] * (b.size + 1) for b in bins]
    inside = [[0] * (b.size + 1) for b in bins]
    flagged = df.select(F.coalesce(within, F.lit(False)).alias("_within"), pairs.alias("pair"))
    for row in flagged.groupBy("pair.feature", "pair.bin", "_within").count().collect():
        i, j = row["feature"], row["bin"]
        slot = bins[i].size if j == NULL_BIN else j
        counts[i][slot] += int(row["count"])
        if row["_within"]:
            inside[i][slot] += int(row["count"])
    return (
        {b.feature: counts[i] for i, b in enumerate(bins)},
        {b.feature: inside[i] for i, b in enumerate(bins)},
    )


def psi(reference: Sequence[int], current: Sequence[int]) -> float:
    """Population stability index of two count vectors over the same bins (0 when either is empty)."""
    ref_total, cur_total = sum(reference), sum(current)
    if not ref_total or not cur_total:
        return 0.0
    value = 0.0
    for r, c in zip(reference, current, strict=True):
        p, q = max(r / ref_total, PSI_FLOOR), max(c / cur_total, PSI_FLOOR)
        value += (q - p) * math.log(q / p)
    return value


def binned_ks(reference: Sequence[int], current: Sequence[int]) -> float | None:
    """Largest gap between the two CDFs at the bin edges (ordered bins, no NULL bin); None if one is empty."""
    ref_total, cur_total = sum(reference), sum(current)
    if not ref_total or not cur_total:
        return None
    gap = ref_cum = cur_cum = 0.0
    for r, c in zip(reference, current, strict=True):
        ref_cum, cur_cum = ref_cum + r / ref_total, cur_cum + c / cur_total
        gap = max(gap, abs(ref_cum - cur_cum))
    return gap


def drift_level(value: float, cfg: DriftConfig) -> str:
    return "alert" if value >= cfg.alert_psi else "warn" if value >= cfg.warn_psi else "ok"


def compare(
    bins: Sequence[Bins],
    reference: Mapping[str, Sequence[int]],
    current: Mapping[str, Sequence[int]],
    cfg: DriftConfig,
) -> list[FeatureDrift]:
    """PSI, KS and NULL rates per feature from the two data sets' bin counts."""
    out = []
    for b in bins:
        ref, cur = reference[b.feature], current[b.feature]
        value = psi(ref, cur)
        ref_rows, cur_rows = sum(ref), sum(cur)
        out.append(
            FeatureDrift(
                feature=b.feature,
                kind=b.kind,
                bins=len(ref),
                psi=value,
                ks=binned_ks(ref[:-1], cur[:-1]) if b.kind == "numeric" else None,
                reference_rows=ref_rows,
                current_rows=cur_rows,
                reference_null_rate=ref[-1] / ref_rows if ref_rows else None,
                current_null_rate=cur[-1] / cur_rows if cur_rows else None,
                level=drift_level(value, cfg),
            )
        )
    return out


def feature_drift(
    reference: DataFrame,
    current: DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    cfg: DriftConfig,
) -> list[FeatureDrift]:
    """Drift of each feature of ``current`` against ``reference`` (bins fixed on the reference)."""
    bins = reference_bins(reference, numeric, categorical, cfg)
    return compare(bins, bin_counts(reference, bins), bin_counts(current, bins), cfg)


def feature_drift_within(
    reference: DataFrame,
    current: Column,
    numeric: Sequence[str],
    categorical: Sequence[str],
    cfg: DriftConfig,
) -> list[FeatureDrift]:
    """``feature_drift`` of the rows of ``reference`` where ``current`` holds against all of
    ``reference``: the same figures, with both counted in one pass (no second read of those rows)."""
    bins = reference_bins(reference, numeric, categorical, cfg)
    return compare(bins, *bin_counts_within(reference, bins, current), cfg)
