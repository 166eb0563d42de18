"""The step contract: DateRange, and the run a step runs as (no Spark needed)."""

import datetime as dt
import inspect

import pytest

from lakeml.errors import LakemlError
from lakeml.pipeline import registry
from lakeml.steps import DateRange, StepResult, current_run, running_as

D = dt.date(2026, 2, 27)


def test_a_date_range_lists_its_days_across_a_month_end_and_refuses_to_run_backwards():
    dates = DateRange(D, D + dt.timedelta(days=3))
    assert dates.days() == [D, dt.date(2026, 2, 28), dt.date(2026, 3, 1), dt.date(2026, 3, 2)]
    assert len(dates) == 4 and str(dates) == "2026-02-27..2026-03-02"
    assert DateRange.single(D) == DateRange(D, D) and DateRange.single(D).days() == [D]
    assert str(DateRange.single(D)) == "2026-02-27"
    with pytest.raises(ValueError, match="starts 2026-02-28, after its last date 2026-02-27"):
        DateRange(D + dt.timedelta(days=1), D)


def test_a_step_knows_the_run_it_runs_as_only_inside_one():
    with pytest.raises(LakemlError, match="call it from a job"):
        current_run()
    with running_as("demo.silver", "r1"):
        with running_as("demo.inner", "r2"):
            assert (current_run().job, current_run().run_id) == ("demo.inner", "r2")
        assert current_run().job == "demo.silver"
    with pytest.raises(LakemlError):
        current_run()


def test_every_library_step_has_the_one_signature():
    """Ingest, features, label refresh, training and scoring: (spark, config, dates) -> StepResult."""
    from lakeml.domains.banking.features import build_transaction_features, refresh_transaction_labels
    from lakeml.domains.banking.fraud_model import score_fraud, train_fraud_model
    from lakeml.domains.commerce.features import build_commerce_features
    from lakeml.domains.commerce.recommender import score_recommendations, train_recommender
    from lakeml.domains.commerce.silver import CLICKSTREAM
    from lakeml.domains.maintenance.failure_model import score_failure, train_failure_models
    from lakeml.domains.maintenance.features import build_machine_features
    from lakeml.ingest.bronze import bronze_step
    from lakeml.ingest.silver import silver_step

    steps = [
        bronze_step("clickstream"), silver_step(CLICKSTREAM),
        build_transaction_features, refresh_transaction_labels, build_commerce_features,
        build_machine_features, train_fraud_model, train_recommender,
        train_failure_models, score_fraud, score_recommendations, score_failure,
    ]  # fmt: skip
    for step in steps:
        signature = inspect.signature(step)
        required = [p.name for p in signature.parameters.values() if p.default is inspect.Parameter.empty]
        assert required == ["spark", "config", "dates"], step.__name__
        assert signature.return_annotation in ("StepResult", StepResult), step.__name__
    assert all(list(inspect.signature(spec.func).parameters) == ["ctx"] for spec in registry().values())
