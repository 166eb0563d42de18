"""HTML training reports: embedded PNG figures, table formatting and escaping, empty inputs (no Spark)."""

from __future__ import annotations

import base64
import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from lakeml.ml.report import (
    HtmlReport,
    plot_calibration,
    plot_confusion,
    plot_error_by_bucket,
    plot_feature_importance,
    plot_pr_roc,
    plot_ranking_curves,
    plot_rul_scatter,
)
from lakeml.ml.splits import TimeSplitBounds, describe_bounds

IMG_PREFIX = '<img src="data:image/png;base64,'


def pr_curve() -> pd.DataFrame:
    thresholds = np.linspace(0.99, 0.01, 50)
    recall = np.linspace(0.05, 1.0, 50)
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "precision": np.clip(1.0 - 0.9 * recall**2, 0.02, 1.0),
            "recall": recall,
            "fpr": recall**3,
        }
    )


def sample_figures() -> list[tuple[str, Figure]]:
    rng = np.random.default_rng(7)
    calibration = pd.DataFrame(
        {
            "mean_predicted": [0.05, 0.15, 0.35, 0.6, 0.9],
            "observed_rate": [0.04, 0.18, 0.3, 0.66, 0.85],
            "count": [90_000, 4_000, 900, 120, 40],
        }
    )
    ranking = pd.DataFrame(
        [
            {"k": k, "model": model, "precision": p / k, "recall": p / 20, "ndcg": p / (k + 3)}
            for model, scale in (("als", 1.0), ("popularity", 0.5))
            for k, p in ((1, 1 * scale), (5, 3 * scale), (10, 5 * scale))
        ]
    )
    true = rng.uniform(0, 200, 300)
    rul = pd.DataFrame({"true_rul": true, "predicted_rul": np.minimum(true + rng.normal(0, 15, 300), 125)})
    buckets = pd.DataFrame(
        {
            "bucket": ["0-24", "25-49", "50-99", "100+"],
            "count": [120, 150, 300, 900],
            "rmse": [8.1, 12.4, 18.0, 30.5],
            "mean_error": [3.0, -1.5, -6.2, -20.0],
        }
    )
    importances = {f"feature_{i}": 1.0 / (i + 1) for i in range(30)}
    return [
        ("PR / ROC", plot_pr_roc(pr_curve(), threshold=0.52, positive_rate=0.012)),
        ("Calibration", plot_calibration(calibration)),
        ("Confusion <test>", plot_confusion(tp=80, fp=400, fn=20, tn=99_500, title="Test split")),
        ("Ranking", plot_ranking_curves(ranking)),
        ("RUL scatter", plot_rul_scatter(rul, cap=125.0)),
        ("Error by bucket", plot_error_by_bucket(buckets)),
        ("Feature importance", plot_feature_importance(importances, top=10)),
    ]


def test_full_report_embeds_every_figure_as_decodable_png(tmp_path):
    report = HtmlReport("Fraud model v3", subtitle="run 2024-05-01")
    report.add_heading("Evaluation")
    report.add_text("Chosen threshold maximises F1 on validation.")
    figures = sample_figures()
    for title, figure in figures:
        report.add_figure(title, figure)
    report.add_table(
        "Metrics", [{"metric": "auc_pr", "value": 0.123456}, {"metric": "auc_roc", "value": None}]
    )

    path = report.write(tmp_path / "reports" / "nested" / "fraud.html")

    assert path == tmp_path / "reports" / "nested" / "fraud.html"
    assert path.is_file()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert text == report.html()
    assert text.count(IMG_PREFIX) == len(figures) == 7
    payloads = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(payloads) == len(figures)
    for payload in payloads:
        assert base64.b64decode(payload, validate=True).startswith(b"\x89PNG\r\n\x1a\n")
    assert "<td class='num'>0.1235</td>" in text
    assert "<td>–</td>" in text
    assert "Confusion &lt;test&gt;" in text
    # self-contained: no external resources
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_added_figures_are_closed_and_cleared():
    report = HtmlReport("t")
    figure = plot_confusion(1, 2, 3, 4, "c")
    assert figure.axes
    report.add_figure("c", figure)
    assert figure.axes == []


def test_table_formats_numbers_and_missing_values():
    report = HtmlReport("t")
    report.add_table(
        "numbers",
        [
            {"a": 0.123456, "b": 7, "c": None},
            {"a": 12345.678, "b": np.int64(3), "c": float("nan")},
            {"a": np.float32(2.5), "b": True, "c": "text"},
            {"a": 74810.0, "b": 1234567, "c": 6.8e15},  # counts logged as floats read as counts
        ],
    )
    text = report.html()
    for cell in ("0.1235", "12,346", "2.5", ">7<", ">3<", ">True<", ">text<", ">74,810<", ">1,234,567<",
                 "6.8e+15"):
        assert cell in text
    assert text.count("<td>–</td>") == 2  # None and NaN
    assert "0.123456" not in text


def test_table_columns_follow_first_seen_key_order():
    report = HtmlReport("t")
    report.add_table("order", [{"zeta": 1, "alpha": 2}, {"mid": 3, "alpha": 4}, {"beta": 5}])
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", report.html()).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == ["zeta", "alpha", "mid", "beta"]
    rows = re.findall(r"<tr>(<td.*?)</tr>", report.html())
    # a key absent from a row leaves an empty cell in its column
    assert re.findall(r"<td[^>]*>(.*?)</td>", rows[2]) == ["", "", "", "5"]


def test_everything_user_supplied_is_escaped():
    evil = "<script>alert('x')</script>"
    report = HtmlReport(evil, subtitle=evil)
    report.add_heading(evil)
    report.add_text(f"a & b {evil}")
    report.add_table(evil, [{evil: evil, "n": 1.0}])
    report.add_figure(evil, plot_confusion(1, 1, 1, 1, evil))
    text = report.html()
    assert "<script" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "a &amp; b" in text
    assert 'alt="&lt;script&gt;' in text


def test_empty_table_does_not_crash():
    report = HtmlReport("t")
    report.add_table("nothing", [])
    assert "no rows" in report.html()


def _has_no_data_text(figure: Figure) -> bool:
    return any(t.get_text() == "no data" for ax in figure.axes for t in ax.texts)


@pytest.mark.parametrize(
    "build",
    [
        lambda: plot_pr_roc(pd.DataFrame(columns=["threshold", "precision", "recall", "fpr"]), 0.5, 0.01),
        lambda: plot_pr_roc(pd.DataFrame(), None, 0.01),
        lambda: plot_calibration(pd.DataFrame(columns=["mean_predicted", "observed_rate", "count"])),
        lambda: plot_ranking_curves(pd.DataFrame(columns=["k", "model", "precision", "recall", "ndcg"])),
        lambda: plot_rul_scatter(pd.DataFrame(columns=["true_rul", "predicted_rul"]), cap=None),
        lambda: plot_error_by_bucket(pd.DataFrame(columns=["bucket", "count", "rmse", "mean_error"])),
        lambda: plot_feature_importance({}),
    ],
    ids=["pr_roc", "pr_roc_no_columns", "calibration", "ranking", "rul", "buckets", "importance"],
)
def test_empty_inputs_give_a_no_data_figure(build):
    figure = build()
    assert isinstance(figure, Figure)
    assert _has_no_data_text(figure)
    report = HtmlReport("empty")
    report.add_figure("empty", figure)  # still renders
    assert report.html().count(IMG_PREFIX) == 1


def test_confusion_with_all_zero_counts_renders():
    report = HtmlReport("t")
    report.add_figure("zeros", plot_confusion(0, 0, 0, 0, "empty split"))
    assert report.html().count(IMG_PREFIX) == 1


def test_feature_importance_limits_to_top_and_puts_largest_on_top():
    importances = {f"f{i:02d}": float(i) for i in range(25)}
    figure = plot_feature_importance(importances, top=7)
    ax = figure.axes[0]
    assert len(ax.patches) == 7
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "f24"  # the last y tick is drawn at the top
    assert labels[0] == "f18"
    assert len(plot_feature_importance({"a": 1.0, "b": 2.0}, top=20).axes[0].patches) == 2
    with pytest.raises(ValueError):
        plot_feature_importance(importances, top=0)


def test_pr_roc_marks_closest_threshold_on_both_panels():
    curve = pr_curve()
    figure = plot_pr_roc(curve, threshold=0.5, positive_rate=0.02)
    ax_pr, ax_roc = figure.axes
    closest = curve.loc[(curve["threshold"] - 0.5).abs().idxmin()]
    (pr_point,) = ax_pr.collections[0].get_offsets()
    (roc_point,) = ax_roc.collections[0].get_offsets()
    assert tuple(pr_point) == pytest.approx((closest["recall"], closest["precision"]))
    assert tuple(roc_point) == pytest.approx((closest["fpr"], closest["recall"]))
    baseline = [line for line in ax_pr.lines if line.get_linestyle() == "--"]
    assert len(baseline) == 1 and list(baseline[0].get_ydata()) == [0.02, 0.02]
    assert not plot_pr_roc(curve, threshold=None, positive_rate=0.02).axes[0].collections


def test_pr_roc_marks_the_exact_operating_point_labelled_with_the_threshold_used():
    confusion = {"tp": 30.0, "fp": 10.0, "fn": 20.0, "tn": 940.0}
    figure = plot_pr_roc(pr_curve(), threshold=0.3253, positive_rate=0.05, confusion=confusion)
    ax_pr, ax_roc = figure.axes
    (pr_point,) = ax_pr.collections[0].get_offsets()
    (roc_point,) = ax_roc.collections[0].get_offsets()
    assert tuple(pr_point) == pytest.approx((30 / 50, 30 / 40))
    assert tuple(roc_point) == pytest.approx((10 / 950, 30 / 50))
    labels = [t.get_text() for t in ax_pr.get_legend().get_texts()]
    assert "threshold 0.3253" in labels


def test_split_bounds_read_as_dates():
    bounds = TimeSplitBounds.ending(dt.date(2026, 11, 20), test_days=3, gap_days=1, validation_days=3)
    assert describe_bounds(bounds) == (
        "train … 2026-11-13; validation 2026-11-14 – 2026-11-16; gap 2026-11-17 – 2026-11-17; "
        "test 2026-11-18 – 2026-11-20"
    )
    no_gap = TimeSplitBounds.ending(dt.date(2026, 11, 20), test_days=1, gap_days=0, validation_days=1)
    assert "gap" not in describe_bounds(no_gap) and "TimeSplitBounds" not in describe_bounds(no_gap)


def test_ranking_curves_draw_one_line_per_model_per_panel():
    curves = pd.DataFrame(
        {
            "k": [1, 5, 1, 5, 1, 5],
            "model": ["als", "als", "pop", "pop", "rand", "rand"],
            "precision": [0.3, 0.2, 0.2, 0.1, 0.01, 0.01],
            "recall": [0.05, 0.2, 0.03, 0.1, 0.0, 0.01],
            "ndcg": [0.3, 0.25, 0.2, 0.15, 0.01, 0.01],
        }
    )
    figure = plot_ranking_curves(curves)
    assert [ax.get_title() for ax in figure.axes] == ["precision@k", "recall@k", "NDCG@k"]
    assert all(len(ax.lines) == 3 for ax in figure.axes)


def test_missing_columns_are_reported():
    with pytest.raises(ValueError, match="predicted_rul"):
        plot_rul_scatter(pd.DataFrame({"true_rul": [1.0]}), cap=None)
