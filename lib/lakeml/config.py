"""Layered configuration: conf/base.yaml + conf/<env>.yaml + --conf overrides -> frozen, typed Config.

Every key must be declared in the dataclasses below; an unknown key, a wrong type, an unset
``${ENV_VAR}`` or a missing file is a ConfigError that names the key and the file it came from.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lakeml.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONF_DIR = PROJECT_ROOT / "conf"

# A field marked with this metadata holds a filesystem location: relative values are resolved
# against the working directory at load time, so executors on other processes see absolute paths.
PATH = {"path": True}


@dataclass(frozen=True)
class SparkConfig:
    app_name: str
    # Used only when nothing (spark-submit, PYSPARK_SUBMIT_ARGS) has set a master already.
    master: str
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"]
    # Defaults for Spark settings; a value spark-submit already set always wins.
    conf: Mapping[str, str]


@dataclass(frozen=True)
class LakehouseConfig:
    root: str = field(metadata=PATH)
    # Raw files as source systems deliver them; relative to ``root`` when relative.
    landing_dir: str
    # Landing files older than this many days that bronze has loaded are deleted by the bronze
    # job (0 keeps every file). Raw card numbers live only there, so this bounds their lifetime.
    landing_retention_days: int
    engine: Literal["auto", "delta-rs", "delta-spark"]
    target_file_size_mb: int
    # Rows buffered per Parquet row group by the delta-rs engine's writer tasks.
    row_group_rows: int
    # Columns (in schema order) that get per-file min/max statistics, like delta.dataSkippingNumIndexedCols.
    stats_indexed_columns: int
    # Commit attempts when other writers commit in between (non-conflicting commits are rebased).
    max_commit_attempts: int
    # A merge source up to this many rows is broadcast, so the table side of the join is not shuffled.
    merge_broadcast_rows: int
    # Full-operation retries of merge/overwrite after a real conflict.
    max_operation_retries: int
    vacuum_retention_hours: int

    def __post_init__(self) -> None:
        if self.landing_retention_days < 0:
            raise ConfigError(
                "lakehouse.landing_retention_days must be >= 0 (0 keeps every file), got "
                f"{self.landing_retention_days}"
            )


@dataclass(frozen=True)
class RunConfig:
    # Structured log lines go to stderr as JSON (one object per line) or as key=value text.
    log_format: Literal["json", "text"]
    # Progress of long Spark work: auto = a bar on a terminal, log lines otherwise; off = none.
    progress: Literal["auto", "bar", "lines", "off"]
    # Seconds between progress lines (and before the first one, so short jobs print none).
    progress_interval_seconds: float
    # One run at a time per lakehouse: the lock file lives in <lock_dir or lakehouse.root>/_lakeml/.
    lock_dir: str
    # A lock whose holder runs on another host is taken over once its lease (renewed every third of
    # it while the holder lives) has expired.
    lock_lease_seconds: int

    def __post_init__(self) -> None:
        if self.lock_lease_seconds < 3:
            raise ConfigError(f"run.lock_lease_seconds must be at least 3, got {self.lock_lease_seconds}")


@dataclass(frozen=True)
class AlertsConfig:
    """Notification on a job failure (lakeml.alerts): a shell command and/or a webhook."""

    # Run with the alert as JSON on stdin and LAKEML_ALERT_* variables (empty: none).
    command: str
    # POSTed the alert as JSON (empty: none).
    webhook_url: str
    timeout_seconds: float


@dataclass(frozen=True)
class TableMaintenanceConfig:
    """ops.maintain_tables: compaction, vacuum and log cleanup of the lakehouse's tables."""

    # "<layer>/<name>" of the tables to maintain; empty: every Delta table under bronze, silver, gold, ops.
    tables: tuple[str, ...]
    # Vacuum with lakehouse.vacuum_retention_hours (protected versions always kept).
    vacuum: bool
    # Write a checkpoint and delete log files older than the table's delta.logRetentionDuration,
    # only where no protected version needs them.
    clean_logs: bool


@dataclass(frozen=True)
class StatusConfig:
    """lakeml status: when a table counts as stale."""

    # A table whose newest date partition is more than this many days before the run date is stale.
    max_lag_days: int
    # Tables (<layer>/<name>) left out of the freshness check (e.g. ones only rebuilt weekly).
    ignore_tables: tuple[str, ...]


@dataclass(frozen=True)
class AirflowConfig:
    """The Airflow DAG generated from the job registry (scripts/airflow/lakeml_dag.py)."""

    dag_id: str
    schedule: str
    # First logical date; with catchup, Airflow runs every missed interval since.
    start_date: str
    catchup: bool
    # local: `lakeml run JOB --env ENV` on the Airflow worker; cluster: scripts/submit
    # jobs/<domain>/<step>.py.
    mode: Literal["local", "cluster"]
    # Jobs in the DAG (with what they need); empty: every job of the registry.
    jobs: tuple[str, ...]
    retries: int
    retry_delay_minutes: float
    max_retry_delay_minutes: float
    task_timeout_minutes: float
    # Per-job timeouts overriding task_timeout_minutes.
    task_timeouts_minutes: Mapping[str, float]
    # Cluster mode: the Airflow connection (conn type spark) whose host[:port] is the master that
    # scripts/submit passes to spark-submit; empty: submit.master of this config.
    spark_conn_id: str = ""


@dataclass(frozen=True)
class GenerateConfig:
    """Defaults for ``lakeml generate`` (the command line may override scale, days and seed)."""

    scale: int
    days: int
    seed: int
    # Last day of generated data (YYYY-MM-DD); empty means the run date.
    end_date: str


@dataclass(frozen=True)
class SubmitConfig:
    """What scripts/submit passes to spark-submit for ``--env cluster``."""

    master: str
    deploy_mode: Literal["client", "cluster"]
    driver_memory: str
    executor_memory: str
    executor_cores: int
    total_executor_cores: int


@dataclass(frozen=True)
class CheckConfig:
    """One data-quality check on a silver table (see lakeml.quality.expectations for each kind)."""

    check: Literal["not_null", "range", "accepted_values", "unique", "freshness", "quarantine_rate"]
    # error: a failure stops the job before the batch reaches the table; warn: recorded only.
    level: Literal["error", "warn"]
    column: str = ""
    columns: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    values: tuple[str, ...] = ()
    max_age_hours: float | None = None


@dataclass(frozen=True)
class SilverConfig:
    """Rules of the bronze → silver step (parsing limits, PII key, reference data, quality checks)."""

    # Name of the environment variable holding the HMAC key for PII tokens (never a default key).
    pii_key_env: str
    # Key file read when that variable is unset (``~`` allowed): owner-only, outside the lakehouse.
    pii_key_file: str
    # An event stamped later than its ingestion time plus this is quarantined as "in the future".
    max_future_skew_hours: float
    # An event before this date (YYYY-MM-DD) is quarantined (e.g. a device clock reset to 1970).
    min_event_date: str
    # Amounts above this (in EUR) are quarantined as implausible rather than loaded.
    max_amount_eur: float
    max_price_eur: float
    # Units of each currency per EUR (reference rates for amount_eur).
    eur_rates: Mapping[str, float]
    # Quality checks per silver table, run on every batch before it is committed.
    checks: Mapping[str, tuple[CheckConfig, ...]]


MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class CommerceFeaturesConfig:
    """gold/user_item_interactions and gold/item_stats (commerce.build_features)."""

    # Interaction weight per event type (remove_from_cart negative).
    event_weights: Mapping[str, float]
    half_life_days: float
    # Trailing window of as_of_date D: event days [D - lookback_days + 1, D]; strength sums only these.
    lookback_days: int
    # item_stats counts events of days [D - item_window_days + 1, D].
    item_window_days: int
    # A user's next event starts a new session when it comes more than this after the previous one.
    session_gap_minutes: float
    # Bot/abuse: a user's UTC day is excluded when it has more than N events within 60 s, or more than M.
    bot_max_events_per_minute: int
    bot_max_events_per_day: int
    # Minimum activity in the lookback window for a (user, item) row: counted events of the user,
    # distinct users of the item.
    min_user_events: int
    min_item_users: int

    def __post_init__(self) -> None:
        # Stored per-day aggregates continue sessions from the day before only (their seeds).
        if not 0 < self.session_gap_minutes < MINUTES_PER_DAY:
            raise ConfigError(
                f"features.commerce.session_gap_minutes must be in (0, {MINUTES_PER_DAY}), got "
                f"{self.session_gap_minutes}"
            )


@dataclass(frozen=True)
class BankingFeaturesConfig:
    """gold/transaction_features (banking.build_features)."""

    # Velocity windows: name -> length in hours (strictly before each transaction).
    velocity_windows_hours: Mapping[str, float]
    # Reason codes that mean fraud; a REVERSED row withdraws an earlier chargeback.
    fraud_reason_codes: tuple[str, ...]
    # A chargeback counts as the label only if reported within this many days of the transaction.
    label_window_days: int
    # Labels keep changing after a day is computed (chargebacks and reversals arrive for weeks): each
    # run recomputes, as of its cut-off, the labels of the rows of the previous N days and rewrites the
    # days where one changed. At least label_window_days, so every day matures in the table.
    label_refresh_days: int
    # Merchant-category risk: fraud chargebacks reported in the last N days ÷ transactions in them.
    mcc_risk_days: int
    # Pseudo-counts pulling a category's fraud rate toward the overall prior when it has few transactions.
    mcc_risk_prior_rate: float
    mcc_risk_prior_weight: float
    # Chargebacks of a run's window up to this many rows (file statistics) are broadcast to the
    # transactions instead of shuffling both sides; above it, a shuffle join.
    chargeback_broadcast_rows: int
    # Local hours [start, end) that count as night-time.
    night_start_hour: int
    night_end_hour: int
    # Merchant country -> UTC offset in minutes, for the local time of a transaction.
    country_utc_offset_minutes: Mapping[str, int]


@dataclass(frozen=True)
class MaintenanceFeaturesConfig:
    """gold/machine_features (maintenance.build_features)."""

    # Labels: remaining useful life is capped at this many cycles; fails_within = RUL <= this horizon.
    rul_cap_cycles: int
    fails_within_cycles: int
    # Length of one operating cycle (one reading per machine per cycle); converts time to cycles.
    cycle_minutes: float
    # Rolling windows: the last N readings of the machine, ending at (and including) the current one.
    short_window_readings: int
    long_window_readings: int
    # Rolling windows never reach back further than the start of as_of_date minus this many days.
    lookback_days: int
    # Operating regime = (setting_1, setting_2, setting_3), each rounded to a multiple of this step.
    regime_round_step: float
    # Per-regime mean/std for normalization: all machines' readings in the N days before as_of_date.
    regime_stats_days: int
    # cycles_since_maintenance: the last repair/overhaul at most this many days before as_of_date.
    maintenance_lookback_days: int


@dataclass(frozen=True)
class FeaturesConfig:
    commerce: CommerceFeaturesConfig
    banking: BankingFeaturesConfig
    maintenance: MaintenanceFeaturesConfig


@dataclass(frozen=True)
class PromotionConfig:
    """When a newly trained model replaces the champion (issue: MLlib models)."""

    # Compared on the same holdout for the candidate and the current champion.
    primary_metric: str
    # Absolute floors: metric -> minimum (higher-is-better metrics) or maximum (lower-is-better ones).
    floors: Mapping[str, float]
    # The candidate must beat the champion's primary metric by more than this (absolute).
    min_improvement: float


@dataclass(frozen=True)
class FraudModelConfig:
    """Fraud classifier (banking.train_fraud / banking.score_fraud)."""

    model_name: str
    # Any labelled feature table: "<layer>/<name>" under the lakehouse root, or an absolute URI.
    input_table: str
    id_column: str
    entity_column: str
    time_column: str
    date_column: str
    label_column: str
    # Rows whose label column is NULL (label window still open) never train or test.
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    # A feature already in the table used as the score of the rule baseline; "" = the prior
    # (every transaction scored the train fraud rate: AUPRC = fraud rate, ROC-AUC 0.5, no alert).
    baseline_score_column: str
    # Time split (days of date_column, counted back from the newest labelled day):
    # train ... | validation (validation_days) | gap (gap_days) | test (test_days)
    test_days: int
    gap_days: int
    validation_days: int
    # Negatives are weighted n_neg/n_pos ÷ this (1 = fully balanced); inside training only.
    positive_weight_divisor: float
    # Alert budget: the top fraction of transactions by score that get an alert.
    alert_budget: float
    # Model family -> parameter grid (param name -> values), tuned on a held-out share of train.
    families: Mapping[str, Mapping[str, tuple[float, ...]]]
    train_ratio: float
    promotion: PromotionConfig
    score_table: str
    calibration_bins: int
    # Imbalance handling searched with the families (best validation AUPRC wins): "none" (no weights),
    # "balanced" (positives weighted n_neg/n_pos), "divisor" (n_neg/n_pos ÷ positive_weight_divisor),
    # "divisor:<d>" (n_neg/n_pos ÷ d, for a divisor grid).
    imbalance: tuple[str, ...] = ("none", "divisor")
    # Every family is fitted under the first imbalance option; each other option refits only this many
    # of the best families (validation AUPRC) under the first: 0 = every family under every option.
    imbalance_families: int = 1
    # Scores calibrated on validation: "platt" (logistic on the model's margin: keeps the ranking),
    # "isotonic" (monotone steps: may tie scores), "none".
    calibration: Literal["platt", "isotonic", "none"] = "platt"
    # "day": whole days (test_days, gap_days, validation_days, above); "time_fraction": fractions of the
    # time range of time_column (tables of a few days); "stratified": random rows, same fraud rate in
    # each split (no time order: rows of one entity may land in two splits — see README).
    split: Literal["day", "time_fraction", "stratified"] = "day"
    # Shares of the labelled rows / time range held out by the time_fraction and stratified splits.
    validation_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        for option in self.imbalance:
            imbalance_divisor(option, self.positive_weight_divisor)  # raises on a malformed option
        if not self.imbalance:
            raise ConfigError(
                "ml.fraud.imbalance: needs at least one option (none, balanced, divisor, divisor:<d>)"
            )
        if self.imbalance_families < 0:
            raise ConfigError(
                f"ml.fraud.imbalance_families: needs a count >= 0, got {self.imbalance_families}"
            )
        if not (self.validation_fraction > 0 and self.test_fraction > 0
                and self.validation_fraction + self.test_fraction < 1):  # fmt: skip
            raise ConfigError(
                "ml.fraud: need 0 < validation_fraction, 0 < test_fraction and their sum < 1, got "
                f"{self.validation_fraction}, {self.test_fraction}"
            )


def imbalance_divisor(option: str, default_divisor: float) -> float | None:
    """The divisor of n_neg/n_pos an ``ml.fraud.imbalance`` option weights positives by (None = no
    weights)."""
    if option == "none":
        return None
    if option == "balanced":
        return 1.0
    if option == "divisor":
        return default_divisor
    name, _, value = option.partition(":")
    try:
        divisor = float(value) if name == "divisor" else math.nan
    except ValueError:
        divisor = math.nan
    if not divisor > 0:
        raise ConfigError(
            f"ml.fraud.imbalance: unknown option '{option}' (none, balanced, divisor, divisor:<d> with d > 0)"
        )
    return divisor


@dataclass(frozen=True)
class RecommenderConfig:
    """ALS recommender (commerce.train_recommender / commerce.score_recommendations)."""

    model_name: str
    input_table: str
    user_column: str
    item_column: str
    # Implicit mode trains on strength_column, explicit mode on rating_column (only that one must exist).
    mode: Literal["implicit", "explicit"]
    strength_column: str
    rating_column: str
    # Orders each user's pairs for the split: a timestamp or a date.
    time_column: str
    # Snapshot date column (the newest on or before the run date is used); "" = the table is one snapshot.
    date_column: str
    # Rows counted as already bought (> 0): excluded from a user's recommendations;
    # "" = every item the user already has is excluded.
    purchased_column: str
    # Explicit mode: a held-out pair is relevant with rating >= relevant_rating; null = relative to the
    # training ratings' scale: min + relevant_rating_fraction * (max - min) (0.75: 4 on a 1-5 scale).
    relevant_rating: float | None
    relevant_rating_fraction: float
    # Per-user time split: each user's latest test_items pairs go to test, the ones before to validation.
    test_items: int
    validation_items: int
    # Users with fewer pairs than this stay entirely in training.
    min_user_items: int
    k: int
    ks: tuple[int, ...]
    max_iter: int
    grid: Mapping[str, tuple[float, ...]]
    promotion: PromotionConfig
    score_table: str
    # Explicit mode: the bias baseline (global mean + user and item biases shrunk by this
    # regularisation, chosen on validation RMSE) is reported beside ALS and is the model's floor;
    # with explicit_residuals ALS learns the residuals after the biases (prediction = biases + factors)
    # and the grid's regParam values are multiples of the residuals' standard deviation.
    bias_regularization: tuple[float, ...] = (1.0, 5.0, 25.0)
    # The item biases' own regularisations, tuned with each of bias_regularization (empty: the same).
    item_bias_regularization: tuple[float, ...] = ()
    explicit_residuals: bool = True
    # With explicit_residuals: the models fitted on train and compared on validation RMSE (same pairs),
    # the best one served as fitted (biases refitted on train + validation): "bias" (the baseline
    # itself), "residual" (biases + ALS on the residuals, one fit per grid point x factor) and "plain"
    # (ALS on the ratings, one fit per grid point).
    explicit_candidates: tuple[str, ...] = ("bias", "residual")
    # Residual ALS: regParam = grid regParam x the residuals' standard deviation x each factor.
    explicit_regparam_factors: tuple[float, ...] = (4.0,)
    # Residual ALS candidates' item biases (the baseline's are unchanged): each regularisation here x each
    # prior, the prior a shift below 0 in units of the training ratings' standard deviation toward which
    # a rarely-rated item's bias is shrunk (ratings are missing not at random: an item few users rate is
    # assumed below average until its ratings say otherwise). Empty regularisation: the baseline's.
    explicit_item_bias_regularization: tuple[float, ...] = ()
    explicit_item_bias_priors: tuple[float, ...] = (0.0,)
    # How the explicit candidate is chosen: "rmse" (lowest validation RMSE) or "ndcg_at_k" (highest
    # validation NDCG@k among the candidates whose validation RMSE is no worse than the bias baseline's).
    explicit_choice_metric: Literal["rmse", "ndcg_at_k"] = "rmse"
    # Residual candidates: each fit is also a candidate at each weight w on its factors (biases + w x
    # factors; no extra fit, one validation top-k each): w > 1 lets the personal part outrank the item
    # biases (more of the catalogue in the lists), chosen like any candidate.
    explicit_factor_weights: tuple[float, ...] = (1.0,)
    # With ndcg_at_k: candidates no more than this many standard errors (over validation users) below the
    # best validation NDCG@k are tied on ranking, and the widest validation catalogue coverage among them
    # wins (1: the one-standard-error rule; 0: the best NDCG@k alone).
    explicit_ndcg_standard_errors: float = 0.0
    # Implicit tuning ranks grid points on at most this many validation users (a seeded hash sample;
    # each point's top-k pass then costs the sample, not every user); 0 = every validation user.
    validation_users: int = 0

    def __post_init__(self) -> None:
        if not self.bias_regularization or min(self.bias_regularization) < 0:
            raise ConfigError(
                f"ml.recommender.bias_regularization: needs values >= 0, got {list(self.bias_regularization)}"
            )
        if self.item_bias_regularization and min(self.item_bias_regularization) < 0:
            raise ConfigError(
                "ml.recommender.item_bias_regularization: needs values >= 0, got "
                f"{list(self.item_bias_regularization)}"
            )
        unknown = set(self.explicit_candidates) - {"bias", "residual", "plain"}
        if not self.explicit_candidates or unknown:
            raise ConfigError(
                "ml.recommender.explicit_candidates: needs one or more of bias, residual, plain, got "
                f"{list(self.explicit_candidates)}"
            )
        if self.explicit_item_bias_regularization and min(self.explicit_item_bias_regularization) < 0:
            raise ConfigError(
                "ml.recommender.explicit_item_bias_regularization: needs values >= 0, got "
                f"{list(self.explicit_item_bias_regularization)}"
            )
        if not self.explicit_item_bias_priors or min(self.explicit_item_bias_priors) < 0:
            raise ConfigError(
                "ml.recommender.explicit_item_bias_priors: needs values >= 0 (a shift below 0), got "
                f"{list(self.explicit_item_bias_priors)}"
            )
        if self.explicit_choice_metric not in ("rmse", "ndcg_at_k"):
            raise ConfigError(
                "ml.recommender.explicit_choice_metric: needs rmse or ndcg_at_k, got "
                f"{self.explicit_choice_metric}"
            )
        if self.explicit_ndcg_standard_errors < 0:
            raise ConfigError(
                "ml.recommender.explicit_ndcg_standard_errors must be >= 0, got "
                f"{self.explicit_ndcg_standard_errors}"
            )
        if not self.explicit_factor_weights or min(self.explicit_factor_weights) <= 0:
            raise ConfigError(
                "ml.recommender.explicit_factor_weights: needs values > 0, got "
                f"{list(self.explicit_factor_weights)}"
            )
        if not self.explicit_regparam_factors or min(self.explicit_regparam_factors) <= 0:
            raise ConfigError(
                "ml.recommender.explicit_regparam_factors: needs values > 0, got "
                f"{list(self.explicit_regparam_factors)}"
            )
        if self.validation_users < 0:
            raise ConfigError(f"ml.recommender.validation_users must be >= 0, got {self.validation_users}")
        if not 0 <= self.relevant_rating_fraction <= 1:
            raise ConfigError(
                "ml.recommender.relevant_rating_fraction must be in [0, 1], got "
                f"{self.relevant_rating_fraction}"
            )
        if self.k < 1 or not self.ks or min(self.ks) < 1:
            raise ConfigError(
                f"ml.recommender: k and every ks must be >= 1, got k={self.k}, ks={list(self.ks)}"
            )


@dataclass(frozen=True)
class FailureModelConfig:
    """Failure / remaining-useful-life predictor (maintenance.train_failure / maintenance.score_failure)."""

    rul_model_name: str
    failure_model_name: str
    input_table: str
    group_column: str
    time_column: str
    date_column: str
    rul_column: str
    failure_column: str
    # Age column of the baseline (mean RUL by age bucket) and the bucket width.
    age_column: str
    age_bucket: int
    feature_columns: tuple[str, ...]
    categorical_features: tuple[str, ...]
    # Share of machines (hash of group_column) held out for test, then for validation.
    test_fraction: float
    validation_fraction: float
    # Minutes per cycle, to turn RUL cycles into alert lead time.
    cycle_minutes: float
    # MLlib GBT's grids per model, used when include_gbt is true.
    rul_grid: Mapping[str, tuple[float, ...]]
    failure_grid: Mapping[str, tuple[float, ...]]
    # Families for both models, competing on validation: family -> grid.
    families: Mapping[str, Mapping[str, tuple[float, ...]]]
    train_ratio: float
    # C-MAPSS score: true and predicted RUL capped at this many cycles (the benchmark's convention).
    cmapss_rul_cap: float
    alert_budget: float
    rul_promotion: PromotionConfig
    failure_promotion: PromotionConfig
    score_table: str
    # MLlib GBT (rul_grid / failure_grid) competes with ``families`` too.
    include_gbt: bool = False  # as conf/base.yaml: xgboost won both models in every measured run

    def __post_init__(self) -> None:
        if not self.include_gbt and not self.families:
            raise ConfigError("ml.failure: no model family to train (include_gbt is false and families is "
                              "empty)")


@dataclass(frozen=True)
class DriftConfig:
    """Feature drift of scored rows against the champion's training data, written to ops/drift."""

    # Quantile bins per numeric feature (edges fixed on the training data); NULL is a bin of its own.
    bins: int
    # Most frequent training values kept per categorical feature; the rest fall into one "other" bin.
    top_categories: int
    # PSI at or above warn_psi is a warning, at or above alert_psi an alert.
    warn_psi: float
    alert_psi: float
    # An alert fails the scoring job before any score is written (otherwise it is logged).
    fail_on_alert: bool

    def __post_init__(self) -> None:
        if self.bins < 2 or self.top_categories < 1:
            raise ConfigError(
                f"ml.drift: bins must be >= 2 and top_categories >= 1, got {self.bins}, {self.top_categories}"
            )
        if not 0 < self.warn_psi <= self.alert_psi:
            raise ConfigError(
                f"ml.drift: need 0 < warn_psi <= alert_psi, got warn_psi={self.warn_psi}, "
                f"alert_psi={self.alert_psi}"
            )


@dataclass(frozen=True)
class AlertCheckConfig:
    """The realised alert rate of every scoring run (fraud, failure) against the model's alert budget."""

    # A run alerting more than alert_budget x max_budget_factor of its rows is flagged.
    max_budget_factor: float
    # Flagged: fail the scoring job before any score is written (otherwise a logged warning).
    fail_on_excess: bool

    def __post_init__(self) -> None:
        if self.max_budget_factor < 1:
            raise ConfigError(f"ml.alerts.max_budget_factor must be >= 1, got {self.max_budget_factor}")


@dataclass(frozen=True)
class MLConfig:
    """Model lifecycle: MLflow tracking and registry, reports, shared training settings."""

    # Empty = sqlite:///<lakehouse root>/_mlflow/mlflow.db (the local default).
    tracking_uri: str
    # Where run artifacts (models, reports) go; empty = <lakehouse root>/_mlflow/artifacts.
    artifact_root: str
    # HTML reports are also saved here (relative to the lakehouse root when relative).
    reports_dir: str
    experiment_prefix: str
    seed: int
    # Grid points fitted at a time (each fit's tasks share the cores).
    parallelism: int
    # ALS checkpoints (relative to the lakehouse root when relative).
    checkpoint_dir: str
    # Points kept per curve in reports (PR/ROC thresholds, RUL scatter sample).
    curve_points: int
    fraud: FraudModelConfig
    recommender: RecommenderConfig
    failure: FailureModelConfig
    drift: DriftConfig
    alerts: AlertCheckConfig
    # Early dropping: a model family tuned after another gets this many rounds of ``parallelism`` grid
    # points to beat the best family so far on validation, else its other points are skipped; 0 = off.
    family_patience: int = 1


@dataclass(frozen=True)
class AlertSinkConfig:
    """Where the nearline stream sends alerts (flag set) besides gold/fraud_alerts; at-least-once."""

    # A JSON-lines file per hour of scoring under this folder (relative: under the lakehouse root; "": off).
    jsonl_dir: str
    # POSTed {"alerts": [...]} once per micro-batch with alerts ("": off).
    webhook_url: str
    timeout_seconds: float


# nearline.fraud_alerts.state_store -> Spark's state store provider class.
STATE_STORES = {
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
}


@dataclass(frozen=True)
class FraudAlertsStreamConfig:
    """lakeml stream banking.fraud_alerts: landing transactions scored by the champion within seconds."""

    # Processing-time trigger (a micro-batch every this many seconds, or right after a slow one).
    trigger_seconds: float
    # Files taken per micro-batch at most (bounds a catch-up batch).
    max_files_per_trigger: int
    # Event-time watermark: events older than (newest event seen - this) are late: quarantined.
    watermark_minutes: float
    # Under the lakehouse root: the query's checkpoint (offsets, commits, per-card state).
    checkpoint_dir: str
    alerts_table: str
    # ops/quarantine feed name of the stream's rejects (silver's own are under "transactions").
    quarantine_feed: str
    sink: AlertSinkConfig
    # Partitions of the per-card state (the query's shuffle partitions; fixed by the checkpoint's first
    # start). Each is a state-store task per micro-batch: few, for second-scale micro-batches.
    state_partitions: int
    # Materialize features and scores apart, to time each phase (a Spark job each; for profiling).
    time_phases: bool
    # Card buckets the state is keyed by (one Python call per touched bucket and micro-batch; fixed
    # by the checkpoint's first start: cards would change bucket).
    state_buckets: int = 16
    # State store of the per-card state: "rocksdb" (native memory and local disk, changelog
    # checkpointing: a micro-batch writes only the buckets it changed) or "hdfs" (Spark's default:
    # every loaded version of the state lives in the JVM heap). Fixed by the checkpoint's first start.
    state_store: str = "rocksdb"
    # State versions the checkpoint keeps (Spark's minBatchesToRetain, 100 by default). Every
    # micro-batch rewrites every touched bucket, so each changelog file is about the whole state
    # (100 of them: a 1.4 GB checkpoint in 10 minutes). A restart replays at most the last batch.
    min_batches_to_retain: int = 5
    # The state store's maintenance (snapshot + old versions deleted) every this many seconds
    # (Spark: 60): between two, the changelog files of every micro-batch pile up.
    maintenance_seconds: float = 15
    # RocksDB's memtables and block cache of all state partitions together under this bound (MB;
    # Spark's boundedMemoryUsage); 0: unbounded (each partition's RocksDB grows with the state).
    rocksdb_memory_mb: int = 256

    def __post_init__(self) -> None:
        if self.state_store not in STATE_STORES:
            raise ConfigError(
                f"nearline.fraud_alerts.state_store must be one of {sorted(STATE_STORES)}, not "
                f"{self.state_store!r}"
            )
        if (
            self.trigger_seconds < 0
            or self.max_files_per_trigger < 1
            or self.watermark_minutes < 0
            or self.state_partitions < 1
            or self.state_buckets < 1
            or self.min_batches_to_retain < 1
            or self.maintenance_seconds <= 0
            or self.rocksdb_memory_mb < 0
        ):
            raise ConfigError(
                "nearline.fraud_alerts: trigger_seconds and watermark_minutes must be >= 0, "
                "max_files_per_trigger, state_partitions, state_buckets and min_batches_to_retain >= 1, "
                "maintenance_seconds > 0, rocksdb_memory_mb >= 0"
            )


@dataclass(frozen=True)
class NearlineConfig:
    """Streaming jobs (lakeml stream NAME)."""

    fraud_alerts: FraudAlertsStreamConfig


@dataclass(frozen=True)
class Config:
    env: str
    spark: SparkConfig
    lakehouse: LakehouseConfig
    run: RunConfig
    submit: SubmitConfig
    generate: GenerateConfig
    silver: SilverConfig
    features: FeaturesConfig
    ml: MLConfig
    alerts: AlertsConfig
    table_maintenance: TableMaintenanceConfig
    status: StatusConfig
    airflow: AirflowConfig
    nearline: NearlineConfig

    def landing_path(self) -> str:
        """Absolute landing folder (``lakehouse.landing_dir`` under the root when relative)."""
        return join_location(self.lakehouse.root, self.lakehouse.landing_dir)


def join_location(base: str, child: str) -> str:
    """``child`` if it is absolute or a URI, else ``base/child``."""
    if _is_uri(child) or os.path.isabs(child):
        return child
    return base.rstrip("/") + "/" + child


def _is_uri(value: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value) is not None or value.startswith("file:")


# ----------------------------------------------------------------------------------------------
# loading


def default_conf_dir() -> Path:
    """$LAKEML_CONF_DIR, else the checkout's conf/ (else ./conf, e.g. when lakeml runs from a wheel)."""
    if os.environ.get("LAKEML_CONF_DIR"):
        return Path(os.environ["LAKEML_CONF_DIR"])
    return DEFAULT_CONF_DIR if DEFAULT_CONF_DIR.is_dir() else Path.cwd() / "conf"


def available_envs(conf_dir: Path | None = None) -> list[str]:
    """Environments that have a conf/<env>.yaml next to base.yaml."""
    return sorted(p.stem for p in (conf_dir or default_conf_dir()).glob("*.yaml") if p.stem != "base")


def load_config(
    env: str,
    overrides: Sequence[str] = (),
    conf_dir: Path | str | None = None,
) -> Config:
    """Merge base.yaml, <env>.yaml and ``key=value`` overrides; validate into a frozen Config."""
    conf_dir = Path(conf_dir) if conf_dir else default_conf_dir()
    base_file = conf_dir / "base.yaml"
    env_file = conf_dir / f"{env}.yaml"
    if env == "base" or not env_file.is_file():
        known = ", ".join(available_envs(conf_dir)) or "none"
        raise ConfigError(f"unknown env '{env}': no config file {env_file} (known envs: {known})")

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for path in (base_file, env_file):
        _merge(merged, origin, _read_yaml(path), str(path), prefix="")
    merged["env"] = env
    origin["env"] = "--env"
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(merged, origin, key, value)

    merged = _substitute_env(merged, origin, "")
    return _build(Config, merged, origin, "")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(
    dst: dict[str, Any], origin: dict[str, str], src: Mapping[str, Any], where: str, prefix: str
) -> None:
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], origin, value, where, dotted + ".")
        else:
            dst[key] = value
        _mark(origin, dotted, value, where)


def _mark(origin: dict[str, str], dotted: str, value: Any, where: str) -> None:
    origin[dotted] = where
    if isinstance(value, dict):
        for k, v in value.items():
            _mark(origin, f"{dotted}.{k}", v, where)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"malformed --conf '{item}': expected key=value, e.g. lakehouse.engine=delta-rs")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"malformed --conf '{item}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):  # ValueError: YAML reads 2026-02-30 as a date that does not exist
        value = raw
    return key, value


def _set_dotted(merged: dict[str, Any], origin: dict[str, str], key: str, value: Any) -> None:
    """Set a dotted key; a Mapping-typed field takes the rest of the key (dots included) as its own key."""
    parts = key.split(".")
    node: dict[str, Any] = merged
    cls: Any = Config
    walked: list[str] = []
    while parts:
        head = parts.pop(0)
        walked.append(head)
        hint = _field_types(cls).get(head) if dataclasses.is_dataclass(cls) else None
        if hint is None:
            raise ConfigError(f"--conf: unknown key '{'.'.join(walked)}'")
        if not parts:
            node[head] = value
            _mark(origin, ".".join(walked), value, "--conf")
            return
        if _origin_of(hint) in (Mapping, dict):
            sub = node.setdefault(head, {})
            # A mapping of mappings (e.g. a model family's grid) takes one key per level.
            while len(parts) > 1 and _origin_of(typing.get_args(hint)[1]) in (Mapping, dict):
                hint = typing.get_args(hint)[1]
                walked.append(parts.pop(0))
                sub = sub.setdefault(walked[-1], {})
            rest = ".".join(parts)
            sub[rest] = value
            origin[f"{'.'.join(walked)}.{rest}"] = "--conf"
            return
        node = node.setdefault(head, {})
        cls = hint


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute_env(value: Any, origin: dict[str, str], dotted: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute_env(v, origin, f"{dotted}.{k}" if dotted else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, origin, dotted) for v in value]
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{origin.get(dotted, '?')}: key '{dotted}' uses ${{{name}}} but environment variable {name} "
                "is not set"
            )

        return _ENV_REF.sub(repl, value)
    return value


def _field_types(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _origin_of(hint: Any) -> Any:
    return typing.get_origin(hint)


def _build(cls: Any, data: Any, origin: dict[str, str], prefix: str) -> Any:
    where = origin.get(prefix.rstrip("."), "config") if prefix else "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: key '{prefix.rstrip('.')}' must be a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    for key in data:
        if key not in hints:
            raise ConfigError(f"{origin.get(prefix + str(key), where)}: unknown key '{prefix}{key}'")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        dotted = prefix + f.name
        if f.name not in data:
            if f.default is not dataclasses.MISSING:
                continue
            raise ConfigError(f"{where}: missing key '{dotted}'")
        value = _coerce(hints[f.name], data[f.name], origin, dotted)
        if f.metadata.get("path") and isinstance(value, str) and not _is_uri(value):
            value = os.path.abspath(os.path.expanduser(value))
        values[f.name] = value
    return cls(**values)


def _coerce(hint: Any, value: Any, origin: dict[str, str], dotted: str) -> Any:
    where = origin.get(dotted, "config")
    kind = _origin_of(hint)

    def fail(expected: str) -> ConfigError:
        return ConfigError(
            f"{where}: key '{dotted}' must be {expected}, got {type(value).__name__} {value!r}"
        )

    if dataclasses.is_dataclass(hint):
        return _build(hint, value, origin, dotted + ".")
    if kind is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise fail("one of " + ", ".join(map(str, choices)))
        return value
    if kind in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, origin, dotted)
    if kind in (Mapping, dict):
        if not isinstance(value, dict):
            raise fail("a mapping")
        _, vt = typing.get_args(hint)
        out = {}
        for k, v in value.items():
            # Spark settings are strings; YAML reads 200 and true as int/bool, which is what a person means.
            if vt is str and isinstance(v, bool):
                v = "true" if v else "false"
            elif vt is str and isinstance(v, int | float):
                v = str(v)
            out[str(k)] = _coerce(vt, v, origin, f"{dotted}.{k}")
        return types.MappingProxyType(out)
    if kind in (tuple, Sequence, list):
        if not isinstance(value, list):
            raise fail("a list")
        (it, *_) = typing.get_args(hint)
        return tuple(_coerce(it, v, origin, dotted) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if hint is str:
        # YAML reads 2026-01-31 as a date; a date where text is declared means the same text.
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            return value.isoformat()
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise ConfigError(f"{where}: key '{dotted}' has an unsupported declared type {hint!r}")
