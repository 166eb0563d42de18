"""Layered config: merge order, ${ENV}, overrides, and errors that name the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakeml.config import load_config
from lakeml.errors import ConfigError


def write_conf(folder: Path, base: str, env: str) -> Path:
    repo_conf = Path(__file__).resolve().parents[1] / "conf"
    (folder / "base.yaml").write_text((repo_conf / "base.yaml").read_text() + base)
    (folder / "dev.yaml").write_text(env)
    return folder


def test_env_file_overrides_base_and_conf_overrides_last(tmp_path):
    conf = write_conf(
        tmp_path, "", "lakehouse:\n  target_file_size_mb: 64\nspark:\n  conf:\n    spark.x: 1\n"
    )
    c = load_config(
        "dev", ["lakehouse.target_file_size_mb=32", "spark.conf.spark.sql.shuffle.partitions=3"], conf
    )
    assert c.lakehouse.target_file_size_mb == 32
    assert c.spark.conf["spark.x"] == "1"  # YAML numbers become Spark's strings
    assert c.spark.conf["spark.sql.shuffle.partitions"] == "3"
    assert c.spark.conf["spark.sql.session.timeZone"] == "UTC"  # kept from base
    with pytest.raises(TypeError):
        c.spark.conf["spark.x"] = "2"  # frozen all the way down
    with pytest.raises(AttributeError):
        c.lakehouse.engine = "delta-rs"  # type: ignore[misc]


def test_env_variables_are_substituted_and_paths_made_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKEML_TEST_ROOT", "rel/lake")
    conf = write_conf(tmp_path, "", "lakehouse:\n  root: ${LAKEML_TEST_ROOT}\n")
    c = load_config("dev", [], conf)
    assert c.lakehouse.root == str(Path.cwd() / "rel/lake")
    assert c.landing_path() == str(Path.cwd() / "rel/lake/landing")


@pytest.mark.parametrize(
    ("env_text", "overrides", "message"),
    [
        ("lakehouse:\n  rooot: x\n", [], r"dev.yaml: unknown key 'lakehouse.rooot'"),
        (
            "lakehouse:\n  target_file_size_mb: big\n",
            [],
            r"dev.yaml: key 'lakehouse.target_file_size_mb' must be an integer",
        ),
        ("lakehouse:\n  engine: spark\n", [], r"must be one of auto, delta-rs, delta-spark"),
        (
            "lakehouse:\n  root: ${LAKEML_SURELY_UNSET}\n",
            [],
            r"dev.yaml: key 'lakehouse.root' uses \$\{LAKEML_SURELY_UNSET\}",
        ),
        ("", ["nokey"], r"malformed --conf 'nokey'"),
        ("", ["lakehouse.nope=1"], r"--conf: unknown key 'lakehouse.nope'"),
        ("", ["run.log_format=xml"], r"--conf: key 'run.log_format' must be one of json, text"),
        (
            "",
            ["features.commerce.session_gap_minutes=1440"],
            r"session_gap_minutes must be in \(0, 1440\), got 1440",
        ),
        ("", ["ml.failure.include_gbt=false", "ml.failure.families={}"], r"ml.failure: no model family to "
                                                                         r"train"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path, env_text, overrides, message):
    conf = write_conf(tmp_path, "", env_text)
    with pytest.raises(ConfigError, match=message):
        load_config("dev", overrides, conf)


def test_missing_env_file_and_missing_key(tmp_path):
    conf = write_conf(tmp_path, "", "")
    with pytest.raises(ConfigError, match="unknown env 'prod'"):
        load_config("prod", [], conf)
    (tmp_path / "base.yaml").write_text("spark:\n  app_name: x\n")
    with pytest.raises(ConfigError, match="missing key"):
        load_config("dev", [], conf)


def test_shipped_envs_load(monkeypatch, tmp_path):
    monkeypatch.setenv("LAKEML_LAKEHOUSE", str(tmp_path))
    for env in ("local", "test", "cluster"):
        assert load_config(env).env == env
    assert load_config("cluster").lakehouse.root == str(tmp_path)


def test_recommender_and_alert_settings_are_typed_and_validated():
    base = load_config("test")
    assert base.ml.recommender.relevant_rating is None  # relative to the training rating scale
    assert base.ml.recommender.relevant_rating_fraction == 0.75
    assert (base.ml.alerts.max_budget_factor, base.ml.alerts.fail_on_excess) == (2.0, False)
    assert load_config("test", ["ml.recommender.relevant_rating=3"]).ml.recommender.relevant_rating == 3.0
    assert load_config("test", ["ml.recommender.date_column="]).ml.recommender.date_column == ""
    with pytest.raises(ConfigError, match="relevant_rating_fraction must be in"):
        load_config("test", ["ml.recommender.relevant_rating_fraction=1.5"])
    with pytest.raises(ConfigError, match="every ks must be >= 1"):
        load_config("test", ["ml.recommender.ks=[0, 10]"])
    with pytest.raises(ConfigError, match="max_budget_factor must be >= 1"):
        load_config("test", ["ml.alerts.max_budget_factor=0.5"])
    with pytest.raises(ConfigError, match="'ml.alerts.fail_on_excess' must be true or false"):
        load_config("test", ["ml.alerts.fail_on_excess=3"])
