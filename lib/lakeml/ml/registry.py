"""MLflow model registry: champion / challenger aliases, the promotion gate, and vacuum protection
of the table versions a registered model was trained on."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lakeml.config import PromotionConfig
from lakeml.errors import ConfigError
from lakeml.lakehouse import DeltaTableRef
from lakeml.lakehouse.table import note_input
from lakeml.ml.evaluation import HIGHER_IS_BETTER, is_better
from lakeml.runstate import model_input

if TYPE_CHECKING:  # mlflow is imported lazily: it is slow to import and jobs without models skip it
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION, CHALLENGER = "champion", "challenger"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
_PROTECTION = re.compile(r"^model-(?P<name>.+)-v(?P<version>\d+)$")


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def decide_promotion(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    rule: PromotionConfig,
    baseline: Mapping[str, float] | None = None,
) -> PromotionDecision:
    """Champion only if every floor holds, a higher-is-better primary metric is not 0 where the
    ``baseline``'s is above 0 (a model that never hits cannot pass a floor of 0), and the primary metric
    beats the champion's on the same holdout."""
    metric = rule.primary_metric
    if metric not in candidate:
        raise ValueError(f"primary metric '{metric}' was not computed (have: {', '.join(sorted(candidate))})")
    if metric not in HIGHER_IS_BETTER:  # fail on the first model already, not once a champion exists
        known = ", ".join(sorted(HIGHER_IS_BETTER))
        raise ValueError(f"unknown metric '{metric}' as primary metric (known: {known})")
    failed = []
    for name, bound in rule.floors.items():
        value = candidate.get(name, math.nan)
        higher = HIGHER_IS_BETTER.get(name)
        if higher is None:
            raise ValueError(f"floor on unknown metric '{name}'")
        if math.isnan(value) or (value < bound if higher else value > bound):
            failed.append(f"{name}={value:.4g} {'<' if higher else '>'} floor {bound:g}")
    if failed:
        return PromotionDecision(False, "stays challenger: fails floor " + "; ".join(failed))
    base = (baseline or {}).get(metric, math.nan)
    if HIGHER_IS_BETTER[metric] and candidate[metric] == 0 and base > 0:
        return PromotionDecision(
            False, f"stays challenger: {metric}=0 while the baseline's is {base:.4g} on the same holdout"
        )
    if champion is None:
        return PromotionDecision(True, f"first model passing the floors ({metric}={candidate[metric]:.4g})")
    if metric not in champion or math.isnan(champion[metric]):
        return PromotionDecision(True, f"champion has no {metric} on this holdout; candidate passes floors")
    if is_better(metric, candidate[metric], champion[metric], rule.min_improvement):
        return PromotionDecision(
            True,
            f"{metric} {candidate[metric]:.4g} beats champion's {champion[metric]:.4g} on the same holdout",
        )
    return PromotionDecision(
        False,
        f"stays challenger: {metric} {candidate[metric]:.4g} does not beat champion's "
        f"{champion[metric]:.4g} by more than {rule.min_improvement:g} on the same holdout",
    )


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The registered version aliased ``champion``, or None (no model yet, or no champion)."""
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    # The champion is an input of the job that asked (scoring; training compares with it), so a
    # rerun after a promotion is not skipped as "inputs unchanged".
    note_input(model_input(name), -1 if current is None else int(current.version))
    return current


def apply_decision(client: MlflowClient, name: str, version: str, decision: PromotionDecision) -> None:
    """Set the champion or challenger alias on ``version`` and record the reason as a version tag."""
    client.set_model_version_tag(name, version, "promotion", decision.reason)
    alias = CHAMPION if decision.promote else CHALLENGER
    client.set_registered_model_alias(name, alias, version)


def protection_reason(name: str, version: str | int) -> str:
    return f"model-{name}-v{version}"


def protect_inputs(tables: Mapping[str, tuple[DeltaTableRef, int]], name: str, version: str) -> None:
    """Keep each training table version's files through vacuum while the model version is registered."""
    if not _SAFE_NAME.fullmatch(name):
        # The reason is stored as a file name: it must read back as exactly this model name.
        raise ConfigError(f"model name '{name}' must match {_SAFE_NAME.pattern} (letters, digits, . _ -)")
    for table, table_version in tables.values():
        table.protect(table_version, protection_reason(name, version))


def release_unregistered(client: MlflowClient, table: DeltaTableRef) -> list[tuple[int, str]]:
    """Drop protections of ``table`` whose model version no longer exists in the registry; returns them."""
    from mlflow.exceptions import MlflowException

    released = []
    for table_version, reasons in table.protected_versions().items():
        for reason in reasons:
            m = _PROTECTION.match(reason)
            if not m:
                continue
            try:
                client.get_model_version(m["name"], m["version"])
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise  # an unreachable or refusing registry is not proof the version was deleted
                table.unprotect(table_version, reason)
                released.append((table_version, reason))
    return released
